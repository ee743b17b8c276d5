"""The authorisation rule for m.room.member events: join, invite, leave, ban and knock.

Rule 5 in v1-5 and v12, rule 4 in v6-11 (rooms/fragments/v1-auth-rules.md, v3-auth-rules.md,
v8-auth-rules.md, rooms/v10.md, v11.md, v12.md).
"""

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from signedjson.key import decode_verify_key_bytes
from unpaddedbase64 import decode_base64

from homeserver.core.auth.auth_types import (
    AUTHORISING_USER,
    JOIN_RULES_KEY,
    MEMBER,
    THIRD_PARTY_INVITE,
    StateKey,
)
from homeserver.core.auth.errors import AuthError
from homeserver.core.auth.power_levels import PowerLevels, original_creator
from homeserver.core.events import Event
from homeserver.core.frozen_json import thaw
from homeserver.core.ids import parse_user_id
from homeserver.core.json_signing import is_signature_valid
from homeserver.core.room_versions import RoomVersion

# (event, server_name) -> whether the event carries a valid signature of that server.
SignatureCheck = Callable[[Event, str], bool]

# Rooms without m.room.join_rules are treated as invite-only, as other servers do.
DEFAULT_JOIN_RULE = "invite"


def membership_of(auth_state: Mapping[StateKey, Event], user_id: str) -> str | None:
    """A user's membership in the state: `join`, `invite`, `leave`, `ban`, `knock`, or None."""
    member = auth_state.get((MEMBER, user_id))
    return member.membership if member is not None else None


def join_rule_of(auth_state: Mapping[StateKey, Event]) -> str:
    join_rules = auth_state.get(JOIN_RULES_KEY)
    rule = join_rules.content.get("join_rule") if join_rules is not None else None
    return rule if isinstance(rule, str) else DEFAULT_JOIN_RULE


def check_membership(
    room_version: RoomVersion,
    event: Event,
    auth_state: Mapping[StateKey, Event],
    power: PowerLevels,
    create: Event,
    is_signed_by: SignatureCheck,
) -> None:
    """Whether a membership event is allowed in this state; AuthError if not."""
    target = event.state_key
    content = event.content
    if target is None or "membership" not in content:
        raise AuthError("A membership event needs a state_key and content.membership")
    if room_version.restricted_join_rule and AUTHORISING_USER in content:
        server = _server_of_user(content[AUTHORISING_USER])
        if server is None or not is_signed_by(event, server):
            raise AuthError(f"The join is not signed by the server of its {AUTHORISING_USER}")

    membership = content["membership"]
    if membership == "join":
        _check_join(room_version, event, auth_state, power, create)
    elif membership == "invite":
        _check_invite(event, auth_state, power)
    elif membership == "leave":
        _check_leave(room_version, event, auth_state, power)
    elif membership == "ban":
        _check_ban(event, auth_state, power)
    elif membership == "knock" and room_version.knock_join_rule:
        _check_knock(room_version, event, auth_state)
    else:
        raise AuthError(f"Unknown membership {membership!r}")


def _check_join(
    room_version: RoomVersion,
    event: Event,
    auth_state: Mapping[StateKey, Event],
    power: PowerLevels,
    create: Event,
) -> None:
    target = event.state_key
    if event.prev_event_ids == (create.event_id,) and target == original_creator(room_version, create):
        return  # the creator joining the room they just created
    if event.sender != target:
        raise AuthError("Cannot make another user join")
    membership = membership_of(auth_state, target)
    if membership == "ban":
        raise AuthError("You are banned from this room")
    join_rule = join_rule_of(auth_state)
    invite_rules = ("invite", "knock") if room_version.knock_join_rule else ("invite",)
    restricted_rules = _restricted_join_rules(room_version)
    if join_rule in invite_rules:
        if membership in ("invite", "join"):
            return
        raise AuthError("You are not invited to this room")
    if join_rule in restricted_rules:
        if membership in ("invite", "join"):
            return
        authoriser = event.content.get(AUTHORISING_USER)
        if not isinstance(authoriser, str):
            raise AuthError(f"A restricted join needs a {AUTHORISING_USER}")
        if membership_of(auth_state, authoriser) != "join":
            raise AuthError(f"{authoriser} is not in the room and cannot authorise a join")
        if power.user_level(authoriser) < power.named_level("invite"):
            raise AuthError(f"{authoriser} cannot invite, so cannot authorise a join")
        return
    if join_rule == "public":
        return
    raise AuthError(f"Cannot join a room whose join rule is {join_rule!r}")


def _restricted_join_rules(room_version: RoomVersion) -> tuple[str, ...]:
    if room_version.knock_restricted_join_rule:
        return ("restricted", "knock_restricted")
    if room_version.restricted_join_rule:
        return ("restricted",)
    return ()


