"""The authorisation rules, rule by rule, in every room version.

Each case builds a room state and one event, and says in which versions the rules allow it;
a refused event must be refused for the reason given (so a near miss fails on the rule it is
near). Cases come in pairs: one allowed, one refused just past the rule's edge.
"""

from collections.abc import Callable
from typing import Any

import pytest
from signedjson.key import generate_signing_key

from homeserver.core.auth import AuthError, check_auth_rules
from homeserver.core.events import Event
from homeserver.core.json_signing import key_id_of, sign_json, verify_key_base64
from homeserver.core.room_versions import RoomVersion

from .rooms import (
    ALICE,
    ALL_VERSIONS,
    BOB,
    CHARLIE,
    DAVE,
    EVELYN,
    IS_SIGNED_BY,
    MALLORY,
    AuthRoom,
    create_content,
    power_levels_content,
    standard_room,
    version,
)

Allowed = Callable[[RoomVersion], bool]
CASES: list[Any] = []


def always(_: RoomVersion) -> bool:
    return True


def never(_: RoomVersion) -> bool:
    return False


def case(allowed: Allowed = always, reason: str = ""):
    """Register a case: `build(identifier)` returns (room, event[, is_signed_by]) or None (not applicable)."""

    def register(build):
        CASES.append(pytest.param(build, allowed, reason, id=build.__name__))
        return build

    return register


@pytest.mark.parametrize("identifier", ALL_VERSIONS)
@pytest.mark.parametrize(("build", "allowed", "reason"), CASES)
def test_auth_rule(identifier, build, allowed, reason):
    built = build(identifier)
    if built is None:
        pytest.skip("not expressible in this room version")
    room, event, *signature_check = built
    is_signed_by = signature_check[0] if signature_check else IS_SIGNED_BY
    if allowed(version(identifier)):
        room.check(event, is_signed_by)
    else:
        with pytest.raises(AuthError) as refused:
            room.check(event, is_signed_by)
        assert (refused.value.code, refused.value.errcode) == (403, "M_FORBIDDEN")
        assert reason.lower() in refused.value.msg.lower()


# --- Rule 1: m.room.create -------------------------------------------------------------------


@case()
def create_event(identifier):
    room = AuthRoom(identifier)
    return room, room.create


@case(never, "prev_events")
def create_with_prev_events(identifier):
    room = AuthRoom(identifier)
    create = room.event("m.room.create", ALICE, create_content(room.room_version), "", prev=["$earlier"])
    return room, create


@case(never, "room id")
def create_room_id_on_another_server(identifier):
    room = AuthRoom(identifier)
    if room.room_version.room_id_is_create_event_id:
        # v12: a create event carrying any room_id at all (it cannot be built, only stored).
        pdu = room.create.get_pdu_json()
        pdu["room_id"] = "!room:example.org"
        return room, Event.from_stored(room.room_version, pdu, room.create.event_id)
    room.room_id = "!room:other.org"
    return room, room.event("m.room.create", ALICE, create_content(room.room_version), "", prev=[])


@case(never, "unknown room version")
def create_unknown_room_version(identifier):
    room = AuthRoom(identifier)
    content = {**create_content(room.room_version), "room_version": "999"}
    return room, room.event("m.room.create", ALICE, content, "", prev=[])


@case(lambda v: v.implicit_room_creator, "no creator")
def create_without_creator(identifier):
    room = AuthRoom(identifier)
    return room, room.event("m.room.create", ALICE, {"room_version": identifier}, "", prev=[])


@case()
def create_with_additional_creators(identifier):
    room = AuthRoom(identifier)
    content = {**create_content(room.room_version), "additional_creators": [BOB, "@carol:other.org"]}
    return room, room.event("m.room.create", ALICE, content, "", prev=[])


@case(lambda v: not v.privileged_room_creators, "additional_creators")
def create_with_invalid_additional_creators(identifier):
    room = AuthRoom(identifier)
    content = {**create_content(room.room_version), "additional_creators": [BOB, "carol"]}
    return room, room.event("m.room.create", ALICE, content, "", prev=[])


# --- Rules on the room: its create event, m.federate -----------------------------------------


