"""Push rule actions (push module, "Actions"): what a matching rule asks for."""

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

# "Clients and homeservers MUST ignore these actions, for instance, by stripping them."
HISTORICAL_ACTIONS = frozenset({"dont_notify", "coalesce"})


class Notification(NamedTuple):
    """What actions mean for the user: a notification, and whether it is highlighted or sounds."""

    notify: bool
    highlight: bool
    sound: str | None


NO_NOTIFICATION = Notification(False, False, None)


def strip_historical(actions: Iterable[Any]) -> list[Any]:
    """The actions without `dont_notify` and `coalesce`: ["dont_notify"] is the same as []."""
    return [action for action in actions if not (isinstance(action, str) and action in HISTORICAL_ACTIONS)]


def tweaks(actions: Iterable[Any]) -> dict[str, Any]:
    """The `set_tweak` actions as the `tweaks` object sent to a push gateway; a later tweak of the
    same name wins, and a `highlight` tweak without a value is true."""
    result: dict[str, Any] = {}
    for action in actions:
        if isinstance(action, Mapping) and isinstance(action.get("set_tweak"), str):
            name = action["set_tweak"]
            if "value" in action:
                result[name] = action["value"]
            elif name == "highlight":
                result[name] = True
    return result


def notification(actions: Iterable[Any] | None) -> Notification:
    """(notify, highlight, sound) for the actions of the matching rule (None: no rule matched).

    Tweaks shape a notification, so without `notify` there is none to highlight or sound.
    `highlight` is true when a highlight tweak has no value or the value true; `sound` is the
    sound tweak's value when it is a string.
    """
    if actions is None:
        return NO_NOTIFICATION
    actions = list(actions)
    if "notify" not in actions:
        return NO_NOTIFICATION
    found = tweaks(actions)
    sound = found.get("sound")
    return Notification(True, found.get("highlight", False) is True, sound if isinstance(sound, str) else None)
