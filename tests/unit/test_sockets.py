"""Which inherited listening sockets serve which configured listener (homeserver/http/sockets.py)."""

import os
import socket
from collections.abc import Iterator

import pytest

from homeserver.http.sockets import (
    InheritedSocketError,
    activated_sockets,
    match_sockets,
    passed_descriptors,
    same_address,
)


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    with socket.socket() as skt:
        skt.bind(("127.0.0.1", 0))
        skt.listen()
        yield skt


def test_passed_descriptors_are_ours_only_when_listen_pid_is_our_pid() -> None:
    assert passed_descriptors({"LISTEN_PID": "1", "LISTEN_FDS": "2"}) == []
    environ = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b", "PATH": "/bin"}
    assert passed_descriptors(environ) == [3, 4]
    assert environ == {"PATH": "/bin"}  # not passed on to anything this process starts


def test_sockets_match_listeners_by_bound_address_and_port(listening: socket.socket) -> None:
    port = listening.getsockname()[1]
    matched, unmatched = match_sockets([listening], [("127.0.0.1", port + 1), ("127.0.0.1", port)])
    assert (matched, unmatched) == ({("127.0.0.1", port): listening}, [])
    assert match_sockets([listening], [("127.0.0.2", port)]) == ({}, [listening])


def test_addresses_are_compared_as_addresses() -> None:
    assert same_address(("::", 8008), ("0:0::0", 8008))
    assert not same_address(("::", 8008), ("0.0.0.0", 8008))
    assert not same_address(("127.0.0.1", 8008), ("127.0.0.1", 8448))


def test_a_passed_socket_without_a_listener_is_refused(listening: socket.socket) -> None:
    port = listening.getsockname()[1]
    fd = os.dup(listening.fileno())
    with pytest.raises(InheritedSocketError, match=f"127.0.0.1:{port}, but the listeners are 127.0.0.1:{port + 1}"):
        activated_sockets([fd], [("127.0.0.1", port + 1)])


def test_a_passed_descriptor_that_is_not_listening_is_refused() -> None:
    with socket.socket() as skt, pytest.raises(InheritedSocketError, match="not a listening TCP socket"):
        activated_sockets([os.dup(skt.fileno())], [("127.0.0.1", 8008)])
