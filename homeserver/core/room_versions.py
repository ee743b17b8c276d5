"""Room versions: what changes between them, as data the rest of the core can branch on.

The source of truth is the spec's rooms/v1.md..v12.md (and rooms/fragments). Each flag below
names one behaviour that differs between versions, so code asks `room_version.knock_join_rule`
instead of comparing version strings (versions are opaque and not ordered).
"""

import re
from dataclasses import dataclass
from enum import Enum

from homeserver.core.errors import MatrixError


class EventIdFormat(Enum):
    """How an event's id is made (rooms/fragments/v1-event-ids.md, v3.md, v4-event-ids.md)."""

    V1 = "v1"  # `$opaque_id:domain`, chosen by the origin server and carried in the PDU
    V3 = "v3"  # `$` + reference hash in standard unpadded base64 (may contain `/` and `+`)
    V4 = "v4"  # `$` + reference hash in URL-safe unpadded base64


class StateResAlgorithm(Enum):
    V1 = "v1"  # rooms/v1.md, inline
    V2 = "v2"  # rooms/fragments/v2-state-res.md
    V2_1 = "v2.1"  # rooms/v12.md: v2, but iterative auth checks start from an empty map


# Depth is an integer; once canonical JSON is enforced (v6) it must fit its integer range.
_MAX_DEPTH_INT64 = 2**63 - 1
_MAX_DEPTH_CANONICAL = 2**53 - 1


@dataclass(frozen=True)
class RoomVersion:
    identifier: str
    stable: bool
    event_id_format: EventIdFormat
    state_res: StateResAlgorithm
    # v5: a signing key only counts for an event if its valid_until_ts >= origin_server_ts.
    enforce_key_validity: bool
    # v6: canonical JSON is enforced on events: no floats, integers within +-(2**53 - 1).
    strict_canonical_json: bool
    # v1-v5: auth rules special-case m.room.aliases, and redaction keeps its `aliases`.
    special_case_aliases_auth: bool
    # v6: power level changes are also checked for the `notifications` property.
    limit_notifications_power_levels: bool
    # v1-v2: redactions are authorised by the auth rules (rule 11) rather than on delivery.
    redaction_checked_in_auth_rules: bool
    # v7: the `knock` join rule and membership.
    knock_join_rule: bool
    # v8: the `restricted` join rule; redaction keeps join rules' `allow`.
    restricted_join_rule: bool
    # v9: redaction keeps m.room.member's `join_authorised_via_users_server`.
    restricted_join_rule_fix: bool
    # v10: the `knock_restricted` join rule.
    knock_restricted_join_rule: bool
    # v10: power levels must be integers (no strings, no floats).
    enforce_int_power_levels: bool
    # v11: the create event has no `creator`; the creator is its `sender`.
    implicit_room_creator: bool
    # v11: the v11 redaction algorithm (rooms/fragments/v11-redactions.md).
    updated_redaction_rules: bool
    # v11: m.room.redaction carries `redacts` in `content`, not at the top level.
    redacts_in_content: bool
    # v12: the room id is the create event's id with `!` for `$`; the create event has no room_id.
    room_id_is_create_event_id: bool
    # v12: creators (create sender + `additional_creators`) have infinite power.
    privileged_room_creators: bool
    # v1-v11: the create event is selected into every event's auth_events (v12 implies it by room id).
    create_event_in_auth_events: bool

    @property
    def event_id_in_pdu(self) -> bool:
        """v1-v2 carry `event_id` in the PDU; later versions compute it from the reference hash."""
        return self.event_id_format is EventIdFormat.V1

    @property
    def event_refs_include_hashes(self) -> bool:
        """v1-v2 `prev_events`/`auth_events` are `[event_id, {hashes}]` pairs, later plain ids."""
        return self.event_id_format is EventIdFormat.V1

    @property
    def max_depth(self) -> int:
        return _MAX_DEPTH_CANONICAL if self.strict_canonical_json else _MAX_DEPTH_INT64


def _version(identifier: str, n: int) -> RoomVersion:
    """The spec's versions form a chain: each one builds on the previous, so a threshold per flag suffices."""
    if n <= 2:
        event_id_format = EventIdFormat.V1
    elif n == 3:
        event_id_format = EventIdFormat.V3
    else:
        event_id_format = EventIdFormat.V4
    if n == 1:
        state_res = StateResAlgorithm.V1
    elif n < 12:
        state_res = StateResAlgorithm.V2
    else:
        state_res = StateResAlgorithm.V2_1
    return RoomVersion(
        identifier=identifier,
        stable=True,
        event_id_format=event_id_format,
        state_res=state_res,
        enforce_key_validity=n >= 5,
        strict_canonical_json=n >= 6,
        special_case_aliases_auth=n <= 5,
        limit_notifications_power_levels=n >= 6,
        redaction_checked_in_auth_rules=n <= 2,
        knock_join_rule=n >= 7,
        restricted_join_rule=n >= 8,
        restricted_join_rule_fix=n >= 9,
        knock_restricted_join_rule=n >= 10,
        enforce_int_power_levels=n >= 10,
        implicit_room_creator=n >= 11,
        updated_redaction_rules=n >= 11,
        redacts_in_content=n >= 11,
        room_id_is_create_event_id=n >= 12,
        privileged_room_creators=n >= 12,
        create_event_in_auth_events=n < 12,
    )


KNOWN_ROOM_VERSIONS: dict[str, RoomVersion] = {str(n): _version(str(n), n) for n in range(1, 13)}

# rooms/_index.md: "Servers SHOULD use room version 12 as the default room version".
DEFAULT_ROOM_VERSION = "12"

MAX_ROOM_VERSION_LENGTH = 32  # codepoints
_ROOM_VERSION = re.compile(r"[a-z0-9.\-]{1,32}")
_RESERVED_ROOM_VERSION = re.compile(r"[0-9.]+")


def is_valid_room_version_identifier(identifier: str) -> bool:
    """The room version grammar: 1 to 32 of `a-z`, `0-9`, `.`, `-` (rooms/_index.md)."""
    return isinstance(identifier, str) and _ROOM_VERSION.fullmatch(identifier) is not None


def is_reserved_room_version_identifier(identifier: str) -> bool:
    """Versions made only of digits and dots are reserved for the Matrix protocol itself."""
    return is_valid_room_version_identifier(identifier) and bool(_RESERVED_ROOM_VERSION.fullmatch(identifier))


def get_room_version(identifier: str) -> RoomVersion:
    """The room version with this identifier; 400 M_UNSUPPORTED_ROOM_VERSION if we do not know it."""
    version = KNOWN_ROOM_VERSIONS.get(identifier) if isinstance(identifier, str) else None
    if version is None:
        raise MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION", f"Unsupported room version: {identifier!r}")
    return version
