-- Events received over federation that are not in the timeline (the events table): outliers (state and
-- auth events fetched to check others), rejected events (kept so they are neither fetched again nor ever
-- used as state or auth) and soft-failed events (valid, hidden from clients, never a forward extremity;
-- state_group is the state after one, for events that later build on it).
CREATE TABLE event_outliers (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT,
    state_group BIGINT,
    received_ts BIGINT NOT NULL,
    json TEXT NOT NULL
);
CREATE INDEX event_outliers_room ON event_outliers (room_id);

-- Transactions received, so a retried /send is answered without processing it again.
CREATE TABLE federation_inbound_txns (
    origin TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    response TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);

-- Backfilled (older) events take stream orderings counting down from 0: see EventStore._insert_event_txn.
INSERT INTO stream_counters (name, value) VALUES ('backfill', 0);