@case(never, "m.room.create")
def no_create_event_in_state(identifier):
    room = standard_room(identifier)
    del room.state[("m.room.create", "")]
    return room, room.event("m.room.message", BOB, {"body": "hi"})


@case(lambda v: not v.room_id_is_create_event_id, "not the id of the room's create event")
def create_event_other_than_the_room_ids(identifier):
    # v1-11 rooms built here share one room id, so Bob's create event fits it; a v12 room id
    # names exactly one create event.
    room = standard_room(identifier)
    room.state[("m.room.create", "")] = AuthRoom(identifier, BOB).create
    return room, room.event("m.room.message", BOB, {"body": "hi"})


@case()
def federated_room_accepts_other_servers(identifier):
    room = standard_room(identifier)
    room.member(MALLORY, "join")
    return room, room.event("m.room.message", MALLORY, {"body": "hi"})


@case(never, "does not federate")
def unfederated_room_refuses_other_servers(identifier):
    room = AuthRoom(identifier, **{"m.federate": False})
    room.member(ALICE, "join")
    room.set("m.room.join_rules", ALICE, {"join_rule": "public"})
    room.member(MALLORY, "join")
    return room, room.event("m.room.message", MALLORY, {"body": "hi"})


@case()
def unfederated_room_accepts_its_own_server(identifier):
    room = AuthRoom(identifier, **{"m.federate": False})
    room.member(ALICE, "join")
    room.member(BOB, "join")
    return room, room.event("m.room.message", BOB, {"body": "hi"})


# --- m.room.aliases (special in v1-5) --------------------------------------------------------


@case(lambda v: v.special_case_aliases_auth, "not in this room")
def aliases_for_own_server_without_joining(identifier):
    room = standard_room(identifier)
    return room, room.event("m.room.aliases", MALLORY, {"aliases": ["#a:other.org"]}, "other.org")


@case(never, "")
def aliases_for_another_server(identifier):
    room = standard_room(identifier)
    # v1-5: the state_key must be the sender's server; v6+: Charlie (0) is below state_default.
    return room, room.event("m.room.aliases", CHARLIE, {"aliases": ["#a:other.org"]}, "other.org")


# --- The sender must be in the room; required power levels; state keys -----------------------


@case()
def joined_member_sends_message(identifier):
    room = standard_room(identifier)
    return room, room.event("m.room.message", CHARLIE, {"body": "hi"})


@case(never, "not in this room")
def invited_member_sends_message(identifier):
    room = standard_room(identifier)
    room.member(DAVE, "invite", ALICE)
    return room, room.event("m.room.message", DAVE, {"body": "hi"})


@case(never, "permission to send m.room.message")
def message_below_events_default(identifier):
    room = standard_room(identifier)
    room.power_levels({ALICE: 100, BOB: 50}, events_default=10)
    return room, room.event("m.room.message", CHARLIE, {"body": "hi"})


@case()
def state_event_at_state_default(identifier):
    room = standard_room(identifier)
    return room, room.event("m.room.topic", BOB, {"topic": "t"}, "")


@case(never, "permission to send m.room.topic")
def state_event_below_state_default(identifier):
    room = standard_room(identifier)
    return room, room.event("m.room.topic", CHARLIE, {"topic": "t"}, "")


@case()
def state_event_allowed_by_events_override(identifier):
    room = standard_room(identifier)
    room.power_levels({ALICE: 100, BOB: 50}, events={"m.room.topic": 0})
    return room, room.event("m.room.topic", CHARLIE, {"topic": "t"}, "")


@case(never, "permission to send m.room.name")
def message_type_above_sender_by_events_override(identifier):
    room = standard_room(identifier)
    room.power_levels({ALICE: 100, BOB: 50}, events={"m.room.name": 51})
    return room, room.event("m.room.name", BOB, {"name": "n"}, "")


@case()
def state_key_is_own_user_id(identifier):
    room = standard_room(identifier)
    return room, room.event("m.custom", BOB, {}, BOB)


@case(never, "state_key starting with @")
def state_key_is_another_user_id(identifier):
    room = standard_room(identifier)
    return room, room.event("m.custom", BOB, {}, CHARLIE)


