"""Media items and their thumbnails: what each mxc:// URI names. The bytes live in files (media_files)."""

from dataclasses import dataclass

from homeserver.storage.database import Database, Txn

_ITEM_COLUMNS = (
    "server_name, media_id, user_id, created_ts, upload_ts, expires_ts, content_type, upload_name, media_length,"
    " sha256, authenticated_only, quarantined_by"
)


@dataclass(frozen=True)
class MediaItem:
    server_name: str
    media_id: str
    user_id: str | None
    created_ts: int
    upload_ts: int | None  # None while an asynchronous upload is pending
    expires_ts: int | None  # a pending id not uploaded to by then is gone
    content_type: str | None
    upload_name: str | None
    length: int | None
    sha256: str | None
    authenticated_only: bool  # uploaded while the unauthenticated endpoints were frozen
    quarantined_by: str | None


@dataclass(frozen=True)
class Thumbnail:
    width: int  # the box it was made for; the image may be smaller
    height: int
    method: str
    content_type: str
    length: int
    sha256: str


@dataclass(frozen=True)
class PurgedBatch:
    items: int
    bytes: int  # of the items and their thumbnails (files shared with kept items stay)
    unreferenced: list[str]  # sha256 of files no item or thumbnail names any more


def _item(row: tuple) -> MediaItem:
    return MediaItem(*row[:10], authenticated_only=bool(row[10]), quarantined_by=row[11])


class MediaStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, server_name: str, media_id: str) -> MediaItem | None:
        row = await self._db.run(
            "media.get",
            lambda txn: txn.execute(
                f"SELECT {_ITEM_COLUMNS} FROM media WHERE server_name = ? AND media_id = ?", (server_name, media_id)
            ).fetchone(),
            readonly=True,
        )
        return _item(row) if row else None

    async def add(self, item: MediaItem) -> None:
        await self._db.run("media.add", self._add_txn, item)

    def _add_txn(self, txn: Txn, item: MediaItem) -> None:
        txn.execute(
            f"INSERT INTO media ({_ITEM_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                item.server_name,
                item.media_id,
                item.user_id,
                item.created_ts,
                item.upload_ts,
                item.expires_ts,
                item.content_type,
                item.upload_name,
                item.length,
                item.sha256,
                int(item.authenticated_only),
                item.quarantined_by,
            ),
        )

    async def add_remote(self, item: MediaItem) -> MediaItem:
        """Cache another server's item; returns the row kept (one stored meanwhile by another process wins)."""
        return await self._db.run("media.add_remote", self._add_remote_txn, item)

    def _add_remote_txn(self, txn: Txn, item: MediaItem) -> MediaItem:
        row = txn.execute(
            f"SELECT {_ITEM_COLUMNS} FROM media WHERE server_name = ? AND media_id = ?",
            (item.server_name, item.media_id),
        ).fetchone()
        if row:
            return _item(row)
        self._add_txn(txn, item)
        return item

    async def add_pending(self, item: MediaItem, now: int, max_pending: int) -> bool:
        """Create an id for an asynchronous upload, unless the user already has `max_pending` unexpired ones."""
        return await self._db.run("media.add_pending", self._add_pending_txn, item, now, max_pending)

    def _add_pending_txn(self, txn: Txn, item: MediaItem, now: int, max_pending: int) -> bool:
        (pending,) = txn.execute(
            "SELECT count(*) FROM media WHERE user_id = ? AND upload_ts IS NULL AND expires_ts > ?",
            (item.user_id, now),
        ).fetchone()
        if pending >= max_pending:
            return False
        self._add_txn(txn, item)
        return True

    async def complete_pending(
        self,
        server_name: str,
        media_id: str,
        now: int,
        content_type: str,
        upload_name: str | None,
        length: int,
        sha: str,
    ) -> bool:
        """Record the content of a pending item; False if it was uploaded to already."""
        return await self._db.run(
            "media.complete_pending",
            lambda txn: txn.execute(
                "UPDATE media SET upload_ts = ?, expires_ts = NULL, content_type = ?, upload_name = ?,"
                " media_length = ?, sha256 = ? WHERE server_name = ? AND media_id = ? AND upload_ts IS NULL",
                (now, content_type, upload_name, length, sha, server_name, media_id),
            ).rowcount
            == 1,
        )

    async def quarantine(self, server_name: str, media_id: str, by: str, now: int) -> bool:
        """Mark an item quarantined (it is served no more); False if there is no such item."""
        return await self._db.run(
            "media.quarantine",
            lambda txn: txn.execute(
                "UPDATE media SET quarantined_by = ?, quarantined_ts = ? WHERE server_name = ? AND media_id = ?",
                (by, now, server_name, media_id),
            ).rowcount
            == 1,
        )

    async def thumbnail(
        self, server_name: str, media_id: str, width: int, height: int, method: str
    ) -> Thumbnail | None:
        row = await self._db.run(
            "media.thumbnail",
            lambda txn: txn.execute(
                "SELECT width, height, method, content_type, length, sha256 FROM media_thumbnails"
                " WHERE server_name = ? AND media_id = ? AND width = ? AND height = ? AND method = ?",
                (server_name, media_id, width, height, method),
            ).fetchone(),
            readonly=True,
        )
        return Thumbnail(*row) if row else None

    async def add_thumbnail(self, server_name: str, media_id: str, thumbnail: Thumbnail, now: int) -> None:
        """Record a generated thumbnail; one generated at the same moment by another request is kept instead."""
        await self._db.run(
            "media.add_thumbnail",
            lambda txn: txn.execute(
                "INSERT INTO media_thumbnails (server_name, media_id, width, height, method, content_type, length,"
                " sha256, created_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (server_name, media_id, width, height, method) DO NOTHING",
                (
                    server_name,
                    media_id,
                    thumbnail.width,
                    thumbnail.height,
                    thumbnail.method,
                    thumbnail.content_type,
                    thumbnail.length,
                    thumbnail.sha256,
                    now,
                ),
            ),
        )

    async def is_referenced(self, sha: str) -> bool:
        """Whether any item or thumbnail names the file with this hash."""
        return await self._db.run("media.is_referenced", lambda txn: bool(_referenced_txn(txn, [sha])), readonly=True)

    async def count_before(
        self, before_ts: int, local_server: str, remote_only: bool, after: tuple | None, limit: int
    ) -> tuple[int, int, tuple | None]:
        """One page of what a purge before `before_ts` would delete, in key order after `after`:
        (items, bytes, the last key) — for dry runs."""
        return await self._db.run(
            "media.count_before",
            self._count_before_txn,
            before_ts,
            local_server,
            remote_only,
            after,
            limit,
            readonly=True,
        )

    def _count_before_txn(
        self, txn: Txn, before_ts: int, local_server: str, remote_only: bool, after: tuple | None, limit: int
    ) -> tuple[int, int, tuple | None]:
        keys = _keys_before_txn(txn, before_ts, local_server, remote_only, after, limit)
        return len(keys), sum(_sizes_txn(txn, keys).values()), keys[-1][:3] if keys else None

    async def purge_before(self, before_ts: int, local_server: str, remote_only: bool, limit: int) -> PurgedBatch:
        """Delete at most `limit` items created before `before_ts` (oldest first) with their thumbnails."""
        return await self._db.run(
            "media.purge_before", self._purge_before_txn, before_ts, local_server, remote_only, limit
        )

    def _purge_before_txn(
        self, txn: Txn, before_ts: int, local_server: str, remote_only: bool, limit: int
    ) -> PurgedBatch:
        keys = _keys_before_txn(txn, before_ts, local_server, remote_only, None, limit)
        if not keys:
            return PurgedBatch(0, 0, [])
        sizes = _sizes_txn(txn, keys)
        pairs = [(server_name, media_id) for _, server_name, media_id, _, _ in keys]
        txn.executemany("DELETE FROM media_thumbnails WHERE server_name = ? AND media_id = ?", pairs)
        txn.executemany("DELETE FROM media WHERE server_name = ? AND media_id = ?", pairs)
        named = {sha for sha in sizes if sha}
        return PurgedBatch(len(keys), sum(sizes.values()), sorted(named - _referenced_txn(txn, sorted(named))))


