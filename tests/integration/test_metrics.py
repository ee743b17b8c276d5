"""GET /metrics on a listener with the `metrics` resource: request, database, admission and sync series
after real traffic; a listener without the resource does not serve it."""

from collections.abc import Iterator

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.client import assert_error, new_room_user, ok
from tests.server import ServerProcess, database_config, free_port


@pytest.fixture(scope="module")
def metrics_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    """A server with a client listener and a second, metrics-only one; yields it and the metrics URL."""
    directory = tmp_path_factory.mktemp("metrics")
    with database_config(backend, directory) as database:
        process = ServerProcess(directory, database)
        port = free_port()
        process.config["listeners"].append(
            {"port": port, "bind_addresses": ["127.0.0.1"], "resources": [{"names": ["metrics"]}]}
        )
        process.config_path.write_text(yaml.safe_dump(process.config))
        process.start()
        try:
            yield process, f"http://127.0.0.1:{port}"
        finally:
            process.stop()


def scrape(metrics_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape: (name, sorted labels) -> value."""
    response = requests.get(metrics_url + "/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict, metric: str, /, **labels: str) -> float:
    return samples[(metric, tuple(sorted(labels.items())))]


def names(samples: dict) -> set[str]:
    return {name for name, _ in samples}


def test_requests_are_counted_by_family_method_and_status(metrics_server: tuple[ServerProcess, str]) -> None:
    server, metrics_url = metrics_server
    alice = new_room_user(server.url)
    room = alice.create_room()
    for i in range(3):
        alice.send_text(room, f"hello {i}")
    assert_error(alice.get("/_matrix/client/v3/rooms/!nowhere:test/messages"), 400)  # no `dir`
    samples = scrape(metrics_url)
    sent = value(samples, "homeserver_http_requests_total", family="client/rooms/send", method="PUT", status="200")
    assert sent >= 3
    assert value(samples, "homeserver_http_requests_total", family="client/rooms/messages", method="GET",
                 status="400") >= 1  # fmt: skip
    # Labels come from route templates: no room id or other raw path piece ever becomes one.
    assert not any("!" in v for _, labels in samples for _, v in labels)
    count = value(samples, "homeserver_http_request_duration_seconds_count", family="client/rooms/send", method="PUT")
    assert count == sent
    assert value(samples, "homeserver_http_request_duration_seconds_bucket", family="client/rooms/send",
                 method="PUT", le="+Inf") == sent  # fmt: skip


def test_database_transaction_and_admission_series(metrics_server: tuple[ServerProcess, str]) -> None:
    server, metrics_url = metrics_server
    alice = new_room_user(server.url)
    ok(alice.get("/_matrix/client/v3/sync", params={"timeout": "0"}))
    samples = scrape(metrics_url)
    assert value(samples, "homeserver_db_connections_max") >= 1
    assert value(samples, "homeserver_db_connections_in_use") >= 0
    assert value(samples, "homeserver_db_waiting_transactions") >= 0
    assert value(samples, "homeserver_db_transactions_total", name="events.persist") >= 1
    assert value(samples, "homeserver_db_transaction_seconds_total", name="events.persist") > 0
    assert value(samples, "homeserver_events_persisted_total") >= value(
        samples, "homeserver_db_transactions_total", name="events.persist"
    )
    assert value(samples, "homeserver_db_queue_wait_seconds_total") >= 0
    assert value(samples, "homeserver_connections_budget") > 0
    assert value(samples, "homeserver_connections_open") >= 1
    assert value(samples, "homeserver_requests_in_flight", kind="request") >= 1  # this scrape
    assert value(samples, "homeserver_admission_refusals_total", reason="fd_budget_full") == 0
    assert value(samples, "homeserver_sync_computed_total") >= 1
    failures = {dict(labels)["collector"]: v for (name, labels), v in samples.items()
                if name == "homeserver_metrics_collector_failures_total"}  # fmt: skip
    assert failures == dict.fromkeys(
        ["database", "transactions", "admission", "sync", "caches", "push_pruner", "federation", "process"], 0
    )
    assert {"homeserver_cache_bytes", "homeserver_push_pruner_runs_total", "process_resident_memory_bytes",
            "process_open_fds"} <= names(samples)  # fmt: skip
    # The pruner runs as the server starts: its backlog was counted then (an empty one on a new server).
    assert value(samples, "homeserver_push_pruner_backlog", kind="read_summaries") == 0
    assert value(samples, "homeserver_push_pruner_backlog", kind="expired_rows") == 0


def test_client_listener_does_not_serve_metrics(metrics_server: tuple[ServerProcess, str]) -> None:
    server, metrics_url = metrics_server
    assert_error(requests.get(server.url + "/metrics", timeout=10), 404, "M_UNRECOGNIZED")
    assert_error(requests.get(metrics_url + "/_matrix/client/versions", timeout=10), 404, "M_UNRECOGNIZED")
    assert requests.get(metrics_url + "/health", timeout=10).status_code == 200
