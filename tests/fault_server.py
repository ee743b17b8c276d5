"""A fake homeserver that misbehaves on demand, for testing scripts/monitor.py.

It serves plain HTTP on 127.0.0.1 from an asyncio loop in a thread of the test process. By default it answers
the few client-server endpoints the monitor uses like a tiny homeserver ("ok": logins, one room, messages that
show up in /sync, the federation key endpoint) and records webhook POSTs. A test switches what a path does:

    fake.set("/_matrix/client/versions", "500", "hang", "ok")   # one behaviour per request; the last one stays

Behaviours (`BEHAVIOURS`):
    ok          answer like a homeserver
    NNN         that HTTP status with a Matrix error body (500, 404, 429, ...)
    hang        read the request, never answer
    stall       send the headers and part of the body, then nothing
    reset       close the connection with a TCP reset, no answer
    close       close the connection cleanly, no answer
    garbage     bytes that are not HTTP, then close
    bad_json    200 with a body that is not JSON
    empty_json  200 with `{}`: JSON, but none of the fields a client needs
    lose        (send only) answer with an event id, but never show the message in /sync
    delay:S     answer "ok" after S seconds

Connections refused: point the monitor at `closed_port_url()`, where nothing listens. A TLS handshake (an
https:// URL to this plain-HTTP server) gets a plain-HTTP 400, so the client's handshake fails.
"""

import asyncio
import contextlib
import json
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

