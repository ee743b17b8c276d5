"""Each server-default push rule, end to end: the event it is meant for, and a near miss, sent through the
real server and observed as the recipient would see it, in `unread_notifications` of /sync.

The users and rooms are shared by the module, so each check looks at how much the counts moved:
- bob keeps the server defaults;
- dave adds one underride rule that notifies for everything, so an event a default `[]` rule does not
  silence counts for him: that is how the near misses of the silencing rules show;
- erin disabled `.m.rule.message` and `.m.rule.encrypted`, so what counts for her in a one-to-one room
  is the one-to-one rules' doing;
- frank enabled `.m.rule.master`.
"""

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from homeserver.core.push_rules import default_ruleset
from tests.client import RoomClient, new_room_user, ok, push_rule_path, send_event, unread_counts
from tests.server import ServerProcess

NONE, NOTIFIED, HIGHLIGHTED = (0, 0), (1, 0), (1, 1)
ENCRYPTED = {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgA", "session_id": "s", "device_id": "D"}


@dataclass(frozen=True)
class World:
    alice: RoomClient  # the sender, and the rooms' creator (power 100)
    bob: RoomClient
    carol: RoomClient  # a sender without power
    dave: RoomClient
    erin: RoomClient
    frank: RoomClient
    group: str  # all of them
    bob_dm: str  # alice and bob
    erin_dm: str  # alice and erin


@pytest.fixture(scope="module")
def world(server: ServerProcess) -> World:
    alice, bob, carol, dave, erin, frank = (new_room_user(server.url) for _ in range(6))
    ok(dave.put(push_rule_path("underride", "everything"), {"conditions": [], "actions": ["notify"]}))
    for rule_id in (".m.rule.message", ".m.rule.encrypted"):
        ok(erin.put(push_rule_path("underride", rule_id, "enabled"), {"enabled": False}))
    ok(frank.put(push_rule_path("override", ".m.rule.master", "enabled"), {"enabled": True}))
    group = alice.create_room(preset="public_chat")
    for user in (bob, carol, dave, erin, frank):
        user.join(group)
    bob_dm, erin_dm = alice.create_room(preset="public_chat"), alice.create_room(preset="public_chat")
    bob.join(bob_dm)
    erin.join(erin_dm)
    return World(alice, bob, carol, dave, erin, frank, group, bob_dm, erin_dm)


def moved(room: str, recipients: list[RoomClient], send: Callable[[], Any]) -> list[tuple[int, int]]:
    """How far each recipient's (notification_count, highlight_count) in the room moved over `send()`."""
    before = [unread_counts(user, room) for user in recipients]
    send()
    after = [unread_counts(user, room) for user in recipients]
    return [(a[0] - b[0], a[1] - b[1]) for a, b in zip(after, before, strict=True)]


def sending(sender: RoomClient, room: str, event_type: str, content: dict[str, Any]) -> Callable[[], str]:
    return lambda: send_event(sender, room, event_type, content)


def message(sender: RoomClient, room: str, event_type: str = "m.room.message", **content: Any) -> Callable[[], str]:
    return sending(sender, room, event_type, text(**content))


def state(sender: RoomClient, room: str, event_type: str, content: dict[str, Any], key: str = "") -> Callable[[], str]:
    return lambda: sender.send_state(room, event_type, content, key)


def text(**content: Any) -> dict[str, Any]:
    return {"msgtype": "m.text", "body": "hello", **content}


COVERED = {
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
    ".m.rule.call",
    ".m.rule.encrypted_room_one_to_one",
    ".m.rule.room_one_to_one",
    ".m.rule.message",
    ".m.rule.encrypted",
}


def test_every_server_default_rule_is_covered_here() -> None:
    defaults = default_ruleset("@someone:localhost")["global"]
    assert {rule["rule_id"] for rules in defaults.values() for rule in rules} == COVERED


# -- override rules ------------------------------------------------------------------------------


def test_master_enabled_mutes_everything(world: World) -> None:
    w = world
    assert moved(w.group, [w.bob, w.frank], message(w.alice, w.group)) == [NOTIFIED, NONE]
    mention = message(w.alice, w.group, **{"m.mentions": {"user_ids": [w.frank.user_id], "room": True}})
    assert moved(w.group, [w.bob, w.frank], mention) == [HIGHLIGHTED, NONE]


def test_suppress_notices(world: World) -> None:
    w = world
    notice = message(w.alice, w.group, msgtype="m.notice")
    assert moved(w.group, [w.bob, w.dave], notice) == [NONE, NONE]
    assert moved(w.group, [w.bob, w.dave], message(w.alice, w.group, msgtype="m.text")) == [NOTIFIED, NOTIFIED]
    assert moved(w.group, [w.bob], message(w.alice, w.group, msgtype="m.notice.x")) == [NOTIFIED]


def test_invite_for_me(world: World) -> None:
    w = world
    room = w.alice.create_room(preset="public_chat")
    w.carol.join(room)
    w.alice.invite(room, w.bob.user_id or "")
    w.bob.join(room)  # the invite counted in the room he joined; his own join does not
    assert unread_counts(w.bob, room) == NOTIFIED
    # Someone else's invite is only a membership change for him.
    stranger = new_room_user(w.alice.base_url)
    assert moved(room, [w.bob, w.carol], lambda: w.alice.invite(room, stranger.user_id or "")) == [NONE, NONE]


def test_member_event(world: World) -> None:
    w = world
    newcomer = new_room_user(w.alice.base_url)
    assert moved(w.group, [w.bob, w.dave], lambda: newcomer.join(w.group)) == [NONE, NONE]
    assert moved(w.group, [w.bob, w.dave], lambda: newcomer.leave(w.group)) == [NONE, NONE]
    # The rule is about the type: a message that talks about membership notifies.
    near_miss = message(w.alice, w.group, membership="join")
    assert moved(w.group, [w.bob, w.dave], near_miss) == [NOTIFIED, NOTIFIED]


def test_is_user_mention(world: World) -> None:
    w = world
    mentioned = message(w.alice, w.group, **{"m.mentions": {"user_ids": [w.bob.user_id]}})
    assert moved(w.group, [w.bob, w.dave], mentioned) == [HIGHLIGHTED, NOTIFIED]
    someone_else = message(w.alice, w.group, **{"m.mentions": {"user_ids": [w.dave.user_id]}})
    assert moved(w.group, [w.bob, w.dave], someone_else) == [NOTIFIED, HIGHLIGHTED]
    not_an_array = message(w.alice, w.group, **{"m.mentions": {"user_ids": w.bob.user_id}})
    assert moved(w.group, [w.bob], not_an_array) == [NOTIFIED]
    # The body is not looked at (the legacy body rules are gone since v1.17).
    in_body_only = message(w.alice, w.group, body=f"{w.bob.user_id}: hi")
    assert moved(w.group, [w.bob], in_body_only) == [NOTIFIED]


def test_is_room_mention_needs_the_power_to_notify_the_room(world: World) -> None:
    w = world
    from_alice = message(w.alice, w.group, **{"m.mentions": {"room": True}})
    assert moved(w.group, [w.bob, w.dave], from_alice) == [HIGHLIGHTED, HIGHLIGHTED]
    from_carol = message(w.carol, w.group, **{"m.mentions": {"room": True}})  # power 0 < notifications.room 50
    assert moved(w.group, [w.bob, w.dave], from_carol) == [NOTIFIED, NOTIFIED]
    as_a_string = message(w.alice, w.group, **{"m.mentions": {"room": "true"}})
    assert moved(w.group, [w.bob], as_a_string) == [NOTIFIED]
    legacy = message(w.alice, w.group, body="@room look at this")  # .m.rule.roomnotif is gone since v1.17
    assert moved(w.group, [w.bob], legacy) == [NOTIFIED]


def test_is_room_mention_follows_the_rooms_notification_level(world: World) -> None:
    w = world
    room = w.alice.create_room(preset="public_chat")
    w.bob.join(room)
    w.carol.join(room)
    levels = ok(w.alice.room_get(room, "state/m.room.power_levels/"))
    w.alice.send_state(room, "m.room.power_levels", {**levels, "notifications": {"room": 0}})
    from_carol = message(w.carol, room, **{"m.mentions": {"room": True}})
    assert moved(room, [w.bob], from_carol) == [HIGHLIGHTED]


def test_tombstone(world: World) -> None:
    w = world
    room = w.alice.create_room(preset="public_chat")
    w.bob.join(room)
    w.carol.join(room)
    content = {"body": "moved", "replacement_room": f"!{uuid.uuid4().hex}:localhost"}
    assert moved(room, [w.bob], state(w.alice, room, "m.room.tombstone", content, key="x")) == [NONE]
    assert moved(room, [w.bob], state(w.alice, room, "m.room.tombstone", content)) == [HIGHLIGHTED]


def test_reaction(world: World) -> None:
    w = world
    target = message(w.alice, w.group)()
    relates = {"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": "👍"}}
    reaction = sending(w.carol, w.group, "m.reaction", relates)
    assert moved(w.group, [w.bob, w.dave], reaction) == [NONE, NONE]
    # The rule is about the type: a message that relates the same way notifies.
    assert moved(w.group, [w.bob, w.dave], message(w.carol, w.group, **relates)) == [NOTIFIED, NOTIFIED]


