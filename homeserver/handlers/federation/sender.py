"""Outgoing federation transactions (`PUT /_matrix/federation/v1/send/{txnId}`), one queue per destination.

A destination's PDUs are not queued anywhere: it has a position in the events stream (stored), and its
next transaction is the next events after that position that concern it, read from the events table in
stream order, at most 50 PDUs and 100 EDUs (the spec's caps). So a destination that was down gets
everything it missed, in order, when it comes back, and a restart loses nothing. (Synapse instead sends
only the latest missed event per room and leaves the gap to the receiver's /get_missing_events; sending
everything in order is simpler to reason about and does not depend on the peer fetching.)

An event concerns a destination when the event is ours and, in the state after it, one of the
destination's users is joined, or the event changes the membership of one of its users (an invite, a kick).
Another server's join, leave or knock that came to us through send_join/send_leave/send_knock is ours to
send on too (the joining server knows no one else in the room yet), to every server but its origin; which
events those are is held in memory, so one still unsent at a restart reaches the others only through their
own /get_missing_events. Events that came through /send are never sent on: their origin sends them to all.

At most one transaction is in flight per destination; work arriving meanwhile goes in the next one. A
failed transaction (no answer, or not 200) backs the destination off: min_retry_interval, doubling to
max_retry_interval, stored so a restart does not hammer a dead server; a success resets it. A per-PDU
error in the answer is logged and does not hold the queue.

EDUs: to-device messages and device list updates are stored until a transaction carrying them is
accepted (losing them breaks end-to-end encryption); typing, receipts and presence are held in memory,
a bounded number per destination, newest kept.
"""

import itertools
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet import defer

from homeserver.storage.events import EventStore, PersistedEvent
from homeserver.storage.federation_outbox import EventRow, FederationOutboxStore, OutboxEdu, server_of
from homeserver.storage.rooms import RoomStore
from homeserver.storage.state import StateStore

logger = logging.getLogger(__name__)

MAX_PDUS = 50  # per transaction, the spec's cap
MAX_EDUS = 100
SCAN_BATCH = 200  # event rows read at once while looking for a destination's next PDUs
MAX_SCAN_ROWS = 2000  # rows looked at for one transaction; past that the position moves on and the next turn goes on
MAX_EPHEMERAL_EDUS = 1000  # in-memory EDUs kept per destination (oldest dropped)
MAX_RELAYED = 10_000  # remote membership events remembered as ours to send on (oldest forgotten)


class Transport(Protocol):
    async def send_transaction(
        self, destination: str, txn_id: str, origin_server_ts: int, pdus: list[dict], edus: list[dict]
    ) -> dict: ...


@dataclass(frozen=True)
class RetryPolicy:
    min_interval_ms: int
    max_interval_ms: int

    def next_interval(self, previous_ms: int) -> int:
        """The wait after a failure: the minimum first, then doubling up to the cap."""
        if previous_ms <= 0:
            return self.min_interval_ms
        return min(max(previous_ms * 2, self.min_interval_ms), self.max_interval_ms)


@dataclass
class _Queue:
    destination: str
    position: int | None = None  # last_successful_stream; None until read or derived
    retry_last_ts: int = 0
    retry_interval_ms: int = 0
    failure_count: int = 0
    head: int = 0  # the newest stream ordering known to concern it (for the pending-PDU figure)
    rooms: dict[str, list[str]] | None = None  # rooms_of_destination, valid for events up to rooms_upto
    rooms_upto: int = 0
    durable_edus: int = 0  # stored EDUs waiting (kept in step with the table, for the figures)
    ephemeral: dict[Any, dict] = field(default_factory=dict)  # key -> EDU, oldest first
    active: bool = False  # its transmission loop runs
    running: defer.Deferred | None = None  # that loop, while it waits on something
    in_flight: bool = False
    wanted: bool = False  # new work arrived since the loop last looked
    timer: Any = None  # the DelayedCall that ends the backoff


@dataclass
class _Transaction:
    txn_id: str
    pdus: list[dict]
    position: int  # where the destination is once this is accepted
    durable: list[OutboxEdu]
    ephemeral: dict[Any, dict]


