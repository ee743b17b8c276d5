"""The probes of the end-to-end monitor (scripts/monitor.py): what each one asks the server and what counts as
an answer. `Prober.run` turns every outcome into a Result and never raises."""

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from monitor_http import Http, ProbeFailure
from twisted.internet.defer import Deferred

log = logging.getLogger("monitor")

CLIENT = "/_matrix/client/v3"
PROBES = ("versions", "login", "delivery", "federation_key")
LOGIN_PROBE_DEVICE = "MONITOR_LOGIN_PROBE"  # apart from the monitor's own sessions, which a login would end
DEFAULT_ROOM_LOCALPART = "monitor-probe"
NONCE_KEY = "monitor_nonce"  # in the probe message's content, so the receiver knows this round's message
MAX_POLL_S = 30.0  # one long-poll /sync waits at most this long; the delivery deadline bounds the whole wait


@dataclass
class Account:
    """A probe account: a user and password (the monitor logs in), or an access token (and optionally the user)."""

    user: str | None = None
    password: str | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Target:
    """What the probes talk to, and how long they wait."""

    base_url: str
    federation_url: str | None = None
    sender: Account | None = None
    receiver: Account | None = None
    room: str | None = None  # a room id or alias; default #monitor-probe:<the sender's server>
    timeout: float = 10.0  # one request
    delivery_timeout: float = 30.0  # from sending the message until the receiver's /sync must have it
    device_id: str = "MONITOR"


@dataclass(frozen=True)
class Result:
    probe: str
    ok: bool
    latency: float | None = None  # seconds, for a probe that succeeded
    reason: str | None = None  # one of monitor_http.REASONS, for a probe that failed
    detail: str = ""


class _Session:
    """One account's login. A 401 drops a token the monitor got by logging in, so the next round logs in again;
    a configured token is kept (there is nothing better to try)."""

    def __init__(self, name: str, account: Account) -> None:
        self.name = name
        self.account = account
        self.token = account.access_token
        self.user_id = account.user if account.user and account.user.startswith("@") else None

    def forget(self) -> None:
        if self.account.password:
            self.token = None


