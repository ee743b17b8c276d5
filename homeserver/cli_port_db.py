"""`homeserver admin port-db`: move a server's data from its SQLite file to PostgreSQL (docs/port-db.md).

The options follow Synapse's synapse_port_db (--sqlite-database, --postgres-config), so an operator who
has moved a Synapse server knows them; --postgres DSN names the target without a config file. The copy,
and how an interrupted run resumes, is homeserver/storage/port_db.py."""

import argparse
import sys
import time
from typing import Any

from homeserver.cli import Fatal, resolve
from homeserver.config import load_config
from homeserver.storage.database import Database
from homeserver.storage.engines import DatabaseUnavailable, PostgresEngine, create_engine
from homeserver.storage.port_db import Interrupted, Porter, PortError, TableReport, lock_target

EXIT_MISMATCH = 1  # copied, but the counts of some table differ
EXIT_INTERRUPTED = 130  # as a shell reports Ctrl-C; running the command again continues
PRINT_EVERY_S = 2.0


def add_commands(admin_sub: Any) -> None:
    port = admin_sub.add_parser(
        "port-db", help="copy a stopped server's data from its SQLite file to PostgreSQL (resumable)"
    )
    port.add_argument("--sqlite-database", "--sqlite", required=True, metavar="PATH", help="the SQLite file to copy")
    target = port.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--postgres-config", "-c", metavar="CONFIG", help="a config whose database section is the PostgreSQL target"
    )
    target.add_argument("--postgres", metavar="DSN", help="the target as postgresql://user:password@host:port/dbname")
    port.add_argument("--batch-size", type=int, default=1000, metavar="N", help="rows per transaction (default: 1000)")
    # Lets the tests interrupt a run at an exact point, as Ctrl-C does at a random one.
    port.add_argument("--stop-after-batches", type=int, help=argparse.SUPPRESS)
    port.set_defaults(command_fn=cmd_port_db)


def cmd_port_db(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise Fatal("port-db: --batch-size must be at least 1")
    try:
        code = _port(args)
    except (PortError, DatabaseUnavailable) as e:
        raise Fatal(f"port-db: {e}") from None
    sys.exit(code)


def _target_engine(args: argparse.Namespace) -> PostgresEngine:
    if args.postgres:
        return PostgresEngine({"dsn": args.postgres})
    config = load_config(args.postgres_config)
    if config.database.name != "psycopg2":
        raise PortError(f"the database of {args.postgres_config} is {config.database.name}, not PostgreSQL")
    engine = create_engine(config.database)
    assert isinstance(engine, PostgresEngine)
    return engine


def _port(args: argparse.Namespace) -> int:
    engine = _target_engine(args)
    db = Database(engine, max_connections=1, max_waiting=1)
    porter = Porter(args.sqlite_database, db)
    lock = lock_target(engine)
    try:
        started = resolve(porter.prepare())
        total = sum(porter.source_count(t.name) for t in porter.tables)
        verb = "resuming the copy of" if started else "copying"
        print(f"{verb} {len(porter.tables)} tables, {total:,} rows (schema version {max(porter.versions)})")
        resolve(porter.copy(args.batch_size, _Lines(porter), args.stop_after_batches))
        advanced = resolve(porter.advance_sequences())
        if advanced:
            print(f"sequences moved past the copied ids: {', '.join(advanced)}")
        return _summary(resolve(porter.counts()))
    except (KeyboardInterrupt, Interrupted):
        # Every transaction is whole or rolled back, and the progress is in the target with the rows.
        print("interrupted: run the same command again to continue where it stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        db.close()
        lock.close()
        porter.source.close()


class _Lines:
    """A line per table when it is done, and every PRINT_EVERY_S seconds while it is copied."""

    def __init__(self, porter: Porter) -> None:
        self.width = max((len(t.name) for t in porter.tables), default=5)
        self._shown = 0.0

    def __call__(self, report: TableReport) -> None:
        now = time.monotonic()
        if not report.done and now - self._shown < PRINT_EVERY_S:
            return
        self._shown = now
        line = f"{report.table:<{self.width}} {report.copied:>12,}/{report.total:,} rows"
        line += "  done" if report.done else f"  {100 * report.copied // max(report.total, 1)}%"
        if report.copied_this_run:
            line += f"  {report.copied_this_run / max(report.seconds, 1e-3):,.0f} rows/s"
        print(line, flush=True)


def _summary(counts: list[tuple[str, int, int]]) -> int:
    """Print every table's count on both sides; name the tables that differ."""
    width = max((len(name) for name, _, _ in counts), default=5)
    print(f"\n{'table':<{width}} {'sqlite':>12} {'postgres':>12}")
    for name, ours, theirs in counts:
        print(f"{name:<{width}} {ours:>12,} {theirs:>12,}{'' if ours == theirs else '  DIFFERS'}")
    differ = [name for name, ours, theirs in counts if ours != theirs]
    if differ:
        print(f"homeserver: port-db: row counts differ in {', '.join(differ)}", file=sys.stderr)
        return EXIT_MISMATCH
    rows = sum(ours for _, ours, _ in counts)
    print(f"all {len(counts)} tables match ({rows:,} rows); set the config's database section to PostgreSQL")
    return 0
