"""Whether a PDU has the shape its room version's event format demands.

The formats are api/server-server/definitions/pdu_v{1,3,4,6,11,12}.yaml: a PDU that fails here
is dropped on receipt ("Checks performed on receipt of a PDU", step 1) and refused when built.
"""

from collections.abc import Mapping
from typing import Any

from homeserver.core.canonical_json import check_event_size_limits, validate_canonical_json
from homeserver.core.errors import MatrixError
from homeserver.core.room_versions import RoomVersion

# pdu_v*.yaml: "Must contain less than or equal to 20 / 10 events".
MAX_PREV_EVENTS = 20
MAX_AUTH_EVENTS = 10


def _bad(msg: str) -> MatrixError:
    return MatrixError(400, "M_BAD_JSON", msg)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require_str(pdu: Mapping[str, Any], key: str, sigil: str | None = None) -> None:
    value = pdu.get(key)
    if not isinstance(value, str):
        raise _bad(f"'{key}' must be a string")
    if sigil is not None and not value.startswith(sigil):
        raise _bad(f"'{key}' must start with {sigil!r}")


def _check_event_refs(room_version: RoomVersion, pdu: Mapping[str, Any], key: str, limit: int) -> None:
    refs = pdu.get(key)
    if not isinstance(refs, list | tuple):
        raise _bad(f"'{key}' must be a list")
    if len(refs) > limit:
        raise _bad(f"'{key}' has more than {limit} entries")
    for ref in refs:
        if room_version.event_refs_include_hashes:
            # v1-v2: `[event_id, {"sha256": ...}]`. Real servers send an empty hash object.
            ok = (
                isinstance(ref, list | tuple)
                and len(ref) == 2
                and isinstance(ref[0], str)
                and ref[0].startswith("$")
                and isinstance(ref[1], Mapping)
            )
        else:
            ok = isinstance(ref, str) and ref.startswith("$")
        if not ok:
            raise _bad(f"Malformed entry in '{key}': {ref!r}")


def validate_pdu(room_version: RoomVersion, pdu: Mapping[str, Any]) -> None:
    """Check a PDU in federation format against its room version; 400 M_BAD_JSON or 413 M_TOO_LARGE.

    Checks structure, canonical JSON (strictly from v6) and the size limits. It does not check
    hashes, signatures or auth: those are later steps of receiving an event.
    """
    if not isinstance(pdu, Mapping):
        raise _bad("An event must be a JSON object")
    _require_str(pdu, "type")
    _require_str(pdu, "sender", "@")
    if not isinstance(pdu.get("content"), Mapping):
        raise _bad("'content' must be an object")
    if not _is_int(pdu.get("origin_server_ts")):
        raise _bad("'origin_server_ts' must be an integer")
    depth = pdu.get("depth")
    if not _is_int(depth) or not 0 <= depth <= room_version.max_depth:
        raise _bad(f"'depth' must be an integer from 0 to {room_version.max_depth}")
    hashes = pdu.get("hashes")
    if not isinstance(hashes, Mapping) or not isinstance(hashes.get("sha256"), str):
        raise _bad("'hashes' must be an object with a 'sha256' string")
    signatures = pdu.get("signatures")
    if not isinstance(signatures, Mapping) or not all(
        isinstance(sigs, Mapping) and all(isinstance(s, str) for s in sigs.values()) for sigs in signatures.values()
    ):
        raise _bad("'signatures' must be an object of objects of strings")
    if "state_key" in pdu:
        _require_str(pdu, "state_key")
    if "unsigned" in pdu and not isinstance(pdu["unsigned"], Mapping):
        raise _bad("'unsigned' must be an object")
    _check_event_refs(room_version, pdu, "prev_events", MAX_PREV_EVENTS)
    _check_event_refs(room_version, pdu, "auth_events", MAX_AUTH_EVENTS)

    if room_version.event_id_in_pdu:
        _require_str(pdu, "event_id", "$")
    if room_version.room_id_is_create_event_id and pdu.get("type") == "m.room.create":
        # v12: the create event's id *is* the room id, so it cannot contain it.
        if "room_id" in pdu:
            raise _bad("An m.room.create event must not have a 'room_id' in this room version")
    else:
        _require_str(pdu, "room_id", "!")
    if "redacts" in pdu:
        # Optional in the schema even for m.room.redaction; what it points at is for the auth rules.
        _require_str(pdu, "redacts")

    validate_canonical_json(pdu, strict=room_version.strict_canonical_json)
    check_event_size_limits(pdu)
