-- API keys as a read model of their events, and the last time each session was used.

CREATE TABLE api_keys (
    api_key_id uuid        PRIMARY KEY,
    name       text        NOT NULL,
    scopes     text[]      NOT NULL,
    prefix     text        NOT NULL,
    key_hash   text        NOT NULL UNIQUE,
    created_at timestamptz NOT NULL,
    expires_at timestamptz,
    revoked_at timestamptz
);

-- Written by the request path at most once a minute per session, not by the projector, so
-- it is not an event and survives a replay of the sessions projection.
CREATE TABLE session_activity (
    session_id   uuid        PRIMARY KEY,
    last_seen_at timestamptz NOT NULL
);
