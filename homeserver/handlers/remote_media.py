"""Other servers' media, fetched over federation on first request and cached like an upload.

`GET /_matrix/federation/v1/media/download/{mediaId}` answers multipart/mixed: a JSON part (`{}`) then the
file. Servers that predate it (404 M_UNRECOGNIZED, 400, 405) are asked on the legacy unauthenticated
`/_matrix/media/v3/download/{server}/{id}?allow_remote=false`. Either way the file streams into a temporary
file, never whole in memory, and the read stops as soon as it passes max_upload_size (Synapse's rule and
answer: 502 M_TOO_LARGE). Concurrent requests for one item share one fetch; once stored, requests are served
from the cache and the origin is not asked again (a purge or quarantine is what changes that).

Servers the operator's IP ranges exclude are never reached: every connection goes through the
FederationClient's address filter.
"""

import contextlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, unquote

from twisted.internet import defer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import UNKNOWN_LENGTH

from homeserver.core.errors import MatrixError
from homeserver.handlers.single_flight import SingleFlight
from homeserver.http.capped_body import BodyTooLarge, read_body
from homeserver.http.federation_client import FederationClient, HttpResponseError
from homeserver.storage.media import MediaItem, MediaStore
from homeserver.storage.media_files import IncomingFile, MediaFiles

logger = logging.getLogger(__name__)

FETCH_TIMEOUT_S = 60.0  # the whole exchange, body included
ERROR_BODY_BYTES = 64 * 1024
MAX_HEAD_BYTES = 64 * 1024  # the JSON part and the part headers before the file
REMOTE_WAIT_MS = 20_000  # how long the origin may wait for its own pending upload
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_FILENAME_STAR = re.compile(r"filename\*\s*=\s*utf-8''([^;\s]+)", re.IGNORECASE)
_FILENAME = re.compile(r'filename\s*=\s*(?:"([^"]*)"|([^;\s]+))', re.IGNORECASE)


class RemoteTooLarge(Exception):
    pass


class _Malformed(Exception):
    pass


def filename_of(disposition: str | None) -> str | None:
    """The file name a Content-Disposition carries (RFC 6266; the utf-8 form preferred)."""
    if not disposition:
        return None
    if m := _FILENAME_STAR.search(disposition):
        return unquote(m.group(1)) or None
    if m := _FILENAME.search(disposition):
        return (m.group(1) if m.group(1) is not None else m.group(2)) or None
    return None


def _headers(block: bytes) -> dict[str, str]:
    headers = {}
    for line in block.decode("utf-8", "replace").split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


