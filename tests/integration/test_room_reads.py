"""Reading rooms over HTTP: state, single events, /messages, /context, /members, /joined_members."""

import json
from typing import Any

from tests.client import RoomClient, error, ok, quote


def paginate(client: RoomClient, room_id: str, direction: str, limit: int, **params: Any) -> list[list[dict]]:
    """Every page from `params` on, following `end` until the server leaves it out."""
    pages = []
    query = {"dir": direction, "limit": limit, **params}
    while True:
        body = ok(client.room_get(room_id, "messages", **query))
        pages.append(body["chunk"])
        if "end" not in body:
            return pages
        query["from"] = body["end"]
        assert len(pages) < 100, "pagination does not end"


def ids(events: list[dict]) -> list[str]:
    return [e["event_id"] for e in events]


def texts(events: list[dict]) -> list[str]:
    return [e["content"]["body"] for e in events if e["type"] == "m.room.message"]


def public_room(client: RoomClient, **body: Any) -> str:
    return client.create_room(preset="public_chat", **body)


def now_token(client: RoomClient, room_id: str) -> str:
    """A token for "here", as a client would keep one: the start of a backwards page from the end."""
    return ok(client.room_get(room_id, "messages", dir="b", limit=1))["start"]


# -- /messages ------------------------------------------------------------------------------


def test_paginating_backwards_returns_every_event_once_newest_first(alice: RoomClient) -> None:
    room = alice.create_room()
    sent = [alice.send_text(room, f"message {i}") for i in range(65)]
    pages = paginate(alice, room, "b", 7)
    events = [e for page in pages for e in page]
    assert all(len(page) == 7 for page in pages[:-1])
    assert len(ids(events)) == len(set(ids(events)))
    assert [i for i in ids(events) if i in sent] == sent[::-1]
    assert events[-1]["type"] == "m.room.create"


def test_paginating_forwards_from_the_start_returns_every_event_once_in_order(alice: RoomClient) -> None:
    room = alice.create_room()
    sent = [alice.send_text(room, f"message {i}") for i in range(62)]
    events = [e for page in paginate(alice, room, "f", 9) for e in page]
    assert events[0]["type"] == "m.room.create"
    assert len(ids(events)) == len(set(ids(events)))
    assert ids(events)[-62:] == sent


def test_backwards_end_token_pages_forwards_again(alice: RoomClient) -> None:
    room = alice.create_room()
    sent = [alice.send_text(room, f"message {i}") for i in range(10)]
    first = ok(alice.room_get(room, "messages", dir="b", limit=4))
    assert ids(first["chunk"]) == sent[:-5:-1]
    forwards = ok(alice.room_get(room, "messages", dir="f", limit=10, **{"from": first["end"]}))
    assert ids(forwards["chunk"]) == sent[-4:]


def test_to_token_stops_pagination(alice: RoomClient) -> None:
    room = alice.create_room()
    for i in range(5):
        alice.send_text(room, f"old {i}")
    mark = now_token(alice, room)
    for i in range(5):
        alice.send_text(room, f"new {i}")
    backwards = [e for page in paginate(alice, room, "b", 2, to=mark) for e in page]
    assert texts(backwards) == [f"new {i}" for i in reversed(range(5))]
    forwards = [e for page in paginate(alice, room, "f", 3, to=mark) for e in page]
    assert texts(forwards) == [f"old {i}" for i in range(5)]


def test_messages_events_are_in_the_client_format(alice: RoomClient) -> None:
    room = alice.create_room()
    event_id = alice.send_text(room, "hello")
    (event,) = ok(alice.room_get(room, "messages", dir="b", limit=1))["chunk"]
    assert event["event_id"] == event_id
    assert event["room_id"] == room
    assert event["sender"] == alice.user_id
    assert event["content"] == {"msgtype": "m.text", "body": "hello"}
    assert isinstance(event["origin_server_ts"], int)
    assert event["unsigned"]["age"] >= 0
    assert "auth_events" not in event and "hashes" not in event


