"""The body of a push gateway's /_matrix/push/v1/notify request for one push action, as the Push Gateway
API describes it."""

from typing import Any

from homeserver.core.frozen_json import thaw
from homeserver.storage.events import EventStore
from homeserver.storage.pushers import PendingPush, PusherRecord, PusherStore
from homeserver.storage.rooms import RoomStore

EVENT_ID_ONLY = "event_id_only"


def tweaks_of(push: PendingPush) -> dict[str, Any]:
    """The tweaks the user's push rules set: the sound, and highlight only when it is true (absent means
    false)."""
    tweaks: dict[str, Any] = {}
    if push.sound is not None:
        tweaks["sound"] = push.sound
    if push.highlight:
        tweaks["highlight"] = True
    return tweaks


def device_of(pusher: PusherRecord, push: PendingPush) -> dict[str, Any]:
    return {
        "app_id": pusher.app_id,
        "pushkey": pusher.pushkey,
        "pushkey_ts": pusher.pushkey_ts // 1000,  # seconds, in the spec
        # Everything the client set, `format` and custom keys included, but the URL (as the spec asks).
        "data": {k: v for k, v in pusher.data.items() if k != "url"},
        "tweaks": tweaks_of(push),
    }


class NotificationBuilder:
    def __init__(self, events: EventStore, rooms: RoomStore, pushers: PusherStore) -> None:
        self._events = events
        self._rooms = rooms
        self._pushers = pushers

    async def build(self, pusher: PusherRecord, push: PendingPush) -> dict[str, Any] | None:
        """The request body, or None if the event is no longer stored (nothing to notify about)."""
        event = await self._events.get_event(push.event_id)
        if event is None:
            return None
        unread = await self._pushers.unread_count(pusher.user_id)
        # As Synapse does: sound or highlight make it urgent, and so does an encrypted event, whose
        # content the rules could not see.
        urgent = push.sound is not None or push.highlight or event.type == "m.room.encrypted"
        notification: dict[str, Any] = {
            "event_id": event.event_id,
            "room_id": event.room_id,
            "prio": "high" if urgent else "low",
            "counts": {"unread": unread} if unread else {},  # zero counts are left out
            "devices": [device_of(pusher, push)],
        }
        if pusher.data.get("format") == EVENT_ID_ONLY:
            return {"notification": notification}
        notification["type"] = event.type
        notification["sender"] = event.sender
        if event.type == "m.room.member":
            notification["user_is_target"] = event.state_key == pusher.user_id
        if event.content and not await self._events.get_redactions_of([event.event_id]):
            notification["content"] = thaw(event.content)
        notification.update(await self._room_names(event.room_id, event.sender))
        return {"notification": notification}

    async def _room_names(self, room_id: str, sender: str) -> dict[str, str]:
        """room_name, room_alias and sender_display_name, from the room's current state, where set."""
        ids = await self._rooms.current_state_ids(room_id, ("m.room.name", "m.room.canonical_alias"))
        member_id = await self._rooms.get_current_state_id(room_id, "m.room.member", sender)
        wanted = {
            "room_name": (ids.get(("m.room.name", "")), "name"),
            "room_alias": (ids.get(("m.room.canonical_alias", "")), "alias"),
            "sender_display_name": (member_id, "displayname"),
        }
        found = await self._events.get_events(event_id for event_id, _ in wanted.values() if event_id)
        names = {}
        for field, (event_id, key) in wanted.items():
            event = found.get(event_id) if event_id else None
            value = event.content.get(key) if event is not None else None
            if isinstance(value, str) and value:
                names[field] = value
        return names