@case()
def third_party_invite_at_invite_level(identifier):
    room = standard_room(identifier)
    return room, room.event("m.room.third_party_invite", CHARLIE, {"display_name": "x"}, "token")


@case(never, "permission to invite")
def third_party_invite_below_invite_level(identifier):
    room = standard_room(identifier)
    room.power_levels({ALICE: 100, BOB: 50}, invite=10)
    return room, room.event("m.room.third_party_invite", CHARLIE, {"display_name": "x"}, "token")


# --- Joins -----------------------------------------------------------------------------------


@case()
def creator_joins_right_after_create(identifier):
    room = AuthRoom(identifier)
    return room, room.event("m.room.member", ALICE, {"membership": "join"}, ALICE, prev=[room.create.event_id])


@case(never, "not invited")
def creator_joins_later_in_private_room(identifier):
    room = AuthRoom(identifier)
    prev = [room.create.event_id, "$another"]
    return room, room.event("m.room.member", ALICE, {"membership": "join"}, ALICE, prev=prev)


@case()
def join_public_room(identifier):
    room = standard_room(identifier)
    return room, room.event("m.room.member", DAVE, {"membership": "join"}, DAVE)


@case(never, "another user join")
def join_on_behalf_of_another(identifier):
    room = standard_room(identifier)
    return room, room.event("m.room.member", BOB, {"membership": "join"}, DAVE)


@case(never, "banned")
def banned_user_joins_public_room(identifier):
    room = standard_room(identifier)
    room.member(DAVE, "ban", ALICE)
    return room, room.event("m.room.member", DAVE, {"membership": "join"}, DAVE)


@case()
def invited_user_joins_invite_room(identifier):
    room = standard_room(identifier, "invite")
    room.member(DAVE, "invite", ALICE)
    return room, room.event("m.room.member", DAVE, {"membership": "join"}, DAVE)


@case(never, "not invited")
def uninvited_user_joins_invite_room(identifier):
    room = standard_room(identifier, "invite")
    return room, room.event("m.room.member", DAVE, {"membership": "join"}, DAVE)


@case(never, "not invited")
def join_room_without_join_rules(identifier):
    room = standard_room(identifier)
    del room.state[("m.room.join_rules", "")]
    return room, room.event("m.room.member", DAVE, {"membership": "join"}, DAVE)


@case(lambda v: v.knock_join_rule, "join rule is 'knock'")
def invited_user_joins_knock_room(identifier):
    room = standard_room(identifier, "knock")
    room.member(DAVE, "invite", ALICE)
    return room, room.event("m.room.member", DAVE, {"membership": "join"}, DAVE)


@case(lambda v: v.restricted_join_rule, "join rule is 'restricted'")
def restricted_join_authorised_by_member(identifier):
    room = standard_room(identifier, "restricted")
    content = {"membership": "join", "join_authorised_via_users_server": BOB}
    return room, room.event("m.room.member", DAVE, content, DAVE)


@case(lambda v: v.knock_restricted_join_rule, "join rule is 'knock_restricted'")
def knock_restricted_join_authorised_by_member(identifier):
    room = standard_room(identifier, "knock_restricted")
    content = {"membership": "join", "join_authorised_via_users_server": BOB}
    return room, room.event("m.room.member", DAVE, content, DAVE)


@case(lambda v: v.restricted_join_rule, "join rule is 'restricted'")
def restricted_join_of_invited_user(identifier):
    room = standard_room(identifier, "restricted")
    room.member(DAVE, "invite", ALICE)
    return room, room.event("m.room.member", DAVE, {"membership": "join"}, DAVE)


@case(never, "")
def restricted_join_without_authoriser(identifier):
    room = standard_room(identifier, "restricted")
    return room, room.event("m.room.member", DAVE, {"membership": "join"}, DAVE)


@case(never, "")
def restricted_join_authorised_by_non_member(identifier):
    room = standard_room(identifier, "restricted")
    content = {"membership": "join", "join_authorised_via_users_server": EVELYN}
    return room, room.event("m.room.member", DAVE, content, DAVE)


