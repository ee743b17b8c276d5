"""E2EE key, to-device and device list stores on both engines."""

import pytest

from homeserver.storage import to_device as to_device_storage
from homeserver.storage.accounts import AccountStore
from homeserver.storage.database import Database
from homeserver.storage.device_lists import DeviceListStore
from homeserver.storage.e2e_keys import E2eKeyStore, OneTimeKeyConflict, Signature
from homeserver.storage.events import TxnKey
from homeserver.storage.to_device import ToDeviceStore
from tests.inline import resolve

ALICE, BOB = "@alice:t", "@bob:t"
OTK = "signed_curve25519"


@pytest.fixture
def accounts(db: Database) -> AccountStore:
    store = AccountStore(db)
    for user in (ALICE, BOB):
        resolve(store.create_user(user, "hash"))
        for device in ("D1", "D2"):
            resolve(store.login(user, device, None, f"{user}-{device}", None))
    return store


@pytest.fixture
def keys(db: Database, accounts: AccountStore) -> E2eKeyStore:
    return E2eKeyStore(db)


@pytest.fixture
def lists(db: Database) -> DeviceListStore:
    return DeviceListStore(db)


@pytest.fixture
def inbox(db: Database, accounts: AccountStore) -> ToDeviceStore:
    return ToDeviceStore(db)


def otks(*names: str) -> list:
    return [(OTK, name, {"key": f"key-{name}", "signatures": {}}) for name in names]


def device_keys(user: str, device: str, curve: str = "c") -> dict:
    return {
        "user_id": user,
        "device_id": device,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
        "keys": {f"curve25519:{device}": curve, f"ed25519:{device}": "e"},
        "signatures": {user: {f"ed25519:{device}": "sig"}},
    }


# -- one-time and fallback keys -------------------------------------------------------------------------


def test_one_time_keys_are_claimed_once_each_oldest_upload_first(keys: E2eKeyStore) -> None:
    resolve(keys.upload(ALICE, "D1", None, otks("b1", "a1"), []))
    counts, _ = resolve(keys.upload(ALICE, "D1", None, otks("a2"), []))
    assert counts == {OTK: 3}
    claimed = [resolve(keys.claim([(ALICE, "D1", OTK)]))[ALICE]["D1"] for _ in range(3)]
    names = [next(iter(c)) for c in claimed]
    assert sorted(names[:2]) == [f"{OTK}:a1", f"{OTK}:b1"] and names[2] == f"{OTK}:a2"
    assert claimed[2][f"{OTK}:a2"] == {"key": "key-a2", "signatures": {}}
    assert resolve(keys.claim([(ALICE, "D1", OTK)])) == {}
    assert resolve(keys.one_time_key_counts(ALICE, "D1")) == {OTK: 0}


def test_counts_are_per_algorithm_and_device(keys: E2eKeyStore) -> None:
    resolve(keys.upload(ALICE, "D1", None, [*otks("x", "y"), ("curve25519", "z", "plain")], []))
    assert resolve(keys.one_time_key_counts(ALICE, "D1")) == {OTK: 2, "curve25519": 1}
    assert resolve(keys.one_time_key_counts(ALICE, "D2")) == {OTK: 0}


def test_a_reused_key_id_with_other_contents_stores_nothing_of_the_upload(keys: E2eKeyStore) -> None:
    resolve(keys.upload(ALICE, "D1", None, otks("k1"), []))
    resolve(keys.upload(ALICE, "D1", None, otks("k1"), []))  # a retry: the same key again is fine
    changed = [(OTK, "k1", {"key": "other", "signatures": {}}), *otks("k2")]
    with pytest.raises(OneTimeKeyConflict):
        resolve(keys.upload(ALICE, "D1", device_keys(ALICE, "D1"), changed, []))
    assert resolve(keys.one_time_key_counts(ALICE, "D1")) == {OTK: 1}
    assert resolve(keys.query({ALICE: []}, ALICE)).device_keys == {ALICE: {}}


def test_fallback_key_is_handed_out_when_one_time_keys_run_out_and_marked_used(keys: E2eKeyStore) -> None:
    fallback = (OTK, "f1", {"key": "fb", "fallback": True, "signatures": {}})
    resolve(keys.upload(ALICE, "D1", None, otks("o1"), [fallback]))
    assert resolve(keys.unused_fallback_key_types(ALICE, "D1")) == [OTK]
    assert resolve(keys.claim([(ALICE, "D1", OTK)]))[ALICE]["D1"] == {f"{OTK}:o1": {"key": "key-o1", "signatures": {}}}
    assert resolve(keys.unused_fallback_key_types(ALICE, "D1")) == [OTK]
    for _ in range(2):  # not consumed: handed out again until replaced
        assert resolve(keys.claim([(ALICE, "D1", OTK)]))[ALICE]["D1"] == {f"{OTK}:f1": fallback[2]}
    assert resolve(keys.unused_fallback_key_types(ALICE, "D1")) == []
    resolve(keys.upload(ALICE, "D1", None, [], [fallback]))  # the same key again stays used
    assert resolve(keys.unused_fallback_key_types(ALICE, "D1")) == []
    resolve(keys.upload(ALICE, "D1", None, [], [(OTK, "f2", {"key": "fb2", "fallback": True, "signatures": {}})]))
    assert resolve(keys.unused_fallback_key_types(ALICE, "D1")) == [OTK]


