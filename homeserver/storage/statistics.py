"""Database statistics for operators: rows and bytes per table, the biggest rooms.

Exact row counts read whole tables; on PostgreSQL the default is the planner's live-row estimate
(pg_stat_user_tables, kept up to date by autovacuum), which costs nothing whatever the table's size.
"""

from dataclasses import dataclass

from homeserver.storage.database import Database, Txn


@dataclass(frozen=True)
class TableStats:
    name: str
    rows: int
    bytes: int | None  # with indexes; None where the engine does not say (SQLite)


@dataclass(frozen=True)
class DatabaseStats:
    engine: str
    size_bytes: int
    rows_estimated: bool
    tables: list[TableStats]


@dataclass(frozen=True)
class RoomSize:
    room_id: str
    events: int
    state_groups: int
    joined_members: int


class StatisticsStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def database(self, exact: bool) -> DatabaseStats:
        return await self._db.run("statistics.database", self._database_txn, exact, readonly=True)

    def _database_txn(self, txn: Txn, exact: bool) -> DatabaseStats:
        if txn.engine_name == "psycopg2":
            size = txn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
            rows = txn.execute(
                "SELECT relname, n_live_tup, pg_total_relation_size(relid) FROM pg_stat_user_tables"
                " WHERE schemaname = current_schema() ORDER BY relname"
            ).fetchall()
            tables = [TableStats(name, int(count), int(size)) for name, count, size in rows]
        else:
            page_count = txn.execute("PRAGMA page_count").fetchone()[0]
            page_size = txn.execute("PRAGMA page_size").fetchone()[0]
            size = page_count * page_size
            names = txn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
            ).fetchall()
            tables = [TableStats(name, 0, None) for (name,) in names]
            exact = True  # counting is the only way SQLite knows
        if exact:
            tables = [
                TableStats(t.name, int(txn.execute(f'SELECT count(*) FROM "{t.name}"').fetchone()[0]), t.bytes)
                for t in tables
            ]
        return DatabaseStats(txn.engine_name, int(size), not exact, tables)

    async def biggest_rooms(self, limit: int) -> list[RoomSize]:
        """The rooms with the most events, most first. Reads the whole (room_id, stream_ordering) index of
        events once: an operator's question, never asked by a request path."""
        return await self._db.run("statistics.biggest_rooms", self._biggest_txn, limit, readonly=True)

    def _biggest_txn(self, txn: Txn, limit: int) -> list[RoomSize]:
        rows = txn.execute(
            "SELECT room_id, count(*) FROM events GROUP BY room_id ORDER BY count(*) DESC, room_id LIMIT ?", (limit,)
        ).fetchall()
        return [self._room_size_txn(txn, room_id, int(events)) for room_id, events in rows]

    async def room_size(self, room_id: str) -> RoomSize:
        return await self._db.run("statistics.room_size", self._room_size_txn, room_id, None, readonly=True)

    def _room_size_txn(self, txn: Txn, room_id: str, events: int | None) -> RoomSize:
        if events is None:
            events = int(txn.execute("SELECT count(*) FROM events WHERE room_id = ?", (room_id,)).fetchone()[0])
        groups = txn.execute("SELECT count(*) FROM state_groups WHERE room_id = ?", (room_id,)).fetchone()[0]
        joined = txn.execute(
            "SELECT count(*) FROM current_state WHERE room_id = ? AND type = 'm.room.member' AND membership = 'join'",
            (room_id,),
        ).fetchone()[0]
        return RoomSize(room_id, events, int(groups), int(joined))
