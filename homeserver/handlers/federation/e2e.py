"""End-to-end encryption across servers.

Asking: /keys/query and /keys/claim for users of other servers go to those servers (POST /user/keys/query,
/user/keys/claim), one request per server, all at once, each bounded by the client's timeout; a server
that fails is named in `failures`. A remote user's full key list is cached while they share a room with
one of ours, and dropped when their server says it changed (m.device_list_update, m.signing_key_update)
or after CACHE_S, which bounds the staleness when an update is lost (we left every shared room, say).

Telling: a change to one of our users' devices or device keys goes as a durable m.device_list_update to
every server sharing a room with them, a change of their master or self-signing key as
m.signing_key_update. `stream_id` is the user's position on the device list stream; `prev_id` names the
update we sent before, or is empty when we do not know it (after a restart, or when two changes were
read as one), which makes the receiver fetch the whole list (GET /user/devices) instead.
"""

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer

from homeserver.core.event_signing import server_of
from homeserver.handlers.federation.sender import FederationSender
from homeserver.handlers.keyed_lock import KeyedLock
from homeserver.http.federation_client import FederationClient, HttpResponseError, RequestSendFailed
from homeserver.storage.e2e_keys import E2eKeyStore
from homeserver.storage.rooms import RoomStore

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0  # the spec's default `timeout` of /keys/query and /keys/claim
CACHE_S = 600.0
MAX_CACHED_USERS = 10_000


@dataclass
class RemoteKeys:
    """Keys of other servers' users, in the shape of /keys/query's answer."""

    device_keys: dict[str, dict[str, dict]] = field(default_factory=dict)
    master_keys: dict[str, dict] = field(default_factory=dict)
    self_signing_keys: dict[str, dict] = field(default_factory=dict)
    failures: dict[str, dict] = field(default_factory=dict)


def _failure(error: Exception) -> dict[str, Any]:
    if isinstance(error, HttpResponseError):
        return {"status": error.code, "message": f"The server answered {error.code}"}
    return {"status": 503, "message": str(error) or type(error).__name__}


def _objects(value: Any) -> dict[str, dict]:
    """The entries of a JSON object whose values are objects; anything else is dropped."""
    if not isinstance(value, Mapping):
        return {}
    return {k: dict(v) for k, v in value.items() if isinstance(k, str) and isinstance(v, Mapping)}


