"""Push rules: the spec's default ruleset, the evaluator and each condition kind
(client-server-api/modules/push.md, spec v1.19), against the spec's own examples where it gives them."""

import json
import math
from typing import Any

import pytest

from homeserver.core.auth.power_levels import PowerLevels
from homeserver.core.events import Event
from homeserver.core.push_rules import (
    KINDS,
    CompiledRuleset,
    FlattenedEvent,
    Notification,
    PushContext,
    compile_glob,
    compile_ruleset,
    default_ruleset,
    evaluate,
    evaluate_for_users,
    flatten,
    merge_ruleset,
    notification,
    notification_levels,
    parse_path,
    strip_historical,
    tweaks,
)
from homeserver.core.push_rules.flattened import MISSING
from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS

from .push_fixtures import (
    ALICE,
    BOB,
    CAROL,
    DEFAULT_RULE_CASES,
    HIGHLIGHT,
    HIGHLIGHT_SOUND,
    MENTION_ALICE,
    NOTHING,
    NOTIFY,
    ROOM,
    ROOM_MENTION,
    SOUND,
    context,
    event,
    member,
    spec_default_rules,
    text,
)


def decide(ruleset: Any, ev: Any, ctx: PushContext | None = None) -> str | None:
    """The id of the rule that decides the event for the context's user."""
    rule = compile_ruleset(ruleset).first_match(flatten(ev), ctx or context())
    return None if rule is None else rule.rule_id


def condition_holds(condition: dict[str, Any], ev: dict[str, Any], ctx: PushContext | None = None) -> bool:
    """Whether a single override rule with just this condition matches."""
    ruleset = {
        "override": [
            {"rule_id": "test", "default": False, "enabled": True, "conditions": [condition], "actions": ["notify"]}
        ]
    }
    return evaluate(ruleset, ev, ctx or context()) == ["notify"]


# -- the default ruleset -----------------------------------------------------------------------


def test_default_ruleset_is_the_specs_list_in_order():
    spec = json.loads(json.dumps(spec_default_rules()).replace("[the user's Matrix ID]", ALICE))
    assert set(spec) == {"override", "underride"}  # v1.17 removed the only default content rule
    assert (len(spec["override"]), len(spec["underride"])) == (10, 5)
    ours = default_ruleset(ALICE)
    assert list(ours) == ["global"] and list(ours["global"]) == list(KINDS)
    for kind in KINDS:
        assert ours["global"][kind] == spec.get(kind, []), kind


def test_default_rule_ids_and_flags():
    rules = default_ruleset(ALICE)["global"]
    assert [r["rule_id"] for r in rules["override"]] == [
        ".m.rule.master",
        ".m.rule.suppress_notices",
        ".m.rule.invite_for_me",
        ".m.rule.member_event",
        ".m.rule.is_user_mention",
        ".m.rule.is_room_mention",
        ".m.rule.tombstone",
        ".m.rule.reaction",
        ".m.rule.room.server_acl",
        ".m.rule.suppress_edits",
    ]
    assert [r["rule_id"] for r in rules["underride"]] == [
        ".m.rule.call",
        ".m.rule.encrypted_room_one_to_one",
        ".m.rule.room_one_to_one",
        ".m.rule.message",
        ".m.rule.encrypted",
    ]
    assert rules["content"] == rules["room"] == rules["sender"] == []
    every = [r for kind in KINDS for r in rules[kind]]
    assert all(r["default"] is True and r["rule_id"].startswith(".") for r in every)
    assert [r["rule_id"] for r in every if not r["enabled"]] == [".m.rule.master"]


def test_default_ruleset_is_a_fresh_copy_for_each_user():
    first = default_ruleset(ALICE)
    first["global"]["override"][2]["conditions"][2]["pattern"] = "spoiled"
    assert default_ruleset(ALICE)["global"]["override"][2]["conditions"][2]["pattern"] == ALICE
    assert default_ruleset(CAROL)["global"]["override"][4]["conditions"][0]["value"] == CAROL


