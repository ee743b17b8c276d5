"""A remote homeserver played by the test: it has a name (`127.0.0.1:PORT`), a signing key it serves over
HTTPS, builds and signs events of its users, sends them to our server with signed requests, and answers
the history requests our server makes (/get_missing_events, /state_ids, /event) from the events it holds.

What it answers is up to the test (e.g. `serve_missing = False` leaves a gap our server must bridge with
state); it checks nothing it is sent, which is what lets a test probe our side alone."""

import json
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
from signedjson.key import generate_signing_key

from homeserver.core.event_builder import build_event
from homeserver.core.events import Event
from homeserver.core.federation_auth import server_keys_document, sign_request
from homeserver.core.room_versions import RoomVersion
from tests.federation_servers import self_signed_cert
from tests.server import free_port


class ScriptedPeer:
    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.server_name = f"127.0.0.1:{self.port}"
        self.signing_key = generate_signing_key("peer")
        self.events: dict[str, Event] = {}
        self.state_before: dict[str, list[str]] = {}  # event id -> the state ids /state_ids answers
        self.serve_missing = True
        self.requests: list[tuple[str, str]] = []  # (method, path) of what our server asked
        self.received: list[dict[str, Any]] = []  # transactions our server sent
        cert, key = self_signed_cert(directory)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> "ScriptedPeer":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def user(self, localpart: str) -> str:
        return f"@{localpart}:{self.server_name}"

    # -- events ------------------------------------------------------------------------------------

    def build(
        self,
        room_version: RoomVersion,
        room_id: str,
        sender: str,
        event_type: str,
        content: dict[str, Any],
        prev: list[str],
        auth: list[str],
        depth: int,
        state_key: str | None = None,
    ) -> Event:
        event = build_event(
            room_version,
            self.server_name,
            self.signing_key,
            event_type=event_type,
            sender=sender,
            content=content,
            room_id=room_id,
            prev_event_ids=prev,
            auth_event_ids=sorted(auth),
            depth=depth,
            origin_server_ts=int(time.time() * 1000),
            state_key=state_key,
        )
        self.events[event.event_id] = event
        return event

    def learn(self, room_version: RoomVersion, pdu: dict[str, Any]) -> Event:
        event = Event.from_pdu(room_version, pdu)
        self.events[event.event_id] = event
        return event

    # -- requests to our server ----------------------------------------------------------------------

    def request(self, target: Any, method: str, uri: str, body: Any = None) -> requests.Response:
        header = sign_request(self.signing_key, self.server_name, target.server_name, method, uri, body)
        return requests.request(
            method,
            target.federation_url + uri,
            json=body,
            headers={"Authorization": header},
            verify=False,
            timeout=60,
        )

    def send(self, target: Any, txn_id: str, pdus: list[dict], edus: list[dict] | None = None) -> requests.Response:
        body = {
            "origin": self.server_name,
            "origin_server_ts": int(time.time() * 1000),
            "pdus": pdus,
            "edus": edus or [],
        }
        return self.request(target, "PUT", f"/_matrix/federation/v1/send/{urllib.parse.quote(txn_id)}", body)

    # -- answers -------------------------------------------------------------------------------------

    def answer(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        self.requests.append((method, path))
        if path == "/_matrix/key/v2/server":
            return 200, server_keys_document(
                self.server_name, self.signing_key, int(time.time() * 1000) + 86_400_000, {}
            )
        if path.startswith("/_matrix/federation/v1/send/"):
            self.received.append(body)
            return 200, {"pdus": {}}
        if path.startswith("/_matrix/federation/v1/get_missing_events/"):
            return 200, {"events": self._missing(body) if self.serve_missing else []}
        if path.startswith("/_matrix/federation/v1/state_ids/"):
            event_id = query.get("event_id", [""])[0]
            if event_id not in self.state_before:
                return 404, {"errcode": "M_NOT_FOUND", "error": "no state"}
            state = self.state_before[event_id]
            return 200, {"pdu_ids": state, "auth_chain_ids": sorted(self._auth_chain(state))}
        if path.startswith("/_matrix/federation/v1/event/"):
            event = self.events.get(urllib.parse.unquote(path.rsplit("/", 1)[1]))
            if event is None:
                return 404, {"errcode": "M_NOT_FOUND", "error": "unknown event"}
            return 200, {"origin": self.server_name, "origin_server_ts": 0, "pdus": [event.get_pdu_json()]}
        return 404, {"errcode": "M_UNRECOGNIZED", "error": "not scripted"}

    def _missing(self, body: dict[str, Any]) -> list[dict]:
        earliest = set(body.get("earliest_events", []))
        found: dict[str, Event] = {}
        frontier = [p for e in body.get("latest_events", []) if e in self.events for p in self.events[e].prev_event_ids]
        while frontier and len(found) < body.get("limit", 10):
            event_id = frontier.pop()
            if event_id in earliest or event_id in found or event_id not in self.events:
                continue
            found[event_id] = self.events[event_id]
            frontier += self.events[event_id].prev_event_ids
        return [e.get_pdu_json() for e in sorted(found.values(), key=lambda e: e.depth)]

    def _auth_chain(self, event_ids: list[str]) -> set[str]:
        chain: set[str] = set()
        frontier = [a for i in event_ids if i in self.events for a in self.events[i].auth_event_ids]
        while frontier:
            event_id = frontier.pop()
            if event_id not in chain:
                chain.add(event_id)
                if event_id in self.events:
                    frontier += self.events[event_id].auth_event_ids
        return chain


def _handler(peer: ScriptedPeer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real servers: our client pools connections

        def _serve(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            status, answer = peer.answer(self.command, url.path, urllib.parse.parse_qs(url.query), body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _serve

        def log_message(self, *args: Any) -> None:
            pass

    return Handler
