-- The background push-action pruner (homeserver/handlers/push_pruner.py) and GET /notifications.

-- How far a (user, room)'s read actions have been deleted. A summary whose read position is past it has
-- read rows left to delete; the partial index holds exactly those summaries, so the pruner finds its work
-- with an index range and never scans every summary.
ALTER TABLE push_summary ADD COLUMN pruned_stream_ordering BIGINT NOT NULL DEFAULT 0;
CREATE INDEX push_summary_unpruned ON push_summary (user_id, room_id)
    WHERE read_stream_ordering > pruned_stream_ordering;

-- Expiry deletes the oldest actions of everyone first, in this key order: an event in a big room has an
-- action per member, so a batch may end inside one stream ordering and the next start right after it.
CREATE INDEX event_push_actions_stream ON event_push_actions (stream_ordering, user_id, room_id);

-- /notifications: a user's actions newest first across their rooms, and their highlights alone.
CREATE INDEX event_push_actions_user_stream ON event_push_actions (user_id, stream_ordering);
CREATE INDEX event_push_actions_user_highlight ON event_push_actions (user_id, stream_ordering)
    WHERE highlight = 1;

-- When stream orderings were handed out: the pruner records (now, the events counter) every so often, so
-- "received before the retention cutoff" becomes "stream ordering at or below the newest mark at or before
-- the cutoff", one index probe. Events' origin_server_ts cannot serve: it is the sender's clock, unindexed,
-- and not ordered by stream.
CREATE TABLE push_prune_marks (
    ts BIGINT PRIMARY KEY,
    stream_ordering BIGINT NOT NULL
);
