"""Which room members an event notifies, by their push rules, computed before it is stored so the
actions go into the event's own transaction."""

import json
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
        self._rulesets: SizedLru[str, tuple[CompiledRuleset, bool]] = SizedLru(RULESET_CACHE_ENTRIES, lambda _: 1)

    def _ruleset(self, user_id: str) -> tuple[CompiledRuleset, bool]:
        """The user's compiled rules, and whether any reads their display name (only then is their
        member event loaded: the default rules never do, so a big room costs no member reads)."""
        found = self._rulesets.get(user_id)
        if found is None:
            rules = default_ruleset(user_id)
            found = (compile_ruleset(rules), '"contains_display_name"' in json.dumps(rules))
            self._rulesets.put(user_id, found)
        return found

    async def actions_for(
        self, room_version: RoomVersion, event: Event, auth_state: Mapping[StateKey, Event]
    ) -> list[PushAction]:
        """The push actions of `event` for the room's joined members (and an invitee), not its sender."""
        if event.type == "m.room.member":
            # Every member's rules end in .m.rule.member_event (dont_notify) for membership changes but
            # the invitee's .m.rule.invite_for_me, so only the target is asked; joins into a big room
            # so cost no member list. Users' own rules (the push rules API, not built yet) must undo this.
            recipients = {event.state_key: ""} if event.membership == "invite" and event.state_key else {}
            members_count = None
        else:
            members = await self._rooms.member_event_ids(event.room_id, "join")
            recipients, members_count = dict(members), len(members)
        recipients.pop(event.sender, None)
        if not recipients:
            return []
        rulesets = {user_id: self._ruleset(user_id) for user_id in recipients}
        member_events = await self._events.get_events(
            event_id for user_id, event_id in recipients.items() if event_id and rulesets[user_id][1]
        )
        power = PowerLevels.from_state(room_version, auth_state)
        shared = PushContext(
            user_id=event.sender,
            member_count=members_count,
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
            users.append((rulesets[user_id][0], context))
        actions = []
        for user_id, matched in evaluate_for_users(event, users).items():
            notify, highlight, sound = notification(matched)
            if notify:
                actions.append(PushAction(user_id, notify, highlight, sound))
        return actions
