"""Remote media over federation with a real Synapse: our users download Synapse's media (authenticated
federation v1 media, multipart), thumbnails of remote images are made here, Synapse's users download ours
(Synapse fetches it from our /_matrix/federation/v1/media endpoints), the cache answers while Synapse is
down, and size limits, unknown media, quarantine and purge --remote-only behave."""

import email
import io
import os
import ssl
import threading
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.client import Client, RoomClient, assert_error, new_room_user, ok
from tests.federation_servers import FederatingServer, federating_server, self_signed_cert
from tests.integration.test_cli import homeserver
from tests.scripted_peer import ScriptedPeer
from tests.server import free_port
from tests.synapse import SynapseProcess

V1 = "/_matrix/client/v1/media"
UPLOAD = "/_matrix/media/v3/upload"


def upload(client: Client, data: bytes, content_type: str, filename: str = "") -> str:
    """Upload to the client's server; returns the media id."""
    params = {"filename": filename} if filename else None
    response = client.request("POST", UPLOAD, data=data, headers={"Content-Type": content_type}, params=params)
    return ok(response)["content_uri"].rpartition("/")[2]


def jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 90)).save(out, "JPEG")
    return out.getvalue()


def image_size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


def multipart(response: requests.Response) -> list[email.message.Message]:
    """The parts of a multipart/mixed answer."""
    head = f"Content-Type: {response.headers['Content-Type']}\r\n\r\n".encode()
    message = email.message_from_bytes(head + response.content)
    assert message.is_multipart()
    return list(message.get_payload())


@contextmanager
def legacy_only_server(directory: Path, files: dict[str, bytes]) -> Iterator[str]:
    """A server that predates federation media: 404 M_UNRECOGNIZED there, files on the legacy path,
    sent without a Content-Length (read to the end of the connection). Yields its server name."""
    port = free_port()
    name = f"127.0.0.1:{port}"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = urllib.parse.unquote(self.path.split("?")[0])
            media_id = path.rpartition("/")[2]
            if path.startswith(f"/_matrix/media/v3/download/{name}/") and media_id in files:
                self.send_response(200)
                self.send_header("Content-Type", "text/csv")
                self.send_header("Content-Disposition", "attachment; filename*=utf-8''caf%C3%A9.csv")
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(files[media_id])
                self.close_connection = True
                return
            known = self.path.startswith("/_matrix/media/v3/")
            body = b'{"errcode": "M_NOT_FOUND"}' if known else b'{"errcode": "M_UNRECOGNIZED"}'
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    cert, key = self_signed_cert(directory)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield name
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def ours(fed_server: FederatingServer) -> RoomClient:
    return new_room_user(fed_server.url)


@pytest.fixture(scope="module")
def theirs(synapse: SynapseProcess) -> RoomClient:
    return synapse.register()


def test_synapse_media_is_downloaded_byte_for_byte(synapse: SynapseProcess, ours: RoomClient, theirs: RoomClient):
    for size in (10, 3 * 1024 * 1024 + 5):  # read whole, and streamed in many chunks
        data = os.urandom(size)
        media_id = upload(theirs, data, "application/pdf", "report.pdf")
        response = ours.get(f"{V1}/download/{synapse.server_name}/{media_id}")
        assert response.status_code == 200, response.text
        assert response.content == data
        assert response.headers["Content-Type"] == "application/pdf"
        assert response.headers["Content-Disposition"] == 'attachment; filename="report.pdf"'


def test_concurrent_downloads_of_one_item_share_one_fetch(
    fed_server: FederatingServer, synapse: SynapseProcess, ours: RoomClient, theirs: RoomClient
):
    data = os.urandom(2 * 1024 * 1024)
    media_id = upload(theirs, data, "application/octet-stream")
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: ours.get(f"{V1}/download/{synapse.server_name}/{media_id}"), range(6)))
    assert all(a.status_code == 200 and a.content == data for a in answers)
    assert fed_server.log().count(f"cached remote media mxc://{synapse.server_name}/{media_id}") == 1


