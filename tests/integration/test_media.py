"""The media repository through the real server: uploads and downloads byte for byte (also with matrix-nio),
asynchronous uploads, early refusal of oversized bodies, thumbnails of real images, the headers that keep
browsers safe, id validation, the legacy endpoints' freeze, and the operator's purge and quarantine."""

import asyncio
import http.client
import io
import os
import select
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
import yaml
from nio import AsyncClient, DownloadResponse, UploadResponse
from PIL import Image

from tests.client import Client, RoomClient, assert_error, ok
from tests.integration.servers import extra_server
from tests.integration.test_cli import homeserver
from tests.server import ServerProcess

UPLOAD = "/_matrix/media/v3/upload"
V1 = "/_matrix/client/v1/media"
LEGACY = "/_matrix/media/v3"
CSP = (
    "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; "
    "media-src 'self'; object-src 'self';"
)


def upload(client: Client, data: bytes, content_type: str = "application/octet-stream", filename: str = "") -> str:
    params = {"filename": filename} if filename else None
    headers = {"Content-Type": content_type}
    response = client.request("POST", UPLOAD, data=data, headers=headers, params=params)
    uri = ok(response)["content_uri"]
    assert uri.startswith("mxc://localhost/")
    return uri.removeprefix("mxc://localhost/")


def download(client: Client, media_id: str, suffix: str = "", prefix: str = V1, **kwargs: Any) -> requests.Response:
    return client.get(f"{prefix}/download/localhost/{media_id}{suffix}", **kwargs)


def jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (30, 120, 200)).save(out, "JPEG")
    return out.getvalue()


