"""Hashing and signing outgoing events, checking the signatures of received ones.

server-server-api "Signing Events": the content hash covers the whole event, the signature
covers the redacted event (hash included), so a redacted copy still verifies.
"""

from collections.abc import Mapping
from typing import Any

from signedjson.types import SigningKey

from homeserver.core.event_hashing import content_hash_base64
from homeserver.core.json_signing import KeyLookup, SignatureError, sign_json, verify_json_signatures
from homeserver.core.redaction import prune_event_dict
from homeserver.core.room_versions import RoomVersion


def server_of(identifier: str) -> str | None:
    """The server name in `@user:server`, `!room:server` or `$event:server`; None if there is none."""
    _, sep, server = identifier.partition(":")
    return server if sep and server else None


def sign_event(
    room_version: RoomVersion, pdu: Mapping[str, Any], server_name: str, signing_key: SigningKey
) -> dict[str, Any]:
    """A copy of `pdu` with this server's signature over its redacted form added.

    Used on its own to countersign an event another server built (restricted joins, send_join);
    the event's hashes must already be in place.
    """
    signed_redacted = sign_json(prune_event_dict(room_version, pdu), server_name, signing_key)
    signed = dict(pdu)
    signed["signatures"] = signed_redacted["signatures"]
    return signed


def add_hashes_and_signatures(
    room_version: RoomVersion, pdu: Mapping[str, Any], server_name: str, signing_key: SigningKey
) -> dict[str, Any]:
    """A copy of `pdu` with `hashes.sha256` set and signed by this server: an outgoing event."""
    hashed = dict(pdu)
    hashed["hashes"] = {"sha256": content_hash_base64(pdu)}
    return sign_event(room_version, hashed, server_name, signing_key)


def _is_third_party_invite(pdu: Mapping[str, Any]) -> bool:
    content = pdu.get("content")
    return (
        pdu.get("type") == "m.room.member"
        and isinstance(content, Mapping)
        and content.get("membership") == "invite"
        and "third_party_invite" in content
    )


def required_signature_servers(room_version: RoomVersion, pdu: Mapping[str, Any]) -> set[str]:
    """The servers whose signatures an event must carry to be accepted at all.

    The sender's server, except for an invite made from a third-party invite (whoever completes
    it may send it); in v1-v2 also the server in the event id.
    """
    servers: set[str] = set()
    sender = pdu.get("sender")
    if isinstance(sender, str) and not _is_third_party_invite(pdu):
        sender_server = server_of(sender)
        if sender_server:
            servers.add(sender_server)
    if room_version.event_id_in_pdu:
        event_id = pdu.get("event_id")
        event_server = server_of(event_id) if isinstance(event_id, str) else None
        if event_server:
            servers.add(event_server)
    return servers


def verify_event_signatures(room_version: RoomVersion, pdu: Mapping[str, Any], lookup: KeyLookup) -> None:
    """Check the signatures a received event needs; SignatureError means drop it.

    Works on the full event or a redacted copy alike. From v5, keys that expired before the
    event's origin_server_ts do not count. An event naming no server to check (a malformed
    sender) fails, unless it is a third-party invite.
    """
    servers = required_signature_servers(room_version, pdu)
    if not servers and not _is_third_party_invite(pdu):
        raise SignatureError("Event has no server to check signatures against")
    verify_json_signatures(
        prune_event_dict(room_version, pdu), servers, lookup, valid_at_ts=_valid_at(room_version, pdu)
    )


def is_event_signed_by(room_version: RoomVersion, pdu: Mapping[str, Any], server_name: str, lookup: KeyLookup) -> bool:
    """Whether `server_name` validly signed the event: the auth rules ask this of the server
    named by `join_authorised_via_users_server`."""
    try:
        verify_json_signatures(
            prune_event_dict(room_version, pdu),
            [server_name],
            lookup,
            valid_at_ts=_valid_at(room_version, pdu),
        )
    except SignatureError:
        return False
    return True


def _valid_at(room_version: RoomVersion, pdu: Mapping[str, Any]) -> int | None:
    ts = pdu.get("origin_server_ts")
    return ts if room_version.enforce_key_validity and isinstance(ts, int) else None
