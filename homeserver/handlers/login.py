"""Logging in with a password, and logging out."""

from dataclasses import dataclass
from typing import Any

from homeserver.core.errors import MatrixError
from homeserver.core.requester import Requester
from homeserver.handlers.auth import new_access_token, new_device_id
from homeserver.handlers.passwords import PasswordHasher
from homeserver.handlers.ratelimit import RateLimiter
from homeserver.storage.accounts import AccountStore


@dataclass(frozen=True)
class LoginResult:
    user_id: str
    device_id: str
    access_token: str


@dataclass(frozen=True)
class LoginLimits:
    address: RateLimiter
    account: RateLimiter
    failed_attempts: RateLimiter


class LoginHandler:
    def __init__(self, accounts: AccountStore, passwords: PasswordHasher, limits: LoginLimits) -> None:
        self._accounts = accounts
        self._passwords = passwords
        self._limits = limits
        self.e2e: Any = None  # set by the app: E2eKeysHandler, told of created and deleted devices

    async def password_login(
        self, user_id: str, password: str, device_id: str | None, display_name: str | None, client_ip: str
    ) -> LoginResult:
        # Accounts are limited by their id in lower case: logins match ids case-insensitively, so a
        # change of case must not give an attacker a fresh budget.
        account_key = user_id.lower()
        self._limits.address.hit(client_ip)
        self._limits.account.check(account_key)
        self._limits.failed_attempts.check(account_key)
        user = await self._accounts.get_user(user_id)
        if user is None:
            # Older accounts may have upper-case letters: accept the case-insensitive match if unique.
            matches = await self._accounts.find_user_case_insensitive(user_id)
            user = await self._accounts.get_user(matches[0]) if len(matches) == 1 else None
        if user is None or not await self._passwords.verify(password, user.password_hash):
            if user is not None and user.deactivated:
                raise MatrixError(403, "M_USER_DEACTIVATED", "This account has been deactivated")
            self._limits.failed_attempts.record(account_key)
            raise MatrixError(403, "M_FORBIDDEN", "Invalid username or password")
        if user.deactivated:
            raise MatrixError(403, "M_USER_DEACTIVATED", "This account has been deactivated")
        self._limits.account.record(account_key)
        return await self.create_login(user.user_id, device_id, display_name, client_ip)

    async def create_login(
        self, user_id: str, device_id: str | None, display_name: str | None, client_ip: str | None
    ) -> LoginResult:
        device_id = device_id or new_device_id()
        token = new_access_token()
        await self._accounts.login(user_id, device_id, display_name, token, client_ip)
        if self.e2e is not None:
            await self.e2e.device_added(user_id, device_id)
        return LoginResult(user_id, device_id, token)

    async def logout(self, requester: Requester) -> None:
        """End this session: the device and its token go."""
        await self._accounts.delete_devices(requester.user_id, [requester.device_id])
        if self.e2e is not None:
            await self.e2e.devices_removed(requester.user_id)

    async def logout_all(self, requester: Requester) -> None:
        await self._accounts.delete_all_devices(requester.user_id)
        if self.e2e is not None:
            await self.e2e.devices_removed(requester.user_id)
