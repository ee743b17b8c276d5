"""Room state as state groups: deltas against an earlier group, resolved lazily and cached.

A lookup names the (type, state_key) pairs it needs and reads only those rows along the group's
delta chain; the whole map is read only when the caller asks for it, and whole maps are kept in a
memory-bounded LRU. Groups never change once written, so the cache needs no invalidation.
"""

from collections.abc import Iterable, Mapping

from homeserver.storage.database import Database, Txn
from homeserver.storage.ids import next_id
from homeserver.storage.lru import SizedLru

StateKey = tuple[str, str]
StateMap = dict[StateKey, str]

# A new full snapshot is written once the chain of deltas since the last one is longer than both
# MIN_DELTA_CHAIN and a quarter of that snapshot's size. Big rooms so write a snapshot every few hundred
# state changes (storage stays a few rows per change, where a fixed short chain would copy a 5,000-member
# state every 50 joins), while reading the deltas never costs more than reading the snapshot itself.
MIN_DELTA_CHAIN = 50
STATE_CACHE_BYTES = 64 * 1024 * 1024
_ENTRY_BYTES = 200  # rough memory of one (type, state_key) -> event_id entry in a dict
PREV_CACHE_ENTRIES = 1_000_000


class StateStore:
    def __init__(self, db: Database, cache_bytes: int = STATE_CACHE_BYTES) -> None:
        self._db = db
        self.cache: SizedLru[int, StateMap] = SizedLru(cache_bytes, lambda m: 100 + len(m) * _ENTRY_BYTES)
        self.rows_read = 0  # state entries read from the database, for tests and metrics
        # group -> its prev_group: groups never change, so the chain walk is cached for good (bounded).
        self._prev: SizedLru[int, int | None] = SizedLru(PREV_CACHE_ENTRIES, lambda _: 1)

    async def get_state_ids(self, group: int, keys: Iterable[StateKey] | None = None) -> StateMap:
        """The state at `group`: only `keys` if given (missing keys are absent), else all of it."""
        cached = self.cache.get(group)
        if keys is None:
            if cached is None:
                cached = await self._db.run("state.get_full", self._full_state_txn, group, readonly=True)
                self.cache.put(group, cached)
            return dict(cached)
        wanted = list(dict.fromkeys(keys))
        if cached is not None:
            return {k: cached[k] for k in wanted if k in cached}
        if not wanted:
            return {}
        return await self._db.run("state.get_keys", self._keys_txn, group, wanted, readonly=True)

    async def get_state_ids_of_type(self, group: int, event_type: str) -> StateMap:
        """Every state entry of one type (e.g. all members): reads just those rows."""
        cached = self.cache.get(group)
        if cached is not None:
            return {k: v for k, v in cached.items() if k[0] == event_type}
        return await self._db.run("state.get_type", self._type_txn, group, event_type, readonly=True)

    def _chain(self, txn: Txn, group: int) -> list[int]:
        """The group and its ancestors, nearest first, up to the full snapshot."""
        chain: list[int] = []
        current: int | None = group
        while current is not None:
            chain.append(current)
            prev = self._prev.get(current)
            if prev is None and not self._prev.contains(current):
                return chain[:-1] + self._chain_from_db(txn, current)
            current = prev
        return chain

    def _chain_from_db(self, txn: Txn, group: int) -> list[int]:
        rows = txn.execute(
            "WITH RECURSIVE chain(id, prev_group, n) AS ("
            " SELECT id, prev_group, 0 FROM state_groups WHERE id = ?"
            " UNION ALL SELECT g.id, g.prev_group, c.n + 1 FROM state_groups g JOIN chain c ON g.id = c.prev_group"
            ") SELECT id, prev_group FROM chain ORDER BY n",
            (group,),
        ).fetchall()
        if not rows:
            raise KeyError(f"unknown state group {group}")
        for group_id, prev in rows:
            self._prev.put(group_id, prev)
        return [r[0] for r in rows]

    def _merge(self, chain: list[int], rows: list[tuple]) -> StateMap:
        self.rows_read += len(rows)
        rank = {g: i for i, g in enumerate(chain)}
        best: dict[StateKey, tuple[int, str]] = {}
        for group, event_type, state_key, event_id in rows:
            key = (event_type, state_key)
            if key not in best or rank[group] < best[key][0]:
                best[key] = (rank[group], event_id)
        return {k: v[1] for k, v in best.items()}

    def _full_state_txn(self, txn: Txn, group: int) -> StateMap:
        chain = self._chain(txn, group)
        marks = ",".join("?" * len(chain))
        rows = txn.execute(
            f"SELECT state_group, type, state_key, event_id FROM state_group_entries WHERE state_group IN ({marks})",
            chain,
        ).fetchall()
        return self._merge(chain, rows)

    def _keys_txn(self, txn: Txn, group: int, keys: list[StateKey]) -> StateMap:
        chain = self._chain(txn, group)
        marks = ",".join("?" * len(chain))
        pairs = " OR ".join("(type = ? AND state_key = ?)" for _ in keys)
        args = [*chain, *(part for key in keys for part in key)]
        rows = txn.execute(
            "SELECT state_group, type, state_key, event_id FROM state_group_entries"
            f" WHERE state_group IN ({marks}) AND ({pairs})",
            args,
        ).fetchall()
        return self._merge(chain, rows)

    def _type_txn(self, txn: Txn, group: int, event_type: str) -> StateMap:
        chain = self._chain(txn, group)
        marks = ",".join("?" * len(chain))
        rows = txn.execute(
            "SELECT state_group, type, state_key, event_id FROM state_group_entries"
            f" WHERE state_group IN ({marks}) AND type = ?",
            [*chain, event_type],
        ).fetchall()
        return self._merge(chain, rows)

    def store_group_txn(self, txn: Txn, room_id: str, prev_group: int | None, delta: Mapping[StateKey, str]) -> int:
        """Write a new group: `delta` on top of `prev_group`, or a full snapshot when the chain is long
        enough (see MIN_DELTA_CHAIN) or there is no previous group. Runs inside the caller's txn."""
        group = next_id(txn, "state_groups")
        chain_length, snapshot_size = 0, 0
        entries = dict(delta)
        if prev_group is not None:
            row = txn.execute(
                "SELECT chain_length, snapshot_size FROM state_groups WHERE id = ?", (prev_group,)
            ).fetchone()
            chain_length, snapshot_size = row[0] + 1, row[1]
            if chain_length > max(MIN_DELTA_CHAIN, snapshot_size // 4):
                entries = {**self._full_state_txn(txn, prev_group), **delta}
                prev_group, chain_length = None, 0
        if prev_group is None:
            snapshot_size = len(entries)
        txn.execute(
            "INSERT INTO state_groups (id, room_id, prev_group, chain_length, snapshot_size) VALUES (?, ?, ?, ?, ?)",
            (group, room_id, prev_group, chain_length, snapshot_size),
        )
        self._prev.put(group, prev_group)  # harmless if the transaction rolls back: ids are never reused
        txn.insert_many(
            "state_group_entries",
            ("state_group", "type", "state_key", "event_id"),
            [(group, t, k, e) for (t, k), e in entries.items()],
        )
        return group
