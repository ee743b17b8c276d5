"""Where to connect for a server name (server-server API, "Resolving server names").

IP literal or explicit port: that address. Otherwise /.well-known/matrix/server (cached, successes and
failures alike), whose delegated name goes through the same steps; then the SRV records
`_matrix-fed._tcp` and (deprecated) `_matrix._tcp` of the name; then port 8448. The TLS name and the
Host header are the (delegated) server name; the connection itself is made to the address found.
"""

import json
import logging
import random
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.names import client as dns_client
from twisted.names import dns
from twisted.names.error import DNSNameError, DomainError, ResolverError

from homeserver.core.federation_auth import DEFAULT_FEDERATION_PORT, split_server_name

logger = logging.getLogger(__name__)

WELL_KNOWN_DEFAULT_S = 24 * 3600  # the spec's recommended default and maximum cache times
WELL_KNOWN_MAX_S = 48 * 3600
WELL_KNOWN_INVALID_S = 3600  # a non-200 or malformed answer: the spec's "up to an hour"
WELL_KNOWN_UNREACHABLE_S = 120  # no answer at all may be a blip: ask again soon
WELL_KNOWN_TIMEOUT_S = 10.0
WELL_KNOWN_MAX_BYTES = 50 * 1024
MAX_CACHED = 10_000  # server names; the oldest entries go first
_MAX_AGE = re.compile(r"max-age\s*=\s*(\d+)")


@dataclass(frozen=True)
class Target:
    """How to reach a server: Host header and TLS name, and the addresses to try in order."""

    host_header: str  # the server name (or delegated name) with its port if it has one
    tls_name: str  # the host part of host_header: the certificate must be valid for it
    addresses: tuple[tuple[str, int], ...]  # (host name or IP, port)


def is_ip_literal(host: str) -> bool:
    return bool(re.fullmatch(r"\d{1,3}(?:\.\d{1,3}){3}", host)) or ":" in host


def parse_well_known(body: bytes) -> str | None:
    """The delegated server name from a well-known body, or None when it is not a valid one."""
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    server = value.get("m.server") if isinstance(value, dict) else None
    if not isinstance(server, str):
        return None
    try:
        split_server_name(server)
    except ValueError:
        return None
    return server


def cache_seconds(cache_control: str | None) -> float:
    """How long to keep a well-known answer: its max-age within the spec's bound, 24 h without one."""
    if cache_control:
        if "no-store" in cache_control or "no-cache" in cache_control:
            return 0
        m = _MAX_AGE.search(cache_control)
        if m:
            return min(int(m.group(1)), WELL_KNOWN_MAX_S)
    return WELL_KNOWN_DEFAULT_S


def order_srv(records: list[tuple[int, int, int, str]]) -> list[tuple[str, int]]:
    """(host, port) from SRV (priority, weight, port, target) records: by priority, weighted-random within
    one (RFC 2782). A lone "." target means the service is deliberately not offered."""
    if len(records) == 1 and records[0][3] in (".", ""):
        return []
    ordered: list[tuple[str, int]] = []
    for priority in sorted({r[0] for r in records}):
        group = [r for r in records if r[0] == priority]
        while group:
            pick = random.choices(group, weights=[r[1] + 1 for r in group])[0]  # +1: weight 0 may still be chosen
            group.remove(pick)
            ordered.append((pick[3].rstrip("."), pick[2]))
    return ordered


# (https URL) -> (status, Cache-Control, body), raising on no answer.
WellKnownGet = Callable[[str], Awaitable[tuple[int, str | None, bytes]]]
# A DNS name -> SRV records as (priority, weight, port, target); [] when there are none.
SrvLookup = Callable[[str], Awaitable[list[tuple[int, int, int, str]]]]


class ServerResolver:
    def __init__(
        self, well_known_get: WellKnownGet, srv_lookup: SrvLookup, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._get = well_known_get
        self._srv = srv_lookup
        self._clock = clock
        self._well_known: OrderedDict[str, tuple[float, str | None]] = OrderedDict()
        self._pending: dict[str, defer.Deferred] = {}

    async def resolve(self, server_name: str) -> Target:
        host, port = split_server_name(server_name)
        if is_ip_literal(host) or port is not None:
            return Target(server_name, host, ((host, port or DEFAULT_FEDERATION_PORT),))
        delegated = await self.delegated_name(host)
        if delegated is not None:
            d_host, d_port = split_server_name(delegated)
            if is_ip_literal(d_host) or d_port is not None:
                return Target(delegated, d_host, ((d_host, d_port or DEFAULT_FEDERATION_PORT),))
            host = d_host
        return Target(host, host, tuple(await self._srv_targets(host)))

    async def _srv_targets(self, host: str) -> list[tuple[str, int]]:
        for service in ("_matrix-fed._tcp.", "_matrix._tcp."):
            records = await self._srv(service + host)
            if records:
                return order_srv(records)
        return [(host, DEFAULT_FEDERATION_PORT)]

    async def delegated_name(self, host: str) -> str | None:
        """The `m.server` of https://host/.well-known/matrix/server, cached; None when there is none."""
        cached = self._well_known.get(host)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        # Concurrent requests to one new server share one well-known fetch.
        if host in self._pending:
            waiter: defer.Deferred = defer.Deferred()
            self._pending[host].append(waiter)
            return await waiter
        self._pending[host] = []
        try:
            delegated, keep_s = await self._fetch(host)
        except BaseException as e:  # cancelled by the caller's deadline: the others learn it too
            for waiter in self._pending.pop(host):
                waiter.errback(e)
            raise
        self._well_known[host] = (self._clock() + keep_s, delegated)
        self._well_known.move_to_end(host)
        while len(self._well_known) > MAX_CACHED:
            self._well_known.popitem(last=False)
        for waiter in self._pending.pop(host):
            waiter.callback(delegated)
        return delegated

    async def _fetch(self, host: str) -> tuple[str | None, float]:
        try:
            status, cache_control, body = await self._get(f"https://{host}/.well-known/matrix/server")
        except Exception as e:  # DNS, refused, TLS, timeout: no answer
            logger.info("no /.well-known/matrix/server from %s: %s", host, e)
            return None, WELL_KNOWN_UNREACHABLE_S
        delegated = parse_well_known(body) if status == 200 else None
        if delegated is None:
            return None, WELL_KNOWN_INVALID_S
        return delegated, cache_seconds(cache_control)


class DnsSrvLookup:
    """SRV lookups through the system's resolver configuration (twisted.names)."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._resolver: Any = None  # made on first use: most set-ups never look up SRV records

    async def __call__(self, name: str) -> list[tuple[int, int, int, str]]:
        if self._resolver is None:
            self._resolver = dns_client.Resolver(resolv="/etc/resolv.conf", timeout=(1, 3, 5), reactor=self._reactor)
        try:
            answers, _, _ = await self._resolver.lookupService(name)
        except (DNSNameError, DomainError, ResolverError, defer.TimeoutError):
            return []
        except Exception as e:  # a resolver that cannot be reached at all is no SRV record
            logger.info("SRV lookup of %s failed: %s", name, e)
            return []
        return [
            (a.payload.priority, a.payload.weight, a.payload.port, a.payload.target.name.decode("ascii"))
            for a in answers
            if a.type == dns.SRV
        ]
