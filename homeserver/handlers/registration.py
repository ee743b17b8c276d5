"""Creating accounts: open registration through the client API and by the operator."""

import secrets
from dataclasses import dataclass
from typing import Any

from homeserver.core.errors import MatrixError
from homeserver.core.ids import MAX_ID_BYTES, is_valid_localpart
from homeserver.core.ids import user_id as make_user_id
from homeserver.handlers.login import LoginHandler, LoginResult
from homeserver.handlers.passwords import MAX_PASSWORD_BYTES, PasswordHasher
from homeserver.handlers.ratelimit import RateLimiter
from homeserver.handlers.ui_auth import UiAuth
from homeserver.storage.accounts import AccountStore, UserExists


@dataclass(frozen=True)
class RegistrationRequest:
    username: str | None
    password: str | None
    device_id: str | None
    device_display_name: str | None
    inhibit_login: bool
    auth: Any


class RegistrationHandler:
    def __init__(
        self,
        server_name: str,
        enabled: bool,
        accounts: AccountStore,
        passwords: PasswordHasher,
        ui_auth: UiAuth,
        login: LoginHandler,
        ratelimiter: RateLimiter,
    ) -> None:
        self._server_name = server_name
        self._enabled = enabled
        self._accounts = accounts
        self._passwords = passwords
        self._ui_auth = ui_auth
        self._login = login
        self._ratelimiter = ratelimiter

    async def register(self, request: RegistrationRequest, client_ip: str) -> tuple[str, LoginResult | None]:
        """Register through the client API (m.login.dummy stage). Returns the user id and, unless
        login is inhibited, the new device's login."""
        self._ratelimiter.check(client_ip)
        if not self._enabled:
            raise MatrixError(403, "M_FORBIDDEN", "Registration has been disabled")
        localpart = request.username.lower() if request.username is not None else None
        if localpart is not None:
            await self.check_available(localpart)
        if request.auth is None:
            # The first call of the dance: answer with the flows before asking for anything else, as
            # clients (Element) start with an empty body to learn them.
            await self._ui_auth.require_dummy(None)
        if not request.password:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing parameter: password")
        check_password_length(request.password)
        await self._ui_auth.require_dummy(request.auth)
        self._ratelimiter.record(client_ip)
        user_id = await self.create_account(localpart, request.password)
        if request.inhibit_login:
            return user_id, None
        login = await self._login.create_login(user_id, request.device_id, request.device_display_name, client_ip)
        return user_id, login

    async def check_available(self, localpart: str) -> None:
        """400 M_INVALID_USERNAME or M_USER_IN_USE unless a user could register `localpart`."""
        if not is_valid_localpart(localpart):
            raise MatrixError(
                400, "M_INVALID_USERNAME", "User ID may only contain the characters a-z, 0-9, and '=_-./+'"
            )
        if len(make_user_id(localpart, self._server_name).encode()) > MAX_ID_BYTES:
            raise MatrixError(400, "M_INVALID_USERNAME", f"User ID may not be longer than {MAX_ID_BYTES} bytes")
        if localpart.isdigit():
            # Generated ids are numeric; keeping people off them avoids collisions.
            raise MatrixError(400, "M_INVALID_USERNAME", "Numeric user IDs are reserved for generated accounts")
        if await self._accounts.get_user(make_user_id(localpart, self._server_name)):
            raise MatrixError(400, "M_USER_IN_USE", "User ID already taken.")

    async def create_account(self, localpart: str | None, password: str | None, admin: bool = False) -> str:
        """Create the user (a generated numeric localpart when None); M_USER_IN_USE on a race."""
        password_hash = await self._passwords.hash(password) if password else None
        for _ in range(10):
            chosen = localpart if localpart is not None else str(secrets.randbelow(10**12))
            user_id = make_user_id(chosen, self._server_name)
            try:
                await self._accounts.create_user(user_id, password_hash, admin)
                return user_id
            except UserExists:
                if localpart is not None:
                    raise MatrixError(400, "M_USER_IN_USE", "User ID already taken.") from None
        raise MatrixError(500, "M_UNKNOWN", "Could not generate a free user ID")


def check_password_length(password: str) -> None:
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise MatrixError(400, "M_INVALID_PARAM", f"Password is longer than {MAX_PASSWORD_BYTES} bytes")
