"""The conditions of override and underride rules (push module, "Conditions"), compiled once.

`compile_condition` turns a condition's JSON into an object whose `holds(event, context)` answers
it, and `compile_conditions` a rule's list into one `AllOf`. Both are interned: the same condition
(or list) in many users' rules is one object (every default rule but two is the same for
everyone), so its answer for an event can be remembered in the `FlattenedEvent` (see
`reads_event_only`) and computed once per event, not once per user.

An unknown kind, or a condition without the parameters its kind needs, never matches: "Unrecognised
conditions MUST NOT match any events, effectively making the push rule disabled."
"""

import operator
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import lru_cache
from typing import Any

from homeserver.core.push_rules.context import PushContext
from homeserver.core.push_rules.flattened import BODY, MISSING, FlattenedEvent, Path, parse_path, scalar_key
from homeserver.core.push_rules.patterns import CACHED_TEXT_MAX, Glob, compile_glob, literal_in_words


class Condition:
    """A compiled condition. `reads_event_only`: its answer depends on the event alone."""

    __slots__ = ()
    reads_event_only = True

    def holds(self, event: FlattenedEvent, context: PushContext) -> bool:
        raise NotImplementedError


class Never(Condition):
    """An unrecognised or malformed condition."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"Never({self.reason!r})"

    def holds(self, event: FlattenedEvent, context: PushContext) -> bool:
        return False


class EventMatch(Condition):
    """`event_match`: a glob against a string property, the whole value, or for `content.body`
    any substring between word boundaries. Absent or non-string properties never match."""

    __slots__ = ("path", "glob")

    def __init__(self, path: Path, glob: Glob) -> None:
        self.path, self.glob = path, glob

    def __repr__(self) -> str:
        return f"EventMatch({self.path!r}, {self.glob.pattern!r})"

    def holds(self, event: FlattenedEvent, context: PushContext) -> bool:
        value = event.string(self.path)
        if value is None:
            return False
        return self.glob.matches_words(value) if self.path == BODY else self.glob.matches(value)


class EventPropertyIs(Condition):
    """`event_property_is`: the property is exactly this string, integer, boolean or null."""

    __slots__ = ("path", "value")

    def __init__(self, path: Path, value: tuple[str, Any]) -> None:
        self.path, self.value = path, value

    def __repr__(self) -> str:
        return f"EventPropertyIs({self.path!r}, {self.value[1]!r})"

    def holds(self, event: FlattenedEvent, context: PushContext) -> bool:
        value = event.get(self.path)
        return value is not MISSING and scalar_key(value) == self.value


class EventPropertyContains(Condition):
    """`event_property_contains`: the property is an array holding exactly this value; elements of
    other types are ignored."""

    __slots__ = ("path", "value")

    def __init__(self, path: Path, value: tuple[str, Any]) -> None:
        self.path, self.value = path, value

    def __repr__(self) -> str:
        return f"EventPropertyContains({self.path!r}, {self.value[1]!r})"

    def holds(self, event: FlattenedEvent, context: PushContext) -> bool:
        array = event.get(self.path)
        return isinstance(array, list | tuple) and any(scalar_key(item) == self.value for item in array)


class ContainsDisplayName(Condition):
    """`contains_display_name` (deprecated in v1.17, still defined): the user's display name in the
    room appears in `content.body` between word boundaries, literally and case-insensitively.
    An absent or empty display name never matches."""

    __slots__ = ()
    reads_event_only = False

    def __repr__(self) -> str:
        return "ContainsDisplayName()"

    def holds(self, event: FlattenedEvent, context: PushContext) -> bool:
        name = context.display_name
        if not name or event.body is None:
            return False
        key = ("contains_display_name", name)  # the same name (rare, but cheap) is looked for once
        found = event.memo.get(key)
        if found is None:
            found = event.memo[key] = literal_in_words(name).search(event.body) is not None
        return found


_COMPARISONS: Mapping[str, Callable[[int, int], bool]] = {
    "==": operator.eq,
    "<": operator.lt,
    ">": operator.gt,
    "<=": operator.le,
    ">=": operator.ge,
}
_MEMBER_COUNT = re.compile(r"(==|<=|>=|<|>)?([0-9]+)", re.ASCII)


class RoomMemberCount(Condition):
    """`room_member_count`: the room's member count against `is`, e.g. "2", "<=10"."""

    __slots__ = ("compare", "number", "text")
    reads_event_only = False

    def __init__(self, compare: Callable[[int, int], bool], number: int, text: str) -> None:
        self.compare, self.number, self.text = compare, number, text

    def __repr__(self) -> str:
        return f"RoomMemberCount({self.text!r})"

    def holds(self, event: FlattenedEvent, context: PushContext) -> bool:
        return context.member_count is not None and self.compare(context.member_count, self.number)


