-- Outgoing federation. PDUs are not copied: a destination's queue is the events after its
-- last_successful_stream that concern it, read back from the events table, so nothing sent while it
-- was down is lost. The retry columns survive a restart so a dead server is not hammered.
CREATE TABLE federation_destinations (
    destination TEXT PRIMARY KEY,
    last_successful_stream BIGINT NOT NULL,
    retry_last_ts BIGINT NOT NULL DEFAULT 0,
    retry_interval_ms BIGINT NOT NULL DEFAULT 0,
    failure_count INTEGER NOT NULL DEFAULT 0
);

-- EDUs whose loss would break end-to-end encryption (to-device messages, device list updates), kept
-- until the destination acknowledges a transaction that carried them. Typing and presence stay in memory.
CREATE TABLE federation_outbox_edus (
    stream_id BIGINT PRIMARY KEY,
    destination TEXT NOT NULL,
    edu_type TEXT NOT NULL,
    content TEXT NOT NULL
);
CREATE INDEX federation_outbox_edus_destination ON federation_outbox_edus (destination, stream_id);
INSERT INTO stream_counters (name, value) VALUES ('federation_outbox_edus', 0);
