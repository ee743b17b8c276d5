"""State resolution, on rooms grown as DAGs of real events.

The classic conflicts (ban vs power levels, topic resets, join rule evasion, mainline ordering)
are the scenarios every implementation tests against, built here the way a server sees them:
each event's state is the resolution of its prev events' states. The soft-failure example of
server-server-api ("Soft failure") is checked in both generations of the algorithm.
"""

import math

import pytest

from homeserver.core.room_versions import StateResAlgorithm
from homeserver.core.state_res import resolve_state
from homeserver.core.state_res.auth_graph import AuthGraph
from homeserver.core.state_res.v2 import mainline_order, reverse_topological_power_order, sender_power_level

from .rooms import ALICE, BOB, CHARLIE, DAVE, EVELYN, ZARA, RoomDag, create_content, power_levels_content, version

V2_VERSIONS = [str(n) for n in range(2, 13)]

TOPIC = ("m.room.topic", "")
POWER = ("m.room.power_levels", "")
JOIN = {"membership": "join"}
BAN = {"membership": "ban"}


def member(user):
    return ("m.room.member", user)


# The room every classic scenario starts from: Alice created it and has 100; Bob, Charlie and
# Zara joined it (public); START is a message after all that. (name, sender, type, state_key, content)
INITIAL = [
    ("CREATE", ALICE, "m.room.create", "", None),
    ("IMA", ALICE, "m.room.member", ALICE, JOIN),
    ("IPOWER", ALICE, "m.room.power_levels", "", {"users": {ALICE: 100}}),
    ("IJR", ALICE, "m.room.join_rules", "", {"join_rule": "public"}),
    ("IMB", BOB, "m.room.member", BOB, JOIN),
    ("IMC", CHARLIE, "m.room.member", CHARLIE, JOIN),
    ("IMZ", ZARA, "m.room.member", ZARA, JOIN),
    ("START", ZARA, "m.room.message", None, {}),
    ("END", ZARA, "m.room.message", None, {}),
]
INITIAL_EDGES = ["START", "IMZ", "IMC", "IMB", "IJR", "IPOWER", "IMA", "CREATE"]


def build_dag(identifier, events, edges):
    """Grow the room: INITIAL plus `events`, with prev edges given as chains [later, ..., earlier].

    Events are added in topological order, the alphabetically smallest ready one first, so
    timestamps (and so tie-breaks) are the same from run to run.
    """
    dag = RoomDag(identifier)
    specs = {name: rest for name, *rest in [*INITIAL, *events]}
    prevs: dict[str, list[str]] = {name: [] for name in specs}
    for chain in [INITIAL_EDGES, *edges]:
        for later, earlier in zip(chain, chain[1:], strict=False):
            if earlier not in prevs[later]:
                prevs[later].append(earlier)
    done: set[str] = set()
    while len(done) < len(specs):
        name = min(n for n in specs if n not in done and all(p in done for p in prevs[n]))
        sender, event_type, state_key, content = specs[name]
        if event_type == "m.room.create":
            content = create_content(dag.room_version)
        elif event_type == "m.room.power_levels":
            content = power_levels_content(dag.room_version, content["users"], **_without(content, "users"))
        dag.add(name, sender, event_type, content, state_key, prev=sorted(prevs[name]))
        done.add(name)
    return dag


def _without(content, key):
    return {k: v for k, v in content.items() if k != key}


def assert_end_state(dag, expected_names):
    """The state at END: the expected events, and nothing else changed since START."""
    expected = {}
    for name in expected_names:
        event = dag.events[dag.ids[name]]
        expected[(event.type, event.state_key)] = dag.ids[name]
    start, end = dag.state_after["START"], dag.state_after["END"]
    changed = {key: event_id for key, event_id in end.items() if key in expected or start.get(key) != event_id}
    assert {k: dag.name_of(v) for k, v in changed.items()} == {k: dag.name_of(v) for k, v in expected.items()}