def test_claims_for_unknown_devices_find_nothing(keys: E2eKeyStore) -> None:
    resolve(keys.upload(ALICE, "D1", None, otks("o1"), []))
    assert resolve(keys.claim([(ALICE, "NOPE", OTK), ("@ghost:t", "D1", OTK)])) == {}


# -- device keys and the device list stream -------------------------------------------------------------


def test_new_device_keys_change_the_device_list_and_the_same_keys_again_do_not(
    keys: E2eKeyStore, lists: DeviceListStore
) -> None:
    start = resolve(lists.current_position())
    assert resolve(keys.upload(ALICE, "D1", device_keys(ALICE, "D1"), [], []))[1] is True
    middle = resolve(lists.current_position())
    assert middle == start + 1
    assert resolve(keys.upload(ALICE, "D1", device_keys(ALICE, "D1"), [], []))[1] is False
    assert resolve(lists.current_position()) == middle
    assert resolve(lists.changed_users(start, middle)) == {ALICE}
    assert resolve(lists.changed_users(middle, middle)) == set()


def test_changed_users_names_who_changed_in_the_range(lists: DeviceListStore) -> None:
    start = resolve(lists.current_position())
    first = resolve(lists.record_change(ALICE))
    second = resolve(lists.record_change(BOB))
    assert resolve(lists.changed_users(start, first)) == {ALICE}
    assert resolve(lists.changed_users(first, second)) == {BOB}
    assert resolve(lists.changed_users(start, second)) == {ALICE, BOB}


def test_only_the_latest_change_of_a_user_is_kept(lists: DeviceListStore) -> None:
    """A range that ended before the user's latest change no longer names them; the range that holds
    the latest change does, so a client asking from the end of the earlier range still hears of it."""
    start = resolve(lists.current_position())
    first = resolve(lists.record_change(ALICE))
    latest = resolve(lists.record_change(ALICE))
    assert resolve(lists.changed_users(start, first)) == set()
    assert resolve(lists.changed_users(first, latest)) == {ALICE}


def test_query_returns_devices_with_keys_and_their_display_names(
    db: Database, keys: E2eKeyStore, accounts: AccountStore
) -> None:
    resolve(accounts.rename_device(ALICE, "D1", "Phone"))
    resolve(keys.upload(ALICE, "D1", device_keys(ALICE, "D1"), [], []))
    resolve(keys.upload(ALICE, "D2", device_keys(ALICE, "D2"), [], []))
    found = resolve(keys.query({ALICE: [], BOB: [], "@ghost:t": []}, BOB)).device_keys
    assert set(found) == {ALICE, BOB}  # an unknown user is left out; a user without keys has none
    assert found[BOB] == {}
    assert found[ALICE]["D1"] == {**device_keys(ALICE, "D1"), "unsigned": {"device_display_name": "Phone"}}
    assert found[ALICE]["D2"]["unsigned"] == {}
    assert set(resolve(keys.query({ALICE: ["D2", "NOPE"]}, BOB)).device_keys[ALICE]) == {"D2"}


def test_signatures_of_others_are_seen_by_the_signer_alone(keys: E2eKeyStore, lists: DeviceListStore) -> None:
    master = {"user_id": BOB, "usage": ["master"], "keys": {"ed25519:BOBM": "BOBM"}}
    resolve(keys.set_cross_signing_keys(BOB, {"master": ("BOBM", master)}))
    before = resolve(lists.current_position())
    resolve(keys.add_signatures(ALICE, [Signature(BOB, "BOBM", ALICE, "ed25519:ALICEU", "sig-by-alice")]))
    assert resolve(lists.changed_users(before, resolve(lists.current_position()))) == {ALICE, BOB}
    seen_by_alice = resolve(keys.query({BOB: []}, ALICE)).master_keys[BOB]
    assert seen_by_alice["signatures"] == {ALICE: {"ed25519:ALICEU": "sig-by-alice"}}
    assert "signatures" not in resolve(keys.query({BOB: []}, BOB)).master_keys[BOB]
    # A new master key drops the signatures over the old one.
    resolve(keys.set_cross_signing_keys(BOB, {"master": ("BOBM2", {**master, "keys": {"ed25519:BOBM2": "BOBM2"}})}))
    assert "signatures" not in resolve(keys.query({BOB: []}, ALICE)).master_keys[BOB]


def test_user_signing_keys_are_returned_to_their_owner_only(keys: E2eKeyStore) -> None:
    usk = {"user_id": ALICE, "usage": ["user_signing"], "keys": {"ed25519:U": "U"}}
    resolve(keys.set_cross_signing_keys(ALICE, {"user_signing": ("U", usk)}))
    assert resolve(keys.query({ALICE: []}, ALICE)).user_signing_keys == {ALICE: usk}
    assert resolve(keys.query({ALICE: []}, BOB)).user_signing_keys == {}