def test_filter_by_type_keeps_only_matching_events(alice: RoomClient) -> None:
    room = alice.create_room()
    alice.send_text(room, "one")
    alice.send_state(room, "m.room.topic", {"topic": "a topic"})
    alice.send_text(room, "two")
    body = ok(alice.room_get(room, "messages", dir="b", filter=json.dumps({"types": ["m.room.message"]})))
    assert texts(body["chunk"]) == ["two", "one"]
    assert {e["type"] for e in body["chunk"]} == {"m.room.message"}
    body = ok(alice.room_get(room, "messages", dir="b", filter=json.dumps({"types": ["m.room.t*"]})))
    assert [e["type"] for e in body["chunk"]] == ["m.room.topic"]
    body = ok(alice.room_get(room, "messages", dir="b", filter=json.dumps({"not_types": ["m.room.*"]})))
    assert body["chunk"] == []


def test_filter_by_sender_keeps_only_their_events(alice: RoomClient, bob: RoomClient) -> None:
    room = public_room(alice)
    bob.join(room)
    alice.send_text(room, "from alice")
    bob.send_text(room, "from bob")
    only_bob = {"senders": [bob.user_id], "types": ["m.room.message"]}
    assert texts(ok(alice.room_get(room, "messages", dir="b", filter=json.dumps(only_bob)))["chunk"]) == ["from bob"]
    not_bob = {"not_senders": [bob.user_id], "types": ["m.room.message"]}
    assert texts(ok(alice.room_get(room, "messages", dir="b", filter=json.dumps(not_bob)))["chunk"]) == ["from alice"]


def test_filter_contains_url_keeps_events_with_a_url(alice: RoomClient) -> None:
    room = alice.create_room()
    alice.send_text(room, "no url")
    path = f"/_matrix/client/v3/rooms/{quote(room)}/send/m.room.message/img1"
    image = ok(alice.put(path, {"msgtype": "m.image", "body": "cat.png", "url": "mxc://localhost/cat"}))["event_id"]
    body = ok(alice.room_get(room, "messages", dir="b", filter=json.dumps({"contains_url": True})))
    assert ids(body["chunk"]) == [image]


def test_filter_limit_bounds_the_page(alice: RoomClient) -> None:
    room = alice.create_room()
    for i in range(5):
        alice.send_text(room, f"m{i}")
    body = ok(alice.room_get(room, "messages", dir="b", filter=json.dumps({"limit": 2})))
    assert texts(body["chunk"]) == ["m4", "m3"]


def test_filtered_pagination_skips_past_many_hidden_events(alice: RoomClient) -> None:
    room = alice.create_room()
    alice.send_state(room, "m.room.topic", {"topic": "the only topic"})
    for i in range(30):
        alice.send_text(room, f"m{i}")
    only_topic = json.dumps({"types": ["m.room.topic"]})
    pages = paginate(alice, room, "b", 5, filter=only_topic)
    assert [e["content"] for page in pages for e in page] == [{"topic": "the only topic"}]


def test_lazy_loading_returns_member_events_of_the_senders_only(
    alice: RoomClient, bob: RoomClient, carol: RoomClient
) -> None:
    room = public_room(alice)
    bob.join(room)
    carol.join(room)
    for i in range(3):
        bob.send_text(room, f"bob {i}")
        alice.send_text(room, f"alice {i}")
    lazy = json.dumps({"lazy_load_members": True})
    body = ok(carol.room_get(room, "messages", dir="b", limit=4, filter=lazy))
    assert {e["sender"] for e in body["chunk"]} == {alice.user_id, bob.user_id}
    assert {(e["type"], e["state_key"]) for e in body["state"]} == {
        ("m.room.member", alice.user_id),
        ("m.room.member", bob.user_id),
    }
    assert "state" not in ok(carol.room_get(room, "messages", dir="b", limit=4))


