"""Presence (client-server API, "Presence"): online, unavailable or offline, a status message, and how
long ago the user was last active.

The live state is held in memory. A sync or a sent message only touches memory (when the user was last
active, whether a sync is open); the database is written, and the syncs of users sharing a room woken,
only when what others see changes: the state, the status message, or `currently_active`. Timers on the
reactor make the timed changes, one per user at its next deadline:

- no activity (a message sent, PUT presence online) for `idle_timeout`: online -> unavailable;
- no sync open and none ended for `sync_timeout` (a PUT counts as one): -> offline;
- no activity for a minute: `currently_active` goes false (Synapse's granularity).

Every visible change takes the next position of the presence stream (a sync token field). Positions are
kept with the rows, so after a restart the stream goes on from the largest one stored.

Over federation (server-server API, "Presence"): our users' visible changes are gathered for a moment and
sent as one m.presence EDU per server sharing a room with them. Other servers' m.presence EDUs update
their users' state here, in memory only (their server sends the timed changes); such a change takes the
next position like a local one. Only users sharing a room with one of ours are taken. A join that makes
servers newly share a room sends them the presence of ours there. As in Synapse, a
server sends its users who are not offline again every 25 minutes, and another server's user heard
nothing of for 30 minutes goes offline here (their server may have gone down without saying so).
"""

import dataclasses
import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer

from homeserver.core.errors import MatrixError
from homeserver.core.event_signing import server_of
from homeserver.core.requester import Requester
from homeserver.handlers.notifier import Notifier
from homeserver.http.fragments import Raw, json_items
from homeserver.storage.accounts import AccountStore
from homeserver.storage.presence import PresenceRow, PresenceStore
from homeserver.storage.rooms import RoomStore

logger = logging.getLogger(__name__)

ONLINE, UNAVAILABLE, OFFLINE = "online", "unavailable", "offline"
STATES = (ONLINE, UNAVAILABLE, OFFLINE)
ACTIVE_WINDOW_MS = 60_000
FEDERATION_BATCH_S = 0.2  # changes gathered this long go to a server in one EDU
STORE_BATCH_S = 0.2  # changes gathered this long are written in one transaction
FEDERATION_PING_S = 25 * 60  # our users not offline are sent again this often
FEDERATION_TIMEOUT_S = 30 * 60  # another server's user not heard of this long goes offline


@dataclass(frozen=True)
class Timeouts:
    idle_ms: int = 300_000
    sync_ms: int = 30_000

    @property
    def active_ms(self) -> int:
        return min(ACTIVE_WINDOW_MS, self.idle_ms)


@dataclass(frozen=True)
class Presence:
    """What others see of a user (last_active_ts aside, which moves without being a change)."""

    state: str = OFFLINE
    status_msg: str | None = None
    currently_active: bool = False

    def content(self, last_active_ts: int, now_ms: int) -> dict[str, Any]:
        """The m.presence content, shaped as Synapse shapes it: currently_active only when online."""
        content: dict[str, Any] = {"presence": self.state}
        if last_active_ts:
            content["last_active_ago"] = max(0, now_ms - last_active_ts)
        if self.status_msg:
            content["status_msg"] = self.status_msg
        if self.state == ONLINE:
            content["currently_active"] = self.currently_active
        return content


@dataclass
class UserState:
    """One user's presence and what drives it."""

    seen: Presence = Presence()
    position: int = 0  # of the last visible change
    last_active_ts: int = 0
    syncs: int = 0  # syncs open now that keep the user online
    last_sync_ts: int = 0  # when the last one ended (or a PUT came)
    timer: Any = None  # the DelayedCall of the next deadline


def timed_out(user: UserState, now_ms: int, t: Timeouts) -> Presence:
    """The presence `user` has at `now_ms` if nothing happens meanwhile: the state machine's timed part."""
    seen = user.seen
    if seen.state != OFFLINE and user.syncs == 0 and now_ms - user.last_sync_ts >= t.sync_ms:
        return dataclasses.replace(seen, state=OFFLINE, currently_active=False)
    if seen.state == ONLINE and now_ms - user.last_active_ts >= t.idle_ms:
        return dataclasses.replace(seen, state=UNAVAILABLE, currently_active=False)
    if seen.currently_active and now_ms - user.last_active_ts >= t.active_ms:
        return dataclasses.replace(seen, currently_active=False)
    return seen


