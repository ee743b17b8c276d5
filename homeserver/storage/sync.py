"""What an initial sync reads for its user, in one transaction.

An initial sync used to read a dozen small things one transaction each (stream positions, the user's
rooms, unread counts, room account data, private receipts, to-device messages, key counts); under a herd
of clients those round trips, not the SQL, were the cost. They are read here together, a few statements
in all, through the other stores' own transaction functions where they have one. The key counts are
one UNION statement here (e2e.one_time_key_counts and unused_fallback_key_types are two): a change to
what those return must be made here too.
"""

from dataclasses import dataclass
from typing import Any

from homeserver.storage.account_data import room_account_data_txn
from homeserver.storage.database import Database, Txn
from homeserver.storage.push import unread_counts_txn
from homeserver.storage.receipts import private_receipts_txn
from homeserver.storage.to_device import messages_txn


@dataclass(frozen=True)
class UserSnapshot:
    """One user's side of an initial sync, all read in one transaction at `positions`."""

    positions: dict[str, int]  # stream name -> position, as in a sync token
    memberships: dict[str, str]  # room id -> the user's membership, for every room they have one in
    room_streams: dict[str, int]  # joined room -> its last event at or before positions["events"]
    receipt_streams: dict[str, int]  # joined room -> its last receipt at or before positions["receipts"]
    private_receipts: dict[str, dict[str, Any]]  # joined room -> m.receipt content of the user's private ones
    room_account_data: dict[str, dict[str, dict[str, Any]]]  # room -> type -> content
    unread_counts: dict[str, tuple[int, int]]  # room -> (notifications, highlights)
    to_device: list[dict[str, Any]]  # the device's oldest messages, at most the limit asked for
    to_device_position: int  # where the next sync goes on from: the last message sent, or the stream's end
    one_time_key_counts: dict[str, int]
    fallback_key_types: list[str]

    def rooms(self, membership: str) -> list[str]:
        return sorted(room_id for room_id, m in self.memberships.items() if m == membership)


class SyncStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def initial_snapshot(self, user_id: str, device_id: str, to_device_limit: int) -> UserSnapshot:
        return await self._db.run(
            "sync.initial_snapshot", self._snapshot_txn, user_id, device_id, to_device_limit, readonly=True
        )

    def _snapshot_txn(self, txn: Txn, user_id: str, device_id: str, to_device_limit: int) -> UserSnapshot:
        # Positions first: everything below is bounded by them, so it is what a token at them covers.
        positions = {
            name: int(value) for name, value in txn.execute("SELECT name, value FROM stream_counters").fetchall()
        }
        # The user's rooms, and for those they are joined to the last event and receipt at the positions:
        # one index probe each, in the same statement (a round trip is what costs, not the probe).
        memberships, room_streams, receipt_streams = {}, {}, {}
        for room_id, membership, room_stream, receipt_stream in txn.execute(
            "SELECT c.room_id, c.membership,"
            " CASE WHEN c.membership = 'join' THEN (SELECT e.stream_ordering FROM events e"
            "  WHERE e.room_id = c.room_id AND e.stream_ordering <= ? ORDER BY e.stream_ordering DESC LIMIT 1) END,"
            " CASE WHEN c.membership = 'join' THEN (SELECT r.stream_id FROM receipts r"
            "  WHERE r.room_id = c.room_id AND r.stream_id <= ? ORDER BY r.stream_id DESC LIMIT 1) END"
            " FROM current_state c WHERE c.state_key = ? AND c.type = 'm.room.member'",
            (positions.get("events", 0), positions.get("receipts", 0), user_id),
        ).fetchall():
            memberships[room_id] = membership
            if room_stream is not None:
                room_streams[room_id] = int(room_stream)
            if receipt_stream is not None:
                receipt_streams[room_id] = int(receipt_stream)
        account_data = room_account_data_txn(txn, user_id, 0, positions.get("account_data", 0))
        unread = unread_counts_txn(txn, user_id)
        to_device, to_device_position = messages_txn(
            txn, user_id, device_id, 0, positions.get("to_device", 0), to_device_limit
        )
        counts = {"signed_curve25519": 0}  # always there: some clients read it without checking
        fallback = []
        for kind, algorithm, n in txn.execute(
            "SELECT 'count', algorithm, count(*) FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ?"
            " GROUP BY algorithm"
            " UNION ALL SELECT 'fallback', algorithm, 0 FROM e2e_fallback_keys"
            " WHERE user_id = ? AND device_id = ? AND used = 0",
            (user_id, device_id, user_id, device_id),
        ).fetchall():
            if kind == "count":
                counts[algorithm] = int(n)
            else:
                fallback.append(algorithm)
        return UserSnapshot(
            positions=positions,
            memberships=memberships,
            room_streams=room_streams,
            receipt_streams=receipt_streams,
            private_receipts=private_receipts_txn(txn, user_id, list(room_streams), positions.get("receipts", 0)),
            room_account_data=account_data,
            unread_counts=unread,
            to_device=to_device,
            to_device_position=to_device_position,
            one_time_key_counts=counts,
            fallback_key_types=sorted(fallback),
        )

