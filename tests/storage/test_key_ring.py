"""The key ring on a real database and a fake network of signed key documents: coalesced fetches, notaries
whose signatures are checked, request authentication, and no refetch storm for unknown keys."""

from typing import Any

import pytest
from signedjson.key import generate_signing_key, get_verify_key
from twisted.internet import defer

from homeserver.config.options import TrustedKeyServerConfig
from homeserver.core.errors import MatrixError
from homeserver.core.federation_auth import parse_x_matrix, server_keys_document, sign_request
from homeserver.core.json_signing import key_id_of, sign_json, verify_key_base64
from homeserver.handlers.federation.keys import MIN_REFETCH_S, KeyConfig, KeyRing
from homeserver.http.federation_client import RequestSendFailed
from homeserver.storage.database import Database
from homeserver.storage.server_keys import ServerKeyStore
from tests.inline import resolve

NOW_MS = 1_700_000_000_000
DAY_MS = 86_400_000
US = "us.example"
REMOTE = "remote.example"
NOTARY = "notary.example"


class FakeNetwork:
    """Servers' key documents and a notary's answers; counts requests. `hold` makes GETs wait."""

    def __init__(self) -> None:
        self.keys = {REMOTE: generate_signing_key("r1"), NOTARY: generate_signing_key("n1")}
        self.gets: list[str] = []
        self.posts: list[str] = []
        self.hold: defer.Deferred | None = None
        self.notary_signs_with = self.keys[NOTARY]
        self.monotonic = 0.0

    def document(self, server: str) -> dict[str, Any]:
        return server_keys_document(server, self.keys[server], NOW_MS + DAY_MS, {})

    async def get_json(self, destination: str, path: str, **kw: Any) -> Any:
        self.gets.append(destination)
        if self.hold is not None:
            await self.hold
        if destination not in self.keys:
            raise RequestSendFailed("unreachable")
        return self.document(destination)

    async def post_json(self, destination: str, path: str, content: Any, **kw: Any) -> Any:
        self.posts.append(destination)
        documents = [
            sign_json(self.document(server), NOTARY, self.notary_signs_with) for server in content["server_keys"]
        ]
        return {"server_keys": documents}


def key_ring(db: Database, net: FakeNetwork, notaries: list[TrustedKeyServerConfig] | None = None) -> KeyRing:
    config = KeyConfig(US, generate_signing_key("us"), {}, DAY_MS, notaries or [])
    return KeyRing(config, ServerKeyStore(db), net, lambda: NOW_MS, lambda: net.monotonic)  # type: ignore[arg-type]


@pytest.fixture
def net() -> FakeNetwork:
    return FakeNetwork()


def test_concurrent_lookups_of_one_server_share_one_fetch(db: Database, net: FakeNetwork) -> None:
    ring = key_ring(db, net)
    net.hold = defer.Deferred()
    lookups = [defer.ensureDeferred(ring.get_keys(REMOTE, ["ed25519:r1"], NOW_MS)) for _ in range(5)]
    hold, net.hold = net.hold, None
    hold.callback(None)
    expected = get_verify_key(net.keys[REMOTE])
    assert [d.result["ed25519:r1"] for d in lookups] == [expected] * 5
    assert net.gets == [REMOTE]


def test_keys_are_kept_across_restarts(db: Database, net: FakeNetwork) -> None:
    resolve(key_ring(db, net).get_keys(REMOTE, ["ed25519:r1"], NOW_MS))
    again = resolve(key_ring(db, net).get_keys(REMOTE, ["ed25519:r1"], NOW_MS))  # a new ring: memory is empty
    assert again["ed25519:r1"] == get_verify_key(net.keys[REMOTE])
    assert net.gets == [REMOTE]


def test_unknown_key_ids_do_not_make_a_fetch_storm(db: Database, net: FakeNetwork) -> None:
    ring = key_ring(db, net)
    for i in range(10):
        assert resolve(ring.get_keys(REMOTE, [f"ed25519:nope{i}"], NOW_MS)) == {}
    assert net.gets == [REMOTE]
    net.monotonic += MIN_REFETCH_S
    resolve(ring.get_keys(REMOTE, ["ed25519:nope"], NOW_MS))
    assert net.gets == [REMOTE, REMOTE]