def test_malformed_pagination_token_is_invalid_param(alice: RoomClient) -> None:
    room = alice.create_room()
    for token in ("nonsense", "t1", "t1_x", "s-4", "t99999999999999999999_1"):
        assert error(alice.room_get(room, "messages", dir="b", **{"from": token}), 400) == "M_INVALID_PARAM"
    assert error(alice.room_get(room, "messages", dir="b", to="zzz"), 400) == "M_INVALID_PARAM"


def test_dir_must_be_b_or_f(alice: RoomClient) -> None:
    room = alice.create_room()
    assert error(alice.room_get(room, "messages", dir="x"), 400) == "M_INVALID_PARAM"
    assert error(alice.room_get(room, "messages"), 400) == "M_INVALID_PARAM"


def test_malformed_filter_is_rejected(alice: RoomClient) -> None:
    room = alice.create_room()
    assert error(alice.room_get(room, "messages", dir="b", filter="{not json"), 400) == "M_INVALID_PARAM"
    bad = json.dumps({"types": "m.room.message"})
    assert error(alice.room_get(room, "messages", dir="b", filter=bad), 400) == "M_BAD_JSON"
    assert error(alice.room_get(room, "messages", dir="b", filter="[1]"), 400) == "M_BAD_JSON"


def test_negative_limit_is_invalid_param(alice: RoomClient) -> None:
    room = alice.create_room()
    assert error(alice.room_get(room, "messages", dir="b", limit=-1), 400) == "M_INVALID_PARAM"


# -- redactions -----------------------------------------------------------------------------


def redact(client: RoomClient, room_id: str, event_id: str, reason: str) -> str:
    path = f"/_matrix/client/v3/rooms/{quote(room_id)}/redact/{quote(event_id)}/txn-{event_id[1:9]}"
    return ok(client.put(path, {"reason": reason}))["event_id"]


def test_redacted_event_comes_back_pruned_with_redacted_because(alice: RoomClient) -> None:
    room = alice.create_room()
    secret = alice.send_text(room, "oops, a secret")
    redaction = redact(alice, room, secret, "posted by mistake")
    chunk = ok(alice.room_get(room, "messages", dir="b", limit=2))["chunk"]
    assert ids(chunk) == [redaction, secret]
    pruned = chunk[1]
    assert pruned["content"] == {}
    because = pruned["unsigned"]["redacted_because"]
    assert because["event_id"] == redaction
    assert because["content"]["reason"] == "posted by mistake"
    single = ok(alice.room_get(room, f"event/{quote(secret)}"))
    assert single["content"] == {}
    assert single["unsigned"]["redacted_because"]["event_id"] == redaction


def test_redacted_state_event_keeps_the_content_its_room_version_protects(alice: RoomClient) -> None:
    room = alice.create_room()
    member_id = ok(alice.room_get(room, f"state/m.room.member/{quote(alice.user_id)}", format="event"))["event_id"]
    topic = alice.send_state(room, "m.room.topic", {"topic": "gone soon"})
    redact(alice, room, topic, "no topic")
    redact(alice, room, member_id, "hide my member event")
    assert ok(alice.room_get(room, "state/m.room.topic")) == {}
    assert ok(alice.room_get(room, f"state/m.room.member/{quote(alice.user_id)}")) == {"membership": "join"}


# -- state ----------------------------------------------------------------------------------


def test_room_state_lists_the_current_state_events(alice: RoomClient) -> None:
    room = alice.create_room(name="First name")
    alice.send_state(room, "m.room.name", {"name": "Second name"})
    state = ok(alice.room_get(room, "state"))
    keys = {(e["type"], e["state_key"]) for e in state}
    assert {("m.room.create", ""), ("m.room.member", alice.user_id), ("m.room.name", "")} <= keys
    assert len(keys) == len(state)
    (name,) = [e for e in state if e["type"] == "m.room.name"]
    assert name["content"] == {"name": "Second name"}
    assert name["room_id"] == room


