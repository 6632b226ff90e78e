-- Throttling shared by every replica: one row per counted event, kept only while a limit's
-- window still covers it, then pruned.
--   kind 'sign-in': a failed password check (written just before the check and deleted again if
--                   the password was right, so requests in flight count too);
--   kind 'sign-up': a sign-up told that its username or email is taken.
-- `subject` is 'user:<id>' for an existing account, 'login:<SHA-256 of the lowercased login>' for
-- an unknown one, and '' for sign-up. `client` is an IPv4 address, an IPv6 /64, or 'unknown'.
-- `attempt` is the request id and a short fingerprint of what was tried, so a request retried on
-- another replica finds its own row and counts once.
CREATE TABLE throttle_events (
    kind    TEXT   NOT NULL CHECK (kind IN ('sign-in', 'sign-up')),
    subject TEXT   NOT NULL,
    client  TEXT   NOT NULL,
    attempt TEXT   NOT NULL,
    at      INTEGER NOT NULL,                    -- Unix seconds
    PRIMARY KEY (kind, subject, client, attempt)
);
CREATE INDEX throttle_events_subject_at ON throttle_events (kind, subject, at);
CREATE INDEX throttle_events_at ON throttle_events (at);
