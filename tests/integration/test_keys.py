"""E2EE keys through HTTP: upload, query, claim, changes, cross-signing and signatures, as clients use them.

Keys are real ed25519 keys and signatures (signedjson), so the server's signature checks are exercised
the way an encrypting client exercises them.
"""

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from signedjson.key import encode_verify_key_base64, generate_signing_key, get_verify_key
from signedjson.sign import sign_json
from signedjson.types import SigningKey

from homeserver.app import HomeServer
from homeserver.config import load_config
from homeserver.storage.ids import current_id
from tests.client import Client, RoomClient, assert_error, ok
from tests.server import ServerProcess

KEYS = "/_matrix/client/v3/keys"
OTK = "signed_curve25519"
ALGORITHMS = ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"]


@pytest.fixture(scope="module")
def beside(server: ServerProcess) -> Iterator[HomeServer]:
    """The server's code on the server's database, in this process: it reads the stream positions a
    sync token is made of, as a sync would."""
    hs = HomeServer(load_config(str(server.config_path)))
    yield hs
    hs.db.close()


def sync_token(hs: HomeServer) -> str:
    events = hs.db.run_blocking("test.events_position", current_id, "events", readonly=True)
    lists = hs.db.run_blocking("test.device_lists_position", current_id, "device_lists", readonly=True)
    return f"s{events}_0_0_0_{lists}_0"


def new_key(version: str = "tmp") -> SigningKey:
    return generate_signing_key(version)


def public(key: SigningKey) -> str:
    return encode_verify_key_base64(get_verify_key(key))


