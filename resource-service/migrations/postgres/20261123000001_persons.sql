-- Person records. The folded columns hold the name and email lower-cased by the service, so the
-- name filter and email uniqueness behave exactly as on SQLite.
CREATE TABLE persons (
    person_id    BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         TEXT    NOT NULL,
    name_folded  TEXT    NOT NULL,
    email        TEXT    NOT NULL,
    email_folded TEXT    NOT NULL,
    age          INTEGER NOT NULL CHECK (age BETWEEN 0 AND 150)
);

-- Two people cannot share an email, in any letter case, even when two inserts race.
CREATE UNIQUE INDEX persons_email_folded_key ON persons (email_folded);

-- The name filter is a substring match; a trigram index would serve it if the table grows large.
