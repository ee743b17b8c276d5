import copy

import pytest

from homeserver.core.errors import MatrixError
from homeserver.core.json_signing import (
    ServerVerifyKey,
    SignatureError,
    is_signature_valid,
    key_id_of,
    sign_json,
    signing_key_from_seed,
    verify_json_signatures,
    verify_key_base64,
    verify_key_from_base64,
)

from .vectors import load_vectors, spec_server_name, spec_signing_key

KEY = load_vectors("signing-key.json")
SIGNING = load_vectors("json-signing.json")


def _lookup_for(verify_key, server="domain", valid_until_ts=2**62):
    known = {(server, key_id_of(verify_key)): ServerVerifyKey(verify_key, valid_until_ts)}
    return lambda server_name, key_id: known.get((server_name, key_id))


def _spec_verify_key():
    return verify_key_from_base64(KEY["key_id"], KEY["derived_public_key_unpadded_base64"])


def test_spec_seed_gives_the_published_public_key():
    key = spec_signing_key()
    assert key_id_of(key) == KEY["key_id"] == "ed25519:1"
    assert verify_key_base64(key) == KEY["derived_public_key_unpadded_base64"]


@pytest.mark.parametrize("vector", SIGNING["vectors"], ids=["empty", "one-two"])
def test_spec_json_signing_vectors(vector):
    original = copy.deepcopy(vector["input"])
    signed = sign_json(vector["input"], spec_server_name(), spec_signing_key())
    assert signed == vector["expected_signed"]
    assert vector["input"] == original  # the caller's object is not changed
    verify_json_signatures(signed, ["domain"], _lookup_for(_spec_verify_key()))


def test_signing_keeps_unsigned_out_of_the_signature_and_in_the_result():
    vector = SIGNING["vectors"][1]
    signed = sign_json({**vector["input"], "unsigned": {"age": 5}}, "domain", spec_signing_key())
    assert signed["unsigned"] == {"age": 5}
    assert signed["signatures"] == vector["expected_signed"]["signatures"]


def test_signing_adds_to_existing_signatures_without_changing_the_input():
    other = signing_key_from_seed("A" * 43, "2")
    first = sign_json({"a": 1}, "other", other)
    second = sign_json(first, "domain", spec_signing_key())
    assert set(second["signatures"]) == {"other", "domain"}
    assert set(first["signatures"]) == {"other"}


def test_tampered_object_fails():
    signed = copy.deepcopy(SIGNING["vectors"][1]["expected_signed"])
    signed["two"] = "Three"
    assert not is_signature_valid(signed, "domain", _spec_verify_key())
    with pytest.raises(SignatureError) as e:
        verify_json_signatures(signed, ["domain"], _lookup_for(_spec_verify_key()))
    assert isinstance(e.value, MatrixError) and e.value.code == 403


def test_unsigned_data_can_change_without_breaking_the_signature():
    signed = copy.deepcopy(SIGNING["vectors"][1]["expected_signed"])
    signed["unsigned"] = {"age": 1000}
    verify_json_signatures(signed, ["domain"], _lookup_for(_spec_verify_key()))


def test_missing_signature_fails():
    with pytest.raises(SignatureError, match="Not signed by other"):
        verify_json_signatures(SIGNING["vectors"][1]["expected_signed"], ["other"], _lookup_for(_spec_verify_key()))


def test_unknown_keys_are_skipped_but_one_known_key_is_needed():
    signed = sign_json(SIGNING["vectors"][1]["expected_signed"], "domain", signing_key_from_seed("B" * 43, "new"))
    # ed25519:new is unknown and skipped; ed25519:1 is known and valid.
    verify_json_signatures(signed, ["domain"], _lookup_for(_spec_verify_key()))
    with pytest.raises(SignatureError, match="No known"):
        verify_json_signatures(signed, ["domain"], lambda server, key_id: None)


def test_a_bad_signature_under_a_known_key_fails_even_beside_a_good_one():
    signed = copy.deepcopy(SIGNING["vectors"][1]["expected_signed"])
    bad_key = signing_key_from_seed("C" * 43, "2")
    # A signature by key 2, but over a different object.
    other_signature = sign_json({"x": 1}, "domain", bad_key)["signatures"]["domain"]["ed25519:2"]
    signed["signatures"]["domain"]["ed25519:2"] = other_signature
    lookup = {
        ("domain", "ed25519:1"): ServerVerifyKey(_spec_verify_key(), 2**62),
        ("domain", "ed25519:2"): ServerVerifyKey(
            verify_key_from_base64("ed25519:2", verify_key_base64(bad_key)), 2**62
        ),
    }
    with pytest.raises(SignatureError, match="Invalid signature"):
        verify_json_signatures(signed, ["domain"], lambda s, k: lookup.get((s, k)))


def test_unsupported_algorithms_are_ignored():
    signed = copy.deepcopy(SIGNING["vectors"][1]["expected_signed"])
    signed["signatures"]["domain"] = {"curve25519:1": "whatever"}
    with pytest.raises(SignatureError, match="Not signed"):
        verify_json_signatures(signed, ["domain"], _lookup_for(_spec_verify_key()))


def test_expired_keys_count_as_unknown_when_a_time_is_given():
    signed = SIGNING["vectors"][1]["expected_signed"]
    lookup = _lookup_for(_spec_verify_key(), valid_until_ts=1000)
    verify_json_signatures(signed, ["domain"], lookup, valid_at_ts=1000)
    verify_json_signatures(signed, ["domain"], lookup)
    with pytest.raises(SignatureError):
        verify_json_signatures(signed, ["domain"], lookup, valid_at_ts=1001)
