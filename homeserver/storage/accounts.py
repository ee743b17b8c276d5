"""Users, devices and access tokens.

Every request names its access token, so token lookups are cached: token hash -> owner, for tokens
looked up lately, in a bounded LRU. Every change that revokes a token goes through this store (logout,
logout/all, device deletion, a password change that logs out devices, deactivation, a re-login on a
device) and drops the user's cached tokens before it returns, so a revoked token is refused at once.
Changes made by another process (the `homeserver admin` command line on the same database) cannot be
seen here, so an entry also expires after TOKEN_CACHE_TTL_S; and admins' tokens are never cached, so
taking the admin flag away anywhere takes effect on the next request. Concurrent lookups of tokens not
in the cache share one transaction (a herd of clients arriving together costs a few reads, not one each).
"""

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet import defer
from twisted.python.failure import Failure

from homeserver.core.work_class import LIGHT, current_work_class
from homeserver.storage.database import Database, Txn

TOKEN_CACHE_BYTES = 16 * 1024 * 1024
TOKEN_ENTRY_BYTES = 512  # a cached token: hash, owner, expiry and its place in the per-user index
TOKEN_CACHE_TTL_S = 60.0
_LOOKUP_CHUNK = 500


class UserExists(Exception):
    pass


@dataclass(frozen=True)
class UserRecord:
    user_id: str
    password_hash: str | None
    admin: bool
    deactivated: bool
    created_ts: int


@dataclass(frozen=True)
class TokenOwner:
    user_id: str
    device_id: str
    admin: bool


@dataclass(frozen=True)
class DeviceRecord:
    device_id: str
    display_name: str | None
    last_seen_ts: int | None
    last_seen_ip: str | None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now_ms() -> int:
    return int(time.time() * 1000)


