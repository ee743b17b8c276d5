"""The content repository: uploads (POST /_matrix/media/v3/upload, POST /_matrix/media/v1/create and
PUT /_matrix/media/v3/upload/{serverName}/{mediaId}), downloads, thumbnails and config, on the
authenticated /_matrix/client/v1/media endpoints and the legacy unauthenticated /_matrix/media/v3 ones.

Served bytes carry the headers that keep a browser from running them: a Content-Disposition that is
`inline` only for the spec's list of types safe to render, `attachment` otherwise; nosniff; and a
sandboxing Content-Security-Policy. preview_url is not implemented, so it answers 404 M_UNRECOGNIZED.
"""

import logging
import re
from typing import Any, BinaryIO, cast
from urllib.parse import quote

from homeserver.core.errors import LimitExceeded, MatrixError
from homeserver.handlers.media import DEFAULT_CONTENT_TYPE, MAX_WAIT_MS, Content, MediaHandler
from homeserver.http.bodies import BodySink, OpenFiles, StreamedBodyEndpoint
from homeserver.http.request import ApiRequest, optional_field
from homeserver.http.responses import FileResponse, Response
from homeserver.http.routing import Endpoint

logger = logging.getLogger(__name__)

# The spec's "Serving inline content": types a browser only ever renders as what they claim to be.
INLINE_TYPES = frozenset(
    {
        "text/css",
        "text/plain",
        "text/csv",
        "application/json",
        "application/ld+json",
        "image/jpeg",
        "image/gif",
        "image/png",
        "image/apng",
        "image/webp",
        "image/avif",
        "video/mp4",
        "video/webm",
        "video/ogg",
        "video/quicktime",
        "audio/mp4",
        "audio/webm",
        "audio/aac",
        "audio/mpeg",
        "audio/ogg",
        "audio/wave",
        "audio/wav",
        "audio/x-wav",
        "audio/x-pn-wav",
        "audio/flac",
        "audio/x-flac",
    }
)
CONTENT_SECURITY_POLICY = (
    "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; "
    "media-src 'self'; object-src 'self';"
)
SMALL_FILE_BYTES = 256 * 1024  # read whole and sent at once; larger files are streamed, holding a descriptor
MAX_FILENAME_LENGTH = 1000
DEFAULT_WAIT_MS = 20_000
_TOKEN = r"[A-Za-z0-9!#$&^_.+-]+"
_CONTENT_TYPE = re.compile(rf"^{_TOKEN}/{_TOKEN}(\s*;\s*{_TOKEN}=({_TOKEN}|\"[^\"\\\x00-\x1f\x7f]*\"))*$")
# File names sent as a plain quoted string; anything else goes in RFC 5987's filename*=utf-8''...
_PLAIN_FILENAME = re.compile(r"^[A-Za-z0-9 !#$&'()*+,.=@^_`{}~\[\]-]+$")
_ATTR_CHARS = "!#$&+-.^_`|~"  # RFC 5987 attr-char besides letters and digits


def content_type_of(header: str | None) -> str:
    """The type an upload is stored and served with: its Content-Type if well-formed, else the default."""
    if header and len(header) <= 255 and _CONTENT_TYPE.match(header.strip()):
        return header.strip()
    return DEFAULT_CONTENT_TYPE


def content_disposition(content_type: str, filename: str | None, inline_allowed: bool = True) -> str:
    """RFC 6266: `inline` for the types safe to render, `attachment` otherwise, with the file name."""
    base = content_type.split(";", 1)[0].strip().lower()
    kind = "inline" if inline_allowed and base in INLINE_TYPES else "attachment"
    if not filename:
        return kind
    if _PLAIN_FILENAME.match(filename):
        return f'{kind}; filename="{filename}"'
    return f"{kind}; filename*=utf-8''{quote(filename, safe=_ATTR_CHARS)}"


def media_headers(content_type: str, filename: str | None) -> dict[str, str]:
    return {
        "Content-Disposition": content_disposition(content_type, filename),
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Cross-Origin-Resource-Policy": "cross-origin",
        "Cache-Control": "private, max-age=86400",  # an mxc:// URI's content never changes
    }


