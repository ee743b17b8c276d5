"""What admin purges delete. Each `delete_*` call is one short transaction over at most `limit` rows picked
by key order, so a purge is a run of keyed batches (handlers/batches.py): every batch leaves the database
consistent and the room readable, and what is left is found again from the keys, so an interrupted purge
is finished by running it again. The `count_*` calls answer a dry run with the same predicates.

History before a point loses every event before it except state events (every state group is made of
them and they are each other's auth events: keeping them keeps every group, every delta chain and every
auth chain whole, and a room has far fewer of them than messages), redactions of kept events (what was
redacted stays redacted) and forward extremities (new events are built on them).
"""

from collections.abc import Sequence

from homeserver.storage.database import Database, Txn
from homeserver.storage.events import TopologicalPosition

# An event the history purge deletes: in the room, at or before `upto`, and none of the kept kinds.
_PURGEABLE = (
    "e.room_id = ? AND e.depth <= ? AND (e.depth < ? OR e.stream_ordering <= ?) AND e.state_key IS NULL"
    " AND NOT EXISTS (SELECT 1 FROM forward_extremities f WHERE f.room_id = e.room_id AND f.event_id = e.event_id)"
    " AND NOT EXISTS (SELECT 1 FROM redactions r JOIN events t ON t.event_id = r.redacts"
    "  WHERE r.event_id = e.event_id"
    "  AND (t.state_key IS NOT NULL OR t.depth > ? OR (t.depth = ? AND t.stream_ordering > ?)))"
)

# Tables whose key starts with the room id: deleted a key range at a time.
_ROOM_KEYED = {
    "receipts": "room_id, receipt_type, user_id, thread_id",
    "current_state": "room_id, type, state_key",
    "room_aliases": "room_alias",
}
# Tables keyed by (user_id, room_id, ...): deleted for a chunk of the room's members at a time.
USER_KEYED = ("push_summary", "room_account_data", "forgotten_rooms")
_CHUNK = 500


def _purgeable_args(room_id: str, upto: TopologicalPosition) -> list:
    return [room_id, upto.depth, upto.depth, upto.stream, upto.depth, upto.depth, upto.stream]


def _marks(values: Sequence) -> str:
    return ",".join("?" * len(values))


class PurgeStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- where a history purge cuts -----------------------------------------------------------

    async def event_place(self, event_id: str) -> tuple[str, TopologicalPosition] | None:
        """(room id, place in the timeline) of an event we hold."""
        row = await self._db.run(
            "purge.event_place",
            lambda txn: txn.execute(
                "SELECT room_id, depth, stream_ordering FROM events WHERE event_id = ?", (event_id,)
            ).fetchone(),
            readonly=True,
        )
        return (row[0], TopologicalPosition(row[1], row[2])) if row else None

    async def first_place_since(self, room_id: str, ts: int) -> TopologicalPosition | None:
        """The first event of the room in timeline order sent at or after `ts` (ms). Reads the room's
        timeline index up to it: once per purge, never per batch."""
        row = await self._db.run(
            "purge.first_place_since",
            lambda txn: txn.execute(
                "SELECT depth, stream_ordering FROM events WHERE room_id = ? AND origin_server_ts >= ?"
                " ORDER BY depth, stream_ordering LIMIT 1",
                (room_id, ts),
            ).fetchone(),
            readonly=True,
        )
        return TopologicalPosition(row[0], row[1]) if row else None

    async def newest_place(self, room_id: str) -> TopologicalPosition | None:
        row = await self._db.run(
            "purge.newest_place",
            lambda txn: txn.execute(
                "SELECT depth, stream_ordering FROM events WHERE room_id = ?"
                " ORDER BY depth DESC, stream_ordering DESC LIMIT 1",
                (room_id,),
            ).fetchone(),
            readonly=True,
        )
        return TopologicalPosition(row[0], row[1]) if row else None

    async def first_kept_stream(self, room_id: str, upto: TopologicalPosition) -> int | None:
        """The lowest stream ordering among the events after the cut and the forward extremities:
        push actions below it belong to purged events or to kept state events of the purged past."""
        return await self._db.run("purge.first_kept_stream", self._first_kept_txn, room_id, upto, readonly=True)

    def _first_kept_txn(self, txn: Txn, room_id: str, upto: TopologicalPosition) -> int | None:
        after = txn.execute(
            "SELECT stream_ordering FROM events WHERE room_id = ?"
            " AND (depth > ? OR (depth = ? AND stream_ordering > ?)) ORDER BY stream_ordering LIMIT 1",
            (room_id, upto.depth, upto.depth, upto.stream),
        ).fetchone()
        extremity = txn.execute(
            "SELECT min(e.stream_ordering) FROM forward_extremities f JOIN events e ON e.event_id = f.event_id"
            " WHERE f.room_id = ?",
            (room_id,),
        ).fetchone()
        found = [row[0] for row in (after, extremity) if row and row[0] is not None]
        return min(found) if found else None

    async def members(self, room_id: str) -> list[str]:
        """Everyone with a membership in the room (leave and ban included): the only users who can hold
        the room's push actions, receipts or room account data."""
        rows = await self._db.run(
            "purge.members",
            lambda txn: txn.execute(
                "SELECT state_key FROM current_state WHERE room_id = ? AND type = 'm.room.member' ORDER BY state_key",
                (room_id,),
            ).fetchall(),
            readonly=True,
        )
        return [r[0] for r in rows]

    # -- history --------------------------------------------------------------------------------

    async def count_history(self, room_id: str, upto: TopologicalPosition) -> dict[str, int]:
        return await self._db.run("purge.count_history", self._count_history_txn, room_id, upto, readonly=True)

    def _count_history_txn(self, txn: Txn, room_id: str, upto: TopologicalPosition) -> dict[str, int]:
        args = _purgeable_args(room_id, upto)
        events = txn.execute(f"SELECT count(*) FROM events e WHERE {_PURGEABLE}", args).fetchone()[0]
        redactions = txn.execute(
            f"SELECT count(*) FROM redactions WHERE event_id IN (SELECT e.event_id FROM events e WHERE {_PURGEABLE})",
            args,
        ).fetchone()[0]
        return {"events": int(events), "redactions": int(redactions)}

    async def delete_history_batch(
        self, room_id: str, upto: TopologicalPosition, after_stream: int, limit: int
    ) -> tuple[dict[str, int], int]:
        """Delete up to `limit` purgeable events with stream orderings above `after_stream`, lowest first.
        Returns the rows deleted per table and the highest stream ordering looked at (the next cursor)."""
        return await self._db.run(
            "purge.delete_history", self._delete_history_txn, room_id, upto, after_stream, limit
        )

    def _delete_history_txn(
        self, txn: Txn, room_id: str, upto: TopologicalPosition, after_stream: int, limit: int
    ) -> tuple[dict[str, int], int]:
        rows = txn.execute(
            f"SELECT e.stream_ordering, e.event_id FROM events e WHERE {_PURGEABLE} AND e.stream_ordering > ?"
            " ORDER BY e.stream_ordering LIMIT ?",
            [*_purgeable_args(room_id, upto), after_stream, limit],
        ).fetchall()
        if not rows:
            return {}, after_stream
        return self._delete_events_txn(txn, [r[1] for r in rows]), rows[-1][0]

    def _delete_events_txn(self, txn: Txn, event_ids: list[str]) -> dict[str, int]:
        """Delete events with the rows that hang off each: the redaction it made, its membership record."""
        done = {}
        marks = _marks(event_ids)
        for table in ("redactions", "room_memberships", "events"):
            txn.execute(f"DELETE FROM {table} WHERE event_id IN ({marks})", event_ids)
            done[table] = txn.rowcount
        return done

    # -- push actions -------------------------------------------------------------------------

    async def count_push_actions(self, users: Sequence[str], room_id: str | None, before: int | None) -> int:
        """The push actions of `users` (in `room_id` if given, below stream ordering `before` if given)."""
        return await self._db.run("purge.count_push", self._count_push_txn, list(users), room_id, before, readonly=True)

    def _count_push_txn(self, txn: Txn, users: list[str], room_id: str | None, before: int | None) -> int:
        total = 0
        for start in range(0, len(users), _CHUNK):
            chunk = users[start : start + _CHUNK]
            sql = f"SELECT count(*) FROM event_push_actions WHERE user_id IN ({_marks(chunk)})"
            args: list = list(chunk)
            if room_id is not None:
                sql += " AND room_id = ?"
                args.append(room_id)
            if before is not None:
                sql += " AND stream_ordering < ?"
                args.append(before)
            total += int(txn.execute(sql, args).fetchone()[0])
        return total

    async def delete_push_actions_batch(self, user_id: str, room_id: str | None, before: int | None, limit: int) -> int:
        """Delete the user's first `limit` push actions in key order (in `room_id` if given, below stream
        ordering `before` if given), taking the unread ones off the summary counts in the same transaction.
        Once none are left of an unbounded purge, counts with no unread action behind them are zeroed
        (the retention pruner may have deleted unread rows without lowering them)."""
        return await self._db.run("purge.delete_push", self._delete_push_txn, user_id, room_id, before, limit)

    def _delete_push_txn(self, txn: Txn, user_id: str, room_id: str | None, before: int | None, limit: int) -> int:
        where, args = "user_id = ?", [user_id]
        if room_id is not None:
            where += " AND room_id = ?"
            args.append(room_id)
        if before is not None:
            where += " AND stream_ordering < ?"
            args.append(before)
        rows = txn.execute(
            f"SELECT room_id, stream_ordering, notify, highlight FROM event_push_actions WHERE {where}"
            " ORDER BY room_id, stream_ordering LIMIT ?",
            [*args, limit],
        ).fetchall()
        if not rows:
            if before is None:
                self._zero_counts_txn(txn, where, args)
            return 0
        by_room: dict[str, list[tuple]] = {}
        for row in rows:
            by_room.setdefault(row[0], []).append(row)
        for room, actions in by_room.items():
            # The rows picked are a contiguous key range per room (new actions only come above it).
            txn.execute(
                "DELETE FROM event_push_actions WHERE user_id = ? AND room_id = ?"
                " AND stream_ordering >= ? AND stream_ordering <= ?",
                (user_id, room, actions[0][1], actions[-1][1]),
            )
            read = txn.execute(
                "SELECT read_stream_ordering FROM push_summary WHERE user_id = ? AND room_id = ?", (user_id, room)
            ).fetchone()
            if read is None:
                continue
            unread = [a for a in actions if a[1] > read[0]]
            notify, highlight = sum(a[2] for a in unread), sum(a[3] for a in unread)
            if notify or highlight:
                txn.execute(
                    "UPDATE push_summary SET"
                    " notification_count = CASE WHEN notification_count > ? THEN notification_count - ? ELSE 0 END,"
                    " highlight_count = CASE WHEN highlight_count > ? THEN highlight_count - ? ELSE 0 END"
                    " WHERE user_id = ? AND room_id = ?",
                    (notify, notify, highlight, highlight, user_id, room),
                )
        return len(rows)

    def _zero_counts_txn(self, txn: Txn, where: str, args: list) -> None:
        txn.execute(
            "UPDATE push_summary SET notification_count = 0, highlight_count = 0"
            f" WHERE {where} AND (notification_count <> 0 OR highlight_count <> 0)"
            " AND NOT EXISTS (SELECT 1 FROM event_push_actions a WHERE a.user_id = push_summary.user_id"
            "  AND a.room_id = push_summary.room_id AND a.stream_ordering > push_summary.read_stream_ordering)",
            args,
        )

    # -- a whole room -------------------------------------------------------------------------

    async def count_room(self, room_id: str, users: Sequence[str]) -> dict[str, int]:
        """Rows per table that deleting the room removes (`users`: its members, see `members`)."""
        return await self._db.run("purge.count_room", self._count_room_txn, room_id, list(users), readonly=True)

    def _count_room_txn(self, txn: Txn, room_id: str, users: list[str]) -> dict[str, int]:
        def count(sql: str, *args: object) -> int:
            return int(txn.execute(sql, args).fetchone()[0])

        counts = {
            "rooms": count("SELECT count(*) FROM rooms WHERE room_id = ?", room_id),
            "events": count("SELECT count(*) FROM events WHERE room_id = ?", room_id),
            "redactions": count(
                "SELECT count(*) FROM redactions r JOIN events e ON e.event_id = r.event_id WHERE e.room_id = ?",
                room_id,
            ),
            "room_memberships": count(
                "SELECT count(*) FROM room_memberships m JOIN events e ON e.event_id = m.event_id WHERE e.room_id = ?",
                room_id,
            ),
            "forward_extremities": count("SELECT count(*) FROM forward_extremities WHERE room_id = ?", room_id),
            "state_groups": count("SELECT count(*) FROM state_groups WHERE room_id = ?", room_id),
            "state_group_entries": count(
                "SELECT count(*) FROM state_group_entries s JOIN state_groups g ON g.id = s.state_group"
                " WHERE g.room_id = ?",
                room_id,
            ),
            **{table: count(f"SELECT count(*) FROM {table} WHERE room_id = ?", room_id) for table in _ROOM_KEYED},
            "event_push_actions": self._count_push_txn(txn, users, room_id, None),
        }
        for table in USER_KEYED:
            counts[table] = sum(
                count(
                    f"SELECT count(*) FROM {table} WHERE room_id = ? AND user_id IN ({_marks(chunk)})", room_id, *chunk
                )
                for chunk in (users[i : i + _CHUNK] for i in range(0, len(users), _CHUNK))
            )
        return counts

    async def delete_room_keyed(self, table: str, room_id: str, limit: int) -> int:
        """Delete up to `limit` of the room's rows of a table keyed by room (receipts, current_state,
        room_aliases), first keys first."""
        keys = _ROOM_KEYED[table]
        return await self._db.run(
            f"purge.delete_{table}",
            lambda txn: txn.execute(
                f"DELETE FROM {table} WHERE ({keys}) IN"
                f" (SELECT {keys} FROM {table} WHERE room_id = ? ORDER BY {keys} LIMIT ?)",
                (room_id, limit),
            ).rowcount,
        )

    async def delete_user_keyed(self, table: str, room_id: str, users: Sequence[str]) -> int:
        """Delete the room's rows of these users in a table keyed by (user_id, room_id, ...)."""
        assert table in USER_KEYED
        return await self._db.run(
            f"purge.delete_{table}",
            lambda txn: txn.execute(
                f"DELETE FROM {table} WHERE room_id = ? AND user_id IN ({_marks(users)})", (room_id, *users)
            ).rowcount,
        )

    async def delete_room_events_batch(self, room_id: str, limit: int) -> dict[str, int]:
        """Delete the room's first `limit` events in stream order, forward extremities excepted: they go
        with the room itself (`delete_room_record`), so a send racing the deletion still finds them."""
        return await self._db.run("purge.delete_room_events", self._delete_room_events_txn, room_id, limit)

    def _delete_room_events_txn(self, txn: Txn, room_id: str, limit: int) -> dict[str, int]:
        rows = txn.execute(
            "SELECT e.event_id FROM events e WHERE e.room_id = ? AND NOT EXISTS"
            " (SELECT 1 FROM forward_extremities f WHERE f.room_id = e.room_id AND f.event_id = e.event_id)"
            " ORDER BY e.stream_ordering LIMIT ?",
            (room_id, limit),
        ).fetchall()
        return self._delete_events_txn(txn, [r[0] for r in rows]) if rows else {}

    async def delete_room_record(self, room_id: str) -> dict[str, int]:
        """The step that makes the room unknown: its last events (the extremities), the extremity rows,
        any alias left and the `rooms` row, in one transaction."""
        return await self._db.run("purge.delete_room_record", self._delete_record_txn, room_id)

    def _delete_record_txn(self, txn: Txn, room_id: str) -> dict[str, int]:
        ids = [r[0] for r in txn.execute("SELECT event_id FROM events WHERE room_id = ?", (room_id,)).fetchall()]
        done = self._delete_events_txn(txn, ids) if ids else {}
        for table in ("event_outliers", "forward_extremities", "room_aliases", "rooms"):
            txn.execute(f"DELETE FROM {table} WHERE room_id = ?", (room_id,))
            done[table] = txn.rowcount
        return done

    async def delete_room_state_batch(self, room_id: str, limit: int) -> dict[str, int]:
        """Delete up to `limit` rows of the room's state groups and their entries, lowest group first.
        Only run once no event refers to them (the room's events are gone)."""
        return await self._db.run("purge.delete_room_state", self._delete_state_txn, room_id, limit)

    def _delete_state_txn(self, txn: Txn, room_id: str, limit: int) -> dict[str, int]:
        groups = txn.execute(
            "SELECT id FROM state_groups WHERE room_id = ? ORDER BY id LIMIT ?", (room_id, limit)
        ).fetchall()
        done = {"state_group_entries": 0, "state_groups": 0}
        budget = limit
        for (group,) in groups:
            if budget <= 0:
                break
            txn.execute(
                "DELETE FROM state_group_entries WHERE (state_group, type, state_key) IN"
                " (SELECT state_group, type, state_key FROM state_group_entries WHERE state_group = ?"
                " ORDER BY type, state_key LIMIT ?)",
                (group, budget),
            )
            entries = txn.rowcount
            done["state_group_entries"] += entries
            budget -= entries
            if budget > 0:  # its entries are all gone
                txn.execute("DELETE FROM state_groups WHERE id = ?", (group,))
                done["state_groups"] += 1
                budget -= 1
        return done
