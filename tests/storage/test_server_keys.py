"""Other servers' keys as stored: one row per key, the newest document of each key kept."""

from homeserver.storage.database import Database
from homeserver.storage.server_keys import ServerKeyStore, StoredKey
from tests.inline import resolve


def _key(key_id: str, valid_until: int, server: str = "remote.example") -> StoredKey:
    return StoredKey(server, key_id, f"key-{key_id}-{valid_until}", valid_until, {"valid_until_ts": valid_until})


def test_keys_are_kept_per_server_with_their_document(db: Database) -> None:
    store = ServerKeyStore(db)
    resolve(store.store_keys([_key("ed25519:a", 100), _key("ed25519:old", 50)], fetched_ts=1))
    resolve(store.store_keys([_key("ed25519:x", 100, server="other.example")], fetched_ts=1))
    keys = sorted(resolve(store.get_keys("remote.example")), key=lambda k: k.key_id)
    assert [(k.key_id, k.valid_until_ts, k.key_json) for k in keys] == [
        ("ed25519:a", 100, {"valid_until_ts": 100}),
        ("ed25519:old", 50, {"valid_until_ts": 50}),
    ]
    assert resolve(store.get_keys("nobody.example")) == []


def test_a_newer_document_replaces_an_older_one_but_not_the_reverse(db: Database) -> None:
    """Two fetches of one server may finish out of order: the later validity wins either way."""
    store = ServerKeyStore(db)
    resolve(store.store_keys([_key("ed25519:a", 100)], fetched_ts=1))
    resolve(store.store_keys([_key("ed25519:a", 200)], fetched_ts=2))
    resolve(store.store_keys([_key("ed25519:a", 150)], fetched_ts=3))
    (key,) = resolve(store.get_keys("remote.example"))
    assert (key.valid_until_ts, key.verify_key, key.key_json) == (200, "key-ed25519:a-200", {"valid_until_ts": 200})
