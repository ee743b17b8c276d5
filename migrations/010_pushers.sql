-- Pushers: where to send a user's notifications (an HTTP push gateway), and how far each has got.
-- A pusher belongs to the device (and so the access token) that set it: logging out, deleting the
-- device or deactivating the account removes it with the device, in the same transaction.
CREATE TABLE pushers (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    app_id TEXT NOT NULL,
    app_display_name TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag TEXT,
    pushkey TEXT NOT NULL,
    lang TEXT NOT NULL,
    data TEXT NOT NULL,  -- JSON object, as the client gave it
    pushkey_ts BIGINT NOT NULL,  -- ms, when the pushkey was last set
    -- The pusher has dealt with every push action up to here (sent, or given up on).
    last_stream_ordering BIGINT NOT NULL,
    last_success_ts BIGINT,
    failing_since BIGINT,  -- ms, when the gateway began failing the current notification
    PRIMARY KEY (app_id, pushkey, user_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
-- A user's pushers, and the cascade from a deleted device.
CREATE INDEX pushers_device ON pushers (user_id, device_id);
