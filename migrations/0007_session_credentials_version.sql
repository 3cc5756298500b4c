-- A login checks the password against the profiles read model and appends its session
-- afterwards, so a password change, reset or suspension can land in between. Each session
-- records the user's version that its login checked, and each profile the version of the last
-- event that ended every session (with the one session a password change kept). A session
-- older than that event is refused even though no revocation ever touched its row. Sessions
-- started before this column existed have NULL, and the rule does not apply to them.
ALTER TABLE sessions
    ADD COLUMN credentials_version bigint;

ALTER TABLE user_profiles
    ADD COLUMN sessions_valid_from bigint NOT NULL DEFAULT 0,
    ADD COLUMN sessions_kept_session_id uuid;