class _FileReader(Protocol):
    """Streams a response body into `sink`, at most `limit` bytes of file. With a `boundary`, the body is
    the federation multipart answer: the JSON part and the file part's headers are read into memory
    (capped), then the file part's bytes go to the sink until the closing delimiter."""

    def __init__(self, sink: IncomingFile, limit: int, boundary: bytes | None) -> None:
        self.done: defer.Deferred[dict[str, str]] = defer.Deferred(lambda _: self._abort())
        self._sink = sink
        self._limit = limit
        self._delimiter = b"\r\n--" + boundary if boundary else None
        self._head = b"\r\n"  # so the first delimiter looks like every other one
        self._held = b""  # file bytes that may be the start of the closing delimiter
        self.part_headers: dict[str, str] | None = None if boundary else {}
        self._finished = False

    def dataReceived(self, data: bytes) -> None:
        if self.done.called or self._finished:
            return
        try:
            if self.part_headers is None:
                self._head += data
                if len(self._head) > MAX_HEAD_BYTES:
                    raise _Malformed("multipart head too long")
                data = self._parse_head()
            if self.part_headers is not None and data:
                self._file_bytes(data)
        except (RemoteTooLarge, _Malformed) as e:
            self._abort()
            self.done.errback(e)

    def _parse_head(self) -> bytes:
        """Once the JSON part and the file part's headers are in: the bytes after them (the file's start)."""
        assert self._delimiter is not None
        parts = self._head.split(self._delimiter)
        # ["", json part, file part headers + data ...] once the second delimiter has come
        if len(parts) < 3:
            return b""
        json_block = parts[1]
        file_part = self._delimiter.join(parts[2:])
        if b"\r\n\r\n" not in file_part:
            return b""
        json_head, _, _ = json_block.partition(b"\r\n\r\n")
        if "application/json" not in _headers(json_head.lstrip(b"\r\n")).get("content-type", ""):
            raise _Malformed("the first part is not JSON")
        head, _, rest = file_part.partition(b"\r\n\r\n")
        self.part_headers = _headers(head.lstrip(b"\r\n"))
        if "location" in self.part_headers:
            raise _Malformed("redirects to another location are not followed")
        self._head = b""
        return rest

    def _file_bytes(self, data: bytes) -> None:
        if self._delimiter is None:
            self._write(data)
            return
        data = self._held + data
        end = data.find(self._delimiter)
        if end >= 0:
            self._write(data[:end])
            self._finished = True
            self.done.callback(self.part_headers)
            return
        keep = len(self._delimiter) - 1
        self._held = data[-keep:] if len(data) > keep else data
        self._write(data[: len(data) - len(self._held)])

    def _write(self, data: bytes) -> None:
        if self._sink.size + len(data) > self._limit:
            raise RemoteTooLarge()
        self._sink.write(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done.called or self._finished:
            return
        if not reason.check(ResponseDone, PotentialDataLoss):
            self.done.errback(reason)
        elif self._delimiter is not None:
            self.done.errback(_Malformed("multipart answer ended before its closing delimiter"))
        else:
            self.done.callback(self.part_headers or {})

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.stopProducing()


class RemoteMedia:
    def __init__(
        self,
        server_name: str,
        store: MediaStore,
        files: MediaFiles,
        client: FederationClient,
        reactor: Any,
        max_size: int,
        freeze_legacy_media: bool,
        io: Callable[..., Awaitable[Any]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._server_name = server_name
        self._store = store
        self._files = files
        self._client = client
        self._reactor = reactor
        self._max_size = max_size
        self._freeze = freeze_legacy_media
        self._io = io
        self._clock = clock
        self._fetching = SingleFlight(keep_s=0)

    async def fetch(self, server_name: str, media_id: str) -> MediaItem:
        """The cached item, fetched from its server now unless it is here already: 404 M_NOT_FOUND if
        the server does not have it, 502 if it cannot be fetched or is too large."""
        return await self._fetching.run(
            (server_name, media_id), lambda: self._fetch(server_name, media_id), keep=lambda _: False
        )

    async def _fetch(self, server_name: str, media_id: str) -> MediaItem:
        cached = await self._store.get(server_name, media_id)
        if cached is not None:  # a fetch that finished just before this one started
            return cached
        incoming = self._files.incoming(lambda: None)
        try:
            content_type, upload_name = await self._download(server_name, media_id, incoming)
            sha = await self._io(self._files.keep, incoming)
            now = int(self._clock() * 1000)
            item = MediaItem(
                server_name,
                media_id,
                None,
                created_ts=now,
                upload_ts=now,
                expires_ts=None,
                content_type=content_type,
                upload_name=upload_name,
                length=incoming.size,
                sha256=sha,
                authenticated_only=self._freeze,
                quarantined_by=None,
            )
            item = await self._store.add_remote(item)
            await self._io(self._files.ensure_linked, incoming.path, sha)
        finally:
            incoming.close()
        logger.info("cached remote media mxc://%s/%s (%d bytes)", server_name, media_id, item.length or 0)
        return item

    async def _download(self, server_name: str, media_id: str, sink: IncomingFile) -> tuple[str, str | None]:
        """(content type, file name) of the file now in `sink`."""
        try:
            try:
                path = f"/_matrix/federation/v1/media/download/{quote(media_id, safe='')}"
                headers = await self._get(server_name, path, {"timeout_ms": str(REMOTE_WAIT_MS)}, sink, True)
            except HttpResponseError as e:
                if not (e.code in (400, 405, 501) or (e.code == 404 and e.errcode != "M_NOT_FOUND")):
                    raise
                path = f"/_matrix/media/v3/download/{quote(server_name, safe='')}/{quote(media_id, safe='')}"
                args = {"allow_remote": "false", "allow_redirect": "false", "timeout_ms": str(REMOTE_WAIT_MS)}
                headers = await self._get(server_name, path, args, sink, False)
        except HttpResponseError as e:
            if e.code == 404:
                raise MatrixError(404, "M_NOT_FOUND", "Media not found") from None
            logger.warning("fetching mxc://%s/%s: %s", server_name, media_id, e)
            raise MatrixError(502, "M_UNKNOWN", "Failed to fetch remote media") from None
        except RemoteTooLarge:
            raise MatrixError(502, "M_TOO_LARGE", f"Requested file is too large > {self._max_size} bytes") from None
        except Exception as e:  # refused, blocked, timed out, malformed: all mean no usable answer
            logger.warning("fetching mxc://%s/%s: %s: %s", server_name, media_id, type(e).__name__, e)
            raise MatrixError(502, "M_UNKNOWN", "Failed to fetch remote media") from None
        return headers.get("content-type") or "application/octet-stream", filename_of(
            headers.get("content-disposition")
        )

    async def _get(
        self, server_name: str, path: str, args: dict[str, str], sink: IncomingFile, federation: bool
    ) -> dict[str, str]:
        call = defer.ensureDeferred(self._get_now(server_name, path, args, sink, federation))
        call.addTimeout(FETCH_TIMEOUT_S, self._reactor)
        return await call

    async def _get_now(
        self, server_name: str, path: str, args: dict[str, str], sink: IncomingFile, federation: bool
    ) -> dict[str, str]:
        response = await self._client.get_response(server_name, path, args=args, signed=federation)
        if not 200 <= response.code < 300:
            try:
                body = json.loads(await read_body(response, ERROR_BODY_BYTES))
            except (BodyTooLarge, ValueError, UnicodeDecodeError):
                body = None
            raise HttpResponseError(response.code, body)
        if response.length is not UNKNOWN_LENGTH and response.length > self._max_size + (
            MAX_HEAD_BYTES if federation else 0
        ):
            reader = _FileReader(sink, 0, None)  # its first byte is over the limit: the connection is dropped
            response.deliverBody(reader)
            with contextlib.suppress(Exception):
                await reader.done
            raise RemoteTooLarge()
        raw_type = (response.headers.getRawHeaders(b"content-type") or [b""])[0].decode("latin-1")
        boundary = None
        if federation:
            m = _BOUNDARY.search(raw_type)
            if not raw_type.lower().startswith("multipart/mixed") or m is None:
                raise _Malformed(f"expected multipart/mixed with a boundary, got {raw_type!r}")
            boundary = m.group(1).encode("latin-1")
        reader = _FileReader(sink, self._max_size, boundary)
        response.deliverBody(reader)
        headers = await reader.done
        if not federation:
            disposition = (response.headers.getRawHeaders(b"content-disposition") or [b""])[0]
            headers = {"content-type": raw_type, "content-disposition": disposition.decode("utf-8", "replace")}
        return headers