def test_thumbnail_of_a_remote_image_is_made_here(synapse: SynapseProcess, ours: RoomClient, theirs: RoomClient):
    media_id = upload(theirs, jpeg(500, 400), "image/jpeg", "photo.jpg")
    crop = ours.get(f"{V1}/thumbnail/{synapse.server_name}/{media_id}?width=32&height=32&method=crop")
    assert crop.status_code == 200, crop.text
    assert image_size(crop.content) == (32, 32)
    scale = ours.get(f"{V1}/thumbnail/{synapse.server_name}/{media_id}?width=320&height=240&method=scale")
    assert scale.status_code == 200
    assert image_size(scale.content) == (300, 240)


def test_synapse_users_download_our_media(
    fed_server: FederatingServer, synapse: SynapseProcess, ours: RoomClient, theirs: RoomClient
):
    for size in (0, 1000, 2 * 1024 * 1024 + 3):  # empty, sent whole, streamed around the multipart framing
        data = os.urandom(size)
        media_id = upload(ours, data, "application/zip", "notes.zip")
        response = theirs.get(f"{V1}/download/{fed_server.server_name}/{media_id}")
        assert response.status_code == 200, response.text
        assert response.content == data
        assert response.headers["Content-Type"] == "application/zip"
        assert "notes.zip" in response.headers["Content-Disposition"]


def test_synapse_users_get_thumbnails_of_our_images(
    fed_server: FederatingServer, synapse: SynapseProcess, ours: RoomClient, theirs: RoomClient
):
    media_id = upload(ours, jpeg(640, 480), "image/jpeg")
    path = f"{V1}/thumbnail/{fed_server.server_name}/{media_id}?width=96&height=96&method=crop"
    response = theirs.get(path)
    assert response.status_code == 200, response.text
    assert image_size(response.content) == (96, 96)


def test_federation_media_needs_a_signed_request(fed_server: FederatingServer, ours: RoomClient):
    media_id = upload(ours, b"private", "text/plain")
    url = f"{fed_server.federation_url}/_matrix/federation/v1/media/download/{media_id}"
    response = requests.get(url, verify=str(fed_server.cert_path), timeout=30)
    assert_error(response, 401, "M_UNAUTHORIZED")


def test_unknown_remote_media_is_not_found(synapse: SynapseProcess, ours: RoomClient):
    assert_error(ours.get(f"{V1}/download/{synapse.server_name}/doesNotExist"), 404, "M_NOT_FOUND")


def test_remote_media_is_not_served_on_the_frozen_legacy_endpoints(
    synapse: SynapseProcess, ours: RoomClient, theirs: RoomClient
):
    media_id = upload(theirs, b"hello", "text/plain")
    assert_error(ours.get(f"/_matrix/media/v3/download/{synapse.server_name}/{media_id}"), 404, "M_NOT_FOUND")
    assert ours.get(f"{V1}/download/{synapse.server_name}/{media_id}").content == b"hello"
    assert_error(ours.get(f"/_matrix/media/v3/download/{synapse.server_name}/{media_id}"), 404, "M_NOT_FOUND")


def test_cached_copy_answers_while_synapse_is_down_until_purged(
    fed_server: FederatingServer, synapse: SynapseProcess, ours: RoomClient, theirs: RoomClient
):
    remote = upload(theirs, os.urandom(50_000), "application/octet-stream")
    data = ours.get(f"{V1}/download/{synapse.server_name}/{remote}").content
    local_data = os.urandom(4000)
    local = upload(ours, local_data, "application/octet-stream")
    content = Path(fed_server.directory) / "data" / "media_store" / "content"
    synapse.stop()
    try:
        assert ours.get(f"{V1}/download/{synapse.server_name}/{remote}").content == data
        purge = homeserver(
            "admin", "purge-media", "--before", "2999-01-01", "--remote-only", "-c", str(fed_server.config_path)
        )
        assert purge.returncode == 0, purge.stderr
        assert "item(s) of remote media" in purge.stdout and "deleted 0 " not in purge.stdout
        assert not any(p.read_bytes() == data for p in content.rglob("*") if p.is_file())
        assert ours.get(f"{V1}/download/{fed_server.server_name}/{local}").content == local_data
        # Not cached any more, and the origin is down.
        assert_error(ours.get(f"{V1}/download/{synapse.server_name}/{remote}"), 502, "M_UNKNOWN")
    finally:
        synapse.start()
    assert ours.get(f"{V1}/download/{synapse.server_name}/{remote}").content == data