class Device:
    """What an encrypting client keeps for its device: an ed25519 identity key that signs its keys."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.key = new_key(client.device_id or "")

    @property
    def user_id(self) -> str:
        return self.client.user_id or ""

    def device_keys(self) -> dict[str, Any]:
        device_id = self.client.device_id
        keys = {
            "user_id": self.user_id,
            "device_id": device_id,
            "algorithms": ALGORITHMS,
            "keys": {f"curve25519:{device_id}": f"curve-{device_id}", f"ed25519:{device_id}": public(self.key)},
        }
        return sign_json(keys, self.user_id, self.key)

    def one_time_keys(self, *names: str, fallback: bool = False) -> dict[str, Any]:
        extra = {"fallback": True} if fallback else {}
        return {f"{OTK}:{name}": sign_json({"key": f"otk-{name}", **extra}, self.user_id, self.key) for name in names}

    def upload(self, **body: Any) -> dict[str, Any]:
        return ok(self.client.post(f"{KEYS}/upload", body))


def query(client: Client, wanted: dict[str, list[str]]) -> dict[str, Any]:
    return ok(client.post(f"{KEYS}/query", {"device_keys": wanted}))


def claim(client: Client, wanted: dict[str, dict[str, str]]) -> dict[str, Any]:
    return ok(client.post(f"{KEYS}/claim", {"one_time_keys": wanted}))


def second_login(server: ServerProcess, user: Client, **extra: Any) -> RoomClient:
    other = RoomClient(server.url)
    assert other.login(user.user_id or "", **extra).status_code == 200
    return other


# -- uploading and querying device keys -------------------------------------------------------------------


def test_upload_answers_the_one_time_key_counts(alice: Client) -> None:
    device = Device(alice)
    answer = device.upload(device_keys=device.device_keys(), one_time_keys=device.one_time_keys("a", "b", "c"))
    assert answer == {"one_time_key_counts": {OTK: 3}}
    assert device.upload(one_time_keys=device.one_time_keys("d")) == {"one_time_key_counts": {OTK: 4}}
    assert device.upload() == {"one_time_key_counts": {OTK: 4}}


def test_others_see_uploaded_device_keys_with_the_device_name(
    server: ServerProcess, alice: Client, bob: Client
) -> None:
    phone = second_login(server, alice, initial_device_display_name="Phone")
    device = Device(phone)
    uploaded = device.device_keys()
    device.upload(device_keys=uploaded)
    answer = query(bob, {alice.user_id: []})
    assert answer["device_keys"] == {
        alice.user_id: {phone.device_id: {**uploaded, "unsigned": {"device_display_name": "Phone"}}}
    }
    assert answer["failures"] == {}
    assert answer["master_keys"] == answer["self_signing_keys"] == answer["user_signing_keys"] == {}


def test_query_can_name_the_devices_it_wants(server: ServerProcess, alice: Client, bob: Client) -> None:
    phone = second_login(server, alice)
    for device in (Device(alice), Device(phone)):
        device.upload(device_keys=device.device_keys())
    assert set(query(bob, {alice.user_id: []})["device_keys"][alice.user_id]) == {alice.device_id, phone.device_id}
    named = query(bob, {alice.user_id: [phone.device_id, "NOSUCHDEVICE"]})["device_keys"]
    assert set(named[alice.user_id]) == {phone.device_id}


def test_a_user_without_keys_has_no_devices_and_an_unknown_user_is_left_out(alice: Client, bob: Client) -> None:
    answer = query(alice, {bob.user_id: [], "@nobody_here:localhost": []})
    assert answer["device_keys"] == {bob.user_id: {}}
    assert answer["failures"] == {}


def test_keys_of_another_device_or_user_cannot_be_uploaded(server: ServerProcess, alice: Client, bob: Client) -> None:
    phone = second_login(server, alice)
    for other in (phone, bob):
        keys = Device(other).device_keys()
        assert_error(alice.post(f"{KEYS}/upload", {"device_keys": keys}), 403, "M_FORBIDDEN")
    assert query(bob, {alice.user_id: []})["device_keys"] == {alice.user_id: {}}


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ({"device_keys": {"user_id": "@x:localhost"}}, "M_BAD_JSON"),
        ({"device_keys": "not an object"}, "M_BAD_JSON"),
        ({"one_time_keys": ["a list"]}, "M_INVALID_PARAM"),
        ({"one_time_keys": {"no_colon": "key"}}, "M_BAD_JSON"),
        ({"one_time_keys": {f"{OTK}:a": 42}}, "M_BAD_JSON"),
        ({"one_time_keys": {f"{OTK}:a": {"signatures": {}}}}, "M_BAD_JSON"),
        ({"fallback_keys": {f"{OTK}:a": "k1", f"{OTK}:b": "k2"}}, "M_INVALID_PARAM"),
    ],
)
def test_malformed_uploads_are_refused(alice: Client, body: dict[str, Any], errcode: str) -> None:
    assert_error(alice.post(f"{KEYS}/upload", body), 400, errcode)


def test_uploading_keys_needs_an_access_token(anon: Client) -> None:
    assert_error(anon.post(f"{KEYS}/upload", {}), 401, "M_MISSING_TOKEN")
    assert_error(anon.post(f"{KEYS}/query", {"device_keys": {}}), 401, "M_MISSING_TOKEN")


def test_a_one_time_key_id_cannot_be_reused_for_another_key(alice: Client) -> None:
    device = Device(alice)
    device.upload(one_time_keys=device.one_time_keys("a"))
    device.upload(one_time_keys=device.one_time_keys("a"))  # a retried upload
    other = {f"{OTK}:a": sign_json({"key": "another"}, alice.user_id or "", device.key)}
    assert_error(alice.post(f"{KEYS}/upload", {"one_time_keys": other}), 400, "M_INVALID_PARAM")
    assert device.upload() == {"one_time_key_counts": {OTK: 1}}


# -- claiming -------------------------------------------------------------------------------------------


def test_each_one_time_key_is_claimed_once(alice: Client, bob: Client, carol: Client) -> None:
    device = Device(alice)
    keys = device.one_time_keys("a", "b")
    device.upload(one_time_keys=keys)
    got = [claim(claimer, {alice.user_id: {alice.device_id: OTK}}) for claimer in (bob, carol)]
    claimed = [g["one_time_keys"][alice.user_id][alice.device_id] for g in got]
    assert {name for c in claimed for name in c} == set(keys)
    for c in claimed:
        ((name, key),) = c.items()
        assert key == keys[name]
    assert got[0]["failures"] == {}
    assert claim(bob, {alice.user_id: {alice.device_id: OTK}}) == {"one_time_keys": {}, "failures": {}}
    assert device.upload() == {"one_time_key_counts": {OTK: 0}}


def test_the_fallback_key_is_claimed_when_one_time_keys_run_out(alice: Client, bob: Client) -> None:
    device = Device(alice)
    fallback = device.one_time_keys("fb", fallback=True)
    device.upload(one_time_keys=device.one_time_keys("otk"), fallback_keys=fallback)
    wanted = {alice.user_id: {alice.device_id: OTK}}
    assert list(claim(bob, wanted)["one_time_keys"][alice.user_id][alice.device_id]) == [f"{OTK}:otk"]
    for _ in range(2):
        assert claim(bob, wanted)["one_time_keys"][alice.user_id][alice.device_id] == fallback


def test_claims_for_unknown_devices_and_algorithms_find_nothing(alice: Client, bob: Client) -> None:
    device = Device(alice)
    device.upload(one_time_keys=device.one_time_keys("a"))
    wanted = {alice.user_id: {"NOSUCHDEVICE": OTK}, bob.user_id: {bob.device_id: OTK}}
    assert claim(bob, wanted) == {"one_time_keys": {}, "failures": {}}
    assert claim(bob, {alice.user_id: {alice.device_id: "other_algorithm"}})["one_time_keys"] == {}


def test_users_of_other_servers_are_failures_not_errors(alice: Client, bob: Client) -> None:
    device = Device(bob)
    device.upload(device_keys=device.device_keys())
    answer = query(alice, {"@someone:remote.example": [], bob.user_id: []})
    assert set(answer["failures"]) == {"remote.example"}
    assert answer["failures"]["remote.example"]["status"] == 503
    assert set(answer["device_keys"]) == {bob.user_id}
    claimed = claim(alice, {"@someone:remote.example": {"DEV": OTK}})
    assert claimed["one_time_keys"] == {} and set(claimed["failures"]) == {"remote.example"}


@pytest.mark.parametrize(
    ("path", "body", "errcode"),
    [
        ("query", {}, "M_MISSING_PARAM"),
        ("query", {"device_keys": []}, "M_INVALID_PARAM"),
        ("query", {"device_keys": {"not-a-user": []}}, "M_INVALID_PARAM"),
        ("query", {"device_keys": {"@a:localhost": "DEV"}}, "M_BAD_JSON"),
        ("query", {"device_keys": {"@a:localhost": [1]}}, "M_BAD_JSON"),
        ("claim", {}, "M_MISSING_PARAM"),
        ("claim", {"one_time_keys": {"@a:localhost": ["DEV"]}}, "M_BAD_JSON"),
        ("claim", {"one_time_keys": {"@a:localhost": {"DEV": 5}}}, "M_BAD_JSON"),
        ("claim", {"one_time_keys": {"nobody": {"DEV": OTK}}}, "M_INVALID_PARAM"),
    ],
)
def test_query_and_claim_validate_their_bodies(alice: Client, path: str, body: dict[str, Any], errcode: str) -> None:
    assert_error(alice.post(f"{KEYS}/{path}", body), 400, errcode)


# -- device list changes --------------------------------------------------------------------------------


def changes(client: Client, since: str, until: str) -> dict[str, Any]:
    return ok(client.get(f"{KEYS}/changes", params={"from": since, "to": until}))


def test_key_changes_name_room_mates_whose_devices_changed(
    server: ServerProcess, beside: HomeServer, alice: RoomClient, bob: RoomClient, carol: RoomClient
) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    before = sync_token(beside)
    for device in (Device(bob), Device(carol)):  # carol shares no room with alice
        device.upload(device_keys=device.device_keys())
    middle = sync_token(beside)
    assert changes(alice, before, middle) == {"changed": [bob.user_id], "left": []}
    second_login(server, bob)  # a new device changes the list too
    after = sync_token(beside)
    assert changes(alice, middle, after) == {"changed": [bob.user_id], "left": []}
    assert changes(alice, after, after) == {"changed": [], "left": []}
    # A user is told about their own devices.
    device = Device(alice)
    device.upload(device_keys=device.device_keys())
    assert changes(alice, after, sync_token(beside))["changed"] == [alice.user_id]


def test_key_changes_name_who_joined_and_who_left(
    beside: HomeServer, alice: RoomClient, bob: RoomClient, carol: RoomClient
) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    before = sync_token(beside)
    carol.join(room)
    bob.leave(room)
    after = sync_token(beside)
    assert changes(alice, before, after) == {"changed": [carol.user_id], "left": [bob.user_id]}
    # The one who leaves is told whom they no longer share a room with.
    assert changes(bob, before, after)["left"] == sorted([alice.user_id, carol.user_id])


@pytest.mark.parametrize(
    "params", [{"from": "s0_0_0_0_0_0"}, {"from": "garbage", "to": "s0_0_0_0_0_0"}, {"from": "s1_2", "to": "s1_2"}]
)
def test_key_changes_need_two_sync_tokens(alice: Client, params: dict[str, str]) -> None:
    response = alice.get(f"{KEYS}/changes", params=params)
    assert_error(response, 400, "M_MISSING_PARAM" if "to" not in params else "M_INVALID_PARAM")


def test_a_deleted_device_takes_its_keys_with_it(server: ServerProcess, alice: Client, bob: Client) -> None:
    phone = second_login(server, alice)
    tablet = second_login(server, alice)
    for device in (Device(phone), Device(tablet)):
        device.upload(device_keys=device.device_keys(), one_time_keys=device.one_time_keys("a"))
    assert ok(phone.post("/_matrix/client/v3/logout")) == {}
    body = {"auth": alice.password_auth()}
    ok(alice.delete(f"/_matrix/client/v3/devices/{tablet.device_id}", body))
    assert query(bob, {alice.user_id: []})["device_keys"] == {alice.user_id: {}}
    wanted = {alice.user_id: {phone.device_id: OTK, tablet.device_id: OTK}}
    assert claim(bob, wanted)["one_time_keys"] == {}


# -- cross-signing --------------------------------------------------------------------------------------


class CrossSigning:
    """A user's three cross-signing keys, the self-signing and user-signing ones signed by the master."""

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.master, self.master_key = self._key("master", None)
        self.self_signing, self.self_signing_key = self._key("self_signing", self.master)
        self.user_signing, self.user_signing_key = self._key("user_signing", self.master)

    def _key(self, usage: str, signer: SigningKey | None) -> tuple[SigningKey, dict[str, Any]]:
        key = new_key()
        key.version = public(key)  # a cross-signing key's id is its public key
        body = {"user_id": self.user_id, "usage": [usage], "keys": {f"ed25519:{key.version}": key.version}}
        return key, sign_json(body, self.user_id, signer) if signer else body

    def body(self, **extra: Any) -> dict[str, Any]:
        return {
            "master_key": self.master_key,
            "self_signing_key": self.self_signing_key,
            "user_signing_key": self.user_signing_key,
            **extra,
        }