def _keys_before_txn(
    txn: Txn, before_ts: int, local_server: str, remote_only: bool, after: tuple | None, limit: int
) -> list[tuple]:
    """(created_ts, server_name, media_id, sha256, media_length) of the first `limit` items created before
    `before_ts` and after the key `after`, in key order."""
    where, args = "created_ts < ?", [before_ts]
    if remote_only:
        where += " AND server_name <> ?"
        args.append(local_server)
    if after is not None:
        where += " AND (created_ts > ? OR (created_ts = ? AND (server_name > ? OR (server_name = ? AND media_id > ?))))"
        args += [after[0], after[0], after[1], after[1], after[2]]
    return txn.execute(
        f"SELECT created_ts, server_name, media_id, sha256, media_length FROM media WHERE {where}"
        " ORDER BY created_ts, server_name, media_id LIMIT ?",
        (*args, limit),
    ).fetchall()


def _sizes_txn(txn: Txn, keys: list[tuple]) -> dict[str | None, int]:
    """Bytes per file of the given items and their thumbnails (None: items without content yet)."""
    sizes: dict[str | None, int] = {}
    by_server: dict[str, list[str]] = {}
    for _, server_name, media_id, sha, length in keys:
        sizes[sha] = sizes.get(sha, 0) + (length or 0)
        by_server.setdefault(server_name, []).append(media_id)
    for server_name, media_ids in by_server.items():
        rows = txn.execute(
            f"SELECT sha256, length FROM media_thumbnails WHERE server_name = ? AND media_id IN"
            f" ({', '.join('?' * len(media_ids))})",
            (server_name, *media_ids),
        ).fetchall()
        for sha, length in rows:
            sizes[sha] = sizes.get(sha, 0) + length
    return sizes


def _referenced_txn(txn: Txn, shas: list[str]) -> set[str]:
    if not shas:
        return set()
    marks = ", ".join("?" * len(shas))
    rows = txn.execute(
        f"SELECT sha256 FROM media WHERE sha256 IN ({marks})"
        f" UNION SELECT sha256 FROM media_thumbnails WHERE sha256 IN ({marks})",
        (*shas, *shas),
    ).fetchall()
    return {row[0] for row in rows}
