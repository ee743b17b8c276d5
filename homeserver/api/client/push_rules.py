"""The push rules API: GET /pushrules/ and /pushrules/global/, GET/PUT/DELETE
/pushrules/global/{kind}/{ruleId}, and GET/PUT of a rule's /enabled and /actions."""

from homeserver.handlers.push_rules import PushRulesHandler
from homeserver.http.request import ApiRequest, optional_field, require_field
from homeserver.http.routing import Endpoint
from homeserver.storage.push_rules import NewRule

_BASE = "/_matrix/client/v3/pushrules"
_RULE = _BASE + "/{scope}/{kind}/{rule_id}"


class _PushRulesEndpoint(Endpoint):
    def __init__(self, push_rules: PushRulesHandler) -> None:
        self._push_rules = push_rules


class GetAllRules(_PushRulesEndpoint):
    method, path = "GET", _BASE + "/"

    async def handle(self, request: ApiRequest) -> tuple[int, dict]:
        requester = await request.require_user()
        return 200, await self._push_rules.get_rules(requester)


class GetRuleset(_PushRulesEndpoint):
    method, path = "GET", _BASE + "/{scope}/"

    async def handle(self, request: ApiRequest, scope: str) -> tuple[int, dict]:
        requester = await request.require_user()
        return 200, await self._push_rules.get_rules(requester, scope)


class GetRule(_PushRulesEndpoint):
    method, path = "GET", _RULE

    async def handle(self, request: ApiRequest, scope: str, kind: str, rule_id: str) -> tuple[int, dict]:
        requester = await request.require_user()
        return 200, await self._push_rules.get_rule(requester, scope, kind, rule_id)


class PutRule(_PushRulesEndpoint):
    method, path = "PUT", _RULE

    async def handle(self, request: ApiRequest, scope: str, kind: str, rule_id: str) -> tuple[int, dict]:
        requester = await request.require_user()
        body = request.json_object()
        rule = NewRule(
            actions=require_field(body, "actions", list),
            conditions=optional_field(body, "conditions", list),
            pattern=optional_field(body, "pattern"),
        )
        before, after = request.query_param("before"), request.query_param("after")
        await self._push_rules.put_rule(requester, scope, kind, rule_id, rule, before, after)
        return 200, {}


class DeleteRule(_PushRulesEndpoint):
    method, path = "DELETE", _RULE

    async def handle(self, request: ApiRequest, scope: str, kind: str, rule_id: str) -> tuple[int, dict]:
        requester = await request.require_user()
        await self._push_rules.delete_rule(requester, scope, kind, rule_id)
        return 200, {}


class GetEnabled(_PushRulesEndpoint):
    method, path = "GET", _RULE + "/enabled"

    async def handle(self, request: ApiRequest, scope: str, kind: str, rule_id: str) -> tuple[int, dict]:
        requester = await request.require_user()
        rule = await self._push_rules.get_rule(requester, scope, kind, rule_id)
        return 200, {"enabled": rule["enabled"]}


class SetEnabled(_PushRulesEndpoint):
    method, path = "PUT", _RULE + "/enabled"

    async def handle(self, request: ApiRequest, scope: str, kind: str, rule_id: str) -> tuple[int, dict]:
        requester = await request.require_user()
        enabled = require_field(request.json_object(), "enabled", bool)
        await self._push_rules.set_enabled(requester, scope, kind, rule_id, enabled)
        return 200, {}


class GetActions(_PushRulesEndpoint):
    method, path = "GET", _RULE + "/actions"

    async def handle(self, request: ApiRequest, scope: str, kind: str, rule_id: str) -> tuple[int, dict]:
        requester = await request.require_user()
        rule = await self._push_rules.get_rule(requester, scope, kind, rule_id)
        return 200, {"actions": rule["actions"]}


class SetActions(_PushRulesEndpoint):
    method, path = "PUT", _RULE + "/actions"

    async def handle(self, request: ApiRequest, scope: str, kind: str, rule_id: str) -> tuple[int, dict]:
        requester = await request.require_user()
        actions = require_field(request.json_object(), "actions", list)
        await self._push_rules.set_actions(requester, scope, kind, rule_id, actions)
        return 200, {}


def endpoints(push_rules: PushRulesHandler) -> list[Endpoint]:
    return [
        GetAllRules(push_rules),
        GetRuleset(push_rules),
        GetRule(push_rules),
        PutRule(push_rules),
        DeleteRule(push_rules),
        GetEnabled(push_rules),
        SetEnabled(push_rules),
        GetActions(push_rules),
        SetActions(push_rules),
    ]
