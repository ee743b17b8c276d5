"""Requests to other homeservers: discovery, TLS, X-Matrix signing, JSON in and out.

Every connection goes through the operator's address filter (ip_range_blacklist / ip_range_whitelist),
after discovery and DNS, so a server name, a well-known delegation or an SRV record pointing at the
internal network reaches nothing. Answers are read up to a limit and every request has a deadline.
"""

import json
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

from OpenSSL import SSL
from signedjson.types import SigningKey
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import CertificateOptions, optionsForClientTLS
from twisted.web.client import Agent, BrowserLikeRedirectAgent, HTTPConnectionPool, _HTTP11ClientFactory
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IPolicyForHTTPS
from zope.interface import implementer

from homeserver.core.federation_auth import sign_request
from homeserver.http.address_filter import AddressFilter, FilteringReactor
from homeserver.http.capped_body import read_body
from homeserver.http.federation_discovery import (
    WELL_KNOWN_MAX_BYTES,
    WELL_KNOWN_TIMEOUT_S,
    DnsSrvLookup,
    ServerResolver,
    Target,
    is_ip_literal,
)

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 30.0
MAX_ANSWER_BYTES = 50 * 1024 * 1024  # a /state answer of a big room is tens of MB
USER_AGENT = b"homeserver"


class FederationError(Exception):
    pass


class RequestSendFailed(FederationError):
    """No usable answer: the server could not be found or reached, was too slow, or did not answer JSON."""


class HttpResponseError(FederationError):
    """The server answered with an error status; `errcode` and `msg` from its Matrix error body, if any."""

    def __init__(self, code: int, body: Any) -> None:
        self.code = code
        self.errcode = body.get("errcode") if isinstance(body, dict) else None
        self.msg = body.get("error") if isinstance(body, dict) else None
        super().__init__(f"{code} {self.errcode}: {self.msg}")


class _QuietClientFactory(_HTTP11ClientFactory):
    noisy = False


