"""Signing JSON and checking signatures (appendices, "Signing JSON"), with ed25519 keys.

Keys are signedjson's (PyNaCl keys carrying `alg` and `version`), so a key id is `alg:version`.
Lookups of other servers' keys are the caller's business: this module only takes a function
that answers from what has already been fetched, and never does I/O.
"""

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from signedjson.key import (
    decode_signing_key_base64,
    decode_verify_key_base64,
    encode_verify_key_base64,
    get_verify_key,
)
from signedjson.sign import SignatureVerifyException, verify_signed_json
from signedjson.sign import sign_json as _sign_json
from signedjson.types import SigningKey, VerifyKey

from homeserver.core.errors import MatrixError

SUPPORTED_ALGORITHMS = frozenset({"ed25519"})


@dataclass(frozen=True)
class ServerVerifyKey:
    """A server's public key as we know it, with the time (ms) it is valid until.

    For a key that is still published, `valid_until_ts` is the lesser of its `valid_until_ts`
    and seven days from when it was fetched (rooms/fragments/v5-signing-requirements.md); for
    an old key, its `expired_ts`. The fetcher works that out, not this module.
    """

    verify_key: VerifyKey
    valid_until_ts: int


# (server_name, key_id) -> the key, or None when we do not know it.
KeyLookup = Callable[[str, str], ServerVerifyKey | None]


class SignatureError(MatrixError):
    """An object lacks a valid signature from a server whose signature it needs."""

    def __init__(self, msg: str) -> None:
        super().__init__(403, "M_FORBIDDEN", msg)


def signing_key_from_seed(seed_base64: str, key_version: str, algorithm: str = "ed25519") -> SigningKey:
    """A signing key from its unpadded-base64 seed, as written in a signing key file."""
    return decode_signing_key_base64(algorithm, key_version, seed_base64)


def verify_key_from_base64(key_id: str, key_base64: str) -> VerifyKey:
    """A public key from a key id (`ed25519:abc`) and its unpadded-base64 bytes (as in /key/v2)."""
    algorithm, _, version = key_id.partition(":")
    return decode_verify_key_base64(algorithm, version, key_base64)


def key_id_of(key: SigningKey | VerifyKey) -> str:
    return f"{key.alg}:{key.version}"


def verify_key_base64(signing_key: SigningKey) -> str:
    """The public half of a signing key, unpadded base64, as published in /key/v2/server."""
    return encode_verify_key_base64(get_verify_key(signing_key))


def sign_json(json_object: Mapping[str, Any], server_name: str, signing_key: SigningKey) -> dict[str, Any]:
    """A copy of `json_object` with this server's signature added to `signatures`."""
    obj = dict(json_object)
    # signedjson adds to `signatures` in place: give it a copy so the caller's stays as it was.
    obj["signatures"] = {name: dict(sigs) for name, sigs in json_object.get("signatures", {}).items()}
    return _sign_json(obj, server_name, signing_key)


def signature_key_ids(json_object: Mapping[str, Any], server_name: str) -> list[str]:
    """The key ids `server_name` signed with, in algorithms we understand."""
    signatures = json_object.get("signatures")
    server_sigs = signatures.get(server_name) if isinstance(signatures, Mapping) else None
    if not isinstance(server_sigs, Mapping):
        return []
    return [k for k in server_sigs if isinstance(k, str) and k.split(":", 1)[0] in SUPPORTED_ALGORITHMS]


def is_signature_valid(json_object: Mapping[str, Any], server_name: str, verify_key: VerifyKey) -> bool:
    """Whether the signature of `server_name` under this key's id verifies against the object."""
    try:
        verify_signed_json(dict(json_object), server_name, verify_key)
    except SignatureVerifyException:
        return False
    return True


def verify_json_signatures(
    json_object: Mapping[str, Any],
    server_names: Iterable[str],
    lookup: KeyLookup,
    *,
    valid_at_ts: int | None = None,
) -> None:
    """Check that every server in `server_names` has signed `json_object`; SignatureError if not.

    Following "Checking for a Signature": a server passes when it has at least one signature
    under a key we know, and every signature under a key we know is valid. Signatures under
    unknown keys are skipped. With `valid_at_ts`, keys valid only until before it count as unknown.
    """
    for server_name in server_names:
        key_ids = signature_key_ids(json_object, server_name)
        if not key_ids:
            raise SignatureError(f"Not signed by {server_name}")
        checked = 0
        for key_id in key_ids:
            known = lookup(server_name, key_id)
            if known is None or (valid_at_ts is not None and known.valid_until_ts < valid_at_ts):
                continue
            if key_id_of(known.verify_key) != key_id:
                raise SignatureError(f"Key for {server_name} {key_id} has the wrong id")
            if not is_signature_valid(json_object, server_name, known.verify_key):
                raise SignatureError(f"Invalid signature from {server_name} with {key_id}")
            checked += 1
        if not checked:
            raise SignatureError(f"No known, valid key for the signatures of {server_name}")
