"""The push rules API through the real server: the rules as the spec shapes them, ordering, enabling and
actions, every error, `m.push_rules` in sync, and what users' rules do to the unread counts."""

import json
import threading
import time
from typing import Any

import pytest

from homeserver.core.push_rules import KINDS, default_ruleset
from tests.client import RoomClient, assert_error, ok, push_rule_path, quote, send_event, unread_counts
from tests.server import ServerProcess

PUSHRULES = "/_matrix/client/v3/pushrules/"
SYNC = "/_matrix/client/v3/sync"
NOTIFY_HIGHLIGHT = ["notify", {"set_tweak": "highlight"}]


def rules(client: RoomClient) -> dict[str, list[dict[str, Any]]]:
    return ok(client.get(PUSHRULES))["global"]


def rule_ids(client: RoomClient, kind: str) -> list[str]:
    return [rule["rule_id"] for rule in rules(client)[kind]]


def put_rule(client: RoomClient, kind: str, rule_id: str, body: dict[str, Any], **placement: str) -> None:
    ok(client.put(push_rule_path(kind, rule_id), body, params=placement))


def content_rule(client: RoomClient, rule_id: str, pattern: str = "x", **placement: str) -> None:
    put_rule(client, "content", rule_id, {"pattern": pattern, "actions": ["notify"]}, **placement)


def sync(client: RoomClient, since: str | None = None, **params: Any) -> dict[str, Any]:
    if since:
        params["since"] = since
    return ok(client.get(SYNC, params={"filter": json.dumps({"room": {"timeline": {"limit": 1}}}), **params}))


def push_rules_in(body: dict[str, Any]) -> dict[str, Any] | None:
    found = [e["content"] for e in body["account_data"]["events"] if e["type"] == "m.push_rules"]
    return found[0] if found else None


def mention(user: RoomClient) -> dict[str, Any]:
    return {"msgtype": "m.text", "body": "hey you", "m.mentions": {"user_ids": [user.user_id]}}


def group_room(alice: RoomClient, *others: RoomClient) -> str:
    """A public room of alice and the others: three or more members, so no one-to-one rule applies."""
    room = alice.create_room(preset="public_chat")
    for other in others:
        other.join(room)
    return room


# -- reading the rules ---------------------------------------------------------------------------


def test_a_new_user_has_every_server_default_rule_in_the_spec_shape(alice: RoomClient) -> None:
    body = ok(alice.get(PUSHRULES))
    assert set(body) == {"global"}
    assert body == default_ruleset(alice.user_id or "")
    assert list(body["global"]) == list(KINDS)
    for kind, kind_rules in body["global"].items():
        for rule in kind_rules:
            assert rule["default"] is True and isinstance(rule["enabled"], bool), rule
            assert isinstance(rule["actions"], list) and rule["rule_id"].startswith(".m.rule.")
            assert ("conditions" in rule) == (kind in ("override", "underride")) and "pattern" not in rule
    override = [rule["rule_id"] for rule in body["global"]["override"]]
    assert override[0] == ".m.rule.master" and body["global"]["override"][0]["enabled"] is False
    assert {".m.rule.invite_for_me", ".m.rule.is_user_mention", ".m.rule.suppress_edits"} <= set(override)
    assert [rule["rule_id"] for rule in body["global"]["underride"]][-1] == ".m.rule.encrypted"
    assert ok(alice.get(PUSHRULES + "global/")) == body["global"]
    invite = ok(alice.get(push_rule_path("override", ".m.rule.invite_for_me")))
    assert {"kind": "event_match", "key": "state_key", "pattern": alice.user_id} in invite["conditions"]
    assert ok(alice.get(push_rule_path("override", ".m.rule.master", "enabled"))) == {"enabled": False}
    assert ok(alice.get(push_rule_path("underride", ".m.rule.call", "actions"))) == {
        "actions": ["notify", {"set_tweak": "sound", "value": "ring"}]
    }


