"""Sync filters users upload, by id."""

import json
from typing import Any

from homeserver.storage.database import Database, Txn
from homeserver.storage.ids import next_id


class FilterStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, user_id: str, definition: Any) -> int:
        return await self._db.run("filters.add", self._add_txn, user_id, json.dumps(definition))

    def _add_txn(self, txn: Txn, user_id: str, text: str) -> int:
        filter_id = next_id(txn, "filters")
        txn.execute(
            "INSERT INTO user_filters (user_id, filter_id, filter_json) VALUES (?, ?, ?)", (user_id, filter_id, text)
        )
        return filter_id

    async def get(self, user_id: str, filter_id: int) -> Any | None:
        row = await self._db.run(
            "filters.get",
            lambda txn: txn.execute(
                "SELECT filter_json FROM user_filters WHERE user_id = ? AND filter_id = ?", (user_id, filter_id)
            ).fetchone(),
            readonly=True,
        )
        return json.loads(row[0]) if row else None
