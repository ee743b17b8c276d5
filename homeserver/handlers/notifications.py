"""GET /notifications: the events a user was notified about, newest first, from their push actions.

A notification lasts as long as its push action: the pruner deletes an action once it is read (at or
below the room's read position) or older than the retention, so read notifications show (`read: true`)
only until its next run.

The pagination token is the stream ordering of the last notification of a page: a user has at most one
action per event, and each event one stream ordering, so "below the token" continues exactly.
"""

import re
from typing import Any

from homeserver.core.errors import MatrixError
from homeserver.handlers.room_reads import ClientEventSerializer
from homeserver.storage.events import EventStore
from homeserver.storage.push import NotificationRow, PushStore

_TOKEN = re.compile(r"\d{1,18}")


def actions(row: NotificationRow) -> list[Any]:
    """The actions the user was notified with, as push rules spell them (the stored notify/highlight/sound
    are what evaluating their rules gave)."""
    out: list[Any] = ["notify"] if row.notify else []
    if row.sound:
        out.append({"set_tweak": "sound", "value": row.sound})
    if row.highlight:
        out.append({"set_tweak": "highlight"})  # no value means true
    return out


class NotificationsHandler:
    def __init__(self, store: PushStore, events: EventStore, serializer: ClientEventSerializer) -> None:
        self._store = store
        self._events = events
        self._serializer = serializer

    async def page(self, user_id: str, from_token: str | None, limit: int, only_highlight: bool) -> dict[str, Any]:
        """One page of at most `limit` notifications, with `next_token` when there are more. 400
        M_INVALID_PARAM for a `from` that is not one of our tokens."""
        before = None
        if from_token is not None:
            if not _TOKEN.fullmatch(from_token):
                raise MatrixError(400, "M_INVALID_PARAM", f"Invalid from token {from_token!r}")
            before = int(from_token)
        rows = await self._store.notifications(user_id, before, limit + 1, only_highlight)
        more, rows = len(rows) > limit, rows[:limit]
        events = await self._events.get_events(row.event_id for row in rows)
        # An action whose event is gone (purged) is skipped, and the page comes back short.
        found = [(row, events[row.event_id]) for row in rows if row.event_id in events]
        serialized = await self._serializer.serialize([event for _, event in found])
        notifications = []
        for (row, event), client_event in zip(found, serialized, strict=True):
            client_event.pop("room_id", None)  # the notification names the room
            notifications.append(
                {
                    "actions": actions(row),
                    "event": client_event,
                    "read": row.read,
                    "room_id": row.room_id,
                    "ts": event.origin_server_ts,
                }
            )
        answer: dict[str, Any] = {"notifications": notifications}
        if more:
            answer["next_token"] = str(rows[-1].stream_ordering)
        return answer
