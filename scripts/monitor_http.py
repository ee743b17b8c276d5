"""HTTP for the end-to-end monitor (scripts/monitor.py): every request has one deadline for the whole
exchange (connect, headers and body), and every way it can go wrong becomes a `ProbeFailure` with a reason.

The reasons are label values of the failure counters and are explained in docs/monitoring.md."""

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from OpenSSL.SSL import Error as TlsError
from treq.client import HTTPClient
from twisted.internet import error as net
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web import _newclient as web
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss, _DataLoss
from twisted.web.iweb import IResponse

MAX_BODY = 32 * 1024 * 1024  # a server that streams garbage must not fill the monitor's memory
USER_AGENT = b"homeserver-monitor/1"

# Every reason a request (or a probe built on requests) can fail for, in the order docs/monitoring.md lists them.
REASONS = (
    "timeout",  # no complete answer before the deadline (a hang, a stalled body, a slow DNS)
    "dns",  # the host name did not resolve
    "refused",  # nothing listens on the port
    "connect",  # any other failure to connect (no route, network unreachable)
    "tls",  # the TLS handshake failed (bad or expired certificate, wrong host name)
    "reset",  # the connection was reset or closed before a complete answer
    "protocol",  # what came back is not HTTP (garbage), or its body is too large
    "http_3xx",
    "http_4xx",
    "http_5xx",
    "bad_json",  # a 2xx whose body is not JSON, or JSON without the fields the probe needs
    "not_delivered",  # delivery only: the message was sent but never showed up in the receiver's /sync
    "keys_expired",  # federation_key only: the server's published keys are past valid_until_ts
    "error",  # an unexpected error inside the monitor itself (a bug: logged with its traceback)
)


