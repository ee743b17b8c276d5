"""Server discovery (server-server API, "Resolving server names") over a fake well-known and DNS."""

import json

import pytest
from twisted.internet import defer

from homeserver.http.federation_discovery import (
    WELL_KNOWN_DEFAULT_S,
    WELL_KNOWN_INVALID_S,
    WELL_KNOWN_MAX_S,
    WELL_KNOWN_UNREACHABLE_S,
    ServerResolver,
    Target,
    cache_seconds,
    order_srv,
    parse_well_known,
)
from tests.inline import resolve


class FakeNet:
    """Well-known answers by host and SRV records by name; counts what was asked."""

    def __init__(self) -> None:
        self.well_known: dict[str, tuple[int, str | None, bytes] | Exception] = {}
        self.srv: dict[str, list[tuple[int, int, int, str]]] = {}
        self.asked: list[str] = []
        self.now = 1000.0

    async def get(self, url: str) -> tuple[int, str | None, bytes]:
        self.asked.append(url)
        host = url.removeprefix("https://").split("/", 1)[0]
        answer = self.well_known.get(host, ConnectionRefusedError("refused"))
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def lookup(self, name: str) -> list[tuple[int, int, int, str]]:
        self.asked.append(f"SRV {name}")
        return self.srv.get(name, [])

    def resolver(self) -> ServerResolver:
        return ServerResolver(self.get, self.lookup, lambda: self.now)


def _ok(server: str, cache_control: str | None = None) -> tuple[int, str | None, bytes]:
    return 200, cache_control, json.dumps({"m.server": server}).encode()


@pytest.fixture
def net() -> FakeNet:
    return FakeNet()


def test_ip_literal_is_dialled_directly_with_8448_by_default(net: FakeNet) -> None:
    assert resolve(net.resolver().resolve("192.0.2.7")) == Target("192.0.2.7", "192.0.2.7", (("192.0.2.7", 8448),))
    assert resolve(net.resolver().resolve("[2001:db8::1]:8000")) == Target(
        "[2001:db8::1]:8000", "2001:db8::1", (("2001:db8::1", 8000),)
    )
    assert net.asked == []


def test_explicit_port_skips_well_known_and_srv(net: FakeNet) -> None:
    target = resolve(net.resolver().resolve("matrix.example.org:8000"))
    assert target == Target("matrix.example.org:8000", "matrix.example.org", (("matrix.example.org", 8000),))
    assert net.asked == []


def test_well_known_delegation_with_port_is_used_with_the_delegated_host_header(net: FakeNet) -> None:
    net.well_known["example.org"] = _ok("fed.example.net:443")
    target = resolve(net.resolver().resolve("example.org"))
    assert target == Target("fed.example.net:443", "fed.example.net", (("fed.example.net", 443),))
    assert net.asked == ["https://example.org/.well-known/matrix/server"]


def test_well_known_delegation_without_port_looks_up_srv_of_the_delegated_name(net: FakeNet) -> None:
    net.well_known["example.org"] = _ok("fed.example.net")
    net.srv["_matrix-fed._tcp.fed.example.net"] = [(10, 0, 8449, "host1.example.net.")]
    target = resolve(net.resolver().resolve("example.org"))
    assert target == Target("fed.example.net", "fed.example.net", (("host1.example.net", 8449),))


def test_without_well_known_srv_then_legacy_srv_then_8448(net: FakeNet) -> None:
    net.srv["_matrix._tcp.legacy.org"] = [(10, 0, 9000, "old.legacy.org.")]
    assert resolve(net.resolver().resolve("legacy.org")).addresses == (("old.legacy.org", 9000),)
    assert resolve(net.resolver().resolve("plain.org")) == Target("plain.org", "plain.org", (("plain.org", 8448),))
    assert "SRV _matrix-fed._tcp.plain.org" in net.asked and "SRV _matrix._tcp.plain.org" in net.asked


@pytest.mark.parametrize(
    "answer",
    [
        (404, None, b"{}"),
        (200, None, b"not json"),
        (200, None, b'{"m.server": 5}'),
        (200, None, b'{"m.server": "bad name!"}'),
        (200, None, b"[]"),
    ],
)
def test_invalid_well_known_falls_back_and_is_cached_for_an_hour(net: FakeNet, answer: tuple) -> None:
    net.well_known["example.org"] = answer
    resolver = net.resolver()
    assert resolve(resolver.resolve("example.org")).addresses == (("example.org", 8448),)
    net.now += WELL_KNOWN_INVALID_S - 1
    resolve(resolver.resolve("example.org"))
    assert net.asked.count("https://example.org/.well-known/matrix/server") == 1
    net.now += 2
    resolve(resolver.resolve("example.org"))
    assert net.asked.count("https://example.org/.well-known/matrix/server") == 2


def test_unreachable_well_known_is_asked_again_soon(net: FakeNet) -> None:
    resolver = net.resolver()
    resolve(resolver.resolve("example.org"))
    net.now += WELL_KNOWN_UNREACHABLE_S + 1
    resolve(resolver.resolve("example.org"))
    assert net.asked.count("https://example.org/.well-known/matrix/server") == 2


def test_well_known_is_cached_by_its_max_age(net: FakeNet) -> None:
    net.well_known["example.org"] = _ok("fed.example.net:443", "public, max-age=600")
    resolver = net.resolver()
    resolve(resolver.resolve("example.org"))
    net.now += 599
    assert resolve(resolver.resolve("example.org")).host_header == "fed.example.net:443"
    net.well_known["example.org"] = _ok("moved.example.net:443")
    net.now += 2
    assert resolve(resolver.resolve("example.org")).host_header == "moved.example.net:443"


def test_concurrent_lookups_share_one_well_known_fetch() -> None:
    asked: list[str] = []
    answer: defer.Deferred = defer.Deferred()

    async def get(url: str) -> tuple[int, str | None, bytes]:
        asked.append(url)
        return await answer

    async def no_srv(name: str) -> list:
        return []

    resolver = ServerResolver(get, no_srv)
    first = defer.ensureDeferred(resolver.resolve("example.org"))
    second = defer.ensureDeferred(resolver.resolve("example.org"))
    answer.callback(_ok("fed.example.net:8448"))
    assert (
        first.result == second.result == Target("fed.example.net:8448", "fed.example.net", (("fed.example.net", 8448),))
    )
    assert len(asked) == 1


def test_cache_time_follows_cache_control_within_bounds() -> None:
    assert cache_seconds(None) == WELL_KNOWN_DEFAULT_S
    assert cache_seconds("max-age=60") == 60
    assert cache_seconds("max-age=99999999") == WELL_KNOWN_MAX_S
    assert cache_seconds("no-store") == 0


def test_srv_records_are_ordered_by_priority_and_a_dot_target_means_none() -> None:
    records = [(20, 0, 3, "c.example."), (10, 5, 1, "a.example."), (10, 5, 2, "b.example.")]
    ordered = order_srv(records)
    assert set(ordered[:2]) == {("a.example", 1), ("b.example", 2)} and ordered[2] == ("c.example", 3)
    assert order_srv([(0, 0, 0, ".")]) == []


def test_well_known_body_must_name_a_server() -> None:
    assert parse_well_known(b'{"m.server": "example.org:443"}') == "example.org:443"
    assert parse_well_known(b'{"m.server": ""}') is None
    assert parse_well_known(b"\xff") is None
