"""Rooms and who is in them now, from the current_state table; aliases; forgotten rooms."""

import time
from dataclasses import dataclass

from homeserver.storage.database import Database, Txn


@dataclass(frozen=True)
class RoomRecord:
    room_id: str
    room_version: str
    creator: str
    is_public: bool


class AliasExists(Exception):
    pass


class RoomStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_room(self, room_id: str) -> RoomRecord | None:
        row = await self._db.run(
            "rooms.get",
            lambda txn: txn.execute(
                "SELECT room_id, room_version, creator, is_public FROM rooms WHERE room_id = ?", (room_id,)
            ).fetchone(),
            readonly=True,
        )
        return RoomRecord(row[0], row[1], row[2], bool(row[3])) if row else None

    async def set_public(self, room_id: str, public: bool) -> None:
        await self._db.run(
            "rooms.set_public",
            lambda txn: txn.execute("UPDATE rooms SET is_public = ? WHERE room_id = ?", (int(public), room_id)),
        )

    async def get_current_state_id(self, room_id: str, event_type: str, state_key: str) -> str | None:
        row = await self._db.run(
            "rooms.current_state_id",
            lambda txn: txn.execute(
                "SELECT event_id FROM current_state WHERE room_id = ? AND type = ? AND state_key = ?",
                (room_id, event_type, state_key),
            ).fetchone(),
            readonly=True,
        )
        return row[0] if row else None

    async def get_membership(self, room_id: str, user_id: str) -> tuple[str, str] | None:
        """The user's current (membership, member event id) in the room, or None."""
        row = await self._db.run(
            "rooms.membership",
            lambda txn: txn.execute(
                "SELECT membership, event_id FROM current_state"
                " WHERE room_id = ? AND type = 'm.room.member' AND state_key = ?",
                (room_id, user_id),
            ).fetchone(),
            readonly=True,
        )
        return (row[0], row[1]) if row else None

    async def rooms_for_user(self, user_id: str, memberships: tuple[str, ...] = ("join",)) -> list[str]:
        marks = ",".join("?" * len(memberships))
        rows = await self._db.run(
            "rooms.rooms_for_user",
            lambda txn: txn.execute(
                "SELECT room_id FROM current_state WHERE state_key = ? AND type = 'm.room.member'"
                f" AND membership IN ({marks}) ORDER BY room_id",
                (user_id, *memberships),
            ).fetchall(),
            readonly=True,
        )
        return [r[0] for r in rows]

    async def member_event_ids(self, room_id: str, membership: str | None = "join") -> dict[str, str]:
        """user id -> current member event id, for members with `membership` (None: everyone)."""
        sql = "SELECT state_key, event_id FROM current_state WHERE room_id = ? AND type = 'm.room.member'"
        args: tuple = (room_id,)
        if membership is not None:
            sql += " AND membership = ?"
            args += (membership,)
        rows = await self._db.run(
            "rooms.member_event_ids", lambda txn: txn.execute(sql, args).fetchall(), readonly=True
        )
        return dict(rows)

    async def shares_room_with_membership(self, user_id: str, room_ids: list[str]) -> bool:
        """Whether the user is joined to any of `room_ids` (restricted join rules)."""
        if not room_ids:
            return False
        marks = ",".join("?" * len(room_ids))
        row = await self._db.run(
            "rooms.joined_any",
            lambda txn: txn.execute(
                f"SELECT 1 FROM current_state WHERE room_id IN ({marks}) AND type = 'm.room.member'"
                " AND state_key = ? AND membership = 'join'",
                (*room_ids, user_id),
            ).fetchone(),
            readonly=True,
        )
        return row is not None

    async def public_room_ids(self) -> list[str]:
        rows = await self._db.run(
            "rooms.public",
            lambda txn: txn.execute("SELECT room_id FROM rooms WHERE is_public = 1 ORDER BY room_id").fetchall(),
            readonly=True,
        )
        return [r[0] for r in rows]

    async def joined_member_counts(self, room_ids: list[str]) -> dict[str, int]:
        if not room_ids:
            return {}
        marks = ",".join("?" * len(room_ids))
        rows = await self._db.run(
            "rooms.joined_counts",
            lambda txn: txn.execute(
                f"SELECT room_id, count(*) FROM current_state WHERE room_id IN ({marks})"
                " AND type = 'm.room.member' AND membership = 'join' GROUP BY room_id",
                room_ids,
            ).fetchall(),
            readonly=True,
        )
        counts = dict.fromkeys(room_ids, 0)
        counts.update(dict(rows))
        return counts

    async def current_state_ids(self, room_id: str, types: tuple[str, ...]) -> dict[tuple[str, str], str]:
        marks = ",".join("?" * len(types))
        rows = await self._db.run(
            "rooms.current_state_of_types",
            lambda txn: txn.execute(
                f"SELECT type, state_key, event_id FROM current_state WHERE room_id = ? AND type IN ({marks})",
                (room_id, *types),
            ).fetchall(),
            readonly=True,
        )
        return {(t, k): e for t, k, e in rows}

    # -- forgetting ---------------------------------------------------------------------------

    async def forget(self, user_id: str, room_id: str) -> None:
        await self._db.run("rooms.forget", self._forget_txn, user_id, room_id)

    def _forget_txn(self, txn: Txn, user_id: str, room_id: str) -> None:
        if not txn.execute(
            "SELECT 1 FROM forgotten_rooms WHERE user_id = ? AND room_id = ?", (user_id, room_id)
        ).fetchone():
            txn.execute("INSERT INTO forgotten_rooms (user_id, room_id) VALUES (?, ?)", (user_id, room_id))

    async def unforget(self, user_id: str, room_id: str) -> None:
        await self._db.run(
            "rooms.unforget",
            lambda txn: txn.execute(
                "DELETE FROM forgotten_rooms WHERE user_id = ? AND room_id = ?", (user_id, room_id)
            ),
        )

    async def is_forgotten(self, user_id: str, room_id: str) -> bool:
        row = await self._db.run(
            "rooms.is_forgotten",
            lambda txn: txn.execute(
                "SELECT 1 FROM forgotten_rooms WHERE user_id = ? AND room_id = ?", (user_id, room_id)
            ).fetchone(),
            readonly=True,
        )
        return row is not None

    # -- aliases ------------------------------------------------------------------------------

    async def create_alias(self, alias: str, room_id: str, creator: str) -> None:
        """Raises AliasExists if the alias is taken."""
        await self._db.run("rooms.create_alias", self._create_alias_txn, alias, room_id, creator)

    def _create_alias_txn(self, txn: Txn, alias: str, room_id: str, creator: str) -> None:
        if txn.execute("SELECT 1 FROM room_aliases WHERE room_alias = ?", (alias,)).fetchone():
            raise AliasExists(alias)
        txn.execute(
            "INSERT INTO room_aliases (room_alias, room_id, creator, created_ts) VALUES (?, ?, ?, ?)",
            (alias, room_id, creator, int(time.time() * 1000)),
        )

    async def get_alias(self, alias: str) -> tuple[str, str] | None:
        """(room id, creator) of an alias."""
        row = await self._db.run(
            "rooms.get_alias",
            lambda txn: txn.execute(
                "SELECT room_id, creator FROM room_aliases WHERE room_alias = ?", (alias,)
            ).fetchone(),
            readonly=True,
        )
        return (row[0], row[1]) if row else None

    async def delete_alias(self, alias: str) -> None:
        await self._db.run(
            "rooms.delete_alias", lambda txn: txn.execute("DELETE FROM room_aliases WHERE room_alias = ?", (alias,))
        )

    async def aliases_of_room(self, room_id: str) -> list[str]:
        rows = await self._db.run(
            "rooms.aliases_of_room",
            lambda txn: txn.execute(
                "SELECT room_alias FROM room_aliases WHERE room_id = ? ORDER BY room_alias", (room_id,)
            ).fetchall(),
            readonly=True,
        )
        return [r[0] for r in rows]

    # -- the published room directory ---------------------------------------------------------

    async def public_rooms_with_member_counts(self) -> list[tuple[str, int]]:
        """(room id, joined members) of every room published in the directory."""
        rows = await self._db.run(
            "rooms.public_with_counts",
            lambda txn: txn.execute(
                "SELECT r.room_id,"
                " (SELECT count(*) FROM current_state c WHERE c.room_id = r.room_id"
                "  AND c.type = 'm.room.member' AND c.membership = 'join')"
                " FROM rooms r WHERE r.is_public = 1 ORDER BY r.room_id"
            ).fetchall(),
            readonly=True,
        )
        return [(r[0], int(r[1])) for r in rows]

    async def room_state_ids_of_rooms(self, room_ids: list[str], types: tuple[str, ...]) -> dict[str, dict[str, str]]:
        """room id -> {type: event id} of the current room-wide (empty state key) state of these types."""
        return await self._db.run("rooms.state_of_rooms", self._state_of_rooms_txn, room_ids, types, readonly=True)

    def _state_of_rooms_txn(self, txn: Txn, room_ids: list[str], types: tuple[str, ...]) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {room_id: {} for room_id in room_ids}
        type_marks = ",".join("?" * len(types))
        for start in range(0, len(room_ids), 500):
            chunk = room_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for room_id, event_type, event_id in txn.execute(
                f"SELECT room_id, type, event_id FROM current_state WHERE room_id IN ({marks})"
                f" AND type IN ({type_marks}) AND state_key = ''",
                (*chunk, *types),
            ).fetchall():
                out[room_id][event_type] = event_id
        return out

    # -- reading the current state (room reads) -----------------------------------------------

    async def current_state_map(self, room_id: str, event_type: str | None = None) -> dict[tuple[str, str], str]:
        """(type, state_key) -> event id of the room's state now: all of it, or one type of it."""
        sql = "SELECT type, state_key, event_id FROM current_state WHERE room_id = ?"
        args: tuple = (room_id,)
        if event_type is not None:
            sql += " AND type = ?"
            args += (event_type,)
        rows = await self._db.run(
            "rooms.current_state_map", lambda txn: txn.execute(sql, args).fetchall(), readonly=True
        )
        return {(t, k): e for t, k, e in rows}

    # -- membership changes (sync) ------------------------------------------------------------

    async def membership_changes(self, user_id: str, after: int, upto: int) -> list[tuple[str, str, str, int]]:
        """The user's membership events persisted in (after, upto]: (room id, membership, event id,
        stream ordering), oldest first."""
        rows = await self._db.run(
            "rooms.membership_changes",
            lambda txn: txn.execute(
                "SELECT room_id, membership, event_id, stream_ordering FROM room_memberships"
                " WHERE user_id = ? AND stream_ordering > ? AND stream_ordering <= ? ORDER BY stream_ordering",
                (user_id, after, upto),
            ).fetchall(),
            readonly=True,
        )
        return [tuple(r) for r in rows]

    async def members_changed_in_rooms(self, room_ids: list[str], after: int, upto: int) -> dict[str, str]:
        """Users whose membership changed in any of `room_ids` in (after, upto]: user id -> latest membership."""
        if not room_ids or after >= upto:
            return {}
        marks = ",".join("?" * len(room_ids))
        rows = await self._db.run(
            "rooms.members_changed",
            lambda txn: txn.execute(
                f"SELECT user_id, membership FROM room_memberships WHERE room_id IN ({marks})"
                " AND stream_ordering > ? AND stream_ordering <= ? ORDER BY stream_ordering",
                (*room_ids, after, upto),
            ).fetchall(),
            readonly=True,
        )
        return dict(rows)

    async def users_sharing_rooms(self, user_id: str) -> set[str]:
        """Everyone joined to a room the user is joined to (the user included)."""
        rows = await self._db.run(
            "rooms.users_sharing_rooms",
            lambda txn: txn.execute(
                "SELECT DISTINCT other.state_key FROM current_state mine JOIN current_state other"
                " ON other.room_id = mine.room_id AND other.type = 'm.room.member' AND other.membership = 'join'"
                " WHERE mine.type = 'm.room.member' AND mine.state_key = ? AND mine.membership = 'join'",
                (user_id,),
            ).fetchall(),
            readonly=True,
        )
        return {r[0] for r in rows}

    async def remote_users_sharing_rooms(self, user_ids: list[str], local_server: str) -> dict[str, set[str]]:
        """For each of these users, the users of other servers joined to a room they are joined to; one
        query for all of them, which returns nothing (and so costs little) while no room has remote members.
        A user id ends in ":" + its server name, and server names hold no LIKE wildcards."""
        if not user_ids:
            return {}
        marks = ",".join("?" * len(user_ids))
        rows = await self._db.run(
            "rooms.remote_users_sharing_rooms",
            lambda txn: txn.execute(
                "SELECT DISTINCT mine.state_key, other.state_key FROM current_state mine JOIN current_state other"
                " ON other.room_id = mine.room_id AND other.type = 'm.room.member' AND other.membership = 'join'"
                f" WHERE mine.type = 'm.room.member' AND mine.state_key IN ({marks}) AND mine.membership = 'join'"
                " AND other.state_key NOT LIKE ?",
                (*user_ids, "%:" + local_server),
            ).fetchall(),
            readonly=True,
        )
        found: dict[str, set[str]] = {}
        for user_id, other in rows:
            found.setdefault(user_id, set()).add(other)
        return found

    async def membership_counts(self, room_id: str) -> dict[str, int]:
        """How many users hold each membership in the room now."""
        rows = await self._db.run(
            "rooms.membership_counts",
            lambda txn: txn.execute(
                "SELECT membership, count(*) FROM current_state WHERE room_id = ? AND type = 'm.room.member'"
                " GROUP BY membership",
                (room_id,),
            ).fetchall(),
            readonly=True,
        )
        return {membership: int(count) for membership, count in rows}

    async def some_members(self, room_id: str, memberships: tuple[str, ...], exclude: str, limit: int) -> list[str]:
        """Up to `limit` users with one of `memberships`, by user id, leaving out `exclude`."""
        marks = ",".join("?" * len(memberships))
        rows = await self._db.run(
            "rooms.some_members",
            lambda txn: txn.execute(
                "SELECT state_key FROM current_state WHERE room_id = ? AND type = 'm.room.member'"
                f" AND membership IN ({marks}) AND state_key <> ? ORDER BY state_key LIMIT ?",
                (room_id, *memberships, exclude, limit),
            ).fetchall(),
            readonly=True,
        )
        return [r[0] for r in rows]
