"""What differs between the engines, on a schema of its own: SQLite's 0/1 become booleans, blobs bytea, a
serial column's sequence moves past the copied ids, and a table without a primary key (duplicate rows and
all) is paged by rowid."""

from pathlib import Path

import psycopg2
import pytest

from homeserver.config.options import DatabaseConfig
from homeserver.storage.database import Database, Txn
from homeserver.storage.engines import SqliteEngine, create_engine
from homeserver.storage.migrations import migrate
from homeserver.storage.port_db import Porter, PortError, TableReport
from tests.inline import resolve
from tests.server import database_config, postgres_url

SQLITE = """
CREATE TABLE things (id INTEGER PRIMARY KEY AUTOINCREMENT, flag SMALLINT NOT NULL, data BLOB, note TEXT);
CREATE TABLE loose (name TEXT, n INTEGER);
"""
POSTGRES = """
CREATE TABLE things (id BIGSERIAL PRIMARY KEY, flag BOOLEAN NOT NULL, data BYTEA, note TEXT);
CREATE TABLE loose (name TEXT, n INTEGER);
"""
THINGS = [(1, 1, b"\x00\xffbytes", "one"), (2, 0, None, None), (5, 1, b"", "five"), (9, 0, b"nine", "nine")]
LOOSE = [("same", 1), ("same", 1), ("other", None), ("same", 1), (None, 2)]


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "001_things.sqlite.sql").write_text(SQLITE)
    (folder / "001_things.postgres.sql").write_text(POSTGRES)
    return folder


@pytest.fixture
def source(tmp_path: Path, migrations: Path) -> Path:
    path = tmp_path / "source.db"
    db = Database(SqliteEngine(str(path)), 1, 1)
    resolve(migrate(db, migrations))

    def fill(txn: Txn) -> None:
        txn.insert_many("things", ("id", "flag", "data", "note"), THINGS)
        txn.insert_many("loose", ("name", "n"), LOOSE)

    db.run_blocking("test.fill", fill)
    db.close()
    return path


@pytest.mark.skipif(not postgres_url(), reason="HS_TEST_POSTGRES not set")
def test_booleans_bytes_sequences_and_tables_without_a_key(source: Path, migrations: Path, tmp_path: Path) -> None:
    with database_config("postgres", tmp_path) as section:
        db = Database(create_engine(DatabaseConfig(name=section["name"], args=section["args"])), 1, 1)
        try:
            porter = Porter(str(source), db, migrations)
            assert [t.key for t in porter.tables] == [("rowid",), ("id",)]
            assert resolve(porter.prepare()) is False
            reports: list[TableReport] = []
            resolve(porter.copy(2, reports.append))
            assert [r.copied for r in reports if r.table == "loose"] == [2, 4, 5]
            assert resolve(porter.advance_sequences()) == ["things.id"]
            assert resolve(porter.counts()) == [("loose", 5, 5), ("things", 4, 4)]

            with psycopg2.connect(section["args"]["dsn"]) as conn, conn.cursor() as cursor:
                cursor.execute("SELECT id, flag, data, note FROM things ORDER BY id")
                rows = [(i, flag, bytes(data) if data is not None else None, note) for i, flag, data, note in cursor]
                assert rows == [(i, bool(flag), data, note) for i, flag, data, note in THINGS]
                cursor.execute("INSERT INTO things (flag) VALUES (true) RETURNING id")
                assert cursor.fetchone() == (10,)
                cursor.execute("SELECT name, n FROM loose")
                assert sorted(cursor.fetchall(), key=repr) == sorted(LOOSE, key=repr)

            # A second run finds everything copied and copies nothing twice.
            assert resolve(porter.prepare()) is True
            reports.clear()
            resolve(porter.copy(2, reports.append))
            assert all(r.done and r.copied_this_run == 0 for r in reports)
        finally:
            db.close()


def test_a_source_behind_the_code_is_refused(source: Path, migrations: Path, tmp_path: Path) -> None:
    (migrations / "002_more.sql").write_text("CREATE TABLE more (x INTEGER PRIMARY KEY);\n")
    with pytest.raises(PortError, match="start this version of the server"):
        Porter(str(source), Database(SqliteEngine(str(tmp_path / "unused.db")), 1, 1), migrations)


@pytest.mark.skipif(not postgres_url(), reason="HS_TEST_POSTGRES not set")
def test_a_value_postgresql_refuses_stops_the_copy_naming_the_table(
    source: Path, migrations: Path, tmp_path: Path
) -> None:
    db = Database(SqliteEngine(str(source)), 1, 1)
    db.run_blocking("test.nul", lambda txn: txn.execute("UPDATE things SET note = ? WHERE id = 5", ("a\x00b",)))
    db.close()
    with database_config("postgres", tmp_path) as section:
        target = Database(create_engine(DatabaseConfig(name=section["name"], args=section["args"])), 1, 1)
        try:
            porter = Porter(str(source), target, migrations)
            resolve(porter.prepare())
            with pytest.raises(PortError, match=r"table things, the rows after key \(2,\)"):
                resolve(porter.copy(2, lambda report: None))
            assert resolve(porter.counts()) == [("loose", 5, 5), ("things", 4, 2)]
        finally:
            target.close()