@pytest.mark.parametrize(
    ("case", "ev", "changes", "rule_id", "expected"), DEFAULT_RULE_CASES, ids=[c[0] for c in DEFAULT_RULE_CASES]
)
def test_default_rules(case, ev, changes, rule_id, expected):
    ruleset = default_ruleset(ALICE)
    assert decide(ruleset, ev, context(**changes)) == rule_id
    assert notification(evaluate(ruleset, ev, context(**changes))) == expected


def test_master_rule_silences_everything_once_enabled():
    ruleset = merge_ruleset(ALICE, default_changes={("override", ".m.rule.master"): {"enabled": True}})
    for ev in (text("hi", **MENTION_ALICE), member(ALICE, "invite"), event("m.call.invite")):
        assert decide(ruleset, ev) == ".m.rule.master"
        assert evaluate(ruleset, ev, context()) == []


def test_own_events_never_notify():
    ruleset = default_ruleset(ALICE)
    mine = {**text("hi", **MENTION_ALICE), "sender": ALICE}
    assert evaluate(ruleset, mine, context()) is None
    assert notification(evaluate(ruleset, mine, context())) == NOTHING


# -- event_match and globs ---------------------------------------------------------------------


def topic(value: Any) -> dict[str, Any]:
    return event("m.room.topic", {"topic": value}, state_key="")


@pytest.mark.parametrize(
    ("value", "matches"),
    [("Lunch plans", True), ("LUNCH", True), (" lunch", False), ("lunc", False), (None, False)],
)
def test_event_match_spec_example_topic(value, matches):
    assert (
        condition_holds({"kind": "event_match", "key": "content.topic", "pattern": "lunc?*"}, topic(value)) is matches
    )


@pytest.mark.parametrize(
    ("body", "matches"),
    [
        ("An example event.", True),
        ("exple", True),  # at the start and end of the body
        ("An exciting triple-whammy", True),  # across words; `-` separates words
        ("Anexample event", False),  # must start at a word boundary
        ("examples", False),  # must end at one
        ("example_", False),  # `_` is a word character
    ],
)
def test_event_match_spec_example_body_word_boundaries(body, matches):
    assert condition_holds({"kind": "event_match", "key": "content.body", "pattern": "ex*ple"}, text(body)) is matches


@pytest.mark.parametrize("value", [None, 42, True, ["x"], {"x": "y"}])
def test_event_match_needs_a_string_even_for_star(value):
    assert not condition_holds({"kind": "event_match", "key": "content.topic", "pattern": "*"}, topic(value))


def test_event_match_on_an_absent_property_does_not_match_star():
    assert not condition_holds({"kind": "event_match", "key": "content.nothing", "pattern": "*"}, topic("x"))


def test_event_match_on_other_keys_is_whole_value_not_words():
    assert not condition_holds(
        {"kind": "event_match", "key": "content.topic", "pattern": "lunch"}, topic("lunch plans")
    )
    assert condition_holds({"kind": "event_match", "key": "content.topic", "pattern": "lunch*"}, topic("lunch plans"))


GLOB_CASES = [
    # pattern, value, whole-value match, word match
    ("", "", True, True),
    ("", "x", False, False),
    ("*", "", True, True),
    ("*", "any\nthing", True, True),
    ("?", "", False, False),
    ("?", "x", True, True),
    ("?", "xy", False, False),
    ("a?c", "abc", True, True),
    ("a?c", "abbc", False, False),
    ("a*c", "abbc", True, True),
    ("a**c", "ac", True, True),
    ("a.c", "abc", False, False),  # regex characters are literal
    ("[ab]", "a", False, False),  # no character classes in Matrix globs
    ("[ab]", "[AB]", True, True),
    ("a\\*", "a\\bc", True, True),  # no escaping either: `\` is literal, `*` a wildcard
    ("(x|y)+", "(x|y)+", True, True),
    ("foo", "foo\n", False, True),  # no `$`-before-newline quirk; the newline is a boundary
    ("ÉTÉ", "été", True, True),  # case-insensitive beyond ASCII
    ("caf", "café", False, True),  # the spec's word characters are ASCII: `é` is a boundary
    ("foo", "foo_bar", False, False),
    ("foo", "\u212afoo", False, True),  # case-insensitivity does not make the Kelvin sign a word character
    ("foo", "bar foo", False, True),
    ("*bar", "foo bar", True, True),
    ("b*r", "a bxr-c", False, True),
    ("b*r", "a bxrc", False, False),
    ("x*y*z", "x1 y2 z", True, True),
    ("x*y*z", "a x1 y2 z", False, True),
    ("x*y*z", "wx y z", False, False),
    ("@room", "hey @room!", False, True),
    ("@room", "hey x@room", False, False),
]


