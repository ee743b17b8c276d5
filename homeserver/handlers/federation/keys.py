"""Server signing keys: ours as published, other servers' as fetched, and the notary service.

Other servers' keys are looked up in memory, then in the database, then fetched: first through the
configured notaries (trusted_key_servers, whose own signatures are checked with their configured keys),
then from the server itself. Every document is checked to be self-signed by the server it describes
before a key from it is used or stored. Concurrent fetches for one server share one fetch.
"""

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from signedjson.key import encode_verify_key_base64
from signedjson.types import SigningKey, VerifyKey

from homeserver.config.options import OldSigningKeyConfig, TrustedKeyServerConfig
from homeserver.core.canonical_json import encode_canonical_json
from homeserver.core.errors import MatrixError
from homeserver.core.federation_auth import (
    KeyDocumentError,
    ServerKeys,
    check_notary_signature,
    is_request_signature_valid,
    parse_server_keys,
    parse_x_matrix,
    server_keys_document,
)
from homeserver.core.json_signing import sign_json, verify_key_from_base64
from homeserver.handlers.single_flight import SingleFlight
from homeserver.http.federation_client import FederationClient, FederationError
from homeserver.storage.server_keys import ServerKeyStore, StoredKey

logger = logging.getLogger(__name__)

MAX_CACHED_SERVERS = 10_000  # key sets are small (a few hundred bytes); the oldest-used go first
KEY_FETCH_TIMEOUT_S = 10.0
MIN_REFETCH_S = 30.0  # between two network fetches of one server's keys that did not give what was needed


@dataclass(frozen=True)
class KeyConfig:
    server_name: str
    signing_key: SigningKey
    old_signing_keys: Mapping[str, OldSigningKeyConfig]
    key_refresh_interval_ms: int
    trusted_key_servers: list[TrustedKeyServerConfig]


def _unauthorized(msg: str) -> MatrixError:
    return MatrixError(401, "M_UNAUTHORIZED", msg)