def test_user_rules_of_each_kind_have_their_own_shape(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room()
    conditions = [{"kind": "event_match", "key": "content.body", "pattern": "*lunch*"}]
    put_rule(alice, "override", "lunch", {"conditions": conditions, "actions": NOTIFY_HIGHLIGHT, "pattern": "x"})
    put_rule(alice, "content", "cake", {"pattern": "cake*lie", "actions": [], "conditions": conditions})
    put_rule(alice, "room", room, {"actions": ["notify"]})
    put_rule(alice, "sender", bob.user_id or "", {"actions": []})
    put_rule(alice, "underride", "rest", {"conditions": [], "actions": ["dont_notify"]})
    base = {"default": False, "enabled": True}
    assert ok(alice.get(push_rule_path("override", "lunch"))) == {
        **base, "rule_id": "lunch", "conditions": conditions, "actions": NOTIFY_HIGHLIGHT
    }
    assert ok(alice.get(push_rule_path("content", "cake"))) == {
        **base, "rule_id": "cake", "pattern": "cake*lie", "actions": []
    }
    assert ok(alice.get(push_rule_path("room", room))) == {**base, "rule_id": room, "actions": ["notify"]}
    assert ok(alice.get(push_rule_path("sender", bob.user_id or ""))) == {
        **base, "rule_id": bob.user_id, "actions": []
    }
    assert ok(alice.get(push_rule_path("underride", "rest")))["actions"] == ["dont_notify"]  # kept, ignored
    everything = rules(alice)
    assert everything["content"] == [ok(alice.get(push_rule_path("content", "cake")))]
    # The user's own rules come first in their kind, but .m.rule.master stays ahead of everything.
    assert [r["rule_id"] for r in everything["override"]][:3] == [".m.rule.master", "lunch", ".m.rule.suppress_notices"]
    assert [r["rule_id"] for r in everything["underride"]][0] == "rest"
    assert rules(bob) == default_ruleset(bob.user_id or "")["global"]  # rules are per user


def test_put_updates_and_delete_removes(alice: RoomClient) -> None:
    content_rule(alice, "tea", "tea")
    put_rule(alice, "content", "tea", {"pattern": "coffee", "actions": NOTIFY_HIGHLIGHT})
    assert ok(alice.get(push_rule_path("content", "tea"))) == {
        "rule_id": "tea", "default": False, "enabled": True, "pattern": "coffee", "actions": NOTIFY_HIGHLIGHT
    }
    assert ok(alice.delete(push_rule_path("content", "tea"))) == {}
    assert_error(alice.get(push_rule_path("content", "tea")), 404, "M_NOT_FOUND")
    assert_error(alice.delete(push_rule_path("content", "tea")), 404, "M_NOT_FOUND")
    assert rules(alice)["content"] == []


# -- ordering ------------------------------------------------------------------------------------


def test_new_rules_go_first_and_before_or_after_place_them(alice: RoomClient) -> None:
    for rule_id in ("a", "b", "c"):
        content_rule(alice, rule_id)
    assert rule_ids(alice, "content") == ["c", "b", "a"]
    content_rule(alice, "d", before="b")
    assert rule_ids(alice, "content") == ["c", "d", "b", "a"]
    content_rule(alice, "e", after="b")
    assert rule_ids(alice, "content") == ["c", "d", "b", "e", "a"]
    content_rule(alice, "f", after="a")
    content_rule(alice, "g", before="c")
    assert rule_ids(alice, "content") == ["g", "c", "d", "b", "e", "a", "f"]
    content_rule(alice, "h", before="e", after="g")  # both given: `before` decides
    assert rule_ids(alice, "content") == ["g", "c", "d", "b", "h", "e", "a", "f"]
    # An existing rule moves when placed, and stays where it is (and as enabled as it was) when not.
    ok(alice.put(push_rule_path("content", "a", "enabled"), {"enabled": False}))
    content_rule(alice, "a", before="c")
    assert rule_ids(alice, "content") == ["g", "a", "c", "d", "b", "h", "e", "f"]
    content_rule(alice, "d", pattern="changed")
    assert rule_ids(alice, "content") == ["g", "a", "c", "d", "b", "h", "e", "f"]
    assert ok(alice.get(push_rule_path("content", "a", "enabled"))) == {"enabled": False}
    assert ok(alice.get(push_rule_path("content", "d")))["pattern"] == "changed"
    # Kinds are ordered apart: a rule of the same id in another kind is another rule.
    put_rule(alice, "underride", "c", {"conditions": [], "actions": []})
    assert rule_ids(alice, "content") == ["g", "a", "c", "d", "b", "h", "e", "f"]
    assert rule_ids(alice, "underride")[0] == "c"


# -- enabled and actions -------------------------------------------------------------------------


def test_server_default_rules_can_be_disabled_and_given_new_actions(alice: RoomClient) -> None:
    message = push_rule_path("underride", ".m.rule.message")
    assert ok(alice.get(message + "/enabled")) == {"enabled": True}
    assert ok(alice.put(message + "/enabled", {"enabled": False})) == {}
    assert ok(alice.get(message + "/enabled")) == {"enabled": False}
    assert ok(alice.put(message + "/actions", {"actions": NOTIFY_HIGHLIGHT})) == {}
    assert ok(alice.get(message + "/actions")) == {"actions": NOTIFY_HIGHLIGHT}
    rule = ok(alice.get(message))
    assert rule["default"] is True and rule["enabled"] is False and rule["actions"] == NOTIFY_HIGHLIGHT
    assert next(r for r in rules(alice)["underride"] if r["rule_id"] == ".m.rule.message") == rule
    ok(alice.put(message + "/enabled", {"enabled": True}))
    assert ok(alice.get(message)) == {**rule, "enabled": True}  # the actions stay changed
    ok(alice.put(push_rule_path("override", ".m.rule.master", "enabled"), {"enabled": True}))
    master = default_ruleset(alice.user_id or "")["global"]["override"][0]
    assert rules(alice)["override"][0] == {**master, "enabled": True}


def test_user_rules_can_be_disabled_and_given_new_actions(alice: RoomClient) -> None:
    content_rule(alice, "cake", "cake")
    path = push_rule_path("content", "cake")
    ok(alice.put(path + "/enabled", {"enabled": False}))
    ok(alice.put(path + "/actions", {"actions": ["notify", {"set_tweak": "sound", "value": "bing"}]}))
    assert ok(alice.get(path)) == {
        "rule_id": "cake",
        "default": False,
        "enabled": False,
        "pattern": "cake",
        "actions": ["notify", {"set_tweak": "sound", "value": "bing"}],
    }
    assert ok(alice.get(path + "/actions")) == {"actions": ["notify", {"set_tweak": "sound", "value": "bing"}]}


# -- errors --------------------------------------------------------------------------------------


def test_unknown_rules_are_not_found(alice: RoomClient) -> None:
    for kind, rule_id in (("content", "nope"), ("override", ".m.rule.nope"), ("underride", ".m.rule.master")):
        path = push_rule_path(kind, rule_id)
        assert_error(alice.get(path), 404, "M_NOT_FOUND")
        for attribute in ("enabled", "actions"):
            assert_error(alice.get(f"{path}/{attribute}"), 404, "M_NOT_FOUND")
        assert_error(alice.put(f"{path}/enabled", {"enabled": True}), 404, "M_NOT_FOUND")
        assert_error(alice.put(f"{path}/actions", {"actions": []}), 404, "M_NOT_FOUND")
    assert_error(alice.delete(push_rule_path("content", "nope")), 404, "M_NOT_FOUND")


def test_placing_a_rule_relative_to_an_unknown_or_default_rule_is_refused(alice: RoomClient) -> None:
    content_rule(alice, "known")
    body = {"pattern": "x", "actions": []}
    for placement in ({"before": "unknown"}, {"after": "unknown"}):
        error = assert_error(alice.put(push_rule_path("content", "new"), body, params=placement), 400, "M_UNKNOWN")
        assert error["error"] == "before/after rule not found: unknown"
    for placement in ({"before": ".m.rule.master"}, {"after": "new"}):
        assert_error(alice.put(push_rule_path("content", "new"), body, params=placement), 400, "M_INVALID_PARAM")
    # A rule of another kind is unknown here.
    assert_error(alice.put(push_rule_path("room", "!r:localhost"), {"actions": []}, params={"before": "known"}), 400)
    assert rule_ids(alice, "content") == ["known"]  # nothing was written


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("GET", PUSHRULES + "device/", None),
        ("GET", push_rule_path("content", "x", scope="device"), None),
        ("PUT", push_rule_path("content", "x", scope="device"), {"pattern": "x", "actions": []}),
        ("GET", push_rule_path("everything", "x"), None),
        ("PUT", push_rule_path("everything", "x"), {"actions": []}),
        ("DELETE", push_rule_path("everything", "x"), None),
        ("PUT", push_rule_path("content", "x/y"), {"pattern": "x", "actions": []}),
        ("PUT", push_rule_path("content", "x\\y"), {"pattern": "x", "actions": []}),
        ("PUT", push_rule_path("content", "x" * 256), {"pattern": "x", "actions": []}),
        ("PUT", push_rule_path("override", ".m.rule.mine"), {"conditions": [], "actions": []}),
        ("PUT", push_rule_path("underride", ".m.rule.message"), {"conditions": [], "actions": []}),
        ("DELETE", push_rule_path("underride", ".m.rule.message"), None),
        ("DELETE", push_rule_path("override", ".m.rule.master"), None),
        ("PUT", push_rule_path("room", "not-a-room"), {"actions": []}),
        ("PUT", push_rule_path("room", "#alias:localhost"), {"actions": []}),
        ("PUT", push_rule_path("sender", "not-a-user"), {"actions": []}),
        ("PUT", push_rule_path("sender", "@no-server"), {"actions": []}),
        ("PUT", push_rule_path("content", "x"), {"pattern": "x", "actions": "notify"}),
        ("PUT", push_rule_path("content", "x"), {"pattern": "x", "actions": ["explode"]}),
        ("PUT", push_rule_path("content", "x"), {"pattern": "x", "actions": [{"value": "ring"}]}),
        ("PUT", push_rule_path("content", "x"), {"pattern": "x", "actions": [7]}),
        ("PUT", push_rule_path("content", "x"), {"pattern": 7, "actions": []}),
        ("PUT", push_rule_path("override", "x"), {"conditions": {"kind": "x"}, "actions": []}),
        ("PUT", push_rule_path("override", "x"), {"conditions": [{"key": "type"}], "actions": []}),
        ("PUT", push_rule_path("override", "x"), {"conditions": ["event_match"], "actions": []}),
        ("PUT", push_rule_path("underride", ".m.rule.message", "actions"), {"actions": ["explode"]}),
        ("PUT", push_rule_path("underride", ".m.rule.message", "actions"), {"actions": {}}),
        ("PUT", push_rule_path("underride", ".m.rule.message", "enabled"), {"enabled": "yes"}),
        ("PUT", push_rule_path("underride", ".m.rule.message", "enabled", scope="device"), {"enabled": True}),
    ],
)
def test_invalid_requests_are_refused(alice: RoomClient, method: str, path: str, body: Any) -> None:
    assert_error(alice.request(method, path, body), 400, "M_INVALID_PARAM")