def upload_cross_signing(client: Client, body: dict[str, Any]) -> requests.Response:
    return client.post(f"{KEYS}/device_signing/upload", body)


def test_the_first_cross_signing_keys_need_no_password_and_others_see_them(alice: Client, bob: Client) -> None:
    keys = CrossSigning(alice.user_id or "")
    assert ok(upload_cross_signing(alice, keys.body())) == {}
    seen_by_bob = query(bob, {alice.user_id: []})
    assert seen_by_bob["master_keys"] == {alice.user_id: keys.master_key}
    assert seen_by_bob["self_signing_keys"] == {alice.user_id: keys.self_signing_key}
    assert seen_by_bob["user_signing_keys"] == {}
    assert query(alice, {alice.user_id: []})["user_signing_keys"] == {alice.user_id: keys.user_signing_key}


def test_replacing_cross_signing_keys_needs_the_password(alice: Client, bob: Client) -> None:
    ok(upload_cross_signing(alice, CrossSigning(alice.user_id or "").body()))
    new = CrossSigning(alice.user_id or "")
    response = upload_cross_signing(alice, new.body())
    assert response.status_code == 401, response.text
    assert {"stages": ["m.login.password"]} in response.json()["flows"]
    session = response.json()["session"]
    wrong = upload_cross_signing(alice, new.body(auth=alice.password_auth("wrong password", session)))
    assert wrong.status_code == 401 and wrong.json()["errcode"] == "M_FORBIDDEN"
    assert ok(upload_cross_signing(alice, new.body(auth=alice.password_auth(session=session)))) == {}
    assert query(bob, {alice.user_id: []})["master_keys"] == {alice.user_id: new.master_key}


