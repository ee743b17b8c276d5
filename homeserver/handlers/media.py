"""The media repository (client-server API, "Content repository"): uploads, asynchronous uploads, downloads,
thumbnails, and the operator's quarantine and purge.

Files are kept by the hash of their bytes (storage/media_files.py), rows say which mxc:// URI names which
file. Blocking work leaves the reactor: file system calls that may wait on the disk (fsync, link) go to
the reactor's thread pool, image decoding to a small pool of its own so a burst of thumbnails cannot take
every thread (or much memory: each decode holds one image, bounded by max_image_pixels).

Media of other servers is fetched over federation on first request (remote_media.py) and then served from
the same store; purges and quarantine treat it like local media.
"""

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from homeserver.config.options import MediaConfig
from homeserver.core.errors import LimitExceeded, MatrixError
from homeserver.core.ids import is_valid_server_name
from homeserver.core.requester import Requester
from homeserver.handlers import thumbnails
from homeserver.handlers.batches import Batches
from homeserver.handlers.remote_media import RemoteMedia
from homeserver.handlers.single_flight import SingleFlight
from homeserver.handlers.thumbnails import CROP, SCALE, THUMBNAILABLE_TYPES, Box, NotAnImage, TooLarge
from homeserver.http.federation_client import FederationClient
from homeserver.storage.media import MediaItem, MediaStore, Thumbnail
from homeserver.storage.media_files import IncomingFile, MediaFiles

DEFAULT_CONTENT_TYPE = "application/octet-stream"
MEDIA_ID = re.compile(r"^[A-Za-z0-9_-]{1,255}$")  # the spec's alphabet: nothing that can walk a path
MAX_WAIT_MS = 20_000  # the longest a download waits for a pending asynchronous upload (timeout_ms)
IMAGE_THREADS = 2
PENDING_RETRY_MS = 60_000


@dataclass(frozen=True)
class Content:
    """Bytes to serve: the file, its length and type, and the name it was uploaded with."""

    path: Path
    length: int
    content_type: str
    upload_name: str | None


@dataclass
class PurgeTotals:
    items: int = 0
    bytes: int = 0
    files: int = 0  # files deleted (fewer than items when content was shared, or never uploaded)


def parse_mxc(uri: str) -> tuple[str, str]:
    """(server name, media id) of an mxc:// URI: 400 M_INVALID_PARAM if it is not one."""
    server_name, _, media_id = uri.removeprefix("mxc://").partition("/")
    if not uri.startswith("mxc://"):
        raise MatrixError(400, "M_INVALID_PARAM", f"{uri!r} is not an mxc:// URI")
    check_media_id(server_name, media_id)
    return server_name, media_id


def check_media_id(server_name: str, media_id: str) -> None:
    if not is_valid_server_name(server_name):
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid server name")
    if not MEDIA_ID.match(media_id):
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid media id: only A-Z, a-z, 0-9, _ and - are allowed")


def _not_found() -> MatrixError:
    return MatrixError(404, "M_NOT_FOUND", "Media not found")


