-- The mail sender claims a row for a while instead of locking it in a transaction, so that no
-- transaction stays open (holding back the projector's xmin) while a mail server is slow.
-- `claim_id` names the claim, so that a sender whose lease ran out cannot overwrite the outcome
-- recorded by the sender that took the row over. After a temporary failure `claimed_until`
-- holds the row back until its next attempt is due.
ALTER TABLE mail_outbox ADD COLUMN claimed_until timestamptz;
ALTER TABLE mail_outbox ADD COLUMN claim_id uuid;
