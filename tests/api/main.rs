//! Integration tests: each test starts the service against its own fresh PostgreSQL database
//! and talks to it over a real socket or straight through the router.

mod helpers;

mod concurrency;
mod errors;
mod login;
mod mfa;
mod profile;
mod projector;
mod registration;
mod storage;
