//! Time-based one-time passwords as RFC 6238 defines them, with the parameters every common
//! authenticator app assumes: HMAC-SHA-1, six digits and 30-second time steps.
//!
//! The rules here find which time step a submitted code belongs to; deciding whether that step
//! was already used is the user aggregate's job.

use chrono::{DateTime, Utc};
use totp_rs::{Algorithm, Secret, TOTP};

/// Digits in a code.
pub const DIGITS: usize = 6;
/// Length of one time step, in seconds.
pub const STEP_SECONDS: u64 = 30;
/// Steps before and after the current one whose codes are still accepted, for clock drift.
pub const SKEW_STEPS: u64 = 1;

/// Builds the generator for a base32 secret (RFC 4648 alphabet, no padding). Returns `None`
/// when the secret is not valid base32.
fn generator(secret_base32: &str) -> Option<TOTP> {
    let bytes = Secret::Encoded(secret_base32.to_owned()).to_bytes().ok()?;
    // The unchecked constructor skips totp-rs's 128-bit minimum, so that the 160-bit secrets
    // issued here and the shorter test vectors of RFC 6238 go through the same function.
    Some(TOTP::new_unchecked(
        Algorithm::SHA1,
        DIGITS,
        SKEW_STEPS as u8,
        STEP_SECONDS,
        bytes,
    ))
}

/// Computes the code for the raw secret `secret` at `unix_seconds`.
pub fn code_at(secret: &[u8], unix_seconds: u64) -> String {
    TOTP::new_unchecked(
        Algorithm::SHA1,
        DIGITS,
        SKEW_STEPS as u8,
        STEP_SECONDS,
        secret.to_vec(),
    )
    .generate(unix_seconds)
}

/// Computes the code for the base32 secret at `unix_seconds`, or `None` for invalid base32.
pub fn code_for_base32(secret_base32: &str, unix_seconds: u64) -> Option<String> {
    generator(secret_base32).map(|totp| totp.generate(unix_seconds))
}

/// Returns the time step that contains `time`. Times before 1970 count as step 0.
pub fn step_at(time: DateTime<Utc>) -> u64 {
    u64::try_from(time.timestamp()).unwrap_or(0) / STEP_SECONDS
}

/// Finds the step, within one step of `now`, whose code equals `code` and that is later than
/// `after`. Returns `None` for a wrong, malformed or already used code.
pub fn matching_step(
    secret_base32: &str,
    code: &str,
    now: DateTime<Utc>,
    after: Option<u64>,
) -> Option<u64> {
    if code.len() != DIGITS || !code.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let totp = generator(secret_base32)?;
    let current = step_at(now);

    let first = current.saturating_sub(SKEW_STEPS);
    (first..=current + SKEW_STEPS)
        .filter(|step| after.is_none_or(|used| *step > used))
        .find(|step| constant_time_equal(&totp.generate(step * STEP_SECONDS), code))
}

/// Compares two codes in time that depends only on their length.
fn constant_time_equal(left: &str, right: &str) -> bool {
    left.len() == right.len()
        && left
            .bytes()
            .zip(right.bytes())
            .fold(0_u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// The SHA-1 rows of RFC 6238 Appendix B: time and the last six digits of the 8-digit code.
    const RFC_6238_SHA1: [(u64, &str); 6] = [
        (59, "287082"),
        (1_111_111_109, "081804"),
        (1_111_111_111, "050471"),
        (1_234_567_890, "005924"),
        (2_000_000_000, "279037"),
        (20_000_000_000, "353130"),
    ];

    const RFC_SECRET: &[u8] = b"12345678901234567890";

    fn at(unix_seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(unix_seconds, 0)
            .single()
            .expect("valid time")
    }

    fn rfc_secret_base32() -> String {
        match Secret::Raw(RFC_SECRET.to_vec()).to_encoded() {
            Secret::Encoded(encoded) => encoded,
            Secret::Raw(_) => unreachable!("to_encoded returns the encoded form"),
        }
    }

    #[test]
    fn rfc_6238_sha1_vectors_match() {
        for (time, expected) in RFC_6238_SHA1 {
            assert_eq!(code_at(RFC_SECRET, time), expected, "code at {time}");
        }
    }

    #[test]
    fn base32_secret_gives_same_codes() {
        let secret = rfc_secret_base32();

        for (time, expected) in RFC_6238_SHA1 {
            let code = code_for_base32(&secret, time).expect("valid base32");
            assert_eq!(code, expected, "code at {time}");
        }
    }

    #[test]
    fn code_of_neighbour_step_is_accepted() {
        let secret = rfc_secret_base32();
        let now = at(1_111_111_111);
        let previous = code_for_base32(&secret, 1_111_111_111 - 30).expect("code");
        let next = code_for_base32(&secret, 1_111_111_111 + 30).expect("code");

        assert_eq!(
            matching_step(&secret, &previous, now, None),
            Some(step_at(now) - 1)
        );
        assert_eq!(
            matching_step(&secret, &next, now, None),
            Some(step_at(now) + 1)
        );
    }

    #[test]
    fn code_two_steps_away_is_rejected() {
        let secret = rfc_secret_base32();
        let now = at(1_111_111_111);
        let old = code_for_base32(&secret, 1_111_111_111 - 60).expect("code");

        assert_eq!(matching_step(&secret, &old, now, None), None);
    }

    #[test]
    fn used_step_is_rejected() {
        let secret = rfc_secret_base32();
        let now = at(1_111_111_111);
        let code = code_for_base32(&secret, 1_111_111_111).expect("code");

        assert_eq!(matching_step(&secret, &code, now, Some(step_at(now))), None);
    }

    #[test]
    fn malformed_code_is_rejected() {
        let secret = rfc_secret_base32();
        let now = at(1_111_111_111);

        for code in ["", "05047", "0504711", "05047a", " 50471"] {
            assert_eq!(matching_step(&secret, code, now, None), None, "{code:?}");
        }
    }
}
