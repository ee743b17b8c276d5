"""Servers with a config of their own, for tests that need one the shared `server` fixture cannot be
(registration closed, low rate limits, a database broken on purpose)."""

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tests.server import ServerProcess, database_config

T = TypeVar("T")


@contextmanager
def extra_server(
    backend: str, directory: Path, overrides: dict[str, Any] | None = None, *, x_forwarded: bool = False
) -> Iterator[ServerProcess]:
    """A real server on its own database. With `x_forwarded`, the listener trusts X-Forwarded-For, so
    a test can speak from as many client addresses as it likes."""
    with database_config(backend, directory) as database:
        process = ServerProcess(directory, database, overrides)
        if x_forwarded:
            process.config["listeners"][0]["x_forwarded"] = True
            process.config_path.write_text(yaml.safe_dump(process.config))
        process.start()
        try:
            yield process
        finally:
            process.stop()


def at_once(n: int, call: Callable[[], T]) -> list[T]:
    """Make `n` calls from `n` threads released together, to give a race its best chance to show."""
    barrier = threading.Barrier(n)

    def released() -> T:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: released(), range(n)))