def test_uploading_the_same_cross_signing_keys_again_needs_no_password(alice: Client) -> None:
    keys = CrossSigning(alice.user_id or "")
    ok(upload_cross_signing(alice, keys.body()))
    assert ok(upload_cross_signing(alice, keys.body())) == {}
    assert ok(upload_cross_signing(alice, {"master_key": keys.master_key})) == {}


def test_a_new_self_signing_key_may_be_signed_by_the_stored_master_key(alice: Client, bob: Client) -> None:
    keys = CrossSigning(alice.user_id or "")
    ok(upload_cross_signing(alice, {"master_key": keys.master_key}))
    body = {"self_signing_key": keys.self_signing_key, "auth": alice.password_auth()}
    assert ok(upload_cross_signing(alice, body)) == {}
    assert query(bob, {alice.user_id: []})["self_signing_keys"] == {alice.user_id: keys.self_signing_key}


def test_keys_must_be_signed_by_the_master_key(alice: Client) -> None:
    keys, stranger = CrossSigning(alice.user_id or ""), CrossSigning(alice.user_id or "")
    body = {"master_key": keys.master_key, "self_signing_key": stranger.self_signing_key}
    assert_error(upload_cross_signing(alice, body), 400, "M_INVALID_SIGNATURE")
    unsigned = {**keys.user_signing_key, "signatures": {}}
    assert_error(
        upload_cross_signing(alice, {"master_key": keys.master_key, "user_signing_key": unsigned}),
        400,
        "M_INVALID_SIGNATURE",
    )


