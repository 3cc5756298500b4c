//! A wrapper that marks a field of an event as personal data.
//!
//! The wrapper serialises as `{"$personal": value}` so that the event store can find every
//! personal field in a payload and seal it. After the subject's data key is deleted, a sealed
//! field deserialises as [`Personal::Erased`].

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Tag of a field that holds plaintext personal data in a serialised event.
pub const PERSONAL_TAG: &str = "$personal";
/// Tag of a field whose ciphertext is stored in the event table.
pub const SEALED_TAG: &str = "$sealed";
/// Tag of a field whose data key no longer exists.
pub const ERASED_TAG: &str = "$erased";

/// A personal field of an event: its value while the subject's data key exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Personal<T> {
    Known(T),
    Erased,
}

impl<T> Personal<T> {
    /// Returns the value, or `None` once it has been erased.
    pub fn known(&self) -> Option<&T> {
        match self {
            Self::Known(value) => Some(value),
            Self::Erased => None,
        }
    }

    pub fn into_known(self) -> Option<T> {
        match self {
            Self::Known(value) => Some(value),
            Self::Erased => None,
        }
    }
}

impl<T> From<T> for Personal<T> {
    fn from(value: T) -> Self {
        Self::Known(value)
    }
}

impl<T: Serialize> Serialize for Personal<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;

        let mut map = serializer.serialize_map(Some(1))?;
        match self {
            Self::Known(value) => map.serialize_entry(PERSONAL_TAG, value)?,
            Self::Erased => map.serialize_entry(ERASED_TAG, &true)?,
        }
        map.end()
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Representation<T> {
    Known {
        #[serde(rename = "$personal")]
        value: T,
    },
    Erased {
        #[serde(rename = "$erased")]
        #[allow(dead_code)]
        erased: bool,
    },
    Sealed {
        #[serde(rename = "$sealed")]
        #[allow(dead_code)]
        sealed: String,
    },
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Personal<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A field still sealed here had no key to open it, which is the same as erased.
        Ok(match Representation::deserialize(deserializer)? {
            Representation::Known { value } => Self::Known(value),
            Representation::Erased { .. } | Representation::Sealed { .. } => Self::Erased,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn known_value_round_trips() {
        let value = Personal::Known(Some("Ada".to_owned()));

        let json = serde_json::to_value(&value).expect("serialise");
        let back: Personal<Option<String>> = serde_json::from_value(json.clone()).expect("parse");

        assert_eq!(json, json!({"$personal": "Ada"}));
        assert_eq!(back, value);
    }

    #[test]
    fn sealed_value_reads_as_erased() {
        let back: Personal<String> =
            serde_json::from_value(json!({"$sealed": "AAAA"})).expect("parse");

        assert_eq!(back, Personal::Erased);
    }
}
