"""The redaction algorithm of every room version (rooms/fragments/v*-redactions.md).

Redaction is not only for m.room.redaction: signatures and reference hashes (event ids) are
computed over the redacted form, so this must match other servers byte for byte.
"""

import copy
from collections.abc import Mapping
from typing import Any

from homeserver.core.room_versions import RoomVersion

# Top-level keys every version keeps (rooms/fragments/v11-redactions.md).
_KEPT_TOP_LEVEL_KEYS = frozenset(
    {
        "event_id",
        "type",
        "room_id",
        "sender",
        "state_key",
        "content",
        "hashes",
        "signatures",
        "depth",
        "prev_events",
        "auth_events",
        "origin_server_ts",
    }
)
# ... and the ones versions 1-10 keep as well; v11 stopped protecting them.
_PRE_V11_TOP_LEVEL_KEYS = frozenset({"prev_state", "origin", "membership"})

_POWER_LEVELS_KEYS = (
    "ban",
    "events",
    "events_default",
    "kick",
    "redact",
    "state_default",
    "users",
    "users_default",
)


def kept_top_level_keys(room_version: RoomVersion) -> frozenset[str]:
    if room_version.updated_redaction_rules:
        return _KEPT_TOP_LEVEL_KEYS
    return _KEPT_TOP_LEVEL_KEYS | _PRE_V11_TOP_LEVEL_KEYS


def kept_content_keys(room_version: RoomVersion, event_type: str) -> tuple[str, ...]:
    """The `content` keys a redacted event of this type keeps (except v11's special cases)."""
    v = room_version
    if event_type == "m.room.member":
        return ("membership", "join_authorised_via_users_server") if v.restricted_join_rule_fix else ("membership",)
    if event_type == "m.room.create":
        # v11+ keeps the whole content; see prune_event_dict.
        return () if v.updated_redaction_rules else ("creator",)
    if event_type == "m.room.join_rules":
        return ("join_rule", "allow") if v.restricted_join_rule else ("join_rule",)
    if event_type == "m.room.power_levels":
        return _POWER_LEVELS_KEYS + ("invite",) if v.updated_redaction_rules else _POWER_LEVELS_KEYS
    if event_type == "m.room.aliases" and v.special_case_aliases_auth:
        return ("aliases",)
    if event_type == "m.room.history_visibility":
        return ("history_visibility",)
    if event_type == "m.room.redaction" and v.updated_redaction_rules:
        return ("redacts",)
    return ()


def _redact_content(room_version: RoomVersion, event_type: Any, content: Mapping[str, Any]) -> dict[str, Any]:
    if room_version.updated_redaction_rules and event_type == "m.room.create":
        return dict(content)
    kept = {key: content[key] for key in kept_content_keys(room_version, event_type) if key in content}
    if room_version.updated_redaction_rules and event_type == "m.room.member":
        # v11: `third_party_invite` survives, holding only its `signed` key. An object without
        # `signed` stays as `{}`, as other implementations do, so reference hashes agree.
        invite = content.get("third_party_invite")
        if isinstance(invite, Mapping):
            kept["third_party_invite"] = {"signed": invite["signed"]} if "signed" in invite else {}
    return kept


def prune_event_dict(room_version: RoomVersion, event_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The redacted form of an event (federation format): a new dict, the input untouched.

    Everything not protected goes, `unsigned` included: what a server shows in `unsigned`
    of a redacted event (`redacted_because`) is added when serving it, not part of the event.
    """
    kept_keys = kept_top_level_keys(room_version)
    pruned = {key: copy.deepcopy(value) for key, value in event_dict.items() if key in kept_keys}
    content = event_dict.get("content")
    pruned["content"] = copy.deepcopy(
        _redact_content(room_version, event_dict.get("type"), content if isinstance(content, Mapping) else {})
    )
    return pruned
