"""Copy a SQLite database to PostgreSQL, table by table, in batches that survive being interrupted.

Resuming: the target holds a table of its own, `port_db_progress` (the server never reads it), with one
row per copied table: the key of the last row copied, the count so far, and whether the table is done.
Each batch of rows goes into the target in one transaction together with the update of that row, so after
Ctrl-C, a crash or kill -9 the target holds exactly the rows the progress says, and the next run reads the
source from the key after it: no row is copied twice and none is missed. The source is read in key order
(its primary key, or the rowid of a table without one) with keyset pagination, never OFFSET.

The first run checks that the target holds no server's data (no account, no room, every stream counter at
zero), brings its schema up to date with our own migrations, and in one transaction empties what the
migrations seeded (the stream counters, which come from the source) and creates the progress table. The
existence of that table is what tells a later run that the data in the target was written by port-db.

What differs between the engines is fixed per column, from the target's declared types: 0/1 to booleans,
text to bytes and bytes to text where a SQLite column held the other, and every sequence behind a serial or
identity column is moved past the largest copied id, so the server can insert afterwards.
"""

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from homeserver.storage.database import Database, Txn
from homeserver.storage.migrations import SchemaError, migrate, steps_for

PROGRESS_TABLE = "port_db_progress"
# The target's migrations write schema_version themselves; it is compared, not copied.
NOT_COPIED = ("schema_version", PROGRESS_TABLE)


class PortError(Exception):
    """Porting cannot start or go on; the message says why in an operator's words."""


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]  # ("rowid",) for a table without a primary key


@dataclass(frozen=True)
class Progress:
    copied: int
    last_key: tuple | None
    done: bool


# -- the source ------------------------------------------------------------------------------------


def open_source(path: str) -> sqlite3.Connection:
    """The SQLite file, read-only, so that porting can never change it."""
    if not Path(path).is_file():
        raise PortError(f"SQLite database {path} not found")
    try:
        conn = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True, isolation_level=None)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as e:
        raise PortError(f"cannot read SQLite database {path}: {e}") from None
    return conn


def check_source_schema(conn: sqlite3.Connection, path: str, folder: Path | None = None) -> list[int]:
    """The source's applied migrations, which must be exactly this code's."""
    try:
        applied = sorted(row[0] for row in conn.execute("SELECT version FROM schema_version"))
    except sqlite3.Error:
        raise PortError(f"{path} is not a homeserver database (it has no schema_version table)") from None
    known = [s.version for s in steps_for("sqlite3", folder)]
    if applied != known:
        have, want = max(applied, default=0), max(known, default=0)
        if set(applied) - set(known):
            raise PortError(f"{path} has schema version {have}, newer than this server's ({want}); upgrade it")
        raise PortError(
            f"{path} has schema version {have}, this server's is {want}: start this version of the server on the "
            "SQLite database once (it upgrades the schema), stop it, then run port-db again"
        )
    return applied


def source_tables(conn: sqlite3.Connection) -> list[Table]:
    """Every table to copy, a table after the ones its foreign keys point at."""
    names = [
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
        if row[0] not in NOT_COPIED
    ]
    tables, parents = {}, {}
    for name in names:
        info = conn.execute(f'PRAGMA table_info("{name}")').fetchall()  # cid, name, type, notnull, default, pk
        key = tuple(row[1] for row in sorted(info, key=lambda r: r[5]) if row[5]) or ("rowid",)
        tables[name] = Table(name, tuple(row[1] for row in info), key)
        parents[name] = {row[2] for row in conn.execute(f'PRAGMA foreign_key_list("{name}")')} - {name}
    ordered: list[Table] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in path or tables[name] in ordered:
            return  # a cycle cannot be ordered; the insert will say which key fails
        for parent in sorted(parents[name] & tables.keys()):
            visit(parent, (*path, name))
        ordered.append(tables[name])

    for name in names:
        visit(name, ())
    return ordered


def read_batch(conn: sqlite3.Connection, table: Table, after: tuple | None, limit: int) -> list[tuple]:
    """Up to `limit` rows after the key `after`, in key order; each row is its key, then its columns."""
    keys = ", ".join(f'"{k}"' for k in table.key)
    columns = ", ".join(f'"{c}"' for c in table.columns)
    where = f"WHERE ({keys}) > ({', '.join('?' * len(table.key))})" if after is not None else ""
    sql = f'SELECT {keys}, {columns} FROM "{table.name}" {where} ORDER BY {keys} LIMIT ?'
    return conn.execute(sql, (*(after or ()), limit)).fetchall()


