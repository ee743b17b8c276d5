"""E2EE across servers: key queries and claims both ways, and device list updates, against a real Synapse;
the federation endpoints themselves between two of our servers. Device keys are real ed25519 keys with
real signatures (tests/integration/test_keys.py Device)."""

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from nio import (
    AsyncClient,
    AsyncClientConfig,
    LoginResponse,
    RoomCreateResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
)

from tests.client import PASSWORD, RoomClient, assert_error, new_room_user, ok, quote
from tests.federation_servers import FederatingServer, federating_server
from tests.integration.test_federation_membership import eventually, join_via, signed_request
from tests.integration.test_keys import OTK, Device
from tests.synapse import SynapseProcess

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
KEYS = "/_matrix/client/v3/keys"


def query(client: RoomClient, wanted: dict[str, list[str]], **extra: Any) -> dict[str, Any]:
    return ok(client.post(f"{KEYS}/query", {"device_keys": wanted, **extra}))


def claim(client: RoomClient, wanted: dict[str, dict[str, str]]) -> dict[str, Any]:
    return ok(client.post(f"{KEYS}/claim", {"one_time_keys": wanted}))


def sync(client: RoomClient, since: str | None = None) -> dict[str, Any]:
    params = {"timeout": 0, **({"since": since} if since else {})}
    return ok(client.get("/_matrix/client/v3/sync", params=params))


def login_again(base_url: str, user: RoomClient) -> RoomClient:
    other = RoomClient(base_url)
    assert other.login(user.user_id or "").status_code == 200
    return other


def without_unsigned(keys: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in keys.items() if k != "unsigned"}


def with_keys(client: RoomClient, otks: tuple[str, ...] = ()) -> dict[str, Any]:
    """Upload the client's device keys (and one-time keys); returns the device keys."""
    device = Device(client)
    keys = device.device_keys()
    body: dict[str, Any] = {"device_keys": keys}
    if otks:
        body["one_time_keys"] = device.one_time_keys(*otks)
    device.upload(**body)
    return keys


def changed_since(client: RoomClient, since: str, user_id: str) -> bool:
    return user_id in sync(client, since).get("device_lists", {}).get("changed", [])


@pytest.fixture(scope="module")
def shared(fed_server: FederatingServer, synapse: SynapseProcess) -> tuple[RoomClient, RoomClient]:
    """Our alice and Synapse's sam, both joined to alice's room, each with device keys uploaded."""
    alice = new_room_user(fed_server.url)
    room_id = alice.create_room(preset="public_chat")
    sam = synapse.register()
    assert join_via(sam, room_id, fed_server.server_name) == room_id
    with_keys(alice, ("a1", "a2"))
    with_keys(sam, ("s1", "s2"))
    return alice, sam


# -- querying and claiming ---------------------------------------------------------------------------


def test_we_get_a_synapse_users_device_keys(shared: tuple[RoomClient, RoomClient]) -> None:
    alice, sam = shared
    phone = login_again(sam.base_url, sam)
    uploaded = with_keys(phone)
    answer = query(alice, {sam.user_id: [phone.device_id]})
    assert answer["failures"] == {}
    assert without_unsigned(answer["device_keys"][sam.user_id][phone.device_id]) == uploaded


def test_synapse_gets_our_users_device_keys(
    shared: tuple[RoomClient, RoomClient], fed_server: FederatingServer
) -> None:
    alice, sam = shared
    laptop = login_again(fed_server.url, alice)
    uploaded = with_keys(laptop)

    # Synapse keeps our user's devices since they share a room: it learns of the new one by an update.
    def answer_with_laptop() -> dict[str, Any] | None:
        found = query(sam, {alice.user_id: []})
        return found if laptop.device_id in found["device_keys"][alice.user_id] else None

    answer = eventually(answer_with_laptop, "the new device at Synapse")
    assert answer["failures"] == {}
    assert without_unsigned(answer["device_keys"][alice.user_id][laptop.device_id]) == uploaded
    assert alice.device_id in answer["device_keys"][alice.user_id]


def test_synapse_asks_us_for_a_user_it_shares_no_room_with(
    shared: tuple[RoomClient, RoomClient], fed_server: FederatingServer
) -> None:
    _, sam = shared
    carol = new_room_user(fed_server.url)  # Synapse holds no copy of her devices: it must ask us
    uploaded = with_keys(carol)
    answer = query(sam, {carol.user_id: []})
    assert answer["failures"] == {}
    assert without_unsigned(answer["device_keys"][carol.user_id][carol.device_id]) == uploaded


def test_we_claim_a_synapse_devices_one_time_key(shared: tuple[RoomClient, RoomClient]) -> None:
    alice, sam = shared
    answer = claim(alice, {sam.user_id: {sam.device_id: OTK}})
    assert answer["failures"] == {}
    ((key_id, key),) = answer["one_time_keys"][sam.user_id][sam.device_id].items()
    assert key_id in (f"{OTK}:s1", f"{OTK}:s2") and key["key"] == f"otk-{key_id.split(':')[1]}"
    again = claim(alice, {sam.user_id: {sam.device_id: OTK}})
    assert set(again["one_time_keys"][sam.user_id][sam.device_id]) == {f"{OTK}:s1", f"{OTK}:s2"} - {key_id}