def test_keys_valid_too_briefly_are_fetched_again(db: Database, net: FakeNetwork) -> None:
    ring = key_ring(db, net)
    resolve(ring.get_keys(REMOTE, ["ed25519:r1"], NOW_MS))
    assert resolve(ring.get_keys(REMOTE, ["ed25519:r1"], NOW_MS + 2 * DAY_MS)) == {}
    assert net.gets == [REMOTE]  # asked again only once the pause is over
    net.monotonic += MIN_REFETCH_S
    resolve(ring.get_keys(REMOTE, ["ed25519:r1"], NOW_MS + 2 * DAY_MS))
    assert net.gets == [REMOTE, REMOTE]


def test_trusted_notary_is_asked_first(db: Database, net: FakeNetwork) -> None:
    notary_key = net.keys[NOTARY]
    trusted = TrustedKeyServerConfig(NOTARY, {key_id_of(notary_key): verify_key_base64(notary_key)})
    ring = key_ring(db, net, [trusted])
    assert resolve(ring.get_keys(REMOTE, ["ed25519:r1"], NOW_MS))["ed25519:r1"] == get_verify_key(net.keys[REMOTE])
    assert (net.posts, net.gets) == ([NOTARY], [])


def test_notary_answer_signed_with_another_key_is_not_used(db: Database, net: FakeNetwork) -> None:
    notary_key = net.keys[NOTARY]
    trusted = TrustedKeyServerConfig(NOTARY, {key_id_of(notary_key): verify_key_base64(notary_key)})
    net.notary_signs_with = generate_signing_key("n1")  # same key id, someone else's key
    ring = key_ring(db, net, [trusted])
    assert resolve(ring.get_keys(REMOTE, ["ed25519:r1"], NOW_MS))["ed25519:r1"] == get_verify_key(net.keys[REMOTE])
    assert (net.posts, net.gets) == ([NOTARY], [REMOTE])  # fell back to the server itself


def test_notary_without_configured_keys_has_them_fetched_from_itself(db: Database, net: FakeNetwork) -> None:
    ring = key_ring(db, net, [TrustedKeyServerConfig(NOTARY, {})])
    resolve(ring.get_keys(REMOTE, ["ed25519:r1"], NOW_MS))
    assert (net.posts, net.gets) == ([NOTARY], [NOTARY])


def test_signed_request_authenticates_its_origin(db: Database, net: FakeNetwork) -> None:
    ring = key_ring(db, net)
    header = sign_request(net.keys[REMOTE], REMOTE, US, "GET", "/_matrix/federation/v1/query/profile?user_id=x")
    origin = resolve(ring.authenticate_request([header], "GET", "/_matrix/federation/v1/query/profile?user_id=x", None))
    assert origin == REMOTE
    with pytest.raises(MatrixError) as refused:
        resolve(ring.authenticate_request([header], "GET", "/_matrix/federation/v1/query/profile?user_id=y", None))
    assert (refused.value.code, refused.value.errcode) == (401, "M_UNAUTHORIZED")
    elsewhere = sign_request(net.keys[REMOTE], REMOTE, "other.example", "GET", "/x")
    assert parse_x_matrix(elsewhere).destination == "other.example"
    with pytest.raises(MatrixError, match="not this server"):
        resolve(ring.authenticate_request([elsewhere], "GET", "/x", None))


def test_notary_query_countersigns_what_it_holds(db: Database, net: FakeNetwork) -> None:
    ring = key_ring(db, net)
    (document,) = resolve(ring.query({REMOTE: ([], None)}))
    assert set(document["signatures"]) == {REMOTE, US}
    assert resolve(ring.query({"unreachable.example": ([], None)})) == []
    (own,) = resolve(ring.query({US: ([], None)}))
    assert own["server_name"] == US and own["valid_until_ts"] == NOW_MS + DAY_MS