@pytest.mark.parametrize(("pattern", "value", "whole", "words"), GLOB_CASES)
def test_glob(pattern, value, whole, words):
    glob = compile_glob(pattern)
    assert glob.matches(value) is whole
    assert glob.matches_words(value) is words


def test_glob_does_not_backtrack_exponentially():
    # A user's rule is tried on every message of their rooms; this must stay linear-ish.
    glob = compile_glob("*a*a*a*a*a*a*a*a*a*a*b")
    assert not glob.matches("a" * 20000)
    assert not glob.matches_words("a" * 20000)
    assert compile_glob("*a*a*a*a*a*b").matches_words("a" * 5000 + "b")


def test_globs_are_compiled_once():
    assert compile_glob("cake*lie") is compile_glob("cake*lie")


# -- event_property_is / event_property_contains and dotted keys --------------------------------

CREATE = event(
    "m.room.create",
    {
        "creator": "@example:example.org",
        "m.federate": True,
        "predecessor": {"event_id": "$something:example.org", "room_id": "!oldroom:example.org"},
        "room_version": "1",
    },
    state_key="",
)


@pytest.mark.parametrize(("federate", "matches"), [(True, True), ("true", False), (1, False), (False, False)])
def test_event_property_is_spec_example(federate, matches):
    ev = {**CREATE, "content": {**CREATE["content"], "m.federate": federate}}
    condition = {"kind": "event_property_is", "key": "content.m\\.federate", "value": True}
    assert condition_holds(condition, ev) is matches


@pytest.mark.parametrize(
    ("value", "prop", "matches"),
    [
        (None, None, True),
        (None, "absent", False),  # absent is not null
        (None, False, False),
        (1, 1, True),
        (1, True, False),  # no casting between booleans and integers
        (True, 1, False),
        (1, 1.0, False),  # floats are not canonical JSON
        (0, False, False),
        ("x", "x", True),
        ("x", "X", False),  # exact, not case-insensitive
        (2**53, 2**53, False),  # beyond canonical JSON's integers
        (-(2**53) + 1, -(2**53) + 1, True),
        ("x", ["x"], False),  # compound values never match
        ("x", {"a": "x"}, False),
    ],
)
def test_event_property_is_exact_values(value, prop, matches):
    content = {} if prop == "absent" else {"p": prop}
    assert (
        condition_holds({"kind": "event_property_is", "key": "content.p", "value": value}, event("t", content))
        is matches
    )


@pytest.mark.parametrize("value", [[1], {"a": 1}, 1.5])
def test_event_property_is_with_a_compound_value_never_matches(value):
    assert not condition_holds(
        {"kind": "event_property_is", "key": "content.p", "value": value}, event("t", {"p": value})
    )


def test_event_property_is_without_value_never_matches():
    assert not condition_holds({"kind": "event_property_is", "key": "content.p"}, event("t", {"p": None}))


ALIASES = event(
    "m.room.canonical_alias",
    {"alias": "#somewhere:localhost", "alt_aliases": ["#somewhere:example.org", "#myroom:example.com"]},
    room_id="!jEsUZKDJdhlrceRyVU:example.org",
    state_key="",
    unsigned={"age": 1234},
)


@pytest.mark.parametrize(
    ("value", "matches"), [("#myroom:example.com", True), (":example.com", False), ("#MYROOM:example.com", False)]
)
def test_event_property_contains_spec_example(value, matches):
    condition = {"kind": "event_property_contains", "key": "content.alt_aliases", "value": value}
    assert condition_holds(condition, ALIASES) is matches


