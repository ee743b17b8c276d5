"""Spec errors a client can cause, with the status and errcode the spec gives them; oversized bodies;
and the shape of an unexpected failure.

M_FORBIDDEN and M_LIMIT_EXCEEDED are tested where they arise: test_login.py (wrong password, rate
limits), test_registration.py (closed registration, its rate limit).
"""

import json
import socket
import sqlite3
from collections.abc import Iterator

import psycopg2
import pytest
import requests

from tests.client import PASSWORD, Client, assert_error
from tests.integration.servers import extra_server
from tests.server import ServerProcess

LOGIN = "/_matrix/client/v3/login"
REGISTER = "/_matrix/client/v3/register"
WHOAMI = "/_matrix/client/v3/account/whoami"
MB = 1024 * 1024


def assert_json_error(response: requests.Response, status: int, errcode: str) -> dict:
    """The shared error check, and what every error answer must be: JSON, labelled so, with a message."""
    body = assert_error(response, status, errcode)
    assert response.headers["Content-Type"] == "application/json"
    assert isinstance(body["error"], str)
    return body


def post_raw(client: Client, path: str, data: bytes) -> requests.Response:
    return client.request("POST", path, data=data, headers={"Content-Type": "application/json"})


def login_body(user: str, **extra: object) -> dict:
    return {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": PASSWORD,
        **extra,
    }


# -- bodies that are not what the endpoint reads -------------------------------------------------------------


@pytest.mark.parametrize("data", [b"{not json", b'{"a": 1', b"", b"\xff\xfe{}", b'{"a": NaN}'], ids=repr)
def test_body_that_is_not_json_gives_not_json(anon: Client, data: bytes) -> None:
    assert_json_error(post_raw(anon, LOGIN, data), 400, "M_NOT_JSON")


@pytest.mark.parametrize("data", [b"[]", b'"login"', b"42", b"null"], ids=repr)
def test_json_that_is_not_an_object_gives_bad_json(anon: Client, data: bytes) -> None:
    assert_json_error(post_raw(anon, LOGIN, data), 400, "M_BAD_JSON")


def test_deeply_nested_json_gives_bad_json(anon: Client) -> None:
    data = b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert_json_error(post_raw(anon, LOGIN, data), 400, "M_BAD_JSON")


def test_unpaired_surrogate_gives_bad_json(anon: Client) -> None:
    data = b'{"username": "someone", "password": "\\ud800", "auth": {"type": "m.login.dummy"}}'
    assert_json_error(post_raw(anon, REGISTER, data), 400, "M_BAD_JSON")


def test_paired_surrogates_are_accepted(alice: Client) -> None:
    data = b'{"display_name": "\\ud83d\\ude00"}'  # U+1F600 as a JSON surrogate pair
    response = alice.request("PUT", f"/_matrix/client/v3/devices/{alice.device_id}", data=data)
    assert response.status_code == 200
    assert alice.get(f"/_matrix/client/v3/devices/{alice.device_id}").json()["display_name"] == "\U0001f600"


# -- parameters ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (LOGIN, {"identifier": {"type": "m.id.user", "user": "alice"}, "password": PASSWORD}),
        (LOGIN, {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}}),
        (LOGIN, {"type": "m.login.password", "password": PASSWORD}),
        ("/_matrix/client/v3/account/password", {"logout_devices": False}),
        ("/_matrix/client/v3/delete_devices", {}),
    ],
    ids=["login type", "login password", "login user", "new_password", "devices"],
)
def test_missing_required_field_gives_missing_param(alice: Client, path: str, body: dict) -> None:
    assert_json_error(alice.post(path, body), 400, "M_MISSING_PARAM")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (LOGIN, {"type": 5}),
        (LOGIN, login_body("alice", device_id=12)),
        (LOGIN, login_body("alice", initial_device_display_name=["x"])),
        (LOGIN, {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": 7}, "password": PASSWORD}),
        (LOGIN, {"type": "m.login.password", "identifier": "alice", "password": PASSWORD}),
        (REGISTER, {"username": 5, "password": PASSWORD}),
        (REGISTER, {"username": "someone", "password": PASSWORD, "inhibit_login": "yes"}),
        ("/_matrix/client/v3/account/password", {"new_password": 123}),
        ("/_matrix/client/v3/account/password", {"new_password": "x", "logout_devices": "yes"}),
        ("/_matrix/client/v3/delete_devices", {"devices": "ABC"}),
        ("/_matrix/client/v3/delete_devices", {"devices": [1, 2]}),
    ],
    ids=lambda v: v if isinstance(v, str) else json.dumps(v)[:40],
)
def test_wrong_type_gives_invalid_param(alice: Client, path: str, body: dict) -> None:
    assert_json_error(alice.post(path, body), 400, "M_INVALID_PARAM")


def test_nul_in_a_parameter_gives_invalid_param(alice: Client) -> None:
    response = alice.put(f"/_matrix/client/v3/devices/{alice.device_id}", {"display_name": "a\u0000b"})
    assert_json_error(response, 400, "M_INVALID_PARAM")


def test_nul_in_a_path_parameter_gives_invalid_param(alice: Client) -> None:
    assert_json_error(alice.get("/_matrix/client/v3/devices/A%00B"), 400, "M_INVALID_PARAM")


def test_nul_in_a_listed_device_id_gives_invalid_param(alice: Client) -> None:
    response = alice.post("/_matrix/client/v3/delete_devices", {"devices": ["A\u0000B"]})
    assert_json_error(response, 400, "M_INVALID_PARAM")


def test_nul_in_a_user_name_gives_invalid_param(anon: Client) -> None:
    assert_json_error(anon.post(LOGIN, login_body("ali\u0000ce")), 400, "M_INVALID_PARAM")


