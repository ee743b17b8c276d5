-- Accounts: users, their devices and access tokens, and user-interactive auth sessions.
-- Booleans are 0/1 integers so one statement works on SQLite and PostgreSQL.

CREATE TABLE users (
    user_id TEXT PRIMARY KEY,
    password_hash TEXT,
    admin SMALLINT NOT NULL DEFAULT 0,
    deactivated SMALLINT NOT NULL DEFAULT 0,
    created_ts BIGINT NOT NULL
);
-- Logins match older ids with capitals case-insensitively.
CREATE INDEX users_lower_id ON users (lower(user_id));

CREATE TABLE devices (
    user_id TEXT NOT NULL REFERENCES users (user_id),
    device_id TEXT NOT NULL,
    display_name TEXT,
    last_seen_ts BIGINT,
    last_seen_ip TEXT,
    PRIMARY KEY (user_id, device_id)
);

-- Tokens are stored as their SHA-256, so a copy of the database does not hand out sessions.
CREATE TABLE access_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id)
);
CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);

CREATE TABLE ui_auth_sessions (
    session_id TEXT PRIMARY KEY,
    user_id TEXT,
    created_ts BIGINT NOT NULL
);