def _upload_name(request: ApiRequest) -> str | None:
    name = optional_field({"filename": request.query_param("filename")}, "filename")
    if name and len(name) > MAX_FILENAME_LENGTH:
        raise MatrixError(400, "M_INVALID_PARAM", f"filename may be at most {MAX_FILENAME_LENGTH} characters")
    return name or None


class _Upload(StreamedBodyEndpoint):
    def __init__(self, media: MediaHandler, files: OpenFiles) -> None:
        self._media = media
        self._files = files
        self.max_body_size = media.config.max_upload_size

    def open_body(self) -> BodySink | None:
        if not self._files.take():
            return None
        try:
            return self._media.incoming(self._files.give_back)
        except OSError:
            logger.exception("cannot create a temporary file for an upload")
            self._files.give_back()
            return None


class Upload(_Upload):
    method, paths = "POST", ("/_matrix/media/v3/upload", "/_matrix/media/r0/upload")

    async def handle(self, request: ApiRequest) -> tuple[int, dict]:
        incoming = request.raw.take_body_sink()
        try:
            requester = await request.require_user()
            name = _upload_name(request)
            uri = await self._media.upload(requester, incoming, content_type_of(request.header("Content-Type")), name)
        finally:
            incoming.close()
        return 200, {"content_uri": uri}


class UploadTo(_Upload):
    method, paths = "PUT", ("/_matrix/media/v3/upload/{server_name}/{media_id}",)

    async def handle(self, request: ApiRequest, server_name: str, media_id: str) -> tuple[int, dict]:
        incoming = request.raw.take_body_sink()
        try:
            requester = await request.require_user()
            name = _upload_name(request)
            content_type = content_type_of(request.header("Content-Type"))
            await self._media.upload_to(requester, server_name, media_id, incoming, content_type, name)
        finally:
            incoming.close()
        return 200, {}


class Create(Endpoint):
    method, path = "POST", "/_matrix/media/v1/create"

    def __init__(self, media: MediaHandler) -> None:
        self._media = media

    async def handle(self, request: ApiRequest) -> tuple[int, dict]:
        requester = await request.require_user()
        uri, expires = await self._media.create(requester)
        return 200, {"content_uri": uri, "unused_expires_at": expires}


class _Serve(Endpoint):
    """A download or thumbnail, on the authenticated endpoint or (`legacy`) the unauthenticated one."""

    def __init__(self, media: MediaHandler, files: OpenFiles, legacy: bool) -> None:
        self._media = media
        self._files = files
        self._legacy = legacy

    def deadline(self, request: ApiRequest, default: float) -> float:
        try:
            wait = int(request.query_param("timeout_ms") or DEFAULT_WAIT_MS)
        except ValueError:
            wait = 0
        return default + min(max(wait, 0), MAX_WAIT_MS) / 1000

    async def _caller(self, request: ApiRequest) -> int:
        """The wait the client allows for a pending upload; the authenticated endpoints need a user."""
        if not self._legacy:
            await request.require_user()
        return request.query_int("timeout_ms", DEFAULT_WAIT_MS)

    def _serve(self, content: Content, filename: str | None) -> Response | FileResponse:
        headers = media_headers(content.content_type, filename)
        return serve_file(self._files, content, content.content_type, headers)


def serve_file(
    files: OpenFiles,
    content: Content,
    content_type: str,
    headers: dict[str, str] | None = None,
    frame: tuple[bytes, bytes] = (b"", b""),
) -> Response | FileResponse:
    """The stored file as the response body, between `frame`'s head and tail: read whole when small, else
    streamed holding one of `files`' descriptors (503 when all are taken)."""
    head, tail = frame
    if content.length <= SMALL_FILE_BYTES:
        try:
            data = content.path.read_bytes()
        except FileNotFoundError:
            raise _missing(content) from None
        return Response(200, head + data + tail, content_type, headers or {}, compress=False)
    if not files.take():
        raise LimitExceeded(1000, "Too many downloads at once; try again shortly", code=503)
    try:
        file = content.path.open("rb")
    except FileNotFoundError:
        files.give_back()
        raise _missing(content) from None

    def close() -> None:
        file.close()
        files.give_back()

    body = cast(BinaryIO, _Framed(head, file, tail)) if head or tail else file
    return FileResponse(200, body, len(head) + content.length + len(tail), content_type, close, headers or {})


