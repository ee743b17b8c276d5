"""The authorisation rule for m.room.power_levels events (rule 10 in v1-5, 9 in v6-11, 10 in v12).

What a new power levels event may contain, and which changes its sender may make: nobody
raises anything above their own level, nor touches a level above theirs, nor changes a user
at or above their own level other than themselves.
"""

from collections.abc import Mapping
from typing import Any

from homeserver.core.auth.errors import AuthError
from homeserver.core.auth.power_levels import (
    NAMED_LEVEL_DEFAULTS,
    PowerLevel,
    PowerLevels,
    is_integer,
    parse_power_level,
)
from homeserver.core.events import Event
from homeserver.core.ids import parse_user_id
from homeserver.core.room_versions import RoomVersion

_NAMED_LEVELS = tuple(NAMED_LEVEL_DEFAULTS)


def check_power_levels_change(room_version: RoomVersion, event: Event, power: PowerLevels) -> None:
    """Whether `event` (an m.room.power_levels event) may replace `power.event`; AuthError if not.

    `power` is the room's current power levels, the sender's level is read from it.

    Versions 1-9 accept strings and floats as levels. Where such a value in the new event
    cannot be read as a level and must be compared, the event is rejected (the spec leaves the
    comparison undefined); an unreadable value in the *current* event counts as absent, so an
    old oddity cannot freeze the room's power levels for good.
    """
    content = event.content
    if room_version.enforce_int_power_levels:
        for name in _NAMED_LEVELS:
            if name in content and not is_integer(content[name]):
                raise AuthError(f"Power level '{name}' must be an integer")
        for name in ("events", "notifications"):
            if name in content:
                value = content[name]
                if not isinstance(value, Mapping) or not all(is_integer(v) for v in value.values()):
                    raise AuthError(f"Power levels '{name}' must be an object of integers")
    _check_users(room_version, content)
    if room_version.privileged_room_creators:
        users = content.get("users", {})
        creators = sorted(power.creators.intersection(users))
        if creators:
            raise AuthError(f"Room creators cannot be given a power level: {', '.join(creators)}")

    current = power.event
    if current is None:
        return
    sender_level = power.user_level(event.sender)
    old, new = current.content, content

    for name in _NAMED_LEVELS:
        _check_change(name, _old_level(power, old.get(name)), _new_level(power, new, name), sender_level)

    level_maps = ("events", "notifications") if room_version.limit_notifications_power_levels else ("events",)
    for map_name in level_maps:
        old_map, new_map = _old_map(old, map_name), _new_map(new, map_name)
        for key in old_map.keys() | new_map.keys():
            old_value = _old_level(power, old_map.get(key))
            new_value = _new_level(power, new_map, key)
            _check_change(f"{map_name}.{key}", old_value, new_value, sender_level)

    old_users, new_users = _old_map(old, "users"), _new_map(new, "users")
    for user_id in old_users.keys() | new_users.keys():
        old_value = _old_level(power, old_users.get(user_id))
        new_value = _new_level(power, new_users, user_id)
        if old_value == new_value:
            continue
        if old_value is not None and user_id != event.sender and old_value >= sender_level:
            raise AuthError(f"Cannot change the power level of {user_id}, who is not below you")
        if new_value is not None and new_value > sender_level:
            raise AuthError(f"Cannot give {user_id} a power level above your own")


def _check_users(room_version: RoomVersion, content: Mapping[str, Any]) -> None:
    if "users" not in content:
        return
    users = content["users"]
    if not isinstance(users, Mapping):
        raise AuthError("Power levels 'users' must be an object")
    for user_id, level in users.items():
        try:
            parse_user_id(user_id)
        except ValueError:
            raise AuthError(f"Not a valid user id in power levels: {user_id!r}") from None
        if parse_power_level(room_version, level) is None:
            raise AuthError(f"Not a valid power level for {user_id}: {level!r}")


def _check_change(name: str, old: int | None, new: int | None, sender_level: PowerLevel) -> None:
    """Rules for a level that was added (old None), removed (new None) or changed."""
    if old == new:
        return
    if old is not None and old > sender_level:
        raise AuthError(f"Cannot change power level '{name}' from above your own level")
    if new is not None and new > sender_level:
        raise AuthError(f"Cannot set power level '{name}' above your own level")


def _old_level(power: PowerLevels, value: Any) -> int | None:
    return None if value is None else parse_power_level(power.room_version, value)


def _new_level(power: PowerLevels, container: Mapping[str, Any], key: str) -> int | None:
    if key not in container:
        return None
    level = parse_power_level(power.room_version, container[key])
    if level is None:
        raise AuthError(f"Not a valid power level for '{key}': {container[key]!r}")
    return level


def _old_map(content: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = content.get(name)
    return value if isinstance(value, Mapping) else {}


def _new_map(content: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = content.get(name, {})
    if not isinstance(value, Mapping):
        raise AuthError(f"Power levels '{name}' must be an object")
    return value