@pytest.mark.parametrize(
    "path, body",
    [
        (push_rule_path("content", "x"), {"actions": []}),  # a content rule needs a pattern
        (push_rule_path("override", "x"), {"actions": []}),  # override and underride rules need conditions
        (push_rule_path("underride", "x"), {"actions": [], "pattern": "x"}),
        (push_rule_path("room", "!r:localhost"), {}),  # every rule needs actions
        (push_rule_path("underride", ".m.rule.message", "actions"), {}),
        (push_rule_path("underride", ".m.rule.message", "enabled"), {}),
    ],
)
def test_missing_fields_are_refused(alice: RoomClient, path: str, body: Any) -> None:
    assert_error(alice.put(path, body), 400, "M_MISSING_PARAM")


def test_bodies_that_are_not_json_objects_and_missing_tokens_are_refused(alice: RoomClient) -> None:
    path = push_rule_path("content", "x")
    assert_error(alice.put(path, data=b"{nope", headers={"Content-Type": "application/json"}), 400, "M_NOT_JSON")
    assert_error(alice.put(path, ["pattern", "actions"]), 400, "M_BAD_JSON")
    assert_error(alice.put(path + "/enabled", [True]), 400, "M_BAD_JSON")
    assert_error(alice.get(PUSHRULES, token=False), 401, "M_MISSING_TOKEN")
    assert_error(alice.put(path, {"pattern": "x", "actions": []}, token=False), 401, "M_MISSING_TOKEN")
    assert rules(alice)["content"] == []