@pytest.mark.parametrize(
    ("array", "value", "matches"),
    [
        ([1, 2], 2, True),
        ([1], True, False),
        ([True], 1, False),
        ([None], None, True),
        ([], None, False),
        ([{"x": 1}, ["x"], "x"], "x", True),  # other element types are ignored
        ([1.0], 1, False),
        ("x", "x", False),  # not an array
        ({"0": "x"}, "x", False),
    ],
)
def test_event_property_contains_values(array, value, matches):
    condition = {"kind": "event_property_contains", "key": "content.a", "value": value}
    assert condition_holds(condition, event("t", {"a": array})) is matches


def test_event_property_contains_reads_frozen_event_content():
    # Event.content arrays are tuples and objects read-only mappings.
    pdu = {**text("hi", **MENTION_ALICE), "depth": 3, "prev_events": [], "auth_events": [], "hashes": {}}
    frozen = Event.from_stored(KNOWN_ROOM_VERSIONS["10"], pdu, "$e")
    assert isinstance(frozen.content["m.mentions"]["user_ids"], tuple)
    assert notification(evaluate(default_ruleset(ALICE), frozen, context())) == HIGHLIGHT_SOUND


@pytest.mark.parametrize(
    ("key", "path"),
    [
        ("content.body", ("content", "body")),
        ("content.m\\.relates_to.rel_type", ("content", "m.relates_to", "rel_type")),
        ("content.m\\\\foo", ("content", "m\\foo")),
        ("content.m\\xfoo", ("content", "m\\xfoo")),  # other escapes stay literal
        ("type", ("type",)),
    ],
)
def test_dotted_key_escapes(key, path):
    assert parse_path(key) == path


def test_escaped_dot_is_one_key_and_a_plain_dot_two():
    nested = event("t", {"m": {"relates_to": "nested"}, "m.relates_to": "dotted"})
    assert condition_holds({"kind": "event_property_is", "key": "content.m\\.relates_to", "value": "dotted"}, nested)
    assert condition_holds({"kind": "event_property_is", "key": "content.m.relates_to", "value": "nested"}, nested)
    assert not condition_holds({"kind": "event_property_is", "key": "content.m.relates_to", "value": "dotted"}, nested)


def test_escaped_backslash_in_key():
    ev = event("t", {"m\\foo": "yes"})
    assert condition_holds({"kind": "event_match", "key": "content.m\\\\foo", "pattern": "yes"}, ev)
    assert condition_holds({"kind": "event_match", "key": "content.m\\foo", "pattern": "yes"}, ev)  # `\f` is literal


# -- contains_display_name, room_member_count, sender_notification_permission ----------------------


@pytest.mark.parametrize(
    ("display_name", "body", "matches"),
    [
        ("Alice", "hello alice!", True),
        ("Alice", "ALICE", True),
        ("Alice", "Alicea", False),
        ("Alice", "my_alice", False),
        ("Alice Smith", "hi alice smith, welcome", True),
        ("A*", "hi Abc", False),  # a display name is literal, not a glob
        ("A*", "hi a*", True),
        ("", "", False),
        ("", "anything", False),
        (None, "Alice", False),
    ],
)
def test_contains_display_name(display_name, body, matches):
    ctx = context(display_name=display_name)
    assert condition_holds({"kind": "contains_display_name"}, text(body), ctx) is matches


def test_contains_display_name_needs_a_string_body():
    assert not condition_holds({"kind": "contains_display_name"}, event(content={"body": ["Alice"]}))


@pytest.mark.parametrize(
    ("is_", "count", "matches"),
    [
        ("2", 2, True),
        ("2", 3, False),
        ("==2", 2, True),
        ("==2", 1, False),
        ("<2", 1, True),
        ("<2", 2, False),
        (">2", 3, True),
        (">2", 2, False),
        ("<=10", 10, True),
        ("<=10", 11, False),
        (">=3", 3, True),
        (">=3", 2, False),
        ("=2", 2, False),  # not one of the spec's prefixes
        ("=>2", 2, False),
        ("", 0, False),
        ("two", 2, False),
        (" 2", 2, False),
        ("2.0", 2, False),
        ("<", 1, False),
    ],
)
def test_room_member_count(is_, count, matches):
    assert condition_holds({"kind": "room_member_count", "is": is_}, text("x"), context(member_count=count)) is matches


