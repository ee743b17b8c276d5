-- Other servers' signing keys, as fetched (directly or through a notary). Each row is one key; the key
-- document it came from is kept whole (signatures included) so that, as a notary, we can pass it on.
-- valid_until_ts: the document's valid_until_ts for a published key, expired_ts for an old one.
CREATE TABLE server_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    verify_key TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    fetched_ts BIGINT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);
