import pytest

from homeserver.core.errors import MatrixError
from homeserver.core.event_hashing import compute_event_id
from homeserver.core.event_signing import add_hashes_and_signatures
from homeserver.core.json_signing import (
    ServerVerifyKey,
    SignatureError,
    key_id_of,
    signing_key_from_seed,
    verify_key_base64,
    verify_key_from_base64,
)
from homeserver.core.pdu_checks import check_received_pdu, keys_needed
from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS

from .vectors import load_vectors, spec_signing_key

VECTORS = load_vectors("event-signing.json")["vectors"]
V1 = KNOWN_ROOM_VERSIONS["1"]
V10 = KNOWN_ROOM_VERSIONS["10"]
OTHER_KEY = signing_key_from_seed("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1", "other")


def _lookup(server, key):
    verify_key = verify_key_from_base64(key_id_of(key), verify_key_base64(key))
    known = {(server, key_id_of(key)): ServerVerifyKey(verify_key, 2**62)}
    return lambda s, k: known.get((s, k))


SPEC = _lookup("domain", spec_signing_key())


def _v1_event():
    # The spec's message vector (a v1 event with an event_id), completed to a full PDU and signed with its key.
    pdu = {**VECTORS[1]["input"], "prev_events": [], "auth_events": [], "depth": 3}
    return add_hashes_and_signatures(V1, pdu, "domain", spec_signing_key())


def test_signed_v1_event_is_accepted():
    pdu = _v1_event()
    event = check_received_pdu(V1, pdu, SPEC)
    assert event.event_id == "$0:domain"
    assert event.content["body"] == "Here is the message content"
    assert keys_needed(V1, pdu) == {"domain": ["ed25519:1"]}


def test_content_hash_mismatch_keeps_the_redacted_form():
    pdu = _v1_event()
    pdu["content"]["body"] = "tampered"  # the signature covers the redacted form, so it still verifies
    event = check_received_pdu(V1, pdu, SPEC)
    assert event.event_id == "$0:domain"
    assert dict(event.content) == {}


def test_signature_by_another_key_is_refused():
    pdu = _v1_event()
    pdu["type"] = "m.room.other"  # type is kept by redaction: the signature no longer matches
    with pytest.raises(SignatureError):
        check_received_pdu(V1, pdu, SPEC)
    with pytest.raises(SignatureError):
        check_received_pdu(V1, _v1_event(), _lookup("domain", OTHER_KEY))


def _v10_event(sender="@a:domain"):
    pdu = {
        "room_id": "!x:domain",
        "sender": sender,
        "type": "m.room.message",
        "content": {"body": "hi"},
        "prev_events": ["$prev"],
        "auth_events": ["$auth"],
        "depth": 3,
        "origin_server_ts": 1000,
    }
    return add_hashes_and_signatures(V10, pdu, "domain", spec_signing_key())


def test_v3_plus_event_id_is_the_reference_hash():
    pdu = _v10_event()
    event = check_received_pdu(V10, pdu, SPEC)
    assert event.event_id == compute_event_id(V10, pdu)
    pdu["event_id"] = "$claimed:domain"  # not part of the v4+ format
    with pytest.raises(MatrixError):
        check_received_pdu(V10, pdu, SPEC)


def test_sender_server_must_have_signed():
    pdu = _v10_event(sender="@a:elsewhere")  # signed by "domain" only
    assert keys_needed(V10, pdu) == {"elsewhere": []}
    with pytest.raises(SignatureError):
        check_received_pdu(V10, pdu, SPEC)


def test_third_party_invite_needs_no_sender_signature():
    pdu = _v10_event(sender="@a:elsewhere")
    pdu = {
        **pdu,
        "type": "m.room.member",
        "state_key": "@b:x",
        "content": {"membership": "invite", "third_party_invite": {"signed": {}}},
    }
    assert keys_needed(V10, pdu) == {}