def test_synapse_claims_our_devices_one_time_key(shared: tuple[RoomClient, RoomClient]) -> None:
    alice, sam = shared
    answer = claim(sam, {alice.user_id: {alice.device_id: OTK}})
    ((key_id, _),) = answer["one_time_keys"][alice.user_id][alice.device_id].items()
    assert key_id in (f"{OTK}:a1", f"{OTK}:a2")
    counts = ok(alice.post(f"{KEYS}/upload", {}))["one_time_key_counts"]
    assert counts[OTK] <= 1  # the claim took it from our store


def test_an_unreachable_server_is_listed_in_failures(shared: tuple[RoomClient, RoomClient]) -> None:
    alice, sam = shared
    answer = query(alice, {sam.user_id: [], "@nobody:127.0.0.1:1": []}, timeout=5000)
    assert set(answer["failures"]) == {"127.0.0.1:1"}
    assert sam.device_id in answer["device_keys"][sam.user_id]
    claimed = claim(alice, {"@nobody:127.0.0.1:1": {"DEV": OTK}})
    assert claimed["one_time_keys"] == {} and set(claimed["failures"]) == {"127.0.0.1:1"}


# -- device list updates ---------------------------------------------------------------------------------


def test_a_new_synapse_device_shows_in_our_sync_and_query(shared: tuple[RoomClient, RoomClient]) -> None:
    alice, sam = shared
    query(alice, {sam.user_id: []})  # cached now: the update must drop it
    since = sync(alice)["next_batch"]
    tablet = login_again(sam.base_url, sam)
    uploaded = with_keys(tablet)
    eventually(lambda: changed_since(alice, since, sam.user_id), "Synapse's device list update in our sync")
    devices = query(alice, {sam.user_id: []})["device_keys"][sam.user_id]
    assert without_unsigned(devices[tablet.device_id]) == uploaded


def test_a_new_device_of_ours_shows_in_synapse_sync_and_query(
    shared: tuple[RoomClient, RoomClient], fed_server: FederatingServer
) -> None:
    alice, sam = shared
    query(sam, {alice.user_id: []})  # Synapse caches our user's devices from now on
    since = sync(sam)["next_batch"]
    tablet = login_again(fed_server.url, alice)
    uploaded = with_keys(tablet)
    eventually(lambda: changed_since(sam, since, alice.user_id), "our device list update in Synapse's sync")

    def synapse_sees_keys() -> bool:
        found = query(sam, {alice.user_id: []})["device_keys"][alice.user_id].get(tablet.device_id)
        return found is not None and without_unsigned(found) == uploaded

    eventually(synapse_sees_keys, "the new device's keys at Synapse")


def test_a_deleted_and_a_renamed_device_of_ours_reach_synapse(
    shared: tuple[RoomClient, RoomClient], fed_server: FederatingServer
) -> None:
    alice, sam = shared
    old = login_again(fed_server.url, alice)
    with_keys(old)
    eventually(lambda: old.device_id in query(sam, {alice.user_id: []})["device_keys"][alice.user_id], "the device")
    ok(alice.put(f"/_matrix/client/v3/devices/{quote(alice.device_id or '')}", {"display_name": "Renamed"}))

    def named() -> bool:
        mine = query(sam, {alice.user_id: []})["device_keys"][alice.user_id][alice.device_id]
        return mine.get("unsigned", {}).get("device_display_name") == "Renamed"

    eventually(named, "the new device name at Synapse")
    ok(old.post("/_matrix/client/v3/logout"))
    gone = lambda: old.device_id not in query(sam, {alice.user_id: []})["device_keys"][alice.user_id]  # noqa: E731
    eventually(gone, "the deleted device gone at Synapse")


# -- the federation endpoints, between two of our servers ------------------------------------------------


@pytest.fixture(scope="module")
def pair(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FederatingServer, FederatingServer]]:
    with (
        federating_server(backend, tmp_path_factory.mktemp(f"e2e-a-{backend}")) as a,
        federating_server(backend, tmp_path_factory.mktemp(f"e2e-b-{backend}")) as b,
    ):
        yield a, b


def test_user_devices_lists_every_device_with_its_keys(pair: tuple[FederatingServer, FederatingServer]) -> None:
    a, b = pair
    alice = new_room_user(a.url)
    uploaded = with_keys(alice)
    bare = login_again(a.url, alice)
    answer = signed_request(b, a, "GET", f"/_matrix/federation/v1/user/devices/{quote(alice.user_id or '')}")
    body = ok(answer)
    assert body["user_id"] == alice.user_id and body["stream_id"] > 0
    devices = {d["device_id"]: d for d in body["devices"]}
    assert set(devices) == {alice.device_id, bare.device_id}
    assert devices[alice.device_id]["keys"] == uploaded and "keys" not in devices[bare.device_id]


