//! JSON parsing for request bodies that rejects what `serde_json::Value` would quietly accept:
//! a key repeated within one object (where the last one would win) and nesting beyond a depth
//! no request needs.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Deepest nesting of objects and arrays accepted in a request body. Profile metadata, the
/// deepest field, may nest four levels inside the body's own object.
pub const MAX_DEPTH: usize = 32;

/// A rejected body: the reason and the position that `serde_json` reports.
#[derive(Debug)]
pub struct StrictJsonError {
    pub kind: StrictJsonErrorKind,
    pub line: usize,
    pub column: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrictJsonErrorKind {
    /// Not JSON at all, or trailing characters after it.
    Syntax,
    /// A key appears twice in one object.
    DuplicateKey,
    /// Objects and arrays nest deeper than [`MAX_DEPTH`].
    TooDeep,
}

/// Parses `bytes` as one JSON value.
pub fn parse(bytes: &[u8]) -> Result<Value, StrictJsonError> {
    let failure = Cell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = StrictValue {
        depth: 0,
        failure: &failure,
    }
    .deserialize(&mut deserializer)
    .and_then(|value| deserializer.end().map(|()| value));
    value.map_err(|error| StrictJsonError {
        kind: failure.get().unwrap_or(StrictJsonErrorKind::Syntax),
        line: error.line(),
        column: error.column(),
    })
}

/// Seed that builds a `Value` as serde_json does, checking keys and depth on the way. `failure`
/// records which check failed, since the error itself only carries text.
#[derive(Clone, Copy)]
struct StrictValue<'a> {
    depth: usize,
    failure: &'a Cell<Option<StrictJsonErrorKind>>,
}

impl StrictValue<'_> {
    fn fail<E: de::Error>(self, kind: StrictJsonErrorKind) -> E {
        self.failure.set(Some(kind));
        E::custom(match kind {
            StrictJsonErrorKind::DuplicateKey => "a key appears twice in one object",
            StrictJsonErrorKind::TooDeep => "the body nests too deeply",
            StrictJsonErrorKind::Syntax => "invalid JSON",
        })
    }

    fn nested<E: de::Error>(self) -> Result<Self, E> {
        if self.depth >= MAX_DEPTH {
            return Err(self.fail(StrictJsonErrorKind::TooDeep));
        }
        Ok(Self {
            depth: self.depth + 1,
            ..self
        })
    }
}

impl<'de> DeserializeSeed<'de> for StrictValue<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut values = Vec::new();
        while let Some(value) = items.next_element_seed(inner)? {
            values.push(value);
        }
        Ok(Value::Array(values))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut map = Map::new();
        while let Some(key) = entries.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(self.fail(StrictJsonErrorKind::DuplicateKey));
            }
            let value = entries.next_value_seed(inner)?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parse_matches_serde_json() {
        let text = br#"{"a": [1, -2, 3.5, "x", null, true], "b": {"c": {}}}"#;

        let parsed = parse(text).expect("valid JSON");

        assert_eq!(
            parsed,
            serde_json::from_slice::<Value>(text).expect("valid")
        );
    }

    #[test]
    fn parse_rejects_duplicate_key() {
        let error = parse(br#"{"email": "a@example.com", "email": "b@example.com"}"#)
            .expect_err("duplicate key");

        assert_eq!(error.kind, StrictJsonErrorKind::DuplicateKey);
        assert_eq!(error.line, 1);
    }

    #[test]
    fn parse_rejects_nested_duplicate_key() {
        let error = parse(br#"{"metadata": {"a": 1, "a": 2}}"#).expect_err("duplicate key");

        assert_eq!(error.kind, StrictJsonErrorKind::DuplicateKey);
    }

    #[test]
    fn parse_depth_limit() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));

        assert!(parse(nested(MAX_DEPTH).as_bytes()).is_ok());
        let error = parse(nested(MAX_DEPTH + 1).as_bytes()).expect_err("too deep");
        assert_eq!(error.kind, StrictJsonErrorKind::TooDeep);
        let error = parse(nested(3000).as_bytes()).expect_err("too deep");
        assert_eq!(error.kind, StrictJsonErrorKind::TooDeep);
    }

    #[test]
    fn parse_rejects_syntax_and_trailing_text() {
        for text in [&b"{"[..], b"{} {}", b"nul", b"{\"a\" 1}"] {
            let error = parse(text).expect_err("invalid JSON");
            assert_eq!(error.kind, StrictJsonErrorKind::Syntax);
        }
        assert_eq!(parse(b" {} ").expect("whitespace is fine"), json!({}));
    }
}
