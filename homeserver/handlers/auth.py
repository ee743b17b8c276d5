"""Access tokens: who a token belongs to, and the tokens and device ids we hand out."""

import secrets
import string

from homeserver.core.requester import Requester
from homeserver.storage.accounts import AccountStore

DEVICE_ID_ALPHABET = string.ascii_uppercase


def new_access_token() -> str:
    return "hs_" + secrets.token_urlsafe(32)


def new_device_id() -> str:
    return "".join(secrets.choice(DEVICE_ID_ALPHABET) for _ in range(10))


class Authenticator:
    def __init__(self, accounts: AccountStore) -> None:
        self._accounts = accounts

    async def authenticate(self, token: str) -> Requester | None:
        """The requester a token stands for; None for unknown tokens and deactivated users. Lookups are
        cached by the account store, which forgets a user's tokens whenever it changes them, so logout and
        deactivation take effect on the very next request."""
        owner = await self._accounts.get_token_owner(token)
        return Requester(owner.user_id, owner.device_id, owner.admin) if owner else None
