"""The authorisation rules of every room version, applied to one event against some room state.

rooms/fragments/v1-auth-rules.md (v1-2), v3-auth-rules.md (v3-5), rooms/v6.md, v7.md,
fragments/v8-auth-rules.md (v8-9), rooms/v10.md, v11.md, v12.md. The differences between
versions are the flags of `RoomVersion`. The checks on the event's own `auth_events` list
(duplicates, unexpected or rejected entries) are in `auth_events.py`: they apply only to
the first of the three times an event is checked on receipt.
"""

from collections.abc import Mapping

from homeserver.core.auth.auth_types import (
    ALIASES,
    CREATE,
    CREATE_KEY,
    MEMBER,
    POWER_LEVELS,
    POWER_LEVELS_KEY,
    REDACTION,
    THIRD_PARTY_INVITE,
    StateKey,
    auth_types_of,
)
from homeserver.core.auth.errors import AuthError
from homeserver.core.auth.membership import SignatureCheck, check_membership, membership_of
from homeserver.core.auth.power_level_changes import check_power_levels_change
from homeserver.core.auth.power_levels import PowerLevel, PowerLevels
from homeserver.core.event_hashing import room_id_from_create_event_id
from homeserver.core.event_signing import is_event_signed_by, server_of
from homeserver.core.events import Event
from homeserver.core.ids import parse_user_id
from homeserver.core.json_signing import KeyLookup
from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion


def signatures_verified_on_receipt(event: Event, server_name: str) -> bool:
    """A `SignatureCheck` for events whose signatures were all checked when they were received,
    that of the server authorising a restricted join included (state resolution, re-checks)."""
    return True


def signature_check(lookup: KeyLookup) -> SignatureCheck:
    """A `SignatureCheck` that verifies against the server keys `lookup` knows."""

    def check(event: Event, server_name: str) -> bool:
        return is_event_signed_by(event.room_version, event.get_pdu_json(), server_name, lookup)

    return check


def check_auth_rules(
    room_version: RoomVersion,
    event: Event,
    auth_state: Mapping[StateKey, Event],
    *,
    is_signed_by: SignatureCheck,
) -> None:
    """Return if the rules allow `event` in a room whose state includes `auth_state`; else AuthError.

    `auth_state` maps the pairs of `auth_types_of(event)` the room has to their events (the
    create event included, in v12 too); other entries are ignored. It is the event's auth
    events, the state before the event, or the current state: the three checks on receipt.
    `is_signed_by` answers whether the event is validly signed by a server; the rules ask it
    only of the server of a restricted join's `join_authorised_via_users_server`.
    """
    if event.room_version != room_version:
        raise ValueError(f"{event!r} is not a room version {room_version.identifier} event")
    if event.type == CREATE:
        _check_create(room_version, event)
        return
    create = _check_room(room_version, event, auth_state)
    if create.content.get("m.federate", True) is False and server_of(event.sender) != server_of(create.sender):
        raise AuthError("This room does not federate: only its creator's server may send to it")
    if event.type == ALIASES and room_version.special_case_aliases_auth:
        if event.state_key is None or event.state_key != server_of(event.sender):
            raise AuthError("An m.room.aliases state_key must be the sender's server name")
        return

    power = PowerLevels(room_version, auth_state.get(POWER_LEVELS_KEY), create)
    if event.type == MEMBER:
        check_membership(room_version, event, auth_state, power, create, is_signed_by)
        return
    if membership_of(auth_state, event.sender) != "join":
        raise AuthError("You are not in this room")
    sender_level = power.user_level(event.sender)
    if event.type == THIRD_PARTY_INVITE:
        if sender_level < power.named_level("invite"):
            raise AuthError("You do not have permission to invite users")
        return
    if power.send_level(event.type, event.is_state()) > sender_level:
        raise AuthError(f"You do not have permission to send {event.type} events")
    if event.state_key is not None and event.state_key.startswith("@") and event.state_key != event.sender:
        raise AuthError("A state_key starting with @ must be the sender's user id")
    if event.type == POWER_LEVELS:
        check_power_levels_change(room_version, event, power)
    if event.type == REDACTION and room_version.redaction_checked_in_auth_rules:
        _check_redaction_v1(event, power, sender_level)


def _check_create(room_version: RoomVersion, event: Event) -> None:
    """Rule 1: the create event stands alone, before any state."""
    if event.prev_event_ids:
        raise AuthError("The create event cannot have prev_events")
    if room_version.room_id_is_create_event_id:
        if "room_id" in event.get_pdu_json():
            raise AuthError("The create event cannot have a room_id: its id is the room id")
    elif server_of(event.room_id) != server_of(event.sender):
        raise AuthError("The room id's server is not the creator's server")
    content = event.content
    if "room_version" in content and content["room_version"] not in KNOWN_ROOM_VERSIONS:
        raise AuthError(f"Unknown room version {content['room_version']!r}")
    if room_version.privileged_room_creators and "additional_creators" in content:
        creators = content["additional_creators"]
        if not isinstance(creators, list | tuple) or not all(_is_user_id(user) for user in creators):
            raise AuthError("additional_creators must be a list of user ids")
    if not room_version.implicit_room_creator and "creator" not in content:
        raise AuthError("The create event has no creator")


def _is_user_id(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parse_user_id(value)
    except ValueError:
        return False
    return True


def _check_room(room_version: RoomVersion, event: Event, auth_state: Mapping[StateKey, Event]) -> Event:
    """The state belongs to the event's room and holds its create event (v12: the one the room id names)."""
    create = auth_state.get(CREATE_KEY)
    if create is None:
        raise AuthError("No m.room.create event in the auth state")
    if room_version.room_id_is_create_event_id and room_id_from_create_event_id(create.event_id) != event.room_id:
        raise AuthError("The room id is not the id of the room's create event")
    for key in auth_types_of(event):
        state_event = auth_state.get(key)
        if state_event is not None and state_event.room_id != event.room_id:
            raise AuthError(f"The {key} state given for the check is from another room")
    return create


def _check_redaction_v1(event: Event, power: PowerLevels, sender_level: PowerLevel) -> None:
    """v1-2 rule 11: a redaction needs the redact level, unless it comes from the redacted event's server."""
    if sender_level >= power.named_level("redact"):
        return
    redacts = event.redacts
    if redacts is not None and server_of(redacts) == server_of(event.event_id):
        return
    raise AuthError("You do not have permission to redact this event")