def test_room_member_count_unknown_or_not_a_string():
    assert not condition_holds({"kind": "room_member_count", "is": "2"}, text("x"), context(member_count=None))
    assert not condition_holds({"kind": "room_member_count", "is": 2}, text("x"), context(member_count=2))


@pytest.mark.parametrize(
    ("key", "sender_level", "levels", "matches"),
    [
        ("room", 50, {}, True),  # notifications.room defaults to 50
        ("room", 49, {}, False),
        ("room", 0, {"room": 0}, True),
        ("room", 99, {"room": 100}, False),
        ("room", math.inf, {"room": 100}, True),  # a v12 room creator
        ("room", None, {}, False),
        ("custom", 50, {}, True),  # other keys default to 50 as well
        ("custom", 20, {"custom": 20, "room": 100}, True),
    ],
)
def test_sender_notification_permission(key, sender_level, levels, matches):
    ctx = context(sender_power_level=sender_level, notification_levels=levels)
    assert condition_holds({"kind": "sender_notification_permission", "key": key}, text("x"), ctx) is matches


def power_levels(version: str, content: dict[str, Any]) -> PowerLevels:
    pdu = {"type": "m.room.power_levels", "state_key": "", "sender": ALICE, "room_id": ROOM, "content": content}
    return PowerLevels(KNOWN_ROOM_VERSIONS[version], Event.from_stored(KNOWN_ROOM_VERSIONS[version], pdu, "$pl"), None)


def test_notification_levels_from_power_levels():
    assert notification_levels(power_levels("10", {"notifications": {"room": 20, "x": "5", "y": True}})) == {"room": 20}
    assert notification_levels(power_levels("1", {"notifications": {"room": " 20 ", "x": "no"}})) == {"room": 20}
    assert notification_levels(power_levels("10", {"notifications": ["room"]})) == {}
    assert notification_levels(PowerLevels(KNOWN_ROOM_VERSIONS["10"], None, None)) == {}


@pytest.mark.parametrize(
    "condition",
    [
        {"kind": "event_match_regex", "key": "type", "pattern": "m.room.message"},
        {"kind": "org.example.custom"},
        {"key": "type", "pattern": "m.room.message"},  # no kind
        {"kind": "event_match", "key": "type"},  # no pattern
        {"kind": "event_match", "pattern": "*"},  # no key
        {"kind": "event_match", "key": "type", "pattern": 5},
        {"kind": "event_property_contains", "key": "content.a"},  # no value
        {"kind": "sender_notification_permission"},  # no key
        "event_match",  # not an object
    ],
)
def test_unknown_or_malformed_conditions_disable_the_rule(condition):
    ruleset = merge_ruleset(
        ALICE,
        {
            "override": [
                {"rule_id": "odd", "conditions": [condition], "actions": ["notify", {"set_tweak": "highlight"}]}
            ]
        },
    )
    assert decide(ruleset, text("hi", a=[1])) == ".m.rule.message"


# -- kinds, order, user rules --------------------------------------------------------------------


def test_spec_example_content_rules_in_order():
    # PUT .../content/SSByZWFsbHkgbGlrZSBjYWtl {"pattern": "cake", ...}, then a "cake*lie" rule before it.
    cake = {
        "rule_id": "SSByZWFsbHkgbGlrZSBjYWtl",
        "pattern": "cake",
        "actions": ["notify", {"set_tweak": "sound", "value": "cakealarm.wav"}],
    }
    lie = {"rule_id": "U3BvbmdlIGNha2UgaXMgYmVzdA", "pattern": "cake*lie", "actions": ["notify"]}
    ruleset = merge_ruleset(ALICE, {"content": [lie, cake]})
    assert notification(evaluate(ruleset, text("I like Cake."), context())) == Notification(
        True, False, "cakealarm.wav"
    )
    assert decide(ruleset, text("the cake is a lie")) == lie["rule_id"]
    assert decide(ruleset, text("pancakes")) == ".m.rule.message"
    assert decide(ruleset, text("cake", msgtype="m.notice")) == ".m.rule.suppress_notices"  # override first
    assert decide(ruleset, event("m.room.encrypted", {"body": "cake"})) == "SSByZWFsbHkgbGlrZSBjYWtl"
    assert decide(ruleset, event("m.room.message", {"body": 7})) == ".m.rule.message"


