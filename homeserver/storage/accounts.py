"""Users, devices and access tokens."""

import hashlib
import time
from dataclasses import dataclass

from homeserver.storage.database import Database, Txn


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


class AccountStore:
    def __init__(self, db: Database) -> None:
        self._db = db

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

    def _deactivate_txn(self, txn: Txn, user_id: str) -> None:
        txn.execute("UPDATE users SET deactivated = 1, password_hash = NULL WHERE user_id = ?", (user_id,))
        txn.execute("DELETE FROM access_tokens WHERE user_id = ?", (user_id,))
        txn.execute("DELETE FROM devices WHERE user_id = ?", (user_id,))

    async def login(self, user_id: str, device_id: str, display_name: str | None, token: str, ip: str | None) -> None:
        """Create the device if new, and an access token for it. A re-used device id keeps its name
        and loses its old tokens, as the spec asks for a device id given at login."""
        await self._db.run("accounts.login", self._login_txn, user_id, device_id, display_name, token, ip)

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
        return await self._db.run("accounts.get_token_owner", self._token_owner_txn, hash_token(token), readonly=True)

    def _token_owner_txn(self, txn: Txn, token_hash: str) -> TokenOwner | None:
        row = txn.execute(
            "SELECT t.user_id, t.device_id, u.admin FROM access_tokens t JOIN users u USING (user_id)"
            " WHERE t.token_hash = ? AND u.deactivated = 0",
            (token_hash,),
        ).fetchone()
        return TokenOwner(row[0], row[1], bool(row[2])) if row else None

    async def delete_devices(self, user_id: str, device_ids: list[str]) -> None:
        """Remove devices and their tokens; unknown ids are ignored."""
        await self._db.run("accounts.delete_devices", self._delete_devices_txn, user_id, device_ids)

    def _delete_devices_txn(self, txn: Txn, user_id: str, device_ids: list[str]) -> None:
        for device_id in device_ids:
            txn.execute("DELETE FROM access_tokens WHERE user_id = ? AND device_id = ?", (user_id, device_id))
            txn.execute("DELETE FROM devices WHERE user_id = ? AND device_id = ?", (user_id, device_id))

    async def delete_all_devices(self, user_id: str) -> None:
        await self._db.run("accounts.delete_all_devices", self._delete_all_devices_txn, user_id)

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
