"""Profiles: display name and avatar, copied into the user's member event in each joined room."""

import logging
from typing import Any

from homeserver.core.errors import MatrixError
from homeserver.core.ids import parse_user_id
from homeserver.core.requester import Requester
from homeserver.handlers.federation.queries import RemoteQueries
from homeserver.storage.accounts import AccountStore
from homeserver.storage.profiles import ProfileStore

logger = logging.getLogger(__name__)

MAX_DISPLAYNAME_LEN = 256
MAX_AVATAR_URL_LEN = 1000
FIELDS = ("displayname", "avatar_url")


class ProfileHandler:
    def __init__(self, server_name: str, profiles: ProfileStore, accounts: AccountStore) -> None:
        self._server_name = server_name
        self._profiles = profiles
        self._accounts = accounts
        self.member_event_updater: Any = None  # set by the app: MembershipHandler.update_profile_in_rooms
        self.remote: RemoteQueries | None = None  # set by the app: other servers' profiles over federation

    def is_mine(self, user_id: str) -> bool:
        try:
            return parse_user_id(user_id)[1] == self._server_name
        except ValueError:
            return False

    async def get_profile(self, user_id: str) -> dict[str, str]:
        """The profile fields that are set; 404 M_NOT_FOUND for an unknown local user."""
        try:
            _, server = parse_user_id(user_id)
        except ValueError:
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid user id") from None
        if server != self._server_name:
            if self.remote is None:
                raise MatrixError(404, "M_NOT_FOUND", "Profile was not found")
            return await self.remote.profile(user_id, server)
        user = await self._accounts.get_user(user_id)
        if user is None:
            raise MatrixError(404, "M_NOT_FOUND", "Profile was not found")
        profile = await self._profiles.get_profile(user_id)
        if profile is None:
            return {}
        return {k: v for k, v in zip(FIELDS, profile, strict=True) if v is not None}

    async def member_profile(self, user_id: str) -> dict[str, str]:
        """The fields a member event of this user carries."""
        profile = await self._profiles.get_profile(user_id)
        return {k: v for k, v in zip(FIELDS, profile, strict=True) if v is not None} if profile else {}

    async def set_field(self, requester: Requester, user_id: str, field: str, value: Any) -> None:
        if requester.user_id != user_id and not requester.is_admin:
            raise MatrixError(403, "M_FORBIDDEN", "You cannot change another user's profile")
        if value is not None and not isinstance(value, str):
            raise MatrixError(400, "M_INVALID_PARAM", f"{field} must be a string")
        limit = MAX_DISPLAYNAME_LEN if field == "displayname" else MAX_AVATAR_URL_LEN
        if value is not None and len(value) > limit:
            raise MatrixError(400, "M_INVALID_PARAM", f"{field} is longer than {limit} characters")
        if field == "avatar_url" and value and not value.startswith("mxc://"):
            raise MatrixError(400, "M_INVALID_PARAM", "avatar_url must be an mxc:// URI")
        await self._profiles.set_field(user_id, field, value or None)
        if self.member_event_updater is not None:
            await self.member_event_updater(user_id)
