"""Posting notifications to push gateways, within a fixed budget of connections.

Gateway URLs come from users, so nothing here trusts the far end: addresses in the operator's blocked
ranges (ip_range_blacklist) are never connected to; at most MAX_IN_FLIGHT requests are
open at once and each connection is closed after its answer (idle keep-alive connections to many
gateways would hold descriptors the admission budget cannot count); every request has a deadline that
aborts its connection, the answer is read only up to MAX_ANSWER_BYTES, and redirects are not followed.
"""

import json
from dataclasses import dataclass
from typing import Any

from treq.client import HTTPClient
from twisted.internet import defer
from twisted.web.client import Agent, HTTPConnectionPool

from homeserver.http.address_filter import AddressFilter, FilteringReactor
from homeserver.http.capped_body import read_body

MAX_IN_FLIGHT = 8
REQUEST_TIMEOUT_S = 15.0  # connecting, sending and reading the answer, all told
MAX_ANSWER_BYTES = 64 * 1024  # a gateway answers {"rejected": [...]}


class GatewayUnavailable(Exception):
    """No answer: the gateway could not be reached, broke the connection, was too slow, or answered too
    much. Worth retrying later."""


@dataclass(frozen=True)
class GatewayAnswer:
    status: int
    body: Any  # the decoded JSON answer; None if it was not JSON


class GatewayClient:
    def __init__(
        self,
        reactor: Any,
        address_filter: AddressFilter,
        max_in_flight: int = MAX_IN_FLIGHT,
        timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        self._reactor = reactor
        self._timeout_s = timeout_s
        agent = Agent(
            FilteringReactor(reactor, address_filter),
            connectTimeout=timeout_s,
            pool=HTTPConnectionPool(reactor, persistent=False),
        )
        self._http = HTTPClient(agent)
        self._slots = defer.DeferredSemaphore(max_in_flight)

    async def post(self, url: str, body: dict[str, Any]) -> GatewayAnswer:
        """POST `body` as JSON; GatewayUnavailable if no complete answer came in time."""
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        await self._slots.acquire()
        try:
            attempt = defer.ensureDeferred(self._post(url, data))
            attempt.addTimeout(self._timeout_s, self._reactor)
            return await attempt
        except GatewayUnavailable:
            raise
        except Exception as e:  # refused, reset, TLS, DNS, timed out: all mean no answer
            raise GatewayUnavailable(f"{type(e).__name__}: {e}") from None
        finally:
            self._slots.release()

    async def _post(self, url: str, data: bytes) -> GatewayAnswer:
        response = await self._http.post(
            url, data=data, headers={"Content-Type": "application/json"}, allow_redirects=False
        )
        raw = await read_body(response, MAX_ANSWER_BYTES)  # too large: no answer (post() says so)
        try:
            answer = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            answer = None
        return GatewayAnswer(response.code, answer)
