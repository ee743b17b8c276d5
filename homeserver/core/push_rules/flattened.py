"""An event as the push rule conditions read it: flattened once, then asked by many users' rules.

Conditions name a property by a dot-separated path (appendices, "Dot-separated property paths").
The event is flattened once into a map from a path (as a tuple of keys, so that a key holding a
dot is no problem) to the value there. Objects are walked into; everything else (strings,
numbers, booleans, null, arrays) is a value. Evaluating the same event for every member of a
room reuses one `FlattenedEvent`, and the answers of conditions that depend only on the event
are remembered in it, so a rule shared by many users is tested once per event.
"""

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from homeserver.core.canonical_json import CANONICAL_INT_MAX, CANONICAL_INT_MIN
from homeserver.core.events import Event
from homeserver.core.filters import split_field_path
from homeserver.core.push_rules.patterns import CACHED_TEXT_MAX

Path = tuple[str, ...]

# Stands for "no such property", which is not the same as a property whose value is null.
MISSING: Any = object()

BODY: Path = ("content", "body")


def parse_path(key: str) -> Path:
    """`content.m\\.relates_to.rel_type` -> ("content", "m.relates_to", "rel_type")."""
    return _cached_path(key) if len(key) <= CACHED_TEXT_MAX else _path(key)


def _path(key: str) -> Path:
    return tuple(split_field_path(key))


_cached_path = lru_cache(maxsize=4096)(_path)  # pure: nothing invalidates it; short keys only


def scalar_key(value: Any) -> tuple[str, Any] | None:
    """`value` tagged with its JSON type, if it is one `event_property_is` and `_contains` compare:
    a string, an integer in canonical JSON's range, a boolean or null. Tagging keeps `true` from
    equalling `1` (as Python's True == 1 would). None for anything else (floats, arrays, objects)."""
    if value is None:
        return ("null", None)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int", value) if CANONICAL_INT_MIN <= value <= CANONICAL_INT_MAX else None
    if isinstance(value, str):
        return ("str", value)
    return None


class FlattenedEvent:
    """The properties of one event, for evaluating push rules (for any number of users).

    Build it from a client-format event (a JSON object, or a read-only mapping as `Event.content`
    is) or from an `Event`.
    """

    __slots__ = ("sender", "room_id", "body", "_values", "memo")

    def __init__(self, event: Mapping[str, Any] | Event) -> None:
        if isinstance(event, Event):
            event = event.to_client_dict()
        values: dict[Path, Any] = {}
        stack: list[tuple[Path, Mapping[str, Any]]] = [((), event)]
        while stack:  # not recursive: a deeply nested content must not exhaust the stack
            prefix, obj = stack.pop()
            for key, value in obj.items():
                path = (*prefix, key)
                if isinstance(value, Mapping):
                    stack.append((path, value))
                else:
                    values[path] = value
        self._values = values
        sender, room_id, body = values.get(("sender",)), values.get(("room_id",)), values.get(BODY)
        self.sender: str | None = sender if isinstance(sender, str) else None
        self.room_id: str | None = room_id if isinstance(room_id, str) else None
        self.body: str | None = body if isinstance(body, str) else None
        # condition -> bool, for the conditions that read only the event (see evaluator).
        self.memo: dict[Any, bool] = {}

    def get(self, path: Path) -> Any:
        """The value at `path` (not an object), or MISSING."""
        return self._values.get(path, MISSING)

    def string(self, path: Path) -> str | None:
        value = self._values.get(path)
        return value if isinstance(value, str) else None
