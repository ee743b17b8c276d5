"""The metrics registry: families from route templates, and a broken collector left out of a scrape."""

import logging
from collections.abc import Iterable

import pytest
from prometheus_client.core import GaugeMetricFamily, Metric

from homeserver.metrics import MetricsEndpoint, ServerMetrics, endpoint_family
from tests.inline import resolve


@pytest.mark.parametrize(
    ("template", "family"),
    [
        ("/_matrix/client/v3/rooms/{room_id}/send/{event_type}/{txn_id}", "client/rooms/send"),
        ("/_matrix/client/r0/sync", "client/sync"),
        ("/_matrix/client/v3/account/whoami", "client/account/whoami"),
        ("/_matrix/client/v3/profile/{user_id}/displayname", "client/profile/displayname"),
        ("/_matrix/media/v3/download/{server_name}/{media_id}", "media/download"),
        ("/_matrix/client/versions", "client/versions"),
        ("/health", "health"),
        ("/metrics", "metrics"),
        ("-", "unmatched"),
        ("OPTIONS", "options"),
    ],
)
def test_family_is_built_from_the_template(template: str, family: str) -> None:
    assert endpoint_family(template) == family


def working() -> Iterable[Metric]:
    yield GaugeMetricFamily("homeserver_test_working", "a collector that works", value=7)


def broken() -> Iterable[Metric]:
    yield GaugeMetricFamily("homeserver_test_partial", "yielded before the collector broke", value=1)
    raise RuntimeError("collector broke")


def test_scrape_skips_a_raising_collector_and_counts_it(caplog: pytest.LogCaptureFixture) -> None:
    metrics = ServerMetrics({"broken": broken, "working": working})
    metrics.observe_request("GET", "/_matrix/client/v3/sync", 200, 0.02)
    with caplog.at_level(logging.ERROR, logger="homeserver.metrics"):
        text = metrics.scrape().decode()
    assert "homeserver_test_working 7.0" in text
    assert "homeserver_test_partial" not in text  # a collector's series go or stay together
    assert 'homeserver_metrics_collector_failures_total{collector="broken"} 1.0' in text
    assert 'homeserver_metrics_collector_failures_total{collector="working"} 0.0' in text
    assert 'homeserver_http_requests_total{family="client/sync",method="GET",status="200"} 1.0' in text
    assert "collector broke" in caplog.text


def test_endpoint_answers_200_while_a_collector_raises() -> None:
    response = resolve(MetricsEndpoint(ServerMetrics({"broken": broken, "working": working})).handle(None))
    assert response.status == 200
    assert response.content_type.startswith("text/plain; version=")
    assert b"homeserver_test_working 7.0" in response.body
    assert b'homeserver_metrics_collector_failures_total{collector="broken"} 1.0' in response.body


def test_repeated_failures_are_counted_but_logged_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    metrics = ServerMetrics({"broken": broken}, clock=lambda: now[0])
    with caplog.at_level(logging.ERROR, logger="homeserver.metrics"):
        for _ in range(5):
            metrics.scrape()
        now[0] = 61.0
        text = metrics.scrape().decode()
    assert 'homeserver_metrics_collector_failures_total{collector="broken"} 6.0' in text
    failures = [r for r in caplog.records if "metrics collector broken failed" in r.getMessage()]
    assert len(failures) == 2
    assert "4 more failures not logged" in failures[1].getMessage()


def test_unknown_methods_share_one_label() -> None:
    metrics = ServerMetrics({})
    metrics.observe_request("BREW", "-", 405, 0.001)
    assert 'homeserver_http_requests_total{family="unmatched",method="other",status="405"} 1.0' in (
        metrics.scrape().decode()
    )