# -- m.push_rules in sync ------------------------------------------------------------------------


def test_initial_sync_and_account_data_show_the_default_rules_of_a_new_user(alice: RoomClient) -> None:
    assert push_rules_in(sync(alice)) == default_ruleset(alice.user_id or "")
    path = f"/_matrix/client/v3/user/{quote(alice.user_id or '')}/account_data/m.push_rules"
    assert ok(alice.get(path)) == default_ruleset(alice.user_id or "")


def test_a_change_reaches_the_next_incremental_sync_once(alice: RoomClient) -> None:
    token = sync(alice)["next_batch"]
    assert push_rules_in(sync(alice, token)) is None
    content_rule(alice, "cake", "cake")
    body = sync(alice, token)
    changed = push_rules_in(body)
    assert changed == ok(alice.get(PUSHRULES))
    assert changed is not None and [r["rule_id"] for r in changed["global"]["content"]] == ["cake"]
    assert push_rules_in(sync(alice, body["next_batch"])) is None
    assert push_rules_in(sync(alice)) == changed  # and a new initial sync has it
    path = f"/_matrix/client/v3/user/{quote(alice.user_id or '')}/account_data/m.push_rules"
    assert ok(alice.get(path)) == changed


def test_a_change_wakes_a_long_poll(alice: RoomClient) -> None:
    token = sync(alice)["next_batch"]
    path = push_rule_path("underride", ".m.rule.message", "enabled")
    timer = threading.Timer(0.5, alice.put, (path, {"enabled": False}))
    timer.start()
    started = time.monotonic()
    body = sync(alice, token, timeout=20000)
    assert time.monotonic() - started < 10
    changed = push_rules_in(body)
    assert changed is not None
    assert next(r for r in changed["global"]["underride"] if r["rule_id"] == ".m.rule.message")["enabled"] is False
    timer.join()


