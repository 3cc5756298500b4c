//! Value types that validate input at the edge. Each one can only be built through its parser,
//! so a value inside a command is always valid and canonical.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use unicode_normalization::UnicodeNormalization;

/// Longest email address accepted, in bytes (the SMTP path limit).
pub const EMAIL_MAX_LEN: usize = 254;
/// Longest display, given or family name accepted, in characters.
pub const NAME_MAX_CHARS: usize = 100;
/// Longest picture URL accepted, in bytes.
pub const URL_MAX_LEN: usize = 2048;
/// Largest `metadata` object accepted, in bytes of compact JSON.
pub const METADATA_MAX_BYTES: usize = 4096;
/// Deepest nesting of objects and arrays accepted inside `metadata`.
pub const METADATA_MAX_DEPTH: usize = 4;
/// Shortest and longest password accepted, in characters.
pub const PASSWORD_MIN_CHARS: usize = 12;
pub const PASSWORD_MAX_CHARS: usize = 128;
/// Lowest zxcvbn score (0 to 4) a password must reach.
pub const PASSWORD_MIN_SCORE: zxcvbn::Score = zxcvbn::Score::Three;

/// A field that failed validation, with the reason a client can act on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: &'static str,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

/// An email address in canonical form: trimmed, NFKC-normalised and lower-cased.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let canonical: String = raw.trim().nfkc().collect::<String>().to_lowercase();

        if canonical.is_empty() {
            return Err(FieldError::new("email", "must not be empty"));
        }
        if canonical.len() > EMAIL_MAX_LEN {
            return Err(FieldError::new(
                "email",
                format!("must be at most {EMAIL_MAX_LEN} bytes"),
            ));
        }
        if has_control(&canonical) || canonical.chars().any(char::is_whitespace) {
            return Err(FieldError::new(
                "email",
                "must not contain spaces or control characters",
            ));
        }
        let canonical = canonical_parts(&canonical)?;
        // The ASCII form of a domain can be longer than the form that was sent.
        if canonical.len() > EMAIL_MAX_LEN {
            return Err(FieldError::new(
                "email",
                format!("must be at most {EMAIL_MAX_LEN} bytes"),
            ));
        }
        let valid = email_address::EmailAddress::parse_with_options(
            &canonical,
            email_address::Options::default()
                .without_display_text()
                .without_domain_literal(),
        )
        .is_ok();
        let (_, domain) = canonical.rsplit_once('@').unwrap_or(("", ""));
        if !valid || !domain.contains('.') || domain.ends_with('.') {
            return Err(FieldError::new("email", "is not a valid email address"));
        }
        Ok(Self(canonical))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn local_part(&self) -> &str {
        self.0.rsplit_once('@').map_or(&self.0, |(local, _)| local)
    }
}

/// Checks the local part and puts the domain in its ASCII form, so that each mailbox has one
/// spelling. The local part may contain the unquoted characters of RFC 5322 and characters that
/// Unicode counts as alphabetic or numeric. A quoted local part names the same mailbox as its
/// unquoted form, and invisible characters (soft hyphen, zero-width space, direction overrides)
/// would let two spellings look alike.
/// NOTE: combining marks that are not alphabetic (needed by some scripts, such as Devanagari
/// vowel signs) are rejected too.
/// The domain goes through IDNA (UTS 46), which drops ignorable characters such as a soft hyphen
/// and percent-decodes, so the Unicode and `xn--` forms of a domain are one.
fn canonical_parts(address: &str) -> Result<String, FieldError> {
    let invalid = || FieldError::new("email", "is not a valid email address");
    let (local, domain) = address.rsplit_once('@').ok_or_else(invalid)?;

    let plain = |c: char| {
        c.is_ascii_alphanumeric()
            || "!#$%&'*+-/=?^_`{|}~.".contains(c)
            || (!c.is_ascii() && c.is_alphanumeric())
    };
    if local.is_empty() || !local.chars().all(plain) {
        return Err(FieldError::new(
            "email",
            "must not contain quotes, invisible characters or symbols outside RFC 5322 in the \
             part before the @",
        ));
    }
    match url::Host::parse(domain) {
        Ok(url::Host::Domain(ascii)) => Ok(format!("{local}@{ascii}")),
        _ => Err(invalid()),
    }
}

/// A display, given or family name: trimmed, NFC, 1 to 100 characters, no control characters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Name(String);

