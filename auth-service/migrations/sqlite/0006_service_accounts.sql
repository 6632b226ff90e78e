-- Service accounts: identities for internal services, authenticated by the OAuth 2.0
-- client-credentials grant. The id is the client id (UUID v7, so ordering by id is ordering by
-- creation). The secret is 256 random bits and is stored only as its SHA-256 (a slow hash adds
-- nothing to a secret that cannot be guessed). A rotation keeps the previous secret's hash until
-- previous_secret_expires_at (Unix seconds), so callers can roll without downtime.
CREATE TABLE service_accounts (
    id                         TEXT    PRIMARY KEY NOT NULL,
    name                       TEXT    NOT NULL,  -- 3 to 64 of [a-z0-9._-]
    secret_hash                BLOB    NOT NULL,
    secret_created_at          INTEGER NOT NULL,
    previous_secret_hash       BLOB,
    previous_secret_expires_at INTEGER,
    disabled_at                INTEGER,           -- NULL means enabled
    created_at                 INTEGER NOT NULL
);
-- Uniqueness lives in the database, so two concurrent creations cannot both win.
CREATE UNIQUE INDEX service_accounts_name_key ON service_accounts (name);

-- Never 'admin': administration needs a person, re-checked against the database on every call.
CREATE TABLE service_account_roles (
    service_account_id TEXT NOT NULL REFERENCES service_accounts (id) ON DELETE CASCADE,
    role               TEXT NOT NULL CHECK (role IN ('user', 'moderator')),
    PRIMARY KEY (service_account_id, role)
);

-- Failed client authentications are counted in throttle_events like failed sign-ins: kind
-- 'sign-in', subject 'client:<id>' (no user subject starts so), per client address.
