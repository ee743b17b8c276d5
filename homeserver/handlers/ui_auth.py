"""User-interactive authentication: the 401-with-flows dance that guards sensitive actions."""

import secrets
from typing import Any

from homeserver.core.errors import MatrixError
from homeserver.core.ids import parse_user_id
from homeserver.handlers.passwords import PasswordHasher
from homeserver.handlers.ratelimit import RateLimiter
from homeserver.storage.accounts import AccountStore
from homeserver.storage.ui_auth import UiAuthStore

PASSWORD, DUMMY = "m.login.password", "m.login.dummy"


class AuthRequired(MatrixError):
    """The spec's 401 body: flows, params, session, completed stages, and errcode only on a failed try."""

    def __init__(self, stages: list[str], session: str, completed: list[str], failure: MatrixError | None) -> None:
        super().__init__(401, failure.errcode if failure else "M_UNAUTHORIZED", failure.msg if failure else "")
        self.body: dict[str, Any] = {
            "flows": [{"stages": stages}],
            "params": {},
            "session": session,
            "completed": completed,
        }
        if failure:
            self.body.update(errcode=failure.errcode, error=failure.msg)

    def to_json(self) -> dict[str, Any]:
        return self.body


class UiAuth:
    def __init__(
        self,
        store: UiAuthStore,
        accounts: AccountStore,
        passwords: PasswordHasher,
        server_name: str,
        failed_attempts: RateLimiter,
    ) -> None:
        self._store = store
        self._accounts = accounts
        self._passwords = passwords
        self._server_name = server_name
        # The same budget as failed logins: a stolen token must not become a password-guessing oracle.
        self._failed_attempts = failed_attempts

    async def require_password(self, user_id: str, auth: Any) -> None:
        """Pass if `auth` proves, by password, to be `user_id`; raise the 401 dance otherwise."""
        await self._require(PASSWORD, auth, user_id)

    async def require_dummy(self, auth: Any) -> None:
        await self._require(DUMMY, auth, None)

    async def _require(self, stage: str, auth: Any, user_id: str | None) -> None:
        if auth is None:
            raise AuthRequired([stage], await self._new_session(user_id), [], None)
        if not isinstance(auth, dict):
            raise MatrixError(400, "M_BAD_JSON", "auth must be an object")
        session = auth.get("session")
        if session is not None:
            valid = isinstance(session, str) and "\x00" not in session
            found = await self._store.get_session(session) if valid else None
            if found is None or (user_id is not None and found[0] not in (None, user_id)):
                raise MatrixError(400, "M_UNKNOWN", "Unknown or expired user-interactive auth session")
        else:
            session = await self._new_session(user_id)
        if auth.get("type") != stage:
            failure = MatrixError(401, "M_UNRECOGNIZED", f"This action needs the {stage} stage")
            raise AuthRequired([stage], session, [], failure)
        if stage == PASSWORD:
            try:
                await self._check_password(user_id or "", auth)
            except MatrixError as failure:
                raise AuthRequired([stage], session, [], failure) from None
        await self._store.delete_session(session)

    async def _new_session(self, user_id: str | None) -> str:
        session = secrets.token_urlsafe(24)
        await self._store.create_session(session, user_id)
        return session

    async def _check_password(self, user_id: str, auth: dict[str, Any]) -> None:
        claimed = identified_user(auth, self._server_name)
        password = auth.get("password")
        # Logins match ids case-insensitively (older ids may have capitals), so the auth stage does too.
        if claimed.lower() != user_id.lower() or not isinstance(password, str):
            raise MatrixError(401, "M_FORBIDDEN", "Invalid username or password")
        self._failed_attempts.check(user_id.lower())
        user = await self._accounts.get_user(user_id)
        if user is None or not await self._passwords.verify(password, user.password_hash):
            self._failed_attempts.record(user_id.lower())
            raise MatrixError(401, "M_FORBIDDEN", "Invalid username or password")


def identified_user(body: dict[str, Any], server_name: str) -> str:
    """The full user id named by a login or auth dict: the `identifier` form or the old `user` field."""
    identifier = body.get("identifier")
    if identifier is not None:
        if not isinstance(identifier, dict):
            raise MatrixError(400, "M_INVALID_PARAM", "identifier must be an object")
        if identifier.get("type") != "m.id.user":
            raise MatrixError(400, "M_UNKNOWN", "Only m.id.user identifiers are supported")
        user = identifier.get("user")
    else:
        user = body.get("user")
    if user is None or user == "":
        raise MatrixError(400, "M_MISSING_PARAM", "Missing identifier.user")
    if not isinstance(user, str):
        raise MatrixError(400, "M_INVALID_PARAM", "identifier.user must be a string")
    full = user if user.startswith("@") else f"@{user}:{server_name}"
    try:
        _, server = parse_user_id(full)
    except ValueError:
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid user id") from None
    if server != server_name:
        raise MatrixError(403, "M_FORBIDDEN", "That user is not from this server")
    return full
