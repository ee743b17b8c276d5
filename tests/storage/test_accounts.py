"""AccountStore on both engines."""

import pytest

from homeserver.storage.accounts import AccountStore, UserExists
from homeserver.storage.database import Database
from tests.inline import resolve


@pytest.fixture
def store(db: Database) -> AccountStore:
    return AccountStore(db)


def test_create_and_get_user(store: AccountStore) -> None:
    resolve(store.create_user("@a:t", "hash", admin=True))
    user = resolve(store.get_user("@a:t"))
    assert (user.user_id, user.password_hash, user.admin, user.deactivated) == ("@a:t", "hash", True, False)
    with pytest.raises(UserExists):
        resolve(store.create_user("@a:t", None))


def test_tokens_are_stored_hashed_and_resolve_to_their_owner(store: AccountStore, db: Database) -> None:
    resolve(store.create_user("@a:t", "h"))
    resolve(store.login("@a:t", "DEV", "phone", "secret-token", "10.0.0.1"))
    owner = resolve(store.get_token_owner("secret-token"))
    assert (owner.user_id, owner.device_id) == ("@a:t", "DEV")
    stored = db.run_blocking("t", lambda txn: txn.execute("SELECT token_hash FROM access_tokens").fetchall())
    assert "secret-token" not in str(stored)


def test_relogin_on_a_device_replaces_its_token(store: AccountStore) -> None:
    resolve(store.create_user("@a:t", "h"))
    resolve(store.login("@a:t", "DEV", "phone", "old", None))
    resolve(store.login("@a:t", "DEV", None, "new", None))
    assert resolve(store.get_token_owner("old")) is None
    assert resolve(store.get_token_owner("new")) is not None
    assert resolve(store.get_device("@a:t", "DEV")).display_name == "phone"


def test_deactivation_removes_every_token_and_device(store: AccountStore) -> None:
    resolve(store.create_user("@a:t", "h"))
    resolve(store.login("@a:t", "D1", None, "t1", None))
    resolve(store.login("@a:t", "D2", None, "t2", None))
    resolve(store.deactivate("@a:t"))
    assert resolve(store.get_token_owner("t1")) is None and resolve(store.get_token_owner("t2")) is None
    assert resolve(store.list_devices("@a:t")) == []
    assert resolve(store.get_user("@a:t")).deactivated


def test_password_change_keeps_only_the_current_device(store: AccountStore) -> None:
    resolve(store.create_user("@a:t", "h"))
    for n in (1, 2, 3):
        resolve(store.login("@a:t", f"D{n}", None, f"t{n}", None))
    resolve(store.set_password_hash("@a:t", "h2", keep_device="D2"))
    assert [d.device_id for d in resolve(store.list_devices("@a:t"))] == ["D2"]
    assert resolve(store.get_user("@a:t")).password_hash == "h2"


def test_rename_unknown_device_reports_it(store: AccountStore) -> None:
    resolve(store.create_user("@a:t", "h"))
    assert resolve(store.rename_device("@a:t", "NOPE", "x")) is False
