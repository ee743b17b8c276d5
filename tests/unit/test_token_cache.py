"""The access-token cache and the shared lookups behind it, on SQLite with transactions held until released."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer

from homeserver.config.options import DatabaseConfig
from homeserver.storage.accounts import TOKEN_ENTRY_BYTES, AccountStore, TokenCache, TokenOwner, hash_token
from homeserver.storage.database import Database
from homeserver.storage.engines import create_engine
from homeserver.storage.migrations import migrate
from tests.inline import resolve


class HeldDatabase:
    """Runs each transaction inline, but only once the test releases it: lookups can be caught in flight."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.held: list[defer.Deferred] = []
        self.names: list[str] = []

    async def run(self, name: str, fn: Any, *args: Any, readonly: bool = False) -> Any:
        self.names.append(name)
        waiter: defer.Deferred = defer.Deferred()
        self.held.append(waiter)
        await waiter
        return self._db.run_blocking(name, fn, *args, readonly=readonly)

    def release(self) -> None:
        waiter = self.held.pop(0)
        waiter.callback(None)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(create_engine(DatabaseConfig(name="sqlite3", args={"database": str(tmp_path / "h.db")})), 2, 2)
    resolve(migrate(database))
    yield database
    database.close()


@pytest.fixture
def store(db: Database) -> AccountStore:
    store = AccountStore(db)
    resolve(store.create_user("@a:t", "h"))
    for device in ("D1", "D2", "D3"):
        resolve(store.login("@a:t", device, None, f"token-{device}", None))
    return store


def test_a_looked_up_token_is_served_from_the_cache(store: AccountStore) -> None:
    reads = store.token_reads
    assert resolve(store.get_token_owner("token-D1")) == TokenOwner("@a:t", "D1", False)
    assert resolve(store.get_token_owner("token-D1")) == TokenOwner("@a:t", "D1", False)
    assert store.token_reads == reads + 1


@pytest.mark.parametrize(
    "revoke",
    [
        lambda s: s.delete_devices("@a:t", ["D1"]),
        lambda s: s.delete_all_devices("@a:t"),
        lambda s: s.set_password_hash("@a:t", "h2", keep_device="D2"),
        lambda s: s.deactivate("@a:t"),
        lambda s: s.login("@a:t", "D1", None, "token-D1-again", None),
    ],
    ids=["logout", "logout-all", "password", "deactivate", "relogin"],
)
def test_every_revocation_drops_the_cached_token(store: AccountStore, revoke: Any) -> None:
    resolve(store.get_token_owner("token-D1"))
    resolve(revoke(store))
    assert resolve(store.get_token_owner("token-D1")) is None


def test_admins_tokens_are_never_cached(store: AccountStore, db: Database) -> None:
    db.run_blocking("t", lambda txn: txn.execute("UPDATE users SET admin = 1 WHERE user_id = '@a:t'"))
    assert resolve(store.get_token_owner("token-D1")).admin
    # Taking the flag away elsewhere (the admin API, the command line) shows on the next request.
    db.run_blocking("t", lambda txn: txn.execute("UPDATE users SET admin = 0 WHERE user_id = '@a:t'"))
    assert not resolve(store.get_token_owner("token-D1")).admin


def test_concurrent_lookups_share_a_transaction(db: Database) -> None:
    resolve(AccountStore(db).create_user("@a:t", "h"))
    for device in ("D1", "D2", "D3"):
        resolve(AccountStore(db).login("@a:t", device, None, f"token-{device}", None))
    held = HeldDatabase(db)
    store = AccountStore(held)  # type: ignore[arg-type]
    lookups = [defer.ensureDeferred(store.get_token_owner(f"token-{d}")) for d in ("D1", "D2", "D3", "D2")]
    assert len(held.held) == 1  # the first started at once; the others wait for the next read
    held.release()
    assert len(held.held) == 1  # ... which starts when the first ends, with all three tokens
    held.release()
    owners = [r.device_id for r in (lookup.result for lookup in lookups)]
    assert owners == ["D1", "D2", "D3", "D2"] and store.token_reads == 2


def test_a_lookup_running_while_a_token_is_revoked_is_not_cached(db: Database) -> None:
    resolve(AccountStore(db).create_user("@a:t", "h"))
    resolve(AccountStore(db).login("@a:t", "D1", None, "token-D1", None))
    held = HeldDatabase(db)
    store = AccountStore(held)  # type: ignore[arg-type]
    lookup = defer.ensureDeferred(store.get_token_owner("token-D1"))
    store.forget_tokens("@a:t")  # a logout finishing while the read is under way
    held.release()
    assert lookup.result == TokenOwner("@a:t", "D1", False)
    assert len(store.tokens) == 0


def test_cache_entries_expire_and_the_cache_stays_bounded() -> None:
    now = [0.0]
    cache = TokenCache(max_bytes=2 * TOKEN_ENTRY_BYTES, ttl_s=60, clock=lambda: now[0])
    owners = {h: TokenOwner(f"@{h}:t", "D", False) for h in ("x", "y", "z")}
    for token_hash, owner in owners.items():
        cache.put(token_hash, owner, cache.generation)
    assert len(cache) == 2 and cache.get("x") is None  # the least recently used went
    now[0] = 61
    assert cache.get("y") is None and cache.get("z") is None
    cache.put(hash_token("t"), owners["x"], cache.generation - 1)  # read before an invalidation
    assert len(cache) == 0
