"""GET /notifications."""

from homeserver.handlers.notifications import NotificationsHandler
from homeserver.http.request import ApiRequest
from homeserver.http.routing import Endpoint

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


class GetNotifications(Endpoint):
    method, path = "GET", "/_matrix/client/v3/notifications"

    def __init__(self, notifications: NotificationsHandler) -> None:
        self._notifications = notifications

    async def handle(self, request: ApiRequest) -> tuple[int, dict]:
        requester = await request.require_user()
        limit = min(request.query_int("limit", DEFAULT_LIMIT, minimum=1), MAX_LIMIT)
        # `only` filters when it says `highlight`; other values are ignored, as Synapse does.
        only_highlight = request.query_param("only") == "highlight"
        from_token = request.query_param("from") or None
        return 200, await self._notifications.page(requester.user_id, from_token, limit, only_highlight)


def endpoints(notifications: NotificationsHandler) -> list[Endpoint]:
    return [GetNotifications(notifications)]
