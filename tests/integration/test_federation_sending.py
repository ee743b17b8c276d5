"""The real server sends transactions to another server (a recording HTTPS peer on loopback) and retries
after a failure."""

import json
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from homeserver.app import HomeServer
from homeserver.config.loader import load_config
from tests.client import new_room_user
from tests.federation_servers import FederatingServer, federating_server, self_signed_cert
from tests.inline import resolve


class Peer:
    """An HTTPS server named `127.0.0.1:PORT` that records each PUT /send; answers come from `statuses`
    in turn (200 once they run out)."""

    def __init__(self, directory: Path) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.statuses: list[int] = []
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                peer.received.append((self.path, body))
                status = peer.statuses.pop(0) if peer.statuses else 200
                answer = json.dumps({"pdus": {}} if status == 200 else {"errcode": "M_UNKNOWN"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*self_signed_cert(directory))
        self._http.socket = context.wrap_socket(self._http.socket, server_side=True)
        self.server_name = f"127.0.0.1:{self._http.server_address[1]}"
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout_s: float = 15) -> list[tuple[str, dict[str, Any]]]:
        deadline = time.monotonic() + timeout_s
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.received) >= count, self.received
        return self.received

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[Peer]:
    p = Peer(tmp_path)
    yield p
    p.close()


@pytest.fixture(scope="module")
def sending_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FederatingServer]:
    overrides = {"federation": {"min_retry_interval": 300, "max_retry_interval": 1000}}
    with federating_server(backend, tmp_path_factory.mktemp(f"sender-{backend}"), overrides) as process:
        yield process


def test_a_to_device_message_reaches_the_other_server_after_it_failed_once(
    sending_server: FederatingServer, peer: Peer
) -> None:
    alice = new_room_user(sending_server.url)
    remote_user = f"@bob:{peer.server_name}"
    peer.statuses = [500]
    messages = {remote_user: {"DEVICE": {"secret": "s"}}}
    response = alice.put(f"/_matrix/client/v3/sendToDevice/m.test/{uuid.uuid4().hex}", {"messages": messages})
    assert response.status_code == 200

    (failed_path, failed), (path, body) = peer.wait_for(2)
    assert failed_path.startswith("/_matrix/federation/v1/send/") and path != failed_path  # a new transaction id
    assert body["origin"] == sending_server.server_name and body["pdus"] == []
    (edu,) = body["edus"]
    assert edu["edu_type"] == "m.direct_to_device"
    assert edu["content"]["messages"] == messages and edu["content"]["sender"] == alice.user_id
    assert failed["edus"] == body["edus"]  # the same message, kept until accepted
    time.sleep(0.5)
    assert len(peer.received) == 2  # accepted: not sent again


def test_events_of_a_room_with_a_member_on_the_other_server_are_sent_in_order(
    sending_server: FederatingServer, peer: Peer
) -> None:
    alice = new_room_user(sending_server.url)
    room = alice.create_room(preset="public_chat")
    # Nothing can join over federation yet: the other server's user joins through our code on the database.
    beside = HomeServer(load_config(str(sending_server.config_path)))
    try:
        remote_user = f"@carol:{peer.server_name}"
        join = {"membership": "join"}
        resolve(beside.room_sender.send(room, remote_user, "m.room.member", join, remote_user))
    finally:
        beside.db.close()
    peer.statuses = [503]
    alice.send_text(room, "one")
    alice.send_text(room, "two")
    bodies = []
    deadline = time.monotonic() + 15
    while bodies != ["one", "two"] and time.monotonic() < deadline:
        time.sleep(0.05)
        accepted = [pdu for _, body in peer.received[1:] for pdu in body["pdus"]]  # the first one failed
        bodies = [pdu["content"]["body"] for pdu in accepted if pdu["type"] == "m.room.message"]
    assert bodies == ["one", "two"]
    assert all(p["sender"] == alice.user_id for _, b in peer.received for p in b["pdus"])  # not the peer's own join