def next_deadline(user: UserState, t: Timeouts) -> int | None:
    """When `timed_out` may next give something else, or None if only an action can change it."""
    deadlines = []
    if user.seen.state != OFFLINE and user.syncs == 0:
        deadlines.append(user.last_sync_ts + t.sync_ms)
    if user.seen.state == ONLINE:
        deadlines.append(user.last_active_ts + t.idle_ms)
    if user.seen.currently_active:
        deadlines.append(user.last_active_ts + t.active_ms)
    return min(deadlines) if deadlines else None


class PresenceHandler:
    def __init__(
        self,
        reactor: Any,
        store: PresenceStore,
        rooms: RoomStore,
        accounts: AccountStore,
        timeouts: Timeouts,
        enabled: bool = True,
        notifier: Notifier | None = None,
        server_name: str = "",
    ) -> None:
        # Disabled, the handler only answers the endpoints; the app then wires it into neither sync nor
        # sends, and nothing is stored, timed or sent.
        self.enabled = enabled
        self._reactor = reactor
        self._accounts = accounts
        self._store = store
        self._rooms = rooms
        self._timeouts = timeouts
        self.notifier = notifier
        self._server_name = server_name
        # FederationSender.send_edu(destination, edu_type, content), set by the app when federating.
        self.federation: Callable[[str, str, dict], None] | None = None
        self._outgoing: set[str] = set()  # our users whose change is still to be sent to other servers
        self._flush: Any = None  # the DelayedCall that sends them
        self._unstored: dict[str, PresenceRow] = {}  # changes still to be written, the newest per user
        self._store_call: Any = None  # the DelayedCall that writes them
        self._position = 0
        # Every user who had a presence since the server started (or stored one), in the order of their
        # last change: a sync walks the latest changes from the end. Bounded by the local users.
        self._users: dict[str, UserState] = {}
        # user -> (key, their m.presence event, its JSON once a response needed it)
        self._event_cache: dict[str, tuple[tuple, dict[str, Any], Raw | None]] = {}

    def _now_ms(self) -> int:
        return int(self._reactor.seconds() * 1000)

    async def start(self) -> None:
        """Take up the stored presence. Nobody can have synced while the server was down: users shown
        online or unavailable get `sync_timeout` from now to sync again (clients reconnect within
        seconds) and go offline after it, as if their last sync ended now."""
        now = self._now_ms()
        for row in sorted(await self._store.load_all(), key=lambda r: r.stream_id):
            user = UserState(
                Presence(row.state, row.status_msg, row.currently_active), row.stream_id, row.last_active_ts, 0, now
            )
            self._users[row.user_id] = user
            self._position = max(self._position, row.stream_id)
            self._schedule(row.user_id, user)
        if self.federation is not None:
            self._reactor.callLater(FEDERATION_PING_S, self._ping)

    # -- what users do ---------------------------------------------------------------------------

    async def set_status(self, requester: Requester, user_id: str, state: str, status_msg: str | None) -> None:
        """PUT presence: only for oneself. Waits until the change is stored."""
        if user_id != requester.user_id:
            raise MatrixError(403, "M_FORBIDDEN", "You may only set your own presence.")
        if not self.enabled:
            # Success that changes nothing, as on Synapse: clients such as Element set presence when they
            # start and would show their user an error otherwise.
            return
        now = self._now_ms()
        user = self._user(user_id)
        user.last_sync_ts = now
        if state == ONLINE:
            user.last_active_ts = now
        row = self._apply(user_id, user, Presence(state, status_msg, state == ONLINE))
        if row is not None:
            await self._store.store(row)

    def user_active(self, user_id: str) -> None:
        """The user did something (sent an event): an idle user is online again. Someone who chose to be
        offline stays offline (a bot may send without showing up), but their last activity moves."""
        user = self._user(user_id)
        user.last_active_ts = self._now_ms()
        if user.seen.state != OFFLINE:
            self._apply_later(user_id, user, dataclasses.replace(user.seen, state=ONLINE, currently_active=True))

    def sync_started(self, user_id: str, set_presence: str) -> None:
        """A sync keeps its user from timing out; one from an offline user brings them to `set_presence`.
        It does not count as activity, so an idle client that keeps syncing stays unavailable.
        set_presence=offline leaves presence alone (the sync neither counts nor changes anything)."""
        if set_presence == OFFLINE:
            return
        user = self._user(user_id)
        user.syncs += 1
        if user.seen.state != OFFLINE:
            self._schedule(user_id, user)
            return
        if set_presence == ONLINE:
            user.last_active_ts = self._now_ms()
        self._apply_later(user_id, user, Presence(set_presence, user.seen.status_msg, set_presence == ONLINE))

    def sync_ended(self, user_id: str, set_presence: str) -> None:
        if set_presence == OFFLINE:
            return
        user = self._user(user_id)
        user.syncs = max(0, user.syncs - 1)
        user.last_sync_ts = self._now_ms()
        self._schedule(user_id, user)

    # -- what others see -------------------------------------------------------------------------

    async def get_status(self, requester: Requester, user_id: str) -> dict[str, Any]:
        """GET presence: one's own, or of a user sharing a room with the requester."""
        if not self.enabled:
            # Everyone is offline, as Synapse answers (200, so clients that poll show no error either).
            return Presence().content(0, 0)
        if server_of(user_id) == self._server_name and await self._accounts.get_user(user_id) is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown user")
        if user_id != requester.user_id and not await self._store.share_a_room(requester.user_id, user_id):
            raise MatrixError(403, "M_FORBIDDEN", "You do not share a room with this user.")
        user = self._users.get(user_id)
        if user is None:
            return Presence().content(0, 0)
        return user.seen.content(user.last_active_ts, self._now_ms())

    def presence_position(self) -> int:
        return self._position

    def events_for(
        self, user_id: str, after: int | None, upto: int, sharing: set[str], newcomers: Collection[str] = ()
    ) -> list[dict[str, Any]]:
        """The m.presence events a sync of `user_id` carries, given who shares a room with the user: on an
        initial sync (`after` None) everyone's who is not offline, the user's included; on an incremental
        one, of those who changed in (after, upto], and of `newcomers` (who came to share a room with
        the user since) unless offline. Memory only: no query here."""
        visible = sharing | {user_id}
        if after is None:
            return self.events(visible, include_offline=False)
        changed = self.changed_since(after, upto) & visible
        return self.events(changed, include_offline=True) + self.events(
            visible.intersection(newcomers) - changed, include_offline=False
        )

    def changed_since(self, after: int, upto: int) -> set[str]:
        """Users whose last visible change is at a position in (after, upto]: the newest first, so the
        walk stops at the first one not after `after`."""
        found: set[str] = set()
        for user_id in reversed(self._users):
            position = self._users[user_id].position
            if position <= after:
                break
            if position <= upto:
                found.add(user_id)
        return found

    def events(self, user_ids: Collection[str], include_offline: bool) -> list[dict[str, Any]]:
        """m.presence events of these users, in the order of their changes. An initial sync asks for everyone
        sharing a room (thousands in a big room) while few have a presence: the smaller side is walked."""
        now = self._now_ms()
        if len(user_ids) > len(self._users):
            found = [(u, user) for u, user in self._users.items() if u in user_ids]
        else:
            found = [(u, self._users[u]) for u in user_ids if u in self._users]
        found.sort(key=lambda item: item[1].position)
        return [self._event(u, user, now) for u, user in found if include_offline or user.seen.state != OFFLINE]

    def _event(self, user_id: str, user: UserState, now_ms: int) -> dict[str, Any]:
        """The user's m.presence event, built once per change and second (last_active_ago is to the second
        for everyone asking within it): a herd's initial syncs each carry hundreds of the same events."""
        key = (user.position, user.last_active_ts, now_ms // 1000)
        cached = self._event_cache.get(user_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        event = {"type": "m.presence", "sender": user_id, "content": user.seen.content(user.last_active_ts, now_ms)}
        self._event_cache[user_id] = (key, event, None)
        return event

    def as_json(self, events: list[dict[str, Any]]) -> list[Raw]:
        """These events (from events_for) as JSON text for a response, each serialized once like the event
        itself, instead of once for every sync that carries it."""
        out = []
        for event in events:
            cached = self._event_cache.get(event["sender"])
            if cached is None or cached[1] is not event:
                out.append(Raw(json_items([event])))
                continue
            if cached[2] is None:
                cached = self._event_cache[event["sender"]] = (cached[0], event, Raw(json_items([event])))
            out.append(cached[2])
        return out

    # -- the machinery ---------------------------------------------------------------------------

    def _user(self, user_id: str) -> UserState:
        user = self._users.get(user_id)
        if user is None:
            user = self._users[user_id] = UserState()
        return user

    def _tick(self, user_id: str) -> None:
        user = self._users[user_id]
        user.timer = None
        self._apply_later(user_id, user, timed_out(user, self._now_ms(), self._timeouts))

    def _schedule(self, user_id: str, user: UserState) -> None:
        """One timer per user, at its next deadline; moved rather than replaced (every sync moves it)."""
        deadline = next_deadline(user, self._timeouts)
        active = user.timer is not None and user.timer.active()
        if deadline is None:
            if active:
                user.timer.cancel()
            user.timer = None
            return
        delay = max(0, deadline - self._now_ms()) / 1000
        if active:
            user.timer.reset(delay)
        else:
            user.timer = self._reactor.callLater(delay, self._tick, user_id)

    def _change(self, user_id: str, user: UserState, new: Presence) -> bool:
        """Take `new` if others would see a difference: the next position, and the syncs of everyone
        sharing a room with the user woken."""
        if new == user.seen:
            return False
        user.seen = new
        self._position += 1
        user.position = self._position
        self._users[user_id] = self._users.pop(user_id)  # to the end: the order of changes
        self._wake(user_id)
        return True

    def _apply(self, user_id: str, user: UserState, new: Presence) -> PresenceRow | None:
        """`_change` for one of our users, with the row to store and the change queued for other servers.
        The timer follows in any case."""
        changed = self._change(user_id, user, new)
        self._schedule(user_id, user)
        if not changed:
            return None
        if self.federation is not None:
            self._send_soon([user_id])
        return PresenceRow(user_id, new.state, new.status_msg, user.last_active_ts, new.currently_active, user.position)

    # -- over federation ---------------------------------------------------------------------------

    def _send_soon(self, user_ids: Iterable[str]) -> None:
        self._outgoing.update(user_ids)
        if self._outgoing and (self._flush is None or not self._flush.active()):
            self._flush = self._reactor.callLater(FEDERATION_BATCH_S, lambda: self._track(self._send_out()))

    def members_joined(self, room_id: str, user_ids: list[str]) -> None:
        """Users joined a room: one of ours goes to every server sharing a room with them; another server's
        user brings that server the presence of our users in the room (it may have known none of them)."""
        if self.federation is None:
            return
        self._send_soon(u for u in user_ids if server_of(u) == self._server_name and u in self._users)
        servers = {server_of(u) for u in user_ids} - {self._server_name, None}
        if servers:
            self._track(self._send_room_to(room_id, servers))

    async def _send_room_to(self, room_id: str, servers: set[str | None]) -> None:
        assert self.federation is not None
        members = await self._rooms.member_event_ids(room_id)
        items = self._push_items(u for u in members if server_of(u) == self._server_name)
        items = [item for item in items if item["presence"] != OFFLINE]
        for server in sorted(s for s in servers if s):
            if items:
                self.federation(server, "m.presence", {"push": items})

    def _push_items(self, user_ids: Iterable[str]) -> list[dict[str, Any]]:
        """The m.presence push items of these users (those with a presence)."""
        now = self._now_ms()
        items = []
        for user_id in user_ids:
            user = self._users.get(user_id)
            if user is None:
                continue
            # The spec requires last_active_ago; a user never active is as long ago as can be.
            item = {"user_id": user_id, "last_active_ago": max(0, now - user.last_active_ts)}
            item.update(user.seen.content(user.last_active_ts, now))
            item["currently_active"] = user.seen.currently_active
            items.append(item)
        return items

    def _ping(self) -> None:
        """Our users who are not offline, sent again: other servers time out those they hear nothing of."""
        self._send_soon(
            u for u, user in self._users.items() if server_of(u) == self._server_name and user.seen.state != OFFLINE
        )
        self._reactor.callLater(FEDERATION_PING_S, self._ping)

    async def _send_out(self) -> None:
        """One m.presence EDU per server sharing a room with the users changed since the last one."""
        assert self.federation is not None
        users, self._outgoing = self._outgoing, set()
        items = self._push_items(sorted(users))
        # One query for the batch: a herd of our users coming online in rooms of our own costs next to nothing.
        remote = await self._rooms.remote_users_sharing_rooms([i["user_id"] for i in items], self._server_name)
        pushes: dict[str, list[dict[str, Any]]] = {}
        for item in items:
            for server in {server_of(u) for u in remote.get(item["user_id"], ())} - {self._server_name, None}:
                pushes.setdefault(server, []).append(item)
        for server, items in sorted(pushes.items()):
            self.federation(server, "m.presence", {"push": items})

    async def remote_update(self, origin: str, pushes: Iterable[Any]) -> None:
        """An m.presence EDU from `origin`: its users' presence, each as that server says it is now. Items
        that are malformed, of another server's users or of users sharing no room with ours are dropped."""
        now = self._now_ms()
        for item in pushes:
            if not isinstance(item, Mapping):
                continue
            user_id, state = item.get("user_id"), item.get("presence")
            if not isinstance(user_id, str) or server_of(user_id) != origin or state not in STATES:
                continue
            if user_id not in self._users and not await self._shares_with_ours(user_id):
                continue
            status_msg, ago = item.get("status_msg"), item.get("last_active_ago")
            user = self._user(user_id)
            if isinstance(ago, int) and not isinstance(ago, bool) and ago >= 0:
                user.last_active_ts = now - ago
            active = state == ONLINE and item.get("currently_active") is True
            self._change(user_id, user, Presence(state, status_msg if isinstance(status_msg, str) else None, active))
            self._remote_timeout(user_id, user)

    def _remote_timeout(self, user_id: str, user: UserState) -> None:
        """Another server's user goes offline here after FEDERATION_TIMEOUT_S without news of them."""
        if user.timer is not None and user.timer.active():
            user.timer.cancel()
        user.timer = None
        if user.seen.state != OFFLINE:
            offline = dataclasses.replace(user.seen, state=OFFLINE, currently_active=False)
            user.timer = self._reactor.callLater(FEDERATION_TIMEOUT_S, self._change, user_id, user, offline)

    async def _shares_with_ours(self, user_id: str) -> bool:
        return any(server_of(u) == self._server_name for u in await self._rooms.users_sharing_rooms(user_id))

    def _apply_later(self, user_id: str, user: UserState, new: Presence) -> None:
        """`_apply`, with the row stored in the background: rows gathered for STORE_BATCH_S go in one
        transaction (a herd of clients coming online is hundreds of changes within a second)."""
        row = self._apply(user_id, user, new)
        if row is None:
            return
        self._unstored[user_id] = row  # a later change of the same user replaces an unwritten one
        if self._store_call is None or not self._store_call.active():
            self._store_call = self._reactor.callLater(STORE_BATCH_S, lambda: self._track(self._store_unstored()))

    async def _store_unstored(self) -> None:
        rows, self._unstored = list(self._unstored.values()), {}
        await self._store.store_many(rows)

    def _wake(self, user_id: str) -> None:
        notifier = self.notifier
        if notifier is None or not notifier.waiting:
            return

        async def wake() -> None:
            notifier.notify_users({user_id} | await self._rooms.users_sharing_rooms(user_id))

        self._track(wake())

    def _track(self, work: Any) -> None:
        """Run `work` in the background, logging a failure (a timer or a sync has nobody to tell)."""
        defer.ensureDeferred(work).addErrback(lambda f: logger.error("presence update failed: %s", f.value))
