import copy

import pytest

from homeserver.core.event_hashing import compute_content_hash, content_hash_base64, has_valid_content_hash
from homeserver.core.event_signing import (
    add_hashes_and_signatures,
    is_event_signed_by,
    required_signature_servers,
    sign_event,
    verify_event_signatures,
)
from homeserver.core.json_signing import (
    ServerVerifyKey,
    SignatureError,
    key_id_of,
    signing_key_from_seed,
    verify_key_base64,
    verify_key_from_base64,
)
from homeserver.core.redaction import prune_event_dict
from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS

from .vectors import load_vectors, spec_server_name, spec_signing_key

SIGNING = load_vectors("event-signing.json")
VECTORS = SIGNING["vectors"]
V1 = KNOWN_ROOM_VERSIONS["1"]
# "these vectors use the v1-style key list": every version before v11 redacts them the same way.
V1_STYLE_VERSIONS = [str(n) for n in range(1, 11)]


def _keyring(*keys, valid_until_ts=2**62):
    """A lookup over (server_name, signing_key) pairs, as the key fetcher would answer it."""
    known = {}
    for server, key in keys:
        verify_key = verify_key_from_base64(key_id_of(key), verify_key_base64(key))
        known[(server, key_id_of(key))] = ServerVerifyKey(verify_key, valid_until_ts)
    return lambda server, key_id: known.get((server, key_id))


SPEC_KEYRING = _keyring(("domain", spec_signing_key()))


@pytest.mark.parametrize("vector", VECTORS, ids=["minimal", "message"])
def test_spec_content_hash(vector):
    assert content_hash_base64(vector["input"]) == vector["expected_content_hash_sha256"]
    assert has_valid_content_hash(vector["expected_signed"])


@pytest.mark.parametrize("version", V1_STYLE_VERSIONS)
@pytest.mark.parametrize("vector", VECTORS, ids=["minimal", "message"])
def test_spec_event_signing_vectors(vector, version):
    original = copy.deepcopy(vector["input"])
    signed = add_hashes_and_signatures(
        KNOWN_ROOM_VERSIONS[version], vector["input"], spec_server_name(), spec_signing_key()
    )
    assert signed == vector["expected_signed"]
    assert signed["signatures"]["domain"]["ed25519:1"] == vector["expected_signature"]
    assert vector["input"] == original


@pytest.mark.parametrize("version", ["11", "12"])
def test_v11_signs_a_different_redacted_form(version):
    # v11 no longer protects `origin`, which both vectors carry: the signature must differ.
    signed = add_hashes_and_signatures(KNOWN_ROOM_VERSIONS[version], VECTORS[0]["input"], "domain", spec_signing_key())
    assert signed["hashes"]["sha256"] == VECTORS[0]["expected_content_hash_sha256"]
    assert signed["signatures"]["domain"]["ed25519:1"] != VECTORS[0]["expected_signature"]
    verify_event_signatures(KNOWN_ROOM_VERSIONS[version], signed, SPEC_KEYRING)
    with pytest.raises(SignatureError):
        verify_event_signatures(KNOWN_ROOM_VERSIONS[version], VECTORS[0]["expected_signed"], SPEC_KEYRING)


@pytest.mark.parametrize("vector", VECTORS, ids=["minimal", "message"])
def test_signed_vectors_verify(vector):
    verify_event_signatures(V1, vector["expected_signed"], SPEC_KEYRING)


def test_redacted_copy_still_verifies_but_fails_the_content_hash():
    signed = VECTORS[1]["expected_signed"]
    redacted = prune_event_dict(V1, signed)
    assert redacted["content"] == {}
    verify_event_signatures(V1, redacted, SPEC_KEYRING)
    assert not has_valid_content_hash(redacted)


def test_changing_unprotected_content_fails_only_the_content_hash():
    tampered = copy.deepcopy(VECTORS[1]["expected_signed"])
    tampered["content"]["body"] = "Something else"
    verify_event_signatures(V1, tampered, SPEC_KEYRING)  # the signature covers the redacted form only
    assert not has_valid_content_hash(tampered)


@pytest.mark.parametrize("key", ["sender", "origin_server_ts", "type", "room_id"])
def test_changing_protected_fields_fails_the_signature(key):
    tampered = copy.deepcopy(VECTORS[1]["expected_signed"])
    tampered[key] = "@x:domain" if key == "sender" else 7 if key == "origin_server_ts" else "!other:domain"
    with pytest.raises(SignatureError):
        verify_event_signatures(V1, tampered, SPEC_KEYRING)


