//! Mail delivery: the transport (SMTP or `.eml` files), the text of each mail, and the sender
//! task that delivers the rows of the `mail_outbox` projection and marks them done.
//!
//! The projector writes an outbox row in the same transaction as it applies the event that
//! requests the mail, so a crash between a command and the send only delays the mail. The
//! sender claims a row for [`CLAIM_LEASE`], sends it with no transaction open, and then marks
//! it, so a slow mail server never keeps a transaction open that would hold back the projector.
//! A sender that dies mid-send leaves its claim to expire, and the row goes out again then. A
//! temporary failure puts the row back with a delay that doubles with each attempt.

mod render;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use lettre::message::Mailbox;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use projections::{MailKind, StreamPosition};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::{Config, MailTransportKind};

pub use render::{MailContent, render};

/// Sub-directory of the data directory that the file transport writes into.
pub const MAIL_DIR: &str = "mail";
/// Attempts after which a mail is given up and marked `failed`.
const MAX_ATTEMPTS: i32 = 10;
/// Maximum wait for a reply from the SMTP server.
const SMTP_TIMEOUT: Duration = Duration::from_secs(15);
/// Maximum time one mail may take to send, whatever the transport, so that a send always ends
/// inside its claim.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a claimed row is left to its sender before another sender may take it: twice the
/// send timeout, so a send ends well before its claim does.
const CLAIM_LEASE: Duration = Duration::from_secs(120);
/// Maximum wait before the next attempt at a mail after a temporary failure; the wait doubles
/// with each attempt up to this.
const MAX_RETRY_DELAY_SECS: i32 = 600;

enum Transport {
    File(AsyncFileTransport<Tokio1Executor>),
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
}

/// Delivers the outbox. Cheap to share behind an `Arc`.
pub struct MailSender {
    pool: PgPool,
    transport: Transport,
    from: Mailbox,
    public_base_url: String,
    poll_interval: Duration,
}

/// One row of the outbox, as the sender reads it.
#[derive(sqlx::FromRow)]
struct OutboxRow {
    mail_id: Uuid,
    kind: String,
    recipient: String,
    secret: Option<String>,
    expires_at: Option<DateTime<Utc>>,
}

impl MailSender {
    /// Builds the configured transport; fails at start when it cannot work at all.
    pub fn from_config(config: &Config, pool: PgPool) -> anyhow::Result<Self> {
        let from: Mailbox = config
            .mail_from
            .parse()
            .context("LEDGER_MAIL_FROM must be a mailbox such as \"Name <user@example.com>\"")?;
        let transport = match config.mail_transport {
            MailTransportKind::File => {
                let directory: PathBuf = config.data_dir.join(MAIL_DIR);
                std::fs::create_dir_all(&directory).with_context(|| {
                    format!(
                        "failed to create the mail directory {}",
                        directory.display()
                    )
                })?;
                Transport::File(AsyncFileTransport::new(directory))
            }
            MailTransportKind::Smtp => {
                let url = config.smtp_url.as_deref().context(
                    "LEDGER_SMTP_URL is required when LEDGER_MAIL_TRANSPORT is smtp, \
                     for example smtp://127.0.0.1:2525",
                )?;
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .context("LEDGER_SMTP_URL is not a usable SMTP URL")?
                    .timeout(Some(SMTP_TIMEOUT))
                    .build();
                Transport::Smtp(transport)
            }
        };
        Ok(Self {
            pool,
            transport,
            from,
            public_base_url: config.public_base_url().trim_end_matches('/').to_owned(),
            poll_interval: Duration::from_millis(config.projection_poll_ms.max(100)),
        })
    }

    /// Sends whatever is waiting, then again each time the outbox projection moves and at
    /// every poll, until `shutdown`.
    pub async fn run(
        self,
        mut progress: Option<watch::Receiver<StreamPosition>>,
        shutdown: CancellationToken,
    ) {
        tracing::info!("mail sender started");
        loop {
            if let Err(error) = self.send_pending().await {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "mail delivery failed; will retry"
                );
            }
            let changed = async {
                let moved = match progress.as_mut() {
                    Some(receiver) => receiver.changed().await.is_ok(),
                    None => false,
                };
                if !moved {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = changed => {}
                () = tokio::time::sleep(self.poll_interval) => {}
            }
        }
        tracing::info!("mail sender stopped");
    }

