-- End-to-end encryption: device keys, one-time and fallback keys, cross-signing keys and their
-- signatures; send-to-device inboxes; the stream of users whose device lists changed.
--
-- Key objects are stored as the JSON the client uploaded. Rows of a deleted device are removed by the
-- handler that deletes it, and every read joins on `devices`, so a leftover row is never served.

CREATE TABLE e2e_device_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- One-time keys are handed out in upload order: `upload_id` numbers each /keys/upload call.
CREATE TABLE e2e_one_time_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    upload_id BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
);
CREATE INDEX e2e_one_time_keys_order ON e2e_one_time_keys (user_id, device_id, algorithm, upload_id);
INSERT INTO stream_counters (name, value) VALUES ('e2e_key_uploads', 0);

-- At most one fallback key per device and algorithm; `used` once /keys/claim handed it out.
CREATE TABLE e2e_fallback_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    used SMALLINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- The current master, self-signing and user-signing key of each user.
CREATE TABLE e2e_cross_signing_keys (
    user_id TEXT NOT NULL,
    key_type TEXT NOT NULL,
    public_key TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- Signatures uploaded through /keys/signatures/upload, merged into the signed object when it is
-- queried. The target is a device (its id) or a master key (its public key); the signer's own user
-- and the target's user see a signature, nobody else.
CREATE TABLE e2e_cross_signing_signatures (
    target_user_id TEXT NOT NULL,
    target_key_id TEXT NOT NULL,
    signer_user_id TEXT NOT NULL,
    signer_key_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
);
CREATE INDEX e2e_cross_signing_signatures_signer ON e2e_cross_signing_signatures (signer_user_id, signer_key_id);

-- Send-to-device messages waiting for their device, each with its own position in the stream.
CREATE TABLE device_inbox (
    stream_id BIGINT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    message_json TEXT NOT NULL
);
CREATE INDEX device_inbox_device ON device_inbox (user_id, device_id, stream_id);
INSERT INTO stream_counters (name, value) VALUES ('to_device', 0);

-- Transaction ids of /sendToDevice, so a retried request delivers nothing twice. `scope` is a short
-- digest of the path's parameters (the event type).
CREATE TABLE to_device_txns (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, scope, txn_id)
);

-- The last position at which each user's device list (devices, device keys, cross-signing keys or
-- signatures) changed: one row per user, so the table grows with users, not with changes.
CREATE TABLE device_list_changes (
    user_id TEXT PRIMARY KEY,
    stream_id BIGINT NOT NULL
);
CREATE INDEX device_list_changes_stream ON device_list_changes (stream_id);
INSERT INTO stream_counters (name, value) VALUES ('device_lists', 0);