def _check_invite(event: Event, auth_state: Mapping[StateKey, Event], power: PowerLevels) -> None:
    target = event.state_key
    target_membership = membership_of(auth_state, target)
    if "third_party_invite" in event.content:
        _check_third_party_invite(event, auth_state, target_membership)
        return
    if membership_of(auth_state, event.sender) != "join":
        raise AuthError("You are not in this room")
    if target_membership in ("join", "ban"):
        raise AuthError(f"{target} is already {'in' if target_membership == 'join' else 'banned from'} the room")
    if power.user_level(event.sender) < power.named_level("invite"):
        raise AuthError("You do not have permission to invite users")


def _check_third_party_invite(
    event: Event, auth_state: Mapping[StateKey, Event], target_membership: str | None
) -> None:
    """An invite that redeems an m.room.third_party_invite: the identity server signed who it is for."""
    if target_membership == "ban":
        raise AuthError(f"{event.state_key} is banned from the room")
    invite = event.content["third_party_invite"]
    signed = invite.get("signed") if isinstance(invite, Mapping) else None
    if not isinstance(signed, Mapping):
        raise AuthError("third_party_invite has no 'signed' object")
    mxid, token = signed.get("mxid"), signed.get("token")
    if not isinstance(mxid, str) or not isinstance(token, str):
        raise AuthError("third_party_invite.signed needs 'mxid' and 'token'")
    if mxid != event.state_key:
        raise AuthError("third_party_invite.signed.mxid is not the invited user")
    third_party_invite = auth_state.get((THIRD_PARTY_INVITE, token))
    if third_party_invite is None:
        raise AuthError("No m.room.third_party_invite in the room for this token")
    if third_party_invite.sender != event.sender:
        raise AuthError("Only the sender of the third-party invite can complete it")
    if not _signed_with_any(signed, _invite_public_keys(third_party_invite.content)):
        raise AuthError("third_party_invite.signed is not signed by a key of the third-party invite")


def _invite_public_keys(content: Mapping[str, Any]) -> list[str]:
    keys = [content["public_key"]] if isinstance(content.get("public_key"), str) else []
    public_keys = content.get("public_keys")
    if isinstance(public_keys, list | tuple):
        for entry in public_keys:
            if isinstance(entry, Mapping) and isinstance(entry.get("public_key"), str):
                keys.append(entry["public_key"])
    return keys


def _signed_with_any(signed: Mapping[str, Any], public_keys: Iterable[str]) -> bool:
    """Whether any ed25519 signature in `signed` verifies against any of the public keys."""
    signatures = signed.get("signatures")
    if not isinstance(signatures, Mapping):
        return False
    signed_json = thaw(signed)
    public_keys = list(public_keys)
    for server_name, server_signatures in signatures.items():
        if not isinstance(server_signatures, Mapping):
            continue
        for key_id in server_signatures:
            if not isinstance(key_id, str) or not key_id.startswith("ed25519:"):
                continue
            for public_key in public_keys:
                try:
                    verify_key = decode_verify_key_bytes(key_id, decode_base64(public_key))
                except Exception:  # not base64, or not a key: this one cannot match
                    continue
                if is_signature_valid(signed_json, server_name, verify_key):
                    return True
    return False


def _check_leave(
    room_version: RoomVersion, event: Event, auth_state: Mapping[StateKey, Event], power: PowerLevels
) -> None:
    target = event.state_key
    sender = event.sender
    if sender == target:
        can_leave = ("invite", "join", "knock") if room_version.knock_join_rule else ("invite", "join")
        if membership_of(auth_state, sender) in can_leave:
            return
        raise AuthError("You cannot leave a room you are not in, invited to or knocking on")
    if membership_of(auth_state, sender) != "join":
        raise AuthError("You are not in this room")
    sender_level = power.user_level(sender)
    if membership_of(auth_state, target) == "ban" and sender_level < power.named_level("ban"):
        raise AuthError("You do not have permission to unban users")
    if sender_level >= power.named_level("kick") and power.user_level(target) < sender_level:
        return
    raise AuthError(f"You do not have permission to kick {target}")


def _check_ban(event: Event, auth_state: Mapping[StateKey, Event], power: PowerLevels) -> None:
    sender = event.sender
    if membership_of(auth_state, sender) != "join":
        raise AuthError("You are not in this room")
    sender_level = power.user_level(sender)
    if sender_level >= power.named_level("ban") and power.user_level(event.state_key) < sender_level:
        return
    raise AuthError(f"You do not have permission to ban {event.state_key}")


def _check_knock(room_version: RoomVersion, event: Event, auth_state: Mapping[StateKey, Event]) -> None:
    knock_rules = ("knock", "knock_restricted") if room_version.knock_restricted_join_rule else ("knock",)
    if join_rule_of(auth_state) not in knock_rules:
        raise AuthError("This room does not accept knocks")
    if event.sender != event.state_key:
        raise AuthError("Cannot knock on behalf of another user")
    if membership_of(auth_state, event.sender) in ("ban", "invite", "join"):
        raise AuthError("You cannot knock: you are already banned, invited or joined")


def _server_of_user(user_id: Any) -> str | None:
    if not isinstance(user_id, str):
        return None
    try:
        return parse_user_id(user_id)[1]
    except ValueError:
        return None
