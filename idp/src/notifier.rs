//! Messages to users, rendered and delivered: [`ThemedNotifier`] implements
//! the core's [`Notifier`] port. It renders the message's templates with the
//! client's theme in the notification's locale and hands the result to the
//! email and SMS adapters configured in `[mail]` and `[sms]`
//! ([`senders_from_config`]).
//!
//! Templates, per message (`Message::template()`, e.g. `login_code`):
//! `emails/<message>.subject.txt`, `emails/<message>.txt`,
//! `emails/<message>.html` and `sms/<message>.txt`. Their context is the
//! message's fields (`kind`, `code`, `valid_minutes`) and `client_name`, plus
//! `lang` and `theme` as for pages.

use crate::config::{LoadedConfig, MailTransport, SmsTransport, SmtpTlsMode};
use crate::theme::{Themes, negotiate_locale};
use anyhow::anyhow;
use async_trait::async_trait;
use idp_core::clock::SharedClock;
use idp_core::domain::Email;
use idp_core::notify::{
    DeliveryError, EmailSender, Notification, Notifier, OutgoingEmail, SmsSender,
};
use idp_core::secret::Secret;
use minijinja::context;
use minijinja::value::{Serde, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The sender address of the outbox when `mail.from` is not set.
const DEFAULT_OUTBOX_FROM: &str = "Sign-in <no-reply@localhost>";

/// Renders notifications with the themes and sends them.
pub struct ThemedNotifier {
    themes: Arc<Themes>,
    email: Arc<dyn EmailSender>,
    sms: Arc<dyn SmsSender>,
}

impl std::fmt::Debug for ThemedNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThemedNotifier")
            .field("themes", &self.themes)
            .finish_non_exhaustive()
    }
}

impl ThemedNotifier {
    /// Over themes already loaded (the server shares its own).
    pub(crate) fn new(
        themes: Arc<Themes>,
        email: Arc<dyn EmailSender>,
        sms: Arc<dyn SmsSender>,
    ) -> Self {
        Self { themes, email, sms }
    }

    /// Loads the embedded default theme and the themes of `themes_dir`.
    pub fn load(
        themes_dir: Option<&Path>,
        email: Arc<dyn EmailSender>,
        sms: Arc<dyn SmsSender>,
    ) -> anyhow::Result<Self> {
        let themes = Themes::load(themes_dir).map_err(|e| anyhow!("themes: {e}"))?;
        Ok(Self::new(Arc::new(themes), email, sms))
    }

    fn render(&self, n: &Notification, template: &str) -> Result<String, DeliveryError> {
        let ctx = context! {
            client_name => n.client_name.as_str(),
            ..Value::from(Serde(&n.message))
        };
        let locale = negotiate_locale(Some(&n.locale), None);
        self.themes
            .render(&n.theme, template, locale, ctx)
            .map_err(|e| DeliveryError::Invalid(e.to_string()))
    }
}

#[async_trait]
impl Notifier for ThemedNotifier {
    async fn email(&self, to: &Email, n: &Notification) -> Result<(), DeliveryError> {
        let name = n.message.template();
        let subject = self.render(n, &format!("emails/{name}.subject.txt"))?;
        let email = OutgoingEmail {
            to: to.as_str().to_owned(),
            // One line, whatever the template's line breaks.
            subject: subject.split_whitespace().collect::<Vec<_>>().join(" "),
            text: self.render(n, &format!("emails/{name}.txt"))?,
            html: Some(self.render(n, &format!("emails/{name}.html"))?),
        };
        self.email.send_email(&email).await
    }

    async fn sms(&self, to: &str, n: &Notification) -> Result<(), DeliveryError> {
        let text = self.render(n, &format!("sms/{}.txt", n.message.template()))?;
        self.sms.send_sms(to, text.trim()).await
    }
}

/// Where the outbox transport writes emails.
pub fn email_outbox_dir(cfg: &LoadedConfig) -> PathBuf {
    cfg.settings.data_dir.join("outbox")
}

/// Where the outbox transport appends text messages.
pub fn sms_outbox_file(cfg: &LoadedConfig) -> PathBuf {
    cfg.settings.data_dir.join("sms-outbox.jsonl")
}

/// Where emails go, in words, for people starting the server.
pub fn email_destination(cfg: &LoadedConfig) -> String {
    let mail = &cfg.settings.mail;
    match mail.transport {
        MailTransport::Outbox => {
            let dir = email_outbox_dir(cfg);
            let dir = std::path::absolute(&dir).unwrap_or(dir);
            format!("written as .eml files into {}", dir.display())
        }
        MailTransport::Smtp => format!(
            "sent through the SMTP server {}:{}",
            mail.smtp_host.as_deref().unwrap_or_default(),
            smtp_port(mail.smtp_tls, mail.smtp_port)
        ),
    }
}

fn smtp_port(tls: SmtpTlsMode, port: Option<u16>) -> u16 {
    port.unwrap_or(match tls {
        SmtpTlsMode::None => 25,
        SmtpTlsMode::Starttls => 587,
        SmtpTlsMode::Tls => 465,
    })
}

/// The email and SMS adapters `[mail]` and `[sms]` describe (checked by the
/// config loader). Call it inside the Tokio runtime.
pub fn senders_from_config(
    cfg: &LoadedConfig,
    clock: SharedClock,
) -> anyhow::Result<(Arc<dyn EmailSender>, Arc<dyn SmsSender>)> {
    let mail = &cfg.settings.mail;
    let email: Arc<dyn EmailSender> = match mail.transport {
        MailTransport::Outbox => Arc::new(
            idp_mail::OutboxSender::new(
                email_outbox_dir(cfg),
                mail.from.as_deref().unwrap_or(DEFAULT_OUTBOX_FROM),
                clock.clone(),
            )
            .map_err(|e| anyhow!("mail: {e}"))?,
        ),
        MailTransport::Smtp => {
            let config = idp_mail::SmtpConfig {
                host: mail.smtp_host.clone().unwrap_or_default(),
                port: smtp_port(mail.smtp_tls, mail.smtp_port),
                tls: match mail.smtp_tls {
                    SmtpTlsMode::None => idp_mail::SmtpTls::None,
                    SmtpTlsMode::Starttls => idp_mail::SmtpTls::Starttls,
                    SmtpTlsMode::Tls => idp_mail::SmtpTls::Tls,
                },
                credentials: match (&mail.smtp_username, &mail.smtp_password) {
                    (Some(username), Some(password)) => Some(idp_mail::SmtpCredentials {
                        username: username.clone(),
                        password: Secret::new(password.clone()),
                    }),
                    _ => None,
                },
                from: mail.from.clone().unwrap_or_default(),
            };
            Arc::new(
                idp_mail::SmtpSender::new(&config, clock.clone())
                    .map_err(|e| anyhow!("mail: {e}"))?,
            )
        }
    };
    let sms = &cfg.settings.sms;
    let sms: Arc<dyn SmsSender> = match sms.transport {
        SmsTransport::Outbox => Arc::new(
            idp_sms::OutboxSmsSender::new(sms_outbox_file(cfg), clock)
                .map_err(|e| anyhow!("sms: {e}"))?,
        ),
        SmsTransport::Http => {
            let url = sms.url.as_deref().unwrap_or_default();
            let config = idp_sms::HttpSmsConfig {
                url: url::Url::parse(url).map_err(|e| anyhow!("sms.url: {e}"))?,
                auth_header: match (&sms.auth_header_name, &sms.auth_header_value) {
                    (Some(name), Some(value)) => Some(idp_sms::AuthHeader {
                        name: name.clone(),
                        value: Secret::new(value.clone()),
                    }),
                    _ => None,
                },
                body_template: sms.body_template.clone(),
                content_type: sms.content_type.clone(),
            };
            Arc::new(idp_sms::HttpSmsSender::new(&config).map_err(|e| anyhow!("sms: {e}"))?)
        }
    };
    Ok((email, sms))
}
