"""Upload bodies through the real channel and site, in-process on a fake clock: streamed into a sink, refused
with 413 as soon as they are too large, and guarded by the descriptor cap and the read timeout. And the
headers media is served with."""

import json
import re
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock, StringTransport

from homeserver.api.client.media import content_disposition, content_type_of
from homeserver.http.admission import AdmissionController, Limits
from homeserver.http.bodies import PROGRESS_BYTES, OpenFiles, StreamedBodyEndpoint
from homeserver.http.routing import Endpoint, Router
from homeserver.http.server import MatrixSite

READ_TIMEOUT_S = 10.0
JSON_LIMIT, UPLOAD_LIMIT = 1024, 200_000


class Sink:
    def __init__(self, files: OpenFiles) -> None:
        self.files = files
        self.data = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.files.give_back()


class UploadHere(StreamedBodyEndpoint):
    method, path = "POST", "/upload"
    max_body_size = UPLOAD_LIMIT

    def __init__(self, files: OpenFiles) -> None:
        self.files = files
        self.sinks: list[Sink] = []

    def open_body(self) -> Sink | None:
        if not self.files.take():
            return None
        self.sinks.append(Sink(self.files))
        return self.sinks[-1]

    async def handle(self, request: Any) -> tuple[int, dict]:
        sink = request.raw.take_body_sink()
        sink.close()
        return 200, {"size": len(sink.data), "held_in_memory": len(request.body)}


class Echo(Endpoint):
    method, path = "POST", "/echo"

    async def handle(self, request: Any) -> tuple[int, dict]:
        return 200, request.json_object()


def make_site(open_files: int = 2) -> Any:
    reactor = MemoryReactorClock()
    router = Router()
    files = OpenFiles(open_files)
    upload = UploadHere(files)
    router.add(upload)
    router.add(Echo())
    admission = AdmissionController(Limits(10, 8, 3, 2), 1000, reactor.seconds, reactor.callLater)

    async def authenticate(token: str) -> None:
        return None

    site = MatrixSite(
        router,
        admission,
        authenticate,
        reactor,
        max_body_size=JSON_LIMIT,
        request_timeout=60,
        read_timeout=READ_TIMEOUT_S,
        idle_timeout=30,
        compress=False,
        x_forwarded=False,
    )
    return SimpleNamespace(reactor=reactor, site=site, upload=upload, files=files)


def connect(env: Any) -> Any:
    channel = env.site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    return SimpleNamespace(channel=channel, transport=transport)


def lost(conn: Any) -> None:
    conn.channel.connectionLost(SimpleNamespace(value=ConnectionError(), check=lambda *a: None))


def answer(conn: Any) -> tuple[int, dict]:
    head, _, body = conn.transport.value().partition(b"\r\n\r\n")
    status = int(re.match(rb"HTTP/1\.1 (\d+)", head).group(1))
    return status, json.loads(body) if body else {}


def head(length: int | None = None, token: bool = True, chunked: bool = False) -> bytes:
    lines = ["POST /upload HTTP/1.1", "Host: x"]
    if token:
        lines.append("Authorization: Bearer t")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    elif length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def test_an_upload_body_is_streamed_to_the_sink_beyond_the_json_limit() -> None:
    env = make_site()
    conn = connect(env)
    body = b"x" * 150_000
    conn.channel.dataReceived(head(len(body)) + body)
    assert answer(conn) == (200, {"size": 150_000, "held_in_memory": 0})
    assert env.upload.sinks[0].closed and env.files.in_use == 0


