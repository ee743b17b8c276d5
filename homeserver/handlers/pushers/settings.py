"""Setting, removing and listing a user's pushers (POST /pushers/set, GET /pushers)."""

import ipaddress
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from homeserver.core.errors import MatrixError
from homeserver.core.requester import Requester
from homeserver.handlers.pushers.notification import EVENT_ID_ONLY
from homeserver.handlers.pushers.pool import PusherPool
from homeserver.storage.pushers import PusherKey, PusherRecord, PusherStore

MAX_APP_ID_CHARS = 64
MAX_PUSHKEY_BYTES = 512
NOTIFY_PATH = "/_matrix/push/v1/notify"
# Only HTTP pushers: an "email" pusher needs outgoing mail, which this server does not send. Refusing it
# (400 M_INVALID_PARAM, "one of the pusher values was invalid") tells the client at once, where accepting
# it would leave the user believing they get mail.
SUPPORTED_KINDS = ("http",)
_HOSTNAME = re.compile(r"^[A-Za-z0-9.-]+$")


def _invalid(message: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_PARAM", message)


def check_gateway_url(url: Any) -> None:
    """`data.url` of an HTTP pusher: an absolute http(s) URL whose path is the notify endpoint. The spec
    asks for HTTPS; plain HTTP is allowed too (as Synapse does) for gateways on the same host or a
    private network, where TLS is not set up."""
    if not isinstance(url, str):
        raise _invalid("data.url must be a string")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        raise _invalid("data.url is not a valid URL") from None
    host = parts.hostname or ""
    if parts.scheme not in ("https", "http") or not (_HOSTNAME.match(host) or _is_ip(host)):
        raise _invalid("data.url must be an absolute http(s) URL")
    if parts.path != NOTIFY_PATH:
        raise _invalid(f"data.url must have the path {NOTIFY_PATH}")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class PusherHandler:
    def __init__(self, store: PusherStore, pool: PusherPool, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._pool = pool
        self._clock = clock

    async def list(self, requester: Requester) -> list[PusherRecord]:
        return await self._store.pushers_of_user(requester.user_id)

    async def delete(self, requester: Requester, app_id: str, pushkey: str) -> None:
        """Remove the user's pusher for (app_id, pushkey); nothing to remove is not an error."""
        key = PusherKey(app_id, pushkey, requester.user_id)
        await self._store.delete_pusher(key)
        self._pool.remove(key)

    async def set(
        self,
        requester: Requester,
        *,
        kind: str,
        app_id: str,
        pushkey: str,
        app_display_name: str,
        device_display_name: str,
        profile_tag: str | None,
        lang: str,
        data: dict[str, Any],
        append: bool,
    ) -> None:
        """Create or update the pusher, owned by the requester's device (it goes when the device does)."""
        if kind not in SUPPORTED_KINDS:
            raise _invalid(f"Unsupported pusher kind: {kind}; this server supports {', '.join(SUPPORTED_KINDS)}")
        if not app_id or len(app_id) > MAX_APP_ID_CHARS:
            raise _invalid(f"app_id must be 1 to {MAX_APP_ID_CHARS} characters")
        if not pushkey or len(pushkey.encode("utf-8")) > MAX_PUSHKEY_BYTES:
            raise _invalid(f"pushkey must be 1 to {MAX_PUSHKEY_BYTES} bytes")
        if "url" not in data:
            raise MatrixError(400, "M_MISSING_PARAM", "data.url is required for an http pusher")
        check_gateway_url(data["url"])
        if data.get("format", EVENT_ID_ONLY) != EVENT_ID_ONLY:
            raise _invalid(f"data.format must be {EVENT_ID_ONLY!r} or absent")
        record = PusherRecord(
            user_id=requester.user_id,
            device_id=requester.device_id,
            kind=kind,
            app_id=app_id,
            app_display_name=app_display_name,
            device_display_name=device_display_name,
            profile_tag=profile_tag,
            pushkey=pushkey,
            lang=lang,
            data=data,
        )
        stored = await self._store.set_pusher(record, int(self._clock() * 1000), append)
        if stored is None:
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "This session has been logged out.", soft_logout=False)
        if not append:
            # Other users' pushers for this app_id and pushkey are gone from storage; stop them too.
            self._pool.remove_others(stored.key)
        self._pool.set(stored)
