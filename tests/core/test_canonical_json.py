import pytest

from homeserver.core.canonical_json import (
    CANONICAL_INT_MAX,
    CANONICAL_INT_MIN,
    MAX_PDU_BYTES,
    check_event_size_limits,
    decode_json,
    encode_canonical_json,
    validate_canonical_json,
)
from homeserver.core.errors import MatrixError

from .vectors import load_vectors

CANONICAL = load_vectors("canonical-json.json")
LIMITS = load_vectors("identifier-limits.json")


@pytest.mark.parametrize("vector", CANONICAL["vectors"], ids=lambda v: v["expected_canonical"])
def test_spec_examples_encode_to_their_canonical_bytes(vector):
    value = decode_json(vector["input_text"])
    assert encode_canonical_json(value) == vector["expected_canonical"].encode("utf-8")
    validate_canonical_json(value)  # every spec example is valid canonical JSON


def test_integer_range_is_the_spec_range():
    assert CANONICAL["integer_range"] == [CANONICAL_INT_MIN, CANONICAL_INT_MAX]


@pytest.mark.parametrize("value", CANONICAL["integer_range"])
def test_integers_at_the_bounds_are_accepted(value):
    validate_canonical_json({"n": value})


@pytest.mark.parametrize("value", [CANONICAL_INT_MAX + 1, CANONICAL_INT_MIN - 1, 2**63])
def test_integers_beyond_the_bounds_are_refused_when_strict(value):
    with pytest.raises(MatrixError) as e:
        validate_canonical_json({"a": [{"n": value}]})
    assert (e.value.code, e.value.errcode) == (400, "M_BAD_JSON")
    validate_canonical_json({"a": [{"n": value}]}, strict=False)  # room versions 1-5 tolerate them


@pytest.mark.parametrize("text", ['{"a": 1.5}', '{"a": [0.1]}', '{"a": {"b": 5.114698E4}}', '{"a": 1e-3}'])
def test_floats_are_refused_when_strict_and_tolerated_otherwise(text):
    value = decode_json(text)
    with pytest.raises(MatrixError, match="Float"):
        validate_canonical_json(value)
    validate_canonical_json(value, strict=False)


@pytest.mark.parametrize(("text", "expected"), [("1e10", 10_000_000_000), ("-0", 0), ("2.0", 2), ("-0.0", 0)])
def test_integral_numbers_decode_as_integers(text, expected):
    value = decode_json(text)
    assert value == expected and type(value) is int


def test_huge_exponent_does_not_become_a_huge_integer():
    value = decode_json("1e999999999")
    assert isinstance(value, float)
    with pytest.raises(MatrixError):
        validate_canonical_json(value, strict=False)  # infinite: not JSON at all


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_infinity_are_refused_even_when_lenient(value):
    with pytest.raises(MatrixError):
        validate_canonical_json({"a": value}, strict=False)


@pytest.mark.parametrize("text", ["NaN", '{"a": Infinity}', '{"a": -Infinity}', "{", "", b"\xff"])
def test_non_json_is_m_not_json(text):
    with pytest.raises(MatrixError) as e:
        decode_json(text)
    assert (e.value.code, e.value.errcode) == (400, "M_NOT_JSON")


def test_lone_surrogates_are_refused():
    value = decode_json('{"a": "\\ud800"}')
    with pytest.raises(MatrixError, match="surrogate"):
        validate_canonical_json(value, strict=False)


def test_non_json_types_and_keys_are_refused():
    with pytest.raises(MatrixError):
        validate_canonical_json({"a": {1, 2}})
    with pytest.raises(MatrixError):
        validate_canonical_json({1: "a"})


def test_booleans_are_not_mistaken_for_integers():
    validate_canonical_json({"t": True, "f": False, "n": None})
    assert encode_canonical_json({"t": True}) == b'{"t":true}'


def test_deep_nesting_is_checked_without_recursion():
    value = []
    for _ in range(5000):
        value = [value]
    validate_canonical_json(value)


def test_control_characters_use_the_grammar_escapes():
    assert (
        encode_canonical_json('\x00\x08\t\n\x0b\x1f"\\é\x7f') == '"\\u0000\\b\\t\\n\\u000b\\u001f\\"\\\\é\x7f"'.encode()
    )


# --- size limits -----------------------------------------------------------------------------


def _event(**fields):
    return {"type": "m.room.message", "sender": "@a:b", "room_id": "!r:b", "content": {}, **fields}


@pytest.mark.parametrize(
    ("key", "limit"),
    [
        ("sender", LIMITS["user_id_max_bytes"]),
        ("room_id", LIMITS["room_id_max_bytes"]),
        ("event_id", LIMITS["event_id_max_bytes"]),
        ("state_key", 255),
        ("type", 255),
    ],
)
def test_key_limits_are_in_bytes(key, limit):
    at_limit = "x" * limit
    check_event_size_limits(_event(**{key: at_limit}))
    with pytest.raises(MatrixError) as e:
        check_event_size_limits(_event(**{key: at_limit + "x"}))
    assert (e.value.code, e.value.errcode) == (413, "M_TOO_LARGE")
    # 128 two-byte characters are 256 bytes: over the limit though only 128 codepoints.
    with pytest.raises(MatrixError):
        check_event_size_limits(_event(**{key: "é" * 128}))


def test_whole_event_limit_is_65536_bytes_of_canonical_json():
    base = len(encode_canonical_json(_event(content={"body": ""})))
    exactly = _event(content={"body": "x" * (MAX_PDU_BYTES - base)})
    assert len(encode_canonical_json(exactly)) == MAX_PDU_BYTES == 65536
    check_event_size_limits(exactly)
    with pytest.raises(MatrixError) as e:
        check_event_size_limits(_event(content={"body": "x" * (MAX_PDU_BYTES - base + 1)}))
    assert e.value.errcode == "M_TOO_LARGE"


def test_whole_event_limit_counts_signatures():
    base = len(encode_canonical_json(_event(content={"body": ""})))
    event = _event(content={"body": "x" * (MAX_PDU_BYTES - base)})
    event["signatures"] = {"b": {"ed25519:1": "sig"}}
    with pytest.raises(MatrixError):
        check_event_size_limits(event)