class FederatedE2e:
    def __init__(
        self,
        server_name: str,
        client: FederationClient,
        rooms: RoomStore,
        store: E2eKeyStore,
        sender: FederationSender | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._server_name = server_name
        self._client = client
        self._rooms = rooms
        self._store = store
        self._sender = sender
        self._clock = clock
        # user id -> (expiry, {"device_keys": ..., "master_key": ..., "self_signing_key": ...})
        self._cache: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._last_sent: dict[str, int] = {}  # local user -> stream_id of the last update we sent
        self._announcing = KeyedLock()

    # -- asking other servers ------------------------------------------------------------------

    async def query(self, wanted: Mapping[str, list[str]], timeout_s: float | None) -> RemoteKeys:
        """Device, master and self-signing keys of remote users (`wanted`: user -> device ids, [] for all)."""
        result = RemoteKeys()
        by_server: dict[str, dict[str, list[str]]] = {}
        for user_id, device_ids in wanted.items():
            cached = self._cached(user_id)
            if cached is None:
                by_server.setdefault(server_of(user_id), {})[user_id] = device_ids
            else:
                self._add(result, user_id, device_ids, cached)
        answers = await self._ask_all(
            {
                server: ("/_matrix/federation/v1/user/keys/query", {"device_keys": users})
                for server, users in by_server.items()
            },
            timeout_s,
        )
        for server, answer in answers.items():
            if isinstance(answer, Exception):
                result.failures[server] = _failure(answer)
                continue
            device_keys = _objects(answer.get("device_keys"))
            masters, self_signing = _objects(answer.get("master_keys")), _objects(answer.get("self_signing_keys"))
            for user_id, device_ids in by_server[server].items():
                found = {
                    "device_keys": _objects(device_keys.get(user_id)),
                    "master_key": masters.get(user_id),
                    "self_signing_key": self_signing.get(user_id),
                }
                self._add(result, user_id, device_ids, found)
                if not device_ids and user_id in device_keys:
                    await self._maybe_cache(user_id, found)
        return result

    async def claim(
        self, wanted: Mapping[str, Mapping[str, str]], timeout_s: float | None
    ) -> tuple[dict[str, dict[str, dict]], dict[str, dict]]:
        """One-time keys of remote users' devices (`wanted`: user -> device -> algorithm): (keys, failures)."""
        by_server: dict[str, dict[str, Mapping[str, str]]] = {}
        for user_id, devices in wanted.items():
            by_server.setdefault(server_of(user_id), {})[user_id] = devices
        answers = await self._ask_all(
            {
                server: ("/_matrix/federation/v1/user/keys/claim", {"one_time_keys": users})
                for server, users in by_server.items()
            },
            timeout_s,
        )
        claimed: dict[str, dict[str, dict]] = {}
        failures: dict[str, dict] = {}
        for server, answer in answers.items():
            if isinstance(answer, Exception):
                failures[server] = _failure(answer)
                continue
            keys = _objects(answer.get("one_time_keys"))
            for user_id, devices in by_server[server].items():
                found = {d: k for d, k in _objects(keys.get(user_id)).items() if d in devices}
                if found:
                    claimed[user_id] = found
        return claimed, failures

    async def _ask_all(self, requests: dict[str, tuple[str, dict]], timeout_s: float | None) -> dict[str, Any]:
        """POST each server its request at once: server -> its JSON object answer, or the exception."""

        async def ask(server: str, path: str, body: dict) -> Any:
            try:
                answer = await self._client.post_json(
                    server, path, body, timeout_s=timeout_s if timeout_s is not None else DEFAULT_TIMEOUT_S
                )
            except (HttpResponseError, RequestSendFailed) as e:
                return e
            return answer if isinstance(answer, dict) else RequestSendFailed(f"{server} answered something else")

        servers = sorted(requests)
        calls = [defer.ensureDeferred(ask(server, *requests[server])) for server in servers]
        answers = await defer.gatherResults(calls, consumeErrors=True)
        return dict(zip(servers, answers, strict=True))

    @staticmethod
    def _add(result: RemoteKeys, user_id: str, device_ids: list[str], found: dict[str, Any]) -> None:
        devices = found["device_keys"]
        result.device_keys[user_id] = {d: k for d, k in devices.items() if not device_ids or d in device_ids}
        if found["master_key"] is not None:
            result.master_keys[user_id] = found["master_key"]
        if found["self_signing_key"] is not None:
            result.self_signing_keys[user_id] = found["self_signing_key"]

    def _cached(self, user_id: str) -> dict[str, Any] | None:
        entry = self._cache.get(user_id)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._cache[user_id]
            return None
        return entry[1]

    async def _maybe_cache(self, user_id: str, found: dict[str, Any]) -> None:
        # Only users sharing a room with ours: their server tells us of changes, nobody else's does.
        sharing = await self._rooms.users_sharing_rooms(user_id)
        if not any(server_of(u) == self._server_name for u in sharing):
            return
        self._cache[user_id] = (self._clock() + CACHE_S, found)
        self._cache.move_to_end(user_id)
        while len(self._cache) > MAX_CACHED_USERS:
            self._cache.popitem(last=False)

    def remote_keys_changed(self, user_id: str) -> None:
        """A remote user's server said their devices or cross-signing keys changed."""
        self._cache.pop(user_id, None)

    # -- telling other servers -----------------------------------------------------------------

    def local_devices_changed(self, user_id: str, device_ids: list[str]) -> None:
        """These devices of a local user were created, deleted, renamed or got new keys. Never fails the caller."""
        if self._sender is None or not device_ids:
            return
        call = defer.ensureDeferred(self._announce_devices(user_id, device_ids))
        call.addErrback(lambda f: logger.error("federation: device list update of %s not queued: %s", user_id, f.value))

    def local_signing_keys_changed(self, user_id: str) -> None:
        """A local user's master or self-signing key, or the signatures on them, changed."""
        if self._sender is None:
            return
        call = defer.ensureDeferred(self._announce_signing_keys(user_id))
        call.addErrback(lambda f: logger.error("federation: signing key update of %s not queued: %s", user_id, f.value))

    async def _destinations(self, user_id: str) -> list[str]:
        return sorted({server_of(u) for u in await self._rooms.users_sharing_rooms(user_id)} - {self._server_name})

    async def _announce_devices(self, user_id: str, device_ids: list[str]) -> None:
        async with self._announcing.hold(user_id):
            position, devices = await self._store.device_list(user_id, device_ids)
            previous = self._last_sent.get(user_id)
            self._last_sent[user_id] = position
            destinations = await self._destinations(user_id)
            if not destinations or self._sender is None:
                return
            prev_ids = [previous] if previous is not None and previous < position else []
            contents = []
            for device in devices:
                content: dict[str, Any] = {
                    "user_id": user_id,
                    "device_id": device.device_id,
                    "stream_id": position,
                    "prev_id": prev_ids,
                    "deleted": not device.exists,
                }
                if device.display_name is not None:
                    content["device_display_name"] = device.display_name
                if device.keys is not None:
                    content["keys"] = device.keys
                contents.append(content)
                prev_ids = [position]  # the receiver has just seen this position, with the previous device
            await self._sender.send_durable_edus(
                (destination, "m.device_list_update", content) for destination in destinations for content in contents
            )

    async def _announce_signing_keys(self, user_id: str) -> None:
        destinations = await self._destinations(user_id)
        if not destinations or self._sender is None:
            return
        keys = await self._store.query({user_id: []}, "")
        content: dict[str, Any] = {"user_id": user_id}
        if user_id in keys.master_keys:
            content["master_key"] = keys.master_keys[user_id]
        if user_id in keys.self_signing_keys:
            content["self_signing_key"] = keys.self_signing_keys[user_id]
        await self._sender.send_durable_edus((d, "m.signing_key_update", content) for d in destinations)
