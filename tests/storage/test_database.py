"""The database layer: migrations, one transaction per unit of work, the bounded wait queue."""

from pathlib import Path

import pytest
from twisted.internet import defer

from homeserver.storage.database import Database, DatabaseBusy, Txn
from homeserver.storage.migrations import SchemaError, migrate, migrations_dir, steps_for
from tests.inline import resolve


def test_migrations_are_recorded_and_not_reapplied(db: Database) -> None:
    versions = db.run_blocking(
        "t", lambda txn: [r[0] for r in txn.execute("SELECT version FROM schema_version").fetchall()]
    )
    assert versions == [s.version for s in steps_for(db.engine.name)]
    assert resolve(migrate(db)) == []


def test_a_database_newer_than_the_code_is_refused(db: Database) -> None:
    db.run_blocking(
        "t",
        lambda txn: txn.execute("INSERT INTO schema_version (version, name, applied_ts) VALUES (9999, 'future', 0)"),
    )
    with pytest.raises(SchemaError, match="newer than this server knows"):
        resolve(migrate(db))


def test_engine_specific_steps_win_over_shared_ones(tmp_path: Path) -> None:
    for name in ("001_a.sql", "002_b.sql", "002_b.postgres.sql", "003_c.sqlite.sql", "notes.txt"):
        (tmp_path / name).write_text("SELECT 1;")
    assert [s.path.name for s in steps_for("sqlite3", tmp_path)] == ["001_a.sql", "002_b.sql", "003_c.sqlite.sql"]
    assert [s.path.name for s in steps_for("psycopg2", tmp_path)] == ["001_a.sql", "002_b.postgres.sql"]


def test_the_shipped_migrations_parse() -> None:
    assert steps_for("sqlite3", migrations_dir())


def test_a_failing_transaction_leaves_nothing_behind(db: Database) -> None:
    def half_then_fail(txn: Txn) -> None:
        txn.execute("INSERT INTO users (user_id, admin, deactivated, created_ts) VALUES ('@x:t', 0, 0, 1)")
        raise RuntimeError("crash mid-way")

    with pytest.raises(RuntimeError):
        db.run_blocking("t", half_then_fail)
    assert db.run_blocking("t", lambda txn: txn.execute("SELECT count(*) FROM users").fetchone()[0]) == 0


def test_placeholders_and_percent_signs_work_on_every_engine(db: Database) -> None:
    db.run_blocking(
        "t",
        lambda txn: txn.execute(
            "INSERT INTO users (user_id, admin, deactivated, created_ts) VALUES (?, 0, 0, 1)", ("@50%:t",)
        ),
    )
    found = db.run_blocking(
        "t", lambda txn: txn.execute("SELECT user_id FROM users WHERE user_id LIKE '%50%%'").fetchall()
    )
    assert found == [("@50%:t",)]


def test_waiting_transactions_are_bounded(db: Database) -> None:
    """With every connection busy, `max_waiting` more may wait; the next is refused at once."""
    busy = Database(db.engine, max_connections=1, max_waiting=1)
    first = defer.ensureDeferred(busy._acquire())
    second = defer.ensureDeferred(busy._acquire())
    assert first.called and not second.called
    with pytest.raises(DatabaseBusy):
        resolve(busy._acquire())
    assert busy.stats.waits == 0  # the first got a connection at once
    busy._release(None)  # the first finishes and hands its slot to the waiter
    assert second.called
    assert (busy.in_use, busy.waiting) == (1, 0)
    assert busy.stats.waits == 1 and busy.stats.wait_seconds >= 0  # what the metrics export


def test_light_work_gets_a_freed_connection_before_bulk_work(db: Database) -> None:
    from homeserver.core.work_class import BULK, current_work_class

    busy = Database(db.engine, max_connections=1, max_waiting=10)
    first = defer.ensureDeferred(busy._acquire())
    mark = current_work_class.set(BULK)
    try:
        bulk = defer.ensureDeferred(busy._acquire())  # a sync's transaction, queued first
    finally:
        current_work_class.reset(mark)
    light = defer.ensureDeferred(busy._acquire())  # a whoami's, queued after it
    assert first.called and not bulk.called and not light.called
    busy._release(None)
    assert light.called and not bulk.called
    busy._release(None)
    assert bulk.called
