"""GET /rooms/{roomId}/hierarchy: a space's rooms, depth first, one page at a time
(client-server-api/modules/spaces.md).

Only rooms this server holds are walked: children elsewhere need federation. Pages are stateless:
the token names the walk (root, max_depth, suggested_only) and how many rooms were already given,
and each page walks again up to its end, so a page costs the rooms before it and no session is kept.
"""

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from homeserver.core.errors import MatrixError
from homeserver.core.events import Event
from homeserver.core.frozen_json import thaw
from homeserver.core.requester import Requester
from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion
from homeserver.core.state_content import content_string, plain_topic
from homeserver.storage.events import EventStore
from homeserver.storage.rooms import RoomStore

SPACE_CHILD = "m.space.child"
MAX_LIMIT = 50
DEFAULT_LIMIT = 20
MAX_DEPTH = 10
_SUMMARY_TYPES = (
    "m.room.create",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.encryption",
)


@dataclass(frozen=True)
class HierarchyQuery:
    max_depth: int = MAX_DEPTH
    suggested_only: bool = False
    limit: int = DEFAULT_LIMIT
    from_token: str | None = None


@dataclass
class _Room:
    room_id: str
    room_version: RoomVersion
    state: dict[tuple[str, str], Event]
    children: list[Event]  # valid m.space.child events, in the spec's order


class SpaceHierarchyHandler:
    def __init__(self, rooms: RoomStore, events: EventStore) -> None:
        self._rooms = rooms
        self._events = events

    async def hierarchy(self, requester: Requester, room_id: str, query: HierarchyQuery) -> dict[str, Any]:
        max_depth = min(query.max_depth, MAX_DEPTH)
        walk = {"room_id": room_id, "max_depth": max_depth, "suggested_only": query.suggested_only}
        skip = 0 if query.from_token is None else _parse_token(query.from_token, walk)
        limit = min(max(query.limit, 1), MAX_LIMIT)
        user_id = requester.user_id
        root = await self._load(room_id, query.suggested_only)
        if root is None or not await self._may_see(user_id, root):
            raise MatrixError(403, "M_FORBIDDEN", "You cannot view this room")

        chunk: list[dict[str, Any]] = []
        seen = {room_id}
        stack: list[tuple[_Room, int]] = [(root, 0)]
        position = 0
        more = False
        while stack:
            room, depth = stack.pop()
            if position >= skip:
                if len(chunk) == limit:
                    more = True
                    break
                chunk.append(await self._summary(room))
            position += 1
            if depth >= max_depth:
                continue
            # Pushed in reverse so the first child comes out first: depth first, in the spec's order.
            for child_event in reversed(room.children):
                child_id = child_event.state_key or ""
                if child_id in seen:
                    continue
                seen.add(child_id)
                child = await self._load(child_id, query.suggested_only)
                if child is not None and await self._may_see(user_id, child):
                    stack.append((child, depth + 1))
        answer: dict[str, Any] = {"rooms": chunk}
        if more:
            answer["next_batch"] = _token({**walk, "skip": position})
        return answer

    async def _load(self, room_id: str, suggested_only: bool) -> _Room | None:
        """The room's summary state and its children, or None if this server does not hold it."""
        record = await self._rooms.get_room(room_id)
        if record is None:
            return None
        ids = await self._rooms.current_state_ids(room_id, (*_SUMMARY_TYPES, SPACE_CHILD))
        found = await self._events.get_events(ids.values())
        state = {key: found[event_id] for key, event_id in ids.items() if event_id in found}
        children = [
            event
            for (event_type, _), event in state.items()
            if event_type == SPACE_CHILD and _is_valid_child(event) and (not suggested_only or _suggested(event))
        ]
        children.sort(key=_child_order)
        return _Room(room_id, KNOWN_ROOM_VERSIONS[record.room_version], state, children)

    async def _may_see(self, user_id: str, room: _Room) -> bool:
        """The spec's list: members and invitees; anyone if the room is world readable, public or
        knockable; a user in one of a restricted room's allowed rooms. A banned user only if the
        room is world readable."""
        if _string(room.state, "m.room.history_visibility", "history_visibility") == "world_readable":
            return True
        membership = await self._rooms.get_membership(room.room_id, user_id)
        if membership is not None and membership[0] in ("join", "invite", "ban"):
            return membership[0] != "ban"
        version = room.room_version
        join_rule = _string(room.state, "m.room.join_rules", "join_rule")
        if join_rule == "public" or (join_rule == "knock" and version.knock_join_rule):
            return True
        if join_rule == "knock_restricted" and version.knock_restricted_join_rule:
            return True
        if join_rule == "restricted" and version.restricted_join_rule:
            for allowed in _allowed_room_ids(room):
                joined = await self._rooms.get_membership(allowed, user_id)
                if joined is not None and joined[0] == "join":
                    return True
        return False

    async def _summary(self, room: _Room) -> dict[str, Any]:
        state = room.state
        history = _string(state, "m.room.history_visibility", "history_visibility")
        counts = await self._rooms.joined_member_counts([room.room_id])
        join_rule = _string(state, "m.room.join_rules", "join_rule") or "invite"
        summary: dict[str, Any] = {
            "room_id": room.room_id,
            "num_joined_members": counts.get(room.room_id, 0),
            "world_readable": history == "world_readable",
            "guest_can_join": _string(state, "m.room.guest_access", "guest_access") == "can_join",
            "join_rule": join_rule,
            "children_state": [_stripped(event) for event in room.children],
        }
        optional = {
            "name": _string(state, "m.room.name", "name"),
            "topic": plain_topic(_content(state, "m.room.topic")),
            "canonical_alias": _string(state, "m.room.canonical_alias", "alias"),
            "avatar_url": _string(state, "m.room.avatar", "url"),
            "room_type": _string(state, "m.room.create", "type"),
            "encryption": _string(state, "m.room.encryption", "algorithm"),
            "room_version": room.room_version.identifier,
            "allowed_room_ids": _allowed_room_ids(room) if join_rule in ("restricted", "knock_restricted") else None,
        }
        summary.update({k: v for k, v in optional.items() if v is not None})
        return summary


