"""Events other servers send us: checked, completed where we miss history, authorised, stored.

"Checks performed on receipt of a PDU": format, signatures and hash (core/pdu_checks), then auth
against the event's auth events and against the state before it (both reject), then against the
current state (soft-fail: stored, hidden from clients, not a forward extremity). Missing prev_events
are asked for with /get_missing_events; a gap that remains is bridged with the state at the missing
events (/state_ids, then /event or /state for what we lack), stored as outliers.
"""

import logging
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

from homeserver.core.errors import MatrixError
from homeserver.core.event_auth import (
    AuthError,
    SignatureCheck,
    auth_types_of,
    check_auth_events,
    check_auth_rules,
    signature_check,
)
from homeserver.core.event_hashing import compute_event_id
from homeserver.core.event_signing import server_of
from homeserver.core.events import Event
from homeserver.core.json_signing import ServerVerifyKey
from homeserver.core.pdu_checks import check_received_pdu, keys_needed
from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion
from homeserver.handlers.federation.history import resolve_state_sets
from homeserver.handlers.federation.keys import KeyRing
from homeserver.handlers.room_events import RoomEventSender
from homeserver.http.federation_client import FederationError
from homeserver.storage.events import EventStore
from homeserver.storage.rooms import RoomStore
from homeserver.storage.state import StateKey, StateStore

logger = logging.getLogger(__name__)

MISSING_EVENTS_LIMIT = 20  # events asked for per /get_missing_events
MAX_FETCH_BY_ID = 20  # more unknown state than this: one /state instead of /event each
BACKFILL_SERVERS = 3  # servers of the room asked in turn, until one has older history

_FAR_FUTURE = 2**62


