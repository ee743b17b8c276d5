"""The entry points handlers use to authorise events; the rules live in `homeserver.core.auth`.

- `auth_types_for_event(...)`: the (type, state_key) pairs to load before checking an event.
- `check_auth(...)`: the auth rules, for this server's own events (built and signed here).
- `check_auth_events(...)` then `check_auth_rules(..., is_signed_by=signature_check(keyring))`:
  a received event, against its own auth events, then against the state before it.
"""

from collections.abc import Mapping

from homeserver.core.auth import (
    AuthError,
    SignatureCheck,
    StateKey,
    auth_events_selection,
    auth_types_for_event,
    auth_types_of,
    check_auth_events,
    check_auth_rules,
    redaction_applies,
    select_auth_event_ids,
    signature_check,
    signatures_verified_on_receipt,
)
from homeserver.core.events import Event
from homeserver.core.room_versions import RoomVersion

__all__ = [
    "AuthError",
    "SignatureCheck",
    "StateKey",
    "auth_events_selection",
    "auth_types_for_event",
    "auth_types_of",
    "check_auth",
    "check_auth_events",
    "check_auth_rules",
    "redaction_applies",
    "select_auth_event_ids",
    "signature_check",
    "signatures_verified_on_receipt",
]


def check_auth(
    room_version: RoomVersion,
    event: Event,
    auth_state: Mapping[StateKey, Event],
    *,
    is_signed_by: SignatureCheck = signatures_verified_on_receipt,
) -> None:
    """`check_auth_rules` for an event this server built and signed (403 M_FORBIDDEN if refused).

    Its signatures are ours, so they are taken as valid; for a received event pass
    `is_signed_by=signature_check(keyring)` (or use `check_auth_rules`).
    """
    check_auth_rules(room_version, event, auth_state, is_signed_by=is_signed_by)
