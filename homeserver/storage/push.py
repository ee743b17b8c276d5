"""Push actions and the per-(user, room) unread counts kept beside them."""

from dataclasses import dataclass

from homeserver.storage.database import Database, Txn


@dataclass(frozen=True)
class PushAction:
    user_id: str
    notify: bool
    highlight: bool
    sound: str | None = None


def record_push_actions_txn(txn: Txn, room_id: str, event_id: str, stream: int, actions: list[PushAction]) -> None:
    """Write an event's push actions and bump the counts, inside the event's own transaction."""
    if not actions:
        return
    txn.insert_many(
        "event_push_actions",
        ("user_id", "room_id", "stream_ordering", "event_id", "notify", "highlight", "sound"),
        [(a.user_id, room_id, stream, event_id, int(a.notify), int(a.highlight), a.sound) for a in actions],
    )
    for action in actions:
        txn.execute(
            "INSERT INTO push_summary (user_id, room_id, notification_count, highlight_count, read_stream_ordering)"
            " VALUES (?, ?, ?, ?, 0) ON CONFLICT (user_id, room_id) DO UPDATE SET"
            " notification_count = push_summary.notification_count + excluded.notification_count,"
            " highlight_count = push_summary.highlight_count + excluded.highlight_count",
            (action.user_id, room_id, int(action.notify), int(action.highlight)),
        )


class PushStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def unread_counts(self, user_id: str) -> dict[str, tuple[int, int]]:
        """room id -> (notification_count, highlight_count) for the user's rooms with a summary."""
        rows = await self._db.run(
            "push.unread_counts",
            lambda txn: txn.execute(
                "SELECT room_id, notification_count, highlight_count FROM push_summary WHERE user_id = ?",
                (user_id,),
            ).fetchall(),
            readonly=True,
        )
        return {room_id: (notify, highlight) for room_id, notify, highlight in rows}

    async def mark_read(self, user_id: str, room_id: str, stream: int) -> None:
        """Move the user's read position to `stream`. A small, bounded amount of work: the counts are
        recomputed from the actions after the new position (none, for a receipt on the latest event),
        and nothing is deleted here."""
        await self._db.run("push.mark_read", self._mark_read_txn, user_id, room_id, stream)

    def _mark_read_txn(self, txn: Txn, user_id: str, room_id: str, stream: int) -> None:
        row = txn.execute(
            "SELECT read_stream_ordering FROM push_summary WHERE user_id = ? AND room_id = ?", (user_id, room_id)
        ).fetchone()
        if row is None or row[0] >= stream:
            return  # nothing counted yet, or the position does not move back
        notify, highlight = txn.execute(
            "SELECT coalesce(sum(notify), 0), coalesce(sum(highlight), 0) FROM event_push_actions"
            " WHERE user_id = ? AND room_id = ? AND stream_ordering > ?",
            (user_id, room_id, stream),
        ).fetchone()
        txn.execute(
            "UPDATE push_summary SET notification_count = ?, highlight_count = ?, read_stream_ordering = ?"
            " WHERE user_id = ? AND room_id = ?",
            (notify, highlight, stream, user_id, room_id),
        )