class TokenCache:
    """token hash -> owner, least recently used first out, bounded by TOKEN_CACHE_BYTES (about 32,000
    tokens), each entry good for `ttl_s`. `generation` moves on every invalidation: a lookup that started
    before one must not cache what it read."""

    def __init__(
        self, max_bytes: int = TOKEN_CACHE_BYTES, ttl_s: float = TOKEN_CACHE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.max_entries = max(1, max_bytes // TOKEN_ENTRY_BYTES)
        self._ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[str, tuple[TokenOwner, float]] = OrderedDict()
        self._by_user: dict[str, set[str]] = {}
        self.generation = 0

    def get(self, token_hash: str) -> TokenOwner | None:
        found = self._entries.get(token_hash)
        if found is None:
            return None
        if found[1] <= self._clock():
            self._drop(token_hash)
            return None
        self._entries.move_to_end(token_hash)
        return found[0]

    def put(self, token_hash: str, owner: TokenOwner, generation: int) -> None:
        if generation != self.generation or owner.admin:
            return
        self._drop(token_hash)
        self._entries[token_hash] = (owner, self._clock() + self._ttl_s)
        self._by_user.setdefault(owner.user_id, set()).add(token_hash)
        while len(self._entries) > self.max_entries:
            self._drop(next(iter(self._entries)))

    def forget_user(self, user_id: str) -> None:
        self.generation += 1
        for token_hash in self._by_user.pop(user_id, set()):
            self._entries.pop(token_hash, None)

    def _drop(self, token_hash: str) -> None:
        found = self._entries.pop(token_hash, None)
        if found is not None:
            hashes = self._by_user.get(found[0].user_id)
            if hashes is not None:
                hashes.discard(token_hash)
                if not hashes:
                    del self._by_user[found[0].user_id]

    def __len__(self) -> int:
        return len(self._entries)


class AccountStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        self.tokens = TokenCache()
        self._lookups: dict[str, list[defer.Deferred]] = {}  # token hashes waiting for the next lookup
        self._looking_up = False
        self.token_reads = 0  # lookup transactions run: tests and metrics

    async def create_user(self, user_id: str, password_hash: str | None, admin: bool = False) -> None:
        """Raises UserExists if the id is taken."""
        await self._db.run("accounts.create_user", self._create_user_txn, user_id, password_hash, admin)

    def _create_user_txn(self, txn: Txn, user_id: str, password_hash: str | None, admin: bool) -> None:
        # ON CONFLICT rather than a SELECT first: two registrations of one name at once must give one
        # user and one M_USER_IN_USE, not a unique-key violation.
        txn.execute(
            "INSERT INTO users (user_id, password_hash, admin, deactivated, created_ts) VALUES (?, ?, ?, 0, ?)"
            " ON CONFLICT (user_id) DO NOTHING",
            (user_id, password_hash, int(admin), _now_ms()),
        )
        if txn.rowcount == 0:
            raise UserExists(user_id)
        # A new account's display name is its localpart until the user picks one, as clients expect.
        txn.execute(
            "INSERT INTO profiles (user_id, displayname) VALUES (?, ?) ON CONFLICT (user_id) DO NOTHING",
            (user_id, user_id[1:].split(":", 1)[0]),
        )

    async def get_user(self, user_id: str) -> UserRecord | None:
        return await self._db.run("accounts.get_user", self._get_user_txn, user_id, readonly=True)

    def _get_user_txn(self, txn: Txn, user_id: str) -> UserRecord | None:
        row = txn.execute(
            "SELECT user_id, password_hash, admin, deactivated, created_ts FROM users WHERE user_id = ?",
            (user_id,),
        ).fetchone()
        return UserRecord(row[0], row[1], bool(row[2]), bool(row[3]), row[4]) if row else None

    async def find_user_case_insensitive(self, user_id: str) -> list[str]:
        """Ids that equal `user_id` ignoring case: logins are case-insensitive for older ids."""
        rows = await self._db.run(
            "accounts.find_user_ci",
            lambda txn: txn.execute("SELECT user_id FROM users WHERE lower(user_id) = lower(?)", (user_id,)).fetchall(),
            readonly=True,
        )
        return [r[0] for r in rows]

    async def list_users(self) -> list[UserRecord]:
        return await self._db.run("accounts.list_users", self._list_users_txn, readonly=True)

    def _list_users_txn(self, txn: Txn) -> list[UserRecord]:
        rows = txn.execute(
            "SELECT user_id, password_hash, admin, deactivated, created_ts FROM users ORDER BY user_id"
        ).fetchall()
        return [UserRecord(r[0], r[1], bool(r[2]), bool(r[3]), r[4]) for r in rows]

    async def set_password_hash(self, user_id: str, password_hash: str, keep_device: str | None) -> None:
        """Change the password; log out every device but `keep_device` (None keeps them all)."""
        await self._db.run("accounts.set_password", self._set_password_txn, user_id, password_hash, keep_device)
        if keep_device is not None:
            self.forget_tokens(user_id)

    def _set_password_txn(self, txn: Txn, user_id: str, password_hash: str, keep_device: str | None) -> None:
        txn.execute("UPDATE users SET password_hash = ? WHERE user_id = ?", (password_hash, user_id))
        if keep_device is not None:
            others = [
                r[0]
                for r in txn.execute(
                    "SELECT device_id FROM devices WHERE user_id = ? AND device_id <> ?", (user_id, keep_device)
                ).fetchall()
            ]
            self._delete_devices_txn(txn, user_id, others)

    async def deactivate(self, user_id: str) -> None:
        """Mark the user deactivated, forget the password and remove every device and token at once."""
        await self._db.run("accounts.deactivate", self._deactivate_txn, user_id)
        self.forget_tokens(user_id)

    def _deactivate_txn(self, txn: Txn, user_id: str) -> None:
        txn.execute("UPDATE users SET deactivated = 1, password_hash = NULL WHERE user_id = ?", (user_id,))
        txn.execute("DELETE FROM access_tokens WHERE user_id = ?", (user_id,))
        txn.execute("DELETE FROM devices WHERE user_id = ?", (user_id,))

    async def login(self, user_id: str, device_id: str, display_name: str | None, token: str, ip: str | None) -> None:
        """Create the device if new, and an access token for it. A re-used device id keeps its name
        and loses its old tokens, as the spec asks for a device id given at login."""
        await self._db.run("accounts.login", self._login_txn, user_id, device_id, display_name, token, ip)
        self.forget_tokens(user_id)  # the device's earlier token, if it had one, is gone

    def _login_txn(
        self, txn: Txn, user_id: str, device_id: str, display_name: str | None, token: str, ip: str | None
    ) -> None:
        now = _now_ms()
        # One upsert, so that two logins with the same device id at once (or a login racing the
        # device's deletion) cannot break the key or the token's reference to its device.
        txn.execute(
            "INSERT INTO devices (user_id, device_id, display_name, last_seen_ts, last_seen_ip) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (user_id, device_id) DO UPDATE"
            " SET last_seen_ts = excluded.last_seen_ts, last_seen_ip = excluded.last_seen_ip",
            (user_id, device_id, display_name, now, ip),
        )
        txn.execute("DELETE FROM access_tokens WHERE user_id = ? AND device_id = ?", (user_id, device_id))
        txn.execute(
            "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts) VALUES (?, ?, ?, ?)",
            (hash_token(token), user_id, device_id, now),
        )

    async def get_token_owner(self, token: str) -> TokenOwner | None:
        """The token's owner, or None for an unknown token or a deactivated user: from the cache, or
        read together with the other lookups waiting at that moment, in a transaction that starts after
        this call (so it sees every revocation that finished before it)."""
        token_hash = hash_token(token)
        cached = self.tokens.get(token_hash)
        if cached is not None:
            return cached
        waiter: defer.Deferred = defer.Deferred()
        self._lookups.setdefault(token_hash, []).append(waiter)
        if not self._looking_up:
            self._look_up_waiting()
        return await waiter

    def forget_tokens(self, user_id: str) -> None:
        """Drop the user's cached tokens: call after any change to their tokens, devices or account."""
        self.tokens.forget_user(user_id)

    def _look_up_waiting(self) -> None:
        batch, self._lookups = self._lookups, {}
        self._looking_up = True
        self.token_reads += 1
        # A short read that every request needs: light work, whatever request happened to start the batch.
        mark = current_work_class.set(LIGHT)
        try:
            lookup = defer.ensureDeferred(
                self._db.run("accounts.get_token_owners", self._token_owners_txn, list(batch), readonly=True)
            )
        finally:
            current_work_class.reset(mark)
        lookup.addBoth(self._looked_up, batch, self.tokens.generation)

    def _looked_up(self, result: dict[str, TokenOwner] | Failure, batch: dict, generation: int) -> None:
        self._looking_up = False
        if self._lookups:
            self._look_up_waiting()
        for token_hash, waiters in batch.items():
            owner = None
            if not isinstance(result, Failure):
                owner = result.get(token_hash)
                if owner is not None:
                    self.tokens.put(token_hash, owner, generation)
            for waiter in waiters:
                if not waiter.called:  # a request that gave up waiting has cancelled its own
                    waiter.errback(result) if isinstance(result, Failure) else waiter.callback(owner)

    def _token_owners_txn(self, txn: Txn, token_hashes: list[str]) -> dict[str, TokenOwner]:
        owners = {}
        for start in range(0, len(token_hashes), _LOOKUP_CHUNK):
            chunk = token_hashes[start : start + _LOOKUP_CHUNK]
            rows = txn.execute(
                "SELECT t.token_hash, t.user_id, t.device_id, u.admin FROM access_tokens t JOIN users u USING (user_id)"
                f" WHERE t.token_hash IN ({','.join('?' * len(chunk))}) AND u.deactivated = 0",
                chunk,
            ).fetchall()
            owners.update({row[0]: TokenOwner(row[1], row[2], bool(row[3])) for row in rows})
        return owners

    async def delete_devices(self, user_id: str, device_ids: list[str]) -> None:
        """Remove devices and their tokens; unknown ids are ignored."""
        await self._db.run("accounts.delete_devices", self._delete_devices_txn, user_id, device_ids)
        self.forget_tokens(user_id)

    def _delete_devices_txn(self, txn: Txn, user_id: str, device_ids: list[str]) -> None:
        for device_id in device_ids:
            txn.execute("DELETE FROM access_tokens WHERE user_id = ? AND device_id = ?", (user_id, device_id))
            txn.execute("DELETE FROM devices WHERE user_id = ? AND device_id = ?", (user_id, device_id))

    async def delete_all_devices(self, user_id: str) -> None:
        await self._db.run("accounts.delete_all_devices", self._delete_all_devices_txn, user_id)
        self.forget_tokens(user_id)

    def _delete_all_devices_txn(self, txn: Txn, user_id: str) -> None:
        txn.execute("DELETE FROM access_tokens WHERE user_id = ?", (user_id,))
        txn.execute("DELETE FROM devices WHERE user_id = ?", (user_id,))

    async def list_devices(self, user_id: str) -> list[DeviceRecord]:
        return await self._db.run("accounts.list_devices", self._list_devices_txn, user_id, None, readonly=True)

    async def get_device(self, user_id: str, device_id: str) -> DeviceRecord | None:
        found = await self._db.run("accounts.get_device", self._list_devices_txn, user_id, device_id, readonly=True)
        return found[0] if found else None

    def _list_devices_txn(self, txn: Txn, user_id: str, device_id: str | None) -> list[DeviceRecord]:
        sql = "SELECT device_id, display_name, last_seen_ts, last_seen_ip FROM devices WHERE user_id = ?"
        args: tuple = (user_id,)
        if device_id is not None:
            sql += " AND device_id = ?"
            args += (device_id,)
        return [DeviceRecord(*row) for row in txn.execute(sql + " ORDER BY device_id", args).fetchall()]

    async def rename_device(self, user_id: str, device_id: str, display_name: str) -> bool:
        """False if there is no such device."""
        return await self._db.run("accounts.rename_device", self._rename_device_txn, user_id, device_id, display_name)

    def _rename_device_txn(self, txn: Txn, user_id: str, device_id: str, display_name: str) -> bool:
        txn.execute(
            "UPDATE devices SET display_name = ? WHERE user_id = ? AND device_id = ?",
            (display_name, user_id, device_id),
        )
        return txn.rowcount > 0