class MediaHandler:
    def __init__(
        self,
        server_name: str,
        store: MediaStore,
        files: MediaFiles,
        config: MediaConfig,
        reactor: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._server_name = server_name
        self._store = store
        self._files = files
        self.config = config
        self._reactor = reactor
        self._clock = clock
        self._boxes = [Box(s.width, s.height, s.method) for s in config.thumbnail_sizes]
        self._waiters: dict[tuple[str, str], list[defer.Deferred]] = {}
        self._thumbnailing = SingleFlight(keep_s=0)
        self.remote: RemoteMedia | None = None  # other servers' media, when there is federation
        self._image_pool: ThreadPool | None = None
        if reactor is not None:
            self._image_pool = ThreadPool(minthreads=0, maxthreads=IMAGE_THREADS, name="thumbnails")
            self._image_pool.start()
            reactor.addSystemEventTrigger("during", "shutdown", self._image_pool.stop)

    def enable_federation(self, client: FederationClient) -> None:
        self.remote = RemoteMedia(
            self._server_name,
            self._store,
            self._files,
            client,
            self._reactor,
            self.config.max_upload_size,
            self.config.freeze_legacy_media,
            self._io,
            self._clock,
        )

    def prepare(self) -> None:
        self._files.prepare()

    def incoming(self, on_close: Callable[[], None]) -> IncomingFile:
        """A temporary file for an upload's body; `on_close` is called once it is closed."""
        return self._files.incoming(on_close)

    def _now(self) -> int:
        return int(self._clock() * 1000)

    def _mxc(self, media_id: str) -> str:
        return f"mxc://{self._server_name}/{media_id}"

    # Uploads

    async def upload(self, requester: Requester, incoming: IncomingFile, content_type: str, name: str | None) -> str:
        """Keep an uploaded body as a new item; returns its mxc:// URI."""
        media_id = secrets.token_urlsafe(18)
        now = self._now()
        try:
            sha = await self._io(self._files.keep, incoming)
            item = MediaItem(
                self._server_name,
                media_id,
                requester.user_id,
                created_ts=now,
                upload_ts=now,
                expires_ts=None,
                content_type=content_type,
                upload_name=name,
                length=incoming.size,
                sha256=sha,
                authenticated_only=self.config.freeze_legacy_media,
                quarantined_by=None,
            )
            await self._store.add(item)
            await self._io(self._files.ensure_linked, incoming.path, sha)
        finally:
            incoming.close()
        return self._mxc(media_id)

    async def create(self, requester: Requester) -> tuple[str, int]:
        """A new media id to upload to later: (mxc:// URI, when it expires unused)."""
        now = self._now()
        expires = now + int(self.config.unused_expiration_time * 1000)
        media_id = secrets.token_urlsafe(18)
        item = MediaItem(
            self._server_name,
            media_id,
            requester.user_id,
            created_ts=now,
            upload_ts=None,
            expires_ts=expires,
            content_type=None,
            upload_name=None,
            length=None,
            sha256=None,
            authenticated_only=self.config.freeze_legacy_media,
            quarantined_by=None,
        )
        if not await self._store.add_pending(item, now, self.config.max_pending_media_uploads):
            raise LimitExceeded(PENDING_RETRY_MS, "Too many pending media uploads; upload to the ones you have")
        return self._mxc(media_id), expires

    async def upload_to(
        self,
        requester: Requester,
        server_name: str,
        media_id: str,
        incoming: IncomingFile,
        content_type: str,
        name: str | None,
    ) -> None:
        """The content of an id made by `create`."""
        try:
            check_media_id(server_name, media_id)
            item = await self._store.get(server_name, media_id) if server_name == self._server_name else None
            if item is None or (item.upload_ts is None and (item.expires_ts or 0) <= self._now()):
                raise MatrixError(404, "M_NOT_FOUND", "Unknown or expired media id")
            if item.user_id != requester.user_id:
                raise MatrixError(403, "M_FORBIDDEN", "This media id was created by another user")
            if item.upload_ts is not None:
                raise MatrixError(409, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded")
            sha = await self._io(self._files.keep, incoming)
            completed = await self._store.complete_pending(
                server_name, media_id, self._now(), content_type, name, incoming.size, sha
            )
            if not completed:  # another request uploaded to it meanwhile
                raise MatrixError(409, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded")
            await self._io(self._files.ensure_linked, incoming.path, sha)
        finally:
            incoming.close()
        for waiter in self._waiters.pop((server_name, media_id), []):
            waiter.callback(None)

    # Downloads

    async def content(self, server_name: str, media_id: str, *, legacy: bool, timeout_ms: int) -> Content:
        item = await self._servable(server_name, media_id, legacy, timeout_ms)
        assert item.sha256 is not None and item.length is not None
        return Content(
            self._files.path(item.sha256), item.length, item.content_type or DEFAULT_CONTENT_TYPE, item.upload_name
        )

    async def thumbnail(
        self,
        server_name: str,
        media_id: str,
        width: int,
        height: int,
        method: str,
        *,
        legacy: bool,
        timeout_ms: int,
    ) -> Content:
        """The smallest configured thumbnail that serves the request (made now if it was never asked for),
        or the original when it is small already."""
        if method not in (CROP, SCALE):
            raise MatrixError(400, "M_INVALID_PARAM", "method must be crop or scale")
        if width < 1 or height < 1:
            raise MatrixError(400, "M_INVALID_PARAM", "width and height must be positive")
        item = await self._servable(server_name, media_id, legacy, timeout_ms)
        assert item.sha256 is not None and item.length is not None
        if (item.content_type or "").split(";")[0].strip().lower() not in THUMBNAILABLE_TYPES:
            raise MatrixError(400, "M_UNKNOWN", "Cannot generate thumbnails for this content")
        original = self._files.path(item.sha256)
        size = await self._image_work(thumbnails.image_size, str(original), self.config.max_image_pixels)
        box = thumbnails.choose(*size, width, height, method, self._boxes)
        if box is None:
            return Content(original, item.length, item.content_type or DEFAULT_CONTENT_TYPE, None)
        thumbnail = await self._store.thumbnail(server_name, media_id, box.width, box.height, box.method)
        if thumbnail is None:
            key = (server_name, media_id, box)
            thumbnail = await self._thumbnailing.run(
                key, lambda: self._make_thumbnail(server_name, media_id, original, box), keep=lambda _: False
            )
        return Content(self._files.path(thumbnail.sha256), thumbnail.length, thumbnail.content_type, None)

    async def _make_thumbnail(self, server_name: str, media_id: str, original: Path, box: Box) -> Thumbnail:
        data, content_type = await self._image_work(thumbnails.render, str(original), box, self.config.max_image_pixels)
        sha, tmp = await self._io(self._files.keep_bytes, data)
        try:
            thumbnail = Thumbnail(box.width, box.height, box.method, content_type, len(data), sha)
            await self._store.add_thumbnail(server_name, media_id, thumbnail, self._now())
            await self._io(self._files.ensure_linked, tmp, sha)
        finally:
            await self._io(tmp.unlink)
        return thumbnail

    async def _servable(self, server_name: str, media_id: str, legacy: bool, timeout_ms: int) -> MediaItem:
        """The item if it may be served: 404 when it is unknown, quarantined or (on the legacy endpoints)
        uploaded or fetched after the freeze; another server's item is fetched unless cached, a pending
        upload is waited for up to `timeout_ms`."""
        check_media_id(server_name, media_id)
        item = await self._store.get(server_name, media_id)
        if server_name != self._server_name and item is None:
            # Fetching for the legacy endpoints while they are frozen would cache what they may not serve.
            if self.remote is None or (legacy and self.config.freeze_legacy_media):
                raise _not_found()
            item = await self.remote.fetch(server_name, media_id)
        if item is not None and item.upload_ts is None and (item.expires_ts or 0) > self._now():
            await self._wait_for_upload(server_name, media_id, timeout_ms)
            item = await self._store.get(server_name, media_id)
        if item is None or item.upload_ts is None or item.quarantined_by or (legacy and item.authenticated_only):
            raise _not_found()
        return item

    async def _wait_for_upload(self, server_name: str, media_id: str, timeout_ms: int) -> None:
        key = (server_name, media_id)
        timeout_s = min(max(timeout_ms, 0), MAX_WAIT_MS) / 1000
        if self._reactor is None or not timeout_s:
            raise MatrixError(504, "M_NOT_YET_UPLOADED", "Content has not yet been uploaded")
        waiter: defer.Deferred = defer.Deferred()
        waiter.addTimeout(timeout_s, self._reactor)
        self._waiters.setdefault(key, []).append(waiter)
        try:
            await waiter
        except defer.TimeoutError:
            raise MatrixError(504, "M_NOT_YET_UPLOADED", "Content has not yet been uploaded") from None
        finally:
            waiters = self._waiters.get(key, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._waiters.pop(key, None)

    # Operators

    async def quarantine(self, uri: str, by: str) -> None:
        server_name, media_id = parse_mxc(uri)
        if not await self._store.quarantine(server_name, media_id, by, self._now()):
            raise _not_found()

    async def purge(
        self, before_ts: int, remote_only: bool, batches: Batches, progress: Callable[[PurgeTotals], None]
    ) -> PurgeTotals:
        """Delete items created before `before_ts` with their thumbnails, and the files no other item names,
        in keyed batches."""
        totals = PurgeTotals()

        async def step(limit: int) -> int:
            batch = await self._store.purge_before(before_ts, self._server_name, remote_only, limit)
            totals.items += batch.items
            totals.bytes += batch.bytes
            for sha in batch.unreferenced:
                aside = await self._io(self._files.set_aside, sha)
                if aside is not None:
                    referenced = await self._store.is_referenced(sha)
                    await self._io(self._files.settle, aside, sha, referenced)
                    totals.files += 0 if referenced else 1
            return batch.items

        await batches.run(step, lambda _: progress(totals))
        return totals

    async def count_purgeable(
        self, before_ts: int, remote_only: bool, batches: Batches, progress: Callable[[PurgeTotals], None]
    ) -> PurgeTotals:
        """What `purge` would delete (files not counted: sharing is only known when deleting)."""
        totals = PurgeTotals()
        after: list[tuple | None] = [None]

        async def step(limit: int) -> int:
            items, size, after[0] = await self._store.count_before(
                before_ts, self._server_name, remote_only, after[0], limit
            )
            totals.items += items
            totals.bytes += size
            return items

        await batches.run(step, lambda _: progress(totals))
        return totals

    # Threads

    async def _io(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._reactor is None:
            return fn(*args)
        return await deferToThreadPool(self._reactor, self._reactor.getThreadPool(), fn, *args)

    async def _image_work(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            if self._image_pool is None:
                return fn(*args)
            return await deferToThreadPool(self._reactor, self._image_pool, fn, *args)
        except NotAnImage:
            raise MatrixError(400, "M_UNKNOWN", "Cannot generate thumbnails for this content") from None
        except TooLarge:
            raise MatrixError(413, "M_TOO_LARGE", "The image is too large to thumbnail") from None
        except FileNotFoundError:
            raise _not_found() from None
