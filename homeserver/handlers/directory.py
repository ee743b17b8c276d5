"""Room aliases and the published room directory (/publicRooms).

Aliases are created on this server only; one of another server is resolved by asking that server
(GET /_matrix/federation/v1/query/directory). Who may change a
room's aliases and its directory entry follows Synapse: the alias's creator, a server admin, or a
member with the power to send m.room.canonical_alias.

The directory is served to other servers too (/_matrix/federation/v1/publicRooms), and a client's
/publicRooms?server=OTHER is answered by asking that server; its errors are mapped as for aliases.
"""

import logging
from bisect import bisect_left, bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from homeserver.core.auth.power_levels import PowerLevels
from homeserver.core.errors import MatrixError
from homeserver.core.frozen_json import thaw
from homeserver.core.ids import is_valid_server_name
from homeserver.core.requester import Requester
from homeserver.core.state_content import content_string, plain_topic
from homeserver.handlers.federation.queries import QUERY_TIMEOUT_S, RemoteQueries, remote_error
from homeserver.handlers.room_events import RoomEventSender
from homeserver.http.federation_client import FederationClient, HttpResponseError, RequestSendFailed
from homeserver.storage.events import EventStore
from homeserver.storage.rooms import AliasExists, RoomStore

logger = logging.getLogger(__name__)

MAX_ALIAS_BYTES = 255
CANONICAL_ALIAS = "m.room.canonical_alias"
# The state a directory entry is made of.
_SUMMARY_TYPES = (
    "m.room.create",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    CANONICAL_ALIAS,
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
)
# Synapse lists a published room only if people can get in or read it without an invite.
_LISTED_JOIN_RULES = ("public", "knock", "knock_restricted")
MAX_PUBLIC_ROOMS_LIMIT = 500
FEDERATION_PUBLIC_ROOMS = "/_matrix/federation/v1/publicRooms"


def parse_alias(alias: str) -> tuple[str, str]:
    """(localpart, server) of `#localpart:server`; 400 M_INVALID_PARAM if it is not one."""
    localpart, sep, server = alias[1:].partition(":")
    if (
        not alias.startswith("#")
        or not sep
        or not localpart
        or len(alias.encode()) > MAX_ALIAS_BYTES
        or not is_valid_server_name(server)
    ):
        raise MatrixError(400, "M_INVALID_PARAM", f"Invalid room alias {alias!r}")
    return localpart, server


@dataclass(frozen=True)
class PublicRoomsQuery:
    limit: int | None = None
    since: str | None = None
    search_term: str | None = None
    room_types: list[str | None] | None = None
    third_party_instance_id: str | None = None


def _sort_key(entry: Mapping[str, Any]) -> tuple[int, str]:
    """Largest rooms first, then by room id: a stable order that pagination tokens point into."""
    return (-entry["num_joined_members"], entry["room_id"])


def _token(forward: bool, key: tuple[int, str]) -> str:
    return f"{'f' if forward else 'b'}{-key[0]}_{key[1]}"


def _parse_token(token: str) -> tuple[bool, tuple[int, str]]:
    """(forward, sort key) of a `since` token: `f`/`b`, the member count, `_`, the room id."""
    count, sep, room_id = token[1:].partition("_")
    if token[:1] not in ("f", "b") or not sep or not (count.isascii() and count.isdigit()) or not room_id:
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid since token")
    return token[0] == "f", (-int(count), room_id)