def test_quarantined_remote_media_answers_404(
    fed_server: FederatingServer, synapse: SynapseProcess, ours: RoomClient, theirs: RoomClient
):
    media_id = upload(theirs, b"something bad", "text/plain")
    assert ours.get(f"{V1}/download/{synapse.server_name}/{media_id}").status_code == 200
    result = homeserver(
        "admin", "quarantine-media", f"mxc://{synapse.server_name}/{media_id}", "-c", str(fed_server.config_path)
    )
    assert result.returncode == 0, result.stderr
    assert_error(ours.get(f"{V1}/download/{synapse.server_name}/{media_id}"), 404, "M_NOT_FOUND")


def test_remote_media_over_our_limit_is_refused(
    backend: str, tmp_path: Path, synapse: SynapseProcess, theirs: RoomClient
):
    small, big = os.urandom(5000), os.urandom(20_000)
    small_id = upload(theirs, small, "application/octet-stream")
    big_id = upload(theirs, big, "application/octet-stream")
    with federating_server(backend, tmp_path, {"media": {"max_upload_size": "10K"}}) as server:
        user = new_room_user(server.url)
        assert_error(user.get(f"{V1}/download/{synapse.server_name}/{big_id}"), 502, "M_TOO_LARGE")
        assert_error(user.get(f"{V1}/download/{synapse.server_name}/{big_id}"), 502, "M_TOO_LARGE")  # not cached
        assert user.get(f"{V1}/download/{synapse.server_name}/{small_id}").content == small
        # A server in a blacklisted range is never contacted.
        assert_error(user.get(f"{V1}/download/10.1.2.3:8448/abc"), 502, "M_UNKNOWN")


def test_servers_without_federation_media_are_asked_on_the_legacy_path(tmp_path: Path, ours: RoomClient):
    data = b"a,b\n" * 5000
    with legacy_only_server(tmp_path, {"sheet": data}) as name:
        response = ours.get(f"{V1}/download/{name}/sheet")
        assert response.status_code == 200, response.text
        assert response.content == data
        assert response.headers["Content-Type"] == "text/csv"
        assert response.headers["Content-Disposition"] == "inline; filename*=utf-8''caf%C3%A9.csv"
        assert_error(ours.get(f"{V1}/download/{name}/other"), 404, "M_NOT_FOUND")


def test_our_federation_endpoints_answer_multipart(tmp_path: Path, fed_server: FederatingServer, ours: RoomClient):
    data = os.urandom(300_000)
    media_id = upload(ours, data, "application/octet-stream", "blob.bin")
    image_id = upload(ours, jpeg(640, 480), "image/jpeg")
    with ScriptedPeer(tmp_path) as peer:
        download = peer.request(fed_server, "GET", f"/_matrix/federation/v1/media/download/{media_id}")
        assert download.status_code == 200, download.text
        meta, file = multipart(download)
        assert meta.get_content_type() == "application/json" and meta.get_payload() == "{}"
        assert file.get_content_type() == "application/octet-stream"
        assert file.get_payload(decode=True) == data
        path = f"/_matrix/federation/v1/media/thumbnail/{image_id}?width=320&height=240&method=scale"
        thumbnail = peer.request(fed_server, "GET", path)
        assert thumbnail.status_code == 200, thumbnail.text
        _, image = multipart(thumbnail)
        assert image.get_content_type() == "image/jpeg"
        assert image_size(image.get_payload(decode=True)) == (320, 240)
        missing = peer.request(fed_server, "GET", "/_matrix/federation/v1/media/download/nothingHere")
        assert_error(missing, 404, "M_NOT_FOUND")
