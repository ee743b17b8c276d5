"""Account data: the latest content per (user, type), globally and per room, each write at a
position of the `account_data` stream (one stream for both, as a sync token carries one position)."""

import json
from typing import Any

from homeserver.storage.database import Database, Txn
from homeserver.storage.ids import current_id, next_id


def _encode(content: dict[str, Any]) -> str:
    return json.dumps(content, ensure_ascii=False, separators=(",", ":"))


class AccountDataStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def put_global(self, user_id: str, data_type: str, content: dict[str, Any]) -> int:
        """Store the content in place of any earlier; returns the write's stream position."""
        return await self._db.run("account_data.put_global", self._put_global_txn, user_id, data_type, content)

    def _put_global_txn(self, txn: Txn, user_id: str, data_type: str, content: dict[str, Any]) -> int:
        position = next_id(txn, "account_data")
        txn.execute(
            "INSERT INTO account_data (user_id, type, content, stream_id) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (user_id, type) DO UPDATE SET content = excluded.content, stream_id = excluded.stream_id",
            (user_id, data_type, _encode(content), position),
        )
        return position

    async def put_room(self, user_id: str, room_id: str, data_type: str, content: dict[str, Any]) -> int:
        return await self._db.run("account_data.put_room", self._put_room_txn, user_id, room_id, data_type, content)

    def _put_room_txn(self, txn: Txn, user_id: str, room_id: str, data_type: str, content: dict[str, Any]) -> int:
        position = next_id(txn, "account_data")
        txn.execute(
            "INSERT INTO room_account_data (user_id, room_id, type, content, stream_id) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = excluded.content,"
            " stream_id = excluded.stream_id",
            (user_id, room_id, data_type, _encode(content), position),
        )
        return position

    async def get_global(self, user_id: str, data_type: str) -> dict[str, Any] | None:
        row = await self._db.run(
            "account_data.get_global",
            lambda txn: txn.execute(
                "SELECT content FROM account_data WHERE user_id = ? AND type = ?", (user_id, data_type)
            ).fetchone(),
            readonly=True,
        )
        return json.loads(row[0]) if row else None

    async def get_room(self, user_id: str, room_id: str, data_type: str) -> dict[str, Any] | None:
        row = await self._db.run(
            "account_data.get_room",
            lambda txn: txn.execute(
                "SELECT content FROM room_account_data WHERE user_id = ? AND room_id = ? AND type = ?",
                (user_id, room_id, data_type),
            ).fetchone(),
            readonly=True,
        )
        return json.loads(row[0]) if row else None

    async def current_position(self) -> int:
        return await self._db.run(
            "account_data.current_position", lambda txn: current_id(txn, "account_data"), readonly=True
        )

    async def global_account_data(self, user_id: str, after: int | None, upto: int) -> dict[str, dict[str, Any]]:
        """type -> content of the user's global account data written in (after, upto]; all of it
        when `after` is None."""
        rows = await self._db.run(
            "account_data.global_changes",
            lambda txn: txn.execute(
                "SELECT type, content FROM account_data WHERE user_id = ? AND stream_id > ? AND stream_id <= ?",
                (user_id, after if after is not None else 0, upto),
            ).fetchall(),
            readonly=True,
        )
        return {data_type: json.loads(content) for data_type, content in rows}

    async def room_account_data(
        self, user_id: str, after: int | None, upto: int
    ) -> dict[str, dict[str, dict[str, Any]]]:
        """room id -> type -> content of the user's room account data written in (after, upto]."""
        return await self._db.run(
            "account_data.room_changes", room_account_data_txn, user_id, after or 0, upto, readonly=True
        )


def room_account_data_txn(txn: Txn, user_id: str, after: int, upto: int) -> dict[str, dict[str, dict[str, Any]]]:
    """room id -> type -> content of the user's room account data written in (after, upto]."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for room_id, data_type, content in txn.execute(
        "SELECT room_id, type, content FROM room_account_data WHERE user_id = ? AND stream_id > ? AND stream_id <= ?",
        (user_id, after, upto),
    ).fetchall():
        out.setdefault(room_id, {})[data_type] = json.loads(content)
    return out
