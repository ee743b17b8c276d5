"""Joins, leaves, knocks and invites across servers (server-server API: "Joining Rooms", "Leaving Rooms",
"Knocking on rooms", "Inviting to a Room"), on both sides: as the resident server that holds a room
another server's user joins, leaves, knocks on or is invited to, and as the server of our own user who
does so elsewhere.

Remote events are checked (format, content hash, signatures with keys from the key ring, the auth rules)
before anything is stored; a membership event is stored in one transaction with the state it changes.
"""

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import quote

from signedjson.types import SigningKey

from homeserver.core.auth import AuthError
from homeserver.core.errors import MatrixError
from homeserver.core.event_auth import (
    auth_types_for_event,
    check_auth,
    check_auth_events,
    check_auth_rules,
    signatures_verified_on_receipt,
)
from homeserver.core.event_builder import random_event_id
from homeserver.core.event_signing import add_hashes_and_signatures, server_of, sign_event
from homeserver.core.events import Event
from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion
from homeserver.handlers.room_events import MAX_PREV_EVENTS, RoomEventSender
from homeserver.handlers.sync import STRIPPED_STATE_TYPES
from homeserver.handlers.sync_rooms import HERO_COUNT
from homeserver.http.federation_client import FederationClient, FederationError, HttpResponseError
from homeserver.storage.events import EventStore, NewRoom, PendingMembership, PersistedEvent, ResolvedState
from homeserver.storage.rooms import RoomStore
from homeserver.storage.state import StateKey, StateStore

MEMBER = "m.room.member"
CREATE = "m.room.create"
FEDERATION_V1 = "/_matrix/federation/v1"
FEDERATION_V2 = "/_matrix/federation/v2"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _q(segment: str) -> str:
    return quote(segment, safe="")