SERVER_NAME = "fake.test"
BEHAVIOURS = ("ok", "hang", "stall", "reset", "close", "garbage", "bad_json", "empty_json", "lose")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class FaultServer:
    def __init__(self) -> None:
        self._rules: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self.requests: list[Request] = []
        self.webhooks: list[dict[str, Any]] = []
        # the tiny homeserver: tokens, aliases, one timeline for all rooms, members per room
        self._tokens: dict[str, str] = {}
        self._aliases: dict[str, str] = {}
        self._members: dict[str, set[str]] = {}
        self._events: list[dict[str, Any]] = []
        self._new_event: asyncio.Condition | None = None
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-server", daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "FaultServer":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def stop(self) -> None:
        async def shut() -> None:
            assert self._server is not None
            self._server.close()
            for t in asyncio.all_tasks():
                if t is not asyncio.current_task():
                    t.cancel()

        asyncio.run_coroutine_threadsafe(shut(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def set(self, path_prefix: str, *behaviours: str) -> None:
        """What requests whose path starts with `path_prefix` get (the longest matching prefix decides), one
        behaviour per request in turn; the last one stays."""
        for b in behaviours:
            assert b in BEHAVIOURS or b.isdigit() or b.startswith("delay:"), f"unknown behaviour {b!r}"
        with self._lock:
            self._rules[path_prefix] = list(behaviours)

    def add_token(self, user_id: str) -> str:
        """An access token the fake accepts, as if the user had logged in elsewhere."""
        token = uuid.uuid4().hex
        self._tokens[token] = user_id
        return token

    def seen(self, method: str, path_prefix: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    def messages(self) -> list[dict[str, Any]]:
        return [e for e in self._events if e["type"] == "m.room.message"]

    def _behaviour(self, path: str) -> str:
        with self._lock:
            prefixes = [p for p in self._rules if path.startswith(p)]
            if not prefixes:
                return "ok"
            queue = self._rules[max(prefixes, key=len)]
            return queue.pop(0) if len(queue) > 1 else queue[0]

    # -- the connection: one request, one answer (or none), then close ------------------------------------

    async def _listen(self) -> None:
        self._new_event = asyncio.Condition()
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await _read_request(reader, writer)
            if request is None:
                return
            with self._lock:
                self.requests.append(request)
            behaviour = self._behaviour(request.path)
            if behaviour.startswith("delay:"):
                await asyncio.sleep(float(behaviour.partition(":")[2]))
                behaviour = "ok"
            await self._misbehave(behaviour, request, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client went away, or the server stops
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _misbehave(self, behaviour: str, request: Request, writer: asyncio.StreamWriter) -> None:
        if behaviour in ("hang", "stall"):
            if behaviour == "stall":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"a")
                await writer.drain()
            await asyncio.sleep(3600)  # until the client gives up (or the server stops)
        elif behaviour == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST
            writer.transport.abort()
        elif behaviour == "close":
            pass
        elif behaviour == "garbage":
            writer.write(b"\x00\xffTHIS IS NOT HTTP\r\n\xfe\r\n\r\n")
            await writer.drain()
        elif behaviour == "bad_json":
            await _answer(writer, 200, b"<html>Bad gateway, sort of</html>")
        elif behaviour == "empty_json":
            await _answer(writer, 200, b"{}")
        elif behaviour.isdigit():
            await _answer(writer, int(behaviour), _json({"errcode": "M_UNKNOWN", "error": f"injected {behaviour}"}))
        else:
            status, body = await self._homeserver(request, lose=behaviour == "lose")
            await _answer(writer, status, _json(body))

    # -- "ok": a tiny homeserver ---------------------------------------------------------------------------

    async def _homeserver(self, request: Request, lose: bool) -> tuple[int, Any]:
        path, method, body = request.path, request.method, request.json()
        client = "/_matrix/client/v3"
        if path == "/_matrix/client/versions":
            return 200, {"versions": ["v1.11"]}
        if path == "/_matrix/key/v2/server":
            valid_until = int(time.time() * 1000) + 3_600_000
            return 200, {"server_name": SERVER_NAME, "verify_keys": {"ed25519:a": {"key": "AAAA"}},
                         "old_verify_keys": {}, "valid_until_ts": valid_until, "signatures": {}}
        if path.startswith("/webhook"):
            self.webhooks.append(body)
            return 200, {}
        if path == client + "/login":
            user = body["identifier"]["user"]
            user_id = user if user.startswith("@") else f"@{user}:{SERVER_NAME}"
            token = self.add_token(user_id)
            return 200, {"access_token": token, "user_id": user_id, "device_id": body.get("device_id", "D")}
        user_id = self._tokens.get(request.headers.get("authorization", "").removeprefix("Bearer "))
        if user_id is None:
            return 401, {"errcode": "M_UNKNOWN_TOKEN", "error": "Unknown token"}
        parts = path.removeprefix(client).split("/") + ["", "", "", ""]  # padded: parts[3] may not exist
        if path == client + "/logout":
            self._tokens = {t: u for t, u in self._tokens.items() if t != request.headers["authorization"][7:]}
            return 200, {}
        if path == client + "/account/whoami":
            return 200, {"user_id": user_id}
        if parts[1:3] == ["directory", "room"] and method == "GET":
            room_id = self._aliases.get(unquote(parts[3]))
            return (200, {"room_id": room_id}) if room_id else (404, {"errcode": "M_NOT_FOUND", "error": "No alias"})
        if path == client + "/createRoom":
            room_id = f"!{uuid.uuid4().hex[:8]}:{SERVER_NAME}"
            if body.get("room_alias_name"):
                self._aliases[f"#{body['room_alias_name']}:{SERVER_NAME}"] = room_id
            self._members[room_id] = {user_id}
            return 200, {"room_id": room_id}
        if parts[1] == "join":
            room_id = unquote(parts[2])
            self._members.setdefault(room_id, set()).add(user_id)
            return 200, {"room_id": room_id}
        if parts[1] == "rooms" and parts[3] == "invite":
            return 200, {}
        if parts[1] == "rooms" and parts[3] == "send":
            event = {"event_id": f"${uuid.uuid4().hex}", "type": parts[4], "sender": user_id, "content": body,
                     "room_id": unquote(parts[2])}
            if not lose:
                await self._publish(event)
            return 200, {"event_id": event["event_id"]}
        if path == client + "/sync":
            return 200, await self._sync(user_id, request.query)
        return 404, {"errcode": "M_UNRECOGNIZED", "error": f"the fake does not know {method} {path}"}

    async def _publish(self, event: dict[str, Any]) -> None:
        assert self._new_event is not None
        async with self._new_event:
            self._events.append(event)
            self._new_event.notify_all()

    async def _sync(self, user_id: str, query: dict[str, str]) -> dict[str, Any]:
        """Events after `since` (an index into the one timeline) in rooms the user is in; waits up to `timeout`."""
        assert self._new_event is not None
        since = int(query.get("since", "-1") or -1)
        position = len(self._events) - 1
        if "since" in query:
            async with self._new_event:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._new_event.wait_for(lambda: len(self._events) - 1 > since),
                        int(query.get("timeout", "0")) / 1000,
                    )
            position = len(self._events) - 1
        rooms: dict[str, Any] = {}
        for event in self._events[since + 1 : position + 1]:
            if user_id in self._members.get(event["room_id"], set()):
                timeline = rooms.setdefault(event["room_id"], {"timeline": {"events": []}})
                timeline["timeline"]["events"].append(event)
        return {"next_batch": str(position), "rooms": {"join": rooms}}


def closed_port_url() -> str:
    """A URL where nothing listens: connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


async def _read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Request | None:
    """The request, or None for a TLS handshake (a client told https://), answered like HTTP servers do."""
    first = await reader.readexactly(1)
    if first == b"\x16":  # a TLS handshake record
        writer.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
        await writer.drain()
        return None
    head = first + await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    url = urlsplit(target)
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    return Request(method, url.path, query, headers, body)


async def _answer(writer: asyncio.StreamWriter, status: int, body: bytes) -> None:
    writer.write(
        f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()
