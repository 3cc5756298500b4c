//! Service-side parts of multi-factor authentication: fresh TOTP secrets, the `otpauth://`
//! URI that authenticator apps read and its QR code, and recovery codes with their keyed
//! hashes. The rules that accept or reject codes live in the user aggregate.

use aggregates::sealing::DataKey;
use aggregates::totp;
use aggregates::user::RECOVERY_CODE_COUNT;
use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use rand::rngs::OsRng;
use secrecy::SecretString;
use sha2::Sha256;
use totp_rs::Secret;

use crate::config::TotpAccountLabel;
use crate::crypto::derive_key;

/// Bytes of a TOTP secret: 160 bits, the length RFC 4226 recommends.
const SECRET_BYTES: usize = 20;
/// The RFC 4648 base32 alphabet, also used for recovery codes.
const BASE32_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// Characters in a recovery code, 5 random bits each: 60 bits per code.
const RECOVERY_CODE_CHARS: usize = 12;
/// Characters between the hyphens of a displayed recovery code.
const RECOVERY_CODE_GROUP: usize = 4;
/// Pixels per QR module, and modules of blank border that scanners need around the code.
const QR_MODULE_PIXELS: usize = 6;
const QR_QUIET_ZONE: usize = 4;

/// The TOTP issuer name and label, and the key that recovery-code hashes are made with.
pub struct MfaSettings {
    issuer: String,
    account_label: TotpAccountLabel,
    recovery_code_key: DataKey,
}

/// A new set of recovery codes: the codes to show once, and the hashes to store.
pub struct RecoveryCodeSet {
    pub codes: Vec<String>,
    pub hashes: Vec<String>,
}

impl MfaSettings {
    pub fn new(master: &DataKey, issuer: String, account_label: TotpAccountLabel) -> Self {
        Self {
            issuer,
            account_label,
            recovery_code_key: derive_key(master, "recovery-code/v1"),
        }
    }

    pub fn account_label(&self) -> TotpAccountLabel {
        self.account_label
    }

    /// Builds the `otpauth://totp/` URI of a secret, labelled `issuer:account`.
    pub fn otpauth_uri(&self, account: &str, secret_base32: &str) -> String {
        let issuer = percent_encode(&self.issuer);
        format!(
            "otpauth://totp/{issuer}:{account}?secret={secret_base32}&issuer={issuer}\
             &algorithm=SHA1&digits={digits}&period={period}",
            account = percent_encode(account),
            digits = totp::DIGITS,
            period = totp::STEP_SECONDS,
        )
    }

