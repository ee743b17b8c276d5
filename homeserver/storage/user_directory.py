"""The user directory: local users matched by user id or display name, searched at request time over the
accounts, profiles and current room state, so it is always as current as they are."""

from dataclasses import dataclass

from homeserver.storage.database import Database, Txn

# Users joined to a room the searcher is joined to, and members of rooms published in the room directory.
_VISIBLE = (
    " AND u.user_id IN ("
    "SELECT other.state_key FROM current_state mine JOIN current_state other"
    " ON other.room_id = mine.room_id AND other.type = 'm.room.member' AND other.membership = 'join'"
    " WHERE mine.type = 'm.room.member' AND mine.state_key = ? AND mine.membership = 'join'"
    " UNION SELECT cs.state_key FROM rooms r JOIN current_state cs"
    " ON cs.room_id = r.room_id AND cs.type = 'm.room.member' AND cs.membership = 'join'"
    " WHERE r.is_public = 1)"
)


@dataclass(frozen=True)
class DirectoryEntry:
    user_id: str
    display_name: str | None
    avatar_url: str | None


def like_escape(text: str) -> str:
    """`text` for a LIKE pattern with ESCAPE '\\': its own wildcards match only themselves."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class UserDirectoryStore:
    def __init__(self, db: Database, server_name: str) -> None:
        self._db = db
        # Characters of a local user id around its localpart: '@' and ':server_name'.
        self._id_overhead = len(server_name) + 2

    async def search(self, searcher: str, term: str, limit: int, all_users: bool) -> list[DirectoryEntry]:
        """Up to `limit` active local users whose localpart or display name contains `term`, or whose
        user id starts with it, case-insensitively; prefix matches first. Unless `all_users`, only those
        sharing a joined room with `searcher` or joined to a published room."""
        return await self._db.run(
            "user_directory.search", self._search_txn, searcher, term, limit, all_users, readonly=True
        )

    def _search_txn(self, txn: Txn, searcher: str, term: str, limit: int, all_users: bool) -> list[DirectoryEntry]:
        escaped = like_escape(term.lower())
        inside, prefix = f"%{escaped}%", f"{escaped}%"
        localpart = "lower(substr(u.user_id, 2, length(u.user_id) - ?))"
        sql = (
            "SELECT u.user_id, p.displayname, p.avatar_url FROM users u LEFT JOIN profiles p ON p.user_id = u.user_id"
            f" WHERE u.deactivated = 0 AND ({localpart} LIKE ? ESCAPE '\\' OR lower(u.user_id) LIKE ? ESCAPE '\\'"
            " OR lower(p.displayname) LIKE ? ESCAPE '\\')"
        )
        args: tuple = (self._id_overhead, inside, prefix, inside)
        if not all_users:
            sql += _VISIBLE
            args += (searcher,)
        sql += (
            f" ORDER BY CASE WHEN {localpart} LIKE ? ESCAPE '\\' OR lower(p.displayname) LIKE ? ESCAPE '\\'"
            " THEN 0 ELSE 1 END, u.user_id LIMIT ?"
        )
        args += (self._id_overhead, prefix, prefix, limit)
        return [DirectoryEntry(*row) for row in txn.execute(sql, args).fetchall()]
