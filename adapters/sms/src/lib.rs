//! SMS delivery: a generic HTTP provider ([`HttpSmsSender`]: one POST per
//! message, the body rendered from a template in config) and a file outbox
//! ([`OutboxSmsSender`], JSON lines, the embedded default). Both implement
//! idp-core's [`SmsSender`].

use async_trait::async_trait;
use idp_core::clock::SharedClock;
use idp_core::notify::{DeliveryError, SmsSender};
use idp_core::secret::Secret;
use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the provider may take to answer.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// The body sent when the config names none.
pub const DEFAULT_BODY_TEMPLATE: &str = r#"{"to":"{to}","text":"{text}"}"#;

/// Why an SMS adapter could not be set up (a configuration mistake).
#[derive(Debug, thiserror::Error)]
pub enum SmsSetupError {
    #[error("url: {0}")]
    Url(String),
    #[error("auth_header_name: {0:?} is not a valid HTTP header name")]
    HeaderName(String),
    #[error("auth_header_value: not a valid HTTP header value")]
    HeaderValue,
    #[error("content_type: {0:?} is not a valid HTTP header value")]
    ContentType(String),
    #[error("body_template: must contain the {{text}} placeholder")]
    BodyTemplate,
    #[error("cannot create the HTTP client: {0}")]
    Client(String),
    #[error("cannot create the folder of the SMS outbox {}: {error}", path.display())]
    Outbox {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// A header carrying the provider credential (`Authorization: Bearer ...`).
/// The value never appears in `Debug` output, logs or errors.
#[derive(Debug, Clone)]
pub struct AuthHeader {
    pub name: String,
    pub value: Secret,
}

/// Where and how to post messages.
#[derive(Clone)]
pub struct HttpSmsConfig {
    /// `https://` (plain `http://` only for a loopback test server: checked by the caller's config).
    pub url: url::Url,
    pub auth_header: Option<AuthHeader>,
    /// The request body, with `{to}` and `{text}` replaced by the recipient
    /// and the message, escaped as the inside of a JSON string.
    pub body_template: String,
    pub content_type: String,
}

/// The URL's query may hold an API key: `Debug` shows the URL without it.
impl std::fmt::Debug for HttpSmsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSmsConfig")
            .field("url", &redacted_url(&self.url))
            .field("auth_header", &self.auth_header)
            .field("body_template", &self.body_template)
            .field("content_type", &self.content_type)
            .finish()
    }
}

/// Posts each message to an HTTP API.
pub struct HttpSmsSender {
    client: reqwest::Client,
    url: url::Url,
    auth: Option<(HeaderName, HeaderValue)>,
    body_template: String,
    content_type: HeaderValue,
}

impl std::fmt::Debug for HttpSmsSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSmsSender")
            .field("url", &redacted_url(&self.url))
            .field("auth_header", &self.auth.as_ref().map(|(name, _)| name))
            .finish_non_exhaustive()
    }
}

impl HttpSmsSender {
    pub fn new(config: &HttpSmsConfig) -> Result<Self, SmsSetupError> {
        if !matches!(config.url.scheme(), "https" | "http") {
            return Err(SmsSetupError::Url("must be an https URL".into()));
        }
        if !config.body_template.contains("{text}") {
            return Err(SmsSetupError::BodyTemplate);
        }
        let auth = match &config.auth_header {
            Some(h) => {
                let name = HeaderName::from_bytes(h.name.as_bytes())
                    .map_err(|_| SmsSetupError::HeaderName(h.name.clone()))?;
                let mut value = HeaderValue::from_str(h.value.expose())
                    .map_err(|_| SmsSetupError::HeaderValue)?;
                value.set_sensitive(true);
                Some((name, value))
            }
            None => None,
        };
        let content_type = HeaderValue::from_str(&config.content_type)
            .map_err(|_| SmsSetupError::ContentType(config.content_type.clone()))?;
        // Redirects are not followed: they would carry the credential elsewhere.
        let client = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| SmsSetupError::Client(e.without_url().to_string()))?;
        Ok(Self {
            client,
            url: config.url.clone(),
            auth,
            body_template: config.body_template.clone(),
            content_type,
        })
    }
}

#[async_trait]
impl SmsSender for HttpSmsSender {
    async fn send_sms(&self, to: &str, text: &str) -> Result<(), DeliveryError> {
        let body = render_body(&self.body_template, to, text);
        let mut request = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, self.content_type.clone())
            .body(body);
        if let Some((name, value)) = &self.auth {
            request = request.header(name.clone(), value.clone());
        }
        let endpoint = redacted_url(&self.url);
        // `without_url`: the URL may hold an API key in its query.
        let response = request.send().await.map_err(|e| {
            let e = e.without_url();
            tracing::warn!(endpoint, error = %e, "SMS not sent");
            DeliveryError::Failed(format!("SMS provider {endpoint}: {e}"))
        })?;
        let status = response.status();
        if !status.is_success() {
            tracing::warn!(endpoint, %status, "SMS provider refused the message");
            return Err(DeliveryError::Failed(format!(
                "SMS provider {endpoint} answered {status}"
            )));
        }
        tracing::info!(endpoint, %status, "SMS sent");
        Ok(())
    }
}

