"""Send-to-device inboxes: messages wait, in stream order, until their device acknowledges them.

Every message takes its own position in the `to_device` stream, handed out under the counter's row
lock, so positions are in commit order and a reader that saw position N has seen every message up to N.
"""

import json
import time
from collections.abc import Sequence
from typing import Any

from homeserver.storage.database import Database, Txn
from homeserver.storage.events import TxnKey
from homeserver.storage.federation_outbox import add_outbox_edus_txn
from homeserver.storage.ids import current_id

STREAM = "to_device"
TXN_LIFETIME_MS = 24 * 60 * 60 * 1000  # a client retries within minutes; a day is plenty
DELETE_BATCH = 1000  # rows per transaction when acknowledged messages are deleted


def _reserve_positions(txn: Txn, count: int) -> int:
    """Take `count` consecutive positions of the stream; returns the first."""
    txn.execute("UPDATE stream_counters SET value = value + ? WHERE name = ?", (count, STREAM))
    return current_id(txn, STREAM) - count + 1


def delete_inboxes_of_deleted_devices_txn(txn: Txn, user_id: str) -> None:
    """Drop the inboxes and transaction ids of the user's devices that no longer exist."""
    for table in ("device_inbox", "to_device_txns"):
        txn.execute(
            f"DELETE FROM {table} WHERE user_id = ? AND device_id NOT IN"
            " (SELECT device_id FROM devices WHERE user_id = ?)",
            (user_id, user_id),
        )


class ToDeviceStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add_messages(
        self,
        sender: str,
        event_type: str,
        messages: dict[str, dict[str, dict[str, Any]]],
        txn_key: TxnKey,
        remote_edus: Sequence[tuple[str, str, dict[str, Any]]] = (),
    ) -> set[str] | None:
        """Queue one message per target device (`*` meaning every device of the user; unknown devices
        are skipped), and `remote_edus` (destination, type, content) for other servers' users. Returns the
        local users that got a message, or None if `txn_key` was seen before, in which case nothing is
        queued again."""
        return await self._db.run(
            "to_device.add_messages", self._add_txn, sender, event_type, messages, txn_key, remote_edus
        )

    def _add_txn(
        self,
        txn: Txn,
        sender: str,
        event_type: str,
        messages: dict[str, dict[str, dict[str, Any]]],
        key: TxnKey,
        remote_edus: Sequence[tuple[str, str, dict[str, Any]]],
    ) -> set[str] | None:
        now = int(time.time() * 1000)
        txn.execute(
            "DELETE FROM to_device_txns WHERE user_id = ? AND device_id = ? AND created_ts < ?",
            (key.user_id, key.device_id, now - TXN_LIFETIME_MS),
        )
        txn.execute(
            "INSERT INTO to_device_txns (user_id, device_id, scope, txn_id, created_ts) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (user_id, device_id, scope, txn_id) DO NOTHING",
            (key.user_id, key.device_id, key.scope, key.txn_id, now),
        )
        if txn.rowcount == 0:
            return None
        add_outbox_edus_txn(txn, remote_edus)
        rows: list[tuple[str, str, str]] = []
        for user_id, by_device in messages.items():
            devices = {
                r[0] for r in txn.execute("SELECT device_id FROM devices WHERE user_id = ?", (user_id,)).fetchall()
            }
            targets: dict[str, dict[str, Any]] = {}
            if "*" in by_device:
                targets = dict.fromkeys(sorted(devices), by_device["*"])
            for device_id, content in by_device.items():
                if device_id != "*" and device_id in devices:
                    targets[device_id] = content  # one message per device: a named device wins over `*`
            for device_id, content in targets.items():
                message = {"type": event_type, "sender": sender, "content": content}
                body = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
                rows.append((user_id, device_id, body))
        if rows:
            first = _reserve_positions(txn, len(rows))
            txn.insert_many(
                "device_inbox",
                ("stream_id", "user_id", "device_id", "message_json"),
                [(first + i, *row) for i, row in enumerate(rows)],
            )
        return {row[0] for row in rows}

    async def messages_for(
        self, user_id: str, device_id: str, after: int, upto: int, limit: int
    ) -> tuple[list[dict], int]:
        return await self._db.run(
            "to_device.messages_for", messages_txn, user_id, device_id, after, upto, limit, readonly=True
        )

    async def delete_up_to(self, user_id: str, device_id: str, upto: int) -> None:
        """Delete the device's messages at positions <= upto, in bounded batches."""
        while True:
            deleted = await self._db.run("to_device.delete_up_to", self._delete_batch_txn, user_id, device_id, upto)
            if deleted < DELETE_BATCH:
                return

    def _delete_batch_txn(self, txn: Txn, user_id: str, device_id: str, upto: int) -> int:
        txn.execute(
            "DELETE FROM device_inbox WHERE stream_id IN (SELECT stream_id FROM device_inbox"
            " WHERE user_id = ? AND device_id = ? AND stream_id <= ? ORDER BY stream_id LIMIT ?)",
            (user_id, device_id, upto, DELETE_BATCH),
        )
        return txn.rowcount

    async def current_position(self) -> int:
        return await self._db.run("to_device.current_position", current_id, STREAM, readonly=True)

    async def pending_count(self, user_id: str, device_id: str) -> int:
        row = await self._db.run(
            "to_device.pending_count",
            lambda txn: txn.execute(
                "SELECT count(*) FROM device_inbox WHERE user_id = ? AND device_id = ?", (user_id, device_id)
            ).fetchone(),
            readonly=True,
        )
        return int(row[0]) if row else 0


def messages_txn(txn: Txn, user_id: str, device_id: str, after: int, upto: int, limit: int) -> tuple[list[dict], int]:
    """The device's messages at positions in (after, upto], oldest first, at most `limit`; and the
    position of the last one returned, or `upto` if none or all were returned."""
    rows = txn.execute(
        "SELECT stream_id, message_json FROM device_inbox"
        " WHERE user_id = ? AND device_id = ? AND stream_id > ? AND stream_id <= ? ORDER BY stream_id LIMIT ?",
        (user_id, device_id, after, upto, limit + 1),
    ).fetchall()
    if len(rows) > limit:
        rows = rows[:limit]
        position = int(rows[-1][0]) if rows else after
    else:
        position = upto
    return [json.loads(r[1]) for r in rows], position