def test_room_server_acl(world: World) -> None:
    w = world
    acl = {"allow": ["*"], "deny": ["evil.example"], "allow_ip_literals": False}
    assert moved(w.group, [w.bob, w.dave], state(w.alice, w.group, "m.room.server_acl", acl)) == [NONE, NONE]
    # Only the room's ACL (empty state key) is silenced: dave's catch-all rule hears another one.
    other_key = state(w.alice, w.group, "m.room.server_acl", acl, key="x")
    assert moved(w.group, [w.bob, w.dave], other_key) == [NONE, NOTIFIED]


def test_suppress_edits(world: World) -> None:
    w = world
    original = message(w.alice, w.group)()
    edit = {"m.new_content": text(body="edited"), "m.relates_to": {"rel_type": "m.replace", "event_id": original}}
    assert moved(w.group, [w.bob, w.dave], message(w.alice, w.group, body="* edited", **edit)) == [NONE, NONE]
    thread = {"m.relates_to": {"rel_type": "m.thread", "event_id": original}}
    assert moved(w.group, [w.bob, w.dave], message(w.alice, w.group, **thread)) == [NOTIFIED, NOTIFIED]


# -- underride rules -----------------------------------------------------------------------------


def test_call(world: World) -> None:
    w = world
    invite = {"call_id": "c1", "version": "1", "lifetime": 60000, "offer": {"type": "offer", "sdp": "v=0"}}
    call = sending(w.alice, w.group, "m.call.invite", invite)
    assert moved(w.group, [w.bob, w.erin], call) == [NOTIFIED, NOTIFIED]
    answer = sending(w.alice, w.group, "m.call.answer", {"call_id": "c1", "version": "1"})
    assert moved(w.group, [w.bob], answer) == [NONE]


