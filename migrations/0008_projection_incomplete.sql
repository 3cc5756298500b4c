-- Set while a read model holds only a prefix of the history: `replay` sets it when it empties
-- the model, and the projector when an event fails to apply to it. The projector clears it in
-- the batch that brings the model level with the others. A partial model can show a session
-- that was started but not yet revoked, or an account whose TOTP is not yet on, so the
-- credential checks that read it return 503 while it is set.
ALTER TABLE projection_checkpoints
    ADD COLUMN incomplete boolean NOT NULL DEFAULT false;

