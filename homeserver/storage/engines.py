"""Dialect differences in one place: connecting, beginning a transaction, placeholders, errors."""

import sqlite3
from pathlib import Path
from typing import Any, Protocol

from homeserver.config.options import DatabaseConfig


class DatabaseUnavailable(Exception):
    """The database cannot be reached or opened; the message says why in an operator's words."""


class Engine(Protocol):
    name: str

    def connect(self) -> Any: ...

    def begin(self, conn: Any, readonly: bool) -> None: ...

    def convert_sql(self, sql: str) -> str: ...

    def is_connection_error(self, error: BaseException) -> bool: ...


class SqliteEngine:
    """SQLite in WAL mode. Writers take the lock up front (BEGIN IMMEDIATE) so two writers never
    deadlock upgrading a read lock; readers use deferred transactions and run beside a writer."""

    name = "sqlite3"

    def __init__(self, path: str) -> None:
        self.path = path

    def connect(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as e:
            raise DatabaseUnavailable(f"cannot open SQLite database {self.path}: {e}") from None
        return conn

    def begin(self, conn: sqlite3.Connection, readonly: bool) -> None:
        conn.execute("BEGIN" if readonly else "BEGIN IMMEDIATE")

    def convert_sql(self, sql: str) -> str:
        return sql

    def is_connection_error(self, error: BaseException) -> bool:
        return False


class PostgresEngine:
    name = "psycopg2"

    def __init__(self, args: dict[str, Any]) -> None:
        self.args = {k: v for k, v in args.items() if k not in ("cp_min", "cp_max")}
        if "database" in self.args:  # Synapse's name for it
            self.args["dbname"] = self.args.pop("database")
        self.args.setdefault("application_name", "homeserver")

    def connect(self) -> Any:
        import psycopg2

        try:
            conn = psycopg2.connect(**self.args)
        except psycopg2.Error as e:
            where = self._describe()
            reason = " ".join(str(e).split())  # libpq's message spans lines
            raise DatabaseUnavailable(f"cannot connect to PostgreSQL at {where}: {reason}") from None
        conn.set_session(isolation_level="READ COMMITTED")
        return conn

    def _describe(self) -> str:
        """host:port/dbname for messages, never the password a DSN may carry."""
        from psycopg2.extensions import parse_dsn

        parts = parse_dsn(self.args["dsn"]) if "dsn" in self.args else self.args
        return f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"

    def begin(self, conn: Any, readonly: bool) -> None:
        pass  # psycopg2 opens a transaction at the first statement

    def convert_sql(self, sql: str) -> str:
        return sql.replace("%", "%%").replace("?", "%s")

    def is_connection_error(self, error: BaseException) -> bool:
        import psycopg2

        return isinstance(error, (psycopg2.OperationalError, psycopg2.InterfaceError))


def create_engine(config: DatabaseConfig) -> Engine:
    if config.name == "sqlite3":
        return SqliteEngine(config.args["database"])
    return PostgresEngine(config.args)
