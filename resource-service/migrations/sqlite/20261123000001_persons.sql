-- Person records. The folded columns hold the name and email lower-cased by the service (Rust's
-- Unicode lower-casing), so the name filter and email uniqueness behave the same on SQLite,
-- whose lower() only folds ASCII, as on PostgreSQL.
CREATE TABLE persons (
    -- AUTOINCREMENT: ids are never reused, so a page token never points into someone else's rows.
    person_id    INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT    NOT NULL,
    name_folded  TEXT    NOT NULL,
    email        TEXT    NOT NULL,
    email_folded TEXT    NOT NULL,
    age          INTEGER NOT NULL CHECK (age BETWEEN 0 AND 150)
);

-- Two people cannot share an email, in any letter case, even when two inserts race.
CREATE UNIQUE INDEX persons_email_folded_key ON persons (email_folded);