@case(never, "")
def restricted_join_authorised_by_user_who_cannot_invite(identifier):
    room = standard_room(identifier, "restricted")
    room.power_levels({ALICE: 100, BOB: 50}, invite=60)
    content = {"membership": "join", "join_authorised_via_users_server": BOB}
    return room, room.event("m.room.member", DAVE, content, DAVE)


@case(lambda v: not v.restricted_join_rule, "signed by the server")
def join_authorised_by_server_that_did_not_sign(identifier):
    room = standard_room(identifier)  # public: only the signature can refuse it
    room.member(MALLORY, "join")
    content = {"membership": "join", "join_authorised_via_users_server": MALLORY}
    return room, room.event("m.room.member", DAVE, content, DAVE)


@case(lambda v: not v.restricted_join_rule, "signed by the server")
def join_authorised_with_a_signature_check_that_fails(identifier):
    room = standard_room(identifier)
    content = {"membership": "join", "join_authorised_via_users_server": BOB}
    return room, room.event("m.room.member", DAVE, content, DAVE), lambda event, server: False


# --- Invites ---------------------------------------------------------------------------------


@case()
def member_invites(identifier):
    room = standard_room(identifier)
    return room, room.event("m.room.member", CHARLIE, {"membership": "invite"}, DAVE)


@case(never, "not in this room")
def non_member_invites(identifier):
    room = standard_room(identifier)
    return room, room.event("m.room.member", EVELYN, {"membership": "invite"}, DAVE)


@case(never, "already in")
def invite_joined_user(identifier):
    room = standard_room(identifier)
    return room, room.event("m.room.member", BOB, {"membership": "invite"}, CHARLIE)


@case(never, "banned")
def invite_banned_user(identifier):
    room = standard_room(identifier)
    room.member(DAVE, "ban", ALICE)
    return room, room.event("m.room.member", BOB, {"membership": "invite"}, DAVE)


@case(never, "permission to invite")
def invite_below_invite_level(identifier):
    room = standard_room(identifier)
    room.power_levels({ALICE: 100, BOB: 50}, invite=1)
    return room, room.event("m.room.member", CHARLIE, {"membership": "invite"}, DAVE)


_IDENTITY_SERVER_KEY = generate_signing_key("0")
_OTHER_IDENTITY_KEY = generate_signing_key("0")


def _third_party_invite(identifier, *, mxid=DAVE, sender=BOB, key=_IDENTITY_SERVER_KEY, ban_target=False):
    room = standard_room(identifier)
    room.set(
        "m.room.third_party_invite",
        BOB,
        {"display_name": "d...@example.com", "public_keys": [{"public_key": verify_key_base64(_IDENTITY_SERVER_KEY)}]},
        "the-token",
    )
    if ban_target:
        room.member(DAVE, "ban", ALICE)
    signed = sign_json({"mxid": mxid, "token": "the-token", "sender": BOB}, "id.example.org", key)
    assert key_id_of(key) in signed["signatures"]["id.example.org"]
    content = {"membership": "invite", "third_party_invite": {"display_name": "d...", "signed": signed}}
    return room, room.event("m.room.member", sender, content, DAVE)


@case()
def third_party_invite_redeemed(identifier):
    return _third_party_invite(identifier)


@case(never, "not signed by a key")
def third_party_invite_signed_by_another_key(identifier):
    return _third_party_invite(identifier, key=_OTHER_IDENTITY_KEY)


@case(never, "mxid")
def third_party_invite_for_another_user(identifier):
    return _third_party_invite(identifier, mxid=EVELYN)


@case(never, "sender of the third-party invite")
def third_party_invite_completed_by_another_sender(identifier):
    return _third_party_invite(identifier, sender=ALICE)


@case(never, "banned")
def third_party_invite_of_banned_user(identifier):
    return _third_party_invite(identifier, ban_target=True)


@case(never, "no m.room.third_party_invite")
def third_party_invite_without_invite_event(identifier):
    room, event = _third_party_invite(identifier)
    del room.state[("m.room.third_party_invite", "the-token")]
    return room, event