# -- what users' rules do ------------------------------------------------------------------------


def test_a_content_rule_with_a_glob_notifies_and_highlights(
    alice: RoomClient, bob: RoomClient, carol: RoomClient
) -> None:
    room = group_room(alice, bob, carol)
    put_rule(bob, "content", "cake", {"pattern": "cake*lie", "actions": NOTIFY_HIGHLIGHT})
    alice.send_text(room, "The CAKE is a lie!")
    assert unread_counts(bob, room) == (1, 1)
    alice.send_text(room, "cakes are lies")  # "lies": no word ends in "lie"
    alice.send_text(room, "pancakeislie")  # the match must start at a word boundary
    assert unread_counts(bob, room) == (3, 1)  # .m.rule.message still notifies
    assert unread_counts(carol, room) == (3, 0)  # bob's rule is his alone


def test_a_room_rule_without_notify_mutes_one_room(alice: RoomClient, bob: RoomClient, carol: RoomClient) -> None:
    muted, legacy, other = group_room(alice, bob, carol), group_room(alice, bob, carol), group_room(alice, bob, carol)
    put_rule(bob, "room", muted, {"actions": []})
    put_rule(bob, "room", legacy, {"actions": ["dont_notify"]})
    for room in (muted, legacy, other):
        alice.send_text(room, "hello")
    send_event(alice, muted, "m.room.message", mention(bob))  # overrides still win over room rules
    assert unread_counts(bob, muted) == (1, 1)
    assert unread_counts(bob, legacy) == (0, 0)
    assert unread_counts(bob, other) == (1, 0)
    ok(bob.delete(push_rule_path("room", legacy)))
    alice.send_text(legacy, "again")
    assert unread_counts(bob, legacy) == (1, 0)


