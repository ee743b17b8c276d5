"""The push rules client API (push module, "Client behaviour": /pushrules/): a user's rules merged with
the server-default ones, and changes to them.

After each change the user's whole ruleset is written as the `m.push_rules` global account data
(clients read it from /sync, and the write wakes their long-polls), and whoever caches rules hears
of it through `on_change`. Changes of one user run one at a time, so that account data always ends
up showing the last one.
"""

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from homeserver.core.errors import MatrixError
from homeserver.core.ids import parse_user_id
from homeserver.core.push_rules import HISTORICAL_ACTIONS, KINDS, default_ruleset, is_server_default, merge_ruleset
from homeserver.core.requester import Requester
from homeserver.handlers.account_data import PUSH_RULES, AccountDataHandler
from homeserver.handlers.keyed_lock import KeyedLock
from homeserver.storage.push_rules import NewRule, PushRuleStore, UnknownRelativeRule, UserRules

SCOPE = "global"  # the only ruleset the spec defines
MAX_RULE_ID_BYTES = 255  # a key of the table; room and user ids are no longer
_ACTIONS = frozenset({"notify", *HISTORICAL_ACTIONS})


def _not_found() -> MatrixError:
    return MatrixError(404, "M_NOT_FOUND", "The push rule was not found.")


def _invalid(message: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_PARAM", message)


def check_scope(scope: str) -> None:
    if scope != SCOPE:
        raise _invalid(f"Unknown push rule scope {scope!r}: the only scope is {SCOPE!r}.")


def check_kind(scope: str, kind: str) -> None:
    """400 M_INVALID_PARAM unless the scope is `global` and the kind one of the five."""
    check_scope(scope)
    if kind not in KINDS:
        raise _invalid(f"Unknown push rule kind {kind!r}: it is one of {', '.join(KINDS)}.")


def check_new_rule_id(kind: str, rule_id: str) -> None:
    """The rule ids a user may create: not a server default's, no slashes, and for room and sender
    rules the id of the room or user they are about."""
    if is_server_default(rule_id):
        raise _invalid("Rule ids starting with '.' are reserved for server-default rules.")
    if "/" in rule_id or "\\" in rule_id:
        raise _invalid("Rule ids may not contain slashes or backslashes.")
    if len(rule_id.encode()) > MAX_RULE_ID_BYTES:
        raise _invalid(f"Rule ids may be at most {MAX_RULE_ID_BYTES} bytes.")
    if kind == "room" and (not rule_id.startswith("!") or len(rule_id) < 2):
        raise _invalid("The rule id of a room rule is the id of the room it is about.")
    if kind == "sender":
        try:
            parse_user_id(rule_id)
        except ValueError:
            raise _invalid("The rule id of a sender rule is the id of the user it is about.") from None


def check_actions(actions: list[Any]) -> None:
    """Each action is `notify` (or a historical one, kept and ignored) or a `set_tweak` object."""
    for action in actions:
        if isinstance(action, str):
            if action not in _ACTIONS:
                raise _invalid(f"Unknown action {action!r}.")
        elif not isinstance(action, dict) or not isinstance(action.get("set_tweak"), str):
            raise _invalid("Each action is a string or an object with a string set_tweak.")


def _check_conditions(conditions: list[Any]) -> None:
    # Any kind is kept: an unrecognised condition never matches, as the spec says, and a later
    # version of this server may recognise it.
    for condition in conditions:
        if not isinstance(condition, dict) or not isinstance(condition.get("kind"), str):
            raise _invalid("Each condition is an object with a string kind.")


def check_rule(kind: str, rule: NewRule) -> NewRule:
    """The rule to store for a PUT body (its fields as sent), keeping only what its kind uses."""
    check_actions(rule.actions)
    if kind in ("override", "underride"):
        if rule.conditions is None:
            raise MatrixError(400, "M_MISSING_PARAM", f"An {kind} rule needs conditions.")
        _check_conditions(rule.conditions)
        return NewRule(rule.actions, conditions=rule.conditions)
    if kind == "content":
        if rule.pattern is None:
            raise MatrixError(400, "M_MISSING_PARAM", "A content rule needs a pattern.")
        return NewRule(rule.actions, pattern=rule.pattern)
    return NewRule(rule.actions)


def merged(user_id: str, rules: UserRules) -> dict[str, Any]:
    """The user's whole ruleset in the client API's shape: {"global": {kind: [rule, ...]}}."""
    return merge_ruleset(user_id, rules.own, rules.default_changes)


def _find(ruleset: dict[str, Any], kind: str, rule_id: str) -> dict[str, Any] | None:
    return next((rule for rule in ruleset[SCOPE][kind] if rule["rule_id"] == rule_id), None)


def _check_default_exists(user_id: str, kind: str, rule_id: str) -> None:
    if _find(default_ruleset(user_id), kind, rule_id) is None:
        raise _not_found()


class PushRulesHandler:
    def __init__(self, store: PushRuleStore, account_data: AccountDataHandler) -> None:
        self._store = store
        self._account_data = account_data
        self._locks = KeyedLock()
        # Users with rows in the store: everyone else has exactly the server defaults, which needs no
        # read. Loaded on first use; `_pending` keeps the changes made while it loads.
        self._customised: set[str] | None = None
        self._pending: dict[str, bool] = {}
        # Called with the user id after each change is stored (caches of compiled rules).
        self.on_change: list[Callable[[str], None]] = []

    # -- for sync and push evaluation ----------------------------------------------------------

    async def customised_users(self) -> set[str]:
        """Users whose rules may differ from the server defaults (the live set: do not change it)."""
        if self._customised is None:
            loaded = await self._store.users_with_rules()
            if self._customised is None:  # a concurrent first use may have finished first
                self._customised, pending, self._pending = loaded, self._pending, {}
                for user_id, has_rules in pending.items():
                    self._note(user_id, has_rules)
        return self._customised

    async def rulesets(self, user_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """user id -> their merged ruleset; one read for all those who changed anything."""
        user_ids = list(user_ids)
        customised = await self.customised_users()
        changed = [user_id for user_id in user_ids if user_id in customised]
        stored = await self._store.rules_for_users(changed) if changed else {}
        return {user_id: merged(user_id, stored.get(user_id, UserRules())) for user_id in user_ids}

    async def ruleset(self, user_id: str) -> dict[str, Any]:
        """The user's merged ruleset, {"global": {...}}: what GET /pushrules/ answers and `m.push_rules` holds."""
        return (await self.rulesets([user_id]))[user_id]

    # -- the client API ------------------------------------------------------------------------

    async def get_rules(self, requester: Requester, scope: str | None = None) -> dict[str, Any]:
        """All the user's rulesets, or (given a scope) the one ruleset: {"override": [...], ...}."""
        if scope is not None:
            check_scope(scope)
        ruleset = await self.ruleset(requester.user_id)
        return ruleset if scope is None else ruleset[scope]

    async def get_rule(self, requester: Requester, scope: str, kind: str, rule_id: str) -> dict[str, Any]:
        check_kind(scope, kind)
        rule = _find(await self.ruleset(requester.user_id), kind, rule_id)
        if rule is None:
            raise _not_found()
        return rule

    async def put_rule(
        self,
        requester: Requester,
        scope: str,
        kind: str,
        rule_id: str,
        rule: NewRule,
        before: str | None = None,
        after: str | None = None,
    ) -> None:
        """Create or update one of the user's rules, placed by `before`/`after`. `rule` holds the fields of
        the request's body, whatever the kind; those the kind does not use are dropped."""
        check_kind(scope, kind)
        check_new_rule_id(kind, rule_id)
        rule = check_rule(kind, rule)
        user_id = requester.user_id
        for relative in (before, after):
            if relative is not None and is_server_default(relative):
                raise _invalid("A rule cannot be placed relative to a server-default rule.")
            if relative == rule_id:
                raise _invalid("A rule cannot be placed relative to itself.")
        try:
            await self._change(user_id, lambda: self._store.put_rule(user_id, kind, rule_id, rule, before, after))
        except UnknownRelativeRule as e:
            # The spec's own example of this 400: "before/after rule not found: someRuleId".
            raise MatrixError(400, "M_UNKNOWN", f"before/after rule not found: {e.rule_id}") from None

    async def delete_rule(self, requester: Requester, scope: str, kind: str, rule_id: str) -> None:
        check_kind(scope, kind)
        if is_server_default(rule_id):
            raise _invalid("Server-default rules cannot be deleted; they can be disabled.")
        user_id = requester.user_id
        await self._change(user_id, lambda: self._store.delete_rule(user_id, kind, rule_id))

    async def set_enabled(self, requester: Requester, scope: str, kind: str, rule_id: str, enabled: bool) -> None:
        check_kind(scope, kind)
        user_id = requester.user_id
        if is_server_default(rule_id):
            _check_default_exists(user_id, kind, rule_id)
            await self._change(user_id, lambda: self._store.set_default_enabled(user_id, kind, rule_id, enabled))
        else:
            await self._change(user_id, lambda: self._store.set_enabled(user_id, kind, rule_id, enabled))

    async def set_actions(
        self, requester: Requester, scope: str, kind: str, rule_id: str, actions: list[Any]
    ) -> None:
        check_kind(scope, kind)
        check_actions(actions)
        user_id = requester.user_id
        if is_server_default(rule_id):
            _check_default_exists(user_id, kind, rule_id)
            await self._change(user_id, lambda: self._store.set_default_actions(user_id, kind, rule_id, actions))
        else:
            await self._change(user_id, lambda: self._store.set_actions(user_id, kind, rule_id, actions))

    async def _change(self, user_id: str, change: Callable[[], Awaitable[UserRules | None]]) -> None:
        """Run a change of the user's rules in the store (None: no such rule) and publish the result."""
        async with self._locks.hold(user_id):
            rules = await change()
            if rules is None:
                raise _not_found()
            # Note who has rules before telling the caches, so a reload they start sees the change.
            self._note(user_id, not rules.empty)
            for listener in self.on_change:
                listener(user_id)
            await self._account_data.put_global(user_id, PUSH_RULES, merged(user_id, rules))

    def _note(self, user_id: str, has_rules: bool) -> None:
        if self._customised is None:
            self._pending[user_id] = has_rules
        elif has_rules:
            self._customised.add(user_id)
        else:
            self._customised.discard(user_id)