def test_cross_signing_keys_without_a_master_key_are_refused(alice: Client) -> None:
    keys = CrossSigning(alice.user_id or "")
    assert_error(upload_cross_signing(alice, {"self_signing_key": keys.self_signing_key}), 400, "M_MISSING_PARAM")
    assert_error(upload_cross_signing(alice, {}), 400, "M_MISSING_PARAM")


def test_cross_signing_keys_must_be_the_users_own_and_well_formed(alice: Client, bob: Client) -> None:
    assert_error(upload_cross_signing(alice, CrossSigning(bob.user_id or "").body()), 400, "M_INVALID_PARAM")
    keys = CrossSigning(alice.user_id or "")
    wrong_usage = {**keys.master_key, "usage": ["self_signing"]}
    assert_error(upload_cross_signing(alice, {"master_key": wrong_usage}), 400, "M_INVALID_PARAM")
    two_keys = {**keys.master_key, "keys": {"ed25519:a": "a", "ed25519:b": "b"}}
    assert_error(upload_cross_signing(alice, {"master_key": two_keys}), 400, "M_BAD_JSON")
    not_a_key = {**keys.master_key, "keys": {"ed25519:abc": "abc"}}
    assert_error(upload_cross_signing(alice, {"master_key": not_a_key}), 400, "M_INVALID_PARAM")
    assert query(bob, {alice.user_id: []})["master_keys"] == {}


def test_a_cross_signing_key_may_not_have_a_device_id(server: ServerProcess, alice: Client) -> None:
    keys = CrossSigning(alice.user_id or "")
    second_login(server, alice, device_id=keys.master.version)
    assert_error(upload_cross_signing(alice, {"master_key": keys.master_key}), 403, "M_FORBIDDEN")


# -- signatures -----------------------------------------------------------------------------------------


def upload_signatures(client: Client, body: dict[str, Any]) -> dict[str, Any]:
    return ok(client.post(f"{KEYS}/signatures/upload", body))


def test_a_device_signed_by_the_self_signing_key_shows_the_signature(alice: Client, bob: Client) -> None:
    device, keys = Device(alice), CrossSigning(alice.user_id or "")
    device.upload(device_keys=device.device_keys())
    ok(upload_cross_signing(alice, keys.body()))
    signed = sign_json(device.device_keys(), alice.user_id or "", keys.self_signing)
    assert upload_signatures(alice, {alice.user_id: {alice.device_id: signed}}) == {"failures": {}}
    shown = query(bob, {alice.user_id: []})["device_keys"][alice.user_id][alice.device_id]
    assert shown["signatures"][alice.user_id] == signed["signatures"][alice.user_id]


