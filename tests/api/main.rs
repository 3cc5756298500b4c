//! Integration tests: each test starts the service against its own fresh PostgreSQL database
//! and talks to it over a real socket or straight through the router.

mod helpers;

mod api_keys;
mod concurrency;
mod email_change;
mod errors;
mod login;
mod mail;
mod mailbox;
mod mfa;
mod password;
mod profile;
mod projector;
mod rate_limits;
mod registration;
mod sessions;
mod storage;
mod suspension;