class SenderNotificationPermission(Condition):
    """`sender_notification_permission`: the sender's power level reaches the room's
    `notifications.<key>` level (50 unless the power levels say otherwise)."""

    __slots__ = ("key",)
    reads_event_only = False

    def __init__(self, key: str) -> None:
        self.key = key

    def __repr__(self) -> str:
        return f"SenderNotificationPermission({self.key!r})"

    def holds(self, event: FlattenedEvent, context: PushContext) -> bool:
        level = context.sender_power_level
        return level is not None and level >= context.notification_level(self.key)


class AllOf(Condition):
    """The conditions of one rule, all of which must hold (none: always). Interned like the
    conditions themselves, so a rule many users share is answered once per event when it reads
    only the event; otherwise its event-only conditions still are."""

    __slots__ = ("conditions", "reads_event_only")

    def __init__(self, conditions: tuple[Condition, ...]) -> None:
        self.conditions = conditions
        self.reads_event_only = all(c.reads_event_only for c in conditions)

    def __repr__(self) -> str:
        return f"AllOf{self.conditions!r}"

    def holds(self, event: FlattenedEvent, context: PushContext) -> bool:
        memo = event.memo
        for condition in self.conditions:
            if condition.reads_event_only:
                holds = memo.get(condition)
                if holds is None:
                    holds = memo[condition] = condition.holds(event, context)
            else:
                holds = condition.holds(event, context)
            if not holds:
                return False
        return True


@lru_cache(maxsize=8192)
def all_of(conditions: tuple[Condition, ...]) -> AllOf:
    """The interned conjunction of interned conditions (pure: nothing invalidates it)."""
    return AllOf(conditions)


_CONTAINS_DISPLAY_NAME = ContainsDisplayName()
_NOT_AN_OBJECT = Never("not an object")
_ABSENT = ("absent",)
_INTERNED_CONDITIONS_MAX = 16


def compile_condition(condition: Any) -> Condition:
    """The compiled form of a condition as it appears in a push rule's JSON."""
    return _compile(condition)[0]


def compile_conditions(conditions: Sequence[Any]) -> AllOf:
    """The compiled conditions of an override or underride rule, as one conjunction. Interned
    when every condition is (short texts only, so the caches' memory stays bounded)."""
    compiled = [_compile(condition) for condition in conditions]
    parts = tuple(condition for condition, _ in compiled)
    if len(parts) <= _INTERNED_CONDITIONS_MAX and all(interned for _, interned in compiled):
        return all_of(parts)
    return AllOf(parts)


def _compile(condition: Any) -> tuple[Condition, bool]:
    """A compiled condition, and whether it is the interned one."""
    if not isinstance(condition, Mapping):
        return _NOT_AN_OBJECT, True
    value = condition.get("value", MISSING)
    params = (
        _str(condition.get("kind")),
        _str(condition.get("key")),
        _str(condition.get("pattern")),
        _ABSENT if value is MISSING else scalar_key(value),
        _str(condition.get("is")),
    )
    if any(len(text) > CACHED_TEXT_MAX for text in _texts(params)):
        return _build(*params), False  # not interned: keeps the cache's memory bounded
    return _interned(*params), True


def _texts(params: tuple[Any, ...]) -> Iterator[str]:
    for param in params:
        if isinstance(param, str):
            yield param
        elif isinstance(param, tuple) and isinstance(param[-1], str):
            yield param[-1]


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _build(
    kind: str | None, key: str | None, pattern: str | None, value: tuple[Any, ...] | None, is_: str | None
) -> Condition:
    """A compiled condition from its parameters (`value` tagged by `scalar_key`; None when it is of
    a type no condition compares)."""
    if kind == "event_match":
        if key is None or pattern is None:
            return Never("event_match needs a key and a pattern")
        return EventMatch(parse_path(key), compile_glob(pattern))
    if kind in ("event_property_is", "event_property_contains"):
        if key is None or value is None or value == _ABSENT:
            return Never(f"{kind} needs a key and a string, integer, boolean or null value")
        cls = EventPropertyIs if kind == "event_property_is" else EventPropertyContains
        return cls(parse_path(key), value)
    if kind == "contains_display_name":
        return _CONTAINS_DISPLAY_NAME
    if kind == "room_member_count":
        parsed = _MEMBER_COUNT.fullmatch(is_) if is_ is not None else None
        if parsed is None:
            return Never("room_member_count needs `is`: a number, optionally after ==, <, >, <= or >=")
        return RoomMemberCount(_COMPARISONS[parsed[1] or "=="], int(parsed[2]), is_)
    if kind == "sender_notification_permission":
        if key is None:
            return Never("sender_notification_permission needs a key")
        return SenderNotificationPermission(key)
    return Never(f"unknown condition kind {kind!r}")


# Interned by parameters: a pure function of them, so nothing invalidates it.
_interned = lru_cache(maxsize=8192)(_build)