def test_invalid_signatures_are_reported_per_key(alice: Client, bob: Client) -> None:
    device, keys = Device(alice), CrossSigning(alice.user_id or "")
    device.upload(device_keys=device.device_keys())
    ok(upload_cross_signing(alice, keys.body()))
    forged = sign_json(device.device_keys(), alice.user_id or "", keys.user_signing)  # the wrong key
    forged["signatures"][alice.user_id][f"ed25519:{keys.self_signing.version}"] = forged["signatures"][
        alice.user_id
    ].pop(f"ed25519:{keys.user_signing.version}")
    tampered = sign_json({**device.device_keys(), "algorithms": ["other"]}, alice.user_id or "", keys.self_signing)
    answer = upload_signatures(alice, {alice.user_id: {alice.device_id: forged}})
    assert answer["failures"][alice.user_id][alice.device_id]["errcode"] == "M_INVALID_SIGNATURE"
    answer = upload_signatures(alice, {alice.user_id: {alice.device_id: tampered, "NOSUCHKEY": tampered}})
    assert answer["failures"][alice.user_id][alice.device_id]["errcode"] == "M_INVALID_PARAM"
    assert answer["failures"][alice.user_id]["NOSUCHKEY"]["errcode"] == "M_NOT_FOUND"
    shown = query(bob, {alice.user_id: []})["device_keys"][alice.user_id][alice.device_id]
    assert set(shown["signatures"][alice.user_id]) == {f"ed25519:{alice.device_id}"}


def test_a_signature_of_another_users_master_key_is_seen_by_the_signer_alone(
    alice: Client, bob: Client, carol: Client
) -> None:
    mine, theirs = CrossSigning(alice.user_id or ""), CrossSigning(bob.user_id or "")
    ok(upload_cross_signing(alice, mine.body()))
    ok(upload_cross_signing(bob, theirs.body()))
    signed = sign_json(dict(theirs.master_key), alice.user_id or "", mine.user_signing)
    assert upload_signatures(alice, {bob.user_id: {theirs.master.version: signed}}) == {"failures": {}}
    by_alice = query(alice, {bob.user_id: []})["master_keys"][bob.user_id]
    assert by_alice["signatures"][alice.user_id] == signed["signatures"][alice.user_id]
    for other in (bob, carol):
        assert query(other, {bob.user_id: []})["master_keys"][bob.user_id] == theirs.master_key


def test_signing_someone_without_a_user_signing_key_fails(alice: Client, bob: Client) -> None:
    theirs = CrossSigning(bob.user_id or "")
    ok(upload_cross_signing(bob, theirs.body()))
    ok(upload_cross_signing(alice, {"master_key": CrossSigning(alice.user_id or "").master_key}))
    signed = sign_json(dict(theirs.master_key), alice.user_id or "", new_key())
    answer = upload_signatures(alice, {bob.user_id: {theirs.master.version: signed}})
    assert answer["failures"][bob.user_id][theirs.master.version]["errcode"] == "M_NOT_FOUND"


def test_a_device_may_sign_its_users_master_key(alice: Client, bob: Client) -> None:
    device, keys = Device(alice), CrossSigning(alice.user_id or "")
    device.upload(device_keys=device.device_keys())
    ok(upload_cross_signing(alice, keys.body()))
    signed = sign_json(dict(keys.master_key), alice.user_id or "", device.key)
    assert upload_signatures(alice, {alice.user_id: {keys.master.version: signed}}) == {"failures": {}}
    shown = query(bob, {alice.user_id: []})["master_keys"][alice.user_id]
    assert shown["signatures"][alice.user_id] == {
        f"ed25519:{alice.device_id}": signed["signatures"][alice.user_id][f"ed25519:{alice.device_id}"]
    }


def test_signature_uploads_validate_their_body(alice: Client) -> None:
    assert_error(alice.post(f"{KEYS}/signatures/upload", {"nobody": {}}), 400, "M_INVALID_PARAM")
    assert_error(alice.post(f"{KEYS}/signatures/upload", {alice.user_id: {"KEY": "x"}}), 400, "M_BAD_JSON")
    assert_error(alice.post(f"{KEYS}/signatures/upload", {alice.user_id: []}), 400, "M_BAD_JSON")
