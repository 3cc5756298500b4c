//! Authenticated encryption of personal fields (AES-256-GCM) and of the data keys themselves.
//!
//! Each subject has a random [`DataKey`]. Sealed bytes are a 96-bit random nonce followed by the
//! ciphertext and its tag, with the subject id as associated data, so that a sealed field copied
//! into another subject's event fails to open.

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde_json::{Map, Value};

use crate::personal::{ERASED_TAG, PERSONAL_TAG, SEALED_TAG};

const NONCE_LEN: usize = 12;

/// Prefix of a sealed string in event metadata, where values must stay strings.
pub const SEALED_STRING_PREFIX: &str = "sealed:";
/// Stands in for a metadata string whose data key was deleted.
pub const ERASED_STRING: &str = "[erased]";

/// Failure to seal or open a value. It carries no plaintext.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("sealed value is not valid base64url")]
    Encoding,
    #[error("sealed value failed authentication")]
    Authentication,
    #[error("sealed value does not hold JSON")]
    Json,
}

/// A 256-bit AES key: a subject's data key, or the service's master key.
#[derive(Clone)]
pub struct DataKey([u8; 32]);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("DataKey([redacted])")
    }
}

impl DataKey {
    pub fn generate() -> Self {
        let mut bytes = [0_u8; 32];
        OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn expose_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&self.0))
    }

    /// Encrypts `plaintext`, binding it to `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = self
            .cipher()
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .unwrap_or_default();

        let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    /// Decrypts bytes made by [`DataKey::seal`] with the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < NONCE_LEN {
            return Err(SealError::Authentication);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        self.cipher()
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| SealError::Authentication)
    }

    /// Wraps another key under this one, for storage next to the subject id.
    pub fn wrap(&self, subject: &str, key: &DataKey) -> Vec<u8> {
        self.seal(subject.as_bytes(), &key.0)
    }

    pub fn unwrap_key(&self, subject: &str, wrapped: &[u8]) -> Result<DataKey, SealError> {
        let bytes = self.open(subject.as_bytes(), wrapped)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| SealError::Authentication)?;
        Ok(DataKey(bytes))
    }
}

/// Replaces every `{"$personal": v}` object inside `value` with `{"$sealed": "..."}`.
pub fn seal_fields(value: &mut Value, key: &DataKey, aad: &[u8]) {
    match value {
        Value::Object(map) => {
            if let Some(plain) = single_entry(map, PERSONAL_TAG) {
                let bytes = serde_json::to_vec(plain).unwrap_or_default();
                let sealed = URL_SAFE_NO_PAD.encode(key.seal(aad, &bytes));
                *value = tagged(SEALED_TAG, Value::String(sealed));
                return;
            }
            map.values_mut()
                .for_each(|child| seal_fields(child, key, aad));
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|child| seal_fields(child, key, aad)),
        _ => {}
    }
}

/// Replaces every `{"$sealed": "..."}` object with `{"$personal": v}`, or with
/// `{"$erased": true}` when `key` is `None` because the subject's key was deleted.
pub fn open_fields(value: &mut Value, key: Option<&DataKey>, aad: &[u8]) -> Result<(), SealError> {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(sealed)) = single_entry(map, SEALED_TAG) {
                *value = match key {
                    Some(key) => {
                        let bytes = URL_SAFE_NO_PAD
                            .decode(sealed)
                            .map_err(|_| SealError::Encoding)?;
                        let plain = key.open(aad, &bytes)?;
                        let plain = serde_json::from_slice(&plain).map_err(|_| SealError::Json)?;
                        tagged(PERSONAL_TAG, plain)
                    }
                    None => tagged(ERASED_TAG, Value::Bool(true)),
                };
                return Ok(());
            }
            for child in map.values_mut() {
                open_fields(child, key, aad)?;
            }
            Ok(())
        }
        Value::Array(items) => {
            for child in items {
                open_fields(child, key, aad)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Seals one metadata string into `sealed:<base64url>`.
pub fn seal_string(plain: &str, key: &DataKey, aad: &[u8]) -> String {
    let sealed = URL_SAFE_NO_PAD.encode(key.seal(aad, plain.as_bytes()));
    format!("{SEALED_STRING_PREFIX}{sealed}")
}

/// Opens a string made by [`seal_string`]; other strings pass through unchanged.
pub fn open_string(text: &str, key: Option<&DataKey>, aad: &[u8]) -> Result<String, SealError> {
    let Some(sealed) = text.strip_prefix(SEALED_STRING_PREFIX) else {
        return Ok(text.to_owned());
    };
    let Some(key) = key else {
        return Ok(ERASED_STRING.to_owned());
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(sealed)
        .map_err(|_| SealError::Encoding)?;
    let plain = key.open(aad, &bytes)?;
    String::from_utf8(plain).map_err(|_| SealError::Json)
}

fn single_entry<'a>(map: &'a Map<String, Value>, tag: &str) -> Option<&'a Value> {
    if map.len() == 1 { map.get(tag) } else { None }
}

fn tagged(tag: &str, value: Value) -> Value {
    let mut map = Map::with_capacity(1);
    map.insert(tag.to_owned(), value);
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sealed_fields_hide_plaintext_and_open_again() {
        let key = DataKey::generate();
        let original = json!({"email": {"$personal": "ada@example.com"}, "index": "abc"});
        let mut value = original.clone();

        seal_fields(&mut value, &key, b"subject");
        let stored = value.to_string();
        open_fields(&mut value, Some(&key), b"subject").expect("open");

        assert!(!stored.contains("ada@example.com"));
        assert!(stored.contains("abc"));
        assert_eq!(value, original);
    }

    #[test]
    fn sealed_field_opens_as_erased_without_key() {
        let key = DataKey::generate();
        let mut value = json!({"name": {"$personal": "Ada"}});

        seal_fields(&mut value, &key, b"subject");
        open_fields(&mut value, None, b"subject").expect("open");

        assert_eq!(value, json!({"name": {"$erased": true}}));
    }

    #[test]
    fn sealed_field_fails_under_other_subject() {
        let key = DataKey::generate();
        let mut value = json!({"name": {"$personal": "Ada"}});

        seal_fields(&mut value, &key, b"subject-a");
        let result = open_fields(&mut value, Some(&key), b"subject-b");

        assert!(matches!(result, Err(SealError::Authentication)));
    }

    #[test]
    fn wrapped_key_unwraps_only_for_its_subject() {
        let master = DataKey::generate();
        let key = DataKey::generate();

        let wrapped = master.wrap("user-1", &key);
        let unwrapped = master.unwrap_key("user-1", &wrapped).expect("unwrap");

        assert_eq!(unwrapped.expose_bytes(), key.expose_bytes());
        assert!(master.unwrap_key("user-2", &wrapped).is_err());
    }

    #[test]
    fn metadata_string_round_trips() {
        let key = DataKey::generate();

        let sealed = seal_string("203.0.113.9", &key, b"s");

        assert!(sealed.starts_with(SEALED_STRING_PREFIX));
        assert_eq!(
            open_string(&sealed, Some(&key), b"s").expect("open"),
            "203.0.113.9"
        );
        assert_eq!(
            open_string(&sealed, None, b"s").expect("open"),
            ERASED_STRING
        );
    }
}
