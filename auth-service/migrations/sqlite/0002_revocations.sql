-- Revoked access: one row per ended session ('session', subject = the session id) or per user
-- whose every earlier token is void ('user', subject = the user id, not_before = the time from
-- which tokens count again: a token with iat <= not_before is refused). A row is kept only while
-- an access token it covers could still be valid (expires_at), then pruned.
-- `seq` is the feed's cursor; SQLite serialises writers, so sequence order is commit order.
-- AUTOINCREMENT: a pruned seq is never handed out again.
CREATE TABLE revocations (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT    NOT NULL CHECK (kind IN ('session', 'user')),
    subject    TEXT    NOT NULL,
    not_before INTEGER NOT NULL,                 -- Unix seconds
    expires_at INTEGER NOT NULL                  -- Unix seconds
);
CREATE INDEX revocations_expires_at ON revocations (expires_at);
