"""State resolution v1 (rooms/v1.md), for room version 1 only.

Known to reset state in some forks; kept because version 1 rooms still exist. Power levels,
then join rules, then memberships are resolved by replaying the conflicting events in order
of depth while the auth rules allow them; any other conflict goes to the deepest event that
passes auth.
"""

import hashlib
from collections.abc import Mapping, Sequence

from homeserver.core.auth.auth_types import JOIN_RULES, MEMBER, POWER_LEVELS, StateKey, auth_types_of
from homeserver.core.auth.errors import AuthError
from homeserver.core.auth.membership import SignatureCheck
from homeserver.core.auth.rules import check_auth_rules
from homeserver.core.events import Event
from homeserver.core.room_versions import RoomVersion
from homeserver.core.state_res.auth_graph import AuthGraph
from homeserver.core.state_res.state_sets import split_conflicted


def resolve_v1(
    room_version: RoomVersion,
    state_sets: Sequence[Mapping[StateKey, str]],
    graph: AuthGraph,
    *,
    is_signed_by: SignatureCheck,
) -> dict[StateKey, str]:
    resolved, conflicted = split_conflicted(state_sets, every_set_must_agree=False)
    if not conflicted:
        return resolved

    def known(event_ids: set[str]) -> list[Event]:
        return [event for event in map(graph.event, event_ids) if event is not None]

    def allowed(event: Event) -> bool:
        auth_state = {}
        for key in auth_types_of(event):
            state_event = graph.event(resolved[key]) if key in resolved else None
            if state_event is not None:
                auth_state[key] = state_event
        try:
            check_auth_rules(room_version, event, auth_state, is_signed_by=is_signed_by)
        except AuthError:
            return False
        return True

    def replay(key: StateKey, events: list[Event]) -> None:
        """Add the earliest event, then each later one while the auth rules allow it."""
        ordered = sorted(events, key=lambda e: (e.depth, _negated_sha1(e.event_id)))
        resolved[key] = ordered[0].event_id
        for event in ordered[1:]:
            if not allowed(event):
                break
            resolved[key] = event.event_id

    for event_type in (POWER_LEVELS, JOIN_RULES, MEMBER):
        for key in sorted(k for k in conflicted if k[0] == event_type):
            events = known(conflicted.pop(key))
            if events:
                replay(key, events)

    for key in sorted(conflicted):
        # The deepest (then lowest sha1) event that passes auth; the shallowest if none does.
        events = sorted(known(conflicted[key]), key=lambda e: (-e.depth, _sha1(e.event_id)))
        if events:
            resolved[key] = next((e for e in events if allowed(e)), events[-1]).event_id
    return resolved


def _sha1(event_id: str) -> bytes:
    return hashlib.sha1(event_id.encode("utf-8")).digest()


def _negated_sha1(event_id: str) -> bytes:
    """Sorts in descending sha1 order when sorted ascending."""
    return bytes(255 - b for b in _sha1(event_id))
