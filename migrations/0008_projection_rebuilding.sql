-- Set by `replay` when it empties a read model, cleared by the projector in the batch where
-- the rebuilt projection has caught up with the others. While it is set, the read model holds
-- a prefix of the history (a session that was started but not yet revoked, an account whose
-- TOTP is not yet on), so the requests whose credential checks read it answer 503 instead.
ALTER TABLE projection_checkpoints
    ADD COLUMN rebuilding boolean NOT NULL DEFAULT false;
