"""Asking other servers about their users and aliases (GET /_matrix/federation/v1/query/*), for the client
API. Answers are mapped to the errors Synapse gives clients: the remote's 404 stays a 404 M_NOT_FOUND, no
answer at all is 502."""

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from homeserver.core.errors import MatrixError
from homeserver.core.ids import is_valid_server_name
from homeserver.http.federation_client import FederationClient, HttpResponseError, RequestSendFailed

PROFILE_CACHE_S = 60.0  # a remote profile shown in a client may lag its change by this much
MAX_CACHED_PROFILES = 10_000
QUERY_TIMEOUT_S = 15.0
PROFILE_FIELDS = ("displayname", "avatar_url")


class RemoteQueries:
    def __init__(self, client: FederationClient, clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._clock = clock
        # user id -> (expiry, profile); nothing invalidates it but time (no profile updates arrive yet).
        self._profiles: OrderedDict[str, tuple[float, dict[str, str]]] = OrderedDict()

    async def profile(self, user_id: str, server_name: str) -> dict[str, str]:
        cached = self._profiles.get(user_id)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        answer = await self._query(server_name, "profile", {"user_id": user_id}, "profile")
        profile = {k: v for k, v in answer.items() if k in PROFILE_FIELDS and isinstance(v, str)}
        self._profiles[user_id] = (self._clock() + PROFILE_CACHE_S, profile)
        self._profiles.move_to_end(user_id)
        while len(self._profiles) > MAX_CACHED_PROFILES:
            self._profiles.popitem(last=False)
        return profile

    async def room_alias(self, alias: str, server_name: str) -> dict[str, Any]:
        """{room_id, servers} of an alias of `server_name`, as that server answers."""
        answer = await self._query(server_name, "directory", {"room_alias": alias}, "alias")
        room_id, servers = answer.get("room_id"), answer.get("servers")
        if (
            not isinstance(room_id, str)
            or not room_id.startswith("!")
            or not isinstance(servers, list)
            or not all(isinstance(s, str) and is_valid_server_name(s) for s in servers)
        ):
            raise MatrixError(502, "M_UNKNOWN", f"{server_name} gave an invalid answer for the alias")
        return {"room_id": room_id, "servers": servers}

    async def _query(self, server_name: str, kind: str, args: dict[str, str], what: str) -> dict[str, Any]:
        try:
            answer = await self._client.get_json(
                server_name, f"/_matrix/federation/v1/query/{kind}", args, timeout_s=QUERY_TIMEOUT_S
            )
        except (HttpResponseError, RequestSendFailed) as e:
            raise remote_error(e, server_name, what) from None
        if not isinstance(answer, dict):
            raise MatrixError(502, "M_UNKNOWN", f"{server_name} gave an invalid answer for the {what}")
        return answer


def remote_error(error: HttpResponseError | RequestSendFailed, server_name: str, what: str) -> MatrixError:
    """What a client is told when another server did not give us `what`, as Synapse tells it: their 404
    and 403 pass through, anything else (no answer, another status) is 502."""
    if isinstance(error, HttpResponseError):
        if error.code == 404:
            return MatrixError(404, "M_NOT_FOUND", f"The {what} was not found on {server_name}")
        if error.code == 403:
            return MatrixError(403, "M_FORBIDDEN", f"{server_name} refused to share the {what}")
        return MatrixError(502, "M_UNKNOWN", f"Failed to fetch the {what}: {server_name} answered {error.code}")
    return MatrixError(502, "M_UNKNOWN", f"Failed to fetch the {what} from {server_name}")
