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
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss

from homeserver.http.address_filter import AddressFilter, FilteringReactor

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


class _CappedBody(Protocol):
    """Reads a response body up to a limit. Cancelling (the request's deadline) aborts the connection, so
    a gateway that trickles its answer cannot keep a descriptor after we stopped waiting."""

    def __init__(self, limit: int) -> None:
        self.done: defer.Deferred[bytes] = defer.Deferred(lambda _: self._abort())
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._limit:
            self._abort()
            if not self.done.called:
                self.done.errback(GatewayUnavailable(f"answer larger than {self._limit} bytes"))
            return
        self._chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self._chunks))
        else:
            self.done.errback(reason)

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.stopProducing()


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
        reader = _CappedBody(MAX_ANSWER_BYTES)
        response.deliverBody(reader)
        raw = await reader.done
        try:
            answer = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            answer = None
        return GatewayAnswer(response.code, answer)
