"""FederatedE2e over fake servers, rooms and store: requests per server, failures, the cache and what drops
it, and the stream_id / prev_id chain of the device list updates we send."""

from typing import Any

from homeserver.handlers.federation.e2e import CACHE_S, FederatedE2e
from homeserver.http.federation_client import HttpResponseError, RequestSendFailed
from homeserver.storage.e2e_keys import DeviceEntry, KeyQueryResult
from tests.inline import resolve

OURS = "ours.example"
ALICE = "@alice:ours.example"
BOB = "@bob:b.example"
CAROL = "@carol:c.example"


class FakeClient:
    def __init__(self) -> None:
        self.answers: dict[str, Any] = {}
        self.asked: list[tuple[str, str, dict, float]] = []

    async def post_json(self, server: str, path: str, body: dict, timeout_s: float) -> Any:
        self.asked.append((server, path, body, timeout_s))
        answer = self.answers.get(server, RequestSendFailed("unreachable"))
        if isinstance(answer, Exception):
            raise answer
        return answer


class FakeRooms:
    def __init__(self) -> None:
        self.sharing: dict[str, set[str]] = {}

    async def users_sharing_rooms(self, user_id: str) -> set[str]:
        return self.sharing.get(user_id, set())


class FakeStore:
    def __init__(self) -> None:
        self.position = 0
        self.devices: dict[str, DeviceEntry] = {}

    async def device_list(self, user_id: str, device_ids: list[str] | None) -> tuple[int, list[DeviceEntry]]:
        return self.position, [self.devices.get(d) or DeviceEntry(d, None, None, False) for d in device_ids or []]

    async def query(self, wanted: dict[str, list[str]], requester: str) -> KeyQueryResult:
        return KeyQueryResult(master_keys={ALICE: {"usage": ["master"]}})


class FakeSender:
    def __init__(self) -> None:
        self.edus: list[tuple[str, str, dict]] = []

    async def send_durable_edus(self, edus: Any) -> None:
        self.edus.extend(edus)


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def make() -> tuple[FederatedE2e, FakeClient, FakeRooms, FakeStore, FakeSender, Clock]:
    client, rooms, store, sender, clock = FakeClient(), FakeRooms(), FakeStore(), FakeSender(), Clock()
    e2e = FederatedE2e(OURS, client, rooms, store, sender, clock)  # type: ignore[arg-type]
    return e2e, client, rooms, store, sender, clock


def keys_answer(user_id: str, *device_ids: str) -> dict[str, Any]:
    return {"device_keys": {user_id: {d: {"device_id": d, "user_id": user_id} for d in device_ids}}}


def test_query_asks_each_server_once_and_lists_those_that_fail() -> None:
    e2e, client, _, _, _, _ = make()
    client.answers["b.example"] = {
        **keys_answer(BOB, "B1"),
        "master_keys": {BOB: {"usage": ["master"]}, CAROL: {"usage": ["master"]}},  # not b's to answer for
    }
    client.answers["c.example"] = HttpResponseError(500, None)
    result = resolve(e2e.query({BOB: [], CAROL: [], "@dave:d.example": []}, 2.5))
    assert sorted(server for server, *_ in client.asked) == ["b.example", "c.example", "d.example"]
    assert all(timeout == 2.5 for *_, timeout in client.asked)
    assert result.device_keys == {BOB: {"B1": {"device_id": "B1", "user_id": BOB}}}
    assert result.master_keys == {BOB: {"usage": ["master"]}}
    assert result.failures["c.example"]["status"] == 500 and result.failures["d.example"]["status"] == 503


def test_a_remote_users_keys_are_cached_while_sharing_a_room_until_an_update() -> None:
    e2e, client, rooms, _, _, clock = make()
    client.answers["b.example"] = keys_answer(BOB, "B1", "B2")
    rooms.sharing[BOB] = {BOB, ALICE}
    resolve(e2e.query({BOB: []}, None))
    assert set(resolve(e2e.query({BOB: ["B2"]}, None)).device_keys[BOB]) == {"B2"}
    assert len(client.asked) == 1
    e2e.remote_keys_changed(BOB)
    resolve(e2e.query({BOB: []}, None))
    assert len(client.asked) == 2
    clock.now += CACHE_S
    resolve(e2e.query({BOB: []}, None))
    assert len(client.asked) == 3


def test_keys_of_a_user_sharing_no_room_with_ours_are_not_cached() -> None:
    e2e, client, rooms, _, _, _ = make()
    client.answers["b.example"] = keys_answer(BOB, "B1")
    rooms.sharing[BOB] = {BOB, CAROL}
    resolve(e2e.query({BOB: []}, None))
    resolve(e2e.query({BOB: []}, None))
    assert len(client.asked) == 2


def test_claim_keeps_only_the_devices_asked_for() -> None:
    e2e, client, _, _, _, _ = make()
    client.answers["b.example"] = {
        "one_time_keys": {BOB: {"B1": {"signed_curve25519:k": {"key": "x"}}, "B9": {"signed_curve25519:j": {}}}}
    }
    claimed, failures = resolve(e2e.claim({BOB: {"B1": "signed_curve25519"}, CAROL: {"C1": "x"}}, None))
    assert claimed == {BOB: {"B1": {"signed_curve25519:k": {"key": "x"}}}}
    assert set(failures) == {"c.example"}


def test_device_list_updates_chain_their_stream_ids_to_every_server_sharing_a_room() -> None:
    e2e, _, rooms, store, sender, _ = make()
    rooms.sharing[ALICE] = {ALICE, BOB, CAROL, "@bob2:b.example"}
    store.devices["D1"] = DeviceEntry("D1", "Phone", {"keys": {"ed25519:D1": "k"}}, True)
    store.position = 7
    e2e.local_devices_changed(ALICE, ["D1"])
    first = [(dest, content["stream_id"], content["prev_id"]) for dest, _, content in sender.edus]
    assert first == [("b.example", 7, []), ("c.example", 7, [])]  # nothing sent before: the receiver resyncs
    assert sender.edus[0][2]["keys"] == {"keys": {"ed25519:D1": "k"}}
    assert sender.edus[0][2]["device_display_name"] == "Phone" and sender.edus[0][2]["deleted"] is False
    sender.edus.clear()
    store.position = 9
    e2e.local_devices_changed(ALICE, ["D1", "GONE"])
    to_b = [(c["device_id"], c["stream_id"], c["prev_id"], c["deleted"]) for d, _, c in sender.edus if d == "b.example"]
    assert to_b == [("D1", 9, [7], False), ("GONE", 9, [9], True)]


def test_nothing_is_sent_for_a_user_alone_with_our_users() -> None:
    e2e, _, rooms, store, sender, _ = make()
    rooms.sharing[ALICE] = {ALICE, "@zed:ours.example"}
    store.position = 3
    e2e.local_devices_changed(ALICE, ["D1"])
    e2e.local_signing_keys_changed(ALICE)
    assert sender.edus == []


def test_signing_key_updates_carry_the_master_key() -> None:
    e2e, _, rooms, _, sender, _ = make()
    rooms.sharing[ALICE] = {ALICE, BOB}
    e2e.local_signing_keys_changed(ALICE)
    assert sender.edus == [
        ("b.example", "m.signing_key_update", {"user_id": ALICE, "master_key": {"usage": ["master"]}})
    ]
