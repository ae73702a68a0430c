-- Who may read the audit log: users, their browser sessions, and API tokens.
--
-- users: a pgtrail user (not a database role). password_hash is an argon2id
--   PHC string. tables: the table patterns (as in the capture config) the
--   user is restricted to; empty means every table. failed_attempts counts
--   failed sign-ins since the last success or lock; locked_until refuses
--   sign-ins until then.
-- sessions: one signed-in browser. Only the SHA-256 of the cookie's token is
--   kept, so a copy of the store does not hand out sessions; csrf is the
--   session's synchronizer token for forms.
-- tokens: API tokens, stored as the SHA-256 of the secret shown once.
CREATE TABLE pgtrail.users (
    name            text PRIMARY KEY,
    role            text NOT NULL CHECK (role IN ('viewer', 'auditor', 'admin')),
    tables          text[] NOT NULL DEFAULT '{}',
    password_hash   text NOT NULL,
    disabled        boolean NOT NULL DEFAULT false,
    failed_attempts integer NOT NULL DEFAULT 0,
    locked_until    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE pgtrail.sessions (
    token_hash  bytea PRIMARY KEY,
    user_name   text NOT NULL REFERENCES pgtrail.users (name) ON DELETE CASCADE,
    csrf        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    client_addr text
);
CREATE INDEX sessions_user_name ON pgtrail.sessions (user_name);

CREATE TABLE pgtrail.tokens (
    name         text PRIMARY KEY,
    token_hash   bytea NOT NULL UNIQUE,
    role         text NOT NULL CHECK (role IN ('viewer', 'auditor', 'admin')),
    tables       text[] NOT NULL DEFAULT '{}',
    created_by   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    last_used_at timestamptz
);
