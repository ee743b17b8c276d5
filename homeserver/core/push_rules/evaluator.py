"""Push rule evaluation: the actions of the first enabled rule that matches an event.

Kinds are checked in the spec's order, override, content, room, sender, underride, and rules of
a kind in the order the ruleset lists them; `.m.rule.master` always comes first of all ("this one
has always a higher priority than other rules, even user defined ones").

A ruleset is compiled once (`compile_ruleset`): disabled rules dropped, globs and key paths
parsed, conditions interned. An event is flattened once (`FlattenedEvent`). Evaluating one event
for every member of a room is then a walk over each member's compiled rules, and the conditions
that read only the event are answered once per event for all of them.
"""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from homeserver.core.events import Event
from homeserver.core.frozen_json import freeze, thaw
from homeserver.core.push_rules.actions import strip_historical
from homeserver.core.push_rules.conditions import AllOf, Never, compile_conditions
from homeserver.core.push_rules.context import PushContext
from homeserver.core.push_rules.flattened import FlattenedEvent
from homeserver.core.push_rules.patterns import Glob, compile_glob

KINDS: tuple[str, ...] = ("override", "content", "room", "sender", "underride")
MASTER_RULE_ID = ".m.rule.master"


class CompiledRule:
    """One enabled rule: its id and kind, what it tests, and its actions (read-only, historical
    actions stripped)."""

    __slots__ = ("kind", "rule_id", "actions", "_conditions", "_glob", "_never")
    _conditions: AllOf | None

    def __init__(self, kind: str, rule: Mapping[str, Any]) -> None:
        self.kind = kind
        self.rule_id: str = rule["rule_id"]
        actions = rule.get("actions")
        self.actions: tuple[Any, ...] = freeze(strip_historical(actions if isinstance(actions, list | tuple) else ()))
        self._conditions = None
        self._glob: Glob | None = None
        self._never = False
        if kind in ("override", "underride"):
            conditions = rule.get("conditions", ())
            if isinstance(conditions, list | tuple):
                self._conditions = compile_conditions(conditions)
                self._never = any(isinstance(c, Never) for c in self._conditions.conditions)
            else:
                self._never = True
        elif kind == "content":
            pattern = rule.get("pattern")
            if isinstance(pattern, str):
                self._glob = compile_glob(pattern)
            else:
                self._never = True

    def __repr__(self) -> str:
        return f"<CompiledRule {self.kind}/{self.rule_id}>"

    def matches(self, event: FlattenedEvent, context: PushContext) -> bool:
        conditions = self._conditions
        if conditions is not None and not self._never:
            if not conditions.reads_event_only:
                return conditions.holds(event, context)
            memo = event.memo
            holds = memo.get(conditions)
            if holds is None:
                holds = memo[conditions] = conditions.holds(event, context)
            return holds
        if self._never:
            return False
        if self.kind == "room":
            return event.room_id == self.rule_id
        if self.kind == "sender":
            return event.sender == self.rule_id
        glob, body = self._glob, event.body
        if glob is None or body is None:
            return False
        found = event.memo.get(glob)  # users with the same content pattern: one search per event
        if found is None:
            found = event.memo[glob] = glob.matches_words(body)
        return found


class CompiledRuleset:
    """A user's push rules ready to evaluate: the enabled ones, in the order they are checked."""

    __slots__ = ("rules",)

    def __init__(self, rules: Sequence[CompiledRule]) -> None:
        self.rules = tuple(rules)

    def __repr__(self) -> str:
        return f"<CompiledRuleset of {len(self.rules)} enabled rules>"

    def first_match(self, event: FlattenedEvent, context: PushContext) -> CompiledRule | None:
        """The rule that decides the actions for `context.user_id`, or None.

        None too for the user's own events: "Homeservers MUST NOT notify the Push Gateway for
        events that the user has sent themselves."
        """
        if event.sender == context.user_id:
            return None
        for rule in self.rules:
            if rule.matches(event, context):
                return rule
        return None


def _is_enabled(rule: Mapping[str, Any]) -> bool:
    # `enabled` is required by the schema; a rule stored without it was created enabled.
    return rule.get("enabled", True) is not False


def compile_ruleset(ruleset: Mapping[str, Any] | CompiledRuleset) -> CompiledRuleset:
    """Compile the client API's shape: {"global": {"override": [...], ...}}, or the inner object.

    Disabled rules, rules without a string `rule_id` and unknown kinds are left out. Malformed
    rules stay in but never match, as a rule with an unrecognised condition does.
    """
    if isinstance(ruleset, CompiledRuleset):
        return ruleset
    kinds = ruleset.get("global", ruleset)
    compiled: list[CompiledRule] = []
    for kind in KINDS:
        rules = kinds.get(kind) if isinstance(kinds, Mapping) else None
        if not isinstance(rules, list | tuple):
            continue
        for rule in rules:
            if isinstance(rule, Mapping) and isinstance(rule.get("rule_id"), str) and _is_enabled(rule):
                compiled.append(CompiledRule(kind, rule))
    master = [r for r in compiled if r.kind == "override" and r.rule_id == MASTER_RULE_ID]
    return CompiledRuleset(master + [r for r in compiled if r not in master])


def flatten(event: Mapping[str, Any] | Event | FlattenedEvent) -> FlattenedEvent:
    """The event flattened for evaluation (as it is, if it already is)."""
    return event if isinstance(event, FlattenedEvent) else FlattenedEvent(event)


def evaluate(
    ruleset: Mapping[str, Any] | CompiledRuleset,
    event: Mapping[str, Any] | Event | FlattenedEvent,
    context: PushContext,
) -> list[Any] | None:
    """The actions (a new list) of the first enabled rule that matches the event for
    `context.user_id`, or None when no rule matches or the user sent the event.

    `[]` (a matching rule without actions, such as `.m.rule.suppress_notices`) and None both mean
    no notification; see `notification()`. For many users, pass a `CompiledRuleset` and a
    `FlattenedEvent` (or use `evaluate_for_users`).
    """
    rule = compile_ruleset(ruleset).first_match(flatten(event), context)
    return None if rule is None else thaw(rule.actions)


def evaluate_for_users(
    event: Mapping[str, Any] | Event | FlattenedEvent,
    users: Iterable[tuple[CompiledRuleset, PushContext]],
) -> dict[str, list[Any]]:
    """`evaluate` for each (ruleset, context) pair, flattening the event once: user id -> actions,
    for the users a rule matched for."""
    flat = flatten(event)
    results: dict[str, list[Any]] = {}
    for ruleset, context in users:
        rule = ruleset.first_match(flat, context)
        if rule is not None:
            results[context.user_id] = thaw(rule.actions)
    return results