impl Name {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, FieldError> {
        let name: String = raw.trim().nfc().collect();
        let chars = name.chars().count();
        if chars == 0 {
            return Err(FieldError::new(
                field,
                "must not be empty; send null to clear it",
            ));
        }
        if chars > NAME_MAX_CHARS {
            return Err(FieldError::new(
                field,
                format!("must be at most {NAME_MAX_CHARS} characters"),
            ));
        }
        if has_control(&name) {
            return Err(FieldError::new(
                field,
                "must not contain control characters",
            ));
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A BCP 47 language tag of the common form `language[-Script][-REGION]`, in canonical case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Locale(String);

impl Locale {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let invalid = || {
            FieldError::new(
                "locale",
                "must be a language tag such as \"en\", \"en-GB\" or \"zh-Hant-TW\"",
            )
        };
        let mut parts = raw.trim().split(['-', '_']);

        let language = parts.next().ok_or_else(invalid)?;
        if !(2..=3).contains(&language.len()) || !language.chars().all(|c| c.is_ascii_alphabetic())
        {
            return Err(invalid());
        }
        let mut tag = language.to_ascii_lowercase();

        let mut next = parts.next();
        if let Some(script) = next.filter(|part| part.len() == 4) {
            if !script.chars().all(|c| c.is_ascii_alphabetic()) {
                return Err(invalid());
            }
            tag.push('-');
            tag.push_str(&script[..1].to_ascii_uppercase());
            tag.push_str(&script[1..].to_ascii_lowercase());
            next = parts.next();
        }
        if let Some(region) = next {
            let alpha = region.len() == 2 && region.chars().all(|c| c.is_ascii_alphabetic());
            let numeric = region.len() == 3 && region.chars().all(|c| c.is_ascii_digit());
            if !alpha && !numeric {
                return Err(invalid());
            }
            tag.push('-');
            tag.push_str(&region.to_ascii_uppercase());
        }
        if parts.next().is_some() {
            return Err(invalid());
        }
        Ok(Self(tag))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An IANA time zone name known to the bundled tz database.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TimeZone(String);

impl TimeZone {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let zone: chrono_tz::Tz = raw.trim().parse().map_err(|_| {
            FieldError::new(
                "timezone",
                "must be an IANA time zone such as \"Europe/Paris\"",
            )
        })?;
        Ok(Self(zone.name().to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A phone number in E.164 form: `+`, then 2 to 15 digits, the first not zero.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Phone(String);

impl Phone {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let invalid = || FieldError::new("phone", "must be in E.164 form such as \"+14155550100\"");
        let digits = raw.trim().strip_prefix('+').ok_or_else(invalid)?;
        let valid = (2..=15).contains(&digits.len())
            && digits.chars().all(|c| c.is_ascii_digit())
            && !digits.starts_with('0');
        if !valid {
            return Err(invalid());
        }
        Ok(Self(format!("+{digits}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An absolute `https` or `http` URL of at most 2048 bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PictureUrl(String);

impl PictureUrl {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let raw = raw.trim();
        if raw.len() > URL_MAX_LEN {
            return Err(FieldError::new(
                "picture_url",
                format!("must be at most {URL_MAX_LEN} bytes"),
            ));
        }
        let url = url::Url::parse(raw)
            .map_err(|_| FieldError::new("picture_url", "must be an absolute URL"))?;
        if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
            return Err(FieldError::new(
                "picture_url",
                "must be an http or https URL with a host",
            ));
        }
        Ok(Self(url.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A client-defined JSON object of at most 4 KiB and nesting depth 4.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Metadata(Map<String, Value>);

impl Metadata {
    pub fn parse(raw: Value) -> Result<Self, FieldError> {
        let Value::Object(map) = raw else {
            return Err(FieldError::new("metadata", "must be a JSON object"));
        };
        let size = serde_json::to_vec(&map).map_or(usize::MAX, |bytes| bytes.len());
        if size > METADATA_MAX_BYTES {
            return Err(FieldError::new(
                "metadata",
                format!("must be at most {METADATA_MAX_BYTES} bytes as JSON"),
            ));
        }
        if map.values().map(depth).max().unwrap_or(0) >= METADATA_MAX_DEPTH {
            return Err(FieldError::new(
                "metadata",
                format!("must nest at most {METADATA_MAX_DEPTH} levels deep"),
            ));
        }
        // PostgreSQL's text and jsonb types cannot store U+0000, so the read model that keeps
        // this object would fail on it.
        let has_nul = |text: &str| text.contains('\0');
        if map.keys().any(|key| has_nul(key))
            || map.values().any(|value| contains_str(value, &has_nul))
        {
            return Err(FieldError::new(
                "metadata",
                "must not contain the character U+0000 in a key or string",
            ));
        }
        Ok(Self(map))
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    pub fn into_map(self) -> Map<String, Value> {
        self.0
    }
}

/// Tells whether `test` holds for any string or object key inside `value`.
fn contains_str(value: &Value, test: &impl Fn(&str) -> bool) -> bool {
    match value {
        Value::String(text) => test(text),
        Value::Object(map) => map
            .iter()
            .any(|(key, value)| test(key) || contains_str(value, test)),
        Value::Array(items) => items.iter().any(|item| contains_str(item, test)),
        _ => false,
    }
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Brings a password to NFKC, as NIST SP 800-63B advises, so that one password typed on two
/// keyboards (composed or decomposed accents, full-width letters) hashes alike. Hashing,
/// verification and the policy all see this form.
pub fn normalize_password(password: &str) -> String {
    password.nfkc().collect()
}

/// Checks a new password against the policy: 12 to 128 characters after NFKC, no control
/// characters, a zxcvbn score of at least three, and not containing the local part of the
/// account's email address.
pub fn check_password_policy(
    field: &'static str,
    password: &str,
    email: &Email,
) -> Result<(), FieldError> {
    let password = normalize_password(password);
    let password = password.as_str();
    let chars = password.chars().count();
    if !(PASSWORD_MIN_CHARS..=PASSWORD_MAX_CHARS).contains(&chars) {
        return Err(FieldError::new(
            field,
            format!("must be {PASSWORD_MIN_CHARS} to {PASSWORD_MAX_CHARS} characters"),
        ));
    }

    if has_control(password) {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }

    let local = email.local_part();
    if local.chars().count() >= 3 && password.to_lowercase().contains(local) {
        return Err(FieldError::new(field, "must not contain the email address"));
    }

    let estimate = zxcvbn::zxcvbn(password, &[email.as_str(), local]);
    if estimate.score() < PASSWORD_MIN_SCORE {
        return Err(FieldError::new(
            field,
            "is too easy to guess; use a longer phrase of unrelated words",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn email_is_canonical() {
        let email = Email::parse("  Ada.Lovelace@Example.COM ").expect("valid");

        assert_eq!(email.as_str(), "ada.lovelace@example.com");
        assert_eq!(email.local_part(), "ada.lovelace");
    }

    #[test]
    fn email_full_width_folds_to_ascii() {
        let email = Email::parse("ＡＤＡ@example.com").expect("valid");

        assert_eq!(email.as_str(), "ada@example.com");
    }

    #[test]
    fn email_domain_has_one_spelling() {
        let unicode = Email::parse("bob@exämple.com").expect("valid");
        let ascii = Email::parse("bob@xn--exmple-cua.com").expect("valid");
        let soft_hyphen = Email::parse("bob@exam\u{ad}ple.com").expect("valid");

        assert_eq!(unicode.as_str(), "bob@xn--exmple-cua.com");
        assert_eq!(unicode, ascii);
        assert_eq!(soft_hyphen.as_str(), "bob@example.com");
        // A zero-width space in the domain is either rejected or dropped, never kept.
        if let Ok(zero_width) = Email::parse("bob@example.c\u{200b}om") {
            assert_eq!(zero_width.as_str(), "bob@example.com");
        }
    }

    #[test]
    fn email_length_counts_ascii_domain() {
        let raw = format!("{}@{}com", "a".repeat(64), "ä.".repeat(30));
        assert!(raw.len() <= EMAIL_MAX_LEN);

        assert!(Email::parse(&raw).is_err());
    }

    #[test]
    fn email_local_part_rejects_lookalikes() {
        for raw in [
            "\"bob\"@example.com",
            "b\u{ad}ob@example.com",
            "\u{202e}bob@example.com",
            "b\u{200b}ob@example.com",
            "bob\u{2060}@example.com",
        ] {
            assert!(Email::parse(raw).is_err(), "{raw:?} was accepted");
        }
        assert_eq!(
            Email::parse("josé@example.com").expect("valid").as_str(),
            "josé@example.com"
        );
    }

    #[test]
    fn email_rejects_invalid_forms() {
        for raw in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "a b@example.com",
            "ada@localhost",
            "a\u{0}@x.io",
        ] {
            assert!(Email::parse(raw).is_err(), "accepted {raw:?}");
        }
    }

    #[test]
    fn email_rejects_overlong() {
        let raw = format!("{}@example.com", "a".repeat(250));

        assert!(Email::parse(&raw).is_err());
    }

    #[test]
    fn name_bounds() {
        assert_eq!(
            Name::parse("display_name", "  Ada ")
                .expect("valid")
                .as_str(),
            "Ada"
        );
        assert!(Name::parse("display_name", "   ").is_err());
        assert!(Name::parse("display_name", &"x".repeat(101)).is_err());
        assert!(Name::parse("display_name", "Ada\nLovelace").is_err());
    }

    #[test]
    fn locale_canonical_case() {
        assert_eq!(Locale::parse("en").expect("valid").as_str(), "en");
        assert_eq!(Locale::parse("en_gb").expect("valid").as_str(), "en-GB");
        assert_eq!(
            Locale::parse("ZH-hant-tw").expect("valid").as_str(),
            "zh-Hant-TW"
        );
        assert_eq!(Locale::parse("es-419").expect("valid").as_str(), "es-419");
        assert!(Locale::parse("english").is_err());
        assert!(Locale::parse("en-GB-x").is_err());
    }

    #[test]
    fn timezone_must_be_known() {
        assert_eq!(
            TimeZone::parse("Europe/Paris").expect("valid").as_str(),
            "Europe/Paris"
        );
        assert!(TimeZone::parse("Mars/Olympus").is_err());
    }

    #[test]
    fn phone_is_e164() {
        assert_eq!(
            Phone::parse("+14155550100").expect("valid").as_str(),
            "+14155550100"
        );
        assert!(Phone::parse("4155550100").is_err());
        assert!(Phone::parse("+0123").is_err());
        assert!(Phone::parse("+1234567890123456").is_err());
        assert!(Phone::parse("+1 415").is_err());
    }

    #[test]
    fn picture_url_needs_http_scheme() {
        assert!(PictureUrl::parse("https://cdn.example.com/a.png").is_ok());
        assert!(PictureUrl::parse("javascript:alert(1)").is_err());
        assert!(PictureUrl::parse("/relative.png").is_err());
    }

    #[test]
    fn metadata_bounds() {
        assert!(Metadata::parse(json!({"plan": "pro"})).is_ok());
        assert!(Metadata::parse(json!(["not", "object"])).is_err());
        assert!(Metadata::parse(json!({"a": {"b": {"c": {"d": {}}}}})).is_err());
        assert!(Metadata::parse(json!({"big": "x".repeat(5000)})).is_err());
    }

    #[test]
    fn metadata_rejects_nul() {
        assert!(Metadata::parse(json!({"note": "line one\nline two\ttab"})).is_ok());
        assert!(Metadata::parse(json!({"a": "\u{0}"})).is_err());
        assert!(Metadata::parse(json!({"a\u{0}": 1})).is_err());
        assert!(Metadata::parse(json!({"a": {"b\u{0}": true}})).is_err());
        assert!(Metadata::parse(json!({"a": [1, ["x\u{0}y"]]})).is_err());
    }

    #[test]
    fn password_policy() {
        let email = Email::parse("ada.lovelace@example.com").expect("valid");

        assert!(check_password_policy("password", "correct horse battery staple", &email).is_ok());
        assert!(check_password_policy("password", "short", &email).is_err());
        assert!(check_password_policy("password", "passwordpassword", &email).is_err());
        assert!(check_password_policy("password", "ada.lovelace-rules-99", &email).is_err());
        assert!(check_password_policy("password", &"Zq9!".repeat(40), &email).is_err());
    }

    #[test]
    fn password_policy_reads_normal_form() {
        let email = Email::parse("violetostrich@example.com").expect("valid");

        // Full-width letters fold to the local part of the address.
        let full_width = "ｖｉｏｌｅｔｏｓｔｒｉｃｈ paints 8221";
        assert!(check_password_policy("password", full_width, &email).is_err());
        assert!(
            check_password_policy("password", "amber walrus\u{0}hums quietly", &email).is_err()
        );
        assert_eq!(
            normalize_password("cafe\u{301} cre\u{300}me"),
            normalize_password("caf\u{e9} cr\u{e8}me")
        );
    }
}