class FederationSender:
    def __init__(
        self,
        reactor: Any,
        server_name: str,
        store: FederationOutboxStore,
        events: EventStore,
        state: StateStore,
        rooms: RoomStore,
        transport: Transport,
        retry: RetryPolicy,
    ) -> None:
        self._reactor = reactor
        self.server_name = server_name
        self._store = store
        self._events = events
        self._state = state
        self._rooms = rooms
        self._transport = transport
        self._retry = retry
        self._queues: dict[str, _Queue] = {}
        # Transaction ids are unique per destination across restarts: this process's start time, then a counter.
        self._txn_ids = (f"{int(reactor.seconds() * 1000)}.{n}" for n in itertools.count(1))
        self._edu_keys = itertools.count()
        self._relayed: OrderedDict[str, str] = OrderedDict()  # event id -> the server it came from
        # Told (room id, user ids) of every stored join, ours or not: presence for servers newly sharing a room.
        self.joined: Callable[[str, list[str]], None] | None = None
        self._stopping = False
        self.sent = 0  # transactions accepted
        self.failed = 0  # transactions that failed

    def _now_ms(self) -> int:
        return int(self._reactor.seconds() * 1000)

    # -- starting and stopping -----------------------------------------------------------------

    async def start(self) -> None:
        """Load every destination's position and backoff, and catch up those with work: the stored ones and
        the servers of every remote member joined now (an event may have been stored just before a crash)."""
        for record in await self._store.all_destinations():
            q = self._queue(record.destination)
            q.position = record.last_successful_stream
            q.retry_last_ts, q.retry_interval_ms = record.retry_last_ts, record.retry_interval_ms
            q.failure_count = record.failure_count
        for destination, count in (await self._store.pending_edu_counts()).items():
            self._queue(destination).durable_edus = count
        head = await self._events.current_stream_ordering()
        destinations = set(self._queues) | await self._store.servers_with_joined_members()
        for destination in sorted(destinations - {self.server_name}):
            q = self._queue(destination)
            q.head = max(q.head, head)
            self._wake(q)

    async def stop(self, timeout_s: float) -> None:
        """Start no new transaction; wait up to `timeout_s` for those in flight. What is unsent stays stored
        (ephemeral EDUs excepted)."""
        self._stopping = True
        for q in self._queues.values():
            if q.timer is not None and q.timer.active():
                q.timer.cancel()
        running = [q.running for q in self._queues.values() if q.running is not None]
        if not running:
            return
        waiting = defer.DeferredList(running, consumeErrors=True)
        waiting.addTimeout(timeout_s, self._reactor)
        try:
            await waiting
        except defer.TimeoutError:
            logger.warning("federation: %d transactions still in flight at shutdown", len(running))

    # -- what is sent ---------------------------------------------------------------------------

    def events_persisted(self, room_id: str, persisted: Sequence[PersistedEvent]) -> None:
        """Called once events are stored: wake the queues of the servers they concern. Never fails the caller."""
        joins = [
            p.event.state_key for p in persisted if p.event.type == "m.room.member" and p.event.membership == "join"
        ]
        if joins and self.joined is not None and not self._stopping:
            self.joined(room_id, [user_id for user_id in joins if user_id])
        ours = [p for p in persisted if server_of(p.event.sender) == self.server_name]
        if not ours or self._stopping:
            return
        call = defer.ensureDeferred(self._route(room_id, ours))
        call.addErrback(lambda f: logger.error("federation: routing events of %s failed: %s", room_id, f.value))

    def relay_persisted(self, origin: str, room_id: str, persisted: Sequence[PersistedEvent]) -> None:
        """Another server's membership event, received by us as the room's resident server and stored: send
        it on to the room's other servers (not back to `origin`)."""
        if self._stopping:
            return
        for p in persisted:
            self._relayed[p.event.event_id] = origin
        while len(self._relayed) > MAX_RELAYED:
            self._relayed.popitem(last=False)
        call = defer.ensureDeferred(self._route(room_id, list(persisted)))
        call.addErrback(lambda f: logger.error("federation: relaying events of %s failed: %s", room_id, f.value))

    async def _route(self, room_id: str, persisted: list[PersistedEvent]) -> None:
        destinations = await self.room_servers(room_id)
        for p in persisted:
            if p.event.type == "m.room.member" and p.event.state_key:
                destinations.add(server_of(p.event.state_key))
        head = max(p.stream_ordering for p in persisted)
        # Our user joining a room through another server brings that room's members with no event of theirs
        # in our timeline: the kept room lists cannot see it, so they are read again.
        joined = any(p.event.type == "m.room.member" and p.event.membership == "join" for p in persisted)
        for destination in destinations - {self.server_name}:
            q = self._queue(destination)
            if joined:
                q.rooms = None
            q.head = max(q.head, head)
            self._wake(q)

    async def room_servers(self, room_id: str) -> set[str]:
        """The other servers with a user joined to the room now."""
        members = await self._rooms.member_event_ids(room_id)
        return {server_of(user_id) for user_id in members} - {self.server_name}

    def send_edu(self, destination: str, edu_type: str, content: dict, key: Any = None) -> None:
        """Send an ephemeral EDU (typing, receipt, presence), held in memory only. A later EDU with the same
        `key` replaces one not yet sent (a typing change for the same user and room)."""
        if destination == self.server_name or self._stopping:
            return
        q = self._queue(destination)
        key = (edu_type, key) if key is not None else ("unique", next(self._edu_keys))
        q.ephemeral.pop(key, None)
        q.ephemeral[key] = {"edu_type": edu_type, "content": content}
        while len(q.ephemeral) > MAX_EPHEMERAL_EDUS:
            q.ephemeral.pop(next(iter(q.ephemeral)))
        self._wake(q)

    def typing_changed(self, room_id: str, user_id: str, typing: bool) -> None:
        """A local user started or stopped typing: an m.typing EDU to the room's other servers."""
        if server_of(user_id) != self.server_name:
            return
        content = {"room_id": room_id, "user_id": user_id, "typing": typing}
        call = defer.ensureDeferred(self.send_room_edu(room_id, "m.typing", content, (room_id, user_id)))
        call.addErrback(lambda f: logger.error("federation: typing in %s not queued: %s", room_id, f.value))

    async def send_room_edu(self, room_id: str, edu_type: str, content: dict, key: Any = None) -> None:
        """An ephemeral EDU to every other server in the room."""
        for destination in sorted(await self.room_servers(room_id)):
            self.send_edu(destination, edu_type, content, key)

    async def send_durable_edus(self, edus: Iterable[tuple[str, str, dict]]) -> None:
        """Store (destination, edu type, content) EDUs, kept until a destination accepts them (to-device
        messages, device list updates)."""
        rows = [edu for edu in edus if edu[0] != self.server_name]
        await self._store.add_edus(rows)
        self.durable_edus_stored(edu[0] for edu in rows)

    def durable_edus_stored(self, destinations: Iterable[str]) -> None:
        """EDUs were stored for these destinations (one name per EDU), by us or inside another write."""
        names = [name for name in destinations if name != self.server_name]
        for destination in names:
            self._queue(destination).durable_edus += 1
        for destination in dict.fromkeys(names):
            self._wake(self._queues[destination])

    # -- the queues ----------------------------------------------------------------------------

    def _queue(self, destination: str) -> _Queue:
        q = self._queues.get(destination)
        if q is None:
            q = self._queues[destination] = _Queue(destination)
        return q

    def _backoff_left_ms(self, q: _Queue) -> int:
        return max(0, q.retry_last_ts + q.retry_interval_ms - self._now_ms()) if q.retry_interval_ms else 0

    def _wake(self, q: _Queue) -> None:
        q.wanted = True
        if self._stopping or q.active:
            return  # a running loop looks again before it stops
        left = self._backoff_left_ms(q)
        if left:
            if q.timer is None or not q.timer.active():
                q.timer = self._reactor.callLater(left / 1000, self._wake, q)
            return
        q.active = True
        running = defer.ensureDeferred(self._transmit(q))
        if q.active:  # not finished at once (it always waits when the database runs on threads)
            q.running = running

    async def _transmit(self, q: _Queue) -> None:
        """Send transactions to one destination until it has nothing left or fails."""
        try:
            while not self._stopping:
                q.wanted = False
                txn = await self._next_transaction(q)
                if txn is None:
                    if q.wanted:
                        continue
                    break
                if self._stopping:  # draining: what was read stays stored, for the next start
                    break
                if not await self._send(q, txn):
                    break
        except Exception:
            logger.exception("federation: the queue of %s failed; retrying after the minimum interval", q.destination)
            q.timer = self._reactor.callLater(self._retry.min_interval_ms / 1000, self._wake, q)
        finally:
            q.active, q.running = False, None
        if q.wanted and not self._stopping and not self._backoff_left_ms(q):
            self._wake(q)

    async def _send(self, q: _Queue, txn: _Transaction) -> bool:
        edus = [{"edu_type": e.edu_type, "content": e.content} for e in txn.durable] + list(txn.ephemeral.values())
        q.in_flight = True
        try:
            answer = await self._transport.send_transaction(q.destination, txn.txn_id, self._now_ms(), txn.pdus, edus)
        except Exception as e:
            q.in_flight = False
            await self._failed(q, txn, e)
            return False
        q.in_flight = False
        self.sent += 1
        for event_id, result in (answer.get("pdus") or {}).items() if isinstance(answer, dict) else ():
            if isinstance(result, dict) and result.get("error"):
                logger.warning("federation: %s refused %s: %s", q.destination, event_id, result["error"])
        edus_upto = txn.durable[-1].stream_id if txn.durable else None
        await self._store.record_success(q.destination, txn.position, edus_upto)
        q.position = txn.position
        q.durable_edus = max(0, q.durable_edus - len(txn.durable))
        q.retry_last_ts = q.retry_interval_ms = q.failure_count = 0
        return True

    async def _failed(self, q: _Queue, txn: _Transaction, error: Exception) -> None:
        self.failed += 1
        # Unsent ephemeral EDUs go back, unless a newer one with the same key arrived meanwhile.
        for key, edu in txn.ephemeral.items():
            q.ephemeral.setdefault(key, edu)
        q.retry_interval_ms = self._retry.next_interval(q.retry_interval_ms)
        q.retry_last_ts = self._now_ms()
        assert q.position is not None
        q.failure_count = await self._store.record_failure(
            q.destination, q.position, q.retry_last_ts, q.retry_interval_ms
        )
        logger.info(
            "federation: transaction %s to %s failed (%s); retrying in %ds",
            txn.txn_id,
            q.destination,
            error,
            q.retry_interval_ms // 1000,
        )
        q.wanted = True
        q.timer = self._reactor.callLater(q.retry_interval_ms / 1000, self._wake, q)

    async def _next_transaction(self, q: _Queue) -> _Transaction | None:
        pdus, position = await self._next_pdus(q)
        durable = await self._store.pending_edus(q.destination, MAX_EDUS)
        keys = list(q.ephemeral)[: MAX_EDUS - len(durable)]
        ephemeral = {key: q.ephemeral.pop(key) for key in keys}
        assert q.position is not None
        if not pdus and not durable and not ephemeral:
            if position > q.position:  # events that did not concern it: move on without a transaction
                await self._store.set_position(q.destination, position)
                q.position = position
            return None
        return _Transaction(next(self._txn_ids), pdus, position, durable, ephemeral)

    async def _next_pdus(self, q: _Queue) -> tuple[list[dict], int]:
        """The destination's next PDUs (at most MAX_PDUS, in stream order) and the position after them."""
        upto = await self._events.current_stream_ordering()  # read first: the rooms below are at least as new
        if q.position is None:
            # Never sent to: nothing before its users' first membership event can concern it.
            first = await self._store.first_membership_stream(q.destination)
            q.position = first - 1 if first is not None else upto
        after = q.position
        rooms = await self._rooms_of(q, after, upto)
        chosen: list[str] = []
        scanned = 0
        while after < upto and len(chosen) < MAX_PDUS and scanned < MAX_SCAN_ROWS:
            rows = await self._store.event_rows(list(rooms), after, upto, SCAN_BATCH)
            scanned += len(rows)
            concerning = await self._concerning(q.destination, rooms, rows)
            for row in rows:
                after = row.stream_ordering
                if row.event_id in concerning:
                    chosen.append(row.event_id)
                    if len(chosen) == MAX_PDUS:
                        break
            else:
                if len(rows) < SCAN_BATCH:
                    after = upto  # every row up to `upto` was looked at
        found = await self._events.get_events(chosen)
        return [found[event_id].get_pdu_json() for event_id in chosen if event_id in found], after

    async def _rooms_of(self, q: _Queue, after: int, upto: int) -> dict[str, list[str]]:
        """The rooms whose events after `after` (up to `upto`) may concern the destination. Kept between
        transactions (finding them scans the membership table) while none of its users' memberships changed."""
        if q.rooms is not None:
            changed = await self._store.members_changed(q.rooms_upto, upto)
            if all(server_of(user_id) != q.destination for user_id in changed):
                q.rooms_upto = max(q.rooms_upto, upto)
                return q.rooms
        # Read after `upto`: it sees at least every membership change up to there.
        q.rooms = await self._store.rooms_of_destination(q.destination, after)
        q.rooms_upto = upto
        return q.rooms

    async def _concerning(self, destination: str, rooms: dict[str, list[str]], rows: list[EventRow]) -> set[str]:
        """The ids among `rows` of our events that concern `destination`."""
        joined_at: dict[int, bool] = {}  # state group -> whether one of its users is joined there
        out = set()
        for row in rows:
            # Other servers send their own events; one we relay goes everywhere but where it came from.
            if (
                server_of(row.sender) != self.server_name
                and self._relayed.get(row.event_id, destination) == destination
            ):
                continue
            if row.type == "m.room.member" and row.state_key and server_of(row.state_key) == destination:
                out.add(row.event_id)
                continue
            if row.state_group not in joined_at:
                keys = [("m.room.member", user_id) for user_id in rooms[row.room_id]]
                ids = await self._state.get_state_ids(row.state_group, keys)
                memberships = await self._store.memberships_of(list(ids.values()))
                joined_at[row.state_group] = "join" in memberships.values()
            if joined_at[row.state_group]:
                out.add(row.event_id)
        return out

    # -- figures --------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Per destination: PDUs pending (as a stream distance), EDUs pending, in flight, failures, backoff."""
        destinations = {}
        for name, q in sorted(self._queues.items()):
            destinations[name] = {
                "pending_pdus_stream_distance": max(0, q.head - q.position) if q.position is not None else 0,
                "pending_edus": q.durable_edus + len(q.ephemeral),
                "in_flight": q.in_flight,
                "failure_count": q.failure_count,
                "backoff_ms": self._backoff_left_ms(q),
                "retry_interval_ms": q.retry_interval_ms,
            }
        return {
            "destinations": destinations,
            "in_flight": sum(q.in_flight for q in self._queues.values()),
            "backing_off": sum(bool(self._backoff_left_ms(q)) for q in self._queues.values()),
            "transactions_sent": self.sent,
            "transactions_failed": self.failed,
        }


class ClientTransport:
    """`send_transaction` over the federation client's signed requests."""

    def __init__(self, client: Any, server_name: str) -> None:
        self._client = client
        self._server_name = server_name

    async def send_transaction(
        self, destination: str, txn_id: str, origin_server_ts: int, pdus: list[dict], edus: list[dict]
    ) -> dict:
        body = {"origin": self._server_name, "origin_server_ts": origin_server_ts, "pdus": pdus, "edus": edus}
        return await self._client.put_json(destination, f"/_matrix/federation/v1/send/{txn_id}", body)
