"""Users' push rules: their own rules, ordered by priority within each kind, and their changes to the
server-default rules (which live in code, not here). Every change is one transaction that also reads
back the user's rules as they are after it."""

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from homeserver.storage.database import Database, Txn

_IN_CHUNK = 500  # user ids per IN (...) query


class UnknownRelativeRule(Exception):
    """`before`/`after` named a rule the user does not have among their rules of that kind."""

    def __init__(self, rule_id: str) -> None:
        super().__init__(rule_id)
        self.rule_id = rule_id


@dataclass
class UserRules:
    """What a user changed: `own` is kind -> their rules, most important first, in the client API's
    shape (without `default`); `default_changes` is (kind, rule_id) -> the `enabled` and/or `actions`
    they set on a server-default rule."""

    own: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    default_changes: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.own and not self.default_changes


@dataclass(frozen=True)
class NewRule:
    """A rule as PUT sets it: `conditions` for override and underride rules, `pattern` for content
    rules, neither for room and sender rules."""

    actions: list[Any]
    conditions: list[Any] | None = None
    pattern: str | None = None


def _encode(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class PushRuleStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- reads --------------------------------------------------------------------------------

    async def users_with_rules(self) -> set[str]:
        """Everyone with a rule or a change to a default rule (and perhaps some who since undid theirs)."""
        rows = await self._db.run(
            "push_rules.users",
            lambda txn: txn.execute(
                "SELECT user_id FROM push_rules UNION SELECT user_id FROM push_rule_defaults"
            ).fetchall(),
            readonly=True,
        )
        return {user_id for (user_id,) in rows}

    async def rules_for_users(self, user_ids: Iterable[str]) -> dict[str, UserRules]:
        """user id -> their rules, for each of `user_ids` (empty for those without any)."""
        return await self._db.run("push_rules.for_users", _rules_for_users_txn, sorted(set(user_ids)), readonly=True)

    # -- changes: each returns the user's rules after it ---------------------------------------

    async def put_rule(
        self, user_id: str, kind: str, rule_id: str, rule: NewRule, before: str | None, after: str | None
    ) -> UserRules:
        """Create the rule, or update it in place. A new rule without `before`/`after` becomes the most
        important of its kind; with them (`before` wins), the rule moves to just above `before` or just
        below `after`. Raises UnknownRelativeRule if that rule does not exist."""
        return await self._db.run("push_rules.put", _put_rule_txn, user_id, kind, rule_id, rule, before, after)

    async def delete_rule(self, user_id: str, kind: str, rule_id: str) -> UserRules | None:
        """None if the user has no such rule."""
        return await self._db.run("push_rules.delete", _delete_rule_txn, user_id, kind, rule_id)

    async def set_enabled(self, user_id: str, kind: str, rule_id: str, enabled: bool) -> UserRules | None:
        """Enable or disable one of the user's own rules; None if they have no such rule."""
        return await self._db.run(
            "push_rules.set_enabled", _update_txn, user_id, kind, rule_id, "enabled", int(enabled)
        )

    async def set_actions(self, user_id: str, kind: str, rule_id: str, actions: list[Any]) -> UserRules | None:
        """Set the actions of one of the user's own rules; None if they have no such rule."""
        return await self._db.run(
            "push_rules.set_actions", _update_txn, user_id, kind, rule_id, "actions", _encode(actions)
        )

    async def set_default_enabled(self, user_id: str, kind: str, rule_id: str, enabled: bool) -> UserRules:
        """Enable or disable a server-default rule for the user (the caller knows it exists)."""
        return await self._db.run(
            "push_rules.set_default_enabled", _change_default_txn, user_id, kind, rule_id, "enabled", int(enabled)
        )

    async def set_default_actions(self, user_id: str, kind: str, rule_id: str, actions: list[Any]) -> UserRules:
        """Set the actions of a server-default rule for the user (the caller knows it exists)."""
        return await self._db.run(
            "push_rules.set_default_actions", _change_default_txn, user_id, kind, rule_id, "actions", _encode(actions)
        )


def _rules_for_users_txn(txn: Txn, user_ids: list[str]) -> dict[str, UserRules]:
    found = {user_id: UserRules() for user_id in user_ids}
    for start in range(0, len(user_ids), _IN_CHUNK):
        chunk = user_ids[start : start + _IN_CHUNK]
        marks = ",".join("?" * len(chunk))
        txn.execute(
            "SELECT user_id, kind, rule_id, conditions, pattern, actions, enabled FROM push_rules"
            f" WHERE user_id IN ({marks}) ORDER BY user_id, kind, priority DESC",
            chunk,
        )
        for user_id, kind, rule_id, conditions, pattern, actions, enabled in txn.fetchall():
            rule: dict[str, Any] = {"rule_id": rule_id, "enabled": bool(enabled), "actions": json.loads(actions)}
            if conditions is not None:
                rule["conditions"] = json.loads(conditions)
            if pattern is not None:
                rule["pattern"] = pattern
            found[user_id].own.setdefault(kind, []).append(rule)
        txn.execute(
            f"SELECT user_id, kind, rule_id, enabled, actions FROM push_rule_defaults WHERE user_id IN ({marks})",
            chunk,
        )
        for user_id, kind, rule_id, enabled, actions in txn.fetchall():
            change: dict[str, Any] = {}
            if enabled is not None:
                change["enabled"] = bool(enabled)
            if actions is not None:
                change["actions"] = json.loads(actions)
            found[user_id].default_changes[(kind, rule_id)] = change
    return found


def _read_txn(txn: Txn, user_id: str) -> UserRules:
    return _rules_for_users_txn(txn, [user_id])[user_id]


def _priority(txn: Txn, user_id: str, kind: str, rule_id: str) -> int | None:
    row = txn.execute(
        "SELECT priority FROM push_rules WHERE user_id = ? AND kind = ? AND rule_id = ?", (user_id, kind, rule_id)
    ).fetchone()
    return None if row is None else int(row[0])


def _put_rule_txn(
    txn: Txn, user_id: str, kind: str, rule_id: str, rule: NewRule, before: str | None, after: str | None
) -> UserRules:
    existing = txn.execute(
        "SELECT enabled FROM push_rules WHERE user_id = ? AND kind = ? AND rule_id = ?", (user_id, kind, rule_id)
    ).fetchone()
    conditions = None if rule.conditions is None else _encode(rule.conditions)
    actions = _encode(rule.actions)
    relative = before if before is not None else after
    if relative is None and existing is not None:
        # An update keeps the rule's place and whether it is enabled; only a new rule jumps to the front.
        txn.execute(
            "UPDATE push_rules SET conditions = ?, pattern = ?, actions = ?"
            " WHERE user_id = ? AND kind = ? AND rule_id = ?",
            (conditions, rule.pattern, actions, user_id, kind, rule_id),
        )
        return _read_txn(txn, user_id)
    txn.execute("DELETE FROM push_rules WHERE user_id = ? AND kind = ? AND rule_id = ?", (user_id, kind, rule_id))
    if relative is None:
        top = txn.execute(
            "SELECT max(priority) FROM push_rules WHERE user_id = ? AND kind = ?", (user_id, kind)
        ).fetchone()
        priority = 0 if top is None or top[0] is None else int(top[0]) + 1
    else:
        anchor = _priority(txn, user_id, kind, relative)
        if anchor is None:
            raise UnknownRelativeRule(relative)
        # Make room next to the anchor by moving the rules on that side of it one step further out.
        step = 1 if before is not None else -1
        side = ">" if before is not None else "<"
        txn.execute(
            f"UPDATE push_rules SET priority = priority + ? WHERE user_id = ? AND kind = ? AND priority {side} ?",
            (step, user_id, kind, anchor),
        )
        priority = anchor + step
    enabled = 1 if existing is None else int(existing[0])  # "When creating push rules, they MUST be enabled"
    txn.execute(
        "INSERT INTO push_rules (user_id, kind, rule_id, priority, conditions, pattern, actions, enabled)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (user_id, kind, rule_id, priority, conditions, rule.pattern, actions, enabled),
    )
    return _read_txn(txn, user_id)


def _delete_rule_txn(txn: Txn, user_id: str, kind: str, rule_id: str) -> UserRules | None:
    txn.execute("DELETE FROM push_rules WHERE user_id = ? AND kind = ? AND rule_id = ?", (user_id, kind, rule_id))
    return _read_txn(txn, user_id) if txn.rowcount else None


def _update_txn(txn: Txn, user_id: str, kind: str, rule_id: str, column: str, value: Any) -> UserRules | None:
    txn.execute(
        f"UPDATE push_rules SET {column} = ? WHERE user_id = ? AND kind = ? AND rule_id = ?",
        (value, user_id, kind, rule_id),
    )
    return _read_txn(txn, user_id) if txn.rowcount else None


def _change_default_txn(txn: Txn, user_id: str, kind: str, rule_id: str, column: str, value: Any) -> UserRules:
    txn.execute(
        f"INSERT INTO push_rule_defaults (user_id, kind, rule_id, {column}) VALUES (?, ?, ?, ?)"
        f" ON CONFLICT (user_id, kind, rule_id) DO UPDATE SET {column} = excluded.{column}",
        (user_id, kind, rule_id, value),
    )
    return _read_txn(txn, user_id)
