-- The event store, its email claims, the data keys that seal personal fields, and the
-- projector's checkpoints. postgres-es writes the first seven columns of `events`; the last
-- three fill themselves so that the whole stream can be read in commit order.

CREATE TABLE events (
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    sequence        bigint      NOT NULL CHECK (sequence >= 0),
    event_type      text        NOT NULL,
    event_version   text        NOT NULL,
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    global_position bigint      GENERATED ALWAYS AS IDENTITY,
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

-- The projector's read order: a transaction id orders commits, the identity breaks ties.
CREATE UNIQUE INDEX events_stream_order ON events (transaction_id, global_position);

-- One wrapped data key per subject. Deleting the row makes the subject's sealed fields
-- unreadable for good.
CREATE TABLE data_keys (
    subject_id  text        PRIMARY KEY,
    wrapped_key bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Which account holds which canonical email address, by blind index. Rows are written by the
-- trigger below, in the same transaction as the event that takes the address.
CREATE TABLE email_claims (
    email_index text        PRIMARY KEY,
    user_id     uuid        NOT NULL,
    claimed_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX email_claims_user ON email_claims (user_id);

-- Raises SQLSTATE LD409 when the address is held by another account, so the service can tell
-- a taken address from an optimistic-lock conflict on the event key (23505).
CREATE FUNCTION events_claim_email() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    claim text;
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
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER events_claim_email
    BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION events_claim_email();

-- Wakes projectors; they read the table itself, so the payload is empty.
CREATE FUNCTION events_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ledger_events', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER events_notify
    AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_notify();

-- Where each projection has read up to, as the (transaction_id, global_position) pair of the
-- last event it applied.
CREATE TABLE projection_checkpoints (
    projection      text        PRIMARY KEY,
    transaction_id  xid8        NOT NULL DEFAULT '0',
    global_position bigint      NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
