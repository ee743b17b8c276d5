"""Users' current presence, one row each, and whether two users share a room (who may see whose).

The presence handler keeps the live state in memory and writes a row only when what others see changes;
the table is there so a restart keeps status messages and the stream position.
"""

from dataclasses import dataclass

from homeserver.storage.database import Database, Txn


@dataclass(frozen=True)
class PresenceRow:
    user_id: str
    state: str  # online, unavailable or offline
    status_msg: str | None
    last_active_ts: int  # ms since the epoch
    currently_active: bool
    stream_id: int


class PresenceStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def load_all(self) -> list[PresenceRow]:
        """Every stored presence, for the handler to start from (one row per user who ever had one)."""
        rows = await self._db.run(
            "presence.load_all",
            lambda txn: txn.execute(
                "SELECT user_id, state, status_msg, last_active_ts, currently_active, stream_id FROM presence"
            ).fetchall(),
            readonly=True,
        )
        return [PresenceRow(r[0], r[1], r[2], int(r[3]), bool(r[4]), int(r[5])) for r in rows]

    async def store(self, row: PresenceRow) -> None:
        await self.store_many([row])

    async def store_many(self, rows: list[PresenceRow]) -> None:
        """Upsert the rows in one transaction."""
        await self._db.run("presence.store", self._store_txn, rows)

    def _store_txn(self, txn: Txn, rows: list[PresenceRow]) -> None:
        # Writes may finish out of order (each is its own transaction on the pool): a row only ever
        # moves forward on the stream, so an older change arriving late does not overwrite a newer one.
        for row in rows:
            txn.execute(
                "INSERT INTO presence (user_id, state, status_msg, last_active_ts, currently_active, stream_id)"
                " VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (user_id) DO UPDATE SET state = excluded.state, status_msg = excluded.status_msg,"
                " last_active_ts = excluded.last_active_ts, currently_active = excluded.currently_active,"
                " stream_id = excluded.stream_id"
                " WHERE presence.stream_id < excluded.stream_id",
                (row.user_id, row.state, row.status_msg, row.last_active_ts, int(row.currently_active), row.stream_id),
            )

    async def share_a_room(self, user_id: str, other_id: str) -> bool:
        """Whether both users are joined to at least one common room."""
        row = await self._db.run(
            "presence.share_a_room",
            lambda txn: txn.execute(
                "SELECT 1 FROM current_state mine JOIN current_state other"
                " ON other.room_id = mine.room_id AND other.type = 'm.room.member' AND other.state_key = ?"
                " AND other.membership = 'join'"
                " WHERE mine.type = 'm.room.member' AND mine.state_key = ? AND mine.membership = 'join' LIMIT 1",
                (other_id, user_id),
            ).fetchone(),
            readonly=True,
        )
        return row is not None