def test_spec_example_override_rule():
    beer = {
        "rule_id": "U2VlIHlvdSBpbiBUaGUgRHVrZQ",
        "conditions": [
            {"kind": "event_match", "key": "content.body", "pattern": "beer"},
            {"kind": "room_member_count", "is": "<=10"},
        ],
        "actions": ["notify", {"set_tweak": "sound", "value": "beeroclock.wav"}],
    }
    ruleset = merge_ruleset(ALICE, {"override": [beer]})
    assert notification(evaluate(ruleset, text("Beer?"), context(member_count=10))).sound == "beeroclock.wav"
    assert decide(ruleset, text("Beer?"), context(member_count=11)) == ".m.rule.message"
    assert decide(ruleset, text("Beers?"), context(member_count=3)) == ".m.rule.message"
    # a user override comes before the default overrides (but after master)
    assert decide(ruleset, text("beer", msgtype="m.notice")) == beer["rule_id"]


def test_spec_example_room_and_sender_rules():
    ruleset = merge_ruleset(
        ALICE,
        {
            "room": [{"rule_id": "!dj234r78wl45Gh4D:matrix.org", "actions": []}],
            "sender": [{"rule_id": "@spambot:matrix.org", "actions": []}],
        },
    )
    assert evaluate(ruleset, text("hi") | {"room_id": "!dj234r78wl45Gh4D:matrix.org"}, context()) == []
    assert evaluate(ruleset, text("hi") | {"sender": "@spambot:matrix.org"}, context()) == []
    assert decide(ruleset, text("hi") | {"sender": "@SpamBot:matrix.org"}) == ".m.rule.message"  # ids are exact
    assert decide(ruleset, text("hi")) == ".m.rule.message"


def test_kinds_are_checked_in_the_spec_order():
    def rule(rule_id: str, **extra: Any) -> dict[str, Any]:
        return {"rule_id": rule_id, "actions": ["notify", {"set_tweak": "sound", "value": rule_id}], **extra}

    everything = {
        "override": [rule("o", conditions=[{"kind": "event_match", "key": "content.body", "pattern": "o"}])],
        "content": [rule("c", pattern="c")],
        "room": [rule(ROOM)],
        "sender": [rule(BOB)],
        "underride": [rule("u", conditions=[])],
    }
    ruleset = merge_ruleset(ALICE, everything)
    assert decide(ruleset, text("o c")) == "o"
    assert decide(ruleset, text("c")) == "c"
    assert decide(ruleset, text("x")) == ROOM
    assert decide(ruleset, text("x") | {"room_id": "!other:x"}) == BOB
    assert decide(ruleset, text("x") | {"room_id": "!other:x", "sender": CAROL}) == "u"  # before default underrides


def test_master_precedes_user_rules_wherever_it_is_listed():
    user = {"rule_id": "mine", "default": False, "enabled": True, "conditions": [], "actions": ["notify"]}
    master = {"rule_id": ".m.rule.master", "default": True, "enabled": True, "conditions": [], "actions": []}
    assert decide({"global": {"override": [user, master]}}, text("hi")) == ".m.rule.master"
    merged = merge_ruleset(ALICE, {"override": [user]}, {("override", ".m.rule.master"): {"enabled": True}})
    assert [r["rule_id"] for r in merged["global"]["override"][:2]] == [".m.rule.master", "mine"]


