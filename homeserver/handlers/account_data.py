"""Account data (client-server API, "Client Config"): what a client stores for its own user, globally
or per room, and what sync sends of it. Only the owner reads or writes it; the types the server
manages (`m.fully_read`, `m.push_rules`) are readable but set through their own APIs only."""

from collections.abc import Awaitable, Callable
from typing import Any

from homeserver.core.errors import MatrixError
from homeserver.core.requester import Requester
from homeserver.handlers.notifier import Notifier
from homeserver.storage.account_data import AccountDataStore

FULLY_READ = "m.fully_read"
PUSH_RULES = "m.push_rules"
SERVER_MANAGED = frozenset({FULLY_READ, PUSH_RULES})
# Types and room ids are keys of the tables; PostgreSQL limits the size of an index row.
MAX_KEY_BYTES = 255


class AccountDataHandler:
    def __init__(self, store: AccountDataStore, notifier: Notifier | None = None) -> None:
        self._store = store
        self.notifier = notifier
        # user id -> their whole push ruleset (set by the app). `m.push_rules` is read from it rather than
        # from the table: users who never changed a rule have no row, and the server defaults they get
        # may change with the server's version.
        self.push_rules: Callable[[str], Awaitable[dict[str, Any]]] | None = None

    # -- the client API -----------------------------------------------------------------------

    async def set_global(self, requester: Requester, user_id: str, data_type: str, content: dict[str, Any]) -> None:
        _check_owner(requester, user_id, writing=True)
        _check_writable(data_type)
        await self.put_global(user_id, data_type, content)

    async def get_global(self, requester: Requester, user_id: str, data_type: str) -> dict[str, Any]:
        _check_owner(requester, user_id)
        if data_type == PUSH_RULES and self.push_rules is not None:
            return await self.push_rules(user_id)
        content = await self._store.get_global(user_id, data_type)
        if content is None:
            raise MatrixError(404, "M_NOT_FOUND", "Account data not found.")
        return content

    async def set_room(
        self, requester: Requester, user_id: str, room_id: str, data_type: str, content: dict[str, Any]
    ) -> None:
        _check_owner(requester, user_id, writing=True)
        _check_room_id(room_id)
        _check_writable(data_type)
        await self.put_room(user_id, room_id, data_type, content)

    async def get_room(self, requester: Requester, user_id: str, room_id: str, data_type: str) -> dict[str, Any]:
        _check_owner(requester, user_id)
        _check_room_id(room_id)
        content = await self._store.get_room(user_id, room_id, data_type)
        if content is None:
            raise MatrixError(404, "M_NOT_FOUND", "Room account data not found.")
        return content

    # -- for other handlers (read markers, push rules): no checks -------------------------------

    async def put_global(self, user_id: str, data_type: str, content: dict[str, Any]) -> int:
        position = await self._store.put_global(user_id, data_type, content)
        self._notify(user_id)
        return position

    async def put_room(self, user_id: str, room_id: str, data_type: str, content: dict[str, Any]) -> int:
        position = await self._store.put_room(user_id, room_id, data_type, content)
        self._notify(user_id)
        return position

    async def room_data(self, user_id: str, room_id: str, data_type: str) -> dict[str, Any] | None:
        return await self._store.get_room(user_id, room_id, data_type)

    def _notify(self, user_id: str) -> None:
        if self.notifier is not None:
            self.notifier.notify_users([user_id])

    # -- for sync ------------------------------------------------------------------------------

    async def global_account_data(self, user_id: str, after: int | None, upto: int) -> dict[str, dict[str, Any]]:
        """type -> content of the user's global account data changed in (after, upto]; all when
        `after` is None, which always includes `m.push_rules`."""
        data = await self._store.global_account_data(user_id, after, upto)
        if self.push_rules is not None and (after is None or PUSH_RULES in data):
            data[PUSH_RULES] = await self.push_rules(user_id)
        return data

    async def room_account_data(
        self, user_id: str, after: int | None, upto: int
    ) -> dict[str, dict[str, dict[str, Any]]]:
        """room id -> type -> content of the user's room account data changed in (after, upto]."""
        return await self._store.room_account_data(user_id, after, upto)

    async def current_position(self) -> int:
        return await self._store.current_position()


def _check_owner(requester: Requester, user_id: str, writing: bool = False) -> None:
    if requester.user_id != user_id:
        verb = "add" if writing else "get"
        raise MatrixError(403, "M_FORBIDDEN", f"Cannot {verb} account data for other users.")


def _check_writable(data_type: str) -> None:
    if data_type in SERVER_MANAGED:
        raise MatrixError(405, "M_BAD_JSON", f"Cannot set {data_type} through this API.")
    if len(data_type.encode()) > MAX_KEY_BYTES:
        raise MatrixError(400, "M_INVALID_PARAM", f"Account data types may be at most {MAX_KEY_BYTES} bytes.")


def _check_room_id(room_id: str) -> None:
    if not room_id.startswith("!") or len(room_id.encode()) > MAX_KEY_BYTES:
        raise MatrixError(400, "M_INVALID_PARAM", f"{room_id} is not a valid room ID.")
