"""Filters (client-server API, "Filtering"): parsed with the spec's validation, then matched.

`EventFilter` (types, not_types, senders, not_senders, limit) is what presence and account data
are filtered with; `RoomEventFilter` adds rooms, not_rooms, contains_url and the lazy-loading
switches, and is the `filter` of /messages and /context and each part of a sync room filter.
`Filter` is the whole sync filter (api/client-server/definitions/sync_filter.yaml).

A malformed filter is 400 M_BAD_JSON; a `filter` query parameter that is not JSON at all is
400 M_INVALID_PARAM. Unknown keys are ignored, as the spec adds new ones over time.
"""

import copy
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Self, TypeVar

from homeserver.core.errors import MatrixError

T = TypeVar("T")


def _bad(msg: str) -> MatrixError:
    return MatrixError(400, "M_BAD_JSON", msg)


@lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    """`*` matches any run of characters (the empty one too); everything else is literal."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def matches_any(value: str | None, patterns: Iterable[str]) -> bool:
    """Whether `value` matches one of the event type patterns (which may hold `*`)."""
    if not isinstance(value, str):
        return False
    return any(_glob(p).fullmatch(value) is not None if "*" in p else p == value for p in patterns)


def _field(event: Any, name: str) -> Any:
    """A top-level field of an event: an `Event` (attributes) or a JSON object (keys)."""
    if isinstance(event, Mapping):
        return event.get(name)
    return getattr(event, name, None)


# -- validation -----------------------------------------------------------------------------


def _string_list(body: Mapping[str, Any], name: str, sigil: str = "") -> tuple[str, ...] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v.startswith(sigil) for v in value):
        what = f"strings starting with {sigil!r}" if sigil else "strings"
        raise _bad(f"Filter field {name!r} must be a list of {what}")
    return tuple(value)


def _bool(body: Mapping[str, Any], name: str, default: bool | None) -> bool | None:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _bad(f"Filter field {name!r} must be a boolean")
    return value


def _object(body: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _bad(f"Filter field {name!r} must be an object")
    return value


def _limit(body: Mapping[str, Any]) -> int | None:
    value = body.get("limit")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise _bad("Filter field 'limit' must be an integer greater than 0")
    return value


# -- filters --------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventFilter:
    """Which events to include: a `not_` list wins over its inclusive list; an absent inclusive
    list includes everything, an empty one nothing."""

    limit: int | None = None
    types: tuple[str, ...] | None = None
    not_types: tuple[str, ...] = ()
    senders: tuple[str, ...] | None = None
    not_senders: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, body: Any) -> Self:
        if not isinstance(body, Mapping):
            raise _bad("A filter must be a JSON object")
        return cls(**cls._fields_from_json(body))

    @classmethod
    def _fields_from_json(cls, body: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "limit": _limit(body),
            "types": _string_list(body, "types"),
            "not_types": _string_list(body, "not_types") or (),
            "senders": _string_list(body, "senders", "@"),
            "not_senders": _string_list(body, "not_senders", "@") or (),
        }

    def matches(self, event: Any) -> bool:
        """Whether `event` (an Event, or an event as a JSON object) passes the filter."""
        event_type = _field(event, "type")
        if matches_any(event_type, self.not_types):
            return False
        if self.types is not None and not matches_any(event_type, self.types):
            return False
        sender = _field(event, "sender")
        if sender in self.not_senders:
            return False
        return self.senders is None or sender in self.senders

    def filter(self, events: Iterable[T]) -> list[T]:
        """The matching events, in order (the limit is the caller's to apply)."""
        if type(self) is EventFilter and self == EVERYTHING:
            return list(events)  # the default (presence, account data) filter most syncs use: nothing to look at
        return [e for e in events if self.matches(e)]


EVERYTHING = EventFilter()  # what a filter that says nothing about these events is


@dataclass(frozen=True)
class RoomEventFilter(EventFilter):
    """An EventFilter for room events: also by room, by a `url` in the content, and with the
    lazy-loading switches the endpoints that serve member state read."""

    rooms: tuple[str, ...] | None = None
    not_rooms: tuple[str, ...] = ()
    contains_url: bool | None = None
    lazy_load_members: bool = False
    include_redundant_members: bool = False
    unread_thread_notifications: bool = False

    @classmethod
    def _fields_from_json(cls, body: Mapping[str, Any]) -> dict[str, Any]:
        return {
            **super()._fields_from_json(body),
            "rooms": _string_list(body, "rooms", "!"),
            "not_rooms": _string_list(body, "not_rooms", "!") or (),
            "contains_url": _bool(body, "contains_url", None),
            "lazy_load_members": _bool(body, "lazy_load_members", False),
            "include_redundant_members": _bool(body, "include_redundant_members", False),
            "unread_thread_notifications": _bool(body, "unread_thread_notifications", False),
        }

    def matches(self, event: Any) -> bool:
        if not self.includes_room(_field(event, "room_id")):
            return False
        if self.contains_url is not None:
            content = _field(event, "content")
            has_url = isinstance(content, Mapping) and isinstance(content.get("url"), str)
            if has_url != self.contains_url:
                return False
        return super().matches(event)

    def includes_room(self, room_id: str | None) -> bool:
        """Events without a room id (sync's per-room sections) pass the room lists."""
        if room_id is None:
            return True
        return room_id not in self.not_rooms and (self.rooms is None or room_id in self.rooms)


@dataclass(frozen=True)
class RoomFilter:
    """The `room` part of a sync filter: which rooms, then a filter for each section of a room."""

    rooms: tuple[str, ...] | None = None
    not_rooms: tuple[str, ...] = ()
    include_leave: bool = False
    ephemeral: RoomEventFilter = field(default_factory=RoomEventFilter)
    state: RoomEventFilter = field(default_factory=RoomEventFilter)
    timeline: RoomEventFilter = field(default_factory=RoomEventFilter)
    account_data: RoomEventFilter = field(default_factory=RoomEventFilter)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> "RoomFilter":
        return cls(
            rooms=_string_list(body, "rooms", "!"),
            not_rooms=_string_list(body, "not_rooms", "!") or (),
            include_leave=bool(_bool(body, "include_leave", False)),
            **{
                name: RoomEventFilter.from_json(_object(body, name))
                for name in ("ephemeral", "state", "timeline", "account_data")
            },
        )

    def includes_room(self, room_id: str) -> bool:
        return room_id not in self.not_rooms and (self.rooms is None or room_id in self.rooms)


@dataclass(frozen=True)
class Filter:
    """A whole filter as uploaded with POST /user/{userId}/filter and used by /sync."""

    event_fields: tuple[str, ...] | None = None
    event_format: str = "client"
    presence: EventFilter = field(default_factory=EventFilter)
    account_data: EventFilter = field(default_factory=EventFilter)
    room: RoomFilter = field(default_factory=RoomFilter)

    @classmethod
    def from_json(cls, body: Any) -> "Filter":
        if not isinstance(body, Mapping):
            raise _bad("A filter must be a JSON object")
        event_format = body.get("event_format", "client")
        if event_format not in ("client", "federation"):
            raise _bad("Filter field 'event_format' must be 'client' or 'federation'")
        event_fields = _string_list(body, "event_fields")
        for path in event_fields or ():
            if not path:
                raise _bad("Filter field 'event_fields' must not hold an empty path")
        return cls(
            event_fields=event_fields,
            event_format=event_format,
            presence=EventFilter.from_json(_object(body, "presence")),
            account_data=EventFilter.from_json(_object(body, "account_data")),
            room=RoomFilter.from_json(_object(body, "room")),
        )


def load_filter_json(text: str) -> Any:
    """The JSON of a filter passed in a query parameter; 400 M_INVALID_PARAM if it is not JSON."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise MatrixError(400, "M_INVALID_PARAM", "filter must be a JSON object") from None


def parse_room_event_filter(text: str | None) -> RoomEventFilter | None:
    """The `filter` query parameter of /messages and /context: None when absent or empty."""
    if not text:
        return None
    return RoomEventFilter.from_json(load_filter_json(text))


# -- event_fields ---------------------------------------------------------------------------


def split_field_path(path: str) -> list[str]:
    """A dot-separated property path (appendices, "Dot-separated property paths") as its keys:
    `content.m\\.relates_to` is ["content", "m.relates_to"]; other escapes stay literal."""
    keys, current, i = [], [], 0
    while i < len(path):
        char = path[i]
        if char == "\\" and i + 1 < len(path) and path[i + 1] in ".\\":
            current.append(path[i + 1])
            i += 2
            continue
        if char == ".":
            keys.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    keys.append("".join(current))
    return keys


def only_fields(event: Mapping[str, Any], paths: Iterable[str]) -> dict[str, Any]:
    """The event (a client-format JSON object) with just the fields `paths` name, for a filter's
    `event_fields`. Paths that name nothing, or go through a non-object, are skipped."""
    out: dict[str, Any] = {}
    for path in paths:
        keys = split_field_path(path)
        source: Any = event
        for key in keys:
            if not isinstance(source, Mapping) or key not in source:
                break
            source = source[key]
        else:
            target = out
            for key in keys[:-1]:
                target = target.setdefault(key, {})
            target[keys[-1]] = copy.deepcopy(source)
    return out
