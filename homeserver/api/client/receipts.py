"""POST /rooms/{roomId}/receipt/{receiptType}/{eventId} and POST /rooms/{roomId}/read_markers."""

from homeserver.handlers.receipts import MARKER_TYPES, ReceiptHandler
from homeserver.http.request import ApiRequest, optional_field
from homeserver.http.routing import Endpoint


class SendReceipt(Endpoint):
    method, path = "POST", "/_matrix/client/v3/rooms/{room_id}/receipt/{receipt_type}/{event_id}"

    def __init__(self, receipts: ReceiptHandler) -> None:
        self._receipts = receipts

    async def handle(self, request: ApiRequest, room_id: str, receipt_type: str, event_id: str) -> tuple[int, dict]:
        requester = await request.require_user()
        thread_id = optional_field(request.json_object(empty_ok=True), "thread_id")
        await self._receipts.receipt(requester, room_id, receipt_type, event_id, thread_id)
        return 200, {}


class SetReadMarkers(Endpoint):
    method, path = "POST", "/_matrix/client/v3/rooms/{room_id}/read_markers"

    def __init__(self, receipts: ReceiptHandler) -> None:
        self._receipts = receipts

    async def handle(self, request: ApiRequest, room_id: str) -> tuple[int, dict]:
        requester = await request.require_user()
        body = request.json_object()
        # Other keys are ignored: receipt types are extensible, and one a client mistyped must not
        # cost it the ones it spelled right.
        markers = {kind: event_id for kind in MARKER_TYPES if (event_id := optional_field(body, kind))}
        await self._receipts.read_markers(requester, room_id, markers)
        return 200, {}


def endpoints(receipts: ReceiptHandler) -> list[Endpoint]:
    return [SendReceipt(receipts), SetReadMarkers(receipts)]
