//! Key material and credential primitives: the master key and the keys derived from it, blind
//! indexes, opaque tokens, and argon2id password hashing off the async workers.

use std::path::Path;
use std::sync::Arc;

use aggregates::sealing::DataKey;
use aggregates::services::{BlindIndex, PasswordHasher, ServiceError};
use aggregates::values::{Email, normalize_password};
use anyhow::Context;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

type HmacSha256 = Hmac<Sha256>;

/// Name of the key file created under the data directory on a first run.
pub const MASTER_KEY_FILE: &str = "master.key";

/// argon2id cost: 19 MiB of memory, two passes, one lane.
pub const ARGON2_MEMORY_KIB: u32 = 19_456;
pub const ARGON2_ITERATIONS: u32 = 2;
pub const ARGON2_PARALLELISM: u32 = 1;

/// Loads the master key from `configured` (base64 of 32 bytes), or else from the key file in
/// `data_dir`, creating that file with a fresh key when it does not exist.
pub fn load_master_key(
    configured: Option<&SecretString>,
    data_dir: &Path,
) -> anyhow::Result<DataKey> {
    if let Some(encoded) = configured {
        return decode_key(encoded.expose_secret())
            .context("LEDGER_MASTER_KEY must be the base64 encoding of exactly 32 bytes");
    }

    let path = data_dir.join(MASTER_KEY_FILE);
    if path.exists() {
        let encoded = std::fs::read_to_string(&path)
            .with_context(|| format!("failed to read the master key file {}", path.display()))?;
        return decode_key(encoded.trim())
            .with_context(|| format!("the master key file {} is corrupt", path.display()));
    }

    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("failed to create the data directory {}", data_dir.display()))?;
    let key = DataKey::generate();
    write_private_file(&path, &STANDARD.encode(key.expose_bytes()))?;
    tracing::warn!(
        path = %path.display(),
        "created a new master key file; set LEDGER_MASTER_KEY in production and keep a backup, \
         since losing this key makes every sealed field unreadable"
    );
    Ok(key)
}

fn decode_key(encoded: &str) -> anyhow::Result<DataKey> {
    let bytes = STANDARD.decode(encoded.trim())?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("the key is not 32 bytes long"))?;
    Ok(DataKey::from_bytes(bytes))
}

