"""The site: turns a fully-read request into an endpoint call under admission control and a deadline,
and the endpoint's answer (or failure) into a spec-shaped response."""

import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.web import server

from homeserver.core.errors import LimitExceeded, MatrixError
from homeserver.core.work_class import BULK, LIGHT, current_work_class
from homeserver.http.admission import LONG_POLL, SHORT, AdmissionController
from homeserver.http.bodies import FileTransfer
from homeserver.http.channel import MatrixChannel, MatrixRequest
from homeserver.http.request import ApiRequest, Authenticator, ServerAuthenticator
from homeserver.http.responses import GZIP_MIN_BYTES, FileResponse, Response, accepts_gzip, encode_json, gzip_bytes
from homeserver.http.routing import Router

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("homeserver.access")

CORS_HEADERS = {
    b"Access-Control-Allow-Origin": b"*",
    b"Access-Control-Allow-Methods": b"GET, HEAD, POST, PUT, DELETE, OPTIONS",
    b"Access-Control-Allow-Headers": b"X-Requested-With, Content-Type, Authorization, Date",
}
_request_ids = itertools.count(1)


class ServiceUnavailable(Exception):
    """Raised by lower layers (a full database queue) to mean: refuse this request, try again soon."""


class MatrixSite(server.Site):
    requestFactory = MatrixRequest
    protocol = MatrixChannel

    def __init__(
        self,
        router: Router,
        admission: AdmissionController,
        authenticate: Authenticator,
        reactor: Any,
        *,
        max_body_size: int,
        request_timeout: float,
        read_timeout: float,
        idle_timeout: float,
        compress: bool,
        x_forwarded: bool,
        busy_errors: tuple[type[BaseException], ...] = (),
        observe: Callable[[str, str, int, float], None] | None = None,
        authenticate_server: ServerAuthenticator | None = None,
    ) -> None:
        super().__init__(resource=None, timeout=None, reactor=reactor)
        self.router = router
        self.admission = admission
        self.authenticate = authenticate
        self.authenticate_server = authenticate_server  # set on listeners that serve federation
        self.max_body_size = max_body_size
        self.request_timeout = request_timeout
        self.read_timeout = read_timeout
        self.idle_timeout = idle_timeout
        self.compress = compress
        self.x_forwarded = x_forwarded
        self.busy_errors = (ServiceUnavailable, *busy_errors)
        self.observe = observe  # (method, path template, status, seconds) of each answered request: metrics
        self.noisy = False

    def buildProtocol(self, addr: Any) -> MatrixChannel:
        channel = super().buildProtocol(addr)
        channel.admission = self.admission
        return channel

    def log(self, request: Any) -> None:
        pass  # our own access log line is written when the response is finished

    def client_ip(self, raw: Any) -> str:
        if self.x_forwarded:
            forwarded = raw.getHeader("X-Forwarded-For")
            if forwarded:
                return forwarded.split(",")[0].strip()
        return getattr(raw.getClientAddress(), "host", "unknown")

    def dispatch(self, raw: MatrixRequest) -> None:
        start = time.monotonic()
        request = ApiRequest(
            raw,
            f"{raw.method.decode('ascii', 'replace')}-{next(_request_ids)}",
            self.client_ip(raw),
            self.authenticate,
            self.authenticate_server,
        )
        for name, value in CORS_HEADERS.items():
            raw.setHeader(name, value)
        if request.method == "OPTIONS":
            self._finish(request, Response(200, b"{}"), start, "OPTIONS")
            return
        if isinstance(raw.route, MatrixError):  # matched when the head arrived (channel.MatrixRequest)
            self._finish(request, error_response(raw.route), start, "-")
            return
        endpoint, template, params = raw.route
        kind = LONG_POLL if endpoint.is_long_poll(request) else SHORT
        if not self.admission.try_start(kind):
            raw.setHeader(b"Connection", b"close")
            raw.channel.persistent = False
            refusal = LimitExceeded(self.admission.retry_after_ms, "Server is busy; try again shortly", code=503)
            self._finish(request, error_response(refusal), start, template)
            return
        # The coroutine starts in a copy of this context, so the mark stays with this request alone.
        mark = current_work_class.set(BULK if kind == LONG_POLL else LIGHT)
        try:
            call = defer.ensureDeferred(endpoint.handle(request, **params))
        finally:
            current_work_class.reset(mark)
        call.addTimeout(endpoint.deadline(request, self.request_timeout), self.reactor)
        raw.notifyFinish().addErrback(lambda _: call.cancel())  # the client went away
        call.addCallbacks(_as_response, self._failure_response, errbackArgs=(request,))
        call.addCallback(lambda response: self._finish(request, response, start, template))
        call.addBoth(lambda _: self.admission.finished(kind))
        call.addErrback(lambda f: logger.error("%s: failed to send response: %s", request.request_id, f.value))

    def _failure_response(self, failure: Any, request: ApiRequest) -> Response | None:
        error = failure.value
        if isinstance(error, MatrixError):
            return error_response(error)
        if isinstance(error, self.busy_errors):
            return error_response(LimitExceeded(self.admission.retry_after_ms, "Server is busy; try again", 503))
        if isinstance(error, defer.TimeoutError):
            logger.warning("%s %s: deadline exceeded", request.request_id, request.path)
            return error_response(MatrixError(504, "M_UNKNOWN", "The request took too long and was cut off"))
        if isinstance(error, defer.CancelledError) and request.raw._disconnected:
            return None  # nobody is listening for an answer
        logger.error(
            "%s %s %s: unexpected error",
            request.request_id,
            request.method,
            request.path,
            exc_info=(failure.type, failure.value, failure.getTracebackObject()),
        )
        return error_response(MatrixError(500, "M_UNKNOWN", f"Internal server error (request id {request.request_id})"))

    def _finish(
        self, request: ApiRequest, response: Response | FileResponse | None, start: float, template: str
    ) -> None:
        raw = request.raw
        if response is None or raw._disconnected or raw.finished:
            if isinstance(response, FileResponse):
                response.close()
            return
        if isinstance(response, FileResponse):
            body, length = b"", response.length
        else:
            body = response.body
            if (
                self.compress
                and response.compress
                and len(body) >= GZIP_MIN_BYTES
                and accepts_gzip(request.header("Accept-Encoding"))
            ):
                body = response.gzipped or gzip_bytes(body)
                raw.setHeader(b"Content-Encoding", b"gzip")
                raw.setHeader(b"Vary", b"Accept-Encoding")
            length = len(body)
        raw.setResponseCode(response.status)
        raw.setHeader(b"Content-Type", response.content_type.encode())
        raw.setHeader(b"Content-Length", str(length).encode())
        raw.setHeader(b"Cache-Control", b"no-cache, no-store, must-revalidate")
        for name, value in response.headers.items():
            raw.setHeader(name.encode(), value.encode())
        if isinstance(response, FileResponse) and request.method != "HEAD":
            FileTransfer(raw, response, self.reactor, self.idle_timeout).start()
        else:
            if isinstance(response, FileResponse):
                response.close()
            elif request.method != "HEAD":
                raw.write(body)
            raw.finish()
        user = request.requester.user_id if request.requester else (request.origin or "-")
        self._log(request.request_id, request.client_ip, user, request.method, template, response.status, start, length)

    def refused(self, raw: MatrixRequest, method: str, template: str, status: int, length: int, start: float) -> None:
        """A request answered by the connection before dispatch (channel.MatrixRequest): a body too large, an
        upload without a token, no room for another upload."""
        self._log(f"{method}-{next(_request_ids)}", self.client_ip(raw), "-", method, template, status, start, length)

    def _log(
        self,
        request_id: str,
        client_ip: str,
        user: str,
        method: str,
        template: str,
        status: int,
        start: float,
        length: int,
    ) -> None:
        elapsed = time.monotonic() - start
        if self.observe is not None:
            self.observe(method, template, status, elapsed)
        if not access_logger.isEnabledFor(logging.INFO):
            return
        fields = {
            "request_id": request_id,
            "client_ip": client_ip,
            "user": user,
            "method": method,
            "path": template,
            "status": status,
            "ms": round(elapsed * 1000, 1),
            "bytes": length,
        }
        access_logger.info(
            "%s %s %s %s %s %d %.1fms %dB",
            *fields.values(),
            extra={"access": fields},  # JSON logs: as fields
        )


def _as_response(result: Any) -> Response | FileResponse:
    if isinstance(result, (Response, FileResponse)):
        return result
    status, body = result
    return Response(status, encode_json(body))


def error_response(error: MatrixError) -> Response:
    headers = {}
    if isinstance(error, LimitExceeded):
        headers["Retry-After"] = str(max(1, (error.retry_after_ms + 999) // 1000))
    return Response(error.code, encode_json(error.to_json()), headers=headers)
