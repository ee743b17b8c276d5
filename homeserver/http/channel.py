"""Connections and requests as Twisted sees them, with the timeouts and limits that guard them.

A connection is in one of four states:

- IDLE: fresh, or between keep-alive requests. A fresh connection has `read_timeout` to send its
  first request; a keep-alive one is closed after `idle_timeout`.
- READING: a request has started to arrive; it has `read_timeout` (from its first byte) to arrive
  whole. Trickling bytes extends neither timeout.
- ACTIVE: a whole request is being handled; its deadline is the site's business, not the connection's.
- CLOSING: answered and closing (a refusal, or a response with Connection: close); a client that does
  not read the answer is cut off after CLOSE_GRACE_S.

IDLE and READING connections are evictable by admission control. An evicted connection that is owed an
answer (fresh, or part-way through a request) gets 503 M_LIMIT_EXCEEDED with Retry-After; an idle
keep-alive is just closed. A body larger than the limit is refused with 413 as soon as its length is
known (or exceeded, for chunked bodies), before the rest arrives. JSON bodies are held in memory, never in
temporary files, so a slow request costs no extra descriptor. An endpoint that takes files (a
StreamedBodyEndpoint: media uploads) has its own limit and a sink the body streams into; such a body
arriving at a steady pace is not cut off by read_timeout (see bodies.py).
"""

import contextlib
import errno
import functools
import io
import json
import logging
import re
import socket
import time
from typing import Any

from twisted.internet import tcp
from twisted.web import http, server

from homeserver.core.errors import MatrixError
from homeserver.http.admission import ACCEPT_FAILED, REFUSAL_LOG_INTERVAL_S, AdmissionController
from homeserver.http.bodies import PROGRESS_BYTES, BodySink, StreamedBodyEndpoint, has_access_token

logger = logging.getLogger(__name__)

IDLE, READING, ACTIVE, CLOSING = "idle", "reading", "active", "closing"
CLOSE_GRACE_S = 5.0  # a closing connection whose client does not read the answer is aborted after this
LISTEN_BACKLOG = 4096  # the kernel caps it at net.core.somaxconn; deep enough that a burst is not dropped
DEFER_ACCEPT_S = 3  # TCP_DEFER_ACCEPT: how long a silent connection may wait in the kernel (about)


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


@functools.lru_cache(maxsize=64)  # retry_after_ms comes in steps of RETRY_AFTER_STEP_MS
def busy_response(retry_after_ms: int) -> bytes:
    return raw_error_response(503, "M_LIMIT_EXCEEDED", "Server is busy; try again shortly", retry_after_ms)


