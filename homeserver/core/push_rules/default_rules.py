"""The server-default push rules (push module, "Predefined Rules", spec v1.19) and how a user's
own rules are placed among them.

v1.17 removed the legacy mention rules that looked at `content.body` (MSC4210):
`.m.rule.contains_display_name`, `.m.rule.roomnotif` and the content rule
`.m.rule.contains_user_name` are no longer defaults, so there are no default content rules.
Mentions are `.m.rule.is_user_mention` and `.m.rule.is_room_mention` (`m.mentions`).
"""

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from homeserver.core.push_rules.evaluator import KINDS, MASTER_RULE_ID

_USER = "[the user's Matrix ID]"  # the spec's placeholder, replaced by the user's id

_SOUND_DEFAULT = {"set_tweak": "sound", "value": "default"}
_HIGHLIGHT = {"set_tweak": "highlight"}


def _type_is(event_type: str) -> dict[str, Any]:
    return {"kind": "event_match", "key": "type", "pattern": event_type}


_STATE_KEY_EMPTY = {"kind": "event_match", "key": "state_key", "pattern": ""}


def _rule(rule_id: str, conditions: list[dict[str, Any]], actions: list[Any], enabled: bool = True) -> dict[str, Any]:
    return {"rule_id": rule_id, "default": True, "enabled": enabled, "conditions": conditions, "actions": actions}


_OVERRIDE = [
    _rule(MASTER_RULE_ID, [], [], enabled=False),
    _rule(".m.rule.suppress_notices", [{"kind": "event_match", "key": "content.msgtype", "pattern": "m.notice"}], []),
    _rule(
        ".m.rule.invite_for_me",
        [
            _type_is("m.room.member"),
            {"kind": "event_match", "key": "content.membership", "pattern": "invite"},
            {"kind": "event_match", "key": "state_key", "pattern": _USER},
        ],
        ["notify", _SOUND_DEFAULT],
    ),
    _rule(".m.rule.member_event", [_type_is("m.room.member")], []),
    _rule(
        ".m.rule.is_user_mention",
        [{"kind": "event_property_contains", "key": "content.m\\.mentions.user_ids", "value": _USER}],
        ["notify", _SOUND_DEFAULT, _HIGHLIGHT],
    ),
    _rule(
        ".m.rule.is_room_mention",
        [
            {"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": True},
            {"kind": "sender_notification_permission", "key": "room"},
        ],
        ["notify", _HIGHLIGHT],
    ),
    _rule(".m.rule.tombstone", [_type_is("m.room.tombstone"), _STATE_KEY_EMPTY], ["notify", _HIGHLIGHT]),
    _rule(".m.rule.reaction", [_type_is("m.reaction")], []),
    _rule(".m.rule.room.server_acl", [_type_is("m.room.server_acl"), _STATE_KEY_EMPTY], []),
    _rule(
        ".m.rule.suppress_edits",
        [{"kind": "event_property_is", "key": "content.m\\.relates_to.rel_type", "value": "m.replace"}],
        [],
    ),
]

_ONE_TO_ONE = {"kind": "room_member_count", "is": "2"}

_UNDERRIDE = [
    _rule(".m.rule.call", [_type_is("m.call.invite")], ["notify", {"set_tweak": "sound", "value": "ring"}]),
    _rule(".m.rule.encrypted_room_one_to_one", [_ONE_TO_ONE, _type_is("m.room.encrypted")], ["notify", _SOUND_DEFAULT]),
    _rule(".m.rule.room_one_to_one", [_ONE_TO_ONE, _type_is("m.room.message")], ["notify", _SOUND_DEFAULT]),
    _rule(".m.rule.message", [_type_is("m.room.message")], ["notify"]),
    _rule(".m.rule.encrypted", [_type_is("m.room.encrypted")], ["notify"]),
]

_DEFAULTS: Mapping[str, list[dict[str, Any]]] = {
    "override": _OVERRIDE,
    "content": [],
    "room": [],
    "sender": [],
    "underride": _UNDERRIDE,
}


def _for_user(value: Any, user_id: str) -> Any:
    if value == _USER:
        return user_id
    if isinstance(value, dict):
        return {k: _for_user(v, user_id) for k, v in value.items()}
    if isinstance(value, list):
        return [_for_user(v, user_id) for v in value]
    return value


def default_ruleset(user_id: str) -> dict[str, Any]:
    """The server-default rules of `user_id` in the client API's shape (a new, mutable object):
    {"global": {"override": [...], "content": [], "room": [], "sender": [], "underride": [...]}}."""
    return {"global": {kind: _for_user(_DEFAULTS[kind], user_id) for kind in KINDS}}


def is_server_default(rule_id: str) -> bool:
    """Server-default rule ids start with a dot; users may not create such rules."""
    return rule_id.startswith(".")


def merge_ruleset(
    user_id: str,
    user_rules: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    default_changes: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """A user's whole ruleset, in the order rules are checked: within each kind the user's own
    rules (most important first, as given) come before the server-default ones, except that
    `.m.rule.master` precedes everything.

    `user_rules`: kind -> the user's rules of that kind (each given `default: false`, and
    `enabled: true` unless it says otherwise). `default_changes`: (kind, rule_id) -> the
    `enabled` and/or `actions` the user set on a server-default rule.
    """
    user_rules = user_rules or {}
    default_changes = default_changes or {}
    defaults = default_ruleset(user_id)["global"]
    merged: dict[str, list[dict[str, Any]]] = {}
    for kind in KINDS:
        for rule in defaults[kind]:
            change = default_changes.get((kind, rule["rule_id"]), {})
            for field in ("enabled", "actions"):
                if field in change:
                    rule[field] = copy.deepcopy(change[field])
        own = [{**copy.deepcopy(dict(rule)), "default": False} for rule in user_rules.get(kind, ())]
        for rule in own:
            rule.setdefault("enabled", True)
        master = [rule for rule in defaults[kind] if kind == "override" and rule["rule_id"] == MASTER_RULE_ID]
        rest = [rule for rule in defaults[kind] if not (kind == "override" and rule["rule_id"] == MASTER_RULE_ID)]
        merged[kind] = master + own + rest
    return {"global": merged}
