"""Storage tests run the stores with transactions inline (no reactor), on both engines."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.python.failure import Failure

from homeserver.config.options import DatabaseConfig
from homeserver.storage.database import Database
from homeserver.storage.engines import create_engine
from homeserver.storage.migrations import migrate
from tests.server import database_config


def resolve(awaitable: Any) -> Any:
    """The result of a coroutine that completes without waiting (inline transactions)."""
    results: list[Any] = []
    defer.ensureDeferred(awaitable).addBoth(results.append)
    assert results, "the coroutine waited on something"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


@pytest.fixture
def database_section(backend: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    with database_config(backend, tmp_path) as section:
        yield section


@pytest.fixture
def db(database_section: dict[str, Any]) -> Iterator[Database]:
    config = DatabaseConfig(name=database_section["name"], args=database_section["args"])
    database = Database(create_engine(config), max_connections=2, max_waiting=2)
    resolve(migrate(database))
    yield database
    database.close()