def test_disabled_rules_never_match():
    ruleset = merge_ruleset(
        ALICE,
        {
            "override": [
                {
                    "rule_id": "off",
                    "enabled": False,
                    "conditions": [],
                    "actions": ["notify", {"set_tweak": "highlight"}],
                }
            ]
        },
        {
            ("override", ".m.rule.suppress_notices"): {"enabled": False},
            ("underride", ".m.rule.message"): {"enabled": False},
        },
    )
    assert decide(ruleset, text("hi", msgtype="m.notice")) is None
    assert decide(ruleset, text("hi")) is None
    assert decide(ruleset, text("hi"), context(member_count=2)) == ".m.rule.room_one_to_one"


def test_changed_actions_of_a_default_rule():
    ruleset = merge_ruleset(
        ALICE,
        default_changes={
            ("underride", ".m.rule.message"): {"actions": ["notify", {"set_tweak": "sound", "value": "ping"}]}
        },
    )
    assert notification(evaluate(ruleset, text("hi"), context())) == Notification(True, False, "ping")
    assert ruleset["global"]["underride"][3]["default"] is True


def test_merged_user_rules_are_marked_and_enabled():
    merged = merge_ruleset(ALICE, {"sender": [{"rule_id": BOB, "actions": []}]})
    assert merged["global"]["sender"] == [{"rule_id": BOB, "actions": [], "default": False, "enabled": True}]


def test_inner_ruleset_and_compiled_ruleset_are_accepted():
    inner = default_ruleset(ALICE)["global"]
    compiled = compile_ruleset(inner)
    assert isinstance(compiled, CompiledRuleset) and compile_ruleset(compiled) is compiled
    assert evaluate(inner, text("hi"), context()) == evaluate(compiled, text("hi"), context()) == ["notify"]


def test_malformed_rules_are_skipped_or_never_match():
    ruleset = {
        "override": [
            "not a rule",
            {"conditions": [], "actions": ["notify"]},  # no rule_id
            {"rule_id": "bad conditions", "conditions": "all", "actions": ["notify"]},
        ],
        "content": [{"rule_id": "no pattern", "actions": ["notify"]}],
        "unknown_kind": [{"rule_id": "x", "conditions": [], "actions": ["notify"]}],
        "underride": [{"rule_id": "last", "conditions": [], "actions": "notify"}],
    }
    assert decide(ruleset, text("hi")) == "last"
    assert evaluate(ruleset, text("hi"), context()) == []  # actions that are not an array: none


# -- actions -------------------------------------------------------------------------------------


def test_historical_actions_are_ignored():
    assert strip_historical(["dont_notify"]) == []
    assert strip_historical(["notify", "coalesce", {"set_tweak": "sound", "value": "x"}]) == [
        "notify",
        {"set_tweak": "sound", "value": "x"},
    ]
    ruleset = merge_ruleset(ALICE, {"override": [{"rule_id": "quiet", "conditions": [], "actions": ["dont_notify"]}]})
    assert evaluate(ruleset, text("hi"), context()) == []
    assert notification(evaluate(ruleset, text("hi"), context())) == NOTHING


@pytest.mark.parametrize(
    ("actions", "expected"),
    [
        (None, NOTHING),
        ([], NOTHING),
        (["notify"], NOTIFY),
        (["notify", {"set_tweak": "highlight"}], HIGHLIGHT),
        (["notify", {"set_tweak": "highlight", "value": True}], HIGHLIGHT),
        (["notify", {"set_tweak": "highlight", "value": False}], NOTIFY),
        (["notify", {"set_tweak": "highlight", "value": "yes"}], NOTIFY),
        (["notify", {"set_tweak": "sound", "value": "default"}], SOUND),
        (["notify", {"set_tweak": "sound", "value": 5}], NOTIFY),
        (["notify", {"set_tweak": "sound"}], NOTIFY),
        ([{"set_tweak": "highlight"}, {"set_tweak": "sound", "value": "default"}], NOTHING),  # tweaks without notify
        (
            ["notify", {"set_tweak": "sound", "value": "a"}, {"set_tweak": "sound", "value": "b"}],
            Notification(True, False, "b"),
        ),
    ],
)
def test_notification_from_actions(actions, expected):
    assert notification(actions) == expected


