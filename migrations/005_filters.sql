-- Sync filters uploaded with POST /user/{userId}/filter.
CREATE TABLE user_filters (
    user_id TEXT NOT NULL,
    filter_id BIGINT NOT NULL,
    filter_json TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);
INSERT INTO stream_counters (name, value) VALUES ('filters', 0);