class ProbeFailure(Exception):
    """A failed request or check: `reason` is one of REASONS, `detail` says what happened, for the log and the
    alert (never a credential: bodies we send are not echoed, and URLs carry none)."""

    def __init__(self, reason: str, detail: str, status: int | None = None, errcode: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.status = status
        self.errcode = errcode


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes

    def json_object(self) -> dict[str, Any]:
        try:
            value = json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as e:
            raise ProbeFailure("bad_json", f"{self.status} answer is not JSON ({e}): {_excerpt(self.body)}") from None
        if not isinstance(value, dict):
            raise ProbeFailure("bad_json", f"{self.status} answer is JSON but not an object: {_excerpt(self.body)}")
        return value


class Http:
    """A client whose connections are never reused: each probe connects the way a new client would, and a
    connection that hung or sent garbage cannot poison the next round."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._client = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))

    async def json(
        self,
        method: str,
        url: str,
        timeout: float,
        body: Any = None,
        token: str | None = None,
        params: dict[str, str] | None = None,
        shown: str | None = None,
    ) -> dict[str, Any]:
        """The JSON object of a 2xx answer; anything else raises ProbeFailure."""
        answer = await self.request(method, url, timeout, body, token, params, shown)
        if not 200 <= answer.status < 300:
            raise status_failure(answer)
        return answer.json_object()

    async def request(
        self,
        method: str,
        url: str,
        timeout: float,
        body: Any = None,
        token: str | None = None,
        params: dict[str, str] | None = None,
        shown: str | None = None,
    ) -> Answer:
        """Any complete answer, whatever its status. Failing to get one raises ProbeFailure, whose detail names
        the request `shown` (for a URL that is itself a secret, like a webhook's) or else its method and URL."""
        shown = shown or f"{method} {_where(url)}"

        def timed_out(result: Any, _: float) -> Any:
            # Whatever the cancel turned into (CancelledError, ResponseNeverReceived([CancelledError]), ...).
            if isinstance(result, Failure):
                raise ProbeFailure("timeout", f"{shown}: no complete answer within {timeout:g}s")
            return result

        exchange = Deferred.fromCoroutine(self._exchange(method, url, body, token, params))
        exchange.addTimeout(timeout, self._reactor, onTimeoutCancel=timed_out)  # the cancel aborts the connection
        try:
            return await exchange
        except ProbeFailure:
            raise
        except Exception as e:
            reason, detail = classify(e)
            raise ProbeFailure(reason, f"{shown}: {detail}") from None

    async def _exchange(
        self, method: str, url: str, body: Any, token: str | None, params: dict[str, str] | None
    ) -> Answer:
        headers = {b"User-Agent": [USER_AGENT]}
        if token:
            headers[b"Authorization"] = [b"Bearer " + token.encode()]
        data = None
        if body is not None:
            headers[b"Content-Type"] = [b"application/json"]
            data = json.dumps(body).encode()
        response = await self._client.request(method, url, headers=headers, data=data, params=params, unbuffered=True)
        return Answer(response.code, await read_body(response))


def read_body(response: IResponse) -> "Deferred[bytes]":
    """The whole body, at most MAX_BODY bytes. Cancelling (the deadline) drops the connection, so a stalled
    body does not keep a socket open."""
    collector = _Collector()
    finished: Deferred[bytes] = Deferred(lambda _: collector.abort())
    collector.finished = finished
    response.deliverBody(collector)
    return finished


class TooLarge(Exception):
    pass


class _Collector(Protocol):
    finished: "Deferred[bytes]"

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > MAX_BODY:
            self.abort()
            self._fire(Failure(TooLarge(f"answer larger than {MAX_BODY} bytes")))
            return
        self._chunks.append(data)

    def connectionLost(self, reason: Failure) -> None:
        if reason.check(ResponseDone, PotentialDataLoss):
            self._fire(b"".join(self._chunks))
        else:
            self._fire(reason)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.stopProducing()

    def _fire(self, result: Any) -> None:
        if not self.finished.called:  # after a cancel or an overflow, the connection's end is no news
            if isinstance(result, Failure):
                self.finished.errback(result)
            else:
                self.finished.callback(result)


def status_failure(answer: Answer) -> ProbeFailure:
    """http_4xx etc. for an unexpected status, with the Matrix errcode when the body has one."""
    errcode = message = None
    try:
        value = json.loads(answer.body)
        if isinstance(value, dict):
            errcode, message = value.get("errcode"), value.get("error")
    except (ValueError, UnicodeDecodeError):
        pass
    said = f"{errcode}: {message}" if errcode else _excerpt(answer.body)
    reason = f"http_{answer.status // 100}xx" if 300 <= answer.status < 600 else "protocol"
    return ProbeFailure(reason, f"{answer.status} {said}", answer.status, errcode if isinstance(errcode, str) else None)


def classify(e: BaseException) -> tuple[str, str]:
    """(reason, detail) for an exception out of Twisted's web client. The client wraps what really happened
    (ResponseNeverReceived([ConnectionLost]), ...): the wrapped causes decide."""
    causes = list(_causes(e))
    for kinds, reason in _KINDS:
        for cause in causes:
            if isinstance(cause, kinds):
                return reason, _describe(cause)
    return "error", _describe(e)


_KINDS: list[tuple[type | tuple[type, ...], str]] = [
    (TooLarge, "protocol"),
    (net.DNSLookupError, "dns"),
    (net.ConnectionRefusedError, "refused"),
    ((TlsError, net.SSLError, net.VerifyError, net.CertificateError), "tls"),
    ((net.TCPTimedOutError, net.TimeoutError), "timeout"),
    ((web.ParseError, web.BadHeaders), "protocol"),
    ((net.ConnectionClosed, web.ConnectionAborted, _DataLoss, web.WrongBodyLength), "reset"),
    ((net.ConnectError, OSError), "connect"),
]


def _causes(e: BaseException) -> Any:
    yield e
    for failure in getattr(e, "reasons", None) or []:  # twisted.web._newclient._WrapperException
        yield from _causes(failure.value)


def _describe(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    if isinstance(e, web._WrapperException):
        text = type(e).__name__ + ": " + ", ".join(_describe(f.value) for f in e.reasons)
    return text[:300]


def _where(url: str) -> str:
    """Scheme, host, port and path: no user info, and no query string (noise in a log line)."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"


def _excerpt(body: bytes, limit: int = 120) -> str:
    text = body[:limit].decode("utf-8", "replace")
    return repr(text + ("..." if len(body) > limit else ""))
