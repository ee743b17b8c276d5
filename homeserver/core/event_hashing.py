"""Content hashes, reference hashes and the event and room ids made from them.

server-server-api "Calculating the content hash / reference hash for an event", and the event
id formats of rooms/v3.md and rooms/fragments/v4-event-ids.md.
"""

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from unpaddedbase64 import decode_base64, encode_base64

from homeserver.core.canonical_json import encode_canonical_json
from homeserver.core.redaction import prune_event_dict
from homeserver.core.room_versions import EventIdFormat, RoomVersion


def compute_content_hash(pdu: Mapping[str, Any]) -> bytes:
    """SHA-256 over the whole event (unredacted) but `unsigned`, `signatures` and `hashes`."""
    hashed = {k: v for k, v in pdu.items() if k not in ("unsigned", "signatures", "hashes")}
    return hashlib.sha256(encode_canonical_json(hashed)).digest()


def content_hash_base64(pdu: Mapping[str, Any]) -> str:
    """The value for `hashes.sha256`: the content hash in unpadded base64."""
    return encode_base64(compute_content_hash(pdu))


def has_valid_content_hash(pdu: Mapping[str, Any]) -> bool:
    """Whether `hashes.sha256` matches the event; False also when it is missing or not base64.

    A mismatch means we were given a redacted copy (or a tampered one), and the spec has the
    receiver keep only the redacted form.
    """
    hashes = pdu.get("hashes")
    claimed = hashes.get("sha256") if isinstance(hashes, Mapping) else None
    if not isinstance(claimed, str):
        return False
    try:
        claimed_bytes = decode_base64(claimed)
    except Exception:  # binascii.Error and ValueError, depending on the input
        return False
    return hmac.compare_digest(claimed_bytes, compute_content_hash(pdu))


def compute_reference_hash(room_version: RoomVersion, pdu: Mapping[str, Any]) -> bytes:
    """SHA-256 of the redacted event without `signatures` and `unsigned`, as canonical JSON."""
    redacted = prune_event_dict(room_version, pdu)
    redacted.pop("signatures", None)
    redacted.pop("unsigned", None)
    return hashlib.sha256(encode_canonical_json(redacted)).digest()


def compute_event_id(room_version: RoomVersion, pdu: Mapping[str, Any]) -> str:
    """The id of an event in a room version whose ids are reference hashes (v3 and later).

    For v1-v2 the id is whatever the origin server put in `event_id`; ValueError here.
    """
    if room_version.event_id_format is EventIdFormat.V1:
        raise ValueError(f"Room version {room_version.identifier} event ids are not hashes")
    digest = compute_reference_hash(room_version, pdu)
    return "$" + encode_base64(digest, urlsafe=room_version.event_id_format is EventIdFormat.V4)


def room_id_from_create_event_id(create_event_id: str) -> str:
    """v12: a room's id is its create event's id with the `!` sigil instead of `$`."""
    if not create_event_id.startswith("$"):
        raise ValueError(f"not an event id: {create_event_id!r}")
    return "!" + create_event_id[1:]