@pytest.mark.parametrize("identifier", V2_VERSIONS)
def test_ban_beats_power_levels_of_the_banned(identifier):
    """Bob, banned on one branch, edits the power levels on another: the ban wins, his edit goes."""
    events = [
        ("PA", ALICE, "m.room.power_levels", "", {"users": {ALICE: 100, BOB: 50}}),
        ("MA", ALICE, "m.room.member", ALICE, JOIN),
        ("MB", ALICE, "m.room.member", BOB, BAN),
        ("PB", BOB, "m.room.power_levels", "", {"users": {ALICE: 100, BOB: 50}}),
    ]
    edges = [["END", "MB", "MA", "PA", "START"], ["END", "PB", "PA"]]
    assert_end_state(build_dag(identifier, events, edges), ["PA", "MA", "MB"])


@pytest.mark.parametrize("identifier", V2_VERSIONS)
def test_join_rule_evasion(identifier):
    """Evelyn joins on a branch where the room is still public; it went private first: she is out."""
    events = [
        # "join_rules" (sic) leaves the room without a join_rule: invite-only.
        ("JR", ALICE, "m.room.join_rules", "", {"join_rules": "private"}),
        ("ME", EVELYN, "m.room.member", EVELYN, JOIN),
    ]
    edges = [["END", "JR", "START"], ["END", "ME", "START"]]
    assert_end_state(build_dag(identifier, events, edges), ["JR"])


@pytest.mark.parametrize("identifier", V2_VERSIONS)
def test_offtopic_power_levels(identifier):
    """A chain of delegated power level changes survives a branch that never saw it."""
    events = [
        ("PA", ALICE, "m.room.power_levels", "", {"users": {ALICE: 100, BOB: 50}}),
        ("PB", BOB, "m.room.power_levels", "", {"users": {ALICE: 100, BOB: 50, CHARLIE: 50}}),
        ("PC", CHARLIE, "m.room.power_levels", "", {"users": {ALICE: 100, BOB: 50, CHARLIE: 0}}),
    ]
    edges = [["END", "PC", "PB", "PA", "START"], ["END", "PA"]]
    assert_end_state(build_dag(identifier, events, edges), ["PC"])


@pytest.mark.parametrize("identifier", V2_VERSIONS)
def test_topic_basic(identifier):
    """Bob's power level edit loses to Alice demoting him; the topic stays Alice's."""
    events = [
        ("T1", ALICE, "m.room.topic", "", {}),
        ("PA1", ALICE, "m.room.power_levels", "", {"users": {ALICE: 100, BOB: 50}}),
        ("T2", ALICE, "m.room.topic", "", {}),
        ("PA2", ALICE, "m.room.power_levels", "", {"users": {ALICE: 100, BOB: 0}}),
        ("PB", BOB, "m.room.power_levels", "", {"users": {ALICE: 100, BOB: 50}}),
        ("T3", BOB, "m.room.topic", "", {}),
    ]
    edges = [["END", "PA2", "T2", "PA1", "T1", "START"], ["END", "T3", "PB", "PA1"]]
    assert_end_state(build_dag(identifier, events, edges), ["PA2", "T2"])


@pytest.mark.parametrize("identifier", V2_VERSIONS)
def test_topic_reset(identifier):
    """Bob is banned after setting a topic; a branch that never saw either keeps its older topic."""
    events = [
        ("T1", ALICE, "m.room.topic", "", {}),
        ("PA", ALICE, "m.room.power_levels", "", {"users": {ALICE: 100, BOB: 50}}),
        ("T2", BOB, "m.room.topic", "", {}),
        ("MB", ALICE, "m.room.member", BOB, BAN),
    ]
    edges = [["END", "MB", "T2", "PA", "T1", "START"], ["END", "T1"]]
    assert_end_state(build_dag(identifier, events, edges), ["T1", "MB", "PA"])


@pytest.mark.parametrize("identifier", V2_VERSIONS)
def test_topic_set_after_a_message_on_a_merged_branch(identifier):
    events = [
        ("T1", ALICE, "m.room.topic", "", {}),
        ("PA1", ALICE, "m.room.power_levels", "", {"users": {ALICE: 100, BOB: 50}}),
        ("T2", ALICE, "m.room.topic", "", {}),
        ("PA2", ALICE, "m.room.power_levels", "", {"users": {ALICE: 100, BOB: 0}}),
        ("PB", BOB, "m.room.power_levels", "", {"users": {ALICE: 100, BOB: 50}}),
        ("T3", BOB, "m.room.topic", "", {}),
        ("MZ1", ZARA, "m.room.message", None, {}),
        ("T4", ALICE, "m.room.topic", "", {}),
    ]
    edges = [
        ["END", "T4", "MZ1", "PA2", "T2", "PA1", "T1", "START"],
        ["END", "MZ1", "T3", "PB", "PA1"],
    ]
    assert_end_state(build_dag(identifier, events, edges), ["T4", "PA2"])


