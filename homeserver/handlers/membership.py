"""Joining, leaving, inviting, knocking and moderating: each a member event under the room's rules."""

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from homeserver.core.errors import MatrixError
from homeserver.core.event_signing import server_of
from homeserver.core.ids import parse_user_id
from homeserver.core.requester import Requester
from homeserver.handlers.federation.membership import RemoteMembership
from homeserver.handlers.profiles import ProfileHandler
from homeserver.handlers.room_events import RoomEventSender
from homeserver.storage.accounts import AccountStore
from homeserver.storage.events import EventStore, PersistedEvent
from homeserver.storage.rooms import RoomStore


class MembershipHandler:
    def __init__(
        self,
        sender: RoomEventSender,
        rooms: RoomStore,
        events: EventStore,
        accounts: AccountStore,
        profiles: ProfileHandler,
    ) -> None:
        self._sender = sender
        self._rooms = rooms
        self._events = events
        self._accounts = accounts
        self._profiles = profiles
        # Refuses rooms an admin blocked or is deleting (set by the app: PurgeHandler.check_joinable).
        self.check_joinable: Callable[[str], Awaitable[None]] | None = None
        # Joins, leaves and invites through other servers (set by the app when it federates).
        self.remote: RemoteMembership | None = None
        # Another server's alias -> {"room_id", "servers"} (set by the app: DirectoryHandler.resolve_alias).
        self.remote_alias: Callable[[str], Awaitable[dict[str, Any]]] | None = None

    async def resolve_room(self, room_id_or_alias: str) -> str:
        return (await self._resolve_with_servers(room_id_or_alias))[0]

    async def _resolve_with_servers(self, room_id_or_alias: str) -> tuple[str, list[str]]:
        """The room id, and the servers its alias's server says are in it (none for a room id)."""
        if room_id_or_alias.startswith("#"):
            found = await self._rooms.get_alias(room_id_or_alias)
            if found is None:
                if not room_id_or_alias.endswith(":" + self._sender.server_name):
                    if self.remote_alias is None:
                        raise MatrixError(404, "M_UNRECOGNIZED", "Joining other servers' rooms needs federation")
                    answer = await self.remote_alias(room_id_or_alias)
                    return answer["room_id"], [s for s in answer.get("servers", ()) if isinstance(s, str)]
                raise MatrixError(404, "M_NOT_FOUND", "Room alias not found")
            return found[0], []
        if not room_id_or_alias.startswith("!"):
            raise MatrixError(400, "M_INVALID_PARAM", "Expected a room id (!...) or alias (#...)")
        return room_id_or_alias, []

    async def join(
        self, requester: Requester, room_id_or_alias: str, reason: str | None = None, via: Sequence[str] = ()
    ) -> str:
        room_id, servers = await self._resolve_with_servers(room_id_or_alias)
        await self._joinable(room_id)
        content: dict[str, Any] = {"membership": "join", **(await self._profiles.member_profile(requester.user_id))}
        if reason:
            content["reason"] = reason
        if self.remote is not None and await self._rooms.get_room(room_id) is None:
            # A room we do not hold: ask the servers we were told of, the inviter's, the room id's.
            candidates = [*via, *servers, *await self._pending_servers(room_id, requester.user_id)]
            candidates.append(server_of(room_id) or "")
            await self.remote.join(requester.user_id, room_id, candidates, content)
            await self._rooms.unforget(requester.user_id, room_id)
            return room_id
        await self._sender.get_room(room_id)  # 404 for a room we do not hold
        authoriser = await self.restricted_join_authoriser(room_id, requester.user_id)
        if authoriser:
            content["join_authorised_via_users_server"] = authoriser
        await self._sender.send(room_id, requester.user_id, "m.room.member", content, requester.user_id)
        await self._rooms.unforget(requester.user_id, room_id)
        return room_id

    async def restricted_join_authoriser(self, room_id: str, user_id: str) -> str | None:
        """For a restricted room the user may join through membership of an allowed room, a local
        member who can invite vouches for the join (the spec's join_authorised_via_users_server)."""
        join_rules_id = await self._rooms.get_current_state_id(room_id, "m.room.join_rules", "")
        join_rules = await self._events.get_event(join_rules_id) if join_rules_id else None
        if join_rules is None or join_rules.content.get("join_rule") not in ("restricted", "knock_restricted"):
            return None
        membership = await self._rooms.get_membership(room_id, user_id)
        if membership and membership[0] in ("join", "invite"):
            return None  # already allowed without a vouch
        allowed = [
            entry.get("room_id")
            for entry in join_rules.content.get("allow", ())
            if isinstance(entry, Mapping) and entry.get("type") == "m.room_membership"  # events are frozen
        ]
        if not await self._rooms.shares_room_with_membership(user_id, [r for r in allowed if isinstance(r, str)]):
            return None  # the auth rules will refuse the join with their reason
        power_id = await self._rooms.get_current_state_id(room_id, "m.room.power_levels", "")
        power = (await self._events.get_event(power_id)).content if power_id else {}
        invite_level = power.get("invite", 0)
        members = await self._rooms.member_event_ids(room_id, "join")
        room, _ = await self._sender.get_room(room_id)
        for member in sorted(members):
            if not member.endswith(":" + self._sender.server_name):
                continue
            level = power.get("users", {}).get(member, power.get("users_default", 0))
            if member == room.creator or level >= invite_level:
                return member
        return None

    async def leave(self, requester: Requester, room_id: str, reason: str | None = None) -> None:
        current = await self._rooms.get_membership(room_id, requester.user_id)
        pending = current is not None and current[0] in ("invite", "knock")
        if self.remote is not None and pending and await self._rooms.get_room(room_id) is None:
            # An invite to (or knock on) a room we do not hold: rejected (rescinded) through its server.
            content = {"reason": reason} if reason else {}
            servers = [*await self._pending_servers(room_id, requester.user_id), server_of(room_id) or ""]
            await self.remote.leave(requester.user_id, room_id, servers, content)
            return
        await self._sender.get_room(room_id)
        if current is None or current[0] in ("leave", "ban"):
            raise MatrixError(403, "M_FORBIDDEN", "You are not in this room")
        await self._set_membership(requester.user_id, room_id, requester.user_id, "leave", reason)

    async def invite(self, requester: Requester, room_id: str, user_id: str, reason: str | None = None) -> None:
        remote = self.remote if _require_user_id(user_id) != self._sender.server_name else None
        if remote is None:
            await self._require_local_user(user_id)
        await self._joinable(room_id)
        current = await self._rooms.get_membership(room_id, user_id)
        if current and current[0] == "join":
            raise MatrixError(403, "M_FORBIDDEN", f"{user_id} is already in the room")
        if current and current[0] == "ban":
            raise MatrixError(403, "M_FORBIDDEN", f"{user_id} is banned from the room")
        await self._sender.get_room(room_id)
        content: dict[str, Any] = {"membership": "invite"}
        if reason:
            content["reason"] = reason
        countersign = remote.countersign_invite if remote is not None else None
        await self._sender.send(room_id, requester.user_id, "m.room.member", content, user_id, countersign=countersign)

    async def _pending_servers(self, room_id: str, user_id: str) -> list[str]:
        """The server that invited the user to (or took their knock on) a room we do not hold, if any."""
        pending = await self._events.pending_remote_membership(room_id, user_id)
        return [pending.server_name] if pending is not None else []

    async def kick(self, requester: Requester, room_id: str, user_id: str, reason: str | None = None) -> None:
        _require_user_id(user_id)
        current = await self._rooms.get_membership(room_id, user_id)
        if current is None or current[0] not in ("join", "invite", "knock"):
            raise MatrixError(403, "M_FORBIDDEN", f"{user_id} is not in the room")
        await self._set_membership(requester.user_id, room_id, user_id, "leave", reason)

    async def ban(self, requester: Requester, room_id: str, user_id: str, reason: str | None = None) -> None:
        _require_user_id(user_id)
        await self._set_membership(requester.user_id, room_id, user_id, "ban", reason)

    async def unban(self, requester: Requester, room_id: str, user_id: str, reason: str | None = None) -> None:
        _require_user_id(user_id)
        current = await self._rooms.get_membership(room_id, user_id)
        if current is None or current[0] != "ban":
            raise MatrixError(403, "M_FORBIDDEN", f"{user_id} is not banned")
        await self._set_membership(requester.user_id, room_id, user_id, "leave", reason)

    async def knock(
        self, requester: Requester, room_id_or_alias: str, reason: str | None = None, via: Sequence[str] = ()
    ) -> str:
        room_id, servers = await self._resolve_with_servers(room_id_or_alias)
        await self._joinable(room_id)
        content: dict[str, Any] = {"membership": "knock", **(await self._profiles.member_profile(requester.user_id))}
        if reason:
            content["reason"] = reason
        if self.remote is not None and await self._rooms.get_room(room_id) is None:
            await self.remote.knock(requester.user_id, room_id, [*via, *servers, server_of(room_id) or ""], content)
            return room_id
        _, room_version = await self._sender.get_room(room_id)
        if not room_version.knock_join_rule:
            raise MatrixError(403, "M_FORBIDDEN", f"Room version {room_version.identifier} does not allow knocking")
        await self._sender.send(room_id, requester.user_id, "m.room.member", content, requester.user_id)
        return room_id

    async def forget(self, requester: Requester, room_id: str) -> None:
        current = await self._rooms.get_membership(room_id, requester.user_id)
        if current is None:
            raise MatrixError(404, "M_NOT_FOUND", "You have never been in this room")
        if current[0] in ("join", "invite", "knock"):
            raise MatrixError(400, "M_UNKNOWN", "Leave the room before forgetting it")
        await self._rooms.forget(requester.user_id, room_id)

    async def update_profile_in_rooms(self, user_id: str) -> None:
        """A profile change rewrites the user's member event in each room they are joined to."""
        profile = await self._profiles.member_profile(user_id)
        for room_id in await self._rooms.rooms_for_user(user_id, ("join",)):
            await self._sender.send(room_id, user_id, "m.room.member", {"membership": "join", **profile}, user_id)

    async def _set_membership(
        self, sender: str, room_id: str, target: str, membership: str, reason: str | None
    ) -> PersistedEvent:
        await self._sender.get_room(room_id)
        content: dict[str, Any] = {"membership": membership}
        if reason:
            content["reason"] = reason
        return await self._sender.send(room_id, sender, "m.room.member", content, target)

    async def _joinable(self, room_id: str) -> None:
        if self.check_joinable is not None:
            await self.check_joinable(room_id)

    async def _require_local_user(self, user_id: str) -> None:
        server = _require_user_id(user_id)
        if server != self._sender.server_name:
            raise MatrixError(404, "M_UNRECOGNIZED", "Inviting users of other servers needs federation, not built yet")
        if await self._accounts.get_user(user_id) is None:
            raise MatrixError(404, "M_NOT_FOUND", f"Unknown user {user_id}")


def _require_user_id(user_id: str) -> str:
    """The server of a target user id; 400 M_INVALID_PARAM if it is not one (the auth rules do not
    check that a member event's state key is a user id)."""
    try:
        return parse_user_id(user_id)[1]
    except ValueError:
        raise MatrixError(400, "M_INVALID_PARAM", f"Invalid user id: {user_id!r}") from None
