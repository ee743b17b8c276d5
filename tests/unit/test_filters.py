"""Filters: parsing and validation as the spec defines them, and which events they let through."""

import json

import pytest
from signedjson.key import generate_signing_key

from homeserver.core.errors import MatrixError
from homeserver.core.event_builder import build_event
from homeserver.core.filters import (
    EventFilter,
    Filter,
    RoomEventFilter,
    matches_any,
    only_fields,
    parse_room_event_filter,
    split_field_path,
)
from tests.core.rooms import ALICE, create_content, version

MESSAGE = {
    "type": "m.room.message",
    "sender": "@alice:example.org",
    "room_id": "!room:example.org",
    "content": {"msgtype": "m.text", "body": "hi"},
}
IMAGE = {**MESSAGE, "content": {"msgtype": "m.image", "body": "cat", "url": "mxc://example.org/cat"}}
TOPIC = {**MESSAGE, "type": "m.room.topic", "sender": "@bob:example.org", "content": {"topic": "t"}}


def bad_json(body: object) -> str:
    with pytest.raises(MatrixError) as raised:
        RoomEventFilter.from_json(body)
    assert raised.value.code == 400
    return raised.value.errcode


# -- parsing --------------------------------------------------------------------------------


def test_empty_filter_lets_everything_through() -> None:
    empty = RoomEventFilter.from_json({})
    assert empty == RoomEventFilter()
    assert all(empty.matches(e) for e in (MESSAGE, IMAGE, TOPIC))


def test_room_event_filter_fields_parse() -> None:
    parsed = RoomEventFilter.from_json(
        {
            "limit": 10,
            "types": ["m.room.message"],
            "not_senders": ["@spam:example.com"],
            "not_rooms": ["!spam:example.com"],
            "contains_url": True,
            "lazy_load_members": True,
            "include_redundant_members": False,
        }
    )
    assert parsed == RoomEventFilter(
        limit=10,
        types=("m.room.message",),
        not_senders=("@spam:example.com",),
        not_rooms=("!spam:example.com",),
        contains_url=True,
        lazy_load_members=True,
    )


def test_unknown_keys_are_ignored() -> None:
    assert RoomEventFilter.from_json({"org.example.future": 1}) == RoomEventFilter()


@pytest.mark.parametrize(
    "body",
    [
        [],
        "types",
        {"types": "m.room.message"},
        {"types": [1]},
        {"not_types": [None]},
        {"senders": ["alice"]},
        {"not_senders": "@a:b"},
        {"rooms": ["#alias:example.org"]},
        {"limit": 0},
        {"limit": -3},
        {"limit": "10"},
        {"limit": True},
        {"limit": 1.5},
        {"contains_url": "yes"},
        {"lazy_load_members": 1},
    ],
)
def test_malformed_filter_is_bad_json(body: object) -> None:
    assert bad_json(body) == "M_BAD_JSON"


def test_filter_query_parameter_that_is_not_json_is_invalid_param() -> None:
    with pytest.raises(MatrixError) as raised:
        parse_room_event_filter("{types:")
    assert (raised.value.code, raised.value.errcode) == (400, "M_INVALID_PARAM")


def test_absent_filter_query_parameter_is_none() -> None:
    assert parse_room_event_filter(None) is None
    assert parse_room_event_filter("") is None
    assert parse_room_event_filter(json.dumps({"limit": 3})) == RoomEventFilter(limit=3)


# The request example of POST /user/{userId}/filter (api/client-server/filter.yaml).
SPEC_FILTER_EXAMPLE = {
    "room": {
        "state": {"types": ["m.room.*"], "not_rooms": ["!726s6s6q:example.com"]},
        "timeline": {
            "limit": 10,
            "types": ["m.room.message"],
            "not_rooms": ["!726s6s6q:example.com"],
            "not_senders": ["@spam:example.com"],
        },
        "ephemeral": {
            "types": ["m.receipt", "m.typing"],
            "not_rooms": ["!726s6s6q:example.com"],
            "not_senders": ["@spam:example.com"],
        },
    },
    "presence": {"types": ["m.presence"], "not_senders": ["@alice:example.com"]},
    "event_format": "client",
    "event_fields": ["type", "content", "sender"],
}


def test_spec_example_sync_filter_parses_each_section() -> None:
    parsed = Filter.from_json(SPEC_FILTER_EXAMPLE)
    assert parsed.event_fields == ("type", "content", "sender")
    assert parsed.event_format == "client"
    assert parsed.presence == EventFilter(types=("m.presence",), not_senders=("@alice:example.com",))
    assert parsed.room.rooms is None and parsed.room.include_leave is False
    assert parsed.room.timeline == RoomEventFilter(
        limit=10,
        types=("m.room.message",),
        not_rooms=("!726s6s6q:example.com",),
        not_senders=("@spam:example.com",),
    )
    assert parsed.room.state == RoomEventFilter(types=("m.room.*",), not_rooms=("!726s6s6q:example.com",))
    assert parsed.room.ephemeral.types == ("m.receipt", "m.typing")
    assert parsed.room.account_data == RoomEventFilter()
    assert parsed.account_data == EventFilter()