class MatrixRequest(server.Request):
    """A request whose body is bounded and which is dispatched by the site's router. The route is matched
    as soon as the head has arrived, because it decides how the body is read."""

    route: Any = None  # (endpoint, template, params), or the MatrixError the path gets
    body_sink: BodySink | None = None  # where a streamed body goes, until the endpoint takes it

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Twisted would parse a form-encoded POST body into args; no Matrix API takes one, and an upload
        # may well be labelled as one.
        super().__init__(*args, parsePOSTFormSubmission=False, **kwargs)

    def gotLength(self, length: int | None) -> None:
        self.content = io.BytesIO()
        self._body_size = 0
        self._refused = False
        self._started = time.monotonic()
        site = self.channel.site
        # The request line is parsed but Twisted sets method and path only once the body is in.
        method, uri = self.channel._command, self.channel._path
        path = uri.split(b"?", 1)[0]
        try:
            self.route = site.router.match(method.decode("ascii", "replace"), path.decode("ascii", "replace"))
        except MatrixError as e:
            self.route = e
        endpoint = self.route[0] if isinstance(self.route, tuple) else None
        streamed = isinstance(endpoint, StreamedBodyEndpoint)
        self._body_limit = endpoint.max_body_size if streamed else site.max_body_size
        if length is not None and length > self._body_limit:
            self._refuse_too_large()
        elif streamed:
            self._open_sink(endpoint, uri)

    def _open_sink(self, endpoint: StreamedBodyEndpoint, uri: bytes) -> None:
        # Nobody may make the server write a file to disk without at least presenting a token; whether it
        # is valid is checked once the body is in, as for any request.
        if not has_access_token(self.requestHeaders.getRawHeaders(b"Authorization"), uri):
            self._refuse(401, raw_error_response(401, "M_MISSING_TOKEN", "Missing access token."))
            return
        self.body_sink = endpoint.open_body()
        self._unreported = 0
        if self.body_sink is None:
            self._refuse(503, busy_response(self.channel.admission.retry_after_ms))

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._body_size += len(data)
        if self._body_size > self._body_limit:
            self._refuse_too_large()
            return
        if self.body_sink is None:
            self.content.write(data)
            return
        try:
            self.body_sink.write(data)
        except OSError as e:  # the disk is full, or failing: say so rather than drop the connection
            logger.error("cannot store an upload: %s", e)
            self._discard_body()
            self._refuse(500, raw_error_response(500, "M_UNKNOWN", "The server cannot store uploads right now"))
            return
        self._unreported += len(data)
        if self._unreported >= PROGRESS_BYTES:
            self._unreported = 0
            self.channel.body_progress()

    def take_body_sink(self) -> BodySink | None:
        """The streamed body, which the caller now owns (and must close)."""
        sink, self.body_sink = self.body_sink, None
        return sink

    def _discard_body(self) -> None:
        sink = self.take_body_sink()
        if sink is not None:
            sink.close()

    def _refuse_too_large(self) -> None:
        self._discard_body()
        limit = int(self._body_limit)
        self._refuse(413, raw_error_response(413, "M_TOO_LARGE", f"Request body is larger than {limit} bytes"))

    def _refuse(self, status: int, response: bytes) -> None:
        """Answer before the request is dispatched (from its head, or part-way through its body) and close.
        It still gets its access log line and its count in the metrics, as a dispatched request does."""
        self._refused = True
        self.channel.refuse(response)
        template = self.route[1] if isinstance(self.route, tuple) else "-"
        method = self.channel._command.decode("ascii", "replace")
        self.channel.site.refused(self, method, template, status, len(response), self._started)

    def process(self) -> None:
        if self._refused:
            return
        self.site = self.channel.site
        self.channel.request_started()
        self.site.dispatch(self)

    def write(self, data: bytes) -> None:
        if not self.startedWriting and self.channel.admission.draining:
            # The server is draining: this answer tells the client to send its next request elsewhere.
            self.setHeader(b"Connection", b"close")
            self.channel.persistent = False
        super().write(data)

    def finish(self) -> None:
        self._discard_body()  # the endpoint did not take it (it failed, or refused the request)
        super().finish()

    def connectionLost(self, reason: Any) -> None:
        self._discard_body()
        super().connectionLost(reason)