def test_state_event_returns_its_content(alice: RoomClient) -> None:
    room = alice.create_room(name="The room")
    assert ok(alice.room_get(room, "state/m.room.name")) == {"name": "The room"}
    assert ok(alice.room_get(room, "state/m.room.name/")) == {"name": "The room"}
    assert ok(alice.room_get(room, "state/m.room.name/", format="content")) == {"name": "The room"}
    member = ok(alice.room_get(room, f"state/m.room.member/{quote(alice.user_id)}"))
    assert member["membership"] == "join"


def test_state_event_with_format_event_returns_the_whole_event(alice: RoomClient) -> None:
    room = alice.create_room(name="The room")
    event = ok(alice.room_get(room, "state/m.room.name", format="event"))
    assert event["type"] == "m.room.name"
    assert event["state_key"] == ""
    assert event["content"] == {"name": "The room"}
    assert event["sender"] == alice.user_id
    assert event["event_id"].startswith("$")
    assert error(alice.room_get(room, "state/m.room.name", format="pdu"), 400) == "M_INVALID_PARAM"


def test_absent_state_is_not_found(alice: RoomClient) -> None:
    room = alice.create_room()
    assert error(alice.room_get(room, "state/m.room.topic"), 404) == "M_NOT_FOUND"
    assert error(alice.room_get(room, "state/m.room.member/@nobody:localhost"), 404) == "M_NOT_FOUND"


# -- one event ------------------------------------------------------------------------------


def test_event_by_id_returns_it(alice: RoomClient) -> None:
    room = alice.create_room()
    event_id = alice.send_text(room, "find me")
    event = ok(alice.room_get(room, f"event/{quote(event_id)}"))
    assert event["event_id"] == event_id
    assert event["content"]["body"] == "find me"
    assert event["room_id"] == room


def test_unknown_event_is_not_found(alice: RoomClient) -> None:
    room = alice.create_room()
    assert error(alice.room_get(room, f"event/{quote('$nope')}"), 404) == "M_NOT_FOUND"


def test_event_asked_for_in_another_room_is_not_found(alice: RoomClient) -> None:
    room, other = alice.create_room(), alice.create_room()
    event_id = alice.send_text(room, "here")
    assert error(alice.room_get(other, f"event/{quote(event_id)}"), 404) == "M_NOT_FOUND"


# -- context --------------------------------------------------------------------------------


def test_context_returns_the_events_around_an_event(alice: RoomClient) -> None:
    room = alice.create_room()
    sent = [alice.send_text(room, f"m{i}") for i in range(10)]
    body = ok(alice.room_get(room, f"context/{quote(sent[5])}", limit=4))
    assert body["event"]["event_id"] == sent[5]
    assert ids(body["events_before"]) == [sent[4], sent[3]]
    assert ids(body["events_after"]) == [sent[6], sent[7]]
    state_keys = {(e["type"], e["state_key"]) for e in body["state"]}
    assert ("m.room.member", alice.user_id) in state_keys and ("m.room.create", "") in state_keys


def test_context_tokens_continue_with_messages(alice: RoomClient) -> None:
    room = alice.create_room()
    sent = [alice.send_text(room, f"m{i}") for i in range(10)]
    body = ok(alice.room_get(room, f"context/{quote(sent[5])}", limit=4))
    earlier = ok(alice.room_get(room, "messages", dir="b", limit=2, **{"from": body["start"]}))
    assert ids(earlier["chunk"]) == [sent[2], sent[1]]
    later = ok(alice.room_get(room, "messages", dir="f", limit=2, **{"from": body["end"]}))
    assert ids(later["chunk"]) == [sent[8], sent[9]]


