"""Rooms of real, signed events for the auth rule and state resolution tests."""

from collections.abc import Mapping
from typing import Any

from signedjson.key import generate_signing_key, get_verify_key

from homeserver.core.auth import (
    StateKey,
    auth_types_of,
    check_auth_rules,
    select_auth_event_ids,
    signature_check,
)
from homeserver.core.event_builder import build_event
from homeserver.core.events import Event
from homeserver.core.json_signing import ServerVerifyKey, key_id_of
from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion
from homeserver.core.state_res import resolve_state

SERVER = "example.org"
KEY = generate_signing_key("1")
_KEYRING = {(SERVER, key_id_of(KEY)): ServerVerifyKey(get_verify_key(KEY), 2**62)}

ALICE = "@alice:example.org"
BOB = "@bob:example.org"
CHARLIE = "@charlie:example.org"
DAVE = "@dave:example.org"
EVELYN = "@evelyn:example.org"
ZARA = "@zara:example.org"
MALLORY = "@mallory:other.org"

ALL_VERSIONS = list(KNOWN_ROOM_VERSIONS)


def keyring(server_name: str, key_id: str) -> ServerVerifyKey | None:
    return _KEYRING.get((server_name, key_id))


# Verifies signatures for real: only example.org's key is known.
IS_SIGNED_BY = signature_check(keyring)


def version(identifier: str) -> RoomVersion:
    return KNOWN_ROOM_VERSIONS[identifier]


def create_content(room_version: RoomVersion, creator: str = ALICE, **extra: Any) -> dict[str, Any]:
    content: dict[str, Any] = {"room_version": room_version.identifier, **extra}
    if not room_version.implicit_room_creator:
        content["creator"] = creator
    return content


def power_levels_content(room_version: RoomVersion, users: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """Power levels content; the creator (Alice) is left out of `users` where v12 forbids her there."""
    users = {
        user: level for user, level in users.items() if not (room_version.privileged_room_creators and user == ALICE)
    }
    return {"users": users, **extra}


class AuthRoom:
    """A room whose state is set directly, to check single events against it.

    `state` is what `check` hands to the auth rules (only the pairs the event's check reads).
    """

    def __init__(self, identifier: str, creator: str = ALICE, **create_extra: Any) -> None:
        self.room_version = version(identifier)
        self.ts = 1_000
        self.room_id: str | None = None if self.room_version.room_id_is_create_event_id else "!room:example.org"
        self.create = self.event(
            "m.room.create", creator, create_content(self.room_version, creator, **create_extra), "", prev=[]
        )
        self.room_id = self.create.room_id
        self.state: dict[StateKey, Event] = {("m.room.create", ""): self.create}

    def event(
        self,
        event_type: str,
        sender: str,
        content: Mapping[str, Any],
        state_key: str | None = None,
        *,
        prev: list[str] | None = None,
        redacts: str | None = None,
    ) -> Event:
        self.ts += 1
        v12_create = self.room_version.room_id_is_create_event_id and event_type == "m.room.create"
        return build_event(
            self.room_version,
            SERVER,
            KEY,
            event_type=event_type,
            sender=sender,
            content=content,
            room_id=None if v12_create else self.room_id,
            prev_event_ids=["$previous"] if prev is None else prev,
            auth_event_ids=[],
            depth=self.ts - 1_000,
            origin_server_ts=self.ts,
            state_key=state_key,
            redacts=redacts,
        )

    def set(self, event_type: str, sender: str, content: Mapping[str, Any], state_key: str = "") -> Event:
        """Put an event into the state without checking it."""
        event = self.event(event_type, sender, content, state_key)
        self.state[(event_type, state_key)] = event
        return event

    def member(self, user: str, membership: str, sender: str | None = None, **extra: Any) -> Event:
        return self.set("m.room.member", sender or user, {"membership": membership, **extra}, user)

    def power_levels(self, users: Mapping[str, Any], **extra: Any) -> Event:
        return self.set("m.room.power_levels", ALICE, power_levels_content(self.room_version, users, **extra))

    def auth_state(self, event: Event) -> dict[StateKey, Event]:
        return {key: self.state[key] for key in auth_types_of(event) if key in self.state}

    def check(self, event: Event, is_signed_by=IS_SIGNED_BY) -> None:
        check_auth_rules(self.room_version, event, self.auth_state(event), is_signed_by=is_signed_by)


def standard_room(identifier: str, join_rule: str = "public") -> AuthRoom:
    """Alice created the room (100, or creator in v12), Bob (50) and Charlie (0) are in it."""
    room = AuthRoom(identifier)
    room.member(ALICE, "join")
    room.power_levels({ALICE: 100, BOB: 50})
    room.set("m.room.join_rules", ALICE, {"join_rule": join_rule})
    room.member(BOB, "join")
    room.member(CHARLIE, "join")
    return room


class RoomDag:
    """A room grown as a DAG: each event's state is resolved from its prev events, as a server does.

    Events are named; the state before an event with several prev events is their resolution.
    Auth events are selected from the state before, and each event is checked against it
    unless `check=False` (an event another server accepted, say).
    """

    def __init__(self, identifier: str) -> None:
        self.room_version = version(identifier)
        self.events: dict[str, Event] = {}
        self.ids: dict[str, str] = {}
        self.state_after: dict[str, dict[StateKey, str]] = {}
        self.ts = 0
        self.room_id: str | None = None if self.room_version.room_id_is_create_event_id else "!room:example.org"
        self.resolutions = 0

    def resolve(self, states: list[Mapping[StateKey, str]]) -> dict[StateKey, str]:
        self.resolutions += 1
        return resolve_state(self.room_version, states, self.events.get)

    def state_before(self, prev: list[str]) -> dict[StateKey, str]:
        if not prev:
            return {}
        if len(prev) == 1:
            return dict(self.state_after[prev[0]])
        return self.resolve([self.state_after[name] for name in prev])

    def add(
        self,
        name: str,
        sender: str,
        event_type: str,
        content: Mapping[str, Any],
        state_key: str | None = None,
        *,
        prev: list[str],
        check: bool = True,
    ) -> Event:
        state = self.state_before(prev)
        auth_ids = select_auth_event_ids(self.room_version, event_type, state_key, sender, content, state)
        event = build_event(
            self.room_version,
            SERVER,
            KEY,
            event_type=event_type,
            sender=sender,
            content=content,
            room_id=self.room_id,
            prev_event_ids=[self.ids[p] for p in prev],
            auth_event_ids=auth_ids,
            depth=1 + max((self.events[self.ids[p]].depth for p in prev), default=0),
            origin_server_ts=self.ts,
            state_key=state_key,
        )
        self.ts += 1
        if self.room_id is None:
            self.room_id = event.room_id
        if check:
            auth_state = {k: self.events[state[k]] for k in auth_types_of(event) if k in state}
            check_auth_rules(self.room_version, event, auth_state, is_signed_by=IS_SIGNED_BY)
        self.events[event.event_id] = event
        self.ids[name] = event.event_id
        after = dict(state)
        if event.is_state():
            after[(event_type, state_key)] = event.event_id
        self.state_after[name] = after
        return event

    def name_of(self, event_id: str) -> str:
        return next(name for name, eid in self.ids.items() if eid == event_id)
