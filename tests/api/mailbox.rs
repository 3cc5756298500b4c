//! Reading the mail the service sends: a small SMTP server on a 127.0.0.1 port that keeps
//! every message it receives, and the `.eml` files of the file transport.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Maximum wait for a mail to arrive.
const MAIL_WAIT: Duration = Duration::from_secs(15);

/// One message as the SMTP server received it.
#[derive(Clone, Debug)]
pub struct ReceivedMail {
    pub recipients: Vec<String>,
    pub data: String,
}

/// An SMTP server that accepts everything and keeps it in memory.
pub struct SmtpSink {
    pub address: SocketAddr,
    messages: Arc<Mutex<Vec<ReceivedMail>>>,
    cursor: usize,
    server: JoinHandle<()>,
}

impl SmtpSink {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
        let address = listener.local_addr().expect("sink address");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let store = messages.clone();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, store.clone()));
            }
        });
        Self {
            address,
            messages,
            cursor: 0,
            server,
        }
    }

    /// The URL to put in `LEDGER_SMTP_URL`.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.address)
    }

    /// Every message received so far.
    pub fn all(&self) -> Vec<ReceivedMail> {
        self.messages.lock().expect("sink lock").clone()
    }

    /// Waits for the next message not yet returned that is addressed to `recipient`, and
    /// returns its decoded text.
    pub async fn next_for(&mut self, recipient: &str) -> String {
        let deadline = tokio::time::Instant::now() + MAIL_WAIT;
        loop {
            let found = {
                let messages = self.messages.lock().expect("sink lock");
                messages
                    .iter()
                    .enumerate()
                    .skip(self.cursor)
                    .find(|(_, mail)| mail.recipients.iter().any(|to| to == recipient))
                    .map(|(index, mail)| (index, mail.data.clone()))
            };
            if let Some((index, data)) = found {
                self.cursor = index + 1;
                return decoded(&data);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no mail to {recipient} arrived"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Speaks just enough SMTP for a client that sends mail and quits.
async fn serve(stream: TcpStream, store: Arc<Mutex<Vec<ReceivedMail>>>) {
    let (reader, mut writer) = stream.into_split();
    let mut lines = BufReader::new(reader);
    let mut recipients = Vec::new();
    if writer.write_all(b"220 sink ready\r\n").await.is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let command = line.trim_end().to_ascii_uppercase();
        let reply: &[u8] = if command.starts_with("EHLO") || command.starts_with("HELO") {
            b"250 sink\r\n"
        } else if command.starts_with("MAIL FROM") {
            recipients.clear();
            b"250 OK\r\n"
        } else if command.starts_with("RCPT TO") {
            let address = line
                .split_once('<')
                .and_then(|(_, rest)| rest.split_once('>'))
                .map(|(address, _)| address.to_owned())
                .unwrap_or_default();
            recipients.push(address);
            b"250 OK\r\n"
        } else if command == "DATA" {
            if writer.write_all(b"354 go ahead\r\n").await.is_err() {
                return;
            }
            let mut data = String::new();
            loop {
                let mut part = String::new();
                if lines.read_line(&mut part).await.unwrap_or(0) == 0 {
                    return;
                }
                if part == ".\r\n" {
                    break;
                }
                data.push_str(part.strip_prefix('.').unwrap_or(&part));
            }
            store.lock().expect("sink lock").push(ReceivedMail {
                recipients: std::mem::take(&mut recipients),
                data,
            });
            b"250 queued\r\n"
        } else if command == "QUIT" {
            let _ = writer.write_all(b"221 bye\r\n").await;
            return;
        } else {
            b"250 OK\r\n"
        };
        if writer.write_all(reply).await.is_err() {
            return;
        }
    }
}

/// The `.eml` files the file transport writes under `<data dir>/mail`.
pub struct MailDirectory {
    directory: PathBuf,
    seen: HashSet<PathBuf>,
}

impl MailDirectory {
    pub fn new(data_dir: &std::path::Path) -> Self {
        Self {
            directory: data_dir.join("mail"),
            seen: HashSet::new(),
        }
    }

    /// The mail directory of a running test service.
    pub fn of(app: &crate::helpers::TestApp) -> Self {
        Self::new(&app.database.config.data_dir)
    }

    /// Paths of every `.eml` file written so far.
    pub fn files(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.directory) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|extension| extension == "eml"))
            .collect()
    }

    /// Waits for a file not yet returned whose message is addressed to `recipient`, and
    /// returns its decoded text.
    pub async fn next_for(&mut self, recipient: &str) -> String {
        let deadline = tokio::time::Instant::now() + MAIL_WAIT;
        loop {
            for path in self.files() {
                if self.seen.contains(&path) {
                    continue;
                }
                let Ok(text) = std::fs::read_to_string(&path) else {
                    continue;
                };
                let addressed = text
                    .lines()
                    .any(|line| line.starts_with("To: ") && line.contains(recipient));
                // A file still being written has not reached its closing boundary yet.
                let complete = text.trim_end().ends_with("--");
                if addressed && complete {
                    self.seen.insert(path);
                    return decoded(&text);
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no mail file to {recipient} appeared"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Undoes quoted-printable soft line breaks and escaped equals signs, enough to read codes
/// and links.
pub fn decoded(raw: &str) -> String {
    raw.replace("=\r\n", "").replace("=3D", "=")
}

/// The six-digit code of a verification mail.
pub fn code_in(mail: &str) -> String {
    let (_, rest) = mail
        .split_once("Your verification code is ")
        .expect("the mail carries a code");
    let code: String = rest.chars().take_while(char::is_ascii_digit).collect();
    assert_eq!(code.len(), 6, "a code of six digits: {code}");
    code
}

/// The first token with `prefix` in a mail, such as `lev_` or `lpr_`.
pub fn token_in(mail: &str, prefix: &str) -> String {
    let start = mail.find(prefix).expect("the mail carries a token");
    mail[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect()
}

/// Sends a JSON POST to `path`, with a Bearer token when given.
pub async fn post(
    app: &crate::helpers::TestApp,
    path: &str,
    token: Option<&str>,
    body: &serde_json::Value,
) -> reqwest::Response {
    let mut request = app.client.post(app.url(path)).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("request sent")
}

/// Submits a verification code for the caller's own address change or registration.
pub async fn verify_code(
    app: &crate::helpers::TestApp,
    token: &str,
    change_request_id: &impl serde::Serialize,
    code: &impl serde::Serialize,
) -> reqwest::Response {
    let body = serde_json::json!({
        "change_request_id": change_request_id,
        "verification_code": code,
    });
    post(app, "/users/me/email/verify", Some(token), &body).await
}

/// Registers `email` and returns its user id, the `change_request_id` of its verification and
/// the code mailed to it.
pub async fn register_and_read_code(
    app: &crate::helpers::TestApp,
    mail: &mut MailDirectory,
    email: &str,
) -> (uuid::Uuid, String, String) {
    let response = app
        .register(&serde_json::json!({"email": email, "password": crate::helpers::PASSWORD}))
        .await;
    assert_eq!(response.status(), 201, "registration of {email} failed");
    let body: serde_json::Value = response.json().await.expect("json body");
    let user_id = body["data"]["user_id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("user_id");
    let change_request_id = body["data"]["change_request_id"]
        .as_str()
        .expect("change_request_id")
        .to_owned();
    let code = code_in(&mail.next_for(email).await);
    (user_id, change_request_id, code)
}
