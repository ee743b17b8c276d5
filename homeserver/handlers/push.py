"""Which room members an event notifies, by their push rules, computed before it is stored so the
actions go into the event's own transaction."""

import json
from collections.abc import Iterable, Mapping

from homeserver.core.auth.power_levels import PowerLevels
from homeserver.core.events import Event
from homeserver.core.push_rules import (
    CompiledRuleset,
    PushContext,
    compile_ruleset,
    evaluate_for_users,
    notification,
    notification_levels,
)
from homeserver.core.room_versions import RoomVersion
from homeserver.handlers.push_rules import PushRulesHandler
from homeserver.storage.events import EventStore
from homeserver.storage.lru import SizedLru
from homeserver.storage.push import PushAction
from homeserver.storage.rooms import RoomStore
from homeserver.storage.state import StateKey

RULESET_CACHE_ENTRIES = 100_000


class PushActionsBuilder:
    def __init__(self, rooms: RoomStore, events: EventStore, rules: PushRulesHandler) -> None:
        self._rooms = rooms
        self._events = events
        self._rules = rules
        # Users' compiled rulesets; `forget` drops a user's when they change a rule.
        self._rulesets: SizedLru[str, tuple[CompiledRuleset, bool]] = SizedLru(RULESET_CACHE_ENTRIES, lambda _: 1)
        self._generation = 0  # bumped by every `forget`: rules read before one are not cached

    def forget(self, user_id: str) -> None:
        """The user changed their push rules."""
        self._rulesets.pop(user_id)
        self._generation += 1

    async def _compiled(self, user_ids: Iterable[str]) -> dict[str, tuple[CompiledRuleset, bool]]:
        """Each user's compiled rules, and whether any reads their display name (only then is their
        member event loaded: the default rules never do, so a big room costs no member reads)."""
        found, missing = {}, []
        for user_id in user_ids:
            entry = self._rulesets.get(user_id)
            if entry is None:
                missing.append(user_id)
            else:
                found[user_id] = entry
        if missing:
            generation = self._generation
            for user_id, rules in (await self._rules.rulesets(missing)).items():
                entry = found[user_id] = (compile_ruleset(rules), '"contains_display_name"' in json.dumps(rules))
                if generation == self._generation:  # else a rule changed while these were read
                    self._rulesets.put(user_id, entry)
        return found

    async def actions_for(
        self, room_version: RoomVersion, event: Event, auth_state: Mapping[StateKey, Event]
    ) -> list[PushAction]:
        """The push actions of `event` for the room's joined members (and an invitee), not its sender."""
        if event.type == "m.room.member":
            # The server defaults silence membership changes (.m.rule.member_event) but the invitee's
            # (.m.rule.invite_for_me), so only the invitee and the members whose rules differ from the
            # defaults are asked: while nobody has changed a rule, joins into a big room cost no member list.
            recipients, members_count = {}, None
            customised = await self._rules.customised_users()
            if customised:
                members = await self._rooms.member_event_ids(event.room_id, "join")
                recipients = {user_id: e for user_id, e in members.items() if user_id in customised}
                members_count = len(members)
            if event.membership == "invite" and event.state_key:
                recipients.setdefault(event.state_key, "")
        else:
            members = await self._rooms.member_event_ids(event.room_id, "join")
            recipients, members_count = dict(members), len(members)
        recipients.pop(event.sender, None)
        if not recipients:
            return []
        rulesets = await self._compiled(recipients)
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
