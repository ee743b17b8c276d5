"""Apply the numbered SQL steps in migrations/ in order, recording each in `schema_version`.

A step is `NNN_name.sql`, or `NNN_name.sqlite.sql` and `NNN_name.postgres.sql` where the dialects
differ. Start-up refuses a database that has steps this code does not know (it is newer than the code).
"""

import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from homeserver.storage.database import Database, Txn

_STEP = re.compile(r"^(\d+)_([a-z0-9_]+?)(?:\.(sqlite|postgres))?\.sql$")
_ENGINE_SUFFIX = {"sqlite3": "sqlite", "psycopg2": "postgres"}


class SchemaError(Exception):
    """The database's schema cannot be used by this code."""


@dataclass(frozen=True)
class Step:
    version: int
    name: str
    path: Path


def migrations_dir() -> Path:
    """The source tree's migrations/, or the copy an installed package put under sys.prefix."""
    in_tree = Path(__file__).resolve().parents[2] / "migrations"
    return in_tree if in_tree.is_dir() else Path(sys.prefix) / "share" / "homeserver" / "migrations"


def steps_for(engine_name: str, folder: Path | None = None) -> list[Step]:
    folder = folder or migrations_dir()
    suffix = _ENGINE_SUFFIX[engine_name]
    chosen: dict[int, Step] = {}
    for path in sorted(folder.glob("*.sql")):
        m = _STEP.match(path.name)
        if not m:
            continue
        version, name, dialect = int(m.group(1)), m.group(2), m.group(3)
        if dialect not in (None, suffix):
            continue
        # A dialect-specific file wins over the shared one with the same number.
        if version not in chosen or dialect is not None:
            chosen[version] = Step(version, name, path)
    return [chosen[v] for v in sorted(chosen)]


async def migrate(db: Database, folder: Path | None = None) -> list[int]:
    """Bring the schema up to date in one transaction; returns the versions applied."""
    steps = steps_for(db.engine.name, folder)
    return await db.run("migrations.apply", _apply_txn, steps)


def _apply_txn(txn: Txn, steps: list[Step]) -> list[int]:
    if txn.engine_name == "psycopg2":
        # Two processes starting together (a rolling restart) must not both apply a step.
        txn.execute("SELECT pg_advisory_xact_lock(8008)")
    txn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ts BIGINT NOT NULL)"
    )
    applied = {row[0] for row in txn.execute("SELECT version FROM schema_version").fetchall()}
    known = {s.version for s in steps}
    unknown = sorted(applied - known)
    if unknown:
        raise SchemaError(
            f"the database has schema version {max(applied)}, newer than this server knows "
            f"({max(known, default=0)}); upgrade the server or restore a matching backup"
        )
    done = []
    for step in steps:
        if step.version in applied:
            continue
        for statement in _statements(step.path.read_text(encoding="utf-8")):
            txn.execute(statement)
        txn.execute(
            "INSERT INTO schema_version (version, name, applied_ts) VALUES (?, ?, ?)",
            (step.version, step.name, int(time.time() * 1000)),
        )
        done.append(step.version)
    return done


def _statements(sql: str) -> list[str]:
    """Split a step into statements at semicolons that end a line (steps keep to that form)."""
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in re.split(r";\s*$", "\n".join(lines), flags=re.M) if s.strip()]
