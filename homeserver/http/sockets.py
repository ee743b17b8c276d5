"""Listening sockets that outlive a process, so that a restart refuses no connection.

A listening socket holds the kernel's queue of connections not yet accepted. Closing it resets every
connection in that queue, and while no socket is bound, connecting is refused. So a restart without loss
keeps the very same socket open across processes, rather than binding a new one (SO_REUSEPORT gives each
socket its own queue: connections queued on the one being closed would still be reset, unless
net.ipv4.tcp_migrate_req is set). Two ways to keep it:

- systemd socket activation. systemd binds the sockets (homeserver.socket) and passes them to the
  service: LISTEN_PID is our pid, LISTEN_FDS their count, from descriptor 3. We adopt them instead of
  binding, matching each to a configured listener by the address it is bound to, and refuse to start if
  one matches none. While one process drains and the next starts, the kernel queues connections on the
  socket systemd holds; the next process accepts them.
- Hand-over. A running server listens on a control UNIX socket (mode 0600, same user only). A new
  `homeserver run` of the same config connects to it, receives the listening sockets (SCM_RIGHTS), and,
  once it serves on them, asks the old process to drain; the old one stops accepting and finishes what
  it has (drain.py). Both accept from one queue meanwhile, so nothing is refused or reset. The new process
  then takes over the control socket, ready for the next restart.
"""

import contextlib
import ipaddress
import json
import logging
import os
import signal
import socket
import struct
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from twisted.internet import protocol
from twisted.internet.error import CannotListenError
from twisted.protocols.basic import LineOnlyReceiver

logger = logging.getLogger(__name__)

Address = tuple[str, int]
SD_LISTEN_FDS_START = 3
CONTROL_FILE = "homeserver.control"
EXCHANGE_TIMEOUT_S = 10.0  # the old process answers from its reactor at once; more means it is wedged
MAX_FDS = 64
TAKE_OVER, DRAIN, DRAINING = b"take-over", b"drain", b"draining"


class InheritedSocketError(Exception):
    """Sockets passed in do not fit the configured listeners, or a take-over failed: the server does not start."""


def control_path(configured: str, signing_key_path: str) -> Path:
    """The control socket: as configured, else next to the signing key (in the data folder)."""
    return Path(configured) if configured else Path(signing_key_path).parent / CONTROL_FILE


def same_address(a: Address, b: Address) -> bool:
    try:
        return ipaddress.ip_address(a[0]) == ipaddress.ip_address(b[0]) and a[1] == b[1]
    except ValueError:  # a host name in the config: compared as written
        return a == b


def bound_address(skt: socket.socket) -> Address:
    name = skt.getsockname()
    return name[0], name[1]


def match_sockets(sockets: Iterable[socket.socket], wanted: list[Address]) -> tuple[dict[Address, socket.socket], list]:
    """Each socket given to the configured listener address it is bound to. Returns the matches and the
    sockets that match none."""
    matched: dict[Address, socket.socket] = {}
    unmatched = []
    for skt in sockets:
        bound = bound_address(skt)
        address = next((a for a in wanted if same_address(a, bound) and a not in matched), None)
        if address is None:
            unmatched.append(skt)
        else:
            matched[address] = skt
    return matched, unmatched


def passed_descriptors(environ: Any = os.environ) -> list[int]:
    """The descriptors systemd passed to this process (LISTEN_PID is ours), [] without socket activation. Call it
    before twisted.internet.endpoints is imported: that module takes the variables for itself."""
    if environ.get("LISTEN_PID") != str(os.getpid()) or not environ.get("LISTEN_FDS"):
        return []
    count = int(environ["LISTEN_FDS"])
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):  # not meant for any child process
        environ.pop(name, None)
    return list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count))


def activated_sockets(fds: list[int], wanted: list[Address]) -> dict[Address, socket.socket]:
    """The listening sockets systemd passed (`fds`), by listener address. Every socket must match a listener
    and every listener a socket, or the server refuses to start."""
    sockets = []
    for fd in fds:
        try:
            skt = socket.socket(fileno=fd)
        except OSError as e:
            raise InheritedSocketError(f"LISTEN_FDS: descriptor {fd} is not a socket ({e.strerror})") from None
        if skt.type != socket.SOCK_STREAM or not skt.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise InheritedSocketError(f"LISTEN_FDS: descriptor {fd} is not a listening TCP socket")
        os.set_inheritable(fd, False)  # systemd passes them without close-on-exec
        sockets.append(skt)
    matched, unmatched = match_sockets(sockets, wanted)
    missing = [a for a in wanted if a not in matched]
    if unmatched or missing:
        passed = ", ".join(_show(bound_address(s)) for s in sockets)
        configured = ", ".join(_show(a) for a in wanted)
        raise InheritedSocketError(
            f"systemd passed sockets bound to {passed}, but the listeners are {configured}: "
            "make ListenStream= in the .socket unit match the config's listeners (address and port)"
        )
    return matched