class Prober:
    def __init__(self, http: Http, target: Target) -> None:
        self._http = http
        self._target = target
        self._base = target.base_url.rstrip("/")
        self._sender = _Session("sender", target.sender) if target.sender else None
        self._receiver = _Session("receiver", target.receiver) if target.receiver else None
        self._room_id: str | None = None  # set once both accounts are joined
        self._since: str | None = None  # the receiver's /sync position

    def probes(self) -> list[str]:
        """The probes the configuration allows, in PROBES order."""
        wanted = {"versions"}
        if self._login_account():
            wanted.add("login")
        if self._sender and self._receiver:
            wanted.add("delivery")
        if self._target.federation_url:
            wanted.add("federation_key")
        return [p for p in PROBES if p in wanted]

    async def run(self, probe: str) -> Result:
        try:
            latency = await getattr(self, "_" + probe)()
        except ProbeFailure as f:
            return Result(probe, False, reason=f.reason, detail=f.detail)
        except Exception as e:
            log.exception("probe %s: unexpected error", probe)
            return Result(probe, False, reason="error", detail=f"{type(e).__name__}: {e}"[:300])
        return Result(probe, True, latency=latency)

    # -- the probes: each returns its latency in seconds or raises ProbeFailure ---------------------------------

    async def _versions(self) -> float:
        start = time.monotonic()
        body = await self._http.json("GET", self._base + "/_matrix/client/versions", self._target.timeout)
        latency = time.monotonic() - start
        versions = body.get("versions")
        if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
            raise ProbeFailure("bad_json", "/versions answer has no list of versions")
        return latency

    async def _login(self) -> float:
        """A password login on a device of its own, then a logout, so the probe leaves no session behind."""
        account = self._login_account()
        assert account is not None
        start = time.monotonic()
        body = await self._password_login(account, LOGIN_PROBE_DEVICE)
        latency = time.monotonic() - start
        await self._http.json("POST", self._url("/logout"), self._target.timeout, body={}, token=body["access_token"])
        return latency

    async def _delivery(self) -> float:
        """The sender sends a message to the probe room while the receiver long-polls /sync: the latency runs from
        the send until the /sync answer that holds it."""
        try:
            await self._prepare()
            nonce = uuid.uuid4().hex
            start = time.monotonic()
            seen = Deferred.fromCoroutine(self._await_message(nonce, start + self._target.delivery_timeout))
            try:
                await self._send(nonce)
            except BaseException:
                seen.cancel()
                seen.addErrback(lambda _: None)
                raise
            return await seen - start
        except ProbeFailure as f:
            if f.status is not None and 400 <= f.status < 500 and f.status != 429:
                # Kicked, room gone, a sync position the server no longer knows: prepare afresh next round.
                self._room_id = self._since = None
            raise

    async def _federation_key(self) -> float:
        assert self._target.federation_url is not None
        url = self._target.federation_url.rstrip("/") + "/_matrix/key/v2/server"
        start = time.monotonic()
        body = await self._http.json("GET", url, self._target.timeout)
        latency = time.monotonic() - start
        keys, valid_until = body.get("verify_keys"), body.get("valid_until_ts")
        if not isinstance(body.get("server_name"), str) or not isinstance(keys, dict) or not keys:
            raise ProbeFailure("bad_json", "key answer lacks server_name or verify_keys")
        if not isinstance(valid_until, int):
            raise ProbeFailure("bad_json", "key answer lacks valid_until_ts")
        if valid_until <= time.time() * 1000:
            raise ProbeFailure("keys_expired", f"keys of {body['server_name']} expired at {valid_until} ms")
        return latency

    # -- delivery, step by step -----------------------------------------------------------------------------

    async def _prepare(self) -> None:
        """Log in (or learn who a token belongs to), find or create the room and join it, and take the
        receiver's /sync position: whatever a previous round has not done yet."""
        assert self._sender and self._receiver
        for session in (self._sender, self._receiver):
            await self._sign_in(session)
        if self._room_id is None:
            self._room_id = await self._join_room()
        if self._since is None:
            await self._sync(0)

    async def _sign_in(self, session: _Session) -> None:
        if session.token is None:
            body = await self._password_login(session.account, self._target.device_id)
            session.token, session.user_id = body["access_token"], body["user_id"]
        if session.user_id is None:
            user_id = (await self._call(session, "GET", "/account/whoami")).get("user_id")
            if not isinstance(user_id, str):
                raise ProbeFailure("bad_json", "whoami answer has no user_id")
            session.user_id = user_id

    async def _join_room(self) -> str:
        """The sender joins (creating the room when its alias is free), then the receiver, invited if need be."""
        assert self._sender and self._receiver and self._sender.user_id
        room = self._target.room or f"#{DEFAULT_ROOM_LOCALPART}:{self._sender.user_id.partition(':')[2]}"
        room_id = room if room.startswith("!") else await self._resolve_or_create(room)
        path = f"/join/{quote(room_id, safe='')}"
        await self._call(self._sender, "POST", path, {})  # a no-op for a member
        try:
            await self._call(self._receiver, "POST", path, {})
        except ProbeFailure as f:
            if f.status != 403:
                raise
            invite = f"/rooms/{quote(room_id, safe='')}/invite"
            await self._call(self._sender, "POST", invite, {"user_id": self._receiver.user_id})
            await self._call(self._receiver, "POST", path, {})
        log.info("probe room %s (%s): sender and receiver joined", room, room_id)
        return room_id

    async def _resolve_or_create(self, alias: str) -> str:
        assert self._sender and self._receiver and self._sender.user_id
        try:
            found = await self._call(self._sender, "GET", f"/directory/room/{quote(alias, safe='')}")
            return _string(found, "room_id", "alias lookup")
        except ProbeFailure as f:
            localpart, _, server = alias[1:].partition(":")
            if f.status != 404 or server != self._sender.user_id.partition(":")[2]:
                raise  # only an alias on the sender's own server can be created here
        body = {
            "room_alias_name": localpart,
            "preset": "private_chat",
            "name": "Monitor probes",
            "topic": "Messages sent by the end-to-end monitor (scripts/monitor.py)",
            "invite": [self._receiver.user_id],
        }
        room_id = _string(await self._call(self._sender, "POST", "/createRoom", body), "room_id", "createRoom")
        log.info("created probe room %s (%s)", alias, room_id)
        return room_id

    async def _send(self, nonce: str) -> None:
        assert self._sender and self._room_id
        path = f"/rooms/{quote(self._room_id, safe='')}/send/m.room.message/{nonce}"
        content = {"msgtype": "m.notice", "body": f"monitor probe {nonce}", NONCE_KEY: nonce}
        _string(await self._call(self._sender, "PUT", path, content), "event_id", "send")

    async def _await_message(self, nonce: str, deadline: float) -> float:
        """Long-polls the receiver's /sync until the message is there; returns when it was seen."""
        while (remaining := deadline - time.monotonic()) > 0:
            events = _timeline(await self._sync(min(remaining, MAX_POLL_S)), self._room_id or "")
            if any(isinstance(e, dict) and (e.get("content") or {}).get(NONCE_KEY) == nonce for e in events):
                return time.monotonic()
        waited = self._target.delivery_timeout
        raise ProbeFailure("not_delivered", f"sent, but not in the receiver's /sync {waited:g}s later")

    async def _sync(self, wait: float) -> dict[str, Any]:
        assert self._receiver
        params = {"timeout": str(int(wait * 1000)), "filter": self._filter(), "set_presence": "offline"}
        if self._since:
            params["since"] = self._since
        body = await self._call(self._receiver, "GET", "/sync", params=params, timeout=wait + self._target.timeout)
        self._since = _string(body, "next_batch", "/sync")
        return body

    def _filter(self) -> str:
        """Only the probe room's timeline: the probe accounts may be in other rooms, and presence is noise."""
        rooms = [self._room_id] if self._room_id else []
        none: dict[str, Any] = {"types": []}
        room = {"rooms": rooms, "timeline": {"limit": 20}, "state": none, "ephemeral": none, "account_data": none}
        return json.dumps({"presence": none, "account_data": none, "room": room}, separators=(",", ":"))

    # -- requests -------------------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self._base + CLIENT + path

    async def _call(
        self,
        session: _Session,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        try:
            return await self._http.json(
                method, self._url(path), timeout or self._target.timeout, body, session.token, params
            )
        except ProbeFailure as f:
            if f.status == 401:
                session.forget()
            raise

    async def _password_login(self, account: Account, device_id: str) -> dict[str, Any]:
        body = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": account.user},
            "password": account.password,
            "device_id": device_id,
            "initial_device_display_name": "homeserver monitor",
        }
        answer = await self._http.json("POST", self._url("/login"), self._target.timeout, body=body)
        _string(answer, "access_token", "login")
        _string(answer, "user_id", "login")
        return answer

    def _login_account(self) -> Account | None:
        for account in (self._target.sender, self._target.receiver):
            if account and account.user and account.password:
                return account
        return None


def _string(body: dict[str, Any], key: str, what: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise ProbeFailure("bad_json", f"{what} answer has no {key}")
    return value


def _timeline(body: dict[str, Any], room_id: str) -> list[Any]:
    """The room's timeline events in a /sync answer (none when the room is not in it)."""
    node: Any = body
    for key in ("rooms", "join", room_id, "timeline", "events"):
        if not isinstance(node, dict):
            raise ProbeFailure("bad_json", "/sync answer is not shaped like one")
        node = node.get(key, [] if key == "events" else {})
    if not isinstance(node, list):
        raise ProbeFailure("bad_json", "/sync timeline events are not a list")
    return node
