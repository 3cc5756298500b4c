-- Multi-factor read models, built by the `mfa` projection: the MFA status of each user, and
-- the user each open login challenge belongs to, keyed by the SHA-256 of its MFA token. The
-- user aggregate stays the authority on whether a challenge or code is still good; these
-- tables only answer lookups.

CREATE TABLE user_mfa (
    user_id                  uuid        PRIMARY KEY,
    totp_enabled             boolean     NOT NULL,
    enrolled_at              timestamptz,
    recovery_codes_remaining integer     NOT NULL,
    updated_at               timestamptz NOT NULL
);

CREATE TABLE mfa_challenges (
    challenge_hash text        PRIMARY KEY,
    user_id        uuid        NOT NULL,
    expires_at     timestamptz NOT NULL
);

CREATE INDEX mfa_challenges_user ON mfa_challenges (user_id);
