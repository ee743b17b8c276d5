"""Storage tests run the stores with transactions inline (no reactor), on both engines."""

from collections.abc import Iterator
from typing import Any

import pytest

from homeserver.config.options import DatabaseConfig
from homeserver.storage.database import Database
from homeserver.storage.engines import create_engine
from homeserver.storage.migrations import migrate
from tests.inline import resolve


@pytest.fixture
def db(database_section: dict[str, Any]) -> Iterator[Database]:
    config = DatabaseConfig(name=database_section["name"], args=database_section["args"])
    database = Database(create_engine(config), max_connections=2, max_waiting=2)
    resolve(migrate(database))
    yield database
    database.close()
