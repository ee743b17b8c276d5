"""Server identity on the wire, pure: the X-Matrix Authorization header of server-server requests, and
the key documents of /_matrix/key/v2 (building ours, checking others').

Spec: server-server API, "Request Authentication" and "Retrieving server keys".
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from signedjson.types import SigningKey, VerifyKey

from homeserver.core.ids import is_valid_server_name
from homeserver.core.json_signing import (
    ServerVerifyKey,
    SignatureError,
    is_signature_valid,
    key_id_of,
    sign_json,
    verify_json_signatures,
    verify_key_base64,
    verify_key_from_base64,
)

DEFAULT_FEDERATION_PORT = 8448

# RFC 9110 auth-param: name = token / quoted-string. Colons are allowed in unquoted values for older
# servers (the spec asks recipients to accept them).
_PARAM = re.compile(r'[ \t]*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)[ \t]*=[ \t]*("(?:[^"\\]|\\.)*"|[^,\s"]*)[ \t]*(?:,|$)')


@dataclass(frozen=True)
class XMatrixAuth:
    origin: str
    destination: str | None  # optional for servers older than v1.3
    key_id: str
    signature: str


def parse_x_matrix(header: str) -> XMatrixAuth:
    """The parameters of an `X-Matrix` Authorization header; ValueError when it is not one we can use."""
    scheme, _, params = header.strip().partition(" ")
    if scheme.lower() != "x-matrix":
        raise ValueError("not an X-Matrix authorization")
    values: dict[str, str] = {}
    pos, params = 0, params.strip()
    while pos < len(params):
        m = _PARAM.match(params, pos)
        if not m or m.end() == pos:
            raise ValueError("malformed X-Matrix parameters")
        value = m.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        values.setdefault(m.group(1).lower(), value)  # unknown names are ignored, as the spec says
        pos = m.end()
    missing = [name for name in ("origin", "key", "sig") if not values.get(name)]
    if missing:
        raise ValueError(f"X-Matrix authorization lacks {', '.join(missing)}")
    if not is_valid_server_name(values["origin"]):
        raise ValueError("X-Matrix origin is not a server name")
    return XMatrixAuth(values["origin"], values.get("destination"), values["key"], values["sig"])


def x_matrix_header(auth: XMatrixAuth) -> str:
    """The header as the spec asks senders to write it: one space, lower-case names, quoted values."""
    destination = f',destination="{auth.destination}"' if auth.destination is not None else ""
    return f'X-Matrix origin="{auth.origin}"{destination},key="{auth.key_id}",sig="{auth.signature}"'


def request_json(method: str, uri: str, origin: str, destination: str, content: Any = None) -> dict[str, Any]:
    """The object whose signature authenticates a request: `uri` is the path with its query string."""
    signed: dict[str, Any] = {"method": method, "uri": uri, "origin": origin, "destination": destination}
    if content is not None:
        signed["content"] = content
    return signed


def sign_request(
    signing_key: SigningKey, origin: str, destination: str, method: str, uri: str, content: Any = None
) -> str:
    """The Authorization header value for a request from `origin` to `destination`."""
    key_id = key_id_of(signing_key)
    signed = sign_json(request_json(method, uri, origin, destination, content), origin, signing_key)
    return x_matrix_header(XMatrixAuth(origin, destination, key_id, signed["signatures"][origin][key_id]))


def is_request_signature_valid(
    auth: XMatrixAuth, method: str, uri: str, destination: str, content: Any, verify_key: VerifyKey
) -> bool:
    signed = request_json(method, uri, auth.origin, destination, content)
    signed["signatures"] = {auth.origin: {auth.key_id: auth.signature}}
    return is_signature_valid(signed, auth.origin, verify_key)


# -- key documents ------------------------------------------------------------------------------------


def server_keys_document(
    server_name: str, signing_key: SigningKey, valid_until_ts: int, old_verify_keys: Mapping[str, tuple[str, int]]
) -> dict[str, Any]:
    """Our /_matrix/key/v2/server answer, self-signed; `old_verify_keys` maps key id -> (base64, expired_ts)."""
    document = {
        "server_name": server_name,
        "valid_until_ts": valid_until_ts,
        "verify_keys": {key_id_of(signing_key): {"key": verify_key_base64(signing_key)}},
        "old_verify_keys": {
            key_id: {"key": key, "expired_ts": expired_ts} for key_id, (key, expired_ts) in old_verify_keys.items()
        },
    }
    return sign_json(document, server_name, signing_key)


class KeyDocumentError(Exception):
    """A key document that is malformed, for the wrong server, or not validly signed."""


@dataclass(frozen=True)
class ServerKeys:
    """A checked key document: every key it names (old ones valid until their `expired_ts`)."""

    server_name: str
    valid_until_ts: int
    keys: dict[str, ServerVerifyKey]
    document: dict[str, Any]  # as received, signatures included: a notary passes it on


def _int(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise KeyDocumentError(f"{name} must be an integer")
    return value


def _keys(section: Any, name: str) -> dict[str, tuple[VerifyKey, Mapping[str, Any]]]:
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise KeyDocumentError(f"{name} must be an object")
    keys = {}
    for key_id, entry in section.items():
        algorithm, sep, version = key_id.partition(":")
        if not isinstance(entry, Mapping) or not isinstance(entry.get("key"), str):
            raise KeyDocumentError(f"{name}.{key_id} has no key")
        if algorithm != "ed25519" or not sep or not version:
            continue  # an algorithm we cannot use signs nothing we can check
        try:
            keys[key_id] = (verify_key_from_base64(key_id, entry["key"]), entry)
        except Exception:  # signedjson and PyNaCl raise assorted errors for bad base64 or lengths
            raise KeyDocumentError(f"{name}.{key_id} is not a valid ed25519 key") from None
    return keys


def parse_server_keys(document: Any, server_name: str) -> ServerKeys:
    """Check a /key/v2/server document of `server_name`: its shape, and that it is signed by the keys it
    publishes (at least one signature under a key in verify_keys, and every such signature valid)."""
    if not isinstance(document, Mapping):
        raise KeyDocumentError("the key document is not an object")
    if document.get("server_name") != server_name:
        raise KeyDocumentError(f"the key document is for {document.get('server_name')!r}, not {server_name!r}")
    valid_until_ts = _int(document.get("valid_until_ts"), "valid_until_ts")
    current = _keys(document.get("verify_keys"), "verify_keys")
    old = _keys(document.get("old_verify_keys"), "old_verify_keys")
    keys = {key_id: ServerVerifyKey(key, valid_until_ts) for key_id, (key, _) in current.items()}
    for key_id, (key, entry) in old.items():
        if key_id not in keys:
            keys[key_id] = ServerVerifyKey(key, _int(entry.get("expired_ts"), f"old_verify_keys.{key_id}.expired_ts"))
    published = {key_id: ServerVerifyKey(key, valid_until_ts) for key_id, (key, _) in current.items()}
    try:
        verify_json_signatures(document, [server_name], lambda _, key_id: published.get(key_id))
    except SignatureError as e:
        raise KeyDocumentError(f"the key document is not validly self-signed: {e.msg}") from None
    return ServerKeys(server_name, valid_until_ts, keys, dict(document))


def check_notary_signature(document: Mapping[str, Any], notary: str, notary_keys: Mapping[str, VerifyKey]) -> None:
    """KeyDocumentError unless `notary` signed the document with one of the keys we trust it to use."""
    trusted = {key_id: ServerVerifyKey(key, 2**62) for key_id, key in notary_keys.items()}
    try:
        verify_json_signatures(document, [notary], lambda _, key_id: trusted.get(key_id))
    except SignatureError as e:
        raise KeyDocumentError(f"not validly signed by the notary {notary}: {e.msg}") from None


# -- server names -------------------------------------------------------------------------------------


def split_server_name(server_name: str) -> tuple[str, int | None]:
    """(host, port or None) of a server name; an IPv6 literal keeps its brackets off. ValueError if invalid."""
    if not is_valid_server_name(server_name):
        raise ValueError(f"{server_name!r} is not a server name")
    if server_name.startswith("["):
        host, _, rest = server_name[1:].partition("]")
        return host, int(rest[1:]) if rest else None
    host, sep, port = server_name.rpartition(":")
    if not sep:
        return server_name, None
    return host, int(port)
