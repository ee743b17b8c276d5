"""Push rules (client-server API, "Push Notifications"): the server-default ruleset and the
evaluator that turns an event into each user's actions.

    ruleset = compile_ruleset(merge_ruleset(user_id, user_rules))     # once per user and change
    flat = FlattenedEvent(event)                                      # once per event
    actions = evaluate(ruleset, flat, PushContext(user_id, display_name, member_count, ...))
    notify, highlight, sound = notification(actions)
"""

from homeserver.core.push_rules.actions import (
    HISTORICAL_ACTIONS,
    NO_NOTIFICATION,
    Notification,
    notification,
    strip_historical,
    tweaks,
)
from homeserver.core.push_rules.conditions import Condition, compile_condition
from homeserver.core.push_rules.context import DEFAULT_NOTIFICATION_LEVEL, PushContext, notification_levels
from homeserver.core.push_rules.default_rules import default_ruleset, is_server_default, merge_ruleset
from homeserver.core.push_rules.evaluator import (
    KINDS,
    MASTER_RULE_ID,
    CompiledRule,
    CompiledRuleset,
    compile_ruleset,
    evaluate,
    evaluate_for_users,
    flatten,
)
from homeserver.core.push_rules.flattened import FlattenedEvent, parse_path
from homeserver.core.push_rules.patterns import Glob, compile_glob

__all__ = [
    "DEFAULT_NOTIFICATION_LEVEL",
    "HISTORICAL_ACTIONS",
    "KINDS",
    "MASTER_RULE_ID",
    "NO_NOTIFICATION",
    "CompiledRule",
    "CompiledRuleset",
    "Condition",
    "FlattenedEvent",
    "Glob",
    "Notification",
    "PushContext",
    "compile_condition",
    "compile_glob",
    "compile_ruleset",
    "default_ruleset",
    "evaluate",
    "evaluate_for_users",
    "flatten",
    "is_server_default",
    "merge_ruleset",
    "notification",
    "notification_levels",
    "parse_path",
    "strip_historical",
    "tweaks",
]
