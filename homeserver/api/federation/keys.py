"""/_matrix/key/v2: our keys, and the notary service for other servers' keys."""

from typing import Any

from homeserver.core.errors import MatrixError
from homeserver.core.ids import is_valid_server_name
from homeserver.handlers.federation.keys import KeyRing
from homeserver.http.request import ApiRequest
from homeserver.http.routing import Endpoint

MAX_QUERIED_SERVERS = 100  # one query may not make us fetch from more servers than this


class ServerKeys(Endpoint):
    method, paths = "GET", ("/_matrix/key/v2/server", "/_matrix/key/v2/server/{key_id}")

    def __init__(self, keys: KeyRing) -> None:
        self._keys = keys

    async def handle(self, request: ApiRequest, key_id: str | None = None) -> tuple[int, dict]:
        return 200, self._keys.own_keys()  # the deprecated {key_id} form answers with all keys too


def _min_ts(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be an integer")
    return value


def _check_server(server_name: Any) -> str:
    if not isinstance(server_name, str) or not is_valid_server_name(server_name):
        raise MatrixError(400, "M_INVALID_PARAM", f"Invalid server name {server_name!r}")
    return server_name


class QueryKeys(Endpoint):
    method, path = "POST", "/_matrix/key/v2/query"

    def __init__(self, keys: KeyRing) -> None:
        self._keys = keys

    async def handle(self, request: ApiRequest) -> tuple[int, dict]:
        servers = request.json_object().get("server_keys")
        if not isinstance(servers, dict):
            raise MatrixError(400, "M_BAD_JSON", "server_keys must be an object")
        if len(servers) > MAX_QUERIED_SERVERS:
            raise MatrixError(400, "M_INVALID_PARAM", f"At most {MAX_QUERIED_SERVERS} servers per query")
        criteria: dict[str, tuple[list[str], int | None]] = {}
        for server_name, key_ids in servers.items():
            if not isinstance(key_ids, dict):
                raise MatrixError(400, "M_BAD_JSON", f"server_keys.{server_name} must be an object")
            times = [
                _min_ts(c.get("minimum_valid_until_ts") if isinstance(c, dict) else None, key_id)
                for key_id, c in key_ids.items()
            ]
            known_times = [t for t in times if t is not None]
            criteria[_check_server(server_name)] = (list(key_ids), max(known_times) if known_times else None)
        return 200, {"server_keys": await self._keys.query(criteria)}


class QueryServerKeys(Endpoint):
    method, path = "GET", "/_matrix/key/v2/query/{server_name}"

    def __init__(self, keys: KeyRing) -> None:
        self._keys = keys

    async def handle(self, request: ApiRequest, server_name: str) -> tuple[int, dict]:
        raw_ts = request.query_param("minimum_valid_until_ts")
        min_ts = request.query_int("minimum_valid_until_ts", 0) if raw_ts is not None else None
        return 200, {"server_keys": await self._keys.query({_check_server(server_name): ([], min_ts)})}


def endpoints(keys: KeyRing) -> list[Endpoint]:
    return [ServerKeys(keys), QueryKeys(keys), QueryServerKeys(keys)]
