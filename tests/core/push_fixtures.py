"""Events, contexts and the spec's default rules for the push rule tests."""

import json
import re
from typing import Any

from homeserver.core.push_rules import Notification, PushContext

from .vectors import VECTORS_DIR

PUSH_MD = VECTORS_DIR.parent / "src" / "content" / "client-server-api" / "modules" / "push.md"

ALICE = "@alice:example.org"
BOB = "@bob:example.org"
CAROL = "@carol:example.org"
ROOM = "!636q39766251:example.com"


def event(event_type: str = "m.room.message", content: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """A client-format event Bob sends to ROOM."""
    return {
        "type": event_type,
        "content": {} if content is None else content,
        "event_id": "$143273582443PhrSn:example.org",
        "room_id": ROOM,
        "sender": BOB,
        "origin_server_ts": 1432735824653,
        **fields,
    }


def text(body: str, **content: Any) -> dict[str, Any]:
    return event(content={"msgtype": "m.text", "body": body, **content})


def context(**fields: Any) -> PushContext:
    """Alice in a room of three, with Bob at power level 0 unless a test says otherwise."""
    return PushContext(
        **{"user_id": ALICE, "display_name": "Alice", "member_count": 3, "sender_power_level": 0, **fields}
    )


def spec_default_rules() -> dict[str, list[dict[str, Any]]]:
    """The JSON definitions under "Predefined Rules", by kind, in the spec's order."""
    text_md = PUSH_MD.read_text(encoding="utf-8")
    section = text_md[text_md.index("#### Predefined Rules") : text_md.index("#### Push Rules: API")]
    rules: dict[str, list[dict[str, Any]]] = {}
    for heading, body in re.findall(r"^##### Default (\w+) Rules\n(.*?)(?=^##### |\Z)", section, re.M | re.S):
        blocks = re.findall(r"```json\n(.*?)```", body, re.S)
        rules[heading.lower()] = [json.loads(block) for block in blocks]
    return rules


NOTIFY = Notification(True, False, None)
SOUND = Notification(True, False, "default")
RING = Notification(True, False, "ring")
HIGHLIGHT = Notification(True, True, None)
HIGHLIGHT_SOUND = Notification(True, True, "default")
NOTHING = Notification(False, False, None)

MENTION_ALICE = {"m.mentions": {"user_ids": [ALICE]}}
ROOM_MENTION = {"m.mentions": {"room": True}}


def member(target: str, membership: str) -> dict[str, Any]:
    return event("m.room.member", {"membership": membership}, state_key=target)


# (case, event, context changes, deciding rule, notification): each default rule on the event it
# is for, and a near miss that another rule (or none) decides.
DEFAULT_RULE_CASES = [
    (
        "suppress_notices",
        event(content={"msgtype": "m.notice", "body": "bot"}),
        {},
        ".m.rule.suppress_notices",
        NOTHING,
    ),
    (
        "suppress_notices miss: other msgtype",
        event(content={"msgtype": "m.notices", "body": "x"}),
        {},
        ".m.rule.message",
        NOTIFY,
    ),
    (
        "suppress_notices beats a mention",
        event(content={"msgtype": "m.notice", "body": "x", **MENTION_ALICE}),
        {},
        ".m.rule.suppress_notices",
        NOTHING,
    ),
    ("invite_for_me", member(ALICE, "invite"), {}, ".m.rule.invite_for_me", SOUND),
    ("invite_for_me miss: someone else invited", member(CAROL, "invite"), {}, ".m.rule.member_event", NOTHING),
    ("invite_for_me miss: a join", member(ALICE, "join"), {}, ".m.rule.member_event", NOTHING),
    ("member_event", member(CAROL, "join"), {}, ".m.rule.member_event", NOTHING),
    (
        "member_event miss: another type",
        event("m.room.members", {"membership": "join"}, state_key=CAROL),
        {},
        None,
        NOTHING,
    ),
    ("is_user_mention", text("hi", **MENTION_ALICE), {}, ".m.rule.is_user_mention", HIGHLIGHT_SOUND),
    (
        "is_user_mention miss: someone else",
        text("hi", **{"m.mentions": {"user_ids": [CAROL]}}),
        {},
        ".m.rule.message",
        NOTIFY,
    ),
    ("is_user_mention miss: id in body only", text(f"hi {ALICE}", **{"m.mentions": {}}), {}, ".m.rule.message", NOTIFY),
    (
        "is_user_mention miss: user_ids not an array",
        text("hi", **{"m.mentions": {"user_ids": ALICE}}),
        {},
        ".m.rule.message",
        NOTIFY,
    ),
    ("is_user_mention miss: display name in body", text("hi Alice"), {}, ".m.rule.message", NOTIFY),
    ("is_room_mention", text("all", **ROOM_MENTION), {"sender_power_level": 50}, ".m.rule.is_room_mention", HIGHLIGHT),
    (
        "is_room_mention miss: sender below 50",
        text("all", **ROOM_MENTION),
        {"sender_power_level": 49},
        ".m.rule.message",
        NOTIFY,
    ),
    (
        "is_room_mention miss: room is a string",
        text("all", **{"m.mentions": {"room": "true"}}),
        {"sender_power_level": 100},
        ".m.rule.message",
        NOTIFY,
    ),
    ("is_room_mention miss: @room in body only", text("@room"), {"sender_power_level": 100}, ".m.rule.message", NOTIFY),
    (
        "is_room_mention with a room's own level",
        text("all", **ROOM_MENTION),
        {"sender_power_level": 10, "notification_levels": {"room": 10}},
        ".m.rule.is_room_mention",
        HIGHLIGHT,
    ),
    (
        "tombstone",
        event("m.room.tombstone", {"body": "moved", "replacement_room": "!new:x"}, state_key=""),
        {},
        ".m.rule.tombstone",
        HIGHLIGHT,
    ),
    ("tombstone miss: not a state event", event("m.room.tombstone", {"replacement_room": "!new:x"}), {}, None, NOTHING),
    (
        "reaction",
        event("m.reaction", {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$e", "key": "x"}}),
        {"member_count": 2},
        ".m.rule.reaction",
        NOTHING,
    ),
    ("server_acl", event("m.room.server_acl", {"allow": ["*"]}, state_key=""), {}, ".m.rule.room.server_acl", NOTHING),
    (
        "server_acl miss: non-empty state key",
        event("m.room.server_acl", {"allow": ["*"]}, state_key="x"),
        {},
        None,
        NOTHING,
    ),
    (
        "suppress_edits",
        text("* fixed", **{"m.relates_to": {"rel_type": "m.replace", "event_id": "$e"}}),
        {"member_count": 2},
        ".m.rule.suppress_edits",
        NOTHING,
    ),
    (
        "suppress_edits miss: a thread reply",
        text("re", **{"m.relates_to": {"rel_type": "m.thread", "event_id": "$e"}}),
        {},
        ".m.rule.message",
        NOTIFY,
    ),
    ("call", event("m.call.invite", {"call_id": "c", "version": "1"}), {}, ".m.rule.call", RING),
    ("call miss: an answer", event("m.call.answer", {"call_id": "c", "version": "1"}), {}, None, NOTHING),
    (
        "encrypted_room_one_to_one",
        event("m.room.encrypted", {"algorithm": "m.megolm.v1.aes-sha2"}),
        {"member_count": 2},
        ".m.rule.encrypted_room_one_to_one",
        SOUND,
    ),
    (
        "encrypted_room_one_to_one miss: three members",
        event("m.room.encrypted", {"algorithm": "m.megolm.v1.aes-sha2"}),
        {},
        ".m.rule.encrypted",
        NOTIFY,
    ),
    ("room_one_to_one", text("hi"), {"member_count": 2}, ".m.rule.room_one_to_one", SOUND),
    ("room_one_to_one miss: three members", text("hi"), {}, ".m.rule.message", NOTIFY),
    ("message", text("hi"), {}, ".m.rule.message", NOTIFY),
    ("message miss: another type", event("m.room.messages", {"body": "hi"}), {}, None, NOTHING),
    (
        "message: type is matched case-insensitively",
        event("M.Room.Message", {"body": "hi"}),
        {},
        ".m.rule.message",
        NOTIFY,
    ),
    (
        "encrypted",
        event("m.room.encrypted", {"algorithm": "m.megolm.v1.aes-sha2"}),
        {"member_count": 20},
        ".m.rule.encrypted",
        NOTIFY,
    ),
    ("master is disabled by default", text("hi"), {}, ".m.rule.message", NOTIFY),
    ("no rule for a state event of another type", event("m.room.name", {"name": "x"}, state_key=""), {}, None, NOTHING),
]
