-- Key rotation: a key signs from activates_at (Unix seconds) until the next generation's
-- activates_at, and is published from the moment it is stored. The database decides which key is
-- active, so every replica signs with the same one. Keys stored before rotation existed have
-- always been active (0).
ALTER TABLE signing_keys ADD COLUMN activates_at INTEGER NOT NULL DEFAULT 0;
