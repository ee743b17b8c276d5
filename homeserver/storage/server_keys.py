"""Other servers' signing keys, with the signed key documents they came from."""

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from homeserver.storage.database import Database, Txn


@dataclass(frozen=True)
class StoredKey:
    server_name: str
    key_id: str
    verify_key: str  # unpadded base64
    valid_until_ts: int
    key_json: dict[str, Any]  # the whole document, as signed by its server (and perhaps notaries)


class ServerKeyStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_keys(self, server_name: str) -> list[StoredKey]:
        rows = await self._db.run(
            "server_keys.get",
            lambda txn: txn.execute(
                "SELECT key_id, verify_key, valid_until_ts, key_json FROM server_keys WHERE server_name = ?",
                (server_name,),
            ).fetchall(),
            readonly=True,
        )
        return [StoredKey(server_name, r[0], r[1], r[2], json.loads(r[3])) for r in rows]

    async def store_keys(self, keys: Iterable[StoredKey], fetched_ts: int) -> None:
        """Keep these keys, replacing what we held for the same ids (a newer document wins, an older one
        never replaces it: two fetches may finish out of order)."""
        await self._db.run("server_keys.store", self._store_txn, list(keys), fetched_ts)

    def _store_txn(self, txn: Txn, keys: list[StoredKey], fetched_ts: int) -> None:
        txn.executemany(
            "INSERT INTO server_keys (server_name, key_id, verify_key, valid_until_ts, fetched_ts, key_json)"
            " VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (server_name, key_id) DO UPDATE SET verify_key = excluded.verify_key,"
            " valid_until_ts = excluded.valid_until_ts, fetched_ts = excluded.fetched_ts, key_json = excluded.key_json"
            " WHERE excluded.valid_until_ts >= server_keys.valid_until_ts",
            [
                (k.server_name, k.key_id, k.verify_key, k.valid_until_ts, fetched_ts, json.dumps(k.key_json))
                for k in keys
            ],
        )
