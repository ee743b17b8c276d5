"""User-interactive auth sessions: issued with a 401, checked when the client completes a stage."""

import time

from homeserver.storage.database import Database, Txn

SESSION_LIFETIME_MS = 30 * 60 * 1000


class UiAuthStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_session(self, session_id: str, user_id: str | None) -> None:
        await self._db.run("ui_auth.create_session", self._create_txn, session_id, user_id)

    def _create_txn(self, txn: Txn, session_id: str, user_id: str | None) -> None:
        now = int(time.time() * 1000)
        # Expired sessions go as new ones come, so the table stays as small as recent use.
        txn.execute("DELETE FROM ui_auth_sessions WHERE created_ts < ?", (now - SESSION_LIFETIME_MS,))
        txn.execute(
            "INSERT INTO ui_auth_sessions (session_id, user_id, created_ts) VALUES (?, ?, ?)",
            (session_id, user_id, now),
        )

    async def get_session(self, session_id: str) -> tuple[str | None] | None:
        """(user id the session was issued to,) for a live session, or None."""
        return await self._db.run("ui_auth.get_session", self._get_txn, session_id, readonly=True)

    def _get_txn(self, txn: Txn, session_id: str) -> tuple[str | None] | None:
        row = txn.execute(
            "SELECT user_id FROM ui_auth_sessions WHERE session_id = ? AND created_ts >= ?",
            (session_id, int(time.time() * 1000) - SESSION_LIFETIME_MS),
        ).fetchone()
        return (row[0],) if row else None

    async def delete_session(self, session_id: str) -> None:
        await self._db.run(
            "ui_auth.delete_session",
            lambda txn: txn.execute("DELETE FROM ui_auth_sessions WHERE session_id = ?", (session_id,)),
        )
