"""File descriptors: raise the soft limit, count what is open, and derive the connection budget."""

import os
import resource
from dataclasses import dataclass


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


@dataclass(frozen=True)
class FdBudget:
    """How the process's descriptors are shared out. `connections` is the hard cap on accepted
    sockets; everything else (database pool, logs, outbound requests, accept bursts) fits in the rest."""

    limit: int
    baseline: int
    reserve: int
    database: int

    @property
    def connections(self) -> int:
        return max(8, self.limit - self.baseline - self.reserve - self.database)


def compute_budget(reserve: int, database_connections: int) -> FdBudget:
    limit = raise_fd_limit()
    return FdBudget(limit=limit, baseline=open_fd_count(), reserve=reserve, database=database_connections)
