"""Server identity between two of our servers over TLS on loopback: keys, the notary, signed requests, and
the client API asking the other server about its users and aliases."""

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from signedjson.key import generate_signing_key, get_verify_key, read_signing_keys

from homeserver.core.federation_auth import (
    XMatrixAuth,
    check_notary_signature,
    parse_server_keys,
    sign_request,
    x_matrix_header,
)
from homeserver.core.json_signing import key_id_of, verify_key_base64
from tests.client import RoomClient, assert_error, new_room_user, ok, quote
from tests.federation_servers import FederatingServer, federating_server

# The test servers' certificates are self-signed.
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
PROFILE = "/_matrix/client/v3/profile"
QUERY_PROFILE = "/_matrix/federation/v1/query/profile"


@pytest.fixture(scope="module")
def pair(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FederatingServer, FederatingServer]]:
    with (
        federating_server(backend, tmp_path_factory.mktemp(f"fed-a-{backend}")) as a,
        federating_server(backend, tmp_path_factory.mktemp(f"fed-b-{backend}")) as b,
    ):
        yield a, b


def signing_key(server: FederatingServer) -> Any:
    with (server.directory / "signing.key").open() as f:
        return read_signing_keys(f)[0]


def fed_get(server: FederatingServer, path: str, **kwargs: Any) -> requests.Response:
    return requests.get(server.federation_url + path, verify=False, timeout=30, **kwargs)


def fed_post(server: FederatingServer, path: str, body: Any) -> requests.Response:
    return requests.post(server.federation_url + path, json=body, verify=False, timeout=30)


def signed_get(origin: FederatingServer, target: FederatingServer, uri: str, **overrides: Any) -> requests.Response:
    """A GET to `target` signed as `origin` (with its key file), with parts of the signature changed."""
    header = sign_request(
        overrides.get("key", signing_key(origin)),
        origin.server_name,
        overrides.get("destination", target.server_name),
        "GET",
        overrides.get("signed_uri", uri),
    )
    return fed_get(target, uri, headers={"Authorization": overrides.get("header", header)})


def profile_query(user_id: str) -> str:
    return f"{QUERY_PROFILE}?{urlencode({'user_id': user_id})}"


@pytest.fixture(scope="module")
def alice_a(pair: tuple[FederatingServer, FederatingServer]) -> RoomClient:
    return new_room_user(pair[0].url)


@pytest.fixture(scope="module")
def bob_b(pair: tuple[FederatingServer, FederatingServer]) -> RoomClient:
    bob = new_room_user(pair[1].url)
    ok(bob.put(f"{PROFILE}/{quote(bob.user_id)}/displayname", {"displayname": "Bob of B"}))
    ok(bob.put(f"{PROFILE}/{quote(bob.user_id)}/avatar_url", {"avatar_url": "mxc://b/bob"}))
    return bob


# -- keys ---------------------------------------------------------------------------------------------


def test_server_keys_are_self_signed_and_valid_for_a_day(pair: tuple[FederatingServer, FederatingServer]) -> None:
    a, _ = pair
    response = fed_get(a, "/_matrix/key/v2/server")
    assert response.headers["Content-Type"] == "application/json"
    document = ok(response)
    keys = parse_server_keys(document, a.server_name)  # raises unless validly self-signed
    key = signing_key(a)
    assert document["verify_keys"] == {key_id_of(key): {"key": verify_key_base64(key)}}
    assert document["old_verify_keys"] == {}
    assert abs(keys.valid_until_ts - (time.time() * 1000 + 86_400_000)) < 60_000


def test_federation_is_not_served_on_the_client_listener(pair: tuple[FederatingServer, FederatingServer]) -> None:
    a, _ = pair
    assert requests.get(a.url + "/_matrix/key/v2/server", timeout=10).status_code == 404
    assert requests.get(a.url + "/_matrix/federation/v1/version", timeout=10).status_code == 404


def test_version_needs_no_signature(pair: tuple[FederatingServer, FederatingServer]) -> None:
    assert ok(fed_get(pair[0], "/_matrix/federation/v1/version"))["server"]["name"] == "homeserver"


def test_notary_answers_with_the_other_servers_keys_countersigned(
    pair: tuple[FederatingServer, FederatingServer],
) -> None:
    a, b = pair
    a_key, b_key = signing_key(a), signing_key(b)
    for response in (
        fed_get(a, f"/_matrix/key/v2/query/{b.server_name}"),
        fed_get(
            a, f"/_matrix/key/v2/query/{b.server_name}", params={"minimum_valid_until_ts": int(time.time() * 1000)}
        ),
        fed_post(a, "/_matrix/key/v2/query", {"server_keys": {b.server_name: {key_id_of(b_key): {}}}}),
    ):
        (document,) = ok(response)["server_keys"]
        keys = parse_server_keys(document, b.server_name)  # B's own signature survives the notary
        check_notary_signature(document, a.server_name, {key_id_of(a_key): get_verify_key(a_key)})
        assert keys.keys[key_id_of(b_key)].verify_key == get_verify_key(b_key)


