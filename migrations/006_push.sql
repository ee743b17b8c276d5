-- Push actions: one row per (user, event) the user's push rules notify for, and a per-(user, room)
-- summary of the counts, so counting never scans rows. A read receipt zeroes the summary; rows are
-- left for the background pruner (which comes with the push issue), never deleted in a request.
CREATE TABLE event_push_actions (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    notify SMALLINT NOT NULL,
    highlight SMALLINT NOT NULL,
    PRIMARY KEY (user_id, room_id, stream_ordering)
);

CREATE TABLE push_summary (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    notification_count BIGINT NOT NULL,
    highlight_count BIGINT NOT NULL,
    read_stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id)
);