# -- the copy --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableReport:
    """Where the copy of one table stands, for the operator's progress lines."""

    table: str
    copied: int
    total: int
    copied_this_run: int
    seconds: float
    done: bool


class Interrupted(Exception):
    """The copy stopped before the end on request (the tests' stand-in for Ctrl-C)."""


class Porter:
    """Copies the SQLite file at `path` into the PostgreSQL database behind `db` (which runs inline)."""

    def __init__(self, path: str, db: Database, folder: Path | None = None) -> None:
        self.source = open_source(path)
        self.versions = check_source_schema(self.source, path, folder)
        self.tables = source_tables(self.source)
        self._db = db
        self._folder = folder

    async def prepare(self) -> bool:
        """Check and set up the target; True when an earlier run had started on it."""
        started, holding = await self._db.run("port_db.target_state", _target_state_txn)
        if holding:
            raise PortError(
                f"the target already holds a server's data that port-db did not write (tables: {', '.join(holding)});"
                " give port-db an empty database"
            )
        try:
            await migrate(self._db, self._folder)
        except SchemaError as e:
            raise PortError(f"the target: {e}") from None
        await self._db.run("port_db.start", _start_txn, self.tables, self.versions)
        return started

    def source_count(self, table: str) -> int:
        return self.source.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]

    async def copy(self, batch_size: int, report: Callable[[TableReport], None], stop_after: int | None = None) -> None:
        """Copy what is left of every table, `batch_size` rows per transaction. With `stop_after`, raise
        Interrupted after that many batches (the tests' Ctrl-C at a chosen point)."""
        progress = await self._db.run("port_db.progress", _progress_txn)
        if set(progress) != {t.name for t in self.tables}:
            raise PortError("the progress recorded in the target is for another source (its tables differ)")
        batches = 0
        for table in self.tables:
            state, total = progress[table.name], self.source_count(table.name)
            if state.done:
                report(TableReport(table.name, state.copied, total, 0, 0.0, True))
                continue
            types = await self._db.run("port_db.column_types", _column_types_txn, table.name)
            convert = _converters(table, types)
            copied, after, started = state.copied, state.last_key, time.monotonic()
            while True:
                if stop_after is not None and batches >= stop_after:
                    raise Interrupted()
                rows = read_batch(self.source, table, after, batch_size)
                done = len(rows) < batch_size
                try:
                    await self._db.run("port_db.copy_batch", _copy_batch_txn, table, rows, convert, done)
                except Exception as e:  # a value PostgreSQL refuses: name where, in one line; nothing was written
                    reason = " ".join(str(e).split())
                    raise PortError(f"table {table.name}, the rows after key {after}: {reason}") from None
                batches += 1
                copied += len(rows)
                if rows:
                    after = tuple(rows[-1][: len(table.key)])
                seconds = time.monotonic() - started
                report(TableReport(table.name, copied, total, copied - state.copied, seconds, done))
                if done:
                    break

    async def advance_sequences(self) -> list[str]:
        """Move every sequence behind a serial or identity column past the column's largest value."""
        return await self._db.run("port_db.advance_sequences", _advance_sequences_txn)

    async def counts(self) -> list[tuple[str, int, int]]:
        """(table, rows in the source, rows in the target) for every table."""
        names = [t.name for t in self.tables]
        theirs = await self._db.run("port_db.count", _count_txn, names, readonly=True)
        return [(name, self.source_count(name), theirs[name]) for name in names]


def lock_target(engine: Any) -> Any:
    """A connection holding a session lock for as long as it is open: two port-db runs on one target would
    each copy the rows the other has not recorded yet."""
    conn = engine.connect()
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(8009)")
        if not cursor.fetchone()[0]:
            conn.close()
            raise PortError("another port-db is running on the target database")
    return conn


def _target_state_txn(txn: Txn) -> tuple[bool, list[str]]:
    """(whether port-db has started on the target, tables holding data port-db did not write). Every piece
    of a server's data hangs off an account or a room and moves a stream counter; a server that only
    started on the database wrote nothing that matters (a pruner mark), and that goes before the copy."""
    tables = _pg_tables(txn)
    if PROGRESS_TABLE in tables:
        return True, []
    if tables and "schema_version" not in tables:
        raise PortError(f"the target holds tables that are not a homeserver's ({', '.join(sorted(tables))})")
    holding = [t for t in ("users", "rooms") if t in tables and txn.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone()]
    if "stream_counters" in tables and txn.execute("SELECT 1 FROM stream_counters WHERE value <> 0").fetchone():
        holding.append("stream_counters")
    return False, holding