def test_spec_example_timeline_filter_matches_messages_not_from_the_spammer() -> None:
    timeline = Filter.from_json(SPEC_FILTER_EXAMPLE).room.timeline
    spam = {**MESSAGE, "sender": "@spam:example.com"}
    in_excluded_room = {**MESSAGE, "room_id": "!726s6s6q:example.com"}
    assert timeline.filter([MESSAGE, TOPIC, spam, in_excluded_room]) == [MESSAGE]


def test_room_filter_includes_rooms() -> None:
    room = Filter.from_json({"room": {"rooms": ["!a:x", "!b:x"], "not_rooms": ["!b:x"]}}).room
    assert [r for r in ("!a:x", "!b:x", "!c:x") if room.includes_room(r)] == ["!a:x"]


@pytest.mark.parametrize(
    "body",
    [{"event_format": "xml"}, {"event_fields": "content"}, {"room": []}, {"room": {"timeline": {"limit": 0}}}],
)
def test_malformed_sync_filter_is_bad_json(body: object) -> None:
    with pytest.raises(MatrixError) as raised:
        Filter.from_json(body)
    assert raised.value.errcode == "M_BAD_JSON"


# -- matching -------------------------------------------------------------------------------


def test_types_include_only_the_listed_types() -> None:
    only_messages = EventFilter(types=("m.room.message",))
    assert only_messages.filter([MESSAGE, TOPIC, IMAGE]) == [MESSAGE, IMAGE]


def test_empty_types_list_includes_nothing() -> None:
    assert EventFilter(types=()).filter([MESSAGE, TOPIC]) == []


def test_not_types_wins_over_types() -> None:
    both = EventFilter(types=("m.room.*",), not_types=("m.room.topic",))
    assert both.filter([MESSAGE, TOPIC]) == [MESSAGE]


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("m.room.*", "m.room.message", True),
        ("m.room.*", "m.room.", True),
        ("m.room.*", "m.roomy", False),
        ("*.message", "m.room.message", True),
        ("m.*.message", "m.room.message", True),
        ("*", "anything", True),
        ("m.room.message", "m.room.messages", False),
        ("m.room.?", "m.room.x", False),  # only * is special
        ("m.room.?", "m.room.?", True),
        ("m.[a]", "m.a", False),
    ],
)
def test_type_wildcards(pattern: str, value: str, expected: bool) -> None:
    assert matches_any(value, [pattern]) is expected


def test_senders_and_not_senders() -> None:
    assert EventFilter(senders=("@bob:example.org",)).filter([MESSAGE, TOPIC]) == [TOPIC]
    assert EventFilter(not_senders=("@bob:example.org",)).filter([MESSAGE, TOPIC]) == [MESSAGE]
    assert EventFilter(senders=("@bob:example.org",), not_senders=("@bob:example.org",)).filter([TOPIC]) == []


def test_contains_url() -> None:
    assert RoomEventFilter(contains_url=True).filter([MESSAGE, IMAGE]) == [IMAGE]
    assert RoomEventFilter(contains_url=False).filter([MESSAGE, IMAGE]) == [MESSAGE]
    not_a_string = {**MESSAGE, "content": {"url": 5}}
    assert RoomEventFilter(contains_url=True).filter([not_a_string]) == []


def test_rooms_and_not_rooms() -> None:
    elsewhere = {**MESSAGE, "room_id": "!other:example.org"}
    assert RoomEventFilter(rooms=("!other:example.org",)).filter([MESSAGE, elsewhere]) == [elsewhere]
    assert RoomEventFilter(not_rooms=("!other:example.org",)).filter([MESSAGE, elsewhere]) == [MESSAGE]


def test_matches_an_event_object() -> None:
    room_version = version("11")
    event = build_event(
        room_version,
        "example.org",
        generate_signing_key("1"),
        event_type="m.room.create",
        sender=ALICE,
        content=create_content(room_version),
        room_id="!room:example.org",
        prev_event_ids=[],
        auth_event_ids=[],
        depth=1,
        origin_server_ts=0,
        state_key="",
    )
    assert RoomEventFilter(types=("m.room.*",), rooms=("!room:example.org",), senders=(ALICE,)).matches(event)
    assert not RoomEventFilter(contains_url=True).matches(event)
    assert not EventFilter(not_types=("m.room.create",)).matches(event)


# -- event_fields ---------------------------------------------------------------------------


def test_field_paths_split_on_unescaped_dots() -> None:
    assert split_field_path("content.body") == ["content", "body"]
    assert split_field_path("content.m\\.relates_to") == ["content", "m.relates_to"]
    assert split_field_path("content.m\\\\foo") == ["content", "m\\foo"]
    assert split_field_path("content.\\x") == ["content", "\\x"]


def test_only_fields_keeps_just_the_named_paths() -> None:
    event = {
        "type": "m.room.message",
        "sender": "@alice:example.org",
        "content": {"body": "hi", "msgtype": "m.text", "m.relates_to": {"rel_type": "m.thread"}},
    }
    assert only_fields(event, ["type", "content.body", "content.m\\.relates_to", "missing", "type.nested"]) == {
        "type": "m.room.message",
        "content": {"body": "hi", "m.relates_to": {"rel_type": "m.thread"}},
    }
    whole = only_fields(event, ["content", "content.body"])
    whole["content"]["body"] = "changed"
    assert event["content"]["body"] == "hi"
