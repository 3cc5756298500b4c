-- Email verification and change, password reset, and the outbox of mail to send.

-- The claim trigger also moves a claim when a changed address is verified: the new address is
-- taken (LD409 when another account holds it) and the old one released, in the same
-- transaction as the `EmailVerified` event.
CREATE OR REPLACE FUNCTION events_claim_email() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    claim    text;
    previous text;
BEGIN
    IF NEW.aggregate_type = 'user' AND NEW.event_type = 'UserRegistered' THEN
        claim := NEW.payload -> 'UserRegistered' ->> 'email_index';
        INSERT INTO email_claims (email_index, user_id)
        VALUES (claim, NEW.aggregate_id::uuid)
        ON CONFLICT (email_index) DO NOTHING;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'email address already claimed'
                USING ERRCODE = 'LD409', CONSTRAINT = 'email_claims_pkey';
        END IF;
    ELSIF NEW.aggregate_type = 'user' AND NEW.event_type = 'EmailVerified' THEN
        claim := NEW.payload -> 'EmailVerified' ->> 'email_index';
        previous := NEW.payload -> 'EmailVerified' ->> 'previous_email_index';
        IF previous IS NOT NULL AND previous <> claim THEN
            INSERT INTO email_claims (email_index, user_id)
            VALUES (claim, NEW.aggregate_id::uuid)
            ON CONFLICT (email_index) DO NOTHING;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'email address already claimed'
                    USING ERRCODE = 'LD409', CONSTRAINT = 'email_claims_pkey';
            END IF;
            DELETE FROM email_claims
             WHERE email_index = previous AND user_id = NEW.aggregate_id::uuid;
        END IF;
    END IF;
    RETURN NEW;
END
$$;

-- The open address verification of each account, for its status and for finding the account
-- a link token belongs to. Only hashes of tokens are kept.
CREATE TABLE email_verifications (
    user_id           uuid        PRIMARY KEY,
    change_request_id uuid        NOT NULL,
    purpose           text        NOT NULL,
    method            text        NOT NULL,
    new_email         text,
    token_hash        text        UNIQUE,
    expires_at        timestamptz NOT NULL,
    requested_at      timestamptz NOT NULL
);

-- The reset token of each account that still works, by its SHA-256.
CREATE TABLE password_resets (
    user_id    uuid        PRIMARY KEY,
    token_hash text        NOT NULL UNIQUE,
    expires_at timestamptz NOT NULL
);

-- One row per mail to send, written by the projector in the transaction that applies the
-- event asking for it, and keyed by that event so that a replay adds no second copy. The
-- sender clears `secret` once the mail is out.
CREATE TABLE mail_outbox (
    mail_id           uuid        PRIMARY KEY,
    source_event      text        NOT NULL UNIQUE,
    user_id           uuid        NOT NULL,
    kind              text        NOT NULL,
    recipient         text        NOT NULL,
    secret            text,
    expires_at        timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    sent_at           timestamptz,
    -- `sent`, `expired` (its code or token ran out before it could go) or `failed`.
    outcome           text,
    attempts          integer     NOT NULL DEFAULT 0,
    last_attempt_at   timestamptz
);

CREATE INDEX mail_outbox_unsent ON mail_outbox (created_at) WHERE outcome IS NULL;
