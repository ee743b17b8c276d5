"""State resolution v2 (rooms/fragments/v2-state-res.md, room versions 2-11) and v2.1 (rooms/v12.md).

v2.1 differs in two places: the full conflicted set also holds the conflicted state subgraph,
and the first iterative auth checks start from an empty state rather than the unconflicted one.
"""

import heapq
from collections.abc import Container, Iterable, Mapping, Sequence

from homeserver.core.auth.auth_types import (
    CREATE_KEY,
    JOIN_RULES,
    MEMBER,
    POWER_LEVELS,
    POWER_LEVELS_KEY,
    StateKey,
    auth_types_of,
)
from homeserver.core.auth.errors import AuthError
from homeserver.core.auth.membership import SignatureCheck
from homeserver.core.auth.power_levels import PowerLevel, PowerLevels
from homeserver.core.auth.rules import check_auth_rules
from homeserver.core.events import Event
from homeserver.core.room_versions import RoomVersion, StateResAlgorithm
from homeserver.core.state_res.auth_graph import AuthChainDifference, AuthGraph
from homeserver.core.state_res.state_sets import split_conflicted

StateMap = Mapping[StateKey, str]


def resolve_v2(
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    graph: AuthGraph,
    *,
    rejected: Container[str],
    is_signed_by: SignatureCheck,
    auth_chain_difference: AuthChainDifference | None = None,
) -> dict[StateKey, str]:
    unconflicted, conflicted = split_conflicted(state_sets, every_set_must_agree=True)
    if not conflicted:
        return unconflicted
    conflicted_ids = {event_id for event_ids in conflicted.values() for event_id in event_ids}

    event_id_sets = [set(state.values()) for state in state_sets]
    auth_difference = (auth_chain_difference or graph.auth_chain_difference)(event_id_sets)
    full_conflicted = conflicted_ids | set(auth_difference)
    if room_version.state_res is StateResAlgorithm.V2_1:
        full_conflicted |= graph.conflicted_subgraph(conflicted_ids)
    # Events we do not have cannot take part (they would not be in our state sets' chains either).
    full_conflicted = {event_id for event_id in full_conflicted if graph.event(event_id) is not None}

    # 1. The power events and the conflicted parts of their auth chains, earliest first.
    power_ids = [event_id for event_id in full_conflicted if _is_power_event(graph.event(event_id))]
    sorted_power = reverse_topological_power_order(power_ids, full_conflicted, graph)
    # 2. Auth them, from the unconflicted state (v2) or from nothing (v2.1).
    base: dict[StateKey, str] = {} if room_version.state_res is StateResAlgorithm.V2_1 else dict(unconflicted)
    partial = iterative_auth_checks(room_version, sorted_power, base, graph, rejected, is_signed_by)
    # 3. The rest, ordered by the mainline of the power levels resolved so far.
    picked = set(sorted_power)
    others = [event_id for event_id in full_conflicted if event_id not in picked]
    sorted_others = mainline_order(others, partial.get(POWER_LEVELS_KEY), graph)
    # 4. Auth them on top of step 2.
    resolved = iterative_auth_checks(room_version, sorted_others, partial, graph, rejected, is_signed_by)
    # 5. The unconflicted state wins over anything resolved.
    resolved.update(unconflicted)
    return resolved


def _is_power_event(event: Event | None) -> bool:
    """Power levels, join rules, and kicks and bans (a leave or ban sent by someone else)."""
    if event is None or event.state_key is None:
        return False
    if event.type in (POWER_LEVELS, JOIN_RULES) and event.state_key == "":
        return True
    return event.type == MEMBER and event.membership in ("leave", "ban") and event.sender != event.state_key


def sender_power_level(event: Event, graph: AuthGraph) -> PowerLevel:
    """The power level of the event's sender, as its own auth events have it."""
    auth_events = graph.auth_events_by_key(event)
    power = PowerLevels(event.room_version, auth_events.get(POWER_LEVELS_KEY), auth_events.get(CREATE_KEY))
    return power.user_level(event.sender)