@pytest.mark.parametrize("identifier", V2_VERSIONS)
def test_mainline_ordering(identifier):
    """T3 wins though T4 is newer: T4 is based on an older power levels event of the mainline."""
    events = [
        ("T1", ALICE, "m.room.topic", "", {}),
        ("PA1", ALICE, "m.room.power_levels", "", {"users": {ALICE: 100, BOB: 50}}),
        ("T2", ALICE, "m.room.topic", "", {}),
        (
            "PA2",
            ALICE,
            "m.room.power_levels",
            "",
            {"users": {ALICE: 100, BOB: 50}, "events": {"m.room.power_levels": 100}},
        ),
        ("PB", BOB, "m.room.power_levels", "", {"users": {ALICE: 100, BOB: 50}}),
        ("T3", BOB, "m.room.topic", "", {}),
        ("T4", ALICE, "m.room.topic", "", {}),
    ]
    edges = [["END", "T3", "PA2", "T2", "PA1", "T1", "START"], ["END", "T4", "PB", "PA1"]]
    dag = build_dag(identifier, events, edges)
    assert dag.events[dag.ids["T4"]].origin_server_ts > dag.events[dag.ids["T3"]].origin_server_ts
    assert_end_state(dag, ["T3", "PA2"])


@pytest.mark.parametrize("identifier", V2_VERSIONS)
def test_concurrent_joins_both_stand(identifier):
    """A pair one state set lacks is conflicted in v2; both joins pass auth and are kept."""
    events = [("MD", DAVE, "m.room.member", DAVE, JOIN), ("ME", EVELYN, "m.room.member", EVELYN, JOIN)]
    dag = build_dag(identifier, events, [["END", "MD", "START"], ["END", "ME", "START"]])
    assert_end_state(dag, ["MD", "ME"])


# --- server-server-api, "Soft failure": a banned user's topic on a fork ---------------------


def _ban_evasion(identifier):
    """A; B bans Bob; C is Bob's topic on a fork from A; END (D) merges B and C."""
    events = [
        ("PA", ALICE, "m.room.power_levels", "", {"users": {ALICE: 100, BOB: 50}}),
        ("B", ALICE, "m.room.member", BOB, BAN),
        ("C", BOB, "m.room.topic", "", {"topic": "evading the ban"}),
    ]
    edges = [["END", "B", "PA", "START"], ["END", "C", "PA"]]
    return build_dag(identifier, events, edges)


@pytest.mark.parametrize("identifier", V2_VERSIONS)
def test_ban_is_prioritised_over_the_evading_topic(identifier):
    dag = _ban_evasion(identifier)
    end = dag.state_after["END"]
    assert dag.name_of(end[member(BOB)]) == "B"
    assert TOPIC not in end


def test_state_resolution_v1_keeps_the_evading_topic():
    """ "In the original version of the algorithm C would be in the resolved state"."""
    dag = _ban_evasion("1")
    end = dag.state_after["END"]
    assert (dag.name_of(end[member(BOB)]), dag.name_of(end[TOPIC])) == ("B", "C")


# --- State resolution v1 ---------------------------------------------------------------------