def test_deleted_devices_lose_their_keys_and_inbox(
    keys: E2eKeyStore, accounts: AccountStore, inbox: ToDeviceStore, lists: DeviceListStore
) -> None:
    resolve(keys.upload(ALICE, "D2", device_keys(ALICE, "D2"), otks("o1"), []))
    resolve(inbox.add_messages(BOB, "m.test", {ALICE: {"D2": {"n": 1}}}, TxnKey(BOB, "D1", "s", "t1")))
    assert resolve(keys.forget_deleted_devices(ALICE)) == []  # nothing deleted yet
    resolve(accounts.delete_devices(ALICE, ["D2"]))
    before = resolve(lists.current_position())
    assert resolve(keys.forget_deleted_devices(ALICE)) == ["D2"]
    assert resolve(lists.changed_users(before, resolve(lists.current_position()))) == {ALICE}
    assert resolve(keys.query({ALICE: []}, BOB)).device_keys == {ALICE: {}}
    assert resolve(keys.one_time_key_counts(ALICE, "D2")) == {OTK: 0}
    assert resolve(inbox.pending_count(ALICE, "D2")) == 0


# -- to-device messages ---------------------------------------------------------------------------------


def key(txn_id: str, device: str = "D1") -> TxnKey:
    return TxnKey(BOB, device, "scope", txn_id)


def test_star_reaches_every_device_and_unknown_devices_get_nothing(inbox: ToDeviceStore) -> None:
    start = resolve(inbox.current_position())
    recipients = resolve(inbox.add_messages(BOB, "m.test", {ALICE: {"*": {"n": 1}}, BOB: {"NOPE": {}}}, key("t1")))
    assert recipients == {ALICE}
    now = resolve(inbox.current_position())
    assert now == start + 2
    for device in ("D1", "D2"):
        messages, position = resolve(inbox.messages_for(ALICE, device, start, now, 100))
        assert messages == [{"type": "m.test", "sender": BOB, "content": {"n": 1}}]
        assert position == now
    assert resolve(inbox.pending_count(BOB, "NOPE")) == 0


def test_a_named_device_gets_one_message_even_beside_a_star(inbox: ToDeviceStore) -> None:
    start = resolve(inbox.current_position())
    resolve(inbox.add_messages(BOB, "m.test", {ALICE: {"*": {"n": "all"}, "D2": {"n": "two"}}}, key("t1")))
    now = resolve(inbox.current_position())
    assert resolve(inbox.messages_for(ALICE, "D2", start, now, 100))[0] == [
        {"type": "m.test", "sender": BOB, "content": {"n": "two"}}
    ]


def test_a_repeated_transaction_queues_nothing(inbox: ToDeviceStore) -> None:
    assert resolve(inbox.add_messages(BOB, "m.test", {ALICE: {"D1": {}}}, key("t1"))) == {ALICE}
    assert resolve(inbox.add_messages(BOB, "m.test", {ALICE: {"D1": {}}}, key("t1"))) is None
    assert resolve(inbox.add_messages(BOB, "m.test", {ALICE: {"D1": {}}}, key("t1", device="D2"))) == {ALICE}
    assert resolve(inbox.pending_count(ALICE, "D1")) == 2


def test_messages_come_in_order_in_pages_and_go_once_acknowledged(inbox: ToDeviceStore) -> None:
    start = resolve(inbox.current_position())
    for n in range(5):
        resolve(inbox.add_messages(BOB, "m.test", {ALICE: {"D1": {"n": n}}}, key(f"t{n}")))
    now = resolve(inbox.current_position())
    page, position = resolve(inbox.messages_for(ALICE, "D1", start, now, 3))
    assert [m["content"]["n"] for m in page] == [0, 1, 2]
    assert start < position < now
    resolve(inbox.delete_up_to(ALICE, "D1", position))
    assert resolve(inbox.pending_count(ALICE, "D1")) == 2
    rest, end = resolve(inbox.messages_for(ALICE, "D1", position, now, 3))
    assert [m["content"]["n"] for m in rest] == [3, 4] and end == now
    # Only messages up to the bound are acknowledged: a message sent after it waits.
    assert resolve(inbox.messages_for(ALICE, "D1", start, position, 100))[0] == []
    resolve(inbox.delete_up_to(ALICE, "D1", now))
    assert resolve(inbox.pending_count(ALICE, "D1")) == 0


def test_acknowledging_a_long_inbox_deletes_all_of_it_in_batches(
    inbox: ToDeviceStore, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(to_device_storage, "DELETE_BATCH", 2)
    for n in range(5):
        resolve(inbox.add_messages(BOB, "m.test", {ALICE: {"D1": {"n": n}}}, key(f"t{n}")))
    before = db.stats.count["to_device.delete_up_to"]
    resolve(inbox.delete_up_to(ALICE, "D1", resolve(inbox.current_position())))
    assert resolve(inbox.pending_count(ALICE, "D1")) == 0
    assert db.stats.count["to_device.delete_up_to"] - before == 3  # 2 + 2 + 1