def test_user_endpoints_refuse_bad_input(pair: tuple[FederatingServer, FederatingServer]) -> None:
    a, b = pair
    other = f"/_matrix/federation/v1/user/devices/{quote('@x:' + b.server_name)}"
    assert_error(signed_request(b, a, "GET", other), 400, "M_INVALID_PARAM")
    assert_error(signed_request(b, a, "POST", "/_matrix/federation/v1/user/keys/query", {}), 400, "M_MISSING_PARAM")
    bad = {"device_keys": {"@x:y": "all"}}
    assert_error(signed_request(b, a, "POST", "/_matrix/federation/v1/user/keys/query", bad), 400, "M_BAD_JSON")
    unsigned = requests.post(
        a.federation_url + "/_matrix/federation/v1/user/keys/claim", json={}, verify=False, timeout=30
    )
    assert_error(unsigned, 401, "M_UNAUTHORIZED")


def test_two_of_our_servers_query_claim_and_learn_of_changes(pair: tuple[FederatingServer, FederatingServer]) -> None:
    a, b = pair
    alice, bob = new_room_user(a.url), new_room_user(b.url)
    room_id = alice.create_room(preset="public_chat")
    assert join_via(bob, room_id, a.server_name) == room_id
    uploaded = with_keys(alice, ("k1",))
    answer = query(bob, {alice.user_id: []})
    assert without_unsigned(answer["device_keys"][alice.user_id][alice.device_id]) == uploaded
    claimed = claim(bob, {alice.user_id: {alice.device_id: OTK}})
    assert list(claimed["one_time_keys"][alice.user_id][alice.device_id]) == [f"{OTK}:k1"]
    since = sync(bob)["next_batch"]
    phone = login_again(a.url, alice)
    phone_keys = with_keys(phone)
    eventually(lambda: changed_since(bob, since, alice.user_id), "the device list update at the other server")
    devices = query(bob, {alice.user_id: []})["device_keys"][alice.user_id]
    assert without_unsigned(devices[phone.device_id]) == phone_keys


# -- two encrypting clients, one on each server -----------------------------------------------------------


async def nio_client(base_url: str, user: RoomClient, store: Path) -> AsyncClient:
    """A matrix-nio client with encryption, logged in as `user` on a new device with its keys uploaded."""
    store.mkdir()
    client = AsyncClient(
        base_url, user.user_id or "", store_path=str(store), config=AsyncClientConfig(encryption_enabled=True)
    )
    response = await client.login(PASSWORD, device_name="nio")
    assert isinstance(response, LoginResponse), response
    if client.should_upload_keys:
        await client.keys_upload()
    return client


async def send_encrypted(sender: AsyncClient, room_id: str, text: str) -> None:
    await sender.sync(timeout=0)
    sent = await sender.room_send(
        room_id, "m.room.message", {"msgtype": "m.text", "body": text}, ignore_unverified_devices=True
    )
    assert isinstance(sent, RoomSendResponse), sent


async def receive_decrypted(receiver: AsyncClient, room_id: str, text: str) -> None:
    """Sync until `text` arrives decrypted: the room key (to-device) and the message come separately."""
    seen: list[Any] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        response = await receiver.sync(timeout=2000)
        joined = response.rooms.join.get(room_id) if isinstance(response, SyncResponse) else None
        seen += joined.timeline.events if joined else []
        if any(isinstance(e, RoomMessageText) and e.body == text for e in seen):
            return
    raise AssertionError(f"{text!r} never decrypted: {seen}")


def test_encrypted_messages_between_our_server_and_synapse(
    fed_server: FederatingServer, synapse: SynapseProcess, tmp_path: Path
) -> None:
    ours, theirs = new_room_user(fed_server.url), synapse.register()

    async def scenario() -> None:
        alice = await nio_client(fed_server.url, ours, tmp_path / "alice")
        sam = await nio_client(synapse.url, theirs, tmp_path / "sam")
        try:
            encryption = {
                "type": "m.room.encryption",
                "state_key": "",
                "content": {"algorithm": "m.megolm.v1.aes-sha2"},
            }
            created = await alice.room_create(initial_state=[encryption])
            assert isinstance(created, RoomCreateResponse), created
            room_id = created.room_id
            ours.invite(room_id, theirs.user_id or "")
            eventually(lambda: room_id in sync(theirs)["rooms"]["invite"], "the invite at Synapse")
            assert join_via(theirs, room_id, fed_server.server_name) == room_id
            eventually(lambda: joined_at(ours, room_id, sam.user_id), "Synapse's user joined at ours")
            await sam.sync(timeout=0)
            await send_encrypted(alice, room_id, "from ours, for sam only")
            await receive_decrypted(sam, room_id, "from ours, for sam only")
            await send_encrypted(sam, room_id, "from synapse, for alice only")
            await receive_decrypted(alice, room_id, "from synapse, for alice only")
        finally:
            await alice.close()
            await sam.close()

    asyncio.run(scenario())


def joined_at(user: RoomClient, room_id: str, member: str) -> bool:
    answer = user.room_get(room_id, f"state/m.room.member/{quote(member)}")
    return answer.status_code == 200 and answer.json().get("membership") == "join"
