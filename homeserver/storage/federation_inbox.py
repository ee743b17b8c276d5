"""Transactions other servers sent us, answered again when they retry (PUT /send is idempotent)."""

import json
import time

from homeserver.storage.database import Database, Txn

KEEP_MS = 24 * 3600 * 1000  # a peer retries within minutes; a day is plenty


class FederationInboxStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_response(self, origin: str, txn_id: str) -> dict | None:
        row = await self._db.run(
            "federation_inbox.get",
            lambda txn: txn.execute(
                "SELECT response FROM federation_inbound_txns WHERE origin = ? AND txn_id = ?", (origin, txn_id)
            ).fetchone(),
            readonly=True,
        )
        return json.loads(row[0]) if row else None

    async def put_response(self, origin: str, txn_id: str, response: dict) -> None:
        """Remember the answer, and forget this origin's answers older than KEEP_MS (a bounded delete)."""
        await self._db.run("federation_inbox.put", self._put_txn, origin, txn_id, response)

    def _put_txn(self, txn: Txn, origin: str, txn_id: str, response: dict) -> None:
        now = int(time.time() * 1000)
        txn.execute(
            "DELETE FROM federation_inbound_txns WHERE origin = ? AND (txn_id = ? OR received_ts < ?)",
            (origin, txn_id, now - KEEP_MS),
        )
        txn.execute(
            "INSERT INTO federation_inbound_txns (origin, txn_id, response, received_ts) VALUES (?, ?, ?, ?)",
            (origin, txn_id, json.dumps(response), now),
        )
