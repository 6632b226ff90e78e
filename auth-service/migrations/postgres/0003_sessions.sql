-- A disabled account cannot sign in or refresh; NULL means enabled.
ALTER TABLE users ADD COLUMN disabled_at BIGINT;

-- One row per sign-in. The refresh token itself is never stored: only the SHA-256 of the current
-- one, and of the one it replaced (previous_hash), kept for the grace window so that a retry of
-- that parent gets the same child back: the child is stored sealed (XChaCha20-Poly1305) under a
-- key derived from the parent token, which only a holder of the parent can open.
CREATE TABLE sessions (
    id                  TEXT   PRIMARY KEY,       -- UUID v4 text; the `sid` claim
    user_id             UUID   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash          BYTEA  NOT NULL UNIQUE,
    previous_hash       BYTEA  UNIQUE,
    sealed_child        BYTEA,                    -- the current token, sealed under the previous one
    rotated_at          BIGINT,                   -- Unix seconds of the last refresh
    created_at          BIGINT NOT NULL,
    last_used_at        BIGINT NOT NULL,
    expires_at          BIGINT NOT NULL,          -- idle limit, never after absolute_expires_at
    absolute_expires_at BIGINT NOT NULL,
    client_address      TEXT   NOT NULL,
    user_agent          TEXT   NOT NULL
);
CREATE INDEX sessions_user_id ON sessions (user_id, created_at);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

-- Refresh tokens spent before the previous one, so that a reuse of any of them (a thief's copy
-- used after its owner refreshed twice) is still recognised and ends the session.
CREATE TABLE spent_refresh_tokens (
    token_hash BYTEA  PRIMARY KEY,
    session_id TEXT   NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    spent_at   BIGINT NOT NULL
);
CREATE INDEX spent_refresh_tokens_session_id ON spent_refresh_tokens (session_id);