def _show(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- the new process --------------------------------------------------------------------------------


class Successor:
    """This process taking over from the server running on `path`: blocking calls, made during start-up."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: socket.socket | None = None
        self.predecessor_pid: int | None = None

    def take_over(self) -> list[socket.socket] | None:
        """The running server's listening sockets, or None if no server answers on the control socket."""
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(EXCHANGE_TIMEOUT_S)
        try:
            conn.connect(str(self.path))
        except (FileNotFoundError, ConnectionRefusedError):  # none, or a stale file left by a crash
            conn.close()
            return None
        except OSError as e:  # the path is unusable (too long, no permission): bind as if no server ran
            logger.warning("cannot reach a running server on the control socket %s: %s", self.path, e)
            conn.close()
            return None
        try:
            conn.sendall(TAKE_OVER + b"\n")
            data, fds, _flags, _addr = socket.recv_fds(conn, 65536, MAX_FDS)
        except OSError as e:
            conn.close()
            raise InheritedSocketError(f"taking over from the server on {self.path} failed: {e}") from None
        for fd in fds:
            os.set_inheritable(fd, False)
        sockets = [socket.socket(fileno=fd) for fd in fds]
        try:
            self.predecessor_pid = int(json.loads(data)["pid"])
        except (ValueError, KeyError, TypeError):
            for skt in sockets:
                skt.close()
            conn.close()
            raise InheritedSocketError(
                f"the server on {self.path} answered the take-over with {data[:100]!r}"
            ) from None
        self._conn = conn
        return sockets

    def release_predecessor(self) -> None:
        """Ask the old process to drain (this one serves now), and wait until it has let go of the control socket."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with conn:
            try:
                conn.sendall(DRAIN + b"\n")
                answer = conn.recv(64)
            except OSError as e:
                answer = str(e).encode()
        if answer.strip() != DRAINING:
            logger.warning("the old process (pid %s) did not confirm its drain: %r", self.predecessor_pid, answer)


def inherit_sockets(
    wanted: list[Address], path: Path, passed_fds: list[int], required: bool
) -> tuple[dict[Address, socket.socket], Successor | None]:
    """The listening sockets this process starts with, by listener address: systemd's (`passed_fds`), else those
    of the server running on `path` (with the Successor to release it once this one serves), else none
    (`required`: refuse to start)."""
    if passed_fds:
        activated = activated_sockets(passed_fds, wanted)
        logger.info("socket activation: adopting %d listening sockets from systemd", len(activated))
        return activated, None
    successor = Successor(path)
    taken = successor.take_over()
    if taken is None:
        if required:
            raise InheritedSocketError(f"--take-over: no server answers on {path}")
        return {}, None
    matched, unmatched = match_sockets(taken, wanted)
    for skt in unmatched:  # a listener the config no longer has: it closes with the old process
        skt.close()
    logger.info(
        "taking over from pid %d: adopted %d listening sockets, %d listeners to bind anew",
        successor.predecessor_pid,
        len(matched),
        len(wanted) - len(matched),
    )
    return matched, successor


# -- the running process ----------------------------------------------------------------------------


class ControlProtocol(LineOnlyReceiver):
    delimiter = b"\n"
    factory: "ControlFactory"

    def connectionMade(self) -> None:
        skt = self.transport.getHandle()
        pid, uid, _gid = struct.unpack("3i", skt.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        if uid != os.getuid():  # the file's mode already says so; the kernel's word is checked too
            logger.warning("control socket: refusing pid %d of uid %d", pid, uid)
            self.transport.abortConnection()
            return
        self.peer_pid = pid

    def lineReceived(self, line: bytes) -> None:
        if line == TAKE_OVER:
            self.factory.hand_over(self)
        elif line == DRAIN:
            self.factory.drain(self)
        else:
            self.transport.loseConnection()


class ControlFactory(protocol.Factory):
    protocol = ControlProtocol

    def __init__(self, ports: Callable[[], list[Any]], start_drain: Callable[[], None]) -> None:
        self._ports = ports
        self._start_drain = start_drain
        self.listening: Any = None

    def hand_over(self, conn: ControlProtocol) -> None:
        ports = [port for port in self._ports() if getattr(port, "connected", False)]
        for port in ports:
            # shutdown() on a listening socket resets its queue for every process that shares it: from now
            # on, stopping means closing our descriptor only.
            port._shouldShutdown = False
        payload = json.dumps(
            {"pid": os.getpid(), "sockets": [[port.getHost().host, port.getHost().port] for port in ports]}
        )
        skt = conn.transport.getHandle()
        # A few bytes on an empty socket buffer: the send completes at once.
        socket.send_fds(skt, [payload.encode() + b"\n"], [port.fileno() for port in ports])
        logger.info("handed %d listening sockets to pid %d", len(ports), conn.peer_pid)

    def drain(self, conn: ControlProtocol) -> None:
        logger.info("pid %d serves now: draining as on SIGTERM", conn.peer_pid)

        def answer(_: Any) -> None:  # the path is free for the successor's own control socket
            conn.transport.write(DRAINING + b"\n")
            conn.transport.loseConnection()
            self._start_drain()

        self.listening.stopListening().addCallback(answer)


def serve_control(
    reactor: Any, path: Path, ports: Callable[[], list[Any]], start_drain: Callable[[], None] | None = None
) -> Any:
    """Listen on the control socket for a successor. `start_drain` defaults to raising SIGTERM, so that a hand-over
    drains exactly as a signal does (drain.py), and a later signal exits at once."""
    factory = ControlFactory(ports, start_drain or (lambda: signal.raise_signal(signal.SIGTERM)))
    try:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # stale: a live server would have answered the take-over
        factory.listening = reactor.listenUNIX(str(path), factory, mode=0o600)
    except (OSError, CannotListenError) as e:  # serving matters more than the next restart's hand-over
        logger.warning("no hand-over for the next restart: cannot listen on the control socket %s: %s", path, e)
        return None
    logger.info("control socket %s: `homeserver run` with this config takes over without a dropped connection", path)
    return factory.listening