    /// Sends unsent mail oldest first, one row at a time. Stops at the first failure
    /// that may pass, which usually means the server is down, and returns how many went out.
    pub async fn send_pending(&self) -> anyhow::Result<usize> {
        let mut sent = 0;
        loop {
            // SKIP LOCKED and the lease let several instances share the outbox without sending
            // a row twice. The claim commits at once: no transaction stays open during a send.
            let claim_id = Uuid::now_v7();
            let row = sqlx::query_as::<_, OutboxRow>(
                "UPDATE mail_outbox SET claimed_until = now() + make_interval(secs => $1),
                                        claim_id = $2
                  WHERE mail_id = (
                        SELECT mail_id FROM mail_outbox
                         WHERE outcome IS NULL
                           AND (claimed_until IS NULL OR claimed_until < now())
                         ORDER BY created_at, mail_id
                         LIMIT 1
                         FOR UPDATE SKIP LOCKED)
                  RETURNING mail_id, kind, recipient, secret, expires_at",
            )
            .bind(CLAIM_LEASE.as_secs_f64())
            .bind(claim_id)
            .fetch_optional(&self.pool)
            .await?;
            let Some(row) = row else {
                return Ok(sent);
            };

            let delivery = tokio::time::timeout(SEND_TIMEOUT, self.deliver(&row))
                .await
                .unwrap_or_else(|_| Delivery::Failed {
                    reason: "the send timed out".to_owned(),
                    permanent: false,
                });
            if let Delivery::Failed { reason, .. } = &delivery {
                // The reason names the failure only: server replies can quote the recipient.
                tracing::warn!(mail_id = %row.mail_id, kind = %row.kind, %reason, "mail not delivered");
            }
            // A queued row waits 2^attempts seconds (capped) before its next claim.
            let recorded = sqlx::query(
                "UPDATE mail_outbox SET
                    attempts = attempts + 1,
                    last_attempt_at = now(),
                    claim_id = NULL,
                    claimed_until = CASE WHEN $2::text IS NULL
                        THEN now() + make_interval(secs => least(power(2, attempts + 1), $4)) END,
                    outcome = CASE WHEN $2::text IS NULL AND attempts + 1 >= $3 THEN 'failed'
                                   ELSE $2 END,
                    sent_at = CASE WHEN $2 = 'sent' THEN now() END,
                    secret = CASE WHEN $2::text IS NULL AND attempts + 1 < $3 THEN secret END
                  WHERE mail_id = $1 AND claim_id = $5 AND outcome IS NULL",
            )
            .bind(row.mail_id)
            .bind(delivery.outcome())
            .bind(MAX_ATTEMPTS)
            .bind(MAX_RETRY_DELAY_SECS)
            .bind(claim_id)
            .execute(&self.pool)
            .await?;
            if recorded.rows_affected() == 0 {
                tracing::warn!(
                    mail_id = %row.mail_id,
                    "mail claim expired during the send; the outcome is left to the sender that took the row over"
                );
            }

            match delivery {
                Delivery::Sent => {
                    sent += 1;
                    tracing::info!(mail_id = %row.mail_id, kind = %row.kind, "mail sent");
                }
                Delivery::Expired => {
                    tracing::info!(mail_id = %row.mail_id, kind = %row.kind, "mail expired unsent");
                }
                Delivery::Failed {
                    permanent: false, ..
                } => anyhow::bail!("the mail transport failed; the mail stays queued"),
                Delivery::Failed {
                    permanent: true, ..
                } => {}
            }
        }
    }

    /// Sends one row, unless its code or token has run out and mailing it is useless.
    async fn deliver(&self, row: &OutboxRow) -> Delivery {
        if row
            .expires_at
            .is_some_and(|expires_at| expires_at <= Utc::now())
        {
            return Delivery::Expired;
        }
        let Some(kind) = MailKind::parse(&row.kind) else {
            return Delivery::permanent("unknown mail kind");
        };
        let Ok(to) = row.recipient.parse::<Mailbox>() else {
            return Delivery::permanent("the stored recipient is not a valid address");
        };
        let content = render(
            kind,
            row.secret.as_deref().unwrap_or_default(),
            &self.public_base_url,
            row.expires_at,
        );
        let Ok(message) = content.into_message(self.from.clone(), to) else {
            return Delivery::permanent("the message could not be built");
        };

        match &self.transport {
            Transport::File(transport) => match transport.send(message).await {
                Ok(_) => Delivery::Sent,
                Err(_) => Delivery::Failed {
                    reason: "writing the .eml file failed".to_owned(),
                    permanent: false,
                },
            },
            Transport::Smtp(transport) => match transport.send(message).await {
                Ok(_) => Delivery::Sent,
                Err(error) => Delivery::Failed {
                    reason: match error.status() {
                        Some(code) => format!("the SMTP server replied {code}"),
                        None => "the SMTP server could not be reached".to_owned(),
                    },
                    permanent: error.is_permanent(),
                },
            },
        }
    }
}

/// What happened to one outbox row.
enum Delivery {
    Sent,
    /// Its code or token expired before it could go out.
    Expired,
    /// Not delivered; a permanent failure is not tried again.
    Failed {
        reason: String,
        permanent: bool,
    },
}

impl Delivery {
    fn permanent(reason: &str) -> Self {
        Self::Failed {
            reason: reason.to_owned(),
            permanent: true,
        }
    }

    /// The `outcome` column: `None` leaves the row queued for another attempt.
    fn outcome(&self) -> Option<&'static str> {
        match self {
            Self::Sent => Some("sent"),
            Self::Expired => Some("expired"),
            Self::Failed {
                permanent: true, ..
            } => Some("failed"),
            Self::Failed {
                permanent: false, ..
            } => None,
        }
    }
}
