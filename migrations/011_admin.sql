-- Admin operations: rooms an admin blocked, room deletions under way, and the index a purge finds a
-- room's state groups by.

-- Joins, invites and knocks to a blocked room are refused; the block outlives the room's deletion.
CREATE TABLE blocked_rooms (
    room_id TEXT PRIMARY KEY,
    blocked_by TEXT NOT NULL,
    blocked_ts BIGINT NOT NULL
);

-- A room whose deletion has started and not finished. Its `rooms` row goes before its state groups, so
-- this row is what lets a re-run find and finish an interrupted deletion (and refuses joins meanwhile).
CREATE TABLE room_deletions (
    room_id TEXT PRIMARY KEY,
    requested_by TEXT NOT NULL,
    started_ts BIGINT NOT NULL
);

-- Deleting a room's state groups (and counting them) without scanning every room's.
CREATE INDEX state_groups_room ON state_groups (room_id, id);