def test_a_sender_rule_applies_to_that_sender_only(alice: RoomClient, bob: RoomClient, carol: RoomClient) -> None:
    room = group_room(alice, bob, carol)
    put_rule(bob, "sender", carol.user_id or "", {"actions": NOTIFY_HIGHLIGHT})
    carol.send_text(room, "from carol")
    alice.send_text(room, "from alice")
    assert unread_counts(bob, room) == (2, 1)


def test_disabling_a_default_rule_stops_its_notifications_until_enabled(
    alice: RoomClient, bob: RoomClient, carol: RoomClient
) -> None:
    room = group_room(alice, bob, carol)
    alice.send_text(room, "counted")
    enabled = push_rule_path("underride", ".m.rule.message", "enabled")
    ok(bob.put(enabled, {"enabled": False}))
    alice.send_text(room, "not counted")
    assert unread_counts(bob, room) == (1, 0)
    ok(bob.put(enabled, {"enabled": True}))
    alice.send_text(room, "counted again")
    assert unread_counts(bob, room) == (2, 0)
    ok(bob.put(push_rule_path("underride", ".m.rule.message", "actions"), {"actions": NOTIFY_HIGHLIGHT}))
    alice.send_text(room, "highlighted")
    assert unread_counts(bob, room) == (3, 1)


def test_enabling_the_master_rule_mutes_everything(alice: RoomClient, bob: RoomClient, carol: RoomClient) -> None:
    room = group_room(alice, bob, carol)
    put_rule(bob, "override", "everything", {"conditions": [], "actions": NOTIFY_HIGHLIGHT})
    ok(bob.put(push_rule_path("override", ".m.rule.master", "enabled"), {"enabled": True}))
    alice.send_text(room, "quiet")
    send_event(alice, room, "m.room.message", mention(bob))
    direct = alice.create_room(invite=[bob.user_id], is_direct=True)  # the invite is muted too
    bob.join(direct)
    alice.send_text(direct, "one to one")
    assert unread_counts(bob, room) == (0, 0)
    assert unread_counts(bob, direct) == (0, 0)
    assert unread_counts(carol, room) == (2, 0)  # her rules are untouched
    ok(bob.put(push_rule_path("override", ".m.rule.master", "enabled"), {"enabled": False}))
    alice.send_text(room, "heard")
    assert unread_counts(bob, room) == (1, 1)  # bob's catch-all rule, no longer under the master rule


def test_an_override_rule_on_member_events_notifies_on_joins(
    alice: RoomClient, bob: RoomClient, carol: RoomClient
) -> None:
    room = group_room(alice, bob)
    conditions = [
        {"kind": "event_match", "key": "type", "pattern": "m.room.member"},
        {"kind": "event_match", "key": "content.membership", "pattern": "join"},
    ]
    put_rule(bob, "override", "joins", {"conditions": conditions, "actions": ["notify"]})
    carol.join(room)
    assert unread_counts(bob, room) == (1, 0)
    assert unread_counts(alice, room) == (0, 0)  # alice keeps the defaults: membership changes are quiet
    carol.leave(room)
    assert unread_counts(bob, room) == (1, 0)  # a leave is not a join
    ok(bob.delete(push_rule_path("override", "joins")))
    carol.join(room)
    assert unread_counts(bob, room) == (1, 0)


def test_rules_outlive_a_restart(server: ServerProcess, alice: RoomClient, bob: RoomClient, carol: RoomClient) -> None:
    room = group_room(alice, bob)
    joins = [{"kind": "event_match", "key": "type", "pattern": "m.room.member"}]
    put_rule(bob, "override", "joins", {"conditions": joins, "actions": ["notify"]})
    content_rule(bob, "second", "tea")
    content_rule(bob, "first", "coffee", before="second")
    ok(bob.put(push_rule_path("underride", ".m.rule.message", "enabled"), {"enabled": False}))
    before = rules(bob)
    server.stop()
    server.start()
    assert rules(bob) == before
    # Who has rules of their own is read back from the database: bob still hears joins.
    carol.join(room)
    alice.send_text(room, "not counted")
    assert unread_counts(bob, room) == (1, 0)