@case(never, "'signed'")
def third_party_invite_without_signed(identifier):
    room = standard_room(identifier)
    content = {"membership": "invite", "third_party_invite": {"display_name": "d"}}
    return room, room.event("m.room.member", BOB, content, DAVE)


# --- Leaving, kicking, unbanning -------------------------------------------------------------


@case()
def member_leaves(identifier):
    room = standard_room(identifier)
    return room, room.event("m.room.member", CHARLIE, {"membership": "leave"}, CHARLIE)


@case()
def invited_user_rejects_invite(identifier):
    room = standard_room(identifier)
    room.member(DAVE, "invite", ALICE)
    return room, room.event("m.room.member", DAVE, {"membership": "leave"}, DAVE)


@case(never, "cannot leave")
def non_member_leaves(identifier):
    room = standard_room(identifier)
    room.member(DAVE, "leave")
    return room, room.event("m.room.member", DAVE, {"membership": "leave"}, DAVE)


@case(lambda v: v.knock_join_rule, "cannot leave")
def knocking_user_withdraws_knock(identifier):
    room = standard_room(identifier, "knock")
    room.member(DAVE, "knock")
    return room, room.event("m.room.member", DAVE, {"membership": "leave"}, DAVE)


@case()
def moderator_kicks_lower_member(identifier):
    room = standard_room(identifier)
    return room, room.event("m.room.member", BOB, {"membership": "leave"}, CHARLIE)


@case(never, "permission to kick")
def member_kicks_higher_member(identifier):
    room = standard_room(identifier)
    return room, room.event("m.room.member", CHARLIE, {"membership": "leave"}, BOB)


@case(never, "permission to kick")
def moderator_kicks_equal_member(identifier):
    room = standard_room(identifier)
    room.power_levels({ALICE: 100, BOB: 50, CHARLIE: 50})
    return room, room.event("m.room.member", BOB, {"membership": "leave"}, CHARLIE)


@case(never, "not in this room")
def non_member_kicks(identifier):
    room = standard_room(identifier)
    room.member(BOB, "leave")
    return room, room.event("m.room.member", BOB, {"membership": "leave"}, CHARLIE)


@case()
def moderator_unbans(identifier):
    room = standard_room(identifier)
    room.member(DAVE, "ban", ALICE)
    return room, room.event("m.room.member", BOB, {"membership": "leave"}, DAVE)


@case(never, "unban")
def unban_below_ban_level(identifier):
    room = standard_room(identifier)
    room.power_levels({ALICE: 100, BOB: 50}, ban=60)
    room.member(DAVE, "ban", ALICE)
    return room, room.event("m.room.member", BOB, {"membership": "leave"}, DAVE)


# --- Bans ------------------------------------------------------------------------------------


@case()
def moderator_bans_lower_member(identifier):
    room = standard_room(identifier)
    return room, room.event("m.room.member", BOB, {"membership": "ban"}, CHARLIE)


@case(never, "permission to ban")
def moderator_bans_higher_member(identifier):
    room = standard_room(identifier)
    room.power_levels({ALICE: 100, BOB: 50, CHARLIE: 60})
    return room, room.event("m.room.member", BOB, {"membership": "ban"}, CHARLIE)


@case(never, "permission to ban")
def ban_below_ban_level(identifier):
    room = standard_room(identifier)
    room.power_levels({ALICE: 100, BOB: 50}, ban=51)
    return room, room.event("m.room.member", BOB, {"membership": "ban"}, CHARLIE)


@case(never, "not in this room")
def non_member_bans(identifier):
    room = standard_room(identifier)
    room.member(BOB, "invite", ALICE)
    return room, room.event("m.room.member", BOB, {"membership": "ban"}, CHARLIE)


# --- Knocks (v7+; knock_restricted v10+) -----------------------------------------------------


@case(lambda v: v.knock_join_rule, "unknown membership")
def knock_on_knock_room(identifier):
    room = standard_room(identifier, "knock")
    return room, room.event("m.room.member", DAVE, {"membership": "knock"}, DAVE)


@case(lambda v: v.knock_restricted_join_rule, "")
def knock_on_knock_restricted_room(identifier):
    room = standard_room(identifier, "knock_restricted")
    return room, room.event("m.room.member", DAVE, {"membership": "knock"}, DAVE)


