"""What push rule conditions need beyond the event: whose rules they are, and the room around it."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from homeserver.core.auth.power_levels import PowerLevel, PowerLevels, parse_power_level

# m.room.power_levels, `notifications.room`: "Defaults to 50 if unspecified". The spec gives no
# default for other keys; they take the same one.
DEFAULT_NOTIFICATION_LEVEL = 50


@dataclass(frozen=True, slots=True)
class PushContext:
    """One user's view of the room an event is in, at that event.

    `member_count` is the number of joined members (`room_member_count`); `sender_power_level`
    the sender's level (infinite for a v12 creator) and `notification_levels` the room's
    `notifications` power levels (`sender_notification_permission`). A None leaves the
    conditions that need it unmatched. For a room, build one context with `replace` per member,
    or construct each: all fields but the user's own are the same for every member.
    """

    user_id: str
    display_name: str | None = None
    member_count: int | None = None
    sender_power_level: PowerLevel | None = None
    notification_levels: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def notification_level(self, key: str) -> int:
        """The power level needed to trigger notifications of kind `key` (e.g. "room")."""
        level = self.notification_levels.get(key)
        return level if isinstance(level, int) and not isinstance(level, bool) else DEFAULT_NOTIFICATION_LEVEL


def notification_levels(power_levels: PowerLevels) -> Mapping[str, int]:
    """The valid entries of `content.notifications` of the room's m.room.power_levels, parsed as
    the room version reads power levels (integer strings in v1-9). Invalid entries are left out,
    so their default applies."""
    content: Mapping[str, Any] = power_levels.event.content if power_levels.event is not None else {}
    notifications = content.get("notifications")
    if not isinstance(notifications, Mapping):
        return MappingProxyType({})
    levels = {}
    for key, value in notifications.items():
        level = parse_power_level(power_levels.room_version, value)
        if level is not None:
            levels[key] = level
    return MappingProxyType(levels)
