//! Services the aggregate rules call: password hashing, the clock and blind indexes.
//! The service crate implements them; tests use the same real implementations.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::SecretString;

use crate::values::Email;

/// A failure inside a service, with no secret in its text.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ServiceError(pub String);

/// Password hashing with a memory-hard function.
#[async_trait]
pub trait PasswordHasher: Send + Sync {
    async fn hash(&self, password: &SecretString) -> Result<String, ServiceError>;
    async fn verify(&self, password: &SecretString, hash: &str) -> Result<bool, ServiceError>;
}

/// The current time, replaceable in tests.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Keyed one-way indexes of canonical values, for lookups without plaintext.
pub trait BlindIndex: Send + Sync {
    fn email_index(&self, email: &Email) -> String;
}

/// Everything the user aggregate needs from outside.
#[derive(Clone)]
pub struct UserServices {
    pub hasher: Arc<dyn PasswordHasher>,
    pub clock: Arc<dyn Clock>,
    pub index: Arc<dyn BlindIndex>,
}

/// Everything the session aggregate needs from outside.
#[derive(Clone)]
pub struct SessionServices {
    pub clock: Arc<dyn Clock>,
}