def raw_get(server: ServerProcess, path: str, token: str | None) -> tuple[int, bytes]:
    """A request with the path exactly as written (no client-side normalisation of `..`)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


def test_upload_and_download_round_trip_byte_for_byte(alice: RoomClient) -> None:
    for size in (0, 1000, 3 * 1024 * 1024 + 17):  # empty, read whole, streamed from the file
        data = os.urandom(size)
        media_id = upload(alice, data, "application/pdf", "report.pdf")
        response = download(alice, media_id)
        assert response.status_code == 200
        assert response.content == data
        assert response.headers["Content-Type"] == "application/pdf"
        assert response.headers["Content-Length"] == str(size)


def test_served_media_carries_the_headers_that_keep_browsers_safe(alice: RoomClient) -> None:
    media_id = upload(alice, b"<script>alert(1)</script>", "text/html", "page.html")
    response = download(alice, media_id)
    assert response.headers["Content-Disposition"] == 'attachment; filename="page.html"'
    assert response.headers["Content-Security-Policy"] == CSP
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cross-Origin-Resource-Policy"] == "cross-origin"
    image = upload(alice, jpeg(10, 10), "image/jpeg", "café.jpg")
    response = download(alice, image)
    assert response.headers["Content-Disposition"] == "inline; filename*=utf-8''caf%C3%A9.jpg"
    renamed = download(alice, image, "/other%20name.jpg")
    assert renamed.headers["Content-Disposition"] == 'inline; filename="other name.jpg"'
    assert "Content-Encoding" not in download(alice, media_id, headers={"Accept-Encoding": "gzip"}).headers


def test_downloads_on_the_authenticated_endpoints_need_a_token(alice: RoomClient, anon: Client) -> None:
    media_id = upload(alice, b"private-ish")
    assert_error(download(anon, media_id), 401, "M_MISSING_TOKEN")
    assert_error(anon.get(f"{V1}/thumbnail/localhost/{media_id}?width=32&height=32"), 401, "M_MISSING_TOKEN")
    assert_error(anon.request("POST", UPLOAD, data=b"x"), 401, "M_MISSING_TOKEN")


def test_nio_uploads_and_downloads(server: ServerProcess, alice: RoomClient) -> None:
    data = os.urandom(200_000)

    async def scenario() -> tuple[Any, Any]:
        client = AsyncClient(server.url, alice.user_id)
        client.access_token, client.user_id = alice.access_token, alice.user_id
        try:
            uploaded, _ = await client.upload(
                io.BytesIO(data), content_type="image/png", filename="nio.png", filesize=len(data)
            )
            assert isinstance(uploaded, UploadResponse), uploaded
            downloaded = await client.download(mxc=uploaded.content_uri)
            return uploaded, downloaded
        finally:
            await client.close()

    uploaded, downloaded = asyncio.run(scenario())
    assert isinstance(downloaded, DownloadResponse), downloaded
    assert downloaded.body == data
    assert (downloaded.content_type, downloaded.filename) == ("image/png", "nio.png")


def test_asynchronous_upload_with_create_then_put(alice: RoomClient, bob: RoomClient) -> None:
    created = ok(alice.post("/_matrix/media/v1/create", {}))
    media_id = created["content_uri"].removeprefix("mxc://localhost/")
    assert created["unused_expires_at"] > 0
    assert_error(download(alice, media_id, params={"timeout_ms": "0"}), 504, "M_NOT_YET_UPLOADED")
    path = f"{LEGACY}/upload/localhost/{media_id}"
    assert_error(bob.request("PUT", path, data=b"not yours"), 403, "M_FORBIDDEN")
    assert ok(alice.request("PUT", path, data=b"arrived later", headers={"Content-Type": "text/plain"})) == {}
    assert download(alice, media_id).content == b"arrived later"
    assert_error(alice.request("PUT", path, data=b"again"), 409, "M_CANNOT_OVERWRITE_MEDIA")
    assert_error(alice.request("PUT", f"{LEGACY}/upload/localhost/neverCreated", data=b"x"), 404, "M_NOT_FOUND")


def test_a_download_waits_for_a_pending_upload(alice: RoomClient) -> None:
    media_id = ok(alice.post("/_matrix/media/v1/create", {}))["content_uri"].removeprefix("mxc://localhost/")
    reader = Client(alice.base_url, alice.access_token)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(download, reader, media_id, params={"timeout_ms": "10000"})
        time.sleep(0.5)
        ok(alice.request("PUT", f"{LEGACY}/upload/localhost/{media_id}", data=b"worth the wait"))
        assert waiting.result().content == b"worth the wait"


def test_an_oversized_upload_is_refused_before_the_body_is_sent(server: ServerProcess, alice: RoomClient) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(
            f"POST {UPLOAD} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice.access_token}\r\n"
            f"Content-Length: {100 * 1024 * 1024}\r\n\r\n".encode()
            + b"x" * 65536
        )
        answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b'"M_TOO_LARGE"' in answer


def test_media_config_tells_the_upload_limit(alice: RoomClient) -> None:
    for path in (f"{V1}/config", f"{LEGACY}/config"):
        assert ok(alice.get(path)) == {"m.upload.size": 50 * 1024 * 1024}


def test_clients_are_told_to_use_authenticated_media(anon: Client) -> None:
    assert ok(anon.get("/_matrix/client/versions"))["unstable_features"]["org.matrix.msc3916.stable"] is True


def test_url_previews_are_not_implemented(alice: RoomClient) -> None:
    assert_error(alice.get(f"{V1}/preview_url", params={"url": "https://matrix.org"}), 404, "M_UNRECOGNIZED")


def test_thumbnails_of_a_real_image_have_the_right_size(alice: RoomClient) -> None:
    media_id = upload(alice, jpeg(1000, 700), "image/jpeg", "photo.jpg")
    for query, size in [
        ("width=32&height=32&method=crop", (32, 32)),
        ("width=96&height=96&method=crop", (96, 96)),
        ("width=320&height=240&method=scale", (320, 224)),
        ("width=600&height=400&method=scale", (640, 448)),
        ("width=2000&height=2000&method=scale", (1000, 700)),  # bigger than any thumbnail: the original
    ]:
        response = alice.get(f"{V1}/thumbnail/localhost/{media_id}?{query}")
        assert response.status_code == 200, response.text
        assert Image.open(io.BytesIO(response.content)).size == size, query
        assert response.headers["Content-Type"] == "image/jpeg"
        assert response.headers["Content-Disposition"].startswith("inline")
    text = upload(alice, b"just text", "text/plain")
    assert_error(alice.get(f"{V1}/thumbnail/localhost/{text}?width=32&height=32"), 400)
    assert_error(alice.get(f"{V1}/thumbnail/localhost/{media_id}?width=32"), 400, "M_MISSING_PARAM")
    assert_error(alice.get(f"{V1}/thumbnail/localhost/{media_id}?width=-3&height=3"), 400, "M_INVALID_PARAM")


def test_ids_and_server_names_that_could_walk_a_path_are_refused(server: ServerProcess, alice: RoomClient) -> None:
    token = alice.access_token
    for path in [
        f"{V1}/download/localhost/..%2F..%2Fetc%2Fpasswd",
        f"{V1}/download/localhost/..",
        f"{V1}/download/localhost/abc.def",
        f"{V1}/download/..%2F..%2Fetc/passwd",
        f"{V1}/download/bad_server!/abc",
        f"{V1}/thumbnail/localhost/..%2Fx?width=32&height=32",
        f"{LEGACY}/download/localhost/%2E%2E",
    ]:
        status, body = raw_get(server, path, token)
        assert (status, b'"M_INVALID_PARAM"' in body) == (400, True), (path, status, body)
    assert raw_get(server, f"{V1}/download/localhost/../../../etc/passwd", token)[0] == 404
    # Another server's media is fetched over federation: a server in a blacklisted range is never reached.
    assert_error(alice.get(f"{V1}/download/10.0.0.1:8448/abc"), 502, "M_UNKNOWN")


def test_the_legacy_endpoints_are_frozen_for_new_uploads(alice: RoomClient, anon: Client) -> None:
    media_id = upload(alice, jpeg(100, 100), "image/jpeg")
    assert_error(download(anon, media_id, prefix=LEGACY), 404, "M_NOT_FOUND")
    assert_error(anon.get(f"{LEGACY}/thumbnail/localhost/{media_id}?width=32&height=32"), 404, "M_NOT_FOUND")
    assert download(alice, media_id).status_code == 200


def test_media_from_before_the_freeze_stays_on_the_legacy_endpoints(backend: str, tmp_path: Path) -> None:
    with extra_server(backend, tmp_path, {"media": {"freeze_legacy_media": False, "max_upload_size": "1M"}}) as hs:
        user = RoomClient(hs.url).register()
        anon = Client(hs.url)
        old = upload(user, jpeg(400, 300), "image/jpeg")
        assert download(anon, old, prefix=LEGACY).content == download(user, old).content
        assert anon.get(f"{LEGACY}/thumbnail/localhost/{old}?width=32&height=32").status_code == 200
        _assert_chunked_upload_is_cut_off(hs, user.access_token, limit=1024 * 1024)
        hs.stop()
        hs.config["media"]["freeze_legacy_media"] = True
        hs.config_path.write_text(yaml.safe_dump(hs.config))
        hs.start()
        new = upload(user, b"after the freeze")
        assert download(anon, old, prefix=LEGACY).status_code == 200
        assert_error(download(anon, new, prefix=LEGACY), 404, "M_NOT_FOUND")
        assert download(user, new).content == b"after the freeze"


def _assert_chunked_upload_is_cut_off(server: ServerProcess, token: str, limit: int) -> None:
    """A chunked body (no length up front) is refused as soon as what arrived passes the limit."""
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(
            f"POST {UPLOAD} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        chunk = b"%x\r\n" % 65536 + b"c" * 65536 + b"\r\n"
        while sent < 4 * limit and not select.select([s], [], [], 0.01)[0]:
            try:
                s.sendall(chunk)
            except OSError:
                break  # the server answered and closed while we were still sending
            sent += 65536
        answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert limit < sent + 65536 < 2 * limit


def test_large_downloads_are_capped_and_a_stalled_one_is_cut_off(backend: str, tmp_path: Path) -> None:
    # fd_reserve 16: at most 8 files held open for clients; a client that stops reading for a second is dropped.
    overrides = {"admission_control": {"fd_reserve": 16, "idle_timeout": 1.0}}
    with extra_server(backend, tmp_path, overrides) as hs:
        user = RoomClient(hs.url).register()
        data = os.urandom(10 * 1024 * 1024)
        media_id = upload(user, data)
        stalled = []
        for _ in range(8):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # reads nothing, and buffers little
            s.connect(("127.0.0.1", hs.port))
            s.sendall(
                f"GET {V1}/download/localhost/{media_id} HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {user.access_token}\r\n\r\n".encode()
            )
            stalled.append(s)
        time.sleep(0.3)
        refused = assert_error(download(user, media_id), 503, "M_LIMIT_EXCEEDED")
        assert "downloads" in refused["error"]
        time.sleep(2.5)  # the stalled transfers are cut off, and their files closed
        assert download(user, media_id).content == data
        for s in stalled:
            s.close()


def test_purge_media_dry_run_then_for_real(server: ServerProcess, alice: RoomClient) -> None:
    kept_elsewhere = Path(server.directory) / "data" / "media_store" / "content"
    media_id = upload(alice, os.urandom(5000), "application/octet-stream")
    image = upload(alice, jpeg(500, 500), "image/jpeg")
    ok_thumb = alice.get(f"{V1}/thumbnail/localhost/{image}?width=32&height=32&method=crop")
    assert ok_thumb.status_code == 200
    cfg = str(server.config_path)
    dry = homeserver("admin", "purge-media", "--before", "2999-01-01", "--dry-run", "-c", cfg)
    assert dry.returncode == 0, dry.stderr
    assert "would delete" in dry.stdout
    assert download(alice, media_id).status_code == 200
    files_before = sum(1 for p in kept_elsewhere.rglob("*") if p.is_file())
    assert files_before >= 3
    real = homeserver("admin", "purge-media", "--before", "2999-01-01", "--batch-size", "2", "-c", cfg)
    assert real.returncode == 0, real.stderr
    assert "deleted" in real.stdout and "file(s) removed" in real.stdout
    assert "... deleted" in real.stderr  # progress, batch by batch
    assert_error(download(alice, media_id), 404, "M_NOT_FOUND")
    assert_error(alice.get(f"{V1}/thumbnail/localhost/{image}?width=32&height=32&method=crop"), 404, "M_NOT_FOUND")
    assert sum(1 for p in kept_elsewhere.rglob("*") if p.is_file()) == 0
    nothing_old = homeserver("admin", "purge-media", "--before", "2000-01-01", "--remote-only", "-c", cfg)
    assert nothing_old.returncode == 0 and "deleted 0 item(s) of remote media" in nothing_old.stdout


def test_quarantined_media_answers_404(server: ServerProcess, alice: RoomClient) -> None:
    media_id = upload(alice, b"something bad")
    result = homeserver("admin", "quarantine-media", f"mxc://localhost/{media_id}", "-c", str(server.config_path))
    assert result.returncode == 0, result.stderr
    assert_error(download(alice, media_id), 404, "M_NOT_FOUND")
    missing = homeserver("admin", "quarantine-media", "mxc://localhost/nothingHere", "-c", str(server.config_path))
    assert missing.returncode == 2 and "not found" in missing.stderr.lower()


def test_generate_config_keeps_media_in_the_data_dir(tmp_path: Path) -> None:
    result = homeserver("generate-config", "--server-name", "chat.example.org", "--data-dir", "state", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load((tmp_path / "homeserver.yaml").read_text())
    assert config["media"]["media_store_path"] == "state/media_store"
