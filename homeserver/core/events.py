"""The event (PDU) type: built once from federation-format JSON, never changed afterwards."""

from collections.abc import Mapping
from typing import Any

from homeserver.core.event_format import validate_pdu
from homeserver.core.event_hashing import compute_event_id, room_id_from_create_event_id
from homeserver.core.frozen_json import freeze, thaw
from homeserver.core.redaction import prune_event_dict
from homeserver.core.room_versions import RoomVersion


class Event:
    """An immutable PDU of a given room version.

    Make one with `Event.from_pdu` (validates and computes the event id: for anything received
    or built) or `Event.from_stored` (trusts a PDU and id that were validated when first
    accepted). `content`, `signatures` and `unsigned` are read-only mappings whose arrays are
    tuples; `get_pdu_json()` and `to_client_dict()` return fresh, mutable dicts.
    """

    __slots__ = ("room_version", "event_id", "_pdu")

    room_version: RoomVersion
    event_id: str
    _pdu: Mapping[str, Any]

    def __init__(self, room_version: RoomVersion, pdu: Mapping[str, Any], event_id: str) -> None:
        object.__setattr__(self, "room_version", room_version)
        object.__setattr__(self, "event_id", event_id)
        object.__setattr__(self, "_pdu", freeze(pdu))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Event is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Event is immutable; cannot delete {name!r}")

    @classmethod
    def from_pdu(cls, room_version: RoomVersion, pdu: Mapping[str, Any]) -> "Event":
        """Validate a PDU (400 M_BAD_JSON / 413 M_TOO_LARGE) and compute its id.

        Hashes and signatures are not checked here: see event_hashing / event_signing.
        """
        validate_pdu(room_version, pdu)
        event_id = pdu["event_id"] if room_version.event_id_in_pdu else compute_event_id(room_version, pdu)
        return cls(room_version, pdu, event_id)

    @classmethod
    def from_stored(cls, room_version: RoomVersion, pdu: Mapping[str, Any], event_id: str) -> "Event":
        """An event loaded from our own storage: no validation, no hashing."""
        return cls(room_version, pdu, event_id)

    def __repr__(self) -> str:
        state = f" state_key={self.state_key!r}" if self.is_state() else ""
        return f"<Event {self.event_id} type={self.type!r}{state} sender={self.sender!r}>"

    @property
    def room_id(self) -> str:
        room_id = self._pdu.get("room_id")
        if room_id is None and self.room_version.room_id_is_create_event_id and self.type == "m.room.create":
            # v12: the create event carries no room id; it is the room id.
            return room_id_from_create_event_id(self.event_id)
        return room_id

    @property
    def type(self) -> str:
        return self._pdu["type"]

    @property
    def state_key(self) -> str | None:
        return self._pdu.get("state_key")

    def is_state(self) -> bool:
        return "state_key" in self._pdu

    @property
    def sender(self) -> str:
        return self._pdu["sender"]

    @property
    def content(self) -> Mapping[str, Any]:
        return self._pdu["content"]

    @property
    def membership(self) -> str | None:
        """`content.membership` of an m.room.member event, else None."""
        membership = self.content.get("membership") if self.type == "m.room.member" else None
        return membership if isinstance(membership, str) else None

    @property
    def depth(self) -> int:
        return self._pdu["depth"]

    @property
    def origin_server_ts(self) -> int:
        return self._pdu["origin_server_ts"]

    @property
    def prev_event_ids(self) -> tuple[str, ...]:
        return self._event_refs("prev_events")

    @property
    def auth_event_ids(self) -> tuple[str, ...]:
        return self._event_refs("auth_events")

    def _event_refs(self, key: str) -> tuple[str, ...]:
        refs = self._pdu.get(key, ())
        if self.room_version.event_refs_include_hashes:
            return tuple(ref[0] for ref in refs)  # v1-v2: [event_id, hashes] pairs
        return tuple(refs)

    @property
    def redacts(self) -> str | None:
        """The event an m.room.redaction redacts: `content.redacts` from v11, top-level before."""
        if self.type != "m.room.redaction":
            return None
        source = self.content if self.room_version.redacts_in_content else self._pdu
        redacts = source.get("redacts")
        return redacts if isinstance(redacts, str) else None

    @property
    def hashes(self) -> Mapping[str, Any]:
        return self._pdu.get("hashes", freeze({}))

    @property
    def signatures(self) -> Mapping[str, Any]:
        return self._pdu.get("signatures", freeze({}))

    @property
    def unsigned(self) -> Mapping[str, Any]:
        """`unsigned` as the PDU carried it (from the origin server, not signed)."""
        return self._pdu.get("unsigned", freeze({}))

    def get_pdu_json(self) -> dict[str, Any]:
        """The event in federation format, as a new dict: what is hashed, signed and sent."""
        return thaw(self._pdu)

    def pruned(self) -> "Event":
        """This event redacted. It keeps its id: in v3+ the id is a hash of the redacted form."""
        return Event(self.room_version, prune_event_dict(self.room_version, self.get_pdu_json()), self.event_id)

    def to_client_dict(
        self, *, include_room_id: bool = True, unsigned: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The event in the client-server format (ClientEvent; ClientEventWithoutRoomID for sync).

        `unsigned` is what the server wants clients to see (age, redacted_because, transaction_id,
        prev_content...), computed when serving; the PDU's own `unsigned` is not passed through.
        """
        event: dict[str, Any] = {
            "content": thaw(self.content),
            "event_id": self.event_id,
            "origin_server_ts": self.origin_server_ts,
            "sender": self.sender,
            "type": self.type,
        }
        if include_room_id:
            event["room_id"] = self.room_id
        if self.is_state():
            event["state_key"] = self.state_key
        redacts = self.redacts
        if redacts is not None:
            # rooms/v11.md: clients of either generation find `redacts` where they look for it.
            event["redacts"] = redacts
            event["content"].setdefault("redacts", redacts)
        if unsigned:
            event["unsigned"] = thaw(unsigned)
        return event
