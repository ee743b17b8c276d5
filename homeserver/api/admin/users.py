"""POST users/{userId}/deactivate and PUT users/{userId}/admin."""

from homeserver.api.admin.auth import PREFIX, require_admin
from homeserver.handlers.admin.users import AdminUsers
from homeserver.http.request import ApiRequest, optional_field, require_field
from homeserver.http.routing import Endpoint


class DeactivateUser(Endpoint):
    method, path = "POST", PREFIX + "/users/{user_id}/deactivate"

    def __init__(self, users: AdminUsers) -> None:
        self._users = users

    async def handle(self, request: ApiRequest, user_id: str) -> tuple[int, dict]:
        await require_admin(request)
        body = request.json_object(empty_ok=True)
        done = await self._users.deactivate(user_id, optional_field(body, "leave_rooms", bool, True))
        return 200, done.to_json()


class SetAdmin(Endpoint):
    method, path = "PUT", PREFIX + "/users/{user_id}/admin"

    def __init__(self, users: AdminUsers) -> None:
        self._users = users

    async def handle(self, request: ApiRequest, user_id: str) -> tuple[int, dict]:
        await require_admin(request)
        await self._users.set_admin(user_id, require_field(request.json_object(), "admin", bool))
        return 200, {}


def endpoints(users: AdminUsers) -> list[Endpoint]:
    return [DeactivateUser(users), SetAdmin(users)]
