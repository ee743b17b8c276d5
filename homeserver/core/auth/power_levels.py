"""Power levels as the authorisation rules read them, in every room version.

The m.room.power_levels schema gives the defaults; rooms/fragments/v1-stringy-power-levels.md and
v1-floaty-power-levels.md say how versions 1-9 read strings and floats; v10 accepts only
integers; v12 gives room creators an infinite level (rooms/v12.md).
"""

import math
import re
from collections.abc import Mapping
from typing import Any

from homeserver.core.auth.auth_types import CREATE_KEY, POWER_LEVELS_KEY, StateKey
from homeserver.core.events import Event
from homeserver.core.room_versions import RoomVersion

# A power level: an integer, or infinity for a v12 room creator. Comparisons mix the two freely.
PowerLevel = int | float
CREATOR_POWER_LEVEL: PowerLevel = math.inf

# The levels that are plain properties of the content, with their defaults.
NAMED_LEVEL_DEFAULTS: Mapping[str, int] = {
    "users_default": 0,
    "events_default": 0,
    "state_default": 50,
    "ban": 50,
    "redact": 50,
    "kick": 50,
    "invite": 0,
}
# v1-v11: with no m.room.power_levels event the creator has this level.
_CREATOR_LEVEL_WITHOUT_EVENT = 100

# "a single base 10 integer ... optionally prefixed with a single - or +, optionally with any
# number of leading or trailing whitespace characters". ASCII only: int() alone would also take
# "1_000" and non-ASCII digits.
_STRING_INTEGER = re.compile(r"\s*[+-]?[0-9]+\s*", re.ASCII)


def is_integer(value: Any) -> bool:
    """A JSON integer (booleans are not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def parse_power_level(room_version: RoomVersion, value: Any) -> int | None:
    """The integer a power level value stands for, or None if it is not a valid one.

    v10+: integers only. v1-9 also take integer strings (`" +0100 "` is 100) and floats,
    truncated towards zero; NaN and infinities are invalid.
    """
    if is_integer(value):
        return value
    if room_version.enforce_int_power_levels or isinstance(value, bool):
        return None
    if isinstance(value, str) and _STRING_INTEGER.fullmatch(value):
        return int(value)
    if isinstance(value, float) and math.isfinite(value):
        return math.trunc(value)
    return None


def original_creator(room_version: RoomVersion, create: Event | None) -> str | None:
    """The user who created the room: `content.creator` in v1-10, the create event's sender from v11."""
    if create is None:
        return None
    if room_version.implicit_room_creator:
        return create.sender
    creator = create.content.get("creator")
    return creator if isinstance(creator, str) else None


def room_creators(room_version: RoomVersion, create: Event | None) -> frozenset[str]:
    """The room creators: from v12 the create event's sender plus its `additional_creators`."""
    creator = original_creator(room_version, create)
    creators = {creator} if creator is not None else set()
    if room_version.privileged_room_creators and create is not None:
        additional = create.content.get("additional_creators")
        if isinstance(additional, list | tuple):
            creators.update(user for user in additional if isinstance(user, str))
    return frozenset(creators)


class PowerLevels:
    """Who may do what in a room: the current m.room.power_levels (or its absence) and the creators."""

    __slots__ = ("room_version", "event", "creators", "_content")

    def __init__(self, room_version: RoomVersion, power_levels: Event | None, create: Event | None) -> None:
        self.room_version = room_version
        self.event = power_levels
        self.creators = room_creators(room_version, create)
        self._content: Mapping[str, Any] = power_levels.content if power_levels is not None else {}

    @classmethod
    def from_state(cls, room_version: RoomVersion, state: Mapping[StateKey, Event]) -> "PowerLevels":
        return cls(room_version, state.get(POWER_LEVELS_KEY), state.get(CREATE_KEY))

    def _parse(self, value: Any) -> int | None:
        return parse_power_level(self.room_version, value)

    def named_level(self, name: str) -> int:
        """`users_default`, `events_default`, `state_default`, `ban`, `redact`, `kick` or `invite`."""
        level = self._parse(self._content.get(name))
        return NAMED_LEVEL_DEFAULTS[name] if level is None else level

    def user_level(self, user_id: str) -> PowerLevel:
        if self.room_version.privileged_room_creators and user_id in self.creators:
            return CREATOR_POWER_LEVEL
        if self.event is None:
            # v1-11: the creator has 100 until there are power levels; v12 creators are handled above.
            if not self.room_version.privileged_room_creators and user_id in self.creators:
                return _CREATOR_LEVEL_WITHOUT_EVENT
            return NAMED_LEVEL_DEFAULTS["users_default"]
        users = self._content.get("users")
        level = self._parse(users.get(user_id)) if isinstance(users, Mapping) else None
        return self.named_level("users_default") if level is None else level

    def send_level(self, event_type: str, is_state: bool) -> int:
        """The *required power level* to send an event of this type."""
        events = self._content.get("events")
        level = self._parse(events.get(event_type)) if isinstance(events, Mapping) else None
        if level is not None:
            return level
        return self.named_level("state_default" if is_state else "events_default")
