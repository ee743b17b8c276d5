"""Which room state the authorisation rules read for an event (server-server-api, "Auth events selection").

The auth check of an event needs a handful of (type, state_key) pairs, never the whole room:
storage loads only these, so checking a join in a room of 5,000 members reads at most a few
member events.
"""

from collections.abc import Mapping
from typing import Any

from homeserver.core.events import Event
from homeserver.core.room_versions import RoomVersion

StateKey = tuple[str, str]

CREATE = "m.room.create"
MEMBER = "m.room.member"
POWER_LEVELS = "m.room.power_levels"
JOIN_RULES = "m.room.join_rules"
THIRD_PARTY_INVITE = "m.room.third_party_invite"
ALIASES = "m.room.aliases"
REDACTION = "m.room.redaction"

CREATE_KEY: StateKey = (CREATE, "")
POWER_LEVELS_KEY: StateKey = (POWER_LEVELS, "")
JOIN_RULES_KEY: StateKey = (JOIN_RULES, "")

# The content key naming the member who vouches for a restricted join (room versions 8+).
AUTHORISING_USER = "join_authorised_via_users_server"


def auth_types_for_event(
    room_version: RoomVersion, event_type: str, state_key: str | None, sender: str, content: Mapping[str, Any]
) -> set[StateKey]:
    """The state pairs `check_auth_rules` may read for an event with these fields.

    The create event, power levels and the sender's membership; for a membership event also
    the target's membership, the join rules (join, invite, knock), the third-party invite the
    event redeems, and the membership of the user who authorised a restricted join. The create
    event is listed in every room version: the rules read it even where (v12) the PDU's
    `auth_events` must not cite it (see `auth_events_selection`). Pairs the room lacks are
    simply absent from the state handed to the check.
    """
    if event_type == CREATE:
        return set()
    types = {CREATE_KEY, POWER_LEVELS_KEY, (MEMBER, sender)}
    if event_type == MEMBER and isinstance(state_key, str):
        types.add((MEMBER, state_key))
        membership = content.get("membership")
        if membership in ("join", "invite", "knock"):
            types.add(JOIN_RULES_KEY)
        if membership == "invite":
            token = _third_party_invite_token(content)
            if token is not None:
                types.add((THIRD_PARTY_INVITE, token))
        if membership == "join" and room_version.restricted_join_rule:
            authoriser = content.get(AUTHORISING_USER)
            if isinstance(authoriser, str):
                types.add((MEMBER, authoriser))
    return types


def auth_types_of(event: Event) -> set[StateKey]:
    """`auth_types_for_event` for a built event."""
    return auth_types_for_event(event.room_version, event.type, event.state_key, event.sender, event.content)


def auth_events_selection(
    room_version: RoomVersion, event_type: str, state_key: str | None, sender: str, content: Mapping[str, Any]
) -> set[StateKey]:
    """The pairs an event's `auth_events` may cite: the auth types, less the create event in v12,
    where the room id stands for it."""
    types = auth_types_for_event(room_version, event_type, state_key, sender, content)
    if not room_version.create_event_in_auth_events:
        types.discard(CREATE_KEY)
    return types


def select_auth_event_ids(
    room_version: RoomVersion,
    event_type: str,
    state_key: str | None,
    sender: str,
    content: Mapping[str, Any],
    state: Mapping[StateKey, str],
) -> list[str]:
    """The `auth_events` for a new event, picked from the ids of the room state it is sent in."""
    keys = auth_events_selection(room_version, event_type, state_key, sender, content)
    return [state[key] for key in sorted(keys) if key in state]


def _third_party_invite_token(content: Mapping[str, Any]) -> str | None:
    invite = content.get("third_party_invite")
    signed = invite.get("signed") if isinstance(invite, Mapping) else None
    token = signed.get("token") if isinstance(signed, Mapping) else None
    return token if isinstance(token, str) else None