def test_v1_replays_power_levels_by_depth_and_picks_the_deepest_authorised_topic():
    events = [
        ("P50", ALICE, "m.room.power_levels", "", {"users": {ALICE: 100, BOB: 50}}),
        ("PA", ALICE, "m.room.power_levels", "", {"users": {ALICE: 100, BOB: 0}}),  # Bob demoted
        ("TA", ALICE, "m.room.topic", "", {"topic": "alice"}),
        ("X1", BOB, "m.room.message", None, {}),
        ("X2", BOB, "m.room.message", None, {}),
        ("TB", BOB, "m.room.topic", "", {"topic": "bob"}),  # deeper, allowed on its branch
    ]
    edges = [["END", "TA", "PA", "P50", "START"], ["END", "TB", "X2", "X1", "P50"]]
    dag = build_dag("1", events, edges)
    end = dag.state_after["END"]
    # P50 (shallower) first, then PA, which Alice may send on top of it.
    assert dag.name_of(end[POWER]) == "PA"
    # TB is the deepest, but Bob (0 under PA) may not set the topic: the next one that passes wins.
    assert dag.name_of(end[TOPIC]) == "TA"


# Alice gives Bob 50 right after START.
PA_BOB_50 = ("PA", ALICE, "m.room.power_levels", "", {"users": {ALICE: 100, BOB: 50}})


@pytest.mark.parametrize(("identifier", "winner"), [("11", "T0"), ("12", "T1")])
def test_v2_1_judges_conflicted_events_by_their_own_auth_events(identifier, winner):
    """Unconflicted state is newer than the conflict: v2 lets it refuse Bob's topic, v2.1 does not.

    Bob (50) sets the topic, then leaves; Alice had set one before on another branch, which is
    also told of Bob's leave. v2 checks Bob's topic against the unconflicted state (Bob gone)
    and drops it; v2.1 checks it against its own auth events and keeps the newer topic.
    """
    events = [
        PA_BOB_50,
        ("T0", ALICE, "m.room.topic", "", {"topic": "alice"}),
        ("T1", BOB, "m.room.topic", "", {"topic": "bob"}),
        ("BL", BOB, "m.room.member", BOB, {"membership": "leave"}),
    ]
    edges = [["END", "T0", "PA", "START"], ["END", "BL", "T1", "PA"]]
    dag = build_dag(identifier, events, edges)
    assert dag.events[dag.ids["T0"]].origin_server_ts < dag.events[dag.ids["T1"]].origin_server_ts
    with_leave = {**dag.state_after["T0"], member(BOB): dag.ids["BL"]}
    resolved = resolve_state(dag.room_version, [dag.state_after["BL"], with_leave], dag.events.get)
    assert dag.name_of(resolved[member(BOB)]) == "BL"
    assert dag.name_of(resolved[TOPIC]) == winner


@pytest.mark.parametrize(("identifier", "dave_joined"), [("11", False), ("12", True)])
def test_v2_1_replays_the_conflicted_state_subgraph(identifier, dave_joined):
    """An unconflicted event between two conflicted ones is replayed in v2.1.

    Alice makes the room invite-only (X), invites Evelyn, changes the power levels (P2), makes
    the room public again (M), and Dave joins (C1); on a fork from M she changes the power levels
    again (P3). The fork's state, as its server knows it, has no Evelyn, so X is in the auth
    difference while M is in every state. C1 -> M -> P2 puts M in the conflicted subgraph: v2.1
    replays M after X and Dave's join passes; v2 replays only X over the unconflicted state
    (where M stood) and refuses Dave's join under the invite-only rule.
    """
    events = [
        ("X", ALICE, "m.room.join_rules", "", {"join_rule": "invite"}),
        ("INV", ALICE, "m.room.member", EVELYN, {"membership": "invite"}),
        ("P2", ALICE, "m.room.power_levels", "", {"users": {ALICE: 100, BOB: 10}}),
        ("M", ALICE, "m.room.join_rules", "", {"join_rule": "public"}),
        ("C1", DAVE, "m.room.member", DAVE, JOIN),
        ("P3", ALICE, "m.room.power_levels", "", {"users": {ALICE: 100, BOB: 20}}),
    ]
    edges = [["END", "C1", "M", "P2", "INV", "X", "START"], ["END", "P3", "M"]]
    dag = build_dag(identifier, events, edges)
    without_evelyn = {k: v for k, v in dag.state_after["P3"].items() if k != member(EVELYN)}
    resolved = resolve_state(dag.room_version, [dag.state_after["C1"], without_evelyn], dag.events.get)
    assert dag.name_of(resolved[("m.room.join_rules", "")]) == "M"
    assert dag.name_of(resolved[POWER]) == "P3"
    assert (member(DAVE) in resolved) == dave_joined


