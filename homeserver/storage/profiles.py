"""Users' global profiles: display name and avatar."""

from homeserver.storage.database import Database, Txn


class ProfileStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_profile(self, user_id: str) -> tuple[str | None, str | None] | None:
        """(displayname, avatar_url), or None if the user has no profile row."""
        row = await self._db.run(
            "profiles.get",
            lambda txn: txn.execute(
                "SELECT displayname, avatar_url FROM profiles WHERE user_id = ?", (user_id,)
            ).fetchone(),
            readonly=True,
        )
        return (row[0], row[1]) if row else None

    async def set_field(self, user_id: str, field: str, value: str | None) -> None:
        assert field in ("displayname", "avatar_url")
        await self._db.run("profiles.set", self._set_txn, user_id, field, value)

    def _set_txn(self, txn: Txn, user_id: str, field: str, value: str | None) -> None:
        if txn.execute("SELECT 1 FROM profiles WHERE user_id = ?", (user_id,)).fetchone():
            txn.execute(f"UPDATE profiles SET {field} = ? WHERE user_id = ?", (value, user_id))
        else:
            txn.execute(f"INSERT INTO profiles (user_id, {field}) VALUES (?, ?)", (user_id, value))