def test_notary_serves_its_own_keys(pair: tuple[FederatingServer, FederatingServer]) -> None:
    a, _ = pair
    (document,) = ok(fed_post(a, "/_matrix/key/v2/query", {"server_keys": {a.server_name: {}}}))["server_keys"]
    parse_server_keys(document, a.server_name)


def test_notary_leaves_out_a_server_it_cannot_reach(pair: tuple[FederatingServer, FederatingServer]) -> None:
    a, _ = pair
    assert ok(fed_post(a, "/_matrix/key/v2/query", {"server_keys": {"127.0.0.1:1": {}}})) == {"server_keys": []}
    assert ok(fed_post(a, "/_matrix/key/v2/query", {"server_keys": {}})) == {"server_keys": []}


@pytest.mark.parametrize(
    "body",
    [{}, {"server_keys": []}, {"server_keys": {"b.example": []}}, {"server_keys": {"bad name": {}}}],
)
def test_notary_refuses_malformed_queries(pair: tuple[FederatingServer, FederatingServer], body: Any) -> None:
    response = fed_post(pair[0], "/_matrix/key/v2/query", body)
    assert response.status_code == 400 and response.json()["errcode"] in ("M_BAD_JSON", "M_INVALID_PARAM")


# -- signed requests ----------------------------------------------------------------------------------


def test_request_signed_by_the_origin_is_answered(
    pair: tuple[FederatingServer, FederatingServer], alice_a: RoomClient
) -> None:
    a, b = pair
    ok(alice_a.put(f"{PROFILE}/{quote(alice_a.user_id)}/displayname", {"displayname": "Alice of A"}))
    assert ok(signed_get(b, a, profile_query(alice_a.user_id))) == {"displayname": "Alice of A"}
    field_query = f"{QUERY_PROFILE}?{urlencode({'user_id': alice_a.user_id, 'field': 'displayname'})}"
    assert ok(signed_get(b, a, field_query)) == {"displayname": "Alice of A"}


def test_request_without_destination_from_an_older_server_is_answered(
    pair: tuple[FederatingServer, FederatingServer], alice_a: RoomClient
) -> None:
    a, b = pair
    uri = profile_query(alice_a.user_id)
    signed = sign_request(signing_key(b), b.server_name, a.server_name, "GET", uri)
    sig = signed.rsplit('sig="', 1)[1].rstrip('"')
    header = x_matrix_header(XMatrixAuth(b.server_name, None, key_id_of(signing_key(b)), sig))
    assert signed_get(b, a, uri, header=header).status_code == 200


@pytest.mark.parametrize(
    "change",
    [
        {"header": None},  # no Authorization header
        {"header": "Bearer abc"},
        {"header": 'X-Matrix origin="x"'},
        {"destination": "someone.else.example"},
        {"signed_uri": "/_matrix/federation/v1/query/profile?user_id=%40other%3Aa"},
        {"key": generate_signing_key("nope")},  # a key id the origin never published
        {"key": "impostor"},  # B's key id, someone else's key
    ],
    ids=["missing", "other-scheme", "malformed", "wrong-destination", "other-uri", "unknown-key", "bad-signature"],
)
def test_request_without_a_valid_signature_is_unauthorized(
    pair: tuple[FederatingServer, FederatingServer], alice_a: RoomClient, change: dict[str, Any]
) -> None:
    a, b = pair
    if change.get("key") == "impostor":
        change = {"key": generate_signing_key(signing_key(b).version)}
    uri = profile_query(alice_a.user_id)
    unsigned = "header" in change and change["header"] is None
    assert_error(fed_get(a, uri) if unsigned else signed_get(b, a, uri, **change), 401, "M_UNAUTHORIZED")


def test_origin_whose_keys_cannot_be_fetched_is_unauthorized(
    pair: tuple[FederatingServer, FederatingServer], alice_a: RoomClient
) -> None:
    a, _ = pair
    key = generate_signing_key("k")
    uri = profile_query(alice_a.user_id)
    header = sign_request(key, "127.0.0.1:1", a.server_name, "GET", uri)
    assert_error(fed_get(a, uri, headers={"Authorization": header}), 401, "M_UNAUTHORIZED")


