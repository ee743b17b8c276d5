"""Which room members an event notifies, by their push rules, computed before it is stored so the
actions go into the event's own transaction."""

from collections.abc import Mapping

from homeserver.core.auth.power_levels import PowerLevels
from homeserver.core.events import Event
from homeserver.core.push_rules import (
    CompiledRuleset,
    PushContext,
    compile_ruleset,
    default_ruleset,
    evaluate_for_users,
    notification,
    notification_levels,
)
from homeserver.core.room_versions import RoomVersion
from homeserver.storage.events import EventStore
from homeserver.storage.lru import SizedLru
from homeserver.storage.push import PushAction
from homeserver.storage.rooms import RoomStore
from homeserver.storage.state import StateKey

RULESET_CACHE_ENTRIES = 100_000


class PushActionsBuilder:
    def __init__(self, rooms: RoomStore, events: EventStore) -> None:
        self._rooms = rooms
        self._events = events
        # Users' compiled rulesets. Only the defaults exist until the push rules API lands, so entries
        # never go stale; that API will invalidate a user's entry when they change a rule.
        self._rulesets: SizedLru[str, CompiledRuleset] = SizedLru(RULESET_CACHE_ENTRIES, lambda _: 1)

    def _ruleset(self, user_id: str) -> CompiledRuleset:
        compiled = self._rulesets.get(user_id)
        if compiled is None:
            compiled = compile_ruleset(default_ruleset(user_id))
            self._rulesets.put(user_id, compiled)
        return compiled

    async def actions_for(
        self, room_version: RoomVersion, event: Event, auth_state: Mapping[StateKey, Event]
    ) -> list[PushAction]:
        """The push actions of `event` for the room's joined members (and an invitee), not its sender."""
        members = await self._rooms.member_event_ids(event.room_id, "join")
        recipients = dict(members)
        if event.type == "m.room.member" and event.membership == "invite" and event.state_key:
            recipients.setdefault(event.state_key, "")  # .m.rule.invite_for_me
        recipients.pop(event.sender, None)
        if not recipients:
            return []
        member_events = await self._events.get_events(i for i in recipients.values() if i)
        power = PowerLevels.from_state(room_version, auth_state)
        shared = PushContext(
            user_id=event.sender,
            member_count=len(members),
            sender_power_level=power.user_level(event.sender),
            notification_levels=notification_levels(power),
        )
        users = []
        for user_id, member_event_id in recipients.items():
            member = member_events.get(member_event_id)
            display_name = member.content.get("displayname") if member is not None else None
            context = PushContext(
                user_id=user_id,
                display_name=display_name if isinstance(display_name, str) else None,
                member_count=shared.member_count,
                sender_power_level=shared.sender_power_level,
                notification_levels=shared.notification_levels,
            )
            users.append((self._ruleset(user_id), context))
        actions = []
        for user_id, matched in evaluate_for_users(event, users).items():
            notify, highlight, _ = notification(matched)
            if notify or highlight:
                actions.append(PushAction(user_id, notify, highlight))
        return actions