class EventIntake:
    def __init__(
        self,
        server_name: str,
        key_ring: KeyRing,
        client: Any,
        room_sender: RoomEventSender,
        events: EventStore,
        state: StateStore,
        rooms: RoomStore,
    ) -> None:
        self._server_name = server_name
        self._key_ring = key_ring
        self._client = client
        self._sender = room_sender
        self._events = events
        self._state = state
        self._rooms = rooms

    # -- steps 1-3 -------------------------------------------------------------------------------

    async def check_pdu(self, room_version: RoomVersion, pdu: Mapping[str, Any]) -> Event:
        """Format, event id, signatures (keys fetched as needed) and hash; raises MatrixError to drop it."""
        if not isinstance(pdu, Mapping):
            raise MatrixError(400, "M_BAD_JSON", "A PDU must be an object")
        ts = pdu.get("origin_server_ts")
        min_valid = ts if room_version.enforce_key_validity and isinstance(ts, int) else 0
        known: dict[tuple[str, str], ServerVerifyKey] = {}
        for server, key_ids in keys_needed(room_version, pdu).items():
            for key_id, verify_key in (await self._key_ring.get_keys(server, key_ids, min_valid)).items():
                # get_keys already left out keys not valid at min_valid.
                known[(server, key_id)] = ServerVerifyKey(verify_key, _FAR_FUTURE)
        return check_received_pdu(room_version, pdu, lambda server, key_id: known.get((server, key_id)))

    # -- /send -----------------------------------------------------------------------------------

    async def intake(self, origin: str, room_version: RoomVersion, pdus: list[dict]) -> dict[str, str | None]:
        """Process PDUs of rooms of `room_version` from `origin`: event id -> None (accepted, perhaps
        soft-failed) or why it was dropped or rejected."""
        results: dict[str, str | None] = {}
        by_room: dict[str, list[Event]] = {}
        for pdu in pdus:
            try:
                event = await self.check_pdu(room_version, pdu)
            except MatrixError as e:
                event_id = _claimed_id(room_version, pdu)
                if event_id is not None:
                    results[event_id] = e.msg
                continue
            by_room.setdefault(event.room_id, []).append(event)
        for room_id, events in by_room.items():
            async with self._sender.room_lock(room_id):
                for event in sorted(events, key=lambda e: e.depth):
                    try:
                        results[event.event_id] = await self._receive(origin, room_version, event)
                    except MatrixError as e:
                        results[event.event_id] = e.msg
                    except FederationError as e:  # the history it needs could not be fetched: try again later
                        results[event.event_id] = f"Could not fetch the event's history: {e}"
        return results

    async def _receive(self, origin: str, room_version: RoomVersion, event: Event) -> str | None:
        """One checked event of a room we hold the lock of: its history, auth, storage."""
        kind = (await self._events.received_status([event.event_id])).get(event.event_id, ("new", None))[0]
        if kind == "rejected":
            return "Event was rejected"
        if kind in ("timeline", "soft_failed"):
            return None  # a retried transaction, or an event we fetched earlier
        room = await self._rooms.get_room(event.room_id)
        if room is None or room.room_version != room_version.identifier:
            raise MatrixError(404, "M_NOT_FOUND", "This server is not in that room")
        await self._fetch_missing_prevs(origin, room_version, event)
        return await self._authorise_and_store(origin, room_version, event)

    async def _fetch_missing_prevs(self, origin: str, room_version: RoomVersion, event: Event) -> None:
        """Ask `origin` for the events between our forward extremities and `event`, and take them in."""
        status = await self._events.received_status(event.prev_event_ids)
        if all(status.get(p, ("?",))[0] in ("timeline", "soft_failed") for p in event.prev_event_ids):
            return
        extremities = [e.event_id for e in await self._events.get_forward_extremities(event.room_id)]
        try:
            answer = await self._client.post_json(
                origin,
                f"/_matrix/federation/v1/get_missing_events/{_q(event.room_id)}",
                {
                    "earliest_events": extremities,
                    "latest_events": [event.event_id],
                    "limit": MISSING_EVENTS_LIMIT,
                    "min_depth": 0,
                },
            )
        except FederationError as e:  # a peer failing to answer leaves a gap, bridged with state
            logger.info("get_missing_events from %s failed: %s", origin, e)
            return
        missing: list[Event] = []
        for pdu in answer.get("events", []) if isinstance(answer, Mapping) else []:
            try:
                found = await self.check_pdu(room_version, pdu)
            except MatrixError:
                continue
            if found.room_id == event.room_id:
                missing.append(found)
        known = await self._events.received_status(e.event_id for e in missing)
        for found in sorted(missing, key=lambda e: e.depth):
            if known.get(found.event_id, ("outlier",))[0] != "outlier":
                continue
            try:
                await self._authorise_and_store(origin, room_version, found)
            except (MatrixError, FederationError) as e:  # the event we were sent bridges the gap with state
                logger.info("missing event %s not stored: %s", found.event_id, e)

    # -- /messages reaching the start of what we hold ----------------------------------------------

    async def backfill(self, room_id: str, limit: int) -> int:
        """Ask the room's other servers for up to `limit` events before the oldest we hold, and store
        them as history; how many were stored (0 when we hold the room from its create event)."""
        room = await self._rooms.get_room(room_id)
        oldest = await self._events.oldest_event(room_id)
        if room is None or oldest is None or oldest[1] == "m.room.create":
            return 0
        room_version = KNOWN_ROOM_VERSIONS[room.room_version]
        members = await self._rooms.member_event_ids(room_id, "join")
        servers = sorted({s for user_id in members if (s := server_of(user_id)) and s != self._server_name})
        for server in servers[:BACKFILL_SERVERS]:
            path = f"/_matrix/federation/v1/backfill/{_q(room_id)}"
            try:
                answer = await self._client.get_json(server, path, args={"v": [oldest[0]], "limit": str(limit)})
            except FederationError as e:
                logger.info("backfill of %s from %s failed: %s", room_id, server, e)
                continue
            stored = await self._take_backfill(server, room_version, room_id, answer)
            if stored:
                return stored
        return 0

    async def _take_backfill(self, server: str, room_version: RoomVersion, room_id: str, answer: Any) -> int:
        events: list[Event] = []
        for pdu in answer.get("pdus", []) if isinstance(answer, Mapping) else []:
            try:
                event = await self.check_pdu(room_version, pdu)
            except MatrixError:
                continue
            if event.room_id == room_id:
                events.append(event)
        stored = 0
        async with self._sender.room_lock(room_id):
            known = await self._events.received_status(e.event_id for e in events)
            for event in sorted(events, key=lambda e: e.depth):  # each on the history before it
                if event.event_id in known and known[event.event_id][0] != "outlier":
                    continue
                try:
                    if await self._authorise_and_store(server, room_version, event, backfilled=True) is None:
                        stored += 1
                except (MatrixError, FederationError) as e:
                    logger.info("backfilled event %s not stored: %s", event.event_id, e)
        return stored

    async def _authorise_and_store(
        self, origin: str, room_version: RoomVersion, event: Event, backfilled: bool = False
    ) -> str | None:
        base_group, before = await self._state_before(origin, room_version, event)
        auth = await self._load_auth_events(origin, room_version, event)
        rejected = await self._rejected(event.auth_event_ids)
        try:
            signed_by = await self._signed_by(event)
            auth_state = check_auth_events(
                room_version, event, auth, rejected=rejected, create_event=await self._create_event(event)
            )
            check_auth_rules(room_version, event, auth_state, is_signed_by=signed_by)
            needed = {k: before[k] for k in auth_types_of(event) if k in before}
            loaded = await self._events.get_events(needed.values())
            state_auth = {k: loaded[v] for k, v in needed.items() if v in loaded}
            check_auth_rules(room_version, event, state_auth, is_signed_by=signed_by)
        except AuthError as e:
            await self._events.store_outliers([event], {event.event_id: str(e) or "auth failed"})
            return f"Rejected: {e}"
        if backfilled:  # history: neither soft-failed against today's state nor changing it
            await self._events.persist_received(event, *await self._as_delta(base_group, before), backfilled=True)
            return None
        soft_failed = not await self._passes_current_state(room_version, event)
        current = None if soft_failed else await self._current_state_after(room_version, event, before)
        base_group, delta = await self._as_delta(base_group, before)
        push = self._sender.push
        actions = [] if soft_failed or push is None else await push.actions_for(room_version, event, state_auth)
        persisted = await self._events.persist_received(
            event, base_group, delta, soft_failed=soft_failed, current_state=current, push_actions=actions
        )
        if persisted is not None:  # local clients see it as they see our own events
            if actions and self._sender.pushed is not None:
                self._sender.pushed(actions)
            await self._sender.persisted(event.room_id, [persisted])
        return None

    async def _as_delta(
        self, base_group: int | None, state: dict[StateKey, str]
    ) -> tuple[int | None, dict[StateKey, str]]:
        """`state` as (group, what differs from it) for storage."""
        full = await self._state.get_state_ids(base_group) if base_group is not None else {}
        return base_group, {k: v for k, v in state.items() if full.get(k) != v}

    async def _signed_by(self, event: Event) -> SignatureCheck:
        """The auth rules ask for the signature of a restricted join's authorising server: fetch its keys."""
        authoriser = event.content.get("join_authorised_via_users_server") if event.membership == "join" else None
        server = server_of(authoriser) if isinstance(authoriser, str) else None
        if server is None:
            return _trust_checked
        keys = await self._key_ring.get_keys(server, [], 0)
        known = {(server, key_id): ServerVerifyKey(key, _FAR_FUTURE) for key_id, key in keys.items()}
        return signature_check(lambda s, key_id: known.get((s, key_id)))

    async def _create_event(self, event: Event) -> Event | None:
        """v12: the create event is named by the room id rather than cited."""
        if not event.room_version.room_id_is_create_event_id or event.type == "m.room.create":
            return None
        return await self._events.get_event("$" + event.room_id[1:])

    # -- state -----------------------------------------------------------------------------------

    async def _state_before(
        self, origin: str, room_version: RoomVersion, event: Event
    ) -> tuple[int | None, dict[StateKey, str]]:
        """(a group to store against, the full state before `event`), resolving over its prev_events'
        states; for prevs we do not have, the state at them comes from `origin`."""
        if not event.prev_event_ids:  # the create event: the room begins here
            return None, {}
        status = await self._events.received_status(event.prev_event_ids)
        groups: list[int] = []
        fetched: list[dict[StateKey, str]] = []
        for prev in event.prev_event_ids:
            kind, group = status.get(prev, ("missing", None))
            if kind in ("timeline", "soft_failed") and group is not None:
                groups.append(group)
            elif kind != "rejected":  # a rejected prev adds nothing to the state
                fetched.append(await self._fetch_state_after(origin, room_version, event.room_id, prev))
        unique = list(dict.fromkeys(groups))
        if len(unique) == 1 and not fetched:
            return unique[0], await self._state.get_state_ids(unique[0])
        state_sets = [await self._state.get_state_ids(g) for g in unique] + fetched
        if not state_sets:
            raise MatrixError(400, "M_BAD_JSON", "None of the event's prev_events can be used")
        resolved = await self._resolve(room_version, state_sets)
        return (unique[0] if unique else None), resolved

    async def _resolve(
        self, room_version: RoomVersion, state_sets: list[dict[StateKey, str]], unstored: Iterable[Event] = ()
    ) -> dict[StateKey, str]:
        return await resolve_state_sets(self._events, room_version.identifier, state_sets, unstored)

    async def _fetch_state_after(
        self, origin: str, room_version: RoomVersion, room_id: str, event_id: str
    ) -> dict[StateKey, str]:
        """The state after an event we do not have: /state_ids at it (the state before it) plus itself."""
        path = f"/_matrix/federation/v1/state_ids/{_q(room_id)}?event_id={_q(event_id)}"
        answer = await self._client.get_json(origin, path)
        state_ids = list(answer.get("pdu_ids", []))
        auth_ids = list(answer.get("auth_chain_ids", []))
        await self._fetch_outliers(origin, room_version, room_id, [event_id, *state_ids, *auth_ids])
        loaded = await self._events.get_events([*state_ids, event_id])
        state = {(e.type, e.state_key): e.event_id for e in (loaded.get(i) for i in state_ids) if e and e.is_state()}
        prev = loaded.get(event_id)
        if prev is not None and prev.is_state():
            state[(prev.type, prev.state_key)] = prev.event_id
        return state

    async def _fetch_outliers(self, origin: str, room_version: RoomVersion, room_id: str, event_ids: list[str]) -> None:
        """Fetch and keep the events among `event_ids` we lack, each authorised against its own auth
        events (rejected ones are kept as such, never to be used)."""
        have = await self._events.received_status(event_ids)
        unknown = [i for i in dict.fromkeys(event_ids) if i not in have]
        if not unknown:
            return
        pdus: list[Any] = []
        if len(unknown) > MAX_FETCH_BY_ID:
            answer = await self._client.get_json(
                origin, f"/_matrix/federation/v1/state/{_q(room_id)}?event_id={_q(unknown[0])}"
            )
            pdus = [*answer.get("pdus", []), *answer.get("auth_chain", [])]
        wanted = set(unknown)
        checked: dict[str, Event] = {}
        for pdu in pdus:
            try:
                e = await self.check_pdu(room_version, pdu)
            except MatrixError:
                continue
            if e.event_id in wanted and e.room_id == room_id:
                checked[e.event_id] = e
        for event_id in wanted - checked.keys():
            answer = await self._client.get_json(origin, f"/_matrix/federation/v1/event/{_q(event_id)}")
            for pdu in answer.get("pdus", [])[:1]:
                e = await self.check_pdu(room_version, pdu)
                if e.event_id == event_id and e.room_id == room_id:
                    checked[e.event_id] = e
        rejected: dict[str, str] = {}
        held = await self._events.get_events(a for e in checked.values() for a in e.auth_event_ids)
        pool = {**held, **checked}
        for e in sorted(checked.values(), key=lambda e: e.depth):  # auth events come before what they authorise
            try:
                auth = [pool[a] for a in e.auth_event_ids if a in pool]
                auth_state = check_auth_events(
                    room_version, e, auth, rejected=rejected, create_event=await self._create_event(e)
                )
                check_auth_rules(room_version, e, auth_state, is_signed_by=_trust_checked)
            except AuthError as err:
                rejected[e.event_id] = str(err) or "auth failed"
        await self._events.store_outliers(list(checked.values()), rejected)

    async def _load_auth_events(self, origin: str, room_version: RoomVersion, event: Event) -> list[Event]:
        found = await self._events.get_events(event.auth_event_ids)
        if len(found) < len(set(event.auth_event_ids)):
            await self._fetch_outliers(origin, room_version, event.room_id, list(event.auth_event_ids))
            found = await self._events.get_events(event.auth_event_ids)
        return list(found.values())

    async def _rejected(self, event_ids: Iterable[str]) -> set[str]:
        status = await self._events.received_status(event_ids)
        return {i for i, (kind, _) in status.items() if kind == "rejected"}

    async def _passes_current_state(self, room_version: RoomVersion, event: Event) -> bool:
        keys = auth_types_of(event)
        ids = {}
        for event_type, state_key in keys:
            event_id = await self._rooms.get_current_state_id(event.room_id, event_type, state_key)
            if event_id is not None:
                ids[(event_type, state_key)] = event_id
        loaded = await self._events.get_events(ids.values())
        current = {k: loaded[v] for k, v in ids.items() if v in loaded}
        try:
            check_auth_rules(room_version, event, current, is_signed_by=_trust_checked)
        except AuthError as e:
            logger.info("Soft-failing %s: %s", event.event_id, e)
            return False
        return True

    async def _current_state_after(
        self, room_version: RoomVersion, event: Event, before: dict[StateKey, str]
    ) -> dict[StateKey, str] | None:
        """The room's new current state when `event` does not simply extend every forward extremity;
        None when it does (then only its own entry changes)."""
        extremities = await self._events.get_forward_extremities(event.room_id)
        others = [e for e in extremities if e.event_id not in event.prev_event_ids]
        if not others:
            return None
        after = dict(before)
        if event.is_state():
            after[(event.type, event.state_key)] = event.event_id
        groups = dict.fromkeys(e.state_group for e in others)
        state_sets = [after] + [await self._state.get_state_ids(g) for g in groups]
        return await self._resolve(room_version, state_sets, [event])


def _trust_checked(event: Event, server_name: str) -> bool:
    """Every event reaching the auth rules here had its required signatures checked on receipt."""
    return True


def _claimed_id(room_version: RoomVersion, pdu: Any) -> str | None:
    """The id a PDU that failed its checks stands for, to report on; None if it has none."""
    if not isinstance(pdu, Mapping):
        return None
    if room_version.event_id_in_pdu:
        event_id = pdu.get("event_id")
        return event_id if isinstance(event_id, str) else None
    try:
        return compute_event_id(room_version, pdu)
    except Exception:  # noqa: BLE001 - too malformed to hash: nothing to report it under
        return None


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")
