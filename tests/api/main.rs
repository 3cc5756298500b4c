//! Integration tests: each test starts the service against its own fresh PostgreSQL database
//! and talks to it over a real socket or straight through the router.

mod helpers;

mod api_keys;
mod concurrency;
mod errors;
mod login;
mod mfa;
mod profile;
mod projector;
mod rate_limits;
mod registration;
mod sessions;
mod storage;
mod suspension;
