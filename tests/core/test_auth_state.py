"""Which state an auth check reads, the checks on an event's own auth events, power level values,
and whether a redaction applies."""

import math

import pytest

from homeserver.core.auth import (
    CREATOR_POWER_LEVEL,
    AuthError,
    PowerLevels,
    auth_events_selection,
    auth_types_for_event,
    check_auth_events,
    parse_power_level,
    redaction_applies,
    select_auth_event_ids,
)
from homeserver.core.event_builder import build_event

from .rooms import ALICE, ALL_VERSIONS, BOB, CHARLIE, DAVE, KEY, MALLORY, SERVER, AuthRoom, standard_room, version

CREATE = ("m.room.create", "")
POWER = ("m.room.power_levels", "")
JOIN_RULES = ("m.room.join_rules", "")


def member(user):
    return ("m.room.member", user)


# --- auth_types_for_event --------------------------------------------------------------------


@pytest.mark.parametrize("identifier", ALL_VERSIONS)
def test_message_needs_create_power_levels_and_sender(identifier):
    types = auth_types_for_event(version(identifier), "m.room.message", None, BOB, {"body": "hi"})
    assert types == {CREATE, POWER, member(BOB)}


@pytest.mark.parametrize("identifier", ALL_VERSIONS)
def test_create_needs_nothing(identifier):
    assert auth_types_for_event(version(identifier), "m.room.create", "", ALICE, {}) == set()


@pytest.mark.parametrize(("membership", "join_rules"), [("join", True), ("invite", True), ("knock", True)])
def test_membership_needs_target_and_join_rules(membership, join_rules):
    types = auth_types_for_event(version("10"), "m.room.member", DAVE, BOB, {"membership": membership})
    assert types == {CREATE, POWER, member(BOB), member(DAVE), JOIN_RULES}


@pytest.mark.parametrize("membership", ["leave", "ban"])
def test_leave_and_ban_do_not_need_join_rules(membership):
    types = auth_types_for_event(version("10"), "m.room.member", DAVE, BOB, {"membership": membership})
    assert types == {CREATE, POWER, member(BOB), member(DAVE)}


def test_third_party_invite_needs_the_invite_it_redeems():
    content = {"membership": "invite", "third_party_invite": {"signed": {"mxid": DAVE, "token": "abc"}}}
    types = auth_types_for_event(version("9"), "m.room.member", DAVE, BOB, content)
    assert ("m.room.third_party_invite", "abc") in types


@pytest.mark.parametrize("identifier", ALL_VERSIONS)
def test_restricted_join_needs_the_authorising_member_where_supported(identifier):
    content = {"membership": "join", "join_authorised_via_users_server": CHARLIE}
    types = auth_types_for_event(version(identifier), "m.room.member", DAVE, DAVE, content)
    assert (member(CHARLIE) in types) == version(identifier).restricted_join_rule


@pytest.mark.parametrize("identifier", ALL_VERSIONS)
def test_auth_events_cite_the_create_event_except_in_v12(identifier):
    room_version = version(identifier)
    selection = auth_events_selection(room_version, "m.room.message", None, BOB, {})
    assert (CREATE in selection) == room_version.create_event_in_auth_events
    assert (CREATE in selection) == (identifier != "12")


def test_auth_types_stay_few_in_a_large_room():
    """A join in a room of 5,000 members reads at most three member events."""
    room_version = version("12")
    state = {member(f"@user{i}:example.org"): f"$m{i}" for i in range(5000)}
    state.update({CREATE: "$create", POWER: "$power", JOIN_RULES: "$jr", member(BOB): "$bob"})
    content = {"membership": "join", "join_authorised_via_users_server": BOB}
    needed = auth_types_for_event(room_version, "m.room.member", DAVE, DAVE, content)
    assert sum(1 for event_type, _ in needed if event_type == "m.room.member") == 2
    assert select_auth_event_ids(room_version, "m.room.member", DAVE, DAVE, content, state) == [
        "$jr",
        "$bob",
        "$power",
    ]


# --- check_auth_events (the event's own auth_events) -----------------------------------------


