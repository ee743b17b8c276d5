"""The auth DAG as state resolution walks it: events by id, and the `auth_events` edges between them.

Everything is read through `get_event` (storage's, or a dict's `.get`); each event is asked for
once per resolution. Walks are iterative: auth chains are thousands of events deep in old rooms.
"""

from collections.abc import Callable, Collection, Iterable, Sequence

from homeserver.core.auth.auth_types import CREATE_KEY, StateKey
from homeserver.core.event_hashing import room_id_from_create_event_id
from homeserver.core.events import Event

# event id -> the event, or None if it is not known (it is then left out, as other servers do).
EventLookup = Callable[[str], Event | None]
# The event ids of each state set -> the events in some but not all of the sets' full auth chains,
# a set's own events counting as part of its chain (for storage with an auth chain index).
AuthChainDifference = Callable[[Sequence[Collection[str]]], Collection[str]]


class AuthGraph:
    def __init__(self, get_event: EventLookup) -> None:
        self._get_event = get_event
        self._events: dict[str, Event | None] = {}

    def event(self, event_id: str) -> Event | None:
        if event_id not in self._events:
            self._events[event_id] = self._get_event(event_id)
        return self._events[event_id]

    def auth_event_ids(self, event_id: str) -> tuple[str, ...]:
        event = self.event(event_id)
        return event.auth_event_ids if event is not None else ()

    def create_event_of(self, event: Event) -> Event | None:
        """v12: the create event the room id names (it is implied, not cited in auth_events)."""
        if not event.room_version.room_id_is_create_event_id or not event.room_id:
            return None
        return self.event("$" + event.room_id[1:])

    def auth_events_by_key(self, event: Event) -> dict[StateKey, Event]:
        """The event's known auth events keyed by (type, state_key); in v12 its create event too."""
        by_key: dict[StateKey, Event] = {}
        for auth_id in event.auth_event_ids:
            auth_event = self.event(auth_id)
            if auth_event is not None and auth_event.state_key is not None:
                by_key[(auth_event.type, auth_event.state_key)] = auth_event
        if CREATE_KEY not in by_key:
            create = self.create_event_of(event)
            if create is not None and room_id_from_create_event_id(create.event_id) == event.room_id:
                by_key[CREATE_KEY] = create
        return by_key

    def auth_chain(self, event_ids: Iterable[str]) -> set[str]:
        """The events and everything reachable from them through `auth_events` (known events only)."""
        chain: set[str] = set()
        stack = [event_id for event_id in event_ids if self.event(event_id) is not None]
        while stack:
            event_id = stack.pop()
            if event_id in chain:
                continue
            chain.add(event_id)
            stack.extend(a for a in self.auth_event_ids(event_id) if a not in chain and self.event(a) is not None)
        return chain

    def auth_chain_difference(self, event_id_sets: Sequence[Collection[str]]) -> set[str]:
        """The events in some but not all of the full auth chains of these sets of events.

        A set's chain includes its own events (as other servers count it): otherwise an
        unconflicted event cited by an event of only one branch would land in the difference.
        This walks every chain whole; storage with an index should supply its own.
        """
        chains = [self.auth_chain(event_ids) for event_ids in event_id_sets]
        return set().union(*chains) - set.intersection(*chains)

    def conflicted_subgraph(self, conflicted: Collection[str]) -> set[str]:
        """v2.1: every event on an `auth_events` path from one conflicted event to another, ends included.

        That is the events reachable from the conflicted set that can themselves reach it.
        """
        reachable = self.auth_chain(conflicted)
        # Walk the reversed edges, within what is reachable, back from the conflicted events.
        cited_by: dict[str, list[str]] = {}
        for event_id in reachable:
            for auth_id in self.auth_event_ids(event_id):
                if auth_id in reachable:
                    cited_by.setdefault(auth_id, []).append(event_id)
        subgraph: set[str] = set()
        stack = [event_id for event_id in conflicted if event_id in reachable]
        while stack:
            event_id = stack.pop()
            if event_id in subgraph:
                continue
            subgraph.add(event_id)
            stack.extend(cited_by.get(event_id, ()))
        return subgraph