class KeyRing:
    def __init__(
        self,
        config: KeyConfig,
        store: ServerKeyStore,
        client: FederationClient,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._store = store
        self._client = client
        self._clock_ms = clock_ms
        # Invalidated by our own fetches only: nothing else writes server_keys.
        self._cache: OrderedDict[str, dict[str, StoredKey]] = OrderedDict()
        self._fetches = SingleFlight(keep_s=0)
        # server -> when we last asked the network for its keys. A request naming a key we cannot find must
        # not make us ask again at once: anyone could send many, each naming a victim server as origin.
        self._last_fetch: OrderedDict[str, float] = OrderedDict()
        self._monotonic = monotonic

    @property
    def server_name(self) -> str:
        return self._config.server_name

    # -- ours ------------------------------------------------------------------------------------

    def own_keys(self) -> dict[str, Any]:
        """Our /_matrix/key/v2/server document, valid for key_refresh_interval from now."""
        old = {key_id: (k.key, k.expired_ts) for key_id, k in self._config.old_signing_keys.items()}
        valid_until = self._clock_ms() + self._config.key_refresh_interval_ms
        return server_keys_document(self.server_name, self._config.signing_key, valid_until, old)

    # -- theirs ----------------------------------------------------------------------------------

    async def get_keys(self, server_name: str, key_ids: list[str], min_valid_until_ts: int) -> dict[str, VerifyKey]:
        """The keys of `server_name` among `key_ids` (all when empty) valid until at least
        `min_valid_until_ts`, fetching when what we hold does not answer; the ones still missing are left out."""
        held = await self._held(server_name)
        if not _satisfied(held, key_ids, min_valid_until_ts) and self._may_fetch(server_name):
            await self._fetches.run(server_name, lambda: self._fetch(server_name, key_ids, min_valid_until_ts))
            held = await self._held(server_name)
        return {
            key_id: verify_key_from_base64(key_id, k.verify_key)
            for key_id, k in held.items()
            if (not key_ids or key_id in key_ids) and k.valid_until_ts >= min_valid_until_ts
        }

    async def _held(self, server_name: str) -> dict[str, StoredKey]:
        cached = self._cache.get(server_name)
        if cached is None:
            cached = {k.key_id: k for k in await self._store.get_keys(server_name)}
            self._remember(server_name, cached)
        else:
            self._cache.move_to_end(server_name)
        return cached

    def _remember(self, server_name: str, keys: dict[str, StoredKey]) -> None:
        self._cache[server_name] = keys
        self._cache.move_to_end(server_name)
        while len(self._cache) > MAX_CACHED_SERVERS:
            self._cache.popitem(last=False)

    def _may_fetch(self, server_name: str) -> bool:
        """False shortly after a finished fetch; a fetch in flight is joined (SingleFlight), never refused."""
        last = self._last_fetch.get(server_name)
        return last is None or self._monotonic() - last >= MIN_REFETCH_S

    def _fetched(self, server_name: str) -> None:
        self._last_fetch[server_name] = self._monotonic()
        self._last_fetch.move_to_end(server_name)
        while len(self._last_fetch) > MAX_CACHED_SERVERS:
            self._last_fetch.popitem(last=False)

    async def _fetch(self, server_name: str, key_ids: list[str], min_valid_until_ts: int) -> None:
        for notary in self._config.trusted_key_servers:
            if notary.server_name == server_name:
                continue
            try:
                documents = await self._query_notary(notary, server_name, key_ids, min_valid_until_ts)
            except (FederationError, KeyDocumentError) as e:
                logger.warning("notary %s could not give the keys of %s: %s", notary.server_name, server_name, e)
                continue
            await self._keep(documents)
            if _satisfied(await self._held(server_name), key_ids, min_valid_until_ts):
                self._fetched(server_name)
                return
        await self.fetch_direct(server_name)

    async def fetch_direct(self, server_name: str) -> None:
        """Ask the server itself for its keys, and keep them; failures are logged, not raised."""
        try:
            document = await self._client.get_json(
                server_name, "/_matrix/key/v2/server", timeout_s=KEY_FETCH_TIMEOUT_S, signed=False
            )
            await self._keep([parse_server_keys(document, server_name)])
        except (FederationError, KeyDocumentError) as e:
            logger.warning("could not fetch the keys of %s: %s", server_name, e)
        finally:
            self._fetched(server_name)

    async def _query_notary(
        self, notary: TrustedKeyServerConfig, server_name: str, key_ids: list[str], min_valid_until_ts: int
    ) -> list[ServerKeys]:
        notary_keys = {
            key_id: verify_key_from_base64(key_id, key) for key_id, key in notary.verify_keys.items()
        } or await self.get_keys(notary.server_name, [], self._clock_ms())
        criteria = {key_id: {"minimum_valid_until_ts": min_valid_until_ts} for key_id in key_ids}
        answer = await self._client.post_json(
            notary.server_name,
            "/_matrix/key/v2/query",
            {"server_keys": {server_name: criteria}},
            timeout_s=KEY_FETCH_TIMEOUT_S,
        )
        documents = answer.get("server_keys") if isinstance(answer, dict) else None
        if not isinstance(documents, list):
            raise KeyDocumentError("the notary's answer has no server_keys list")
        checked = []
        for document in documents:
            if isinstance(document, dict) and document.get("server_name") == server_name:
                check_notary_signature(document, notary.server_name, notary_keys)
                checked.append(parse_server_keys(document, server_name))
        return checked

    async def _keep(self, documents: list[ServerKeys]) -> None:
        rows = [
            StoredKey(d.server_name, key_id, encode_verify_key_base64(k.verify_key), k.valid_until_ts, d.document)
            for d in documents
            for key_id, k in d.keys.items()
        ]
        if not rows:
            return
        await self._store.store_keys(rows, self._clock_ms())
        for server_name in {d.server_name for d in documents}:
            self._cache.pop(server_name, None)  # read back: the store keeps the newest of each key

    # -- requests --------------------------------------------------------------------------------

    async def authenticate_request(self, authorization: list[str], method: str, uri: str, content: Any) -> str:
        """The origin server of a signed request; 401 M_UNAUTHORIZED unless an X-Matrix signature of it
        verifies with a current key of that server (old keys sign only events)."""
        headers = [h for h in authorization if h.strip().lower().startswith("x-matrix ")]
        if not headers:
            raise _unauthorized("Missing X-Matrix Authorization header")
        try:
            auths = [parse_x_matrix(h) for h in headers]
        except ValueError as e:
            raise _unauthorized(f"Malformed X-Matrix Authorization header: {e}") from None
        origin = auths[0].origin
        for auth in auths:
            if auth.origin != origin:
                raise _unauthorized("X-Matrix Authorization headers name different origins")
            if auth.destination is not None and auth.destination != self.server_name:
                raise _unauthorized(f"Request is for {auth.destination}, not this server")
        now = self._clock_ms()
        for auth in auths:
            keys = await self.get_keys(origin, [auth.key_id], now)
            verify_key = keys.get(auth.key_id)
            if verify_key is None:
                raise _unauthorized(f"No current key {auth.key_id} of {origin} could be found")
            if not is_request_signature_valid(auth, method, uri, self.server_name, content, verify_key):
                raise _unauthorized(f"Invalid signature from {origin} with {auth.key_id}")
        return origin

    # -- notary ----------------------------------------------------------------------------------

    async def query(self, criteria: Mapping[str, tuple[list[str], int | None]]) -> list[dict[str, Any]]:
        """The key documents of each server (server -> (key ids, none meaning all; minimum_valid_until_ts)),
        from what we hold or fetched from the server itself, each countersigned by us. A server we cannot
        reach and hold nothing of is left out."""
        now = self._clock_ms()
        answers: list[dict[str, Any]] = []
        for server_name, (keys, min_ts) in criteria.items():
            if server_name == self.server_name:
                answers.append(self.own_keys())
                continue
            min_ts = now if min_ts is None else min_ts
            held = await self._held(server_name)
            if not _satisfied(held, keys, min_ts) and self._may_fetch(server_name):
                await self._fetches.run(("notary", server_name), lambda s=server_name: self.fetch_direct(s))
                held = await self._held(server_name)
            seen: set[bytes] = set()
            for key_id, stored in held.items():
                if keys and key_id not in keys:
                    continue
                document = {k: v for k, v in stored.key_json.items() if k != "signatures"}
                document["signatures"] = {
                    server_name: stored.key_json.get("signatures", {}).get(server_name, {})
                }  # the origin's signature only: other notaries' add nothing a reader can check
                canonical = encode_canonical_json(document)
                if canonical not in seen:
                    seen.add(canonical)
                    answers.append(sign_json(document, self.server_name, self._config.signing_key))
        return answers


def _satisfied(held: Mapping[str, StoredKey], key_ids: list[str], min_valid_until_ts: int) -> bool:
    if key_ids:
        return all(k in held and held[k].valid_until_ts >= min_valid_until_ts for k in key_ids)
    return any(k.valid_until_ts >= min_valid_until_ts for k in held.values())
