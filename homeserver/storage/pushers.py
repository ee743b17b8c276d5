"""Pushers, and what they read to do their work: a user's notifying push actions after a position, and
the user's unread count."""

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from homeserver.storage.database import Database, Txn
from homeserver.storage.ids import current_id

_COLUMNS = (
    "user_id, device_id, kind, app_id, app_display_name, device_display_name, profile_tag, pushkey, lang, data,"
    " pushkey_ts, last_stream_ordering, failing_since"
)


@dataclass(frozen=True)
class PusherKey:
    app_id: str
    pushkey: str
    user_id: str


@dataclass(frozen=True)
class PusherRecord:
    user_id: str
    device_id: str
    kind: str
    app_id: str
    app_display_name: str
    device_display_name: str
    profile_tag: str | None
    pushkey: str
    lang: str
    data: dict[str, Any]
    pushkey_ts: int = 0  # ms
    last_stream_ordering: int = 0
    failing_since: int | None = None  # ms

    @property
    def key(self) -> PusherKey:
        return PusherKey(self.app_id, self.pushkey, self.user_id)


@dataclass(frozen=True)
class PendingPush:
    """A push action the pusher has still to send."""

    stream_ordering: int
    room_id: str
    event_id: str
    highlight: bool
    sound: str | None


def _record(row: tuple) -> PusherRecord:
    return PusherRecord(*row[:9], json.loads(row[9]), *row[10:])


class PusherStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def set_pusher(self, pusher: PusherRecord, now_ms: int, append: bool) -> PusherRecord | None:
        """Create or replace the user's pusher for (app_id, pushkey); unless `append`, the same app_id and
        pushkey go from every other user. It starts at the current end of the event stream, so it sends
        nothing older. None if the device that asked is gone (logged out meanwhile)."""
        return await self._db.run("pushers.set", self._set_txn, pusher, now_ms, append)

    def _set_txn(self, txn: Txn, p: PusherRecord, now_ms: int, append: bool) -> PusherRecord | None:
        device = txn.execute(
            "SELECT 1 FROM devices WHERE user_id = ? AND device_id = ?", (p.user_id, p.device_id)
        ).fetchone()
        if device is None:
            return None
        if not append:
            txn.execute(
                "DELETE FROM pushers WHERE app_id = ? AND pushkey = ? AND user_id <> ?",
                (p.app_id, p.pushkey, p.user_id),
            )
        stored = dataclasses.replace(p, pushkey_ts=now_ms, last_stream_ordering=current_id(txn, "events"))
        txn.execute(
            "DELETE FROM pushers WHERE app_id = ? AND pushkey = ? AND user_id = ?", (p.app_id, p.pushkey, p.user_id)
        )
        txn.execute(
            f"INSERT INTO pushers ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
            (
                stored.user_id,
                stored.device_id,
                stored.kind,
                stored.app_id,
                stored.app_display_name,
                stored.device_display_name,
                stored.profile_tag,
                stored.pushkey,
                stored.lang,
                json.dumps(stored.data, separators=(",", ":")),
                stored.pushkey_ts,
                stored.last_stream_ordering,
            ),
        )
        return stored

    async def delete_pusher(self, key: PusherKey) -> bool:
        """Remove one pusher; False if there was none."""
        return await self._db.run(
            "pushers.delete",
            lambda txn: txn.execute(
                "DELETE FROM pushers WHERE app_id = ? AND pushkey = ? AND user_id = ?",
                (key.app_id, key.pushkey, key.user_id),
            ).rowcount
            > 0,
        )

    async def pushers_of_user(self, user_id: str) -> list[PusherRecord]:
        rows = await self._db.run(
            "pushers.of_user",
            lambda txn: txn.execute(
                f"SELECT {_COLUMNS} FROM pushers WHERE user_id = ? ORDER BY app_id, pushkey", (user_id,)
            ).fetchall(),
            readonly=True,
        )
        return [_record(row) for row in rows]

    async def all_pushers(self) -> list[PusherRecord]:
        rows = await self._db.run(
            "pushers.all",
            lambda txn: txn.execute(f"SELECT {_COLUMNS} FROM pushers").fetchall(),
            readonly=True,
        )
        return [_record(row) for row in rows]

    async def exists(self, key: PusherKey) -> bool:
        return await self._db.run("pushers.exists", self._exists_txn, key, readonly=True)

    def _exists_txn(self, txn: Txn, key: PusherKey) -> bool:
        row = txn.execute(
            "SELECT 1 FROM pushers WHERE app_id = ? AND pushkey = ? AND user_id = ?",
            (key.app_id, key.pushkey, key.user_id),
        ).fetchone()
        return row is not None

    async def pending_pushes(self, key: PusherKey, after: int, limit: int) -> list[PendingPush] | None:
        """The user's notifying push actions after stream position `after`, oldest first, leaving out those
        in rooms the user has read past. None if the pusher no longer exists (its device was deleted)."""
        return await self._db.run("pushers.pending", self._pending_txn, key, after, limit, readonly=True)

    def _pending_txn(self, txn: Txn, key: PusherKey, after: int, limit: int) -> list[PendingPush] | None:
        if not self._exists_txn(txn, key):
            return None
        rows = txn.execute(
            "SELECT a.stream_ordering, a.room_id, a.event_id, a.highlight, a.sound FROM event_push_actions a"
            " LEFT JOIN push_summary s ON s.user_id = a.user_id AND s.room_id = a.room_id"
            " WHERE a.user_id = ? AND a.stream_ordering > ? AND a.notify = 1"
            " AND a.stream_ordering > coalesce(s.read_stream_ordering, 0)"
            " ORDER BY a.stream_ordering LIMIT ?",
            (key.user_id, after, limit),
        ).fetchall()
        return [PendingPush(r[0], r[1], r[2], bool(r[3]), r[4]) for r in rows]

    async def unread_count(self, user_id: str) -> int:
        """The user's notifications not yet read, over all their rooms (the badge a gateway shows)."""
        return await self._db.run(
            "pushers.unread_count",
            lambda txn: int(
                txn.execute(
                    "SELECT coalesce(sum(notification_count), 0) FROM push_summary WHERE user_id = ?", (user_id,)
                ).fetchone()[0]
            ),
            readonly=True,
        )

    async def advance(self, key: PusherKey, stream_ordering: int, success_ts: int | None) -> bool:
        """Record that the pusher is done with everything up to `stream_ordering` (sent at `success_ts`,
        or given up on when None), and is no longer failing. False if the pusher no longer exists."""
        return await self._db.run(
            "pushers.advance",
            lambda txn: txn.execute(
                "UPDATE pushers SET last_stream_ordering = ?, failing_since = NULL,"
                " last_success_ts = coalesce(?, last_success_ts)"
                " WHERE app_id = ? AND pushkey = ? AND user_id = ? AND last_stream_ordering < ?",
                (stream_ordering, success_ts, key.app_id, key.pushkey, key.user_id, stream_ordering),
            ).rowcount
            > 0,
        )

    async def set_failing_since(self, key: PusherKey, failing_since: int) -> None:
        await self._db.run(
            "pushers.failing",
            lambda txn: txn.execute(
                "UPDATE pushers SET failing_since = ? WHERE app_id = ? AND pushkey = ? AND user_id = ?",
                (failing_since, key.app_id, key.pushkey, key.user_id),
            ),
        )
