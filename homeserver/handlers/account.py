"""Changing the password and deactivating the account, both behind the password."""

from typing import Any

from homeserver.core.requester import Requester
from homeserver.handlers.passwords import PasswordHasher
from homeserver.handlers.registration import check_password_length
from homeserver.handlers.ui_auth import UiAuth
from homeserver.storage.accounts import AccountStore


class AccountHandler:
    def __init__(self, accounts: AccountStore, passwords: PasswordHasher, ui_auth: UiAuth) -> None:
        self._accounts = accounts
        self._passwords = passwords
        self._ui_auth = ui_auth
        self.e2e: Any = None  # set by the app: E2eKeysHandler, told of deleted devices

    async def change_password(self, requester: Requester, new_password: str, logout_devices: bool, auth: Any) -> None:
        check_password_length(new_password)
        await self._ui_auth.require_password(requester.user_id, auth)
        password_hash = await self._passwords.hash(new_password)
        keep = requester.device_id if logout_devices else None
        await self._accounts.set_password_hash(requester.user_id, password_hash, keep)
        if keep is not None and self.e2e is not None:
            await self.e2e.devices_removed(requester.user_id)

    async def deactivate(self, requester: Requester, auth: Any) -> None:
        await self._ui_auth.require_password(requester.user_id, auth)
        await self.deactivate_user(requester.user_id)

    async def deactivate_user(self, user_id: str) -> None:
        """Deactivation itself, once the password is checked (or an admin asked for it)."""
        await self._accounts.deactivate(user_id)
        if self.e2e is not None:
            await self.e2e.devices_removed(user_id)