class _Framed:
    """A file read between a preamble and an epilogue, for FileSender (which only calls read and close)."""

    def __init__(self, head: bytes, file: BinaryIO, tail: bytes) -> None:
        self._before = head
        self._file: BinaryIO | None = file
        self._after = tail

    def read(self, size: int) -> bytes:
        if self._before:
            chunk, self._before = self._before[:size], self._before[size:]
            return chunk
        if self._file is not None:
            chunk = self._file.read(size)
            if chunk:
                return chunk
            self._file = None
        chunk, self._after = self._after[:size], self._after[size:]
        return chunk


def _missing(content: Content) -> MatrixError:
    logger.error("media file %s is missing", content.path)
    return MatrixError(404, "M_NOT_FOUND", "Media not found")


class Download(_Serve):
    method = "GET"

    def __init__(self, media: MediaHandler, files: OpenFiles, legacy: bool) -> None:
        super().__init__(media, files, legacy)
        prefixes = ("/_matrix/media/v3", "/_matrix/media/r0") if legacy else ("/_matrix/client/v1/media",)
        suffixes = ("", "/", "/{file_name}")  # matrix-nio asks with a trailing slash when it has no name
        self.paths = tuple(f"{p}/download/{{server_name}}/{{media_id}}{s}" for p in prefixes for s in suffixes)

    async def handle(
        self, request: ApiRequest, server_name: str, media_id: str, file_name: str | None = None
    ) -> Response | FileResponse:
        timeout_ms = await self._caller(request)
        content = await self._media.content(server_name, media_id, legacy=self._legacy, timeout_ms=timeout_ms)
        return self._serve(content, file_name or content.upload_name)


class Thumbnail(_Serve):
    method = "GET"

    def __init__(self, media: MediaHandler, files: OpenFiles, legacy: bool) -> None:
        super().__init__(media, files, legacy)
        prefixes = ("/_matrix/media/v3", "/_matrix/media/r0") if legacy else ("/_matrix/client/v1/media",)
        self.paths = tuple(f"{p}/thumbnail/{{server_name}}/{{media_id}}" for p in prefixes)

    async def handle(self, request: ApiRequest, server_name: str, media_id: str) -> Response | FileResponse:
        timeout_ms = await self._caller(request)
        if request.query_param("width") is None or request.query_param("height") is None:
            raise MatrixError(400, "M_MISSING_PARAM", "width and height are required")
        width = request.query_int("width", 0, minimum=1)
        height = request.query_int("height", 0, minimum=1)
        method = request.query_param("method", "scale")
        content = await self._media.thumbnail(
            server_name, media_id, width, height, method, legacy=self._legacy, timeout_ms=timeout_ms
        )
        # Always an image type safe inline (the spec wants `inline` here), named for clients that save it.
        return self._serve(content, "thumbnail." + content.content_type.split(";")[0].rpartition("/")[2])


class Config(Endpoint):
    method, paths = "GET", ("/_matrix/client/v1/media/config", "/_matrix/media/v3/config", "/_matrix/media/r0/config")

    def __init__(self, media: MediaHandler) -> None:
        self._media = media

    async def handle(self, request: ApiRequest) -> tuple[int, dict[str, Any]]:
        await request.require_user()
        return 200, {"m.upload.size": self._media.config.max_upload_size}


def endpoints(media: MediaHandler, max_open_files: int) -> list[Endpoint]:
    files = OpenFiles(max_open_files)  # uploads being received and large downloads being sent
    return [
        Upload(media, files),
        UploadTo(media, files),
        Create(media),
        Download(media, files, legacy=False),
        Download(media, files, legacy=True),
        Thumbnail(media, files, legacy=False),
        Thumbnail(media, files, legacy=True),
        Config(media),
    ]
