"""Resolving the state of a room where branches of its DAG meet, per the room version's algorithm."""

from collections.abc import Container, Mapping, Sequence

from homeserver.core.auth.auth_types import StateKey
from homeserver.core.auth.membership import SignatureCheck
from homeserver.core.auth.rules import signatures_verified_on_receipt
from homeserver.core.room_versions import RoomVersion, StateResAlgorithm
from homeserver.core.state_res.auth_graph import AuthChainDifference, AuthGraph, EventLookup
from homeserver.core.state_res.v1 import resolve_v1
from homeserver.core.state_res.v2 import resolve_v2


def resolve_state(
    room_version: RoomVersion,
    state_sets: Sequence[Mapping[StateKey, str]],
    get_event: EventLookup,
    *,
    rejected: Container[str] = frozenset(),
    is_signed_by: SignatureCheck = signatures_verified_on_receipt,
    auth_chain_difference: AuthChainDifference | None = None,
) -> dict[StateKey, str]:
    """The state where the states `state_sets` ((type, state_key) -> event id) meet.

    Pure and synchronous. `get_event(event_id)` returns an event or None if it is unknown (a
    dict's `.get` will do); it is asked only for events the algorithm needs: the conflicted
    events, their auth chains, and the auth state of the events it checks, never the whole
    unconflicted state. `rejected` holds the ids of rejected events among those: they are not
    used as auth events in the iterative auth checks. `is_signed_by` is for the auth rules'
    restricted-join signature check; by default the events are taken to have passed the checks
    on receipt. `auth_chain_difference(event_id_sets)` may compute the auth difference from an
    index (the events in some but not all of the sets' full auth chains, each set's own events
    included); by default every chain is walked through `get_event`, which in a big room means
    loading its whole auth DAG.
    """
    if not state_sets:
        return {}
    graph = AuthGraph(get_event)
    if room_version.state_res is StateResAlgorithm.V1:
        return resolve_v1(room_version, state_sets, graph, is_signed_by=is_signed_by)
    return resolve_v2(
        room_version,
        state_sets,
        graph,
        rejected=rejected,
        is_signed_by=is_signed_by,
        auth_chain_difference=auth_chain_difference,
    )
