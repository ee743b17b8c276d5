-- Each local user's current presence, written only when what others see changes (never per sync or per
-- message): it survives a restart with its status message. stream_id is the in-memory presence stream
-- position of that change; the largest one restarts the stream, so tokens held by clients stay valid.
CREATE TABLE presence (
    user_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    status_msg TEXT,
    last_active_ts BIGINT NOT NULL,
    currently_active INTEGER NOT NULL,
    stream_id BIGINT NOT NULL
);
