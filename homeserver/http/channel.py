"""Connections and requests as Twisted sees them, with the timeouts and limits that guard them.

- A connection has `read_timeout` to deliver a whole request once it starts (or once accepted), and
  `idle_timeout` between keep-alive requests; trickling bytes does not extend either.
- A body larger than the limit is refused with 413 as soon as its length is known (or exceeded, for
  chunked bodies), before the rest arrives; bodies are held in memory, never in temporary files,
  so a slow upload costs no extra descriptor.
"""

import io
import json
from typing import Any

from twisted.internet import tcp
from twisted.web import http, server

from homeserver.http.admission import AdmissionController

IDLE, READING, ACTIVE = "idle", "reading", "active"


def raw_error_response(status: int, errcode: str, message: str, retry_after_ms: int | None = None) -> bytes:
    """A complete HTTP/1.1 error response that closes the connection, for use before or outside the
    normal request cycle (refusals and oversized bodies)."""
    body: dict[str, Any] = {"errcode": errcode, "error": message}
    headers = [f"HTTP/1.1 {status} {http.RESPONSES.get(status, b'Error').decode()}"]
    if retry_after_ms is not None:
        body["retry_after_ms"] = retry_after_ms
        headers.append(f"Retry-After: {max(1, (retry_after_ms + 999) // 1000)}")
    data = json.dumps(body).encode()
    headers += [
        "Content-Type: application/json",
        f"Content-Length: {len(data)}",
        "Connection: close",
        "Access-Control-Allow-Origin: *",
    ]
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + data


class MatrixRequest(server.Request):
    """A request whose body is bounded and which is dispatched by the site's router."""

    def gotLength(self, length: int | None) -> None:
        self.content = io.BytesIO()
        self._body_size = 0
        self._refused = False
        if length is not None and length > self.channel.site.max_body_size:
            self._refuse_too_large()

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._body_size += len(data)
        if self._body_size > self.channel.site.max_body_size:
            self._refuse_too_large()
            return
        self.content.write(data)

    def _refuse_too_large(self) -> None:
        self._refused = True
        limit = self.channel.site.max_body_size
        self.channel.refuse(raw_error_response(413, "M_TOO_LARGE", f"Request body is larger than {limit} bytes"))

    def process(self) -> None:
        if self._refused:
            return
        self.site = self.channel.site
        self.channel.request_started()
        self.site.dispatch(self)


class MatrixChannel(http.HTTPChannel):
    """HTTP/1.1 connection that reports its state to admission control and enforces its deadlines."""

    site: Any  # set by MatrixSite.buildProtocol
    admission: AdmissionController
    _timer: Any = None
    _state = IDLE
    _refusing = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self.admission.connection_opened(self)
        self._arm(self.site.read_timeout)

    def dataReceived(self, data: bytes) -> None:
        if self._refusing:
            return
        if self._state == IDLE:
            self._state = READING
            self._arm(self.site.read_timeout)
        super().dataReceived(data)

    def request_started(self) -> None:
        self._state = ACTIVE
        self._cancel_timer()
        self.admission.connection_busy(self)

    def requestDone(self, request: Any) -> None:
        super().requestDone(request)
        if self.persistent and not self._refusing:
            self._state = IDLE
            self._arm(self.site.idle_timeout)
            self.admission.connection_waiting(self)

    def refuse(self, response: bytes) -> None:
        """Answer with a pre-built error and close, ignoring anything more the client sends."""
        if self._refusing:
            return
        self._refusing = True
        self._cancel_timer()
        self.transport.write(response)
        self.transport.loseConnection()
        self._arm(5.0)  # a client that never reads the answer must not hold the socket

    def evict(self) -> None:
        self._cancel_timer()
        self.transport.abortConnection()

    def connectionLost(self, reason: Any) -> None:
        self._cancel_timer()
        super().connectionLost(reason)
        self.admission.connection_closed(self)

    def _arm(self, seconds: float) -> None:
        self._cancel_timer()
        self._timer = self.callLater(seconds, self._timed_out)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self._state != ACTIVE:
            self.transport.abortConnection()


class AdmissionPort(tcp.Port):
    """A listening port that never accepts beyond the descriptor budget: at the budget it stops
    reading, leaving newcomers in the kernel's backlog until a connection closes."""

    admission: AdmissionController

    def doRead(self) -> None:
        headroom = self.admission.accept_headroom()
        if headroom <= 0:
            self.stopReading()
            self.admission.pause_port(self)
            return
        self.numberAccepts = max(1, min(self.numberAccepts, headroom))
        super().doRead()


def listen(
    reactor: Any, port: int, factory: Any, interface: str, admission: AdmissionController, backlog: int = 1024
) -> AdmissionPort:
    listening = AdmissionPort(port, factory, backlog, interface, reactor)
    listening.admission = admission
    listening.startListening()
    return listening