class DirectoryHandler:
    def __init__(self, server_name: str, sender: RoomEventSender, rooms: RoomStore, events: EventStore) -> None:
        self._server_name = server_name
        self._sender = sender
        self._rooms = rooms
        self._events = events
        self.remote: RemoteQueries | None = None  # set by the app: other servers' aliases over federation
        self.federation: FederationClient | None = None  # set by the app: other servers' directories

    # -- aliases ------------------------------------------------------------------------------

    async def create_alias(self, requester: Requester, alias: str, room_id: str) -> None:
        _, server = parse_alias(alias)
        if server != self._server_name:
            raise MatrixError(400, "M_INVALID_PARAM", f"Room aliases must be on this server ({self._server_name})")
        if any(c.isspace() for c in alias):
            raise MatrixError(400, "M_INVALID_PARAM", "Room aliases may not contain whitespace")
        await self._sender.get_room(room_id)  # 404 M_NOT_FOUND
        membership = await self._rooms.get_membership(room_id, requester.user_id)
        if not requester.is_admin and (membership is None or membership[0] != "join"):
            raise MatrixError(403, "M_FORBIDDEN", "You must be in the room to create an alias for it")
        try:
            await self._rooms.create_alias(alias, room_id, requester.user_id)
        except AliasExists:
            raise MatrixError(409, "M_UNKNOWN", f"Room alias {alias} already exists.") from None

    async def resolve_alias(self, alias: str) -> dict[str, Any]:
        _, server = parse_alias(alias)
        if server != self._server_name and self.remote is not None:
            return await self.remote.room_alias(alias, server)
        found = await self._rooms.get_alias(alias)
        if found is None:
            raise MatrixError(404, "M_NOT_FOUND", f"Room alias {alias} not found.")
        return {"room_id": found[0], "servers": [self._server_name]}

    async def delete_alias(self, requester: Requester, alias: str) -> None:
        parse_alias(alias)
        found = await self._rooms.get_alias(alias)
        if found is None:
            raise MatrixError(404, "M_NOT_FOUND", f"Room alias {alias} not found.")
        room_id, creator = found
        if creator != requester.user_id and not await self.can_change_room_list(requester, room_id):
            raise MatrixError(403, "M_FORBIDDEN", "You don't have permission to delete the alias.")
        await self._rooms.delete_alias(alias)
        await self._drop_from_canonical_alias(requester, room_id, alias)

    async def _drop_from_canonical_alias(self, requester: Requester, room_id: str, alias: str) -> None:
        """A deleted alias leaves the room's m.room.canonical_alias, if the requester may change it.
        The spec asks that the deletion succeed even when they may not."""
        event_id = await self._rooms.get_current_state_id(room_id, CANONICAL_ALIAS, "")
        event = await self._events.get_event(event_id) if event_id else None
        if event is None:
            return
        alt = event.content.get("alt_aliases")
        alt_aliases = list(alt) if isinstance(alt, list | tuple) else []
        if event.content.get("alias") != alias and alias not in alt_aliases:
            return
        content = thaw(event.content)
        if content.get("alias") == alias:
            del content["alias"]
        if alias in alt_aliases:
            content["alt_aliases"] = [a for a in alt_aliases if a != alias]
        try:
            await self._sender.send(room_id, requester.user_id, CANONICAL_ALIAS, content, "")
        except MatrixError as e:
            logger.info("alias %s deleted, but %s could not update %s: %s", alias, requester.user_id, room_id, e.msg)

    async def local_aliases(self, requester: Requester, room_id: str) -> list[str]:
        """The room's aliases on this server, for its members (anyone if the room is world readable)."""
        membership = await self._rooms.get_membership(room_id, requester.user_id)
        if not requester.is_admin and (membership is None or membership[0] != "join"):
            visibility = await self._state_content(room_id, "m.room.history_visibility")
            if visibility.get("history_visibility") != "world_readable":
                raise MatrixError(403, "M_FORBIDDEN", "You are not a member of the room.")
        return await self._rooms.aliases_of_room(room_id)

    # -- the directory ------------------------------------------------------------------------

    async def get_visibility(self, room_id: str) -> str:
        room = await self._rooms.get_room(room_id)
        if room is None:
            raise MatrixError(404, "M_NOT_FOUND", "Room not found")
        return "public" if room.is_public else "private"

    async def set_visibility(self, requester: Requester, room_id: str, visibility: str) -> None:
        if visibility not in ("public", "private"):
            raise MatrixError(400, "M_INVALID_PARAM", "visibility must be public or private")
        if await self._rooms.get_room(room_id) is None:
            raise MatrixError(404, "M_NOT_FOUND", "Room not found")
        if not await self.can_change_room_list(requester, room_id):
            raise MatrixError(403, "M_FORBIDDEN", "You don't have permission to change the room's directory entry")
        await self._rooms.set_public(room_id, visibility == "public")

    async def can_change_room_list(self, requester: Requester, room_id: str) -> bool:
        """A server admin, or a member who may send m.room.canonical_alias."""
        if requester.is_admin:
            return True
        membership = await self._rooms.get_membership(room_id, requester.user_id)
        if membership is None or membership[0] != "join":
            return False
        _, room_version = await self._sender.get_room(room_id)
        ids = await self._rooms.current_state_ids(room_id, ("m.room.power_levels", "m.room.create"))
        events = await self._events.get_events(ids.values())
        state = {key: events[event_id] for key, event_id in ids.items() if event_id in events}
        power = PowerLevels.from_state(room_version, state)
        return power.user_level(requester.user_id) >= power.send_level(CANONICAL_ALIAS, True)

    async def public_rooms(self, query: PublicRoomsQuery, server: str | None = None) -> dict[str, Any]:
        if server is not None and server != self._server_name:
            return await self._remote_public_rooms(server, query)
        if query.third_party_instance_id is not None:
            return {"chunk": [], "total_room_count_estimate": 0}  # no application services, so no networks
        entries = sorted(await self._listed_rooms(query), key=_sort_key)
        keys = [_sort_key(e) for e in entries]
        limit = min(query.limit or MAX_PUBLIC_ROOMS_LIMIT, MAX_PUBLIC_ROOMS_LIMIT)
        if query.since is None:
            start = 0
            end = min(limit, len(entries))
        else:
            forward, key = _parse_token(query.since)
            if forward:
                start = bisect_right(keys, key)
                end = min(start + limit, len(entries))
            else:
                end = bisect_left(keys, key)
                start = max(0, end - limit)
        page = entries[start:end]
        answer: dict[str, Any] = {"chunk": page, "total_room_count_estimate": len(entries)}
        if page and end < len(entries):
            answer["next_batch"] = _token(True, keys[end - 1])
        if page and start > 0:
            answer["prev_batch"] = _token(False, keys[start])
        return answer

    async def _remote_public_rooms(self, server: str, query: PublicRoomsQuery) -> dict[str, Any]:
        """Another server's directory, as it answers: GET without a filter, POST with one (as Synapse asks)."""
        if not is_valid_server_name(server):
            raise MatrixError(400, "M_INVALID_PARAM", f"Invalid server name {server!r}")
        if self.federation is None:
            raise MatrixError(404, "M_NOT_FOUND", "This server does not federate")
        try:
            if query.search_term is None and query.room_types is None:
                args = {"since": query.since, "third_party_instance_id": query.third_party_instance_id}
                args = {k: v for k, v in args.items() if v is not None}
                if query.limit:
                    args["limit"] = str(query.limit)
                answer = await self.federation.get_json(
                    server, FEDERATION_PUBLIC_ROOMS, args, timeout_s=QUERY_TIMEOUT_S
                )
            else:
                search: dict[str, Any] = {"generic_search_term": query.search_term or ""}
                if query.room_types is not None:
                    search["room_types"] = query.room_types
                body = {"filter": search, "limit": query.limit, "since": query.since}
                body["third_party_instance_id"] = query.third_party_instance_id
                body = {k: v for k, v in body.items() if v is not None}
                answer = await self.federation.post_json(
                    server, FEDERATION_PUBLIC_ROOMS, body, timeout_s=QUERY_TIMEOUT_S
                )
        except (HttpResponseError, RequestSendFailed) as e:
            raise remote_error(e, server, "room list") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("chunk"), list):
            raise MatrixError(502, "M_UNKNOWN", f"{server} gave an invalid room list")
        return answer

    async def _listed_rooms(self, query: PublicRoomsQuery) -> list[dict[str, Any]]:
        published = [(r, n) for r, n in await self._rooms.public_rooms_with_member_counts() if n > 0]
        state_ids = await self._rooms.room_state_ids_of_rooms([r for r, _ in published], _SUMMARY_TYPES)
        events = await self._events.get_events(i for ids in state_ids.values() for i in ids.values())
        term = (query.search_term or "").casefold()
        entries = []
        for room_id, joined in published:
            state = {t: events[i].content for t, i in state_ids[room_id].items() if i in events}
            entry = _directory_entry(room_id, joined, state)
            if entry is None:
                continue
            if query.room_types is not None and entry.get("room_type") not in query.room_types:
                continue
            if term and not any(
                term in entry.get(field, "").casefold() for field in ("name", "topic", "canonical_alias")
            ):
                continue
            entries.append(entry)
        return entries

    async def _state_content(self, room_id: str, event_type: str) -> Mapping[str, Any]:
        event_id = await self._rooms.get_current_state_id(room_id, event_type, "")
        event = await self._events.get_event(event_id) if event_id else None
        return event.content if event is not None else {}


def _directory_entry(room_id: str, joined: int, state: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
    """The PublishedRoomsChunk entry of a room, or None if the room should not be listed."""
    join_rule = content_string(state.get("m.room.join_rules"), "join_rule")
    history = content_string(state.get("m.room.history_visibility"), "history_visibility")
    if join_rule not in _LISTED_JOIN_RULES and history != "world_readable":
        return None
    entry: dict[str, Any] = {
        "room_id": room_id,
        "num_joined_members": joined,
        "world_readable": history == "world_readable",
        "guest_can_join": content_string(state.get("m.room.guest_access"), "guest_access") == "can_join",
    }
    optional = {
        "name": content_string(state.get("m.room.name"), "name"),
        "topic": plain_topic(state.get("m.room.topic")),
        "canonical_alias": content_string(state.get(CANONICAL_ALIAS), "alias"),
        "avatar_url": content_string(state.get("m.room.avatar"), "url"),
        "join_rule": join_rule,
        "room_type": content_string(state.get("m.room.create"), "type"),
    }
    entry.update({k: v for k, v in optional.items() if v is not None})
    return entry