class MatrixChannel(http.HTTPChannel):
    """HTTP/1.1 connection that reports its state to admission control and enforces its deadlines."""

    site: Any  # set by MatrixSite.buildProtocol
    admission: AdmissionController
    _timer: Any = None
    _state = IDLE
    _served = 0  # requests answered on this connection
    brought_whole_request = False  # set by the door when it let this connection in for that

    def connectionMade(self) -> None:
        super().connectionMade()
        self._arm(self.site.read_timeout)
        self.admission.connection_opened(self, evictable=not self.brought_whole_request)

    def dataReceived(self, data: bytes) -> None:
        if self._state == CLOSING:
            return  # answered and closing: whatever more the client sends is ignored
        if self._state == IDLE:
            self._state = READING
            self._arm(self.site.read_timeout)
        super().dataReceived(data)

    def body_progress(self) -> None:
        """A streamed body keeps arriving: it gets read_timeout again for the next PROGRESS_BYTES."""
        if self._state == READING:
            self._arm(self.site.read_timeout)

    def request_started(self) -> None:
        self._state = ACTIVE
        self._cancel_timer()
        self.admission.connection_busy(self)

    def requestDone(self, request: Any) -> None:
        self._served += 1
        if self._state == CLOSING:
            super().requestDone(request)
            return
        if not self.persistent:
            self._closing(CLOSE_GRACE_S)
            super().requestDone(request)  # closes once the answer is written
            return
        # Idle until the next request. Twisted replays pipelined bytes from inside requestDone through
        # dataReceived, which moves the state on (READING, ACTIVE), so the state is set first.
        self._state = IDLE
        self._arm(self.site.idle_timeout)
        self.admission.connection_waiting(self)
        super().requestDone(request)

    def _send100Continue(self) -> None:
        # Twisted answers `Expect: 100-continue` right after gotLength; a request refused from its head
        # alone has had its answer already and must not be asked for its body.
        if self._state != CLOSING:
            super()._send100Continue()

    def refuse(self, response: bytes) -> None:
        """Answer with a pre-built error and close, ignoring anything more the client sends."""
        if self._state == CLOSING:
            return
        self._closing(CLOSE_GRACE_S)
        self.transport.write(response)
        self.transport.loseConnection()

    def evict(self) -> None:
        """Make room for a newcomer: 503 with Retry-After if this connection is owed an answer, else close."""
        if self._state == CLOSING or (self._state == IDLE and self._served):
            self._cancel_timer()
            self._state = CLOSING
            self.admission.connection_closing(self)
            self.transport.abortConnection()
        else:
            self.refuse(busy_response(self.admission.retry_after_ms))

    def close_when_idle(self, grace: float) -> None:
        """The server drains. A connection still idle `grace` seconds from now (between keep-alive requests, or
        opened and silent) is closed; one whose client sends a request first is answered (with Connection:
        close) and then closed, which no client mistakes for a failure. Closing at once would reset requests
        already on their way."""
        self.callLater(grace, self._close_idle)

    def _close_idle(self) -> None:
        if self._state == IDLE:
            self._closing(CLOSE_GRACE_S)
            self.transport.loseConnection()

    def connectionLost(self, reason: Any) -> None:
        self._cancel_timer()
        self._state = CLOSING
        super().connectionLost(reason)
        self.admission.connection_closed(self)

    def _closing(self, grace: float) -> None:
        self._state = CLOSING
        self._arm(grace)
        self.admission.connection_closing(self)  # evicting it would free nothing sooner

    def _arm(self, seconds: float) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.reset(seconds)
        else:
            self._timer = self.callLater(seconds, self._timed_out)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self._state == ACTIVE:
            return
        if self._state != CLOSING:
            self.admission.timed_out(owed_answer=self._state == READING or not self._served)
        self.transport.abortConnection()