# -- the client API over federation ---------------------------------------------------------------------


def test_remote_profile_is_fetched_from_its_server(
    pair: tuple[FederatingServer, FederatingServer], alice_a: RoomClient, bob_b: RoomClient
) -> None:
    assert ok(alice_a.get(f"{PROFILE}/{quote(bob_b.user_id)}")) == {
        "displayname": "Bob of B",
        "avatar_url": "mxc://b/bob",
    }
    assert ok(alice_a.get(f"{PROFILE}/{quote(bob_b.user_id)}/displayname")) == {"displayname": "Bob of B"}


def test_unknown_remote_user_is_not_found(pair: tuple[FederatingServer, FederatingServer], alice_a: RoomClient) -> None:
    nobody = f"@nobody{uuid.uuid4().hex[:6]}:{pair[1].server_name}"
    assert_error(alice_a.get(f"{PROFILE}/{quote(nobody)}"), 404, "M_NOT_FOUND")


def test_unreachable_server_is_a_502(alice_a: RoomClient) -> None:
    assert_error(alice_a.get(f"{PROFILE}/{quote('@x:127.0.0.1:1')}"), 502, "M_UNKNOWN")
    assert_error(alice_a.get(f"/_matrix/client/v3/directory/room/{quote('#x:127.0.0.1:1')}"), 502, "M_UNKNOWN")


def test_remote_alias_is_resolved_by_its_server(
    pair: tuple[FederatingServer, FederatingServer], alice_a: RoomClient, bob_b: RoomClient
) -> None:
    _, b = pair
    room = bob_b.create_room()
    alias = f"#room{uuid.uuid4().hex[:6]}:{b.server_name}"
    ok(bob_b.put(f"/_matrix/client/v3/directory/room/{quote(alias)}", {"room_id": room}))
    assert ok(alice_a.get(f"/_matrix/client/v3/directory/room/{quote(alias)}")) == {
        "room_id": room,
        "servers": [b.server_name],
    }
    missing = f"#missing{uuid.uuid4().hex[:6]}:{b.server_name}"
    assert_error(alice_a.get(f"/_matrix/client/v3/directory/room/{quote(missing)}"), 404, "M_NOT_FOUND")


def test_blacklisted_destination_is_never_connected_to(alice_a: RoomClient) -> None:
    """127.0.0.2 is in the default ip_range_blacklist (the tests only whitelist 127.0.0.1)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.2", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        assert_error(alice_a.get(f"{PROFILE}/{quote(f'@x:127.0.0.2:{port}')}"), 502, "M_UNKNOWN")
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody knocked


# -- configuration ------------------------------------------------------------------------------------


def test_keys_come_through_a_trusted_key_server(
    pair: tuple[FederatingServer, FederatingServer], backend: str, tmp_path: Path
) -> None:
    """C trusts A as a notary for B's keys: B's request to C is verified with keys that came through A. With
    a wrong key configured for A, C cannot trust A's answer and asks B itself."""
    a, b = pair
    a_key = signing_key(a)
    right = {key_id_of(a_key): verify_key_base64(a_key)}
    wrong = {key_id_of(a_key): verify_key_base64(generate_signing_key("w"))}
    for notary_keys, through_notary in ((right, True), (wrong, False)):
        overrides = {"trusted_key_servers": [{"server_name": a.server_name, "verify_keys": notary_keys}]}
        directory = tmp_path / ("right" if through_notary else "wrong")
        directory.mkdir()
        with federating_server(backend, directory, overrides) as c:
            queries_before = a.log().count("POST /_matrix/key/v2/query")
            carol = new_room_user(c.url)
            asker = new_room_user(b.url)
            assert ok(asker.get(f"{PROFILE}/{quote(carol.user_id)}"))["displayname"] == carol.user_id[1:].split(":")[0]
            assert a.log().count("POST /_matrix/key/v2/query") == queries_before + 1
            assert ("could not give the keys" in c.log()) is not through_notary


def test_server_well_known_is_served_when_configured(backend: str, tmp_path: Path) -> None:
    with federating_server(backend, tmp_path, {"serve_server_wellknown": True}) as server:
        answer = ok(requests.get(server.url + "/.well-known/matrix/server", timeout=10))
        assert answer == {"m.server": server.server_name}  # a name with a port keeps it
        assert ok(fed_get(server, "/.well-known/matrix/server")) == answer


def test_server_well_known_is_not_served_by_default(pair: tuple[FederatingServer, FederatingServer]) -> None:
    assert requests.get(pair[0].url + "/.well-known/matrix/server", timeout=10).status_code == 404