def test_tweaks_for_the_push_gateway():
    actions = [
        "notify",
        {"set_tweak": "sound", "value": "default"},
        {"set_tweak": "highlight"},
        {"set_tweak": "x.light", "value": "red"},
        {"set_tweak": 1},
    ]
    assert tweaks(actions) == {"sound": "default", "highlight": True, "x.light": "red"}


def test_returned_actions_are_the_callers_to_change():
    compiled = compile_ruleset(default_ruleset(ALICE))
    first = evaluate(compiled, text("hi", **MENTION_ALICE), context())
    first[1]["value"] = "spoiled"
    first.append("extra")
    assert evaluate(compiled, text("hi", **MENTION_ALICE), context()) == [
        "notify",
        {"set_tweak": "sound", "value": "default"},
        {"set_tweak": "highlight"},
    ]


# -- events in either form, many users at once ----------------------------------------------------


def test_an_event_object_evaluates_like_its_client_json():
    pdu = {**member(ALICE, "invite"), "depth": 3, "prev_events": [], "auth_events": [], "hashes": {}}
    invite = Event.from_stored(KNOWN_ROOM_VERSIONS["10"], pdu, "$invite")
    ruleset = default_ruleset(ALICE)
    assert decide(ruleset, invite) == decide(ruleset, invite.to_client_dict()) == ".m.rule.invite_for_me"


def test_one_flattened_event_for_many_users():
    rulesets = {user: compile_ruleset(default_ruleset(user)) for user in (ALICE, BOB, CAROL)}
    mention = FlattenedEvent(text("hi alice", **MENTION_ALICE))
    contexts = [(rulesets[user], context(user_id=user, display_name=None)) for user in (ALICE, BOB, CAROL)]
    results = evaluate_for_users(mention, contexts)
    assert results == {
        ALICE: ["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}],
        CAROL: ["notify"],
    }
    # the same flattened event gives each user their own answer, in any order
    invite = FlattenedEvent(member(CAROL, "invite"))
    assert decide(rulesets[CAROL], invite, context(user_id=CAROL)) == ".m.rule.invite_for_me"
    assert decide(rulesets[ALICE], invite, context()) == ".m.rule.member_event"
    assert decide(rulesets[CAROL], invite, context(user_id=CAROL)) == ".m.rule.invite_for_me"


def test_context_conditions_are_not_shared_between_users():
    flat = FlattenedEvent(text("hi", **ROOM_MENTION))
    ruleset = compile_ruleset(default_ruleset(ALICE))
    assert evaluate(ruleset, flat, context(sender_power_level=100)) == ["notify", {"set_tweak": "highlight"}]
    assert evaluate(ruleset, flat, context(sender_power_level=0)) == ["notify"]
    display = {
        "override": [{"rule_id": "name", "conditions": [{"kind": "contains_display_name"}], "actions": ["notify"]}]
    }
    flat = FlattenedEvent(text("hi Alice"))
    assert evaluate(display, flat, context(display_name="Alice")) == ["notify"]
    assert evaluate(display, flat, context(display_name="Carol")) is None


def test_deeply_nested_content_is_flattened_without_recursion():
    nested: dict[str, Any] = {"leaf": "x"}
    for _ in range(5000):
        nested = {"n": nested}
    flat = FlattenedEvent(event("t", nested))
    assert flat.get(("content",) + ("n",) * 5000 + ("leaf",)) == "x"


def test_absent_and_null_properties_differ():
    flat = FlattenedEvent(event("t", {"n": None}))
    assert flat.get(("content", "nope")) is MISSING
    assert flat.get(("content", "n")) is None
    assert flat.get(("content",)) is MISSING  # objects are walked into, not values
    assert flat.string(("type",)) == "t" and flat.string(("content", "n")) is None


def test_long_patterns_work_uncached():
    pattern = "x" * 300 + "*"
    assert compile_glob(pattern) is not compile_glob(pattern)
    condition = {"kind": "event_match", "key": "content.body", "pattern": pattern}
    assert condition_holds(condition, text("hey " + "X" * 300 + "yz"))
    assert not condition_holds(condition, text("hey " + "x" * 299))
