"""/keys/upload, /keys/query, /keys/claim, /keys/changes, /keys/device_signing/upload, /keys/signatures/upload.

Errors: a missing top-level field is M_MISSING_PARAM and one of the wrong type M_INVALID_PARAM (as
everywhere); a nested object that does not have the spec's shape is M_BAD_JSON; something that is not a
user id where one belongs is M_INVALID_PARAM.
"""

from typing import Any

from homeserver.core.errors import MatrixError
from homeserver.core.ids import parse_user_id
from homeserver.handlers.e2e_keys import CROSS_SIGNING_TYPES, E2eKeysHandler
from homeserver.http.request import MAX_DEVICE_ID_LENGTH, ApiRequest, optional_field, require_field
from homeserver.http.routing import Endpoint
from homeserver.storage.e2e_keys import KeyList

MAX_KEY_NAME_LENGTH = 255  # an algorithm or key id; real ones are a few dozen characters


def bad_json(msg: str) -> MatrixError:
    return MatrixError(400, "M_BAD_JSON", msg)


def user_id_param(value: Any, where: str) -> str:
    try:
        parse_user_id(value)
    except (ValueError, TypeError, AttributeError):
        raise MatrixError(400, "M_INVALID_PARAM", f"{where}: {str(value)[:100]!r} is not a user id") from None
    return value


def text(value: Any, where: str, max_length: int = MAX_KEY_NAME_LENGTH) -> str:
    """A non-empty string without NUL that fits an index row."""
    if not isinstance(value, str) or not value or "\x00" in value or len(value) > max_length:
        raise bad_json(f"{where} must be a non-empty string of at most {max_length} characters")
    return value


def device_id(value: Any, where: str) -> str:
    return text(value, where, MAX_DEVICE_ID_LENGTH)


def user_map(body: dict[str, Any], name: str) -> dict[str, Any]:
    """A required object keyed by user id."""
    value = require_field(body, name, dict)
    for user_id in value:
        user_id_param(user_id, name)
    return value


def parse_query(body: dict[str, Any]) -> dict[str, list[str]]:
    """The `device_keys` of a key query (client or federation): user id -> device ids, [] for all."""
    wanted = user_map(body, "device_keys")
    for user_id, device_ids in wanted.items():
        if not isinstance(device_ids, list):
            raise bad_json(f"device_keys.{user_id} must be a list of device ids")
        for device in device_ids:
            device_id(device, f"device_keys.{user_id}")
    return wanted


