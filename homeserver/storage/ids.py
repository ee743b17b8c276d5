"""Counters for stream orderings and state group ids, inside the caller's transaction."""

from homeserver.storage.database import Txn


def next_id(txn: Txn, name: str) -> int:
    """The next value of counter `name`. The row lock taken by the UPDATE serialises writers on
    PostgreSQL (SQLite writers are serialised anyway), so ids are handed out in commit order."""
    txn.execute("UPDATE stream_counters SET value = value + 1 WHERE name = ?", (name,))
    row = txn.execute("SELECT value FROM stream_counters WHERE name = ?", (name,)).fetchone()
    assert row is not None, f"unknown counter {name}"
    return int(row[0])


def current_id(txn: Txn, name: str) -> int:
    row = txn.execute("SELECT value FROM stream_counters WHERE name = ?", (name,)).fetchone()
    return int(row[0]) if row else 0