class RemoteMembership:
    def __init__(
        self,
        server_name: str,
        signing_key: SigningKey,
        sender: RoomEventSender,
        events: EventStore,
        state: StateStore,
        rooms: RoomStore,
        client: FederationClient,
        check_pdu: Callable[[RoomVersion, Any], Awaitable[Event]],
    ) -> None:
        self.server_name = server_name
        self._signing_key = signing_key
        self._sender = sender
        self._events = events
        self._state = state
        self._rooms = rooms
        self._client = client
        # A received PDU as an event: format, signatures (keys fetched), content hash (EventIntake.check_pdu).
        self.check_pdu = check_pdu
        # For a restricted room, the local member who vouches for a user's join (set by the app:
        # MembershipHandler.restricted_join_authoriser).
        self.restricted_join_authoriser: Callable[[str, str], Awaitable[str | None]] | None = None
        # Sends a membership event we took in as the resident server on to the room's other servers
        # (FederationSender.relay_persisted(origin, room_id, persisted); set by the app).
        self.relay: Callable[[str, str, list[PersistedEvent]], None] | None = None

    # -- checking received events ----------------------------------------------------------------

    # -- resident side: another server's user joins or leaves our room -----------------------------

    async def resident_room(self, room_id: str) -> RoomVersion:
        """The version of a room we hold and one of our users is in: 404 M_NOT_FOUND otherwise (we cannot
        vouch for the state of a room we only know from outside)."""
        room = await self._rooms.get_room(room_id)
        if room is None or not any(
            server_of(user) == self.server_name for user in await self._rooms.member_event_ids(room_id)
        ):
            raise MatrixError(404, "M_NOT_FOUND", "This server is not in that room")
        return KNOWN_ROOM_VERSIONS[room.room_version]

    async def make_membership(
        self, origin: str, room_id: str, user_id: str, membership: str, versions: list[str] | None
    ) -> dict[str, Any]:
        """The make_join / make_leave template: the event the user's server completes and signs."""
        if server_of(user_id) != origin:
            raise MatrixError(403, "M_FORBIDDEN", "The user does not belong to the requesting server")
        room_version = await self.resident_room(room_id)
        if versions is not None and room_version.identifier not in versions:
            raise MatrixError(
                400,
                "M_INCOMPATIBLE_ROOM_VERSION",
                f"Room version {room_version.identifier} is not supported by {origin}",
                room_version=room_version.identifier,
            )
        content = {"membership": membership}
        if membership == "join" and self.restricted_join_authoriser is not None:
            authoriser = await self.restricted_join_authoriser(room_id, user_id)
            if authoriser:  # a restricted room: one of ours vouches; our signature is added at send_join
                content["join_authorised_via_users_server"] = authoriser
        extremities = (await self._events.get_forward_extremities(room_id))[:MAX_PREV_EVENTS]
        needed = auth_types_for_event(room_version, MEMBER, user_id, user_id, content)
        current = await self._rooms.current_state_ids(room_id, tuple({t for t, _ in needed}))
        found = await self._events.get_events(current[k] for k in needed if k in current)
        auth_state = {k: found[current[k]] for k in needed if k in current and current[k] in found}
        event = self._sender.build(
            room_version,
            room_id,
            user_id,
            MEMBER,
            content,
            user_id,
            None,
            prev_event_ids=[e.event_id for e in extremities],
            depth=max(e.depth for e in extremities) + 1,
            auth_state=auth_state,
        )
        check_auth(room_version, event, auth_state)  # 403 now rather than after the round trip
        template = {k: v for k, v in event.get_pdu_json().items() if k not in ("hashes", "signatures", "event_id")}
        template["origin"] = origin
        return {"event": template, "room_version": room_version.identifier}

    async def receive_membership(
        self, origin: str, room_id: str, event_id: str, pdu: Any, membership: str
    ) -> tuple[Event, dict[StateKey, str]]:
        """send_join / send_leave: check the completed event, sign it and store it in our room through
        the auth rules. Returns the event as stored and the room state before it."""
        room_version = await self.resident_room(room_id)
        event = await self.check_pdu(room_version, pdu)
        if event.event_id != event_id:
            raise MatrixError(400, "M_BAD_JSON", "The event id does not match the event")
        if event.room_id != room_id or event.type != MEMBER or event.membership != membership:
            raise MatrixError(400, "M_BAD_JSON", f"Expected an m.room.member {membership} event for {room_id}")
        if event.state_key != event.sender or server_of(event.sender) != origin:
            raise MatrixError(403, "M_FORBIDDEN", "The event's sender is not a user of the requesting server")
        stored = await self._events.get_event(event_id)
        if stored is not None:  # a retried send_join: the same answer
            group = await self._events.get_state_group_of(stored.prev_event_ids[0])
            return stored, await self._state.get_state_ids(group[0]) if group else {}
        signed = Event.from_pdu(
            room_version, sign_event(room_version, event.get_pdu_json(), self.server_name, self._signing_key)
        )
        persisted, state_before = await self.persist_received(room_version, signed)
        if self.relay is not None:
            self.relay(origin, room_id, [persisted])
        return persisted.event, state_before

    async def persist_received(self, room_version: RoomVersion, event: Event) -> tuple[PersistedEvent, dict]:
        """Store a checked remote event of a room we hold on the state after its prev_events (all known to
        us: the template came from here); 403 M_FORBIDDEN if the auth rules refuse it there."""
        async with self._sender.room_lock(event.room_id):
            groups = []
            for prev in event.prev_event_ids:
                found = await self._events.get_state_group_of(prev)
                if found is None:
                    raise MatrixError(400, "M_BAD_JSON", f"Unknown prev_event {prev}")
                groups.append(found[0])
            if not groups:
                raise MatrixError(400, "M_BAD_JSON", "The event has no prev_events")
            resolved: ResolvedState | None = None
            if len(set(groups)) > 1:
                resolved = await self._sender.resolve_fork(room_version, groups)
            state_before = await self._state.get_state_ids(groups[0])
            if resolved is not None:
                state_before = {**state_before, **resolved.delta}
            needed = auth_types_for_event(room_version, event.type, event.state_key, event.sender, event.content)
            found = await self._events.get_events(state_before[k] for k in needed if k in state_before)
            auth_state = {k: found[state_before[k]] for k in needed if k in state_before and state_before[k] in found}
            cited = await self._events.get_events(event.auth_event_ids)
            create = found.get(state_before.get((CREATE, ""), ""))
            check_auth_events(room_version, event, cited.values(), create_event=create)
            check_auth_rules(room_version, event, auth_state, is_signed_by=signatures_verified_on_receipt)
            push = self._sender.push
            push_actions = await push.actions_for(room_version, event, auth_state) if push else []
            delta = {(event.type, event.state_key or ""): event.event_id} if event.is_state() else None
            persisted = await self._events.persist(
                event, groups[0], delta, resolved=resolved, push_actions=push_actions
            )
        if push_actions and self._sender.pushed is not None:
            self._sender.pushed(push_actions)
        await self._sender.persisted(event.room_id, [persisted])
        return persisted, state_before

    async def join_response(self, join: Event, state_before: dict[StateKey, str], omit_members: bool) -> dict:
        """The send_join answer: the state before the join and the auth chain; without member events (but
        the heroes' when the room has no name) when the joining server asked so."""
        joined = {k[1] for k in state_before if k[0] == MEMBER}
        state_events = await self._events.get_events(state_before.values())
        servers = sorted(
            {server_of(e.state_key or "") for e in state_events.values() if e.membership == "join"} - {None}
        )
        if omit_members:
            keep = {join.state_key}
            if not {("m.room.name", ""), ("m.room.canonical_alias", "")} & state_before.keys():
                keep |= set(sorted(u for u in joined if u != join.state_key)[:HERO_COUNT])
            state_ids = [v for k, v in state_before.items() if k[0] != MEMBER or k[1] in keep]
        else:
            state_ids = list(state_before.values())
        chain = await self._auth_chain([join.event_id, *state_ids])
        if omit_members:  # the spec lets the events already in `state` be left out of the chain
            returned = set(state_ids)
            chain = [e for e in chain if e.event_id not in returned]
        return {
            "state": [state_events[i].get_pdu_json() for i in state_ids if i in state_events],
            "auth_chain": [e.get_pdu_json() for e in chain],
            "event": join.get_pdu_json(),
            "members_omitted": omit_members,
            "servers_in_room": servers,
        }

    async def _auth_chain(self, event_ids: Iterable[str]) -> list[Event]:
        """Every event in the auth chains of `event_ids` (not those events themselves)."""
        seen: dict[str, Event] = {}
        start = await self._events.get_events(event_ids)
        wanted = {a for e in start.values() for a in e.auth_event_ids}
        while wanted:
            found = await self._events.get_events(wanted)
            seen.update(found)
            wanted = {a for e in found.values() for a in e.auth_event_ids if a not in seen}
        return sorted(seen.values(), key=lambda e: e.depth)

    # -- an invite of our user to a room elsewhere ----------------------------------------------------

    async def receive_invite(self, origin: str, room_id: str, event_id: str, body: dict) -> dict:
        """PUT /v2/invite: sign the invite of one of our users and keep it (with the room's stripped state)
        so the invitee's /sync shows it; they join or reject it through the inviting server."""
        version_id = body.get("room_version")
        room_version = KNOWN_ROOM_VERSIONS.get(version_id) if isinstance(version_id, str) else None
        if room_version is None:
            raise MatrixError(400, "M_INCOMPATIBLE_ROOM_VERSION", "Unsupported room version", room_version=version_id)
        event = await self.check_pdu(room_version, body.get("event"))
        invitee = event.state_key or ""
        if event.event_id != event_id or event.room_id != room_id:
            raise MatrixError(400, "M_BAD_JSON", "The event does not match the request path")
        if event.type != MEMBER or event.membership != "invite" or server_of(invitee) != self.server_name:
            raise MatrixError(400, "M_BAD_JSON", "Expected an invite of a user of this server")
        if server_of(event.sender) != origin:
            raise MatrixError(403, "M_FORBIDDEN", "The inviter is not a user of the requesting server")
        current = await self._rooms.get_membership(room_id, invitee)
        if current and current[0] in ("join", "ban"):
            raise MatrixError(403, "M_FORBIDDEN", f"{invitee} is already {current[0]} in the room")
        stripped = body.get("invite_room_state")
        if not isinstance(stripped, list):
            stripped = event.unsigned.get("invite_room_state", [])
        signed = Event.from_pdu(
            room_version, sign_event(room_version, event.get_pdu_json(), self.server_name, self._signing_key)
        )
        if await self._rooms.get_room(room_id) is not None and await self._has_local_member(room_id):
            await self.persist_received(room_version, signed)  # our room too: a state change like any other
        else:
            pending = PendingMembership([s for s in stripped if isinstance(s, dict)], origin)
            await self._events.persist_remote_membership(signed, pending)
            if self._sender.notify_room is not None:
                await self._sender.notify_room(room_id)
        return {"event": signed.get_pdu_json()}

    async def _has_local_member(self, room_id: str) -> bool:
        members = await self._rooms.member_event_ids(room_id)
        return any(server_of(user) == self.server_name for user in members)

    # -- our user joins or leaves a room elsewhere -----------------------------------------------------

    async def join(self, user_id: str, room_id: str, servers: list[str], content: dict[str, Any]) -> str:
        """make_join then send_join through the first of `servers` that answers; the room's state and
        auth chain are checked and stored with the join, and the room is ours from then on."""
        destination, template, room_version = await self._make(room_id, user_id, "join", servers)
        event = self._complete(room_version, template, user_id, {**content, "membership": "join"})
        path = f"{FEDERATION_V2}/send_join/{_q(room_id)}/{_q(event.event_id)}"
        answer = await self._call(self._client.put_json(destination, path, event.get_pdu_json()))
        if not isinstance(answer, dict):
            raise MatrixError(502, "M_UNKNOWN", f"{destination} answered send_join with something unexpected")
        returned = answer.get("event")
        if isinstance(returned, dict):  # the resident server's countersigned copy (restricted rooms)
            countersigned = await self.check_pdu(room_version, returned)
            if countersigned.event_id == event.event_id:
                event = countersigned
        state, outliers = await self._checked_state(room_version, answer)
        needed = auth_types_for_event(room_version, MEMBER, user_id, user_id, event.content)
        check_auth(room_version, event, {k: state[k] for k in needed if k in state})
        create = state.get((CREATE, ""))
        if create is None:
            raise MatrixError(502, "M_UNKNOWN", f"{destination} sent a room state without a create event")
        room = NewRoom(room_id, room_version.identifier, create.sender, False)
        state_ids = {k: e.event_id for k, e in state.items()}
        persisted = await self._events.persist_remote_join(room, outliers, state_ids, event)
        await self._sender.persisted(room_id, [persisted])
        return room_id

    async def leave(self, user_id: str, room_id: str, servers: list[str], content: dict[str, Any]) -> None:
        """Reject an invite to (or rescind a knock on) a room we do not hold: make_leave then send_leave
        through its server."""
        destination, template, room_version = await self._make(room_id, user_id, "leave", servers)
        event = self._complete(room_version, template, user_id, {**content, "membership": "leave"})
        path = f"{FEDERATION_V2}/send_leave/{_q(room_id)}/{_q(event.event_id)}"
        await self._call(self._client.put_json(destination, path, event.get_pdu_json()))
        await self._events.persist_remote_membership(event, None)
        if self._sender.notify_room is not None:
            await self._sender.notify_room(room_id)

    async def knock(self, user_id: str, room_id: str, servers: list[str], content: dict[str, Any]) -> None:
        """make_knock then send_knock through the first of `servers` that answers; the knock is kept with
        the room state that server sends back, as for an invite."""
        destination, template, room_version = await self._make(room_id, user_id, "knock", servers)
        if not room_version.knock_join_rule:
            raise MatrixError(403, "M_FORBIDDEN", f"Room version {room_version.identifier} does not allow knocking")
        event = self._complete(room_version, template, user_id, {**content, "membership": "knock"})
        path = f"{FEDERATION_V1}/send_knock/{_q(room_id)}/{_q(event.event_id)}"
        answer = await self._call(self._client.put_json(destination, path, event.get_pdu_json()))
        stripped = answer.get("knock_room_state") if isinstance(answer, dict) else None
        state = [s for s in stripped if isinstance(s, dict)] if isinstance(stripped, list) else []
        await self._events.persist_remote_membership(event, PendingMembership(state, destination))
        if self._sender.notify_room is not None:
            await self._sender.notify_room(room_id)

    async def _make(
        self, room_id: str, user_id: str, membership: str, servers: list[str]
    ) -> tuple[str, dict, RoomVersion]:
        path = f"{FEDERATION_V1}/make_{membership}/{_q(room_id)}/{_q(user_id)}"
        args = {"ver": list(KNOWN_ROOM_VERSIONS)} if membership in ("join", "knock") else None
        error: MatrixError | None = None
        for destination in dict.fromkeys(s for s in servers if s and s != self.server_name):
            try:
                answer = await self._call(self._client.get_json(destination, path, args=args))
            except MatrixError as e:
                error = e
                if e.code == 403:
                    raise  # the room's rules refuse the user: another server would say the same
                continue
            version_id = answer.get("room_version", "1") if isinstance(answer, dict) else None
            room_version = KNOWN_ROOM_VERSIONS.get(version_id) if isinstance(version_id, str) else None
            template = answer.get("event") if isinstance(answer, dict) else None
            if room_version is None or not isinstance(template, dict):
                error = MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION", f"Room version {version_id} is not supported")
                continue
            return destination, template, room_version
        raise error or MatrixError(404, "M_NOT_FOUND", "No server in the room could be asked to let us in")

    def _complete(self, room_version: RoomVersion, template: dict, user_id: str, content: dict) -> Event:
        """Our signed event from a make_join / make_leave template."""
        if template.get("type") != MEMBER or template.get("sender") != user_id or template.get("state_key") != user_id:
            raise MatrixError(502, "M_UNKNOWN", "The remote server's template is not a member event of the user")
        fields = ("type", "room_id", "sender", "state_key", "prev_events", "auth_events", "depth")
        pdu = {k: template[k] for k in fields if k in template}
        template_content = template.get("content")
        vouch = template_content.get("join_authorised_via_users_server") if isinstance(template_content, dict) else None
        pdu["content"] = {**content, **({"join_authorised_via_users_server": vouch} if vouch else {})}
        pdu["origin_server_ts"] = _now_ms()
        if room_version.event_id_in_pdu:
            pdu["event_id"] = random_event_id(self.server_name)
        return Event.from_pdu(
            room_version, add_hashes_and_signatures(room_version, pdu, self.server_name, self._signing_key)
        )

    async def _checked_state(self, room_version: RoomVersion, answer: dict) -> tuple[dict[StateKey, Event], list]:
        """The room state and auth chain of a send_join answer, each event checked (signatures, and the auth
        rules against its own auth events); events that fail are left out."""
        known: dict[str, Event] = {}
        state_ids: list[str] = []
        for key in ("auth_chain", "state"):
            for pdu in answer.get(key) or ():
                try:
                    event = await self.check_pdu(room_version, pdu)
                except MatrixError:
                    continue
                known[event.event_id] = event
                if key == "state":
                    state_ids.append(event.event_id)
        create = next((e for e in known.values() if e.type == CREATE and e.state_key == ""), None)
        accepted: dict[str, Event] = {}
        for event in sorted(known.values(), key=lambda e: e.depth):
            try:
                if event.type != CREATE:
                    cited = [known[a] for a in event.auth_event_ids if a in known]
                    auth_state = check_auth_events(room_version, event, cited, create_event=create)
                    check_auth_rules(room_version, event, auth_state, is_signed_by=signatures_verified_on_receipt)
            except AuthError:
                continue
            accepted[event.event_id] = event
        state: dict[StateKey, Event] = {}
        for event_id in state_ids:
            if event_id in accepted and accepted[event_id].state_key is not None:
                event = accepted[event_id]
                state[(event.type, event.state_key or "")] = event
        return state, list(accepted.values())

    async def stripped_state(self, room_id: str) -> list[dict]:
        """The room's state as shown with an invite or a knock, before joining."""
        ids = await self._rooms.current_state_ids(room_id, STRIPPED_STATE_TYPES)
        found = await self._events.get_events(ids.values())
        return [
            {"type": e.type, "state_key": e.state_key, "content": dict(e.get_pdu_json()["content"]), "sender": e.sender}
            for e in found.values()
        ]

    # -- our user invites a user of another server ------------------------------------------------------

    async def countersign_invite(self, event: Event) -> Event:
        """PUT /v2/invite to the invitee's server, which checks and signs the invite: the copy we store."""
        invitee_server = server_of(event.state_key or "") or ""
        body = {
            "room_version": event.room_version.identifier,
            "event": event.get_pdu_json(),
            "invite_room_state": await self.stripped_state(event.room_id),
        }
        path = f"{FEDERATION_V2}/invite/{_q(event.room_id)}/{_q(event.event_id)}"
        answer = await self._call(self._client.put_json(invitee_server, path, body))
        signed = await self.check_pdu(event.room_version, answer.get("event") if isinstance(answer, dict) else None)
        if signed.event_id != event.event_id or invitee_server not in signed.signatures:
            raise MatrixError(502, "M_UNKNOWN", f"{invitee_server} did not sign the invite")
        return signed

    async def _call(self, request: Any) -> Any:
        """A federation request's answer; its failure as the Matrix error a client should see."""
        try:
            return await request
        except HttpResponseError as e:
            errcode, error = e.errcode or "M_UNKNOWN", e.msg or "The remote server refused"
            raise MatrixError(e.code if 400 <= e.code < 500 else 502, errcode, error) from None
        except FederationError as e:
            raise MatrixError(502, "M_UNKNOWN", f"The remote server did not answer: {e}") from None