@case(never, "")
def knock_on_public_room(identifier):
    room = standard_room(identifier)
    return room, room.event("m.room.member", DAVE, {"membership": "knock"}, DAVE)


@case(never, "")
def knock_for_another_user(identifier):
    room = standard_room(identifier, "knock")
    return room, room.event("m.room.member", BOB, {"membership": "knock"}, DAVE)


@case(never, "")
def knock_when_invited(identifier):
    room = standard_room(identifier, "knock")
    room.member(DAVE, "invite", ALICE)
    return room, room.event("m.room.member", DAVE, {"membership": "knock"}, DAVE)


@case(never, "unknown membership")
def unknown_membership(identifier):
    room = standard_room(identifier)
    return room, room.event("m.room.member", DAVE, {"membership": "wave"}, DAVE)


@case(never, "content.membership")
def member_event_without_membership(identifier):
    room = standard_room(identifier)
    return room, room.event("m.room.member", DAVE, {"displayname": "D"}, DAVE)


# --- v12 room creators -----------------------------------------------------------------------


def _room_with_additional_creator(identifier):
    room = AuthRoom(identifier, additional_creators=[DAVE])
    room.member(ALICE, "join")
    room.power_levels({ALICE: 100, BOB: 50})
    room.member(BOB, "join")
    room.member(DAVE, "join")
    return room


@case(lambda v: v.privileged_room_creators, "permission to kick")
def additional_creator_kicks_moderator(identifier):
    room = _room_with_additional_creator(identifier)
    return room, room.event("m.room.member", DAVE, {"membership": "leave"}, BOB)


@case(lambda v: not v.privileged_room_creators, "permission to kick")
def powerful_user_kicks_creator(identifier):
    room = standard_room(identifier)
    room.set("m.room.power_levels", ALICE, {"users": {BOB: 1000}})
    return room, room.event("m.room.member", BOB, {"membership": "leave"}, ALICE)


@case()
def creator_sends_state_without_power_levels(identifier):
    room = AuthRoom(identifier)
    room.member(ALICE, "join")
    return room, room.event("m.room.topic", ALICE, {"topic": "t"}, "")


@case(never, "permission to send m.room.topic")
def member_sends_state_without_power_levels(identifier):
    room = AuthRoom(identifier)
    room.member(ALICE, "join")
    room.member(BOB, "join")
    return room, room.event("m.room.topic", BOB, {"topic": "t"}, "")


@case(lambda v: not v.privileged_room_creators, "creators cannot be given a power level")
def power_levels_naming_a_creator(identifier):
    room = _room_with_additional_creator(identifier)
    return room, room.event("m.room.power_levels", ALICE, {"users": {BOB: 50, DAVE: 100}}, "")


# --- m.room.power_levels ---------------------------------------------------------------------


def _power_levels_change(identifier, sender=BOB, current=None, **new):
    """Bob (50) replaces the power levels; `current` is what they were ({ALICE: 100, BOB: 50} + extra)."""
    room = standard_room(identifier)
    room.power_levels({ALICE: 100, BOB: 50}, **(current or {}))
    users = new.pop("users", {ALICE: 100, BOB: 50})
    content = power_levels_content(room.room_version, users, **new)
    return room, room.event("m.room.power_levels", sender, content, "")


@case()
def first_power_levels(identifier):
    room = AuthRoom(identifier)
    room.member(ALICE, "join")
    return room, room.event("m.room.power_levels", ALICE, power_levels_content(room.room_version, {ALICE: 100}), "")


@case()
def power_levels_unchanged(identifier):
    return _power_levels_change(identifier)


@case(lambda v: not v.enforce_int_power_levels, "must be an integer")
def power_levels_with_string_named_level(identifier):
    return _power_levels_change(identifier, ban="50")


@case(lambda v: not v.enforce_int_power_levels, "object of integers")
def power_levels_with_string_event_level(identifier):
    return _power_levels_change(identifier, events={"m.room.name": "50"})


@case(lambda v: not v.enforce_int_power_levels, "not a valid power level")
def power_levels_with_string_user_level(identifier):
    return _power_levels_change(identifier, users={ALICE: 100, BOB: " +050 "})