def _cited(room, event_type, sender, content, state_key=None, auth=None):
    """An event citing `auth` (default: the spec's selection from the room state)."""
    keys = auth_events_selection(room.room_version, event_type, state_key, sender, content)
    cited = auth if auth is not None else [room.state[k] for k in sorted(keys) if k in room.state]
    room.ts += 1
    event = build_event(
        room.room_version,
        SERVER,
        KEY,
        event_type=event_type,
        sender=sender,
        content=content,
        room_id=room.room_id,
        prev_event_ids=["$prev"],
        auth_event_ids=[e.event_id for e in cited],
        depth=5,
        origin_server_ts=room.ts,
        state_key=state_key,
    )
    return event, cited


@pytest.mark.parametrize("identifier", ALL_VERSIONS)
def test_auth_events_become_the_auth_state(identifier):
    room = standard_room(identifier)
    event, cited = _cited(room, "m.room.message", BOB, {"body": "hi"})
    state = check_auth_events(room.room_version, event, cited, create_event=room.create)
    assert set(state) == {CREATE, POWER, member(BOB)}
    assert state[CREATE] is room.create
    room.check(event)


@pytest.mark.parametrize("identifier", ALL_VERSIONS)
def test_duplicate_auth_event_pairs_are_refused(identifier):
    room = standard_room(identifier)
    older_power = room.event("m.room.power_levels", ALICE, {"users": {BOB: 50}}, "")
    event, cited = _cited(room, "m.room.message", BOB, {"body": "hi"})
    event, cited = _cited(room, "m.room.message", BOB, {}, auth=[*cited, older_power])
    with pytest.raises(AuthError, match="Two auth events"):
        check_auth_events(room.room_version, event, cited, create_event=room.create)


@pytest.mark.parametrize("identifier", ALL_VERSIONS)
def test_auth_events_outside_the_selection_are_refused(identifier):
    room = standard_room(identifier)
    event, cited = _cited(room, "m.room.message", BOB, {}, auth=None)
    event, cited = _cited(room, "m.room.message", BOB, {}, auth=[*cited, room.state[member(CHARLIE)]])
    with pytest.raises(AuthError, match="not one the event may cite"):
        check_auth_events(room.room_version, event, cited, create_event=room.create)


@pytest.mark.parametrize("identifier", ALL_VERSIONS)
def test_rejected_auth_events_are_refused(identifier):
    room = standard_room(identifier)
    event, cited = _cited(room, "m.room.message", BOB, {})
    rejected = {room.state[POWER].event_id}
    with pytest.raises(AuthError, match="rejected"):
        check_auth_events(room.room_version, event, cited, rejected=rejected, create_event=room.create)


@pytest.mark.parametrize("identifier", ALL_VERSIONS)
def test_unknown_auth_events_are_refused(identifier):
    room = standard_room(identifier)
    event, cited = _cited(room, "m.room.message", BOB, {})
    with pytest.raises(AuthError, match="not known"):
        check_auth_events(room.room_version, event, cited[1:], create_event=room.create)


@pytest.mark.parametrize("identifier", [v for v in ALL_VERSIONS if v != "12"])
def test_v1_to_v11_need_the_create_event_cited(identifier):
    room = standard_room(identifier)
    event, cited = _cited(room, "m.room.message", BOB, {}, auth=[room.state[POWER], room.state[member(BOB)]])
    with pytest.raises(AuthError, match="m.room.create"):
        check_auth_events(room.room_version, event, cited)


def test_v12_create_event_comes_from_the_room_id_not_auth_events():
    room = standard_room("12")
    event, cited = _cited(room, "m.room.message", BOB, {})
    assert room.create not in cited
    assert check_auth_events(room.room_version, event, cited, create_event=room.create)[CREATE] is room.create
    # Citing it is citing something the selection excludes.
    event, cited = _cited(room, "m.room.message", BOB, {}, auth=[*cited, room.create])
    with pytest.raises(AuthError, match="not one the event may cite"):
        check_auth_events(room.room_version, event, cited, create_event=room.create)


def test_v12_refuses_a_room_whose_create_event_is_missing_wrong_or_rejected():
    room = standard_room("12")
    event, cited = _cited(room, "m.room.message", BOB, {})
    other_create = AuthRoom("12", BOB).create
    for create, rejected in [(None, set()), (other_create, set()), (room.create, {room.create.event_id})]:
        with pytest.raises(AuthError, match="accepted m.room.create"):
            check_auth_events(room.room_version, event, cited, rejected=rejected, create_event=create)