@implementer(IOpenSSLClientConnectionCreator)
class _UnverifiedTLS:
    """TLS with SNI but no certificate check (federation_verify_certificates: false, for tests)."""

    def __init__(self, hostname: str) -> None:
        self._context = CertificateOptions(verify=False).getContext()
        self._sni = None if is_ip_literal(hostname) else hostname.encode("ascii")

    def clientConnectionForTLS(self, tls_protocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        if self._sni:
            connection.set_tlsext_host_name(self._sni)
        connection.set_connect_state()
        return connection


def tls_options(hostname: str, verify: bool) -> Any:
    return optionsForClientTLS(hostname) if verify else _UnverifiedTLS(hostname)


@implementer(IPolicyForHTTPS)
class _TlsPolicy:
    def __init__(self, verify: bool) -> None:
        self._verify = verify

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        return tls_options(hostname.decode("ascii"), self._verify)


class _TargetEndpoint:
    """Connects to the first of a target's addresses that answers, over TLS for its TLS name."""

    def __init__(self, reactor: Any, target: Target, verify: bool, timeout_s: float) -> None:
        self._reactor = reactor
        self._target = target
        self._verify = verify
        self._timeout_s = timeout_s

    def connect(self, protocol_factory: Any) -> defer.Deferred:
        return defer.ensureDeferred(self._connect(protocol_factory))

    async def _connect(self, protocol_factory: Any) -> Any:
        last: Exception = RequestSendFailed(f"no address for {self._target.host_header}")
        for host, port in self._target.addresses:
            endpoint = wrapClientTLS(
                tls_options(self._target.tls_name, self._verify),
                HostnameEndpoint(self._reactor, host, port, timeout=self._timeout_s),
            )
            try:
                return await endpoint.connect(protocol_factory)
            except Exception as e:  # refused, no route, name not found or blocked: try the next one
                last = e
        raise last


class _TargetEndpointFactory:
    def __init__(self, reactor: Any, target: Target, verify: bool, timeout_s: float) -> None:
        self._endpoint = _TargetEndpoint(reactor, target, verify, timeout_s)

    def endpointForURI(self, uri: Any) -> _TargetEndpoint:
        return self._endpoint


class FederationClient:
    def __init__(
        self,
        reactor: Any,
        server_name: str,
        signing_key: SigningKey,
        address_filter: AddressFilter,
        *,
        verify_certificates: bool = True,
        resolver: ServerResolver | None = None,
    ) -> None:
        self._reactor = FilteringReactor(reactor, address_filter)
        self._clock = reactor
        self.server_name = server_name
        self._signing_key = signing_key
        self._verify = verify_certificates
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool._factory = _QuietClientFactory  # one log line per connection is noise at federation's rate
        self._pool.maxPersistentPerHost = 2
        self._pool.cachedConnectionTimeout = 60
        self._pool.retryAutomatically = False  # a retried PUT /send must not be our decision to make here
        well_known_agent = BrowserLikeRedirectAgent(
            Agent(
                self._reactor,
                contextFactory=_TlsPolicy(verify_certificates),
                connectTimeout=WELL_KNOWN_TIMEOUT_S,
                pool=HTTPConnectionPool(reactor, persistent=False),
            ),
            redirectLimit=5,
        )
        self._well_known_agent = well_known_agent
        self.resolver = resolver or ServerResolver(self._get_well_known, DnsSrvLookup(reactor))

    async def _get_well_known(self, url: str) -> tuple[int, str | None, bytes]:
        call = defer.ensureDeferred(self._get_well_known_now(url))
        call.addTimeout(WELL_KNOWN_TIMEOUT_S, self._clock)
        return await call

    async def _get_well_known_now(self, url: str) -> tuple[int, str | None, bytes]:
        response = await self._well_known_agent.request(b"GET", url.encode("ascii"))
        cache_control = response.headers.getRawHeaders(b"cache-control")
        body = await read_body(response, WELL_KNOWN_MAX_BYTES)
        return response.code, cache_control[0].decode("latin-1") if cache_control else None, body

    async def get_json(
        self, destination: str, path: str, args: Mapping[str, str | list[str]] | None = None, **kw: Any
    ) -> Any:
        return await self.request("GET", destination, path, args=args, **kw)

    async def post_json(self, destination: str, path: str, content: Any, **kw: Any) -> Any:
        return await self.request("POST", destination, path, content=content, **kw)

    async def put_json(self, destination: str, path: str, content: Any, **kw: Any) -> Any:
        return await self.request("PUT", destination, path, content=content, **kw)

    async def send_transaction(
        self, destination: str, txn_id: str, origin_server_ts: int, pdus: list[dict], edus: list[dict]
    ) -> Any:
        """PUT /_matrix/federation/v1/send/{txnId}: the per-PDU results of the destination on success."""
        body = {"origin": self.server_name, "origin_server_ts": origin_server_ts, "pdus": pdus, "edus": edus}
        return await self.put_json(destination, f"/_matrix/federation/v1/send/{quote(txn_id, safe='')}", body)

    async def request(
        self,
        method: str,
        destination: str,
        path: str,
        *,
        args: Mapping[str, str | list[str]] | None = None,
        content: Any = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        signed: bool = True,
    ) -> Any:
        """The decoded JSON answer of a 2xx; HttpResponseError for an error status, RequestSendFailed for no
        usable answer (including a deadline of `timeout_s` for the whole exchange). `path` is sent as given:
        its variable segments must already be percent-encoded (`quote(segment, safe="")`)."""
        uri = path
        if args:
            uri += "?" + urlencode(args, doseq=True)
        call = defer.ensureDeferred(self._request(method, destination, uri, content, timeout_s, signed))
        call.addTimeout(timeout_s, self._clock)
        try:
            return await call
        except FederationError:
            raise
        except defer.CancelledError:
            raise
        except defer.TimeoutError:
            raise RequestSendFailed(f"{destination} did not answer {method} {path} within {timeout_s:.0f}s") from None
        except Exception as e:  # DNS, refused, TLS, reset: all mean no answer
            raise RequestSendFailed(f"{method} {path} to {destination}: {type(e).__name__}: {e}") from None

    async def get_response(
        self, destination: str, path: str, *, args: Mapping[str, str] | None = None, signed: bool = True
    ) -> Any:
        """A GET's twisted.web response with its body unread, for answers that are not JSON (media files,
        streamed to disk by the caller, who also reads error bodies and sets the deadline). Connection
        failures are raised as they come: the caller maps them."""
        uri = path + ("?" + urlencode(args) if args else "")
        return await self._send("GET", destination, uri, None, DEFAULT_TIMEOUT_S, signed)

    async def _request(
        self, method: str, destination: str, uri: str, content: Any, timeout_s: float, signed: bool
    ) -> Any:
        response = await self._send(method, destination, uri, content, timeout_s, signed)
        raw = await read_body(response, MAX_ANSWER_BYTES)
        try:
            answer = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            answer = None
        if not 200 <= response.code < 300:
            raise HttpResponseError(response.code, answer)
        if answer is None:
            raise RequestSendFailed(f"{destination} answered {method} {uri} with something that is not JSON")
        return answer

    async def _send(self, method: str, destination: str, uri: str, content: Any, timeout_s: float, signed: bool) -> Any:
        target = await self.resolver.resolve(destination)
        headers = Headers({b"Host": [target.host_header.encode("ascii")], b"User-Agent": [USER_AGENT]})
        if signed:
            auth = sign_request(self._signing_key, self.server_name, destination, method, uri, content)
            headers.addRawHeader(b"Authorization", auth.encode("utf-8"))
        body = None
        if content is not None:
            headers.addRawHeader(b"Content-Type", b"application/json")
            body = _BytesProducer(json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        agent = Agent.usingEndpointFactory(
            self._reactor, _TargetEndpointFactory(self._reactor, target, self._verify, timeout_s), pool=self._pool
        )
        url = f"matrix-federation://{target.host_header}{uri}".encode()
        return await agent.request(method.encode("ascii"), url, headers, body)


@implementer(IBodyProducer)
class _BytesProducer:
    """A request body given all at once (twisted.web's FileBodyProducer would go through a thread)."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: Any) -> defer.Deferred:
        consumer.write(self._data)
        return defer.succeed(None)

    def pauseProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass
