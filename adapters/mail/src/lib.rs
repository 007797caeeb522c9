//! Email delivery: the SMTP adapter ([`SmtpSender`], lettre over rustls) and
//! the file outbox ([`OutboxSender`], one `.eml` file per message, the
//! embedded default). Both implement idp-core's [`EmailSender`] and build the
//! same RFC 5322 message: `From`, `To`, `Subject`, `Date` (from the injected
//! clock), `Message-ID`, and a `multipart/alternative` body when there is an
//! HTML part.
//!
//! [`testing`] starts a real SMTP server process for the tests of this crate
//! and of the server.

use async_trait::async_trait;
use idp_core::clock::SharedClock;
use idp_core::notify::{DeliveryError, EmailSender, OutgoingEmail};
use idp_core::secret::Secret;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod testing;

/// How long an SMTP exchange may take before the delivery fails.
const SMTP_TIMEOUT: Duration = Duration::from_secs(15);

/// Why an email adapter could not be set up (a configuration mistake).
#[derive(Debug, thiserror::Error)]
pub enum MailSetupError {
    #[error(
        "{0:?} is not an email address (expected `name@example.com` or `Name <name@example.com>`)"
    )]
    InvalidFrom(String),
    #[error("cannot create the outbox folder {}: {error}", path.display())]
    Outbox {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("TLS settings for {host}: {error}")]
    Tls {
        host: String,
        error: lettre::transport::smtp::Error,
    },
}

/// Checks a sender address (`no-reply@example.com`, `Example <no-reply@example.com>`).
pub fn parse_from(from: &str) -> Result<Mailbox, MailSetupError> {
    from.trim()
        .parse::<Mailbox>()
        .map_err(|_| MailSetupError::InvalidFrom(from.to_owned()))
}

/// Builds the RFC 5322 message of an [`OutgoingEmail`].
fn build_message(
    from: &Mailbox,
    email: &OutgoingEmail,
    now: time::OffsetDateTime,
) -> Result<lettre::Message, DeliveryError> {
    let to: lettre::Address =
        email.to.trim().parse().map_err(|_| {
            DeliveryError::Invalid(format!("{:?} is not an email address", email.to))
        })?;
    // A subject is one line: folding is the encoder's job, not the template's.
    let subject = email
        .subject
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let message_id = format!(
        "<{}.{}@{}>",
        now.unix_timestamp(),
        hex(&idp_core::random::bytes(12)),
        from.email.domain()
    );
    let builder = lettre::Message::builder()
        .from(from.clone())
        .to(Mailbox::new(None, to))
        .subject(subject)
        .date(now.into())
        .message_id(Some(message_id));
    let built = match &email.html {
        Some(html) => builder.multipart(MultiPart::alternative_plain_html(
            email.text.clone(),
            html.clone(),
        )),
        None => builder.singlepart(SinglePart::plain(email.text.clone())),
    };
    built.map_err(|e| DeliveryError::Invalid(format!("cannot build the email: {e}")))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain text (a local relay or a test server only).
    None,
    /// Plain connection upgraded with STARTTLS, which is required (port 587).
    Starttls,
    /// TLS from the first byte (SMTPS, port 465).
    Tls,
}

/// SMTP login; the password never appears in `Debug` output or logs.
#[derive(Debug, Clone)]
pub struct SmtpCredentials {
    pub username: String,
    pub password: Secret,
}

/// Where and how to submit emails.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub credentials: Option<SmtpCredentials>,
    /// The `From` address.
    pub from: String,
}

/// Sends emails through an SMTP relay (connections are pooled).
pub struct SmtpSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    clock: SharedClock,
    /// `host:port`, for logs.
    server: String,
}

impl std::fmt::Debug for SmtpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSender")
            .field("server", &self.server)
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl SmtpSender {
    /// Call it inside a Tokio runtime: the connection pool lives there.
    pub fn new(config: &SmtpConfig, clock: SharedClock) -> Result<Self, MailSetupError> {
        let from = parse_from(&config.from)?;
        let tls_parameters = || {
            TlsParameters::new(config.host.clone()).map_err(|error| MailSetupError::Tls {
                host: config.host.clone(),
                error,
            })
        };
        let tls = match config.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::Starttls => Tls::Required(tls_parameters()?),
            SmtpTls::Tls => Tls::Wrapper(tls_parameters()?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            .port(config.port)
            .tls(tls)
            .timeout(Some(SMTP_TIMEOUT));
        if let Some(c) = &config.credentials {
            builder = builder.credentials(Credentials::new(
                c.username.clone(),
                c.password.expose().to_owned(),
            ));
        }
        Ok(Self {
            transport: builder.build(),
            from,
            clock,
            server: format!("{}:{}", config.host, config.port),
        })
    }
}

#[async_trait]
impl EmailSender for SmtpSender {
    async fn send_email(&self, email: &OutgoingEmail) -> Result<(), DeliveryError> {
        let message = build_message(&self.from, email, self.clock.now())?;
        match self.transport.send(message).await {
            Ok(response) => {
                tracing::info!(server = %self.server, code = %response.code(), "email sent");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(server = %self.server, error = %e, "email not sent");
                Err(DeliveryError::Failed(format!(
                    "SMTP server {}: {e}",
                    self.server
                )))
            }
        }
    }
}

/// Writes each email as an RFC 5322 `.eml` file into a folder, readable by
/// its owner only: for development and the embedded default, where no mail
/// server is configured. Any mail client opens these files.
#[derive(Debug)]
pub struct OutboxSender {
    dir: PathBuf,
    from: Mailbox,
    clock: SharedClock,
}

impl OutboxSender {
    /// Creates the folder (owner-only on Unix) when it does not exist.
    pub fn new(
        dir: impl Into<PathBuf>,
        from: &str,
        clock: SharedClock,
    ) -> Result<Self, MailSetupError> {
        let dir = dir.into();
        let from = parse_from(from)?;
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder
            .create(&dir)
            .map_err(|error| MailSetupError::Outbox {
                path: dir.clone(),
                error,
            })?;
        Ok(Self { dir, from, clock })
    }

    /// The folder the messages are written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[async_trait]
impl EmailSender for OutboxSender {
    async fn send_email(&self, email: &OutgoingEmail) -> Result<(), DeliveryError> {
        let now = self.clock.now();
        let message = build_message(&self.from, email, now)?;
        let stamp = now
            .format(time::macros::format_description!(
                "[year][month][day]T[hour][minute][second].[subsecond digits:3]Z"
            ))
            .map_err(|e| DeliveryError::Failed(format!("cannot format the time: {e}")))?;
        let path = self
            .dir
            .join(format!("{stamp}-{}.eml", hex(&idp_core::random::bytes(8))));
        let bytes = message.formatted();
        let written = path.clone();
        tokio::task::spawn_blocking(move || write_private_file(&written, &bytes))
            .await
            .map_err(|e| DeliveryError::Failed(format!("outbox writer stopped: {e}")))?
            .map_err(|e| DeliveryError::Failed(format!("cannot write {}: {e}", path.display())))?;
        tracing::info!(path = %path.display(), "email written to the outbox");
        Ok(())
    }
}

/// Creates `path` (which must not exist), readable and writable by its owner only.
fn write_private_file(path: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(content)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use idp_core::clock::{Clock, SettableClock};
    use std::sync::Arc;

    fn email(html: Option<&str>) -> OutgoingEmail {
        OutgoingEmail {
            to: "alice@example.com".into(),
            subject: "Your code\r\nBcc: eve@example.com".into(),
            text: "Code: 123456".into(),
            html: html.map(str::to_owned),
        }
    }

    #[test]
    fn message_has_the_headers_and_one_part_per_body() {
        let clock = SettableClock::new(
            time::OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("valid time"),
        );
        let from = parse_from("Example Sign-in <no-reply@example.com>").expect("valid from");
        let with_html = build_message(&from, &email(Some("<p>123456</p>")), clock.now())
            .expect("builds")
            .formatted();
        let text = String::from_utf8(with_html).expect("ascii message");
        assert!(
            text.contains("From: \"Example Sign-in\" <no-reply@example.com>\r\n"),
            "{text}"
        );
        assert!(text.contains("To: alice@example.com\r\n"), "{text}");
        assert!(
            text.contains("Subject: Your code Bcc: eve@example.com\r\n"),
            "{text}"
        );
        assert!(!text.contains("\r\nBcc:"), "header injection: {text}");
        assert!(
            text.contains("Date: Fri, 15 Jan 2027 08:00:00 +0000\r\n"),
            "{text}"
        );
        assert!(text.contains("Message-ID: <1800000000."), "{text}");
        assert!(text.contains("@example.com>\r\n"), "{text}");
        assert!(
            text.contains("Content-Type: multipart/alternative;"),
            "{text}"
        );
        assert!(
            text.contains("Content-Type: text/plain; charset=utf-8"),
            "{text}"
        );
        assert!(
            text.contains("Content-Type: text/html; charset=utf-8"),
            "{text}"
        );

        let plain = String::from_utf8(
            build_message(&from, &email(None), clock.now())
                .expect("builds")
                .formatted(),
        )
        .expect("ascii message");
        assert!(!plain.contains("multipart"), "{plain}");
        assert!(
            plain.contains("Content-Type: text/plain; charset=utf-8"),
            "{plain}"
        );
        assert!(plain.ends_with("\r\n\r\nCode: 123456\r\n"), "{plain}");
    }

    #[test]
    fn bad_addresses_are_refused() {
        assert!(matches!(
            parse_from("not an address"),
            Err(MailSetupError::InvalidFrom(_))
        ));
        let from = parse_from("no-reply@example.com").expect("valid from");
        let mut bad = email(None);
        bad.to = "alice".into();
        assert!(matches!(
            build_message(&from, &bad, SettableClock::starting_now().now()),
            Err(DeliveryError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn smtp_password_is_redacted() {
        let config = SmtpConfig {
            host: "smtp.example.com".into(),
            port: 587,
            tls: SmtpTls::Starttls,
            credentials: Some(SmtpCredentials {
                username: "mailer".into(),
                password: Secret::new("hunter2"),
            }),
            from: "no-reply@example.com".into(),
        };
        let printed = format!("{config:?}");
        assert!(
            printed.contains("mailer") && !printed.contains("hunter2"),
            "{printed}"
        );
        let sender =
            SmtpSender::new(&config, Arc::new(SettableClock::starting_now())).expect("builds");
        let printed = format!("{sender:?}");
        assert!(
            printed.contains("smtp.example.com:587") && !printed.contains("hunter2"),
            "{printed}"
        );
    }
}