# --- The parts -------------------------------------------------------------------------------


def test_auth_chain_includes_the_events_themselves():
    dag = build_dag("10", [], [["END", "START"]])
    graph = AuthGraph(dag.events.get)
    chain = graph.auth_chain([dag.ids["IMB"]])
    # IMB cites the create event, the power levels and the join rules, which cite Alice's join.
    assert {dag.name_of(e) for e in chain} == {"IMB", "CREATE", "IPOWER", "IJR", "IMA"}


def test_conflicted_subgraph_is_the_paths_between_conflicted_events():
    dag = build_dag("10", [], [["END", "START"]])
    graph = AuthGraph(dag.events.get)
    # IJR -> IMA and IJR -> IPOWER -> IMA. IMB cites IJR but is not reachable from it; CREATE is
    # reachable from IJR but leads to no conflicted event.
    subgraph = graph.conflicted_subgraph([dag.ids["IJR"], dag.ids["IMA"]])
    assert {dag.name_of(e) for e in subgraph} == {"IJR", "IPOWER", "IMA"}


@pytest.mark.parametrize("identifier", ["11", "12"])
def test_sender_power_level_from_auth_events(identifier):
    dag = build_dag(identifier, [PA_BOB_50], [["END", "PA", "START"]])
    dag.add("TB", BOB, "m.room.topic", {}, "", prev=["PA"])
    dag.add("TA", ALICE, "m.room.topic", {}, "", prev=["PA"])
    graph = AuthGraph(dag.events.get)
    alice_level = sender_power_level(dag.events[dag.ids["TA"]], graph)
    assert alice_level == (math.inf if identifier == "12" else 100)
    assert sender_power_level(dag.events[dag.ids["TB"]], graph) == 50
    assert sender_power_level(dag.events[dag.ids["IMA"]], graph) == (math.inf if identifier == "12" else 100)


def test_reverse_topological_power_order():
    """Auth events first; then higher sender power level, older timestamp, smaller id."""
    dag = build_dag("10", [PA_BOB_50], [["END", "PA", "START"]])
    dag.add("KB", BOB, "m.room.member", {"membership": "leave"}, ZARA, prev=["PA"])  # Bob (50) kicks Zara
    dag.add("JR", ALICE, "m.room.join_rules", {"join_rule": "invite"}, "", prev=["PA"])
    dag.add("KC", ALICE, "m.room.member", {"membership": "ban"}, CHARLIE, prev=["PA"])
    graph = AuthGraph(dag.events.get)
    names = ["KB", "JR", "KC", "PA"]
    ids = {dag.ids[n] for n in names}
    ordered = [dag.name_of(e) for e in reverse_topological_power_order(list(ids), ids, graph)]
    # PA is cited by all three: first. Alice's two (100) before Bob's (50), older first.
    assert ordered == ["PA", "JR", "KC", "KB"]


def test_mainline_order():
    events = [
        ("PA1", ALICE, "m.room.power_levels", "", {"users": {ALICE: 100, BOB: 50}}),
        ("TA", ALICE, "m.room.topic", "", {}),
        ("PA2", ALICE, "m.room.power_levels", "", {"users": {ALICE: 100, BOB: 50, CHARLIE: 1}}),
        ("TB", BOB, "m.room.topic", "", {}),
        ("TC", ALICE, "m.room.topic", "", {}),
    ]
    edges = [["END", "TB", "PA2", "TA", "PA1", "START"], ["TC", "START"]]
    dag = build_dag("10", events, edges)
    graph = AuthGraph(dag.events.get)
    topics = [dag.ids[n] for n in ("TB", "TA", "TC")]
    ordered = [dag.name_of(e) for e in mainline_order(topics, dag.ids["PA2"], graph)]
    # TC cites IPOWER (deepest in PA2's mainline), TA cites PA1, TB cites PA2.
    assert ordered == ["TC", "TA", "TB"]
    # Without power levels to base it on, timestamps decide.
    assert [dag.name_of(e) for e in mainline_order(topics, None, graph)] == ["TA", "TB", "TC"]


