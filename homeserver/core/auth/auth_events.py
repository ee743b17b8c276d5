"""The checks on an event's own `auth_events` (rule 2 of v1-11, rules 2-3 of v12).

These run once, when an event is received, before the rules are applied against the auth
events (step 4 of "Checks performed on receipt of a PDU"). They need the auth events loaded;
what comes back is the state `check_auth_rules` takes.
"""

from collections.abc import Container, Iterable

from homeserver.core.auth.auth_types import CREATE, CREATE_KEY, StateKey, auth_events_selection
from homeserver.core.auth.errors import AuthError
from homeserver.core.event_hashing import room_id_from_create_event_id
from homeserver.core.events import Event
from homeserver.core.room_versions import RoomVersion


def check_auth_events(
    room_version: RoomVersion,
    event: Event,
    auth_events: Iterable[Event],
    *,
    rejected: Container[str] = frozenset(),
    create_event: Event | None = None,
) -> dict[StateKey, Event]:
    """Check the events `event` cites as `auth_events`, and return them keyed by (type, state_key).

    `auth_events` are the cited events, loaded (all of them: a missing one is an error here, the
    caller fetches it first). `rejected` holds the ids of events that were rejected. In v12 the
    create event is not cited but named by the room id: pass it as `create_event`, and it is
    added to the result. AuthError if an entry is duplicated, unexpected, rejected or from
    another room, or the create event is missing.
    """
    if event.type == CREATE:
        return {}
    loaded = {auth_event.event_id: auth_event for auth_event in auth_events}
    expected = auth_events_selection(room_version, event.type, event.state_key, event.sender, event.content)
    state: dict[StateKey, Event] = {}
    for event_id in event.auth_event_ids:
        auth_event = loaded.get(event_id)
        if auth_event is None:
            raise AuthError(f"Auth event {event_id} is not known")
        if auth_event.room_id != event.room_id:
            raise AuthError(f"Auth event {event_id} is from another room")
        if auth_event.state_key is None:
            raise AuthError(f"Auth event {event_id} is not a state event")
        key = (auth_event.type, auth_event.state_key)
        if key in state:
            raise AuthError(f"Two auth events for {key}: {state[key].event_id} and {event_id}")
        if key not in expected:
            raise AuthError(f"Auth event {event_id} for {key} is not one the event may cite")
        if event_id in rejected:
            raise AuthError(f"Auth event {event_id} was rejected")
        state[key] = auth_event

    if room_version.room_id_is_create_event_id:
        # v12 rule 2: the room id is the id of an accepted create event.
        if (
            create_event is None
            or create_event.type != CREATE
            or create_event.state_key != ""
            or room_id_from_create_event_id(create_event.event_id) != event.room_id
            or create_event.event_id in rejected
        ):
            raise AuthError("The room id is not the id of an accepted m.room.create event")
        state[CREATE_KEY] = create_event
    elif CREATE_KEY not in state:
        raise AuthError("The auth events do not include the m.room.create event")
    return state
