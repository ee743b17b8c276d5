"""Shared fixtures: the real server on SQLite and PostgreSQL, and clients talking to it."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.client import Client, RoomClient, new_room_user
from tests.federation_servers import FederatingServer, federating_server
from tests.server import BACKENDS, ServerProcess, database_config, postgres_url
from tests.synapse import SynapseProcess, running_synapse


def backend_params() -> list:
    return [
        pytest.param(
            b, marks=pytest.mark.skipif(b == "postgres" and not postgres_url(), reason="HS_TEST_POSTGRES not set")
        )
        for b in BACKENDS
    ]


@pytest.fixture(params=backend_params(), scope="module")
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real server per test module and backend."""
    directory = tmp_path_factory.mktemp(f"server-{backend}")
    with database_config(backend, directory) as database:
        process = ServerProcess(directory, database).start()
        try:
            yield process
        finally:
            process.stop()


@pytest.fixture(scope="module")
def fed_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FederatingServer]:
    """One of our servers per test module and backend, with an HTTPS federation listener on loopback."""
    with federating_server(backend, tmp_path_factory.mktemp(f"fed-server-{backend}")) as process:
        yield process


@pytest.fixture(scope="module")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SynapseProcess]:
    """One real Synapse per test module (installed on first use), federating on loopback."""
    with running_synapse(tmp_path_factory.mktemp("synapse")) as process:
        yield process


@pytest.fixture
def database_section(backend: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The `database` section of a config for a fresh, empty database on the backend."""
    with database_config(backend, tmp_path) as section:
        yield section


@pytest.fixture
def anon(server: ServerProcess) -> Client:
    return Client(server.url)


@pytest.fixture
def alice(server: ServerProcess) -> RoomClient:
    return new_room_user(server.url)


@pytest.fixture
def bob(server: ServerProcess) -> RoomClient:
    return new_room_user(server.url)


@pytest.fixture
def carol(server: ServerProcess) -> RoomClient:
    return new_room_user(server.url)


@pytest.fixture
def tmp_dir(tmp_path: Path) -> Path:
    return tmp_path
