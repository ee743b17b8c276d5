"""The server's code driven in the test's own process, without a reactor: transactions run inline, so a
coroutine completes without waiting."""

import dataclasses
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from homeserver.app import HomeServer
from homeserver.config.options import DatabaseConfig, HomeserverConfig


def resolve(awaitable: Any) -> Any:
    """The result of a coroutine that completes without waiting (inline transactions)."""
    results: list[Any] = []
    defer.ensureDeferred(awaitable).addBoth(results.append)
    assert results, "the coroutine waited on something"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def inline_server(database_section: dict[str, Any], tmp_path: Path) -> HomeServer:
    """A HomeServer on the `database_section` database, with its schema in place."""
    config = dataclasses.replace(
        HomeserverConfig(),
        signing_key_path=str(tmp_path / "signing.key"),
        database=DatabaseConfig(name=database_section["name"], args=database_section["args"]),
    )
    hs = HomeServer(config)  # no reactor: transactions run inline
    resolve(hs.prepare_database())
    return hs