def test_room_one_to_one(world: World) -> None:
    w = world
    assert moved(w.erin_dm, [w.erin], message(w.alice, w.erin_dm)) == [NOTIFIED]
    assert moved(w.bob_dm, [w.bob], message(w.alice, w.bob_dm)) == [NOTIFIED]
    assert moved(w.group, [w.erin], message(w.alice, w.group)) == [NONE]  # more than two members


def test_encrypted_room_one_to_one(world: World) -> None:
    w = world
    assert moved(w.erin_dm, [w.erin], sending(w.alice, w.erin_dm, "m.room.encrypted", ENCRYPTED)) == [NOTIFIED]
    assert moved(w.bob_dm, [w.bob], sending(w.alice, w.bob_dm, "m.room.encrypted", ENCRYPTED)) == [NOTIFIED]
    assert moved(w.group, [w.erin], sending(w.alice, w.group, "m.room.encrypted", ENCRYPTED)) == [NONE]


def test_message(world: World) -> None:
    w = world
    assert moved(w.group, [w.bob, w.erin], message(w.alice, w.group)) == [NOTIFIED, NONE]
    near_miss = message(w.alice, w.group, event_type="m.room.message.feedback")
    assert moved(w.group, [w.bob], near_miss) == [NONE]


def test_encrypted(world: World) -> None:
    w = world
    encrypted = sending(w.alice, w.group, "m.room.encrypted", ENCRYPTED)
    assert moved(w.group, [w.bob, w.erin], encrypted) == [NOTIFIED, NONE]
    near_miss = sending(w.alice, w.group, "m.room.encrypted.other", ENCRYPTED)
    assert moved(w.group, [w.bob], near_miss) == [NONE]


def test_own_events_never_count(world: World) -> None:
    w = world
    mention_self = message(w.bob, w.group, **{"m.mentions": {"user_ids": [w.bob.user_id], "room": True}})
    assert moved(w.group, [w.bob, w.dave], mention_self) == [NONE, NOTIFIED]