def test_json_endpoints_keep_their_own_limit() -> None:
    env = make_site()
    conn = connect(env)
    conn.channel.dataReceived(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
    assert answer(conn)[0] == 413


def test_a_declared_length_over_the_limit_is_refused_before_any_body_arrives() -> None:
    env = make_site()
    conn = connect(env)
    conn.channel.dataReceived(head(UPLOAD_LIMIT + 1))
    assert answer(conn)[1]["errcode"] == "M_TOO_LARGE"
    assert conn.transport.disconnecting and not env.upload.sinks


def test_a_chunked_body_is_refused_once_it_passes_the_limit() -> None:
    env = make_site()
    conn = connect(env)
    conn.channel.dataReceived(head(chunked=True) + chunk(b"y" * 150_000))
    assert conn.transport.value() == b""
    conn.channel.dataReceived(chunk(b"y" * 60_000))
    assert answer(conn)[1]["errcode"] == "M_TOO_LARGE"
    assert env.upload.sinks[0].closed and env.files.in_use == 0  # what arrived is discarded


def test_a_client_expecting_100_continue_is_not_asked_for_a_body_it_was_refused() -> None:
    env = make_site()
    refused, accepted = connect(env), connect(env)
    refused.channel.dataReceived(head(UPLOAD_LIMIT + 1)[:-2] + b"Expect: 100-continue\r\n\r\n")
    assert b"100 Continue" not in refused.transport.value() and answer(refused)[0] == 413
    accepted.channel.dataReceived(head(3)[:-2] + b"Expect: 100-continue\r\n\r\n")
    assert accepted.transport.value() == b"HTTP/1.1 100 Continue\r\n\r\n"


def test_a_disk_that_cannot_take_the_upload_gets_an_answer() -> None:
    env = make_site()
    conn = connect(env)
    conn.channel.dataReceived(head(100))

    def full(data: bytes) -> None:
        raise OSError(28, "No space left on device")

    env.upload.sinks[0].write = full
    conn.channel.dataReceived(b"x" * 100)
    assert answer(conn) == (500, {"errcode": "M_UNKNOWN", "error": "The server cannot store uploads right now"})
    assert env.upload.sinks[0].closed and env.files.in_use == 0


def test_an_upload_without_any_token_is_refused_before_its_body() -> None:
    env = make_site()
    conn = connect(env)
    conn.channel.dataReceived(head(100_000, token=False))
    assert answer(conn) == (401, {"errcode": "M_MISSING_TOKEN", "error": "Missing access token."})
    assert not env.upload.sinks
    query = connect(env)  # a token in the query string counts
    query.channel.dataReceived(b"POST /upload?access_token=t HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
    assert answer(query)[0] == 200


def test_uploads_beyond_the_open_file_cap_get_503_with_retry_after() -> None:
    env = make_site(open_files=1)
    first, second = connect(env), connect(env)
    first.channel.dataReceived(head(10) + b"12345")
    second.channel.dataReceived(head(10))
    status, body = answer(second)
    assert (status, body["errcode"]) == (503, "M_LIMIT_EXCEEDED")
    assert b"Retry-After: " in second.transport.value()
    first.channel.dataReceived(b"67890")
    assert answer(first)[0] == 200 and env.files.in_use == 0


def test_a_client_that_goes_away_mid_upload_leaves_nothing_open() -> None:
    env = make_site()
    conn = connect(env)
    conn.channel.dataReceived(head(100_000) + b"z" * 1000)
    assert env.files.in_use == 1
    lost(conn)
    assert env.upload.sinks[0].closed and env.files.in_use == 0


def test_a_steady_upload_may_take_longer_than_read_timeout_but_a_trickle_may_not() -> None:
    env = make_site()
    steady = connect(env)
    steady.channel.dataReceived(head(UPLOAD_LIMIT))
    for _ in range(3):  # 30 s in all, a read timeout's worth of bytes every 9 s
        env.reactor.advance(READ_TIMEOUT_S - 1)
        steady.channel.dataReceived(b"s" * PROGRESS_BYTES)
    assert not steady.transport.disconnecting
    trickle = connect(env)
    trickle.channel.dataReceived(head(UPLOAD_LIMIT))
    for _ in range(int(READ_TIMEOUT_S)):
        env.reactor.advance(1)
        trickle.channel.dataReceived(b"t" * 100)
    assert trickle.transport.disconnecting
    lost(trickle)  # what the reactor does once the aborted socket is closed
    assert env.upload.sinks[1].closed


@pytest.mark.parametrize(
    "content_type, filename, header",
    [
        ("image/png", "cat.png", 'inline; filename="cat.png"'),
        ("image/PNG; charset=x", None, "inline"),
        ("text/html", "page.html", 'attachment; filename="page.html"'),
        ("image/svg+xml", "x.svg", 'attachment; filename="x.svg"'),
        ("application/pdf", "résumé.pdf", "attachment; filename*=utf-8''r%C3%A9sum%C3%A9.pdf"),
        ("text/plain", 'a"b\r\nSet-Cookie: x', "inline; filename*=utf-8''a%22b%0D%0ASet-Cookie%3A%20x"),
        ("text/plain", "../../etc/passwd", "inline; filename*=utf-8''..%2F..%2Fetc%2Fpasswd"),
    ],
)
def test_content_disposition_is_inline_only_for_safe_types_and_encodes_names(
    content_type: str, filename: str | None, header: str
) -> None:
    assert content_disposition(content_type, filename) == header


@pytest.mark.parametrize(
    "header, stored",
    [
        ("image/jpeg", "image/jpeg"),
        ("text/plain; charset=utf-8", "text/plain; charset=utf-8"),
        (None, "application/octet-stream"),
        ("nonsense", "application/octet-stream"),
        ("text/html\r\nX-Evil: 1", "application/octet-stream"),
    ],
)
def test_upload_content_types_are_kept_only_when_well_formed(header: str | None, stored: str) -> None:
    assert content_type_of(header) == stored
