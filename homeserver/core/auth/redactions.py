"""Whether a redaction takes effect (rooms/fragments/v3-handling-redactions.md).

From v3 the auth rules accept any m.room.redaction the sender may send at all; whether it
redacts anything is decided when both it and the event it names are known: the sender has
the redact level, or is on the same server as the original's sender. In v1-2 the auth rules
decided (rule 11), so an accepted redaction applies.
"""

from collections.abc import Mapping

from homeserver.core.auth.auth_types import StateKey
from homeserver.core.auth.power_levels import PowerLevels
from homeserver.core.event_signing import server_of
from homeserver.core.events import Event
from homeserver.core.room_versions import RoomVersion


def redaction_applies(
    room_version: RoomVersion, redaction: Event, original: Event, auth_state: Mapping[StateKey, Event]
) -> bool:
    """Whether an accepted `redaction` redacts `original`.

    `auth_state` holds the room's power levels and create event (for the redact level and, in
    v12, the creators), as of the redaction.
    """
    if redaction.redacts != original.event_id or redaction.room_id != original.room_id:
        return False
    if room_version.redaction_checked_in_auth_rules:
        return True
    if server_of(redaction.sender) == server_of(original.sender):
        return True
    power = PowerLevels.from_state(room_version, auth_state)
    return power.user_level(redaction.sender) >= power.named_level("redact")
