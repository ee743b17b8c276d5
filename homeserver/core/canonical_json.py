"""Canonical JSON (appendices, "Canonical JSON") and the size limits events must respect.

Encoding is canonicaljson's. What this module adds is the checking the spec asks for: values
outside canonical JSON (floats, integers beyond +-(2**53 - 1)) are refused in room versions that
enforce it, and events are held to the 64 KiB / 255-byte limits of the client-server spec.
"""

import json
import math
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from canonicaljson import encode_canonical_json as _encode

from homeserver.core.errors import MatrixError

CANONICAL_INT_MIN = -(2**53) + 1
CANONICAL_INT_MAX = 2**53 - 1

# client-server-api "Size limits": the whole PDU, with signatures, as canonical JSON.
MAX_PDU_BYTES = 65536
# ... and per key; sender/room_id/event_id inherit the 255-byte identifier limits of the appendices.
MAX_EVENT_KEY_BYTES: Mapping[str, int] = {
    "sender": 255,
    "room_id": 255,
    "state_key": 255,
    "type": 255,
    "event_id": 255,
}


def encode_canonical_json(value: Any) -> bytes:
    """The shortest UTF-8 JSON with keys sorted by codepoint. Raises ValueError for NaN/Infinity."""
    return _encode(value)


def _parse_number(text: str) -> int | float:
    """A number written with a fraction or exponent: the integer it denotes if it is one.

    The spec's own example canonicalises `1e10` to `10000000000`, so an integral value is an
    integer whatever its spelling. A non-integral value stays a float for the caller to refuse
    (or, in room versions 1-5, tolerate). The exponent guard keeps `1e999999999` from building
    a huge int: such a value is out of range either way.
    """
    try:
        number = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the JSON scanner only hands us valid numbers
        return float(text)
    if number.is_finite() and number == number.to_integral_value() and number.adjusted() <= 18:
        return int(number)
    return float(text)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def decode_json(data: bytes | str) -> Any:
    """Parse JSON the way canonical JSON reads numbers; 400 M_NOT_JSON if it is not JSON.

    `NaN`, `Infinity` and `-Infinity` (which Python's json accepts) are refused.
    """
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(text, parse_float=_parse_number, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise MatrixError(400, "M_NOT_JSON", f"Content not JSON: {e}") from None


def _bad_json(msg: str) -> MatrixError:
    return MatrixError(400, "M_BAD_JSON", msg)


def validate_canonical_json(value: Any, *, strict: bool = True) -> None:
    """Check that `value` can be canonical JSON; 400 M_BAD_JSON if not.

    `strict` (room versions 6+) also refuses floats and integers outside +-(2**53 - 1). Without
    it (versions 1-5, which "MUST NOT strictly enforce" the format) only what cannot be encoded
    at all is refused: NaN/Infinity, non-string keys, lone surrogates, non-JSON types.
    """
    # Iterative, so that a deeply nested body cannot exhaust the interpreter's stack.
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if item is None or isinstance(item, bool | str):
            if isinstance(item, str):
                _check_string(item)
        elif isinstance(item, int):
            if strict and not CANONICAL_INT_MIN <= item <= CANONICAL_INT_MAX:
                raise _bad_json(f"Integer out of the canonical JSON range: {item}")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise _bad_json("NaN and Infinity are not valid JSON")
            if strict:
                raise _bad_json(f"Floats are not allowed in canonical JSON: {item!r}")
        elif isinstance(item, Mapping):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise _bad_json(f"Object keys must be strings: {key!r}")
                _check_string(key)
                stack.append(child)
        elif isinstance(item, list | tuple):
            stack.extend(item)
        else:
            raise _bad_json(f"Not a JSON value: {type(item).__name__}")


def _check_string(s: str) -> None:
    # Lone surrogates survive json.loads ("\ud800") but have no UTF-8 encoding.
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad_json("Strings must be valid Unicode (no lone surrogates)") from None


def _too_large(msg: str) -> MatrixError:
    return MatrixError(413, "M_TOO_LARGE", msg)


def check_event_size_limits(pdu: Mapping[str, Any]) -> None:
    """Hold a PDU to the spec's size limits; 413 M_TOO_LARGE if it breaks one.

    The 65536-byte limit covers the federation format, signatures included, as canonical JSON:
    pass the PDU exactly as it is (or will be) sent.
    """
    for key, limit in MAX_EVENT_KEY_BYTES.items():
        value = pdu.get(key)
        if isinstance(value, str) and len(value.encode("utf-8")) > limit:
            raise _too_large(f"'{key}' is longer than {limit} bytes")
    size = len(encode_canonical_json(pdu))
    if size > MAX_PDU_BYTES:
        raise _too_large(f"Event is {size} bytes, more than the {MAX_PDU_BYTES} allowed")