def reverse_topological_power_order(power_ids: Iterable[str], full_conflicted: set[str], graph: AuthGraph) -> list[str]:
    """The power events and their conflicted auth ancestors, auth events before the events citing them.

    Among events whose auth events are already placed: the higher sender power level first, then
    the older `origin_server_ts`, then the smaller event id (Kahn's algorithm with a heap). The
    edges are those between members of the full conflicted set, found by walking from the power
    events through such members, as the reference implementations do.
    """
    edges: dict[str, set[str]] = {}
    stack = list(power_ids)
    while stack:
        event_id = stack.pop()
        if event_id in edges:
            continue
        cited = {a for a in graph.auth_event_ids(event_id) if a in full_conflicted}
        edges[event_id] = cited
        stack.extend(a for a in cited if a not in edges)

    def key(event_id: str) -> tuple[PowerLevel, int, str]:
        event = graph.event(event_id)
        assert event is not None  # the full conflicted set holds known events only
        return (-sender_power_level(event, graph), event.origin_server_ts, event_id)

    waiting_on = {event_id: len(cited) for event_id, cited in edges.items()}
    cited_by: dict[str, list[str]] = {}
    for event_id, cited in edges.items():
        for auth_id in cited:
            cited_by.setdefault(auth_id, []).append(event_id)
    heap = [(key(event_id), event_id) for event_id, count in waiting_on.items() if count == 0]
    heapq.heapify(heap)
    ordered: list[str] = []
    while heap:
        _, event_id = heapq.heappop(heap)
        ordered.append(event_id)
        for citing in cited_by.get(event_id, ()):
            waiting_on[citing] -= 1
            if waiting_on[citing] == 0:
                heapq.heappush(heap, (key(citing), citing))
    return ordered


def mainline_order(event_ids: list[str], power_levels_id: str | None, graph: AuthGraph) -> list[str]:
    """Events based on older power levels first; then older `origin_server_ts`; then smaller id."""
    mainline: dict[str, int] = {}  # power levels event id -> index from the resolved one (P0)
    current = power_levels_id
    while current is not None and current not in mainline:
        mainline[current] = len(mainline)
        current = _cited_power_levels(current, graph)

    positions: dict[str, float] = {}  # power levels event id -> mainline position of what cites it

    def position(event_id: str) -> float:
        """The index in the mainline of the first power levels event in the event's PL chain, or inf."""
        walked: list[str] = []
        current = _cited_power_levels(event_id, graph)
        found = float("inf")
        while current is not None:
            if current in positions:
                found = positions[current]
                break
            if current in mainline:
                found = mainline[current]
                break
            if current in walked:  # a cycle: only forged v1-2 ids could make one
                break
            walked.append(current)
            current = _cited_power_levels(current, graph)
        for power_levels in walked:
            positions[power_levels] = found
        return found

    def key(event_id: str) -> tuple[float, int, str]:
        event = graph.event(event_id)
        assert event is not None
        return (-position(event_id), event.origin_server_ts, event_id)

    return sorted(event_ids, key=key)


def _cited_power_levels(event_id: str, graph: AuthGraph) -> str | None:
    for auth_id in graph.auth_event_ids(event_id):
        auth_event = graph.event(auth_id)
        if auth_event is not None and (auth_event.type, auth_event.state_key) == POWER_LEVELS_KEY:
            return auth_id
    return None


def iterative_auth_checks(
    room_version: RoomVersion,
    event_ids: list[str],
    base: Mapping[StateKey, str],
    graph: AuthGraph,
    rejected: Container[str],
    is_signed_by: SignatureCheck,
) -> dict[StateKey, str]:
    """Apply the events in order to a copy of `base`, each one only if the auth rules allow it there.

    The state an event is checked against is what `state` holds for the pairs its check reads;
    a pair `state` lacks comes from the event's own auth events, unless that auth event was
    rejected.
    """
    state = dict(base)
    for event_id in event_ids:
        event = graph.event(event_id)
        if event is None or event.state_key is None:
            continue
        fallback = graph.auth_events_by_key(event)
        auth_state: dict[StateKey, Event] = {}
        for key in auth_types_of(event):
            state_event = graph.event(state[key]) if key in state else None
            if state_event is not None:
                auth_state[key] = state_event
            elif key in fallback and fallback[key].event_id not in rejected:
                auth_state[key] = fallback[key]
        try:
            check_auth_rules(room_version, event, auth_state, is_signed_by=is_signed_by)
        except AuthError:
            continue
        state[(event.type, event.state_key)] = event_id
    return state