def test_context_with_lazy_loading_returns_member_state_of_the_senders_only(
    alice: RoomClient, bob: RoomClient, carol: RoomClient
) -> None:
    room = public_room(alice)
    bob.join(room)
    carol.join(room)
    sent = [alice.send_text(room, "a"), bob.send_text(room, "b"), alice.send_text(room, "c")]
    lazy = json.dumps({"lazy_load_members": True, "types": ["m.room.message", "m.room.member"]})
    body = ok(alice.room_get(room, f"context/{quote(sent[1])}", limit=2, filter=lazy))
    assert ids(body["events_before"]) == [sent[0]]
    assert ids(body["events_after"]) == [sent[2]]
    members = {e["state_key"] for e in body["state"] if e["type"] == "m.room.member"}
    assert members == {alice.user_id, bob.user_id}


def test_context_of_an_unknown_event_is_not_found(alice: RoomClient) -> None:
    room = alice.create_room()
    assert error(alice.room_get(room, f"context/{quote('$missing')}"), 404) == "M_NOT_FOUND"


# -- members --------------------------------------------------------------------------------


def test_members_lists_member_events(alice: RoomClient, bob: RoomClient) -> None:
    room = public_room(alice)
    bob.join(room)
    chunk = ok(alice.room_get(room, "members"))["chunk"]
    assert {(e["state_key"], e["content"]["membership"]) for e in chunk} == {
        (alice.user_id, "join"),
        (bob.user_id, "join"),
    }


def test_members_at_a_token_before_a_join_leaves_out_the_later_joiner(alice: RoomClient, bob: RoomClient) -> None:
    room = public_room(alice)
    before_bob = now_token(alice, room)
    bob.join(room)
    assert {e["state_key"] for e in ok(alice.room_get(room, "members", at=before_bob))["chunk"]} == {alice.user_id}
    assert {e["state_key"] for e in ok(alice.room_get(room, "members"))["chunk"]} == {alice.user_id, bob.user_id}


def test_members_at_a_malformed_token_is_invalid_param(alice: RoomClient) -> None:
    room = alice.create_room()
    assert error(alice.room_get(room, "members", at="yesterday"), 400) == "M_INVALID_PARAM"


def test_members_filtered_by_membership(alice: RoomClient, bob: RoomClient, carol: RoomClient) -> None:
    room = public_room(alice)
    bob.join(room)
    alice.invite(room, carol.user_id)
    joined = ok(alice.room_get(room, "members", membership="join"))["chunk"]
    assert {e["state_key"] for e in joined} == {alice.user_id, bob.user_id}
    not_joined = ok(alice.room_get(room, "members", not_membership="join"))["chunk"]
    assert {e["state_key"] for e in not_joined} == {carol.user_id}
    invited_or_not_joined = ok(alice.room_get(room, "members", membership="invite", not_membership="join"))["chunk"]
    assert {e["state_key"] for e in invited_or_not_joined} == {carol.user_id}
    assert error(alice.room_get(room, "members", membership="member"), 400) == "M_INVALID_PARAM"


def test_joined_members_maps_users_to_profiles(alice: RoomClient, bob: RoomClient) -> None:
    profile = f"/_matrix/client/v3/profile/{quote(alice.user_id)}"
    ok(alice.put(f"{profile}/displayname", {"displayname": "Alice"}))
    ok(alice.put(f"{profile}/avatar_url", {"avatar_url": "mxc://localhost/alice"}))
    ok(bob.put(f"/_matrix/client/v3/profile/{quote(bob.user_id)}/displayname", {"displayname": "Bob"}))
    room = public_room(alice)
    bob.join(room)
    joined = ok(bob.room_get(room, "joined_members"))["joined"]
    assert joined == {
        alice.user_id: {"display_name": "Alice", "avatar_url": "mxc://localhost/alice"},
        bob.user_id: {"display_name": "Bob"},
    }


def test_joined_members_is_forbidden_to_non_members(alice: RoomClient, bob: RoomClient) -> None:
    room = public_room(alice)
    assert error(bob.room_get(room, "joined_members"), 403) == "M_FORBIDDEN"
    bob.join(room)
    bob.leave(room)
    assert error(bob.room_get(room, "joined_members"), 403) == "M_FORBIDDEN"
