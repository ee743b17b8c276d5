"""Which addresses user-chosen outbound requests may reach (homeserver/http/address_filter.py)."""

import pytest
from twisted.internet.address import IPv4Address, IPv6Address

from homeserver.config.options import PRIVATE_RANGES
from homeserver.http.address_filter import AddressFilter, FilteringReactor

DEFAULT = AddressFilter(PRIVATE_RANGES)


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "::1", "fe80::1%eth0", "fd00::1",
     "::ffff:127.0.0.1", "0.0.0.0", "100.64.0.1"],
)
def test_private_loopback_and_link_local_addresses_are_blocked_by_default(host: str) -> None:
    assert not DEFAULT.permits(host)


@pytest.mark.parametrize("host", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "::ffff:93.184.216.34"])
def test_public_addresses_are_permitted(host: str) -> None:
    assert DEFAULT.permits(host)


def test_the_whitelist_makes_exceptions_inside_blocked_ranges() -> None:
    allowing = AddressFilter(PRIVATE_RANGES, ["192.168.1.0/24"])
    assert allowing.permits("192.168.1.20")
    assert not allowing.permits("192.168.2.20")


class _Receiver:
    def __init__(self) -> None:
        self.began = self.completed = False
        self.addresses: list[str] = []

    def resolutionBegan(self, resolution: object) -> None:
        self.began = True

    def addressResolved(self, address: IPv4Address) -> None:
        self.addresses.append(address.host)

    def resolutionComplete(self) -> None:
        self.completed = True


class _Resolver:
    """A name that resolves to one internal and one public address."""

    def resolveHostName(self, receiver, hostName, portNumber=0, addressTypes=None, transportSemantics="TCP"):
        receiver.resolutionBegan(None)
        receiver.addressResolved(IPv4Address("TCP", "10.0.0.5", portNumber))
        receiver.addressResolved(IPv6Address("TCP", "2606:2800:220:1::1", portNumber))
        receiver.resolutionComplete()


class _Reactor:
    nameResolver = _Resolver()
    seconds = staticmethod(lambda: 42.0)


def test_the_reactor_an_agent_sees_resolves_only_permitted_addresses() -> None:
    reactor = FilteringReactor(_Reactor(), DEFAULT)
    receiver = _Receiver()
    reactor.nameResolver.resolveHostName(receiver, "gateway.example", 443)
    assert receiver.began and receiver.completed
    assert receiver.addresses == ["2606:2800:220:1::1"]
    assert reactor.seconds() == 42.0  # everything else is the real reactor's
