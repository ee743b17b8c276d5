"""Admin actions on accounts: deactivation (the user's own deactivation path, without the password,
then leaving every room) and the admin flag."""

from dataclasses import dataclass, field
from typing import Any

from homeserver.core.errors import MatrixError
from homeserver.handlers.account import AccountHandler
from homeserver.handlers.admin.purges import LEAVING, make_leave, require_local_user
from homeserver.handlers.room_events import RoomEventSender
from homeserver.storage.accounts import AccountStore
from homeserver.storage.admin import AdminStore
from homeserver.storage.rooms import RoomStore


@dataclass
class Deactivation:
    user_id: str
    rooms_left: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "rooms_left": self.rooms_left, "errors": self.errors}


class AdminUsers:
    def __init__(
        self,
        accounts: AccountStore,
        account: AccountHandler,
        admin: AdminStore,
        rooms: RoomStore,
        sender: RoomEventSender,
    ) -> None:
        self._accounts = accounts
        self._account = account
        self._admin = admin
        self._rooms = rooms
        self._sender = sender

    async def deactivate(self, user_id: str, leave_rooms: bool = True) -> Deactivation:
        """Deactivate the account (its devices and tokens go at once) and make it leave its rooms, one
        leave event each. Running it again for a deactivated user leaves whatever rooms are left."""
        await require_local_user(self._accounts, self._sender.server_name, user_id)
        await self._account.deactivate_user(user_id)
        done = Deactivation(user_id)
        if leave_rooms:
            for room_id in await self._rooms.rooms_for_user(user_id, LEAVING):
                try:
                    await make_leave(self._sender, room_id, user_id)
                    done.rooms_left.append(room_id)
                except MatrixError as e:
                    done.errors.append(f"{room_id}: {e.msg}")
        return done

    async def set_admin(self, user_id: str, admin: bool) -> None:
        await require_local_user(self._accounts, self._sender.server_name, user_id)
        await self._admin.set_admin(user_id, admin)
        self._accounts.forget_tokens(user_id)  # a cached token still says what the flag was