/// The URL without its query, user info and fragment: safe to log.
fn redacted_url(url: &url::Url) -> String {
    format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.port().map(|p| format!(":{p}")).unwrap_or_default()
    ) + url.path()
}

/// Fills `{to}` and `{text}` in one pass (a placeholder inside a substituted
/// value stays as it is), each escaped as the inside of a JSON string.
pub fn render_body(template: &str, to: &str, text: &str) -> String {
    let mut out = String::with_capacity(template.len() + to.len() + text.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open..];
        if let Some(tail) = after.strip_prefix("{to}") {
            out.push_str(&json_string_inside(to));
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("{text}") {
            out.push_str(&json_string_inside(text));
            rest = tail;
        } else {
            out.push('{');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    out
}

/// `s` as a JSON string, without the surrounding quotes.
fn json_string_inside(s: &str) -> String {
    let quoted = serde_json::Value::from(s).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

/// Appends each message as one JSON line (`{"at":..,"to":..,"text":..}`) to
/// a file readable by its owner only: for development and the embedded
/// default, where no SMS provider is configured.
#[derive(Debug)]
pub struct OutboxSmsSender {
    path: PathBuf,
    clock: SharedClock,
    /// Serializes appends so lines never interleave.
    lock: tokio::sync::Mutex<()>,
}

impl OutboxSmsSender {
    /// Creates the file's folder when it does not exist.
    pub fn new(path: impl Into<PathBuf>, clock: SharedClock) -> Result<Self, SmsSetupError> {
        let path = path.into();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|error| SmsSetupError::Outbox {
                path: parent.to_owned(),
                error,
            })?;
        }
        Ok(Self {
            path,
            clock,
            lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The file the messages are appended to.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl SmsSender for OutboxSmsSender {
    async fn send_sms(&self, to: &str, text: &str) -> Result<(), DeliveryError> {
        let at = self
            .clock
            .now()
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| DeliveryError::Failed(format!("cannot format the time: {e}")))?;
        let mut line = serde_json::json!({ "at": at, "to": to, "text": text }).to_string();
        line.push('\n');
        let _guard = self.lock.lock().await;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || append_private(&path, line.as_bytes()))
            .await
            .map_err(|e| DeliveryError::Failed(format!("SMS outbox writer stopped: {e}")))?
            .map_err(|e| {
                DeliveryError::Failed(format!("cannot write {}: {e}", self.path.display()))
            })?;
        tracing::info!(path = %self.path.display(), "SMS written to the outbox");
        Ok(())
    }
}

/// Appends to `path`, creating it readable and writable by its owner only.
fn append_private(path: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(content)?;
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_once_and_json_escaped() {
        assert_eq!(
            render_body(DEFAULT_BODY_TEMPLATE, "+33612345678", "Code \"1\"\n{to}"),
            r#"{"to":"+33612345678","text":"Code \"1\"\n{to}"}"#
        );
        assert_eq!(render_body("{x} {text} {to", "+1", "é\\"), r#"{x} é\\ {to"#);
    }

    #[test]
    fn setup_checks_the_config_and_hides_the_credential() {
        let config = |template: &str, header: &str| HttpSmsConfig {
            url: url::Url::parse("https://sms.example/v1/messages?key=k").expect("url"),
            auth_header: Some(AuthHeader {
                name: header.into(),
                value: Secret::new("Bearer s3cr3t"),
            }),
            body_template: template.into(),
            content_type: "application/json".into(),
        };
        let sender = HttpSmsSender::new(&config(DEFAULT_BODY_TEMPLATE, "Authorization"))
            .expect("valid config");
        let printed = format!("{sender:?} {:?}", config(DEFAULT_BODY_TEMPLATE, "X"));
        assert!(
            !printed.contains("s3cr3t") && !printed.contains("key=k"),
            "{printed}"
        );
        assert!(matches!(
            HttpSmsSender::new(&config("{to}", "Authorization")),
            Err(SmsSetupError::BodyTemplate)
        ));
        assert!(matches!(
            HttpSmsSender::new(&config(DEFAULT_BODY_TEMPLATE, "Bad Header")),
            Err(SmsSetupError::HeaderName(_))
        ));
    }
}
