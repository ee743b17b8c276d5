"""Event authorisation: which state an event's check needs, and whether the rules allow it."""

from homeserver.core.auth.auth_events import check_auth_events
from homeserver.core.auth.auth_types import (
    StateKey,
    auth_events_selection,
    auth_types_for_event,
    auth_types_of,
    select_auth_event_ids,
)
from homeserver.core.auth.errors import AuthError
from homeserver.core.auth.membership import SignatureCheck
from homeserver.core.auth.power_levels import CREATOR_POWER_LEVEL, PowerLevels, parse_power_level, room_creators
from homeserver.core.auth.redactions import redaction_applies
from homeserver.core.auth.rules import check_auth_rules, signature_check, signatures_verified_on_receipt

__all__ = [
    "CREATOR_POWER_LEVEL",
    "AuthError",
    "PowerLevels",
    "SignatureCheck",
    "StateKey",
    "auth_events_selection",
    "auth_types_for_event",
    "auth_types_of",
    "check_auth_events",
    "check_auth_rules",
    "parse_power_level",
    "redaction_applies",
    "room_creators",
    "select_auth_event_ids",
    "signature_check",
    "signatures_verified_on_receipt",
]
