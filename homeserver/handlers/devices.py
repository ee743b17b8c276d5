"""A user's devices: list, look at, rename, delete (deleting is guarded by the password)."""

from typing import Any

from homeserver.core.errors import MatrixError
from homeserver.core.requester import Requester
from homeserver.handlers.ui_auth import UiAuth
from homeserver.storage.accounts import AccountStore, DeviceRecord


class DeviceHandler:
    def __init__(self, accounts: AccountStore, ui_auth: UiAuth) -> None:
        self._accounts = accounts
        self._ui_auth = ui_auth
        self.e2e: Any = None  # set by the app: E2eKeysHandler, told of renamed and deleted devices

    async def list_devices(self, requester: Requester) -> list[DeviceRecord]:
        return await self._accounts.list_devices(requester.user_id)

    async def get(self, requester: Requester, device_id: str) -> DeviceRecord:
        device = await self._accounts.get_device(requester.user_id, device_id)
        if device is None:
            raise MatrixError(404, "M_NOT_FOUND", "Device not found")
        return device

    async def rename(self, requester: Requester, device_id: str, display_name: str) -> None:
        if not await self._accounts.rename_device(requester.user_id, device_id, display_name):
            raise MatrixError(404, "M_NOT_FOUND", "Device not found")
        if self.e2e is not None:
            await self.e2e.device_renamed(requester.user_id, device_id)

    async def delete(self, requester: Requester, device_ids: list[str], auth: Any) -> None:
        await self._ui_auth.require_password(requester.user_id, auth)
        await self._accounts.delete_devices(requester.user_id, device_ids)
        if self.e2e is not None:
            await self.e2e.devices_removed(requester.user_id)
