"""bcrypt hashing, off the reactor thread: a hash costs tens of milliseconds of CPU by design."""

import base64
import hashlib
from typing import Any

import bcrypt
from twisted.internet.threads import deferToThread

MAX_PASSWORD_BYTES = 512


class PasswordHasher:
    def __init__(self, rounds: int, reactor: Any = None) -> None:
        self._rounds = rounds
        self._threaded = reactor is not None

    async def hash(self, password: str) -> str:
        return await self._run(_hash, password, self._rounds)

    async def verify(self, password: str, password_hash: str | None) -> bool:
        if not password_hash:
            return False
        return await self._run(_verify, password, password_hash)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await deferToThread(fn, *args) if self._threaded else fn(*args)


def _hash(password: str, rounds: int) -> str:
    return bcrypt.hashpw(_prepare(password), bcrypt.gensalt(rounds)).decode("ascii")


def _verify(password: str, password_hash: str) -> bool:
    try:
        return bcrypt.checkpw(_prepare(password), password_hash.encode("ascii"))
    except ValueError:
        return False


def _prepare(password: str) -> bytes:
    # bcrypt 5 refuses inputs over 72 bytes; hash longer passwords to a fixed size first so every
    # character counts (the same treatment both when hashing and when checking).
    data = password.encode("utf-8")
    if len(data) <= 72:
        return data
    return base64.b64encode(hashlib.sha256(data).digest())
