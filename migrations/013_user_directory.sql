-- The user directory searches at request time over existing tables; members of published rooms are found
-- through this short list of rooms instead of a scan of all of them.
CREATE INDEX rooms_published ON rooms (room_id) WHERE is_public = 1;
