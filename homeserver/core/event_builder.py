"""Building this server's own events: fill in the ids, hashes and signatures a PDU needs."""

import secrets
import string
from collections.abc import Mapping, Sequence
from typing import Any

from signedjson.types import SigningKey

from homeserver.core.errors import MatrixError
from homeserver.core.event_signing import add_hashes_and_signatures
from homeserver.core.events import Event
from homeserver.core.frozen_json import thaw
from homeserver.core.room_versions import RoomVersion

_OPAQUE_ID_CHARS = string.ascii_letters + string.digits
_OPAQUE_ID_LENGTH = 18


def _opaque_id() -> str:
    return "".join(secrets.choice(_OPAQUE_ID_CHARS) for _ in range(_OPAQUE_ID_LENGTH))


def random_room_id(server_name: str) -> str:
    """A new `!opaque:server` room id, for room versions 1-11 (v12 derives it from the create event)."""
    return f"!{_opaque_id()}:{server_name}"


def random_event_id(server_name: str) -> str:
    """A new `$opaque:server` event id, for room versions 1-2 (later versions hash the event)."""
    return f"${_opaque_id()}:{server_name}"


def build_event(
    room_version: RoomVersion,
    server_name: str,
    signing_key: SigningKey,
    *,
    event_type: str,
    sender: str,
    content: Mapping[str, Any],
    room_id: str | None,
    prev_event_ids: Sequence[str],
    auth_event_ids: Sequence[str],
    depth: int,
    origin_server_ts: int,
    state_key: str | None = None,
    redacts: str | None = None,
) -> Event:
    """A complete, signed event from the fields a handler chooses.

    `room_id` must be None for a v12 create event (its id becomes the room id: use
    `event.room_id` afterwards) and given otherwise. `depth` is clamped to the room version's
    maximum, as the spec asks once a room reaches it. `redacts` goes where the room version
    keeps it (top level before v11, `content` from v11). Raises MatrixError 400 M_BAD_JSON or
    413 M_TOO_LARGE when the result is not a valid event (e.g. a float in strict versions).
    """
    pdu: dict[str, Any] = {
        "type": event_type,
        "sender": sender,
        "content": thaw(content),
        "depth": min(depth, room_version.max_depth),
        "origin_server_ts": origin_server_ts,
    }
    if room_version.event_refs_include_hashes:
        # v1-v2 pair each id with its hashes; servers in the wild send `{}` there and check nothing.
        pdu["prev_events"] = [[event_id, {}] for event_id in prev_event_ids]
        pdu["auth_events"] = [[event_id, {}] for event_id in auth_event_ids]
    else:
        pdu["prev_events"] = list(prev_event_ids)
        pdu["auth_events"] = list(auth_event_ids)

    if room_version.room_id_is_create_event_id and event_type == "m.room.create":
        if room_id is not None:
            raise MatrixError(400, "M_BAD_JSON", "A v12 create event has no room_id: it defines it")
    elif room_id is None:
        raise MatrixError(400, "M_BAD_JSON", "room_id is required")
    else:
        pdu["room_id"] = room_id
    if state_key is not None:
        pdu["state_key"] = state_key
    if redacts is not None:
        if room_version.redacts_in_content:
            if pdu["content"].get("redacts", redacts) != redacts:
                raise MatrixError(400, "M_BAD_JSON", "content.redacts disagrees with redacts")
            pdu["content"]["redacts"] = redacts
        else:
            pdu["redacts"] = redacts
    if room_version.event_id_in_pdu:
        pdu["event_id"] = random_event_id(server_name)

    return Event.from_pdu(room_version, add_hashes_and_signatures(room_version, pdu, server_name, signing_key))
