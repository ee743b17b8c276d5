-- Our users' invites to, and knocks on, rooms we do not hold (yet): the member event and the stripped
-- room state that came with it, and the server that holds the room (to join, reject or rescind through).
-- The user's /sync shows them until they join, or leave.
CREATE TABLE pending_remote_memberships (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    room_version TEXT NOT NULL,
    event_json TEXT NOT NULL,
    stripped_state TEXT NOT NULL,
    server_name TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