def _content(state: Mapping[tuple[str, str], Event], event_type: str) -> Mapping[str, Any] | None:
    event = state.get((event_type, ""))
    return event.content if event is not None else None


def _string(state: Mapping[tuple[str, str], Event], event_type: str, key: str) -> str | None:
    return content_string(_content(state, event_type), key)


def _allowed_room_ids(room: _Room) -> list[str]:
    """The rooms whose members a restricted room's join rules let in."""
    event = room.state.get(("m.room.join_rules", ""))
    allow = event.content.get("allow") if event is not None else None
    if not isinstance(allow, list | tuple):
        return []
    entries = [entry for entry in allow if isinstance(entry, Mapping) and entry.get("type") == "m.room_membership"]
    return [entry["room_id"] for entry in entries if isinstance(entry.get("room_id"), str)]


def _is_valid_child(event: Event) -> bool:
    """The spec: a child without a non-empty `via` list is not a child (it is how one is removed)."""
    via = event.content.get("via")
    return isinstance(via, list | tuple) and len(via) > 0 and bool(event.state_key)


def _suggested(event: Event) -> bool:
    return event.content.get("suggested") is True


def _child_order(event: Event) -> tuple[int, str, int, str]:
    """The spec's order: children with a valid `order` first, by it; then by the event's
    origin_server_ts; then by room id."""
    order = event.content.get("order")
    valid = isinstance(order, str) and 0 < len(order) <= 50 and all(0x20 <= ord(c) <= 0x7E for c in order)
    return (0 if valid else 1, order if valid else "", event.origin_server_ts, event.state_key or "")


def _stripped(event: Event) -> dict[str, Any]:
    return {
        "type": event.type,
        "state_key": event.state_key,
        "content": thaw(event.content),
        "sender": event.sender,
        "origin_server_ts": event.origin_server_ts,
    }


def _token(fields: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(fields, separators=(",", ":")).encode()).decode().rstrip("=")


def _parse_token(token: str, walk: dict[str, Any]) -> int:
    """How many rooms the walk had given; 400 M_INVALID_PARAM for a token that is not ours or was
    made for another walk (the spec: max_depth and suggested_only may not change)."""
    try:
        fields = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        skip = fields.pop("skip")
    except (ValueError, TypeError, KeyError, AttributeError):
        raise MatrixError(400, "M_INVALID_PARAM", "Unknown pagination token") from None
    if fields != walk or not isinstance(skip, int) or isinstance(skip, bool) or skip < 1:
        raise MatrixError(400, "M_INVALID_PARAM", "The pagination token was made for other parameters")
    return skip