@pytest.mark.parametrize("identifier", ["11", "12"])
def test_rejected_auth_events_are_not_used_in_iterative_auth_checks(identifier):
    """A pair the resolved state lacks comes from the event's auth events, unless that one was rejected.

    Bob's topic is the only conflict. v2 checks it against the unconflicted state, which has
    Bob's join. v2.1 starts from nothing, so Bob's join comes from the topic's auth events, and
    if that join was rejected Bob is not in the room as far as the check can tell.
    """
    dag = build_dag(identifier, [PA_BOB_50, ("T1", BOB, "m.room.topic", "", {})], [["END", "T1", "PA", "START"]])
    states = [dag.state_after["T1"], dag.state_after["PA"]]
    assert dag.name_of(resolve_state(dag.room_version, states, dag.events.get)[TOPIC]) == "T1"
    resolved = resolve_state(dag.room_version, states, dag.events.get, rejected={dag.ids["IMB"]})
    assert (TOPIC in resolved) == (identifier == "11")


@pytest.mark.parametrize("identifier", ["1", "2", "11", "12"])
def test_unknown_events_are_left_out(identifier):
    dag = build_dag(identifier, [("T1", ALICE, "m.room.topic", "", {})], [["END", "T1", "START"]])
    states = [dag.state_after["T1"], {**dag.state_after["START"], TOPIC: "$unknown"}]
    assert resolve_state(dag.room_version, states, dag.events.get)[TOPIC] == dag.ids["T1"]


@pytest.mark.parametrize("identifier", ["1", "2", "12"])
def test_agreeing_states_need_no_events(identifier):
    state = {("m.room.create", ""): "$c", TOPIC: "$t"}

    def no_events(event_id):
        raise AssertionError(f"looked up {event_id}")

    assert resolve_state(version(identifier), [state, dict(state)], no_events) == state
    assert resolve_state(version(identifier), [], no_events) == {}


def test_room_versions_use_the_algorithm_the_spec_gives_them():
    assert [version(str(n)).state_res for n in (1, 2, 11, 12)] == [
        StateResAlgorithm.V1,
        StateResAlgorithm.V2,
        StateResAlgorithm.V2,
        StateResAlgorithm.V2_1,
    ]


def test_auth_chain_difference_counts_each_sets_own_events():
    """{IMA, IPOWER} against {IJR}, where IJR -> IPOWER -> IMA: only IJR differs."""
    dag = build_dag("10", [], [["END", "START"]])
    graph = AuthGraph(dag.events.get)
    sets = [{dag.ids["IMA"], dag.ids["IPOWER"]}, {dag.ids["IJR"]}]
    assert {dag.name_of(e) for e in graph.auth_chain_difference(sets)} == {"IJR"}


def test_big_room_resolution_loads_only_what_it_needs_given_an_auth_difference_index():
    """With the auth difference from storage, resolving a topic conflict among many members
    reads the conflicted events and their auth state, not every member."""
    members = [
        (f"J{i:03}", f"@user{i}:example.org", "m.room.member", f"@user{i}:example.org", JOIN) for i in range(150)
    ]
    chain = [*[name for name, *_ in reversed(members)], "START"]  # J149 -> ... -> J000 -> START
    events = [
        *members,
        ("TA", ALICE, "m.room.topic", "", {"topic": "a"}),
        ("TB", ALICE, "m.room.topic", "", {"topic": "b"}),
    ]
    dag = build_dag("12", events, [chain, ["END", "TA", members[-1][0]], ["END", "TB", members[-1][0]]])
    states = [dag.state_after["TA"], dag.state_after["TB"]]
    looked_up: set[str] = set()

    def get_event(event_id):
        looked_up.add(event_id)
        return dag.events.get(event_id)

    def index(event_id_sets):
        return set().union(*event_id_sets) - set.intersection(*map(set, event_id_sets))  # both chains agree

    resolved = resolve_state(dag.room_version, states, get_event, auth_chain_difference=index)
    assert dag.name_of(resolved[TOPIC]) == "TB"
    assert len(looked_up) < 10, sorted(dag.name_of(e) for e in looked_up)
    looked_up.clear()
    assert resolve_state(dag.room_version, states, get_event) == resolved
    assert len(looked_up) > 150  # without an index every auth chain is walked
