//! The text of each mail, as plain text and HTML. Links are built from the configured public
//! base URL only, never from anything a request sent.

use chrono::{DateTime, SecondsFormat, Utc};
use lettre::Message;
use lettre::message::{Mailbox, MultiPart};
use projections::MailKind;

/// A rendered mail, before it is addressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailContent {
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl MailContent {
    /// Builds the message with a plain-text part and an HTML alternative.
    pub fn into_message(self, from: Mailbox, to: Mailbox) -> anyhow::Result<Message> {
        Ok(Message::builder()
            .from(from)
            .to(to)
            .subject(self.subject)
            .multipart(MultiPart::alternative_plain_html(self.text, self.html))?)
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn expiry(expires_at: Option<DateTime<Utc>>) -> String {
    expires_at.map_or_else(String::new, |at| {
        format!(
            "It works until {}.",
            at.to_rfc3339_opts(SecondsFormat::Secs, true)
        )
    })
}

/// Sentence that ends a mail the recipient may not have asked for.
const IGNORE_IF_UNASKED: &str = "If you did not ask for this, you can ignore this message.";

/// Plain paragraphs become the text part; the same paragraphs, escaped, become the HTML part.
/// `closing` ends both.
fn content(subject: &str, paragraphs: &[String], link: Option<&str>, closing: &str) -> MailContent {
    let mut text = paragraphs.join("\n\n");
    let mut html: String = paragraphs
        .iter()
        .map(|paragraph| format!("<p>{}</p>", escape(paragraph)))
        .collect();
    if let Some(link) = link {
        text.push_str(&format!("\n\n{link}\n"));
        html.push_str(&format!(
            "<p><a href=\"{}\">{}</a></p>",
            escape(link),
            escape(link)
        ));
    }
    text.push_str(&format!("\n\n{closing}\n"));
    html.push_str(&format!("<p>{}</p>", escape(closing)));
    MailContent {
        subject: subject.to_owned(),
        text,
        html: format!("<!DOCTYPE html><html><body>{html}</body></html>"),
    }
}

/// Writes the mail of `kind`. `secret` is the code or token it carries, if any.
pub fn render(
    kind: MailKind,
    secret: &str,
    public_base_url: &str,
    expires_at: Option<DateTime<Utc>>,
) -> MailContent {
    match kind {
        MailKind::RegistrationCode | MailKind::EmailChangeCode => content(
            "Your verification code",
            &[
                format!("Your verification code is {secret}"),
                format!(
                    "Enter it to confirm this email address. {}",
                    expiry(expires_at)
                ),
            ],
            None,
            IGNORE_IF_UNASKED,
        ),
        MailKind::EmailChangeLink => content(
            "Confirm your new email address",
            &[
                "Open the link below to confirm this email address.".to_owned(),
                expiry(expires_at),
                format!("Verification token: {secret}"),
            ],
            Some(&format!("{public_base_url}/verify-email?token={secret}")),
            IGNORE_IF_UNASKED,
        ),
        MailKind::EmailChanged => content(
            "Your email address was changed",
            &["The account that used this address now uses another one.".to_owned()],
            None,
            "If you did not make this change, contact support at once.",
        ),
        MailKind::PasswordReset => content(
            "Reset your password",
            &[
                "Open the link below to choose a new password.".to_owned(),
                expiry(expires_at),
                format!("Reset token: {secret}"),
            ],
            Some(&format!("{public_base_url}/reset-password?token={secret}")),
            IGNORE_IF_UNASKED,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_link_uses_configured_base() {
        let mail = render(
            MailKind::PasswordReset,
            "lpr_abc",
            "https://accounts.example.com",
            None,
        );

        assert!(
            mail.text
                .contains("https://accounts.example.com/reset-password?token=lpr_abc")
        );
        assert!(mail.html.contains("href=\"https://accounts.example.com/"));
    }

    #[test]
    fn code_mail_carries_code() {
        let mail = render(MailKind::RegistrationCode, "012345", "http://x", None);

        assert!(mail.text.contains("Your verification code is 012345"));
        assert!(mail.html.contains("012345"));
    }

    #[test]
    fn change_notice_does_not_say_ignore() {
        let mail = render(MailKind::EmailChanged, "", "http://x", None);

        assert!(mail.text.contains("contact support"));
        assert!(!mail.text.contains("ignore this message"));
        assert!(!mail.html.contains("ignore this message"));
    }
}
