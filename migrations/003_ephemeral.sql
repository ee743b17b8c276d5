-- Receipts and account data: the latest value per key, each write stamped with a position of its
-- own stream so an incremental sync asks "what changed in (since, now]" with one indexed range scan.
-- (Typing notifications are held in memory and have no table.)

-- One row per (room, receipt type, user, thread): the latest receipt. `thread_id` is '' for an
-- unthreaded receipt (a key column cannot be NULL), else 'main' or a thread root's event id.
-- `event_stream` is the receipted event's stream ordering: a receipt never moves back.
CREATE TABLE receipts (
    room_id TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    user_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_stream BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
-- Sync: the receipts of a set of rooms that changed in a range of positions.
CREATE INDEX receipts_room_stream ON receipts (room_id, stream_id);
-- Unread counts: one user's read position in one room.
CREATE INDEX receipts_user_room ON receipts (user_id, room_id);
INSERT INTO stream_counters (name, value) VALUES ('receipts', 0);

-- Account data a client stores for itself, global and per room: the latest content per type.
CREATE TABLE account_data (
    user_id TEXT NOT NULL,
    type TEXT NOT NULL,
    content TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (user_id, type)
);
CREATE INDEX account_data_user_stream ON account_data (user_id, stream_id);

CREATE TABLE room_account_data (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    content TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, type)
);
CREATE INDEX room_account_data_user_stream ON room_account_data (user_id, stream_id);
-- One stream for both tables: a sync token carries one account data position.
INSERT INTO stream_counters (name, value) VALUES ('account_data', 0);