@case(never, "not a valid power level")
def power_levels_with_non_numeric_user_level(identifier):
    return _power_levels_change(identifier, users={ALICE: 100, BOB: "fifty"})


@case(never, "not a valid user id")
def power_levels_with_invalid_user_id(identifier):
    return _power_levels_change(identifier, users={ALICE: 100, BOB: 50, "bob": 10})


@case()
def power_levels_with_float_user_level(identifier):
    # v1-5 (no canonical JSON yet): 50.9 is read as 50, so nothing changes.
    if version(identifier).strict_canonical_json:
        return None
    return _power_levels_change(identifier, users={ALICE: 100, BOB: 50.9})


@case()
def raise_named_level_to_own_level(identifier):
    return _power_levels_change(identifier, kick=50)


@case(never, "'kick' above your own")
def raise_named_level_above_own_level(identifier):
    return _power_levels_change(identifier, kick=51)


@case(never, "'ban' from above")
def lower_named_level_that_is_above_own(identifier):
    return _power_levels_change(identifier, current={"ban": 60}, ban=40)


@case()
def add_event_level_at_own_level(identifier):
    return _power_levels_change(identifier, events={"m.room.name": 50})


@case(never, "'events.m.room.name' above")
def add_event_level_above_own_level(identifier):
    return _power_levels_change(identifier, events={"m.room.name": 51})


@case(never, "'events.m.room.name' from above")
def remove_event_level_above_own_level(identifier):
    return _power_levels_change(identifier, current={"events": {"m.room.name": 60}})


@case(lambda v: not v.limit_notifications_power_levels, "'notifications.room' from above")
def lower_notifications_level_above_own_level(identifier):
    return _power_levels_change(identifier, current={"notifications": {"room": 60}}, notifications={"room": 0})


@case()
def raise_user_to_own_level(identifier):
    return _power_levels_change(identifier, users={ALICE: 100, BOB: 50, CHARLIE: 50})


@case(never, "above your own")
def raise_user_above_own_level(identifier):
    return _power_levels_change(identifier, users={ALICE: 100, BOB: 50, CHARLIE: 51})


@case()
def lower_own_level(identifier):
    return _power_levels_change(identifier, users={ALICE: 100, BOB: 10})


@case(never, "not below you")
def change_user_at_own_level(identifier):
    room = standard_room(identifier)
    room.power_levels({ALICE: 100, BOB: 50, CHARLIE: 50})
    content = power_levels_content(room.room_version, {ALICE: 100, BOB: 50, CHARLIE: 10})
    return room, room.event("m.room.power_levels", BOB, content, "")


@case(lambda v: v.privileged_room_creators, "not below you")
def moderator_removes_creator_entry(identifier):
    # Up to v11 Alice's 100 is in `users` and Bob (50) cannot touch it; v12 has no entry to remove.
    room = standard_room(identifier)
    return room, room.event("m.room.power_levels", BOB, {"users": {BOB: 50}}, "")


# --- m.room.redaction (rule 11 in v1-2, on delivery from v3) ----------------------------------


@case()
def moderator_redacts(identifier):
    room = standard_room(identifier)
    return room, room.event("m.room.redaction", BOB, {}, redacts="$spam:other.org")


@case(lambda v: not v.redaction_checked_in_auth_rules, "permission to redact")
def member_redacts_event_from_another_server(identifier):
    room = standard_room(identifier)
    return room, room.event("m.room.redaction", CHARLIE, {}, redacts="$spam:other.org")


@case()
def member_redacts_event_from_own_server(identifier):
    room = standard_room(identifier)
    # v1-2: the redacted event's id names example.org, like the redaction's own id.
    return room, room.event("m.room.redaction", CHARLIE, {}, redacts="$own:example.org")


# --- API guard -------------------------------------------------------------------------------


def test_event_of_another_room_version_is_a_programming_error():
    room = standard_room("10")
    event = room.event("m.room.message", BOB, {"body": "hi"})
    with pytest.raises(ValueError):
        check_auth_rules(version("11"), event, room.auth_state(event), is_signed_by=lambda e, s: True)
