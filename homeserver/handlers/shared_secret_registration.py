"""Operator registration over HTTP with `registration_shared_secret`, Synapse's HMAC scheme, so tools
written for it (register_new_matrix_user) work here too: GET a nonce, then POST the account with
HMAC-SHA1(secret, nonce NUL username NUL password NUL "admin"|"notadmin")."""

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict

from homeserver.core.errors import MatrixError
from homeserver.handlers.registration import RegistrationHandler, check_password_length

NONCE_LIFETIME_S = 60
MAX_NONCES = 1000


def registration_mac(secret: str, nonce: str, username: str, password: str, admin: bool) -> str:
    message = b"\x00".join([nonce.encode(), username.encode(), password.encode(), b"admin" if admin else b"notadmin"])
    return hmac.new(secret.encode(), message, hashlib.sha1).hexdigest()


class SharedSecretRegistration:
    def __init__(self, secret: str | None, registration: RegistrationHandler) -> None:
        self._secret = secret
        self._registration = registration
        self._nonces: OrderedDict[str, float] = OrderedDict()

    def _require_enabled(self) -> str:
        if not self._secret:
            raise MatrixError(400, "M_UNKNOWN", "Shared secret registration is not enabled")
        return self._secret

    def new_nonce(self) -> str:
        self._require_enabled()
        now = time.monotonic()
        while self._nonces and (len(self._nonces) >= MAX_NONCES or next(iter(self._nonces.values())) < now):
            self._nonces.popitem(last=False)
        nonce = secrets.token_hex(32)
        self._nonces[nonce] = now + NONCE_LIFETIME_S
        return nonce

    async def register(self, nonce: str, username: str, password: str, admin: bool, mac: str) -> str:
        secret = self._require_enabled()
        expires = self._nonces.pop(nonce, None)
        if expires is None or expires < time.monotonic():
            raise MatrixError(400, "M_UNKNOWN", "Unrecognised or expired nonce")
        expected = registration_mac(secret, nonce, username, password, admin)
        if not hmac.compare_digest(expected, mac):
            raise MatrixError(403, "M_FORBIDDEN", "HMAC incorrect")
        check_password_length(password)
        localpart = username.lower()
        await self._registration.check_available(localpart)
        return await self._registration.create_account(localpart, password, admin=admin)
