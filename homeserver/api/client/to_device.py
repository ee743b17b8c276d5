"""/sendToDevice."""

from homeserver.api.client.keys import bad_json, device_id, user_map
from homeserver.handlers.to_device import ToDeviceHandler
from homeserver.http.request import ApiRequest
from homeserver.http.routing import Endpoint


class SendToDevice(Endpoint):
    method, path = "PUT", "/_matrix/client/v3/sendToDevice/{event_type}/{txn_id}"

    def __init__(self, to_device: ToDeviceHandler) -> None:
        self._to_device = to_device

    async def handle(self, request: ApiRequest, event_type: str, txn_id: str) -> tuple[int, dict]:
        requester = await request.require_user()
        messages = user_map(request.json_object(), "messages")
        for user_id, by_device in messages.items():
            if not isinstance(by_device, dict):
                raise bad_json(f"messages.{user_id} must map device ids to message contents")
            for device, content in by_device.items():
                device_id(device, f"a device id of messages.{user_id}")
                if not isinstance(content, dict):
                    raise bad_json(f"messages.{user_id}.{device[:50]} must be an object")
        await self._to_device.send(requester, event_type, messages, txn_id)
        return 200, {}


def endpoints(to_device: ToDeviceHandler) -> list[Endpoint]:
    return [SendToDevice(to_device)]
