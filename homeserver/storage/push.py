"""Push actions and the per-(user, room) unread counts kept beside them, the notifications a user pages
through, and the pruner's batches.

Lock order on PostgreSQL: a transaction that updates several summaries does so in (user_id, room_id)
order (an event's summary upserts, the pruner's progress), so two of them never deadlock.
"""

from dataclasses import dataclass

from homeserver.storage.database import Database, Txn
from homeserver.storage.ids import current_id

# The PostgreSQL advisory lock every pruner batch takes for its transaction: two server processes on one
# database never prune at once (the second finds it taken and rests). Arbitrary, but fixed; the schema
# migrations use 8008.
PRUNE_LOCK = 8009
# Summaries one read-rows batch visits at most: each costs a few index probes, and a batch stays short.
SUMMARIES_PER_BATCH = 32
# The pruner's backlog is counted up to this many rows of each kind: an index range of bounded length, so the
# count stays a short transaction however far behind the pruner is. A gauge at the cap means "at least".
BACKLOG_CAP = 100_000


@dataclass(frozen=True)
class PushAction:
    user_id: str
    notify: bool
    highlight: bool
    sound: str | None = None


def count_push_actions_txn(txn: Txn, room_id: str, actions: list[PushAction]) -> None:
    """Bump the users' unread counts for a new event's actions, inside the event's own transaction and
    before it takes the events counter, whose row lock every send waits for until commit."""
    txn.insert_many(
        "push_summary",
        ("user_id", "room_id", "notification_count", "highlight_count", "read_stream_ordering"),
        [
            (a.user_id, room_id, int(a.notify), int(a.highlight), 0)
            for a in sorted(actions, key=lambda a: a.user_id)  # the lock order (module docstring)
        ],
        on_conflict="ON CONFLICT (user_id, room_id) DO UPDATE SET"
        " notification_count = push_summary.notification_count + excluded.notification_count,"
        " highlight_count = push_summary.highlight_count + excluded.highlight_count",
    )


def record_push_actions_txn(txn: Txn, room_id: str, event_id: str, stream: int, actions: list[PushAction]) -> None:
    """Write an event's push actions once its stream ordering is known (counted by count_push_actions_txn)."""
    txn.insert_many(
        "event_push_actions",
        ("user_id", "room_id", "stream_ordering", "event_id", "notify", "highlight", "sound"),
        [(a.user_id, room_id, stream, event_id, int(a.notify), int(a.highlight), a.sound) for a in actions],
    )


def unread_counts_txn(txn: Txn, user_id: str) -> dict[str, tuple[int, int]]:
    """room id -> (notification_count, highlight_count) for the user's rooms with a summary."""
    rows = txn.execute(
        "SELECT room_id, notification_count, highlight_count FROM push_summary WHERE user_id = ?", (user_id,)
    ).fetchall()
    return {room_id: (notify, highlight) for room_id, notify, highlight in rows}


@dataclass(frozen=True)
class NotificationRow:
    room_id: str
    stream_ordering: int
    event_id: str
    notify: bool
    highlight: bool
    sound: str | None
    read: bool  # at or before the user's read position in the room


# (stream_ordering, user_id, room_id): the order expiry deletes in.
ActionKey = tuple[int, str, str]


@dataclass(frozen=True)
class PruneBatch:
    rows: int  # push actions deleted
    summaries_done: int = 0  # summaries whose read actions are now all gone
    last_key: ActionKey | None = None  # the last action an expiry batch deleted: the next starts after it
    locked: bool = False  # another process holds PRUNE_LOCK: nothing was done


@dataclass(frozen=True)
class PruneBacklog:
    read_summaries: int  # (user, room)s with read actions left to delete, up to BACKLOG_CAP
    expired_rows: int  # actions past retention, up to BACKLOG_CAP


@dataclass(frozen=True)
class StreamMark:
    ts: int  # ms
    stream_ordering: int  # every event at or below it had been received by `ts`


class PushStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def unread_counts(self, user_id: str) -> dict[str, tuple[int, int]]:
        return await self._db.run("push.unread_counts", unread_counts_txn, user_id, readonly=True)

    async def mark_read(self, user_id: str, room_id: str, stream: int) -> None:
        """Move the user's read position to `stream`. A small, bounded amount of work: the counts are
        recomputed from the actions after the new position (none, for a receipt on the latest event),
        and nothing is deleted here: the pruner deletes the rows now read."""
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

    # -- /notifications ---------------------------------------------------------------------------

    async def notifications(
        self, user_id: str, before: int | None, limit: int, only_highlight: bool
    ) -> list[NotificationRow]:
        """The user's push actions newest first, those below stream ordering `before` when given: a
        backward range of (user_id, stream_ordering), or of the highlights' partial index."""
        sql = (
            "SELECT a.room_id, a.stream_ordering, a.event_id, a.notify, a.highlight, a.sound,"
            " coalesce(s.read_stream_ordering, 0)"
            " FROM event_push_actions a LEFT JOIN push_summary s ON s.user_id = a.user_id AND s.room_id = a.room_id"
            " WHERE a.user_id = ?"
        )
        args: list = [user_id]
        if before is not None:
            sql += " AND a.stream_ordering < ?"
            args.append(before)
        if only_highlight:
            sql += " AND a.highlight = 1"  # as written, so both engines use the partial index
        sql += " ORDER BY a.stream_ordering DESC LIMIT ?"
        args.append(limit)
        rows = await self._db.run(
            "push.notifications", lambda txn: txn.execute(sql, args).fetchall(), readonly=True
        )
        return [
            NotificationRow(room_id, stream, event_id, bool(notify), bool(highlight), sound, stream <= read)
            for room_id, stream, event_id, notify, highlight, sound, read in rows
        ]

    # -- the pruner's batches -------------------------------------------------------------------------
    # Each is one short transaction: index probes and ranges over at most `limit` rows, never a scan.

    async def prune_read_actions(self, limit: int) -> PruneBatch:
        """Delete at most `limit` read actions: those at or below their summary's read position, from the
        summaries with some left (the partial index), in key order. A summary's progress is kept in
        pruned_stream_ordering, so the next batch starts at its first live row instead of stepping over the
        ones just deleted (PostgreSQL keeps their index entries until vacuum). Few statements, as each is a
        round trip that a busy server stretches: the lock comes with the first, and each summary's progress
        and deletion are two."""
        return await self._db.run("push.prune_read", self._prune_read_txn, limit)

    def _prune_read_txn(self, txn: Txn, limit: int) -> PruneBatch:
        locking = txn.engine_name == "psycopg2"
        summaries = txn.execute(
            "SELECT user_id, room_id, read_stream_ordering, pruned_stream_ordering"
            + (", pg_try_advisory_xact_lock(?)" if locking else "")
            + " FROM push_summary WHERE read_stream_ordering > pruned_stream_ordering"
            " ORDER BY user_id, room_id LIMIT ?",
            ((PRUNE_LOCK,) if locking else ()) + (SUMMARIES_PER_BATCH,),
        ).fetchall()
        if summaries and locking and not summaries[0][4]:
            return PruneBatch(0, locked=True)
        budget, done = limit, 0
        for user_id, room_id, read, pruned, *_ in summaries:  # key order: the lock order (module docstring)
            if budget == 0:
                break
            # Progress first: to the last of the next `budget` read rows, or to the read position when that
            # takes all that are left. Then exactly the rows up to it go ((user, room, stream) is the key).
            txn.execute(
                "UPDATE push_summary SET pruned_stream_ordering = (SELECT CASE WHEN count(*) < ? THEN ?"
                " ELSE max(stream_ordering) END FROM (SELECT stream_ordering FROM event_push_actions"
                " WHERE user_id = ? AND room_id = ? AND stream_ordering > ? AND stream_ordering <= ?"
                " ORDER BY stream_ordering LIMIT ?) AS batch) WHERE user_id = ? AND room_id = ?",
                (budget, read, user_id, room_id, pruned, read, budget, user_id, room_id),
            )
            deleted = txn.execute(
                "DELETE FROM event_push_actions WHERE user_id = ? AND room_id = ? AND stream_ordering > ?"
                " AND stream_ordering <= (SELECT pruned_stream_ordering FROM push_summary"
                " WHERE user_id = ? AND room_id = ?)",
                (user_id, room_id, pruned, user_id, room_id),
            ).rowcount
            done += deleted < budget  # fewer than asked for: nothing read is left
            budget -= deleted
        return PruneBatch(limit - budget, summaries_done=done)

    async def prune_expired_actions(self, after: ActionKey | None, upto: int, limit: int) -> PruneBatch:
        """Delete the `limit` oldest actions with stream orderings up to `upto`, read or not, in the order of
        (stream_ordering, user_id, room_id) after the key `after` (the last batch's `last_key`). The whole
        key, not the stream ordering alone: one event in a big room has an action for every member."""
        return await self._db.run("push.prune_expired", self._prune_expired_txn, after, upto, limit)

    def _prune_expired_txn(self, txn: Txn, after: ActionKey | None, upto: int, limit: int) -> PruneBatch:
        if not _prune_lock_txn(txn):
            return PruneBatch(0, locked=True)
        low = after or (-1, "", "")
        # The plain bounds on stream_ordering beside the row values let either planner start the range at once.
        keys = txn.execute(
            "SELECT stream_ordering, user_id, room_id FROM event_push_actions"
            " WHERE stream_ordering >= ? AND stream_ordering <= ? AND (stream_ordering, user_id, room_id) > (?, ?, ?)"
            " ORDER BY stream_ordering, user_id, room_id LIMIT ?",
            (low[0], upto, *low, limit),
        ).fetchall()
        if not keys:
            return PruneBatch(0)
        last = tuple(keys[-1])
        txn.execute(
            "DELETE FROM event_push_actions WHERE stream_ordering >= ? AND stream_ordering <= ?"
            " AND (stream_ordering, user_id, room_id) > (?, ?, ?) AND (stream_ordering, user_id, room_id) <= (?, ?, ?)",
            (low[0], last[0], *low, *last),
        )
        return PruneBatch(txn.rowcount, last_key=last)  # the keys are unique: exactly the rows just read

    async def record_stream_mark(self, now_ms: int, spacing_ms: int) -> None:
        """Note that every event so far was received by `now_ms`, unless a mark is newer than `spacing_ms`."""
        await self._db.run("push.stream_mark", self._record_stream_mark_txn, now_ms, spacing_ms)

    def _record_stream_mark_txn(self, txn: Txn, now_ms: int, spacing_ms: int) -> None:
        if txn.execute("SELECT 1 FROM push_prune_marks WHERE ts > ?", (now_ms - spacing_ms,)).fetchone():
            return
        txn.execute(
            "INSERT INTO push_prune_marks (ts, stream_ordering) VALUES (?, ?) ON CONFLICT (ts) DO NOTHING",
            (now_ms, current_id(txn, "events")),
        )

    async def expiry_mark(self, cutoff_ms: int) -> StreamMark | None:
        """The newest mark at or before `cutoff_ms`: actions at or below its stream ordering were received
        before the cutoff. None while the pruner has not been running for that long."""
        row = await self._db.run(
            "push.expiry_mark",
            lambda txn: txn.execute(
                "SELECT ts, stream_ordering FROM push_prune_marks WHERE ts <= ? ORDER BY ts DESC LIMIT 1",
                (cutoff_ms,),
            ).fetchone(),
            readonly=True,
        )
        return StreamMark(int(row[0]), int(row[1])) if row else None

    async def prune_backlog(self, expired_upto: int | None) -> PruneBacklog:
        """What the pruner has yet to delete, each kind counted up to BACKLOG_CAP: the summaries with read
        actions left (the partial index) and the actions at or below `expired_upto` (the expiry mark's
        stream ordering; None while nothing can have expired)."""

        def txn_fn(txn: Txn) -> PruneBacklog:
            summaries = txn.execute(
                "SELECT count(*) FROM (SELECT 1 FROM push_summary WHERE read_stream_ordering > pruned_stream_ordering"
                " LIMIT ?) AS backlog",
                (BACKLOG_CAP,),
            ).fetchone()[0]
            expired = 0
            if expired_upto is not None:
                expired = txn.execute(
                    "SELECT count(*) FROM (SELECT 1 FROM event_push_actions WHERE stream_ordering <= ? LIMIT ?)"
                    " AS backlog",
                    (expired_upto, BACKLOG_CAP),
                ).fetchone()[0]
            return PruneBacklog(int(summaries), int(expired))

        return await self._db.run("push.prune_backlog", txn_fn, readonly=True)

    async def delete_marks_before(self, ts: int) -> None:
        """Marks older than the one expiry used are never needed again."""
        await self._db.run(
            "push.delete_marks",
            lambda txn: txn.execute("DELETE FROM push_prune_marks WHERE ts < ?", (ts,)),
        )

    def longest_prune_transaction_s(self) -> float:
        longest = self._db.stats.longest
        return max(longest.get("push.prune_read", 0.0), longest.get("push.prune_expired", 0.0))


def _prune_lock_txn(txn: Txn) -> bool:
    """Take PRUNE_LOCK for this transaction on PostgreSQL; False if another session holds it. SQLite is one
    process's file and serialises writers anyway."""
    if txn.engine_name != "psycopg2":
        return True
    return bool(txn.execute("SELECT pg_try_advisory_xact_lock(?)", (PRUNE_LOCK,)).fetchone()[0])
