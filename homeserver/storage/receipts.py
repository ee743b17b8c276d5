"""Receipts: the latest one per (room, receipt type, user, thread), each write at a position of the
`receipts` stream, read back by sync as the content of `m.receipt` EDUs."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from homeserver.storage.database import Database, Txn
from homeserver.storage.ids import current_id, next_id

READ = "m.read"
READ_PRIVATE = "m.read.private"
UNTHREADED = ""  # the thread_id column of a receipt without one
MAIN_THREAD = "main"
_ROOM_CHUNK = 500


@dataclass(frozen=True)
class Receipt:
    room_id: str
    receipt_type: str
    user_id: str
    thread_id: str | None  # None: unthreaded
    event_id: str
    event_stream: int  # the receipted event's stream ordering
    ts: int


def private_receipts_txn(txn: Txn, user_id: str, room_ids: list[str], upto: int) -> dict[str, dict[str, Any]]:
    """room id -> the content of an `m.receipt` EDU holding the user's own private receipts written at or
    before `upto`, for those of `room_ids` that have any."""
    rooms = set(room_ids)
    out: dict[str, dict[str, Any]] = {}
    rows = txn.execute(
        "SELECT room_id, thread_id, event_id, ts FROM receipts"
        " WHERE user_id = ? AND receipt_type = ? AND stream_id > 0 AND stream_id <= ? ORDER BY stream_id",
        (user_id, READ_PRIVATE, upto),
    ).fetchall()
    for room_id, thread_id, event_id, ts in rows:
        if room_id in rooms:
            _add_receipt(out.setdefault(room_id, {}), event_id, READ_PRIVATE, user_id, thread_id, ts)
    return out


def _add_receipt(
    content: dict[str, Any], event_id: str, receipt_type: str, user_id: str, thread_id: str, ts: int
) -> None:
    data: dict[str, Any] = {"ts": ts}
    if thread_id != UNTHREADED:
        data["thread_id"] = thread_id
    content.setdefault(event_id, {}).setdefault(receipt_type, {})[user_id] = data


class ReceiptStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def put(self, receipt: Receipt) -> int | None:
        """Store `receipt` in place of the user's earlier one of its type and thread. Returns its
        stream position, or None when it is not ahead of the one stored (it is then ignored)."""
        return await self._db.run("receipts.put", self._put_txn, receipt)

    def _put_txn(self, txn: Txn, receipt: Receipt) -> int | None:
        # Take the position first: the counter's row lock orders concurrent writers, so the check
        # below sees whatever an earlier writer committed.
        position = next_id(txn, "receipts")
        thread = receipt.thread_id or UNTHREADED
        key = (receipt.room_id, receipt.receipt_type, receipt.user_id, thread)
        row = txn.execute(
            "SELECT event_stream FROM receipts"
            " WHERE room_id = ? AND receipt_type = ? AND user_id = ? AND thread_id = ?",
            key,
        ).fetchone()
        if row is not None and row[0] >= receipt.event_stream:
            return None
        txn.execute(
            "INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id, event_stream, ts, stream_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE SET event_id = excluded.event_id,"
            " event_stream = excluded.event_stream, ts = excluded.ts, stream_id = excluded.stream_id",
            (*key, receipt.event_id, receipt.event_stream, receipt.ts, position),
        )
        return position

    async def current_position(self) -> int:
        return await self._db.run("receipts.current_position", lambda txn: current_id(txn, "receipts"), readonly=True)

    async def receipts_for_rooms(
        self, room_ids: Sequence[str], after: int | None, upto: int, user_id: str
    ) -> dict[str, dict[str, Any]]:
        """room id -> the content of an `m.receipt` EDU ({event_id: {type: {user_id: {ts, thread_id?}}}})
        with the receipts written at positions in (after, upto] (every current one when `after` is
        None). Private receipts are only included for `user_id`; rooms without any are left out."""
        if not room_ids:
            return {}
        return await self._db.run(
            "receipts.for_rooms", self._for_rooms_txn, list(room_ids), after, upto, user_id, readonly=True
        )

    def _for_rooms_txn(
        self, txn: Txn, room_ids: list[str], after: int | None, upto: int, user_id: str
    ) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        lower = after if after is not None else 0  # positions start at 1
        for start in range(0, len(room_ids), _ROOM_CHUNK):
            chunk = room_ids[start : start + _ROOM_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = txn.execute(
                "SELECT room_id, receipt_type, user_id, thread_id, event_id, ts FROM receipts"
                f" WHERE room_id IN ({marks}) AND stream_id > ? AND stream_id <= ?"
                " AND (receipt_type <> ? OR user_id = ?) ORDER BY stream_id",
                (*chunk, lower, upto, READ_PRIVATE, user_id),
            ).fetchall()
            for room_id, receipt_type, receipt_user, thread_id, event_id, ts in rows:
                _add_receipt(out.setdefault(room_id, {}), event_id, receipt_type, receipt_user, thread_id, ts)
        return out

    async def read_position(self, user_id: str, room_id: str) -> str | None:
        """The event id of the user's furthest m.read or m.read.private receipt in the room that
        covers the main timeline (unthreaded or thread `main`), or None if they sent none."""
        row = await self._db.run(
            "receipts.read_position",
            lambda txn: txn.execute(
                "SELECT event_id FROM receipts WHERE user_id = ? AND room_id = ? AND receipt_type IN (?, ?)"
                " AND thread_id IN (?, ?) ORDER BY event_stream DESC LIMIT 1",
                (user_id, room_id, READ, READ_PRIVATE, UNTHREADED, MAIN_THREAD),
            ).fetchone(),
            readonly=True,
        )
        return row[0] if row else None
