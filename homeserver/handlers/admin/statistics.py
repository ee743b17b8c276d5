"""Statistics for operators: the database's tables and the biggest rooms, or one room in detail."""

from dataclasses import asdict
from typing import Any

from homeserver.core.errors import MatrixError
from homeserver.storage.admin import AdminStore, RoomBlock
from homeserver.storage.purge import PurgeStore
from homeserver.storage.rooms import RoomStore
from homeserver.storage.statistics import StatisticsStore


class AdminStatistics:
    def __init__(self, store: StatisticsStore, purges: PurgeStore, rooms: RoomStore, admin: AdminStore) -> None:
        self._store = store
        self._purges = purges
        self._rooms = rooms
        self._admin = admin

    async def overview(self, exact: bool, top_rooms: int) -> dict[str, Any]:
        database = await self._store.database(exact)
        return {
            "database": {
                "engine": database.engine,
                "size_bytes": database.size_bytes,
                "rows_estimated": database.rows_estimated,
            },
            "tables": {t.name: {"rows": t.rows, "bytes": t.bytes} for t in database.tables},
            "biggest_rooms": [asdict(room) for room in await self._store.biggest_rooms(top_rooms)],
            "room_deletions": [
                {"room_id": room_id, "requested_by": by, "started_ts": ts}
                for room_id, by, ts in await self._admin.room_deletions()
            ],
        }

    async def room(self, room_id: str) -> dict[str, Any]:
        """The room's size, members and rows per table (what deleting it would remove)."""
        deleting = await self._admin.is_deleting(room_id)
        if await self._rooms.get_room(room_id) is None and not deleting:
            raise MatrixError(404, "M_NOT_FOUND", f"Unknown room {room_id}")
        size = await self._store.room_size(room_id)
        members = await self._purges.members(room_id)
        return {
            **asdict(size),
            "memberships": await self._rooms.membership_counts(room_id),
            "rows": await self._purges.count_room(room_id, members),
            "blocked": await self._admin.room_block(room_id) is RoomBlock.BLOCKED,
            "deleting": deleting,
        }
