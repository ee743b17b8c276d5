"""File descriptors: raise the soft limit, count what is open, and derive the connection budget."""

import os
import resource
from dataclasses import dataclass
from typing import Any


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # keep the soft limit; the budget is derived from what is in force
    return soft


def open_fd_count() -> int:
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # listdir's own descriptor
    except OSError:
        return 0


def database_fds(database: Any) -> int:
    """Descriptors the database pool can hold at most: a PostgreSQL connection is one socket; an SQLite
    connection in WAL mode holds the database file and the WAL, and the first one also the shared-memory
    index. `database` is a DatabaseConfig (engine `name`, pool size `cp_max`)."""
    if database.name == "sqlite3":
        return 2 * database.cp_max + 1
    return database.cp_max


@dataclass(frozen=True)
class FdBudget:
    """How the process's descriptors are shared out. `connections` is the hard cap on accepted
    sockets; everything else (what was open at start, the database pool, logs, outbound requests)
    fits in the rest."""

    limit: int
    baseline: int  # open when the budget was computed (stdio, logs, the reactor's own, ...)
    reserve: int  # kept back for outbound requests, files opened later, and accept bursts
    database: int  # the database pool at its largest

    @property
    def connections(self) -> int:
        return max(8, self.limit - self.baseline - self.reserve - self.database)


def compute_budget(reserve: int, database: int) -> FdBudget:
    """Raise the soft limit, then budget it. `database` is what the pool may hold (see `database_fds`)."""
    limit = raise_fd_limit()
    return FdBudget(limit=limit, baseline=open_fd_count(), reserve=reserve, database=database)
