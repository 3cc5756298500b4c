//! The event store as the service uses it: postgres-es behind a repository that seals personal
//! fields, the per-subject data keys, and the command bus that appends events and waits for the
//! projections to pass them.

mod bus;
mod keys;
mod repository;

pub use bus::{CommandBus, CommandError, CommandMetadata, CommandOutcome, is_unavailable};
pub use keys::KeyRing;
pub use repository::SealingRepository;

/// SQLSTATE the events trigger raises when an email address is already claimed.
pub const EMAIL_CLAIMED_SQLSTATE: &str = "LD409";

/// Metadata keys whose values are personal data and are sealed like payload fields.
pub const PERSONAL_METADATA_KEYS: [&str; 2] = ["client_ip", "user_agent"];

/// Metadata key naming whose data key seals an event, when it is not the aggregate itself.
pub const SUBJECT_METADATA_KEY: &str = "subject";
