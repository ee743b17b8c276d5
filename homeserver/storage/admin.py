"""What only an admin changes: the admin flag, blocked rooms, and room deletions under way."""

import time
from enum import Enum

from homeserver.storage.database import Database, Txn


class RoomBlock(Enum):
    BLOCKED = "blocked"
    DELETING = "deleting"


def _now_ms() -> int:
    return int(time.time() * 1000)


class AdminStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def set_admin(self, user_id: str, admin: bool) -> bool:
        """False if there is no such user."""
        return await self._db.run("admin.set_admin", self._set_admin_txn, user_id, admin)

    def _set_admin_txn(self, txn: Txn, user_id: str, admin: bool) -> bool:
        txn.execute("UPDATE users SET admin = ? WHERE user_id = ?", (int(admin), user_id))
        return txn.rowcount > 0

    async def room_block(self, room_id: str) -> RoomBlock | None:
        """Whether joins to the room are refused, and why."""
        return await self._db.run("admin.room_block", self._room_block_txn, room_id, readonly=True)

    def _room_block_txn(self, txn: Txn, room_id: str) -> RoomBlock | None:
        if txn.execute("SELECT 1 FROM blocked_rooms WHERE room_id = ?", (room_id,)).fetchone():
            return RoomBlock.BLOCKED
        if txn.execute("SELECT 1 FROM room_deletions WHERE room_id = ?", (room_id,)).fetchone():
            return RoomBlock.DELETING
        return None

    async def start_room_deletion(self, room_id: str, requested_by: str, block: bool) -> None:
        """Record the deletion (and the block) and take the room out of the directory, in one transaction,
        before anything is deleted. Starting again (a re-run) is harmless."""
        await self._db.run("admin.start_room_deletion", self._start_deletion_txn, room_id, requested_by, block)

    def _start_deletion_txn(self, txn: Txn, room_id: str, requested_by: str, block: bool) -> None:
        now = _now_ms()
        txn.execute(
            "INSERT INTO room_deletions (room_id, requested_by, started_ts) VALUES (?, ?, ?)"
            " ON CONFLICT (room_id) DO NOTHING",
            (room_id, requested_by, now),
        )
        if block:
            txn.execute(
                "INSERT INTO blocked_rooms (room_id, blocked_by, blocked_ts) VALUES (?, ?, ?)"
                " ON CONFLICT (room_id) DO NOTHING",
                (room_id, requested_by, now),
            )
        txn.execute("UPDATE rooms SET is_public = 0 WHERE room_id = ?", (room_id,))

    async def finish_room_deletion(self, room_id: str) -> None:
        await self._db.run(
            "admin.finish_room_deletion",
            lambda txn: txn.execute("DELETE FROM room_deletions WHERE room_id = ?", (room_id,)),
        )

    async def room_deletions(self) -> list[tuple[str, str, int]]:
        """(room id, requested by, started ts) of every deletion that has not finished."""
        rows = await self._db.run(
            "admin.room_deletions",
            lambda txn: txn.execute(
                "SELECT room_id, requested_by, started_ts FROM room_deletions ORDER BY started_ts"
            ).fetchall(),
            readonly=True,
        )
        return [(r[0], r[1], int(r[2])) for r in rows]

    async def is_deleting(self, room_id: str) -> bool:
        row = await self._db.run(
            "admin.is_deleting",
            lambda txn: txn.execute("SELECT 1 FROM room_deletions WHERE room_id = ?", (room_id,)).fetchone(),
            readonly=True,
        )
        return row is not None
