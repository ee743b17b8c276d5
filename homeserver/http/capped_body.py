"""Reading an HTTP response body from another server, up to a limit: an answer is never trusted to be
small, and a deadline that cancels the read aborts the connection."""

from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss


class BodyTooLarge(Exception):
    pass


class _CappedBody(Protocol):
    """Reads a response body up to a limit. Cancelling (the caller's deadline) aborts the connection, so
    a far end that trickles its answer cannot keep a descriptor after we stopped waiting."""

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
                self.done.errback(BodyTooLarge(f"answer larger than {self._limit} bytes"))
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


async def read_body(response: Any, limit: int) -> bytes:
    """The whole body of a twisted.web response; BodyTooLarge past `limit` bytes."""
    reader = _CappedBody(limit)
    response.deliverBody(reader)
    return await reader.done