class AdmissionPort(tcp.Port):
    """A listening port that asks admission control at the door about each connection it accepts.

    Newcomers turned away get a pre-built 503 and are closed right there, before any protocol object
    exists, so turning away a flood costs a few syscalls per connection. While every budgeted descriptor
    is taken and some are being released (evicted connections closing), the port stops accepting until
    one is, leaving newcomers in the kernel's backlog for that moment."""

    admission: AdmissionController
    inspect_requests = True  # plaintext HTTP: a newcomer's request can be peeked at before it is let in
    max_accepts_per_read = 128  # then the reactor serves other sockets before the next batch
    _last_error_log = float("-inf")

    def doRead(self) -> None:
        admission = self.admission
        for _ in range(self.max_accepts_per_read):
            if admission.accept_headroom() <= 0 and admission.closing:
                self.stopReading()
                admission.pause_port(self)
                return
            try:
                skt, addr = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in _ACCEPT_GONE:
                    continue  # the client gave up while in the backlog
                if e.errno in _ACCEPT_EXHAUSTED:
                    self._out_of_resources(e)
                    return
                raise
            try:
                self._admit_or_refuse(skt, addr)
            except Exception:
                logger.exception("failed to set up an accepted connection")
                skt.close()

    def _admit_or_refuse(self, skt: socket.socket, addr: Any) -> None:
        skt.setblocking(False)
        plain = self.inspect_requests  # behind TLS nothing can be peeked at nor answered before the handshake
        peeked: list[bool] = []

        def whole_request() -> bool:
            peeked.append(not plain or has_whole_request(skt))
            return peeked[-1]

        if self.admission.door(whole_request) is not None:
            turn_away(skt, busy_response(self.admission.retry_after_ms) if plain else b"")
            return
        if len(addr) == 4:  # IPv6: keep the scope id, as Twisted's own accept loop does
            host = socket.getnameinfo(addr, socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
            addr = (host[0], *addr[1:])
        protocol = self.factory.buildProtocol(self._buildAddr(addr))
        if protocol is None:
            skt.close()
            return
        if plain and peeked and peeked[-1]:
            protocol.brought_whole_request = True
        session = self.sessionno
        self.sessionno = session + 1
        protocol.makeConnection(self.transport(skt, protocol, addr, self, session, self.reactor))

    def _out_of_resources(self, error: OSError) -> None:
        """accept() failed for want of descriptors or memory, which the budget exists to prevent (something
        else holds more than was reserved for it): stop accepting until a connection closes or 100 ms pass."""
        self.admission.record_refusal(ACCEPT_FAILED)
        now = self.reactor.seconds()
        if now - self._last_error_log >= REFUSAL_LOG_INTERVAL_S:
            self._last_error_log = now
            logger.error("cannot accept connections: %s; %s", error.strerror, self.admission.snapshot())
        self.stopReading()
        self.admission.pause_port(self)
        self.reactor.callLater(0.1, self.admission.resume_ports)


_ACCEPT_GONE = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.ENETDOWN, errno.EHOSTUNREACH}
_ACCEPT_EXHAUSTED = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[^\r]*chunked", re.IGNORECASE)
PEEK_BYTES = 65536


def has_whole_request(skt: socket.socket) -> bool:
    """Whether a whole HTTP request (head and body) is waiting on the socket, without reading it."""
    try:
        data = skt.recv(PEEK_BYTES, socket.MSG_PEEK)
    except OSError:
        return False
    return is_whole_request(data)


def is_whole_request(data: bytes) -> bool:
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return False
    head, body = data[:end], data[end + 4 :]
    if _CHUNKED.search(head):
        return body.endswith(b"0\r\n\r\n")
    length = _CONTENT_LENGTH.search(head)
    return len(body) >= (int(length.group(1)) if length else 0)


def turn_away(skt: socket.socket, response: bytes) -> None:
    """Answer a newcomer at the door and close. What it sent is read first, so the close is a FIN after the
    answer rather than a reset that might overtake it."""
    with contextlib.suppress(OSError):  # nothing was sent (yet)
        skt.recv(PEEK_BYTES)
    if response:
        with contextlib.suppress(OSError):  # gone already
            skt.send(response)
    skt.close()


def listen(
    reactor: Any,
    port: int,
    factory: Any,
    interface: str,
    admission: AdmissionController,
    backlog: int = LISTEN_BACKLOG,
    adopted: socket.socket | None = None,
) -> AdmissionPort:
    """Listen on `interface`:`port`, or on `adopted`, a socket already bound and listening (sockets.py)."""
    admission.use_reactor(reactor)
    if adopted is None:
        listening = AdmissionPort(port, factory, backlog, interface, reactor)
    else:
        adopted.setblocking(False)
        listening = AdmissionPort._fromListeningDescriptor(reactor, adopted.fileno(), adopted.family, factory)
        adopted.close()  # the port holds its own duplicate
    listening.admission = admission
    listening.inspect_requests = isinstance(factory, http.HTTPFactory)
    listening.startListening()
    if hasattr(socket, "TCP_DEFER_ACCEPT"):
        # Linux: the kernel hands over a connection once its first bytes arrive (or DEFER_ACCEPT_S has passed),
        # so silent sockets wait in the kernel, holding no descriptor, and the door sees what a client sent.
        listening.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, DEFER_ACCEPT_S)
    return listening
