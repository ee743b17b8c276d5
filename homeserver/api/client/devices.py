"""/devices and /delete_devices."""

from homeserver.core.errors import MatrixError
from homeserver.handlers.devices import DeviceHandler
from homeserver.http.request import ApiRequest, optional_field, require_field
from homeserver.http.routing import Endpoint
from homeserver.storage.accounts import DeviceRecord


def _device_json(device: DeviceRecord) -> dict:
    # The spec leaves out unset fields, but matrix-nio's schema requires all four keys (null allowed)
    # and drops devices without them, so unset fields are sent as null, as Synapse does.
    return {
        "device_id": device.device_id,
        "display_name": device.display_name,
        "last_seen_ip": device.last_seen_ip,
        "last_seen_ts": device.last_seen_ts,
    }


class _DeviceEndpoint(Endpoint):
    def __init__(self, devices: DeviceHandler) -> None:
        self._devices = devices


class ListDevices(_DeviceEndpoint):
    method, path = "GET", "/_matrix/client/v3/devices"

    async def handle(self, request: ApiRequest) -> tuple[int, dict]:
        devices = await self._devices.list_devices(await request.require_user())
        return 200, {"devices": [_device_json(d) for d in devices]}


class GetDevice(_DeviceEndpoint):
    method, path = "GET", "/_matrix/client/v3/devices/{device_id}"

    async def handle(self, request: ApiRequest, device_id: str) -> tuple[int, dict]:
        return 200, _device_json(await self._devices.get(await request.require_user(), device_id))


class RenameDevice(_DeviceEndpoint):
    method, path = "PUT", "/_matrix/client/v3/devices/{device_id}"

    async def handle(self, request: ApiRequest, device_id: str) -> tuple[int, dict]:
        requester = await request.require_user()
        display_name = optional_field(request.json_object(), "display_name")
        if display_name is not None:
            await self._devices.rename(requester, device_id, display_name)
        else:
            await self._devices.get(requester, device_id)  # still 404 for an unknown device
        return 200, {}


class DeleteDevice(_DeviceEndpoint):
    method, path = "DELETE", "/_matrix/client/v3/devices/{device_id}"

    async def handle(self, request: ApiRequest, device_id: str) -> tuple[int, dict]:
        requester = await request.require_user()
        body = request.json_object(empty_ok=True)
        await self._devices.get(requester, device_id)
        await self._devices.delete(requester, [device_id], body.get("auth"))
        return 200, {}


class DeleteDevices(_DeviceEndpoint):
    method, path = "POST", "/_matrix/client/v3/delete_devices"

    async def handle(self, request: ApiRequest) -> tuple[int, dict]:
        requester = await request.require_user()
        body = request.json_object()
        device_ids = require_field(body, "devices", list)
        if not all(isinstance(d, str) and "\x00" not in d for d in device_ids):
            raise MatrixError(400, "M_INVALID_PARAM", "devices must be a list of device ids")
        await self._devices.delete(requester, device_ids, body.get("auth"))
        return 200, {}


def endpoints(devices: DeviceHandler) -> list[Endpoint]:
    return [
        ListDevices(devices),
        GetDevice(devices),
        RenameDevice(devices),
        DeleteDevice(devices),
        DeleteDevices(devices),
    ]