fn write_private_file(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;

    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("failed to create {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// Derives a purpose-specific key from the master key (HMAC-SHA256 as a one-step KDF).
pub fn derive_key(master: &DataKey, purpose: &str) -> DataKey {
    let mut mac = HmacSha256::new_from_slice(master.expose_bytes()).expect("HMAC takes any key");
    mac.update(b"account-ledger/");
    mac.update(purpose.as_bytes());
    DataKey::from_bytes(mac.finalize().into_bytes().into())
}

/// Blind index of canonical values: hex HMAC-SHA256 under a key derived from the master key.
pub struct Indexer {
    key: DataKey,
}

impl Indexer {
    pub fn new(master: &DataKey) -> Self {
        Self {
            key: derive_key(master, "email-index/v1"),
        }
    }
}

impl BlindIndex for Indexer {
    fn email_index(&self, email: &Email) -> String {
        let mut mac =
            HmacSha256::new_from_slice(self.key.expose_bytes()).expect("HMAC takes any key");
        mac.update(email.as_str().as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// Kinds of opaque token, each with its visible prefix.
#[derive(Clone, Copy, Debug)]
pub enum TokenKind {
    Session,
    ApiKey,
    /// The second step of a login; good only at `/auth/login/mfa`.
    Mfa,
    /// A link token that verifies an email address.
    EmailLink,
    /// A token that resets a password.
    PasswordReset,
}

impl TokenKind {
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Session => "las_",
            Self::ApiKey => "lak_",
            Self::Mfa => "lam_",
            Self::EmailLink => "lev_",
            Self::PasswordReset => "lpr_",
        }
    }
}

/// A freshly generated opaque token and the hash that is stored in its place.
pub struct IssuedToken {
    pub token: SecretString,
    pub hash: String,
}

/// Generates 256 random bits as base64url behind the kind's prefix.
pub fn issue_token(kind: TokenKind) -> IssuedToken {
    let mut bytes = [0_u8; 32];
    OsRng.fill_bytes(&mut bytes);
    let token = format!("{}{}", kind.prefix(), URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash_token(&token);
    IssuedToken {
        token: SecretString::from(token),
        hash,
    }
}

/// Hex SHA-256 of a token, the only form in which tokens are stored.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Six-digit email verification codes and their keyed hashes. A code has only a million
/// values, so a plain hash would fall to a table; the key is derived from the master key.
pub struct CodeHasher {
    key: DataKey,
}

impl CodeHasher {
    pub fn new(master: &DataKey) -> Self {
        Self {
            key: derive_key(master, "verification-code/v1"),
        }
    }

    /// Draws a uniformly random code of six digits, leading zeros included.
    pub fn generate(&self) -> String {
        use rand::Rng;
        format!("{:06}", rand::thread_rng().gen_range(0..1_000_000))
    }

    /// Hex HMAC-SHA256 of the code, bound to the account it was issued for.
    pub fn hash(&self, user_id: &uuid::Uuid, code: &str) -> String {
        let mut mac =
            HmacSha256::new_from_slice(self.key.expose_bytes()).expect("HMAC takes any key");
        mac.update(user_id.as_bytes());
        mac.update(b":");
        mac.update(code.trim().as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// argon2id hashing on the blocking pool, with at most `concurrency` hashes at once so that a
/// burst of logins queues instead of exhausting memory or starving the async workers.
pub struct Argon2Hasher {
    permits: Arc<Semaphore>,
    dummy_hash: String,
}

impl Argon2Hasher {
    pub fn new(concurrency: usize) -> anyhow::Result<Self> {
        let mut random = [0_u8; 32];
        OsRng.fill_bytes(&mut random);
        let dummy_hash = hash_blocking(&URL_SAFE_NO_PAD.encode(random))?;
        Ok(Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            dummy_hash,
        })
    }

    /// Runs one verification against a hash of a random password, so that a login for an
    /// unknown account costs the same time as one for a known account.
    pub async fn verify_dummy(&self, password: &SecretString) {
        let _ = self.verify(password, &self.dummy_hash.clone()).await;
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ServiceError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ServiceError("password hasher is shut down".to_owned()))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|_| ServiceError("password hashing task failed".to_owned()))
    }
}

fn argon2() -> Argon2<'static> {
    let params = Params::new(
        ARGON2_MEMORY_KIB,
        ARGON2_ITERATIONS,
        ARGON2_PARALLELISM,
        None,
    )
    .expect("argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn hash_blocking(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    let hash = argon2()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|error| anyhow::anyhow!("argon2 hashing failed: {error}"))?;
    Ok(hash.to_string())
}

/// Returns the password in NFKC, the form that is hashed and verified.
fn normalized(password: &SecretString) -> SecretString {
    SecretString::from(normalize_password(password.expose_secret()))
}

#[async_trait]
impl PasswordHasher for Argon2Hasher {
    async fn hash(&self, password: &SecretString) -> Result<String, ServiceError> {
        let password = normalized(password);
        self.run(move || hash_blocking(password.expose_secret()))
            .await?
            .map_err(|error| ServiceError(error.to_string()))
    }

    async fn verify(&self, password: &SecretString, hash: &str) -> Result<bool, ServiceError> {
        let password = normalized(password);
        let hash = hash.to_owned();
        self.run(move || {
            let Ok(parsed) = PasswordHash::new(&hash) else {
                return false;
            };
            argon2()
                .verify_password(password.expose_secret().as_bytes(), &parsed)
                .is_ok()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_has_prefix_and_256_bits() {
        let issued = issue_token(TokenKind::Session);
        let token = issued.token.expose_secret();

        let body = token.strip_prefix("las_").expect("prefix");
        assert_eq!(URL_SAFE_NO_PAD.decode(body).expect("base64url").len(), 32);
        assert_eq!(issued.hash, hash_token(token));
    }

    #[test]
    fn derived_keys_differ_by_purpose() {
        let master = DataKey::generate();

        let first = derive_key(&master, "a");
        let second = derive_key(&master, "b");

        assert_ne!(first.expose_bytes(), second.expose_bytes());
    }

    #[tokio::test]
    async fn hasher_uses_configured_parameters() {
        let hasher = Argon2Hasher::new(1).expect("hasher");
        let password = SecretString::from("correct horse battery staple");

        let hash = hasher.hash(&password).await.expect("hash");

        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(hasher.verify(&password, &hash).await.expect("verify"));
        let wrong = SecretString::from("wrong horse battery staple");
        assert!(!hasher.verify(&wrong, &hash).await.expect("verify"));
    }

    #[test]
    fn master_key_file_is_created_once() {
        let dir = std::env::temp_dir().join(format!("ledger-key-{}", uuid::Uuid::now_v7()));

        let first = load_master_key(None, &dir).expect("create");
        let second = load_master_key(None, &dir).expect("reload");

        assert_eq!(first.expose_bytes(), second.expose_bytes());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