def _pg_tables(txn: Txn) -> set[str]:
    txn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    return {row[0] for row in txn.fetchall()}


def _start_txn(txn: Txn, tables: list[Table], source_versions: list[int]) -> None:
    """Empty what the migrations seeded (and a server that only started wrote) and record every table as not
    yet copied."""
    if PROGRESS_TABLE in _pg_tables(txn):
        return
    versions = sorted(row[0] for row in txn.execute("SELECT version FROM schema_version").fetchall())
    if versions != source_versions:
        raise PortError(f"the target's schema versions {versions} differ from the source's {source_versions}")
    for table in tables:
        txn.execute(f'DELETE FROM "{table.name}"')
    txn.execute(
        f"CREATE TABLE {PROGRESS_TABLE} (table_name TEXT PRIMARY KEY, last_key TEXT,"
        " copied BIGINT NOT NULL, done SMALLINT NOT NULL)"
    )
    txn.insert_many(
        PROGRESS_TABLE, ("table_name", "last_key", "copied", "done"), [(t.name, None, 0, 0) for t in tables]
    )


def _progress_txn(txn: Txn) -> dict[str, Progress]:
    txn.execute(f"SELECT table_name, last_key, copied, done FROM {PROGRESS_TABLE}")
    return {
        name: Progress(copied, tuple(json.loads(key)) if key is not None else None, bool(done))
        for name, key, copied, done in txn.fetchall()
    }


def _column_types_txn(txn: Txn, table: str) -> dict[str, str]:
    txn.execute(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = ?",
        (table,),
    )
    return dict(txn.fetchall())


def _converters(table: Table, types: dict[str, str]) -> list[Callable[[Any], Any]]:
    """One function per column turning a SQLite value into what the PostgreSQL column takes."""
    if set(types) != set(table.columns):
        raise PortError(f"table {table.name}: the target's columns {sorted(types)} differ from the source's")
    return [_CONVERT.get(types[c], _same) for c in table.columns]


def _same(value: Any) -> Any:
    return value


def _to_bool(value: Any) -> Any:
    return None if value is None else bool(value)


def _to_bytes(value: Any) -> Any:
    return value.encode("utf-8") if isinstance(value, str) else value


def _to_text(value: Any) -> Any:
    return value.decode("utf-8") if isinstance(value, bytes) else value


_CONVERT: dict[str, Callable[[Any], Any]] = {
    "boolean": _to_bool,
    "bytea": _to_bytes,
    "text": _to_text,
    "character varying": _to_text,
}


def _copy_batch_txn(txn: Txn, table: Table, rows: list[tuple], convert: list[Callable], done: bool) -> None:
    """Insert one batch (rows as `read_batch` gives them) and move the table's progress past it."""
    width = len(table.key)
    values = [tuple(f(v) for f, v in zip(convert, row[width:], strict=True)) for row in rows]
    txn.insert_many(f'"{table.name}"', tuple(f'"{c}"' for c in table.columns), values)
    last_key = json.dumps(list(rows[-1][:width])) if rows else None
    txn.execute(
        f"UPDATE {PROGRESS_TABLE} SET last_key = COALESCE(?, last_key), copied = copied + ?, done = ?"
        " WHERE table_name = ?",
        (last_key, len(rows), int(done), table.name),
    )


def _advance_sequences_txn(txn: Txn) -> list[str]:
    txn.execute(
        "SELECT table_name, column_name, pg_get_serial_sequence(quote_ident(table_name), column_name)"
        " FROM information_schema.columns WHERE table_schema = current_schema()"
        " AND (column_default LIKE 'nextval(%' OR is_identity = 'YES') ORDER BY table_name, column_name"
    )
    advanced = []
    for table, column, sequence in txn.fetchall():
        if sequence is None:
            continue
        # The next value handed out is one past the largest copied (1 on an empty table).
        txn.execute(f'SELECT setval(?, COALESCE(MAX("{column}"), 0) + 1, false) FROM "{table}"', (sequence,))
        advanced.append(f"{table}.{column}")
    return advanced


def _count_txn(txn: Txn, tables: list[str]) -> dict[str, int]:
    return {name: txn.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] for name in tables}