    /// Hashes a recovery code with HMAC-SHA256 under a key derived from the master key, after
    /// removing hyphens and spaces and upper-casing it, so that `abcd-efgh-ijkl` matches.
    pub fn recovery_code_hash(&self, code: &str) -> String {
        let normalized: String = code
            .chars()
            .filter(|character| *character != '-' && !character.is_whitespace())
            .map(|character| character.to_ascii_uppercase())
            .collect();
        let mut mac = Hmac::<Sha256>::new_from_slice(self.recovery_code_key.expose_bytes())
            .expect("HMAC takes any key");
        mac.update(normalized.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Generates a full set of random recovery codes, such as `K7QX-M2ZD-4HNA`.
    pub fn generate_recovery_codes(&self) -> RecoveryCodeSet {
        let codes: Vec<String> = (0..RECOVERY_CODE_COUNT)
            .map(|_| random_recovery_code())
            .collect();
        let hashes = codes
            .iter()
            .map(|code| self.recovery_code_hash(code))
            .collect();
        RecoveryCodeSet { codes, hashes }
    }
}

/// Generates a random TOTP secret, base32-encoded without padding.
pub fn generate_secret() -> SecretString {
    let mut bytes = vec![0_u8; SECRET_BYTES];
    OsRng.fill_bytes(&mut bytes);
    match Secret::Raw(bytes).to_encoded() {
        Secret::Encoded(encoded) => SecretString::from(encoded),
        Secret::Raw(_) => unreachable!("to_encoded always returns the encoded form"),
    }
}

fn random_recovery_code() -> String {
    let mut bytes = [0_u8; RECOVERY_CODE_CHARS];
    OsRng.fill_bytes(&mut bytes);
    // 256 is a multiple of 32, so taking each byte modulo 32 keeps the characters uniform.
    let characters: Vec<char> = bytes
        .iter()
        .map(|byte| char::from(BASE32_ALPHABET[usize::from(byte % 32)]))
        .collect();
    characters
        .chunks(RECOVERY_CODE_GROUP)
        .map(|group| group.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// Percent-encodes every byte except the unreserved characters of RFC 3986.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// Renders `text` as a QR code in a greyscale PNG, returned as a `data:image/png;base64,` URI.
pub fn qr_code_data_uri(text: &str) -> anyhow::Result<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).context("failed to encode the QR code")?;
    let modules = code.width();
    let colors = code.to_colors();

    let side = (modules + 2 * QR_QUIET_ZONE) * QR_MODULE_PIXELS;
    let mut pixels = vec![u8::MAX; side * side];
    for (index, color) in colors.iter().enumerate() {
        if *color != qrcode::Color::Dark {
            continue;
        }
        let column = (index % modules + QR_QUIET_ZONE) * QR_MODULE_PIXELS;
        let row = (index / modules + QR_QUIET_ZONE) * QR_MODULE_PIXELS;
        for y in row..row + QR_MODULE_PIXELS {
            pixels[y * side + column..y * side + column + QR_MODULE_PIXELS].fill(0);
        }
    }

    let mut png = Vec::new();
    let side_u32 = u32::try_from(side).context("QR image too large")?;
    let mut encoder = png::Encoder::new(&mut png, side_u32, side_u32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder
        .write_header()
        .context("failed to write the PNG header")?;
    writer
        .write_image_data(&pixels)
        .context("failed to write the PNG data")?;
    writer.finish().context("failed to finish the PNG")?;

    Ok(format!("data:image/png;base64,{}", STANDARD.encode(png)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn settings() -> MfaSettings {
        MfaSettings::new(
            &DataKey::generate(),
            "account ledger".to_owned(),
            TotpAccountLabel::Email,
        )
    }

    #[test]
    fn secret_is_160_bit_base32() {
        let secret = generate_secret();

        let bytes = Secret::Encoded(secret.expose_secret().to_owned())
            .to_bytes()
            .expect("valid base32");
        assert_eq!(bytes.len(), SECRET_BYTES);
    }

    #[test]
    fn otpauth_uri_encodes_label_and_issuer() {
        let uri = settings().otpauth_uri("ada+mfa@example.com", "JBSWY3DPEHPK3PXP");

        assert_eq!(
            uri,
            "otpauth://totp/account%20ledger:ada%2Bmfa%40example.com?secret=JBSWY3DPEHPK3PXP\
             &issuer=account%20ledger&algorithm=SHA1&digits=6&period=30"
        );
    }

    #[test]
    fn recovery_code_hash_ignores_case_and_hyphens() {
        let settings = settings();

        let typed = settings.recovery_code_hash("k7qx m2zd-4hna");
        let displayed = settings.recovery_code_hash("K7QX-M2ZD-4HNA");

        assert_eq!(typed, displayed);
        assert_ne!(displayed, settings.recovery_code_hash("K7QX-M2ZD-4HNB"));
    }

    #[test]
    fn recovery_codes_are_distinct_and_formatted() {
        let set = settings().generate_recovery_codes();

        assert_eq!(set.codes.len(), RECOVERY_CODE_COUNT);
        let mut unique = set.hashes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), RECOVERY_CODE_COUNT);
        for code in &set.codes {
            assert_eq!(code.len(), 14, "{code}");
            assert_eq!(code.matches('-').count(), 2, "{code}");
        }
    }

    #[test]
    fn qr_code_is_png_data_uri() {
        let uri =
            qr_code_data_uri("otpauth://totp/issuer:ada?secret=JBSWY3DPEHPK3PXP").expect("QR code");

        let encoded = uri
            .strip_prefix("data:image/png;base64,")
            .expect("data URI prefix");
        let bytes = STANDARD.decode(encoded).expect("base64");
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    }
}
