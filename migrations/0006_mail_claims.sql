-- The mail sender claims a row for a while instead of locking it in a transaction, so that no
-- transaction stays open (holding back the projector's xmin) while a mail server is slow.
ALTER TABLE mail_outbox ADD COLUMN claimed_until timestamptz;