@pytest.mark.parametrize("hashes", [{}, {"sha256": 5}, {"sha256": "!!!not base64"}, {"sha256": ""}, None])
def test_malformed_hashes_are_invalid(hashes):
    event = copy.deepcopy(VECTORS[1]["expected_signed"])
    event["hashes"] = hashes
    assert not has_valid_content_hash(event)


def test_content_hash_ignores_unsigned_signatures_and_hashes():
    event = copy.deepcopy(VECTORS[1]["expected_signed"])
    before = compute_content_hash(event)
    event["unsigned"] = {"age": 99}
    event["signatures"] = {}
    event["hashes"] = {"sha256": "x"}
    assert compute_content_hash(event) == before


def test_signatures_from_other_servers_are_kept_when_signing():
    other = signing_key_from_seed("D" * 43, "x")
    signed = sign_event(V1, VECTORS[1]["expected_signed"], "other.example", other)
    assert set(signed["signatures"]) == {"domain", "other.example"}
    assert is_event_signed_by(V1, signed, "other.example", _keyring(("other.example", other)))
    assert not is_event_signed_by(
        V1, VECTORS[1]["expected_signed"], "other.example", _keyring(("other.example", other))
    )


# --- which servers must have signed ---------------------------------------------------------


def _event(version, sender="@u:a.example", event_id="$e:b.example", **extra):
    pdu = {"type": "m.room.message", "sender": sender, "room_id": "!r:a.example", "content": {}, **extra}
    if KNOWN_ROOM_VERSIONS[version].event_id_in_pdu:
        pdu["event_id"] = event_id
    return pdu


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("1", {"a.example", "b.example"}),
        ("2", {"a.example", "b.example"}),
        ("3", {"a.example"}),
        ("12", {"a.example"}),
    ],
)
def test_v1_v2_also_need_the_event_id_servers_signature(version, expected):
    assert required_signature_servers(KNOWN_ROOM_VERSIONS[version], _event(version)) == expected


def test_v1_event_signed_only_by_the_sender_is_dropped():
    key_a = signing_key_from_seed("E" * 43, "1")
    key_b = signing_key_from_seed("F" * 43, "1")
    keyring = _keyring(("a.example", key_a), ("b.example", key_b))
    signed = add_hashes_and_signatures(V1, _event("1", origin_server_ts=1, depth=1), "a.example", key_a)
    with pytest.raises(SignatureError, match="b.example"):
        verify_event_signatures(V1, signed, keyring)
    verify_event_signatures(V1, sign_event(V1, signed, "b.example", key_b), keyring)


def test_third_party_invites_need_no_sender_signature():
    content = {"membership": "invite", "third_party_invite": {"signed": {}}}
    invite = _event("10", type="m.room.member", state_key="@x:c", content=content, hashes={}, signatures={})
    assert required_signature_servers(KNOWN_ROOM_VERSIONS["10"], invite) == set()
    verify_event_signatures(KNOWN_ROOM_VERSIONS["10"], invite, SPEC_KEYRING)
    plain_invite = {**invite, "content": {"membership": "invite"}}
    with pytest.raises(SignatureError):
        verify_event_signatures(KNOWN_ROOM_VERSIONS["10"], plain_invite, SPEC_KEYRING)


def test_event_without_a_sender_server_is_dropped():
    with pytest.raises(SignatureError):
        verify_event_signatures(KNOWN_ROOM_VERSIONS["10"], _event("10", sender="nobody"), SPEC_KEYRING)


@pytest.mark.parametrize(("version", "enforced"), [("4", False), ("5", True), ("12", True)])
def test_key_validity_is_enforced_from_v5(version, enforced):
    room_version = KNOWN_ROOM_VERSIONS[version]
    signed = add_hashes_and_signatures(
        room_version, _event(version, origin_server_ts=5000), "a.example", spec_signing_key()
    )
    expired_before = _keyring(("a.example", spec_signing_key()), valid_until_ts=4999)
    valid_until_then = _keyring(("a.example", spec_signing_key()), valid_until_ts=5000)
    verify_event_signatures(room_version, signed, valid_until_then)
    if enforced:
        with pytest.raises(SignatureError):
            verify_event_signatures(room_version, signed, expired_before)
        assert not is_event_signed_by(room_version, signed, "a.example", expired_before)
    else:
        verify_event_signatures(room_version, signed, expired_before)