def test_overlong_device_id_gives_invalid_param(anon: Client, alice: Client) -> None:
    assert_json_error(anon.post(LOGIN, login_body(alice.user_id, device_id="D" * 100_000)), 400, "M_INVALID_PARAM")


def test_bad_query_parameter_gives_invalid_param(anon: Client) -> None:
    assert_json_error(anon.post(REGISTER + "?kind=robot", {}), 400, "M_INVALID_PARAM")


# -- paths and methods ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/_matrix/client/v3/no/such/endpoint", "/_matrix/client/v3/login/", "/nothing"])
def test_unknown_path_gives_404_unrecognized(anon: Client, path: str) -> None:
    assert_json_error(anon.get(path), 404, "M_UNRECOGNIZED")


@pytest.mark.parametrize(
    ("method", "path"),
    [("DELETE", LOGIN), ("GET", "/_matrix/client/v3/logout"), ("POST", WHOAMI), ("PATCH", "/_matrix/client/versions")],
)
def test_known_path_with_wrong_method_gives_405_unrecognized(anon: Client, method: str, path: str) -> None:
    assert_json_error(anon.request(method, path), 405, "M_UNRECOGNIZED")


# -- access tokens -------------------------------------------------------------------------------------------


def test_no_access_token_gives_missing_token(anon: Client) -> None:
    assert_json_error(anon.get(WHOAMI), 401, "M_MISSING_TOKEN")


def test_non_bearer_authorization_gives_missing_token(anon: Client) -> None:
    assert_json_error(anon.get(WHOAMI, headers={"Authorization": "Basic YWxpY2U6c2VjcmV0"}), 401, "M_MISSING_TOKEN")


def test_unknown_access_token_gives_unknown_token(server: ServerProcess) -> None:
    body = assert_json_error(Client(server.url, "hs_not_a_real_token").get(WHOAMI), 401, "M_UNKNOWN_TOKEN")
    assert body.get("soft_logout") is False


def test_unknown_access_token_in_query_gives_unknown_token(anon: Client) -> None:
    assert_json_error(anon.get(WHOAMI, params={"access_token": "hs_nope"}), 401, "M_UNKNOWN_TOKEN")


# -- oversized bodies ----------------------------------------------------------------------------------------


def exchange(port: int, head: bytes, body_part: bytes, timeout: float = 3.0) -> bytes:
    """Send a request's head and only part of its body, then read whatever answer comes. The server's
    read timeout (10 s by default) is well above `timeout`, so an answer here came before the body did."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head + body_part)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def assert_raw_413(answer: bytes) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer[:200]
    assert json.loads(body)["errcode"] == "M_TOO_LARGE"


def test_body_over_the_limit_gives_413_too_large(anon: Client) -> None:
    response = anon.request("POST", LOGIN, data=b" " * (2 * MB), headers={"Content-Type": "application/json"})
    assert_json_error(response, 413, "M_TOO_LARGE")


def test_body_over_the_limit_is_refused_before_it_is_all_sent(server: ServerProcess) -> None:
    head = (
        b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % (2 * MB)
    )
    assert_raw_413(exchange(server.port, head, b" " * 65536))


def test_declared_length_far_over_the_limit_is_refused_at_once(server: ServerProcess) -> None:
    head = (
        b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % (10 * 1024 * MB)
    )
    assert_raw_413(exchange(server.port, head, b'{"type": '))


def test_chunked_body_over_the_limit_is_refused(server: ServerProcess) -> None:
    head = (
        b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b" " * 65536
    body = (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 17  # a little over 1 MiB, and no final chunk
    assert_raw_413(exchange(server.port, head, body))


def test_body_under_the_limit_is_read(anon: Client, alice: Client) -> None:
    body = login_body(alice.user_id, padding="x" * (MB - 4096))
    assert anon.post(LOGIN, body).status_code == 200


def test_server_still_answers_after_refusing_a_large_body(anon: Client) -> None:
    anon.request("POST", LOGIN, data=b" " * (2 * MB))
    assert Client(anon.base_url).get("/_matrix/client/versions").status_code == 200


# -- unexpected failures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broken_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with extra_server(backend, tmp_path_factory.mktemp("broken")) as process:
        yield process


def rename_table(process: ServerProcess, old: str, new: str) -> None:
    """Break the database under the running server, as a botched manual change by an operator would."""
    database = process.config["database"]
    sql = f"ALTER TABLE {old} RENAME TO {new}"
    if database["name"] == "sqlite3":
        with sqlite3.connect(database["args"]["database"]) as conn:
            conn.execute(sql)
        return
    conn = psycopg2.connect(database["args"]["dsn"])
    try:
        with conn, conn.cursor() as cursor:
            cursor.execute(sql)
    finally:
        conn.close()


def test_unexpected_error_gives_500_with_request_id_and_no_traceback(broken_server: ServerProcess) -> None:
    user = Client(broken_server.url).register()
    rename_table(broken_server, "devices", "devices_gone")
    response = user.get("/_matrix/client/v3/devices")
    body = assert_json_error(response, 500, "M_UNKNOWN")
    assert set(body) == {"errcode", "error"}
    assert "request id GET-" in body["error"]
    request_id = body["error"].split("request id ")[1].rstrip(")")
    for leak in ("Traceback", "devices_gone", "sqlite", "psycopg", "relation", 'File "'):
        assert leak not in response.text
    # The operator gets the whole story in the log, under the same request id.
    log = broken_server.log()
    assert request_id in log and "Traceback" in log
    # And the server carries on serving what does not need the broken table.
    assert user.get(WHOAMI).status_code == 200
