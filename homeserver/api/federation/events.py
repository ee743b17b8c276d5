"""PUT /send/{txnId} and the history reads other servers make: /event, /state_ids, /state,
/event_auth, /backfill, /get_missing_events."""

import time
from typing import Any

from homeserver.api.federation.base import FederationEndpoint
from homeserver.core.errors import MatrixError
from homeserver.handlers.federation.history import FederationHistory
from homeserver.handlers.federation.transactions import TransactionHandler
from homeserver.http.request import ApiRequest
from homeserver.http.routing import Endpoint


def _event_id_param(request: ApiRequest) -> str:
    event_id = request.query_param("event_id")
    if not event_id:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing query parameter: event_id")
    return event_id


def _string_list(body: dict[str, Any], name: str) -> list[str]:
    value = body.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MatrixError(400, "M_BAD_JSON", f"'{name}' must be a list of event ids")
    return value


class Send(FederationEndpoint):
    method, path = "PUT", "/_matrix/federation/v1/send/{txn_id}"

    def __init__(self, transactions: TransactionHandler) -> None:
        self._transactions = transactions

    async def on_request(self, request: ApiRequest, origin: str, txn_id: str) -> tuple[int, dict]:
        body = request.json_object()
        if body.get("origin", origin) != origin:
            raise MatrixError(400, "M_BAD_JSON", "'origin' is not the server that signed the request")
        return 200, await self._transactions.on_send(origin, txn_id, body)


class _HistoryEndpoint(FederationEndpoint):
    def __init__(self, history: FederationHistory, server_name: str) -> None:
        self._history = history
        self._server_name = server_name

    def _transaction(self, pdus: list[dict]) -> dict:
        """The Transaction shape /event and /backfill answer with."""
        return {"origin": self._server_name, "origin_server_ts": int(time.time() * 1000), "pdus": pdus}


class GetEvent(_HistoryEndpoint):
    method, path = "GET", "/_matrix/federation/v1/event/{event_id}"

    async def on_request(self, request: ApiRequest, origin: str, event_id: str) -> tuple[int, dict]:
        return 200, self._transaction([await self._history.event(origin, event_id)])


class StateIds(_HistoryEndpoint):
    method, path = "GET", "/_matrix/federation/v1/state_ids/{room_id}"

    async def on_request(self, request: ApiRequest, origin: str, room_id: str) -> tuple[int, dict]:
        return 200, await self._history.state_ids(origin, room_id, _event_id_param(request))


class State(_HistoryEndpoint):
    method, path = "GET", "/_matrix/federation/v1/state/{room_id}"

    async def on_request(self, request: ApiRequest, origin: str, room_id: str) -> tuple[int, dict]:
        return 200, await self._history.state(origin, room_id, _event_id_param(request))


class EventAuth(_HistoryEndpoint):
    method, path = "GET", "/_matrix/federation/v1/event_auth/{room_id}/{event_id}"

    async def on_request(self, request: ApiRequest, origin: str, room_id: str, event_id: str) -> tuple[int, dict]:
        return 200, await self._history.event_auth(origin, room_id, event_id)


class Backfill(_HistoryEndpoint):
    method, path = "GET", "/_matrix/federation/v1/backfill/{room_id}"

    async def on_request(self, request: ApiRequest, origin: str, room_id: str) -> tuple[int, dict]:
        from_ids = request.query.get("v", [])
        if not from_ids:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing query parameter: v")
        limit = request.query_int("limit", 10, minimum=0)
        return 200, self._transaction(await self._history.backfill(origin, room_id, from_ids, limit))


class GetMissingEvents(_HistoryEndpoint):
    method, path = "POST", "/_matrix/federation/v1/get_missing_events/{room_id}"

    async def on_request(self, request: ApiRequest, origin: str, room_id: str) -> tuple[int, dict]:
        body = request.json_object()
        limit, min_depth = body.get("limit", 10), body.get("min_depth", 0)
        if not isinstance(limit, int) or not isinstance(min_depth, int):
            raise MatrixError(400, "M_BAD_JSON", "'limit' and 'min_depth' must be integers")
        earliest, latest = _string_list(body, "earliest_events"), _string_list(body, "latest_events")
        events = await self._history.missing_events(origin, room_id, earliest, latest, limit, min_depth)
        return 200, {"events": events}


def endpoints(transactions: TransactionHandler, history: FederationHistory, server_name: str) -> list[Endpoint]:
    return [
        Send(transactions),
        *(cls(history, server_name) for cls in (GetEvent, StateIds, State, EventAuth, Backfill, GetMissingEvents)),
    ]