def parse_claim(body: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The `one_time_keys` of a key claim (client or federation): user id -> device id -> algorithm."""
    wanted = user_map(body, "one_time_keys")
    for user_id, devices in wanted.items():
        if not isinstance(devices, dict):
            raise bad_json(f"one_time_keys.{user_id} must map device ids to algorithms")
        for device, algorithm in devices.items():
            device_id(device, f"a device id of one_time_keys.{user_id}")
            text(algorithm, f"one_time_keys.{user_id}.{device[:50]}")
    return wanted


def _is_string_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def _is_signatures(value: Any) -> bool:
    return isinstance(value, dict) and all(_is_string_map(v) for v in value.values())


def parse_device_keys(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_json("device_keys must be an object")
    if not isinstance(value.get("user_id"), str) or not isinstance(value.get("device_id"), str):
        raise bad_json("device_keys needs user_id and device_id strings")
    algorithms = value.get("algorithms")
    if not isinstance(algorithms, list) or not all(isinstance(a, str) for a in algorithms):
        raise bad_json("device_keys.algorithms must be a list of strings")
    if not _is_string_map(value.get("keys")):
        raise bad_json("device_keys.keys must be an object of strings")
    if not _is_signatures(value.get("signatures")):
        raise bad_json("device_keys.signatures must map user ids to objects of strings")
    return value


def parse_key_list(value: Any, name: str) -> KeyList:
    """`{"<algorithm>:<key id>": key}` with each key a string or a signed key object."""
    if value is None:
        return []
    if not isinstance(value, dict):
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be of type object")
    keys = []
    for key_name, key in value.items():
        algorithm, _, key_id = key_name.partition(":")
        text(algorithm, f"the algorithm of {name}.{key_name[:50]}")
        text(key_id, f"the key id of {name}.{key_name[:50]}")
        if isinstance(key, dict):
            if not isinstance(key.get("key"), str) or not _is_signatures(key.get("signatures")):
                raise bad_json(f"{name}.{key_name} must have a key string and signatures")
        elif not isinstance(key, str):
            raise bad_json(f"{name}.{key_name} must be a string or a key object")
        keys.append((algorithm, key_id, key))
    return keys


def parse_cross_signing_key(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_json(f"{name} must be an object")
    usage = value.get("usage")
    if not isinstance(value.get("user_id"), str) or not isinstance(usage, list):
        raise bad_json(f"{name} needs a user_id string and a usage list")
    if not all(isinstance(u, str) for u in usage):
        raise bad_json(f"{name}.usage must be a list of strings")
    keys = value.get("keys")
    if not _is_string_map(keys) or len(keys) != 1:
        raise bad_json(f"{name}.keys must hold exactly one key")
    if "signatures" in value and not _is_signatures(value["signatures"]):
        raise bad_json(f"{name}.signatures must map user ids to objects of strings")
    return value


class _KeysEndpoint(Endpoint):
    def __init__(self, keys: E2eKeysHandler) -> None:
        self._keys = keys


class UploadKeys(_KeysEndpoint):
    method, path = "POST", "/_matrix/client/v3/keys/upload"

    async def handle(self, request: ApiRequest) -> tuple[int, dict]:
        requester = await request.require_user()
        body = request.json_object()
        device_keys = body.get("device_keys")
        fallback_name = "fallback_keys" if "fallback_keys" in body else "org.matrix.msc2732.fallback_keys"
        fallback_keys = parse_key_list(body.get(fallback_name), fallback_name)
        algorithms = [algorithm for algorithm, _, _ in fallback_keys]
        if len(set(algorithms)) < len(algorithms):
            raise MatrixError(400, "M_INVALID_PARAM", "fallback_keys may hold one key per algorithm")
        counts = await self._keys.upload_keys(
            requester,
            parse_device_keys(device_keys) if device_keys else None,  # {} or null: no new identity keys
            parse_key_list(body.get("one_time_keys"), "one_time_keys"),
            fallback_keys,
        )
        return 200, {"one_time_key_counts": counts}


class QueryKeys(_KeysEndpoint):
    method, path = "POST", "/_matrix/client/v3/keys/query"

    async def handle(self, request: ApiRequest) -> tuple[int, dict]:
        requester = await request.require_user()
        body = request.json_object()
        wanted = parse_query(body)
        timeout_ms = optional_field(body, "timeout", int)  # how long other servers are waited for
        return 200, await self._keys.query_keys(requester, wanted, timeout_ms)


class ClaimKeys(_KeysEndpoint):
    method, path = "POST", "/_matrix/client/v3/keys/claim"

    async def handle(self, request: ApiRequest) -> tuple[int, dict]:
        await request.require_user()
        body = request.json_object()
        wanted = parse_claim(body)
        return 200, await self._keys.claim_keys(wanted, optional_field(body, "timeout", int))


class KeyChanges(_KeysEndpoint):
    method, path = "GET", "/_matrix/client/v3/keys/changes"

    async def handle(self, request: ApiRequest) -> tuple[int, dict]:
        requester = await request.require_user()
        from_token, to_token = request.query_param("from"), request.query_param("to")
        if not from_token or not to_token:
            raise MatrixError(400, "M_MISSING_PARAM", "from and to are required")
        return 200, await self._keys.key_changes(requester, from_token, to_token)


class UploadCrossSigningKeys(_KeysEndpoint):
    method, path = "POST", "/_matrix/client/v3/keys/device_signing/upload"

    async def handle(self, request: ApiRequest) -> tuple[int, dict]:
        requester = await request.require_user()
        body = request.json_object()
        keys = {
            key_type: parse_cross_signing_key(body[f"{key_type}_key"], f"{key_type}_key")
            for key_type in CROSS_SIGNING_TYPES
            if body.get(f"{key_type}_key") is not None
        }
        await self._keys.upload_cross_signing_keys(requester, keys, body.get("auth"))
        return 200, {}


class UploadSignatures(_KeysEndpoint):
    method, path = "POST", "/_matrix/client/v3/keys/signatures/upload"

    async def handle(self, request: ApiRequest) -> tuple[int, dict]:
        requester = await request.require_user()
        body = request.json_object()
        for user_id, by_key in body.items():
            user_id_param(user_id, "signatures")
            if not isinstance(by_key, dict) or not all(isinstance(v, dict) for v in by_key.values()):
                raise bad_json(f"{user_id} must map key ids to signed objects")
        return 200, {"failures": await self._keys.upload_signatures(requester, body)}


def endpoints(keys: E2eKeysHandler) -> list[Endpoint]:
    return [
        UploadKeys(keys),
        QueryKeys(keys),
        ClaimKeys(keys),
        KeyChanges(keys),
        UploadCrossSigningKeys(keys),
        UploadSignatures(keys),
    ]
