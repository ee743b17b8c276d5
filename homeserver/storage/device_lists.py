"""The stream of users whose device lists changed.

A user's device list changes when a device is created or deleted, when a device uploads new keys, and
when the user's cross-signing keys or signatures change. Each change takes the next position of the
`device_lists` stream; only the user's latest position is kept, so the table has one row per user. A
change therefore shows in the range that holds the user's latest change: a reader that asked for an
earlier range just before a newer change committed sees the user in its next range instead. Nothing
is lost, and the table never needs pruning.
"""

from homeserver.storage.database import Database, Txn
from homeserver.storage.ids import current_id, next_id

STREAM = "device_lists"


def record_change_txn(txn: Txn, user_id: str) -> int:
    """Move `user_id` to the next position of the stream, inside the caller's transaction."""
    position = next_id(txn, STREAM)
    txn.execute(
        "INSERT INTO device_list_changes (user_id, stream_id) VALUES (?, ?)"
        " ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id",
        (user_id, position),
    )
    return position


class DeviceListStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record_change(self, user_id: str) -> int:
        return await self._db.run("device_lists.record_change", record_change_txn, user_id)

    async def current_position(self) -> int:
        return await self._db.run("device_lists.current_position", current_id, STREAM, readonly=True)

    async def changed_users(self, after: int, upto: int) -> set[str]:
        """Users whose device list changed at a position in (after, upto]."""
        if upto <= after:
            return set()
        rows = await self._db.run(
            "device_lists.changed_users",
            lambda txn: txn.execute(
                "SELECT user_id FROM device_list_changes WHERE stream_id > ? AND stream_id <= ?", (after, upto)
            ).fetchall(),
            readonly=True,
        )
        return {r[0] for r in rows}
