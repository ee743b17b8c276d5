-- The media repository: one row per mxc://server_name/media_id (local uploads now, cached remote media
-- once federation comes). The bytes are files named by their sha256 under media_store_path, so several
-- items (and thumbnails) with the same content share one file.
CREATE TABLE media (
    server_name TEXT NOT NULL,
    media_id TEXT NOT NULL,
    user_id TEXT,
    created_ts BIGINT NOT NULL,
    upload_ts BIGINT,
    expires_ts BIGINT,
    content_type TEXT,
    upload_name TEXT,
    media_length BIGINT,
    sha256 TEXT,
    authenticated_only SMALLINT NOT NULL DEFAULT 0,
    quarantined_by TEXT,
    quarantined_ts BIGINT,
    PRIMARY KEY (server_name, media_id)
);

-- Purges walk media by creation time; deleting a file asks whether any other item still names it.
CREATE INDEX media_created ON media (created_ts, server_name, media_id);
CREATE INDEX media_sha256 ON media (sha256);
-- Ids created for an asynchronous upload that has not happened yet, counted per user.
CREATE INDEX media_pending ON media (user_id, expires_ts) WHERE upload_ts IS NULL;

-- Thumbnails, generated on demand for one of the configured boxes (width x height, crop or scale) and
-- kept; width and height are the box, not the image, which may be smaller.
CREATE TABLE media_thumbnails (
    server_name TEXT NOT NULL,
    media_id TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    method TEXT NOT NULL,
    content_type TEXT NOT NULL,
    length BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (server_name, media_id, width, height, method)
);

CREATE INDEX media_thumbnails_sha256 ON media_thumbnails (sha256);
