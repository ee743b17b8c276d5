"""Steps 1-3 of "Checks performed on receipt of a PDU" (server-server-api): format, signatures, hash.

Pure: the caller fetches the signing keys (`keys_needed` says which) and passes a lookup over them.
Auth (steps 4-6) needs room state and lives with the handler that has it.
"""

from collections.abc import Mapping
from typing import Any

from homeserver.core.event_hashing import has_valid_content_hash
from homeserver.core.event_signing import required_signature_servers, verify_event_signatures
from homeserver.core.events import Event
from homeserver.core.json_signing import KeyLookup, signature_key_ids
from homeserver.core.redaction import prune_event_dict
from homeserver.core.room_versions import RoomVersion


def keys_needed(room_version: RoomVersion, pdu: Mapping[str, Any]) -> dict[str, list[str]]:
    """server -> the key ids of its signatures on the event, for the servers that must have signed it."""
    servers = required_signature_servers(room_version, pdu)
    pruned = prune_event_dict(room_version, pdu)
    return {server: signature_key_ids(pruned, server) for server in sorted(servers)}


def check_received_pdu(room_version: RoomVersion, pdu: Mapping[str, Any], lookup: KeyLookup) -> Event:
    """The event a received PDU stands for, or an error that means: drop it.

    400 M_BAD_JSON (or 413 M_TOO_LARGE) when the format is wrong for the room version (for v3+ the
    event id is computed from the reference hash, so a PDU cannot claim another id); SignatureError
    when a server that must have signed it did not. A content hash mismatch is not an error: the
    spec has us keep the redacted form, and the signatures still hold over it.
    """
    event = Event.from_pdu(room_version, pdu)
    verify_event_signatures(room_version, pdu, lookup)
    if not has_valid_content_hash(pdu):
        return event.pruned()
    return event
