//! The account-ledger domain: the user and session aggregates, their commands and events, the
//! value types that validate input at the edge, and the service traits the rules call.
//!
//! Nothing here knows about HTTP or SQL. Personal fields travel inside events as
//! [`personal::Personal`] values, which the event store seals with the subject's data key.

pub mod api_key;
pub mod personal;
pub mod sealing;
pub mod services;
pub mod session;
pub mod totp;
pub mod user;
pub mod values;
