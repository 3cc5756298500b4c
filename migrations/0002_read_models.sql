-- Read models built by the projector from the event stream. Each can be dropped and rebuilt
-- by resetting its checkpoint.

CREATE TABLE user_profiles (
    user_id        uuid        PRIMARY KEY,
    email          text,
    email_verified boolean     NOT NULL DEFAULT false,
    status         text        NOT NULL,
    display_name   text,
    given_name     text,
    family_name    text,
    locale         text,
    timezone       text,
    phone          text,
    picture_url    text,
    metadata       jsonb       NOT NULL DEFAULT '{}',
    mfa_enabled    boolean     NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    version        bigint      NOT NULL
);

CREATE TABLE user_credentials (
    user_id       uuid PRIMARY KEY,
    password_hash text NOT NULL
);

CREATE TABLE sessions (
    session_id        uuid        PRIMARY KEY,
    user_id           uuid        NOT NULL,
    token_hash        text        NOT NULL UNIQUE,
    created_at        timestamptz NOT NULL,
    expires_at        timestamptz NOT NULL,
    last_seen_at      timestamptz NOT NULL,
    ip_address        text,
    user_agent        text,
    revoked_at        timestamptz,
    revocation_reason text
);

CREATE INDEX sessions_user ON sessions (user_id);
