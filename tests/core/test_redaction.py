import copy

import pytest

from homeserver.core.redaction import prune_event_dict
from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS

from .vectors import load_vectors

RULES = load_vectors("redaction-rules.json")["by_room_version"]

# Every key any version protects, plus keys no version protects.
ALL_TOP_LEVEL = sorted({k for r in RULES.values() for k in r["preserved_top_level_keys"]})
ALL_CONTENT_KEYS = sorted(
    {k for r in RULES.values() for spec in r["preserved_content_keys"].values() for k in spec.get("keys", [])}
)
EVENT_TYPES = sorted({t for r in RULES.values() for t in r["preserved_content_keys"]} | {"m.room.message"})


def _full_event(event_type):
    event = {key: f"value of {key}" for key in ALL_TOP_LEVEL}
    event.update(type=event_type, unsigned={"age_ts": 1}, redacts="$x", junk=1, origin_server_ts=5)
    event["content"] = {key: {"nested": key} for key in ALL_CONTENT_KEYS}
    event["content"]["junk"] = "gone"
    event["content"]["third_party_invite"] = {"signed": {"mxid": "@a:b", "token": "t"}, "display_name": "A"}
    return event


@pytest.mark.parametrize("version", list(RULES))
@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_redaction_keeps_exactly_what_the_spec_lists(version, event_type):
    rules = RULES[version]
    event = _full_event(event_type)
    original = copy.deepcopy(event)

    pruned = prune_event_dict(KNOWN_ROOM_VERSIONS[version], event)

    assert set(pruned) == set(rules["preserved_top_level_keys"]) | {"content"}
    for key in pruned.keys() - {"content", "type"}:
        assert pruned[key] == event[key]
    spec = rules["preserved_content_keys"].get(event_type, {"keys": []})
    if spec.get("all_keys"):
        expected_content = event["content"]
    else:
        expected_content = {k: event["content"][k] for k in spec["keys"]}
        if "extra" in spec:  # v11+: m.room.member keeps third_party_invite.signed
            expected_content["third_party_invite"] = {"signed": event["content"]["third_party_invite"]["signed"]}
    assert pruned["content"] == expected_content
    assert event == original  # the input is untouched


def test_every_version_has_rules():
    assert set(RULES) == set(KNOWN_ROOM_VERSIONS)


@pytest.mark.parametrize("version", ["1", "10", "11", "12"])
def test_pruned_event_does_not_share_structure_with_the_input(version):
    event = {"type": "m.room.power_levels", "content": {"users": {"@a:b": 100}}, "hashes": {"sha256": "x"}}
    pruned = prune_event_dict(KNOWN_ROOM_VERSIONS[version], event)
    pruned["content"]["users"]["@a:b"] = 0
    pruned["hashes"]["sha256"] = "y"
    assert event == {
        "type": "m.room.power_levels",
        "content": {"users": {"@a:b": 100}},
        "hashes": {"sha256": "x"},
    }


@pytest.mark.parametrize("version", ["1", "6", "9", "10", "11", "12"])
def test_unsigned_and_unknown_top_level_keys_go(version):
    event = {"type": "m.room.message", "content": {"body": "hi"}, "unsigned": {"age": 1}, "foo": 1}
    assert prune_event_dict(KNOWN_ROOM_VERSIONS[version], event) == {"type": "m.room.message", "content": {}}


@pytest.mark.parametrize("version", list(RULES))
def test_missing_content_becomes_empty(version):
    assert prune_event_dict(KNOWN_ROOM_VERSIONS[version], {"type": "m.room.member"})["content"] == {}


# --- what changed in v11, and that v12 kept it ------------------------------------------------


@pytest.mark.parametrize(("version", "kept"), [("10", {"creator": "@a:b"}), ("11", None), ("12", None)])
def test_create_event_content(version, kept):
    content = {
        "creator": "@a:b",
        "room_version": version,
        "m.federate": False,
        "additional_creators": ["@c:d"],
    }
    pruned = prune_event_dict(KNOWN_ROOM_VERSIONS[version], {"type": "m.room.create", "content": content})
    assert pruned["content"] == (content if kept is None else kept)


@pytest.mark.parametrize(("version", "kept"), [("10", False), ("11", True), ("12", True)])
def test_redaction_event_redacts(version, kept):
    event = {
        "type": "m.room.redaction",
        "redacts": "$top",
        "content": {"redacts": "$inner", "reason": "spam"},
    }
    pruned = prune_event_dict(KNOWN_ROOM_VERSIONS[version], event)
    assert "redacts" not in pruned  # the top-level key was never protected
    assert pruned["content"] == ({"redacts": "$inner"} if kept else {})


@pytest.mark.parametrize(("version", "kept"), [("10", False), ("11", True), ("12", True)])
def test_power_levels_invite(version, kept):
    event = {
        "type": "m.room.power_levels",
        "content": {"invite": 50, "ban": 50, "notifications": {"room": 50}},
    }
    pruned = prune_event_dict(KNOWN_ROOM_VERSIONS[version], event)
    assert pruned["content"] == ({"invite": 50, "ban": 50} if kept else {"ban": 50})


@pytest.mark.parametrize("version", ["1", "10", "11", "12"])
def test_origin_membership_prev_state_protected_until_v11(version):
    event = {"type": "m.room.member", "content": {}, "origin": "b", "membership": "join", "prev_state": []}
    pruned = prune_event_dict(KNOWN_ROOM_VERSIONS[version], event)
    protected = int(version) < 11
    assert ("origin" in pruned, "membership" in pruned, "prev_state" in pruned) == (protected,) * 3


@pytest.mark.parametrize(
    ("invite", "expected"),
    [
        ({"signed": {"token": "t"}, "display_name": "A"}, {"third_party_invite": {"signed": {"token": "t"}}}),
        ({"display_name": "A"}, {"third_party_invite": {}}),
        ("not an object", {}),
    ],
)
def test_v11_third_party_invite_keeps_only_signed(invite, expected):
    for version in ("11", "12"):
        event = {"type": "m.room.member", "content": {"membership": "invite", "third_party_invite": invite}}
        pruned = prune_event_dict(KNOWN_ROOM_VERSIONS[version], event)
        assert pruned["content"] == {"membership": "invite", **expected}
    pruned = prune_event_dict(KNOWN_ROOM_VERSIONS["10"], event)
    assert pruned["content"] == {"membership": "invite"}


def test_aliases_lose_their_meaning_in_v6():
    event = {"type": "m.room.aliases", "state_key": "b", "content": {"aliases": ["#a:b"]}}
    assert prune_event_dict(KNOWN_ROOM_VERSIONS["5"], event)["content"] == {"aliases": ["#a:b"]}
    assert prune_event_dict(KNOWN_ROOM_VERSIONS["6"], event)["content"] == {}
