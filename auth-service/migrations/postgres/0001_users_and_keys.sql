CREATE TABLE users (
    id            UUID   PRIMARY KEY,            -- UUID v7, so ordering by id is ordering by creation
    username      TEXT   NOT NULL,
    email         TEXT   NOT NULL,
    password_hash TEXT   NOT NULL,               -- argon2id PHC string
    created_at    BIGINT NOT NULL                -- Unix seconds
);
-- Uniqueness lives in the database, so two concurrent sign-ups cannot both win.
CREATE UNIQUE INDEX users_username_key ON users (lower(username));
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE user_roles (
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role    TEXT NOT NULL CHECK (role IN ('user', 'moderator', 'admin')),
    PRIMARY KEY (user_id, role)
);

CREATE TABLE signing_keys (
    kid         TEXT   PRIMARY KEY,
    -- The first replica to start inserts generation 1; the unique constraint makes every other
    -- replica's attempt a no-op, so all of them end up signing with the same key.
    generation  BIGINT NOT NULL UNIQUE,
    algorithm   TEXT   NOT NULL,
    encryption  TEXT   NOT NULL,                 -- 'none' or 'xchacha20poly1305'
    private_key BYTEA  NOT NULL,
    created_at  BIGINT NOT NULL
);
