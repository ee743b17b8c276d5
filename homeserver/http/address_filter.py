"""Outbound requests to URLs that users choose (push gateways) must not reach the server's own network:
names are resolved as usual, and addresses in blocked ranges are dropped before any connection is made,
so neither an IP literal nor a name that resolves to 127.0.0.1 gets through."""

import ipaddress
import logging
from collections.abc import Iterable
from typing import Any

from twisted.internet.interfaces import IHostnameResolver, IReactorPluggableNameResolver, IResolutionReceiver
from zope.interface import implementer

logger = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class AddressFilter:
    def __init__(self, blocked: Iterable[str], allowed: Iterable[str] = ()) -> None:
        self._blocked = [ipaddress.ip_network(cidr) for cidr in blocked]
        self._allowed = [ipaddress.ip_network(cidr) for cidr in allowed]

    def permits(self, host: str) -> bool:
        address = ipaddress.ip_address(host.split("%", 1)[0])  # an IPv6 scope id is not part of the address
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        if any(address in network for network in self._allowed):
            return True
        return not any(address in network for network in self._blocked)


@implementer(IResolutionReceiver)
class _FilteringReceiver:
    def __init__(self, receiver: Any, address_filter: AddressFilter, host_name: str) -> None:
        self._receiver = receiver
        self._filter = address_filter
        self._host_name = host_name

    def resolutionBegan(self, resolution: Any) -> None:
        self._receiver.resolutionBegan(resolution)

    def addressResolved(self, address: Any) -> None:
        if self._filter.permits(address.host):
            self._receiver.addressResolved(address)
        else:
            logger.warning("not connecting to %s: its address %s is in a blocked range", self._host_name, address.host)

    def resolutionComplete(self) -> None:
        self._receiver.resolutionComplete()


@implementer(IHostnameResolver)
class _FilteringResolver:
    def __init__(self, resolver: Any, address_filter: AddressFilter) -> None:
        self._resolver = resolver
        self._filter = address_filter

    def resolveHostName(
        self,
        resolutionReceiver: Any,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Any = None,
        transportSemantics: str = "TCP",
    ) -> Any:
        receiver = _FilteringReceiver(resolutionReceiver, self._filter, hostName)
        return self._resolver.resolveHostName(receiver, hostName, portNumber, addressTypes, transportSemantics)


@implementer(IReactorPluggableNameResolver)
class FilteringReactor:
    """The reactor as an Agent sees it, with a name resolver that drops blocked addresses (a name with
    none left fails as a DNS lookup with no result)."""

    def __init__(self, reactor: Any, address_filter: AddressFilter) -> None:
        self._reactor = reactor
        self.nameResolver = _FilteringResolver(reactor.nameResolver, address_filter)

    def installNameResolver(self, resolver: Any) -> Any:
        raise NotImplementedError("the filtering resolver is fixed")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)
