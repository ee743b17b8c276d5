"""GET /_matrix/federation/v1/media/download/{mediaId} and /media/thumbnail/{mediaId}: other servers
fetching our media (Matrix 1.11 authenticated media).

The answer is multipart/mixed: a JSON part (`{}`, no metadata defined yet) then the file itself (never a
redirect). A large file is not read into memory: the multipart framing is a few hundred bytes before and
after it, read around the file as it is streamed (FileResponse), with the same cap on open files as the
client downloads.
"""

import secrets

from homeserver.api.client.media import content_disposition, serve_file
from homeserver.api.federation.base import FederationEndpoint
from homeserver.core.errors import MatrixError
from homeserver.handlers.media import MAX_WAIT_MS, Content, MediaHandler
from homeserver.http.bodies import OpenFiles
from homeserver.http.request import ApiRequest
from homeserver.http.responses import FileResponse, Response
from homeserver.http.routing import Endpoint

DEFAULT_WAIT_MS = 20_000


def multipart_parts(content: Content, filename: str | None) -> tuple[str, bytes, bytes]:
    """(Content-Type of the answer, the bytes before the file, the bytes after it)."""
    boundary = secrets.token_hex(16)
    head = (
        f"\r\n--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{boundary}\r\n"
        f"Content-Type: {content.content_type}\r\n"
        f"Content-Disposition: {content_disposition(content.content_type, filename)}\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return f"multipart/mixed; boundary={boundary}", head, tail


class _Serve(FederationEndpoint):
    method = "GET"

    def __init__(self, media: MediaHandler, files: OpenFiles, server_name: str) -> None:
        self._media = media
        self._files = files
        self._server_name = server_name

    def deadline(self, request: ApiRequest, default: float) -> float:
        return default + MAX_WAIT_MS / 1000

    def _serve(self, content: Content, filename: str | None) -> Response | FileResponse:
        content_type, head, tail = multipart_parts(content, filename)
        return serve_file(self._files, content, content_type, frame=(head, tail))


class Download(_Serve):
    path = "/_matrix/federation/v1/media/download/{media_id}"

    async def on_request(self, request: ApiRequest, origin: str, media_id: str) -> Response | FileResponse:
        timeout_ms = request.query_int("timeout_ms", DEFAULT_WAIT_MS)
        content = await self._media.content(self._server_name, media_id, legacy=False, timeout_ms=timeout_ms)
        return self._serve(content, content.upload_name)


class Thumbnail(_Serve):
    path = "/_matrix/federation/v1/media/thumbnail/{media_id}"

    async def on_request(self, request: ApiRequest, origin: str, media_id: str) -> Response | FileResponse:
        timeout_ms = request.query_int("timeout_ms", DEFAULT_WAIT_MS)
        if request.query_param("width") is None or request.query_param("height") is None:
            raise MatrixError(400, "M_MISSING_PARAM", "width and height are required")
        width = request.query_int("width", 0, minimum=1)
        height = request.query_int("height", 0, minimum=1)
        method = request.query_param("method", "scale")
        content = await self._media.thumbnail(
            self._server_name, media_id, width, height, method, legacy=False, timeout_ms=timeout_ms
        )
        return self._serve(content, "thumbnail." + content.content_type.split(";")[0].rpartition("/")[2])


def endpoints(media: MediaHandler, server_name: str, max_open_files: int) -> list[Endpoint]:
    files = OpenFiles(max_open_files)
    return [Download(media, files, server_name), Thumbnail(media, files, server_name)]
