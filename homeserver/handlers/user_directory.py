"""Searching the user directory (POST /user_directory/search)."""

from dataclasses import dataclass

from homeserver.core.requester import Requester
from homeserver.storage.user_directory import DirectoryEntry, UserDirectoryStore

# Results one search returns at most, whatever limit the client asks for: each is a row to read and send.
MAX_LIMIT = 100


@dataclass(frozen=True)
class SearchResult:
    entries: list[DirectoryEntry]
    limited: bool  # more users matched than were returned


class UserDirectoryHandler:
    def __init__(self, store: UserDirectoryStore, search_all_users: bool) -> None:
        self._store = store
        self._search_all_users = search_all_users

    async def search(self, requester: Requester, term: str, limit: int) -> SearchResult:
        limit = min(limit, MAX_LIMIT)
        # One row beyond the limit tells whether the answer is complete without counting every match.
        entries = await self._store.search(requester.user_id, term.strip(), limit + 1, self._search_all_users)
        return SearchResult(entries[:limit], len(entries) > limit)
