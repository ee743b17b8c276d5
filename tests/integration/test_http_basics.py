"""What every response shares: CORS headers, gzip when it pays; and discovery and health."""

import gzip
import json

import pytest
import requests

from tests.client import Client
from tests.server import ServerProcess

VERSIONS = "/_matrix/client/versions"
DEVICES = "/_matrix/client/v3/devices"
IDENTITY = {"Accept-Encoding": "identity"}  # requests asks for gzip unless told otherwise


def assert_cors(response: requests.Response) -> None:
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    methods = {m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")}
    assert {"GET", "POST", "PUT", "DELETE", "OPTIONS"} <= methods
    allowed = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"x-requested-with", "content-type", "authorization"} <= allowed


# -- CORS ----------------------------------------------------------------------------------------------------


def test_responses_carry_cors_headers(anon: Client) -> None:
    assert_cors(anon.get(VERSIONS, headers={"Origin": "https://app.example"}))


def test_error_responses_carry_cors_headers(anon: Client) -> None:
    # A web client must be able to read the errcode of a refusal, too.
    response = anon.get("/_matrix/client/v3/account/whoami", headers={"Origin": "https://app.example"})
    assert response.status_code == 401
    assert_cors(response)


def test_unknown_path_carries_cors_headers(anon: Client) -> None:
    response = anon.get("/_matrix/client/v3/nothing/here")
    assert response.status_code == 404
    assert_cors(response)


@pytest.mark.parametrize(
    "path", ["/_matrix/client/v3/login", "/_matrix/client/v3/devices/ABC", "/.well-known/matrix/client"]
)
def test_options_preflight_is_answered_with_cors_headers(anon: Client, path: str) -> None:
    response = anon.request(
        "OPTIONS",
        path,
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert response.status_code == 200
    assert_cors(response)


def test_options_preflight_needs_no_access_token(anon: Client) -> None:
    response = anon.request("OPTIONS", "/_matrix/client/v3/account/whoami")
    assert response.status_code == 200


# -- gzip ----------------------------------------------------------------------------------------------------


@pytest.fixture
def many_devices(server: ServerProcess, alice: Client) -> Client:
    """Alice with enough devices that her device list is well over 1 KiB."""
    for i in range(15):
        assert Client(server.url).login(alice.user_id, initial_device_display_name=f"Device number {i}").ok
    return alice


def test_large_response_is_gzipped_when_client_accepts_it(many_devices: Client) -> None:
    response = many_devices.get(DEVICES, headers={"Accept-Encoding": "gzip"}, stream=True)
    assert response.headers["Content-Encoding"] == "gzip"
    assert "accept-encoding" in response.headers["Vary"].lower()
    raw = response.raw.read(decode_content=False)
    assert raw[:2] == b"\x1f\x8b"
    assert int(response.headers["Content-Length"]) == len(raw)
    devices = json.loads(gzip.decompress(raw))["devices"]
    assert len(devices) == 16


def test_gzipped_and_plain_responses_carry_the_same_json(many_devices: Client) -> None:
    zipped = many_devices.get(DEVICES, headers={"Accept-Encoding": "gzip"})
    plain = many_devices.get(DEVICES, headers=dict(IDENTITY))
    assert zipped.headers.get("Content-Encoding") == "gzip"
    assert zipped.json() == plain.json()


def test_large_response_is_not_gzipped_without_accept_encoding(many_devices: Client) -> None:
    response = many_devices.get(DEVICES, headers=dict(IDENTITY), stream=True)
    assert "Content-Encoding" not in response.headers
    raw = response.raw.read(decode_content=False)
    assert len(raw) >= 1024
    assert len(json.loads(raw)["devices"]) == 16


def test_large_response_is_not_gzipped_when_gzip_is_refused(many_devices: Client) -> None:
    response = many_devices.get(DEVICES, headers={"Accept-Encoding": "gzip;q=0, identity"})
    assert "Content-Encoding" not in response.headers


def test_small_response_is_not_gzipped(anon: Client) -> None:
    response = anon.get(VERSIONS, headers={"Accept-Encoding": "gzip"}, stream=True)
    assert "Content-Encoding" not in response.headers
    raw = response.raw.read(decode_content=False)
    assert len(raw) < 1024
    assert "v1.1" in json.loads(raw)["versions"]


# -- discovery and health ------------------------------------------------------------------------------------


def test_versions_lists_spec_versions(anon: Client) -> None:
    body = anon.get(VERSIONS).json()
    assert "v1.1" in body["versions"]
    assert isinstance(body.get("unstable_features", {}), dict)


def test_client_well_known_names_the_homeserver(server: ServerProcess, anon: Client) -> None:
    response = anon.get("/.well-known/matrix/client")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["m.homeserver"]["base_url"] == f"http://localhost:{server.port}/"
    assert_cors(response)  # the spec asks for CORS here so web clients can discover servers


def test_health_reports_ok(anon: Client) -> None:
    response = anon.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_health_needs_no_access_token_and_answers_head(anon: Client) -> None:
    response = anon.request("HEAD", "/health")
    assert response.status_code == 200
    assert response.content == b""