@pytest.mark.parametrize("identifier", ALL_VERSIONS)
def test_auth_events_from_another_room_are_refused(identifier):
    room = standard_room(identifier)
    elsewhere = AuthRoom(identifier, BOB)
    if identifier != "12":
        elsewhere.room_id = "!elsewhere:example.org"  # v12: Bob's create event makes another room id
    stray = elsewhere.member(BOB, "join")
    create = [room.create] if room.room_version.create_event_in_auth_events else []
    event, cited = _cited(room, "m.room.message", BOB, {}, auth=[*create, room.state[POWER], stray])
    with pytest.raises(AuthError, match="another room"):
        check_auth_events(room.room_version, event, cited, create_event=room.create)


# --- Power level values ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "level"),
    [
        # rooms/fragments/v1-stringy-power-levels.md
        ("100", 100),
        ("000100", 100),
        ("+100", 100),
        ("-100", -100),
        (" 100 ", 100),
        (" 00100 ", 100),
        (" +100 ", 100),
        (" -100 ", -100),
        ("1_000", None),
        ("10.5", None),
        ("", None),
        ("+-1", None),
        ("١٠", None),  # Arabic-Indic digits: int() would take them
        # rooms/fragments/v1-floaty-power-levels.md
        (5.114698e4, 51146),
        (50.57, 50),
        (-1.5, -1),
        (math.inf, None),
        (math.nan, None),
        (True, None),
        (None, None),
        ([50], None),
    ],
)
def test_power_level_values_before_v10(value, level):
    assert parse_power_level(version("9"), value) == level


@pytest.mark.parametrize("value", ["100", 50.5, True, None])
def test_power_levels_are_integers_only_from_v10(value):
    assert parse_power_level(version("10"), value) is None
    assert parse_power_level(version("10"), 100) == 100


def test_power_level_defaults():
    room = standard_room("11")
    room.set("m.room.power_levels", ALICE, {})
    power = PowerLevels.from_state(room.room_version, room.state)
    assert [power.named_level(n) for n in ("ban", "kick", "redact", "invite")] == [50, 50, 50, 0]
    assert power.send_level("m.room.topic", is_state=True) == 50
    assert power.send_level("m.room.message", is_state=False) == 0
    assert power.user_level(ALICE) == 0  # with power levels, the creator is nobody special before v12


@pytest.mark.parametrize("identifier", ALL_VERSIONS)
def test_creator_level_without_power_levels(identifier):
    room = AuthRoom(identifier)
    power = PowerLevels.from_state(room.room_version, room.state)
    expected = CREATOR_POWER_LEVEL if identifier == "12" else 100
    assert (power.user_level(ALICE), power.user_level(BOB)) == (expected, 0)


def test_v12_creators_outrank_any_level():
    room = AuthRoom("12", additional_creators=[DAVE])
    room.set("m.room.power_levels", ALICE, {"users": {BOB: 2**53 - 1}})
    power = PowerLevels.from_state(room.room_version, room.state)
    assert power.user_level(ALICE) == power.user_level(DAVE) == math.inf > power.user_level(BOB)


# --- Redactions on delivery ------------------------------------------------------------------


@pytest.mark.parametrize("identifier", ALL_VERSIONS)
def test_redaction_applies(identifier):
    room = standard_room(identifier)
    room.member(MALLORY, "join")
    original = room.event("m.room.message", MALLORY, {"body": "spam"})
    own = room.event("m.room.message", CHARLIE, {"body": "oops"})

    def redaction(sender, target):
        return room.event("m.room.redaction", sender, {}, redacts=target.event_id)

    state = room.state
    rv = room.room_version
    assert redaction_applies(rv, redaction(BOB, original), original, state)  # moderator
    assert redaction_applies(rv, redaction(CHARLIE, own), own, state)  # own server's event
    # Charlie (0) redacting another server's event: in v1-2 the auth rules already decided.
    assert redaction_applies(rv, redaction(CHARLIE, original), original, state) == rv.redaction_checked_in_auth_rules
    assert not redaction_applies(rv, redaction(BOB, original), own, state)  # names another event
