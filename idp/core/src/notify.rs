//! Messages to users (a login code by email or SMS, ...) as a port. The core
//! says what to send, to whom, in which language and for which client; the
//! server renders it with the client's theme and hands it to the email or
//! SMS adapter. [`MemoryOutbox`] keeps them in memory (tests, embedded use).

use crate::domain::Email;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// What a message says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Message {
    /// A one-time login code.
    LoginCode { code: String, valid_minutes: u32 },
    /// A code confirming a phone number being enrolled.
    PhoneVerificationCode { code: String, valid_minutes: u32 },
    /// A link to choose a new password (forgot password).
    PasswordResetLink { url: String, valid_minutes: u32 },
    /// A link for a new member to define their password.
    InvitationLink {
        url: String,
        valid_hours: u32,
        org_name: String,
        customer_id: String,
    },
    /// The password was changed or reset.
    PasswordChanged,
    /// The customer identifier of the account (forgot identifier).
    CustomerIdReminder { customer_id: String },
    /// A code confirming a new primary email address.
    EmailChangeCode { code: String, valid_minutes: u32 },
    /// Sent to the old address when the primary email changed.
    EmailChanged { new_email: String },
    /// To the creator: the organization waits for validation.
    OrganizationCreated { org_name: String },
    /// To every member: the organization was validated.
    OrganizationValidated { org_name: String },
    /// To the creator: the organization was rejected.
    OrganizationRejected { org_name: String },
    /// A message of a login method, rendered with the method's own templates
    /// (`emails/<template>.*`, `sms/<template>.txt`): its fields are the
    /// templates' context. A method adds messages without a variant here.
    Method {
        template: String,
        #[serde(flatten)]
        fields: serde_json::Map<String, serde_json::Value>,
    },
}

impl Message {
    /// The template family of the message (`emails/<name>.*`, `sms/<name>.txt`).
    pub fn template(&self) -> &str {
        match self {
            Self::LoginCode { .. } => "login_code",
            Self::PhoneVerificationCode { .. } => "phone_verification_code",
            Self::PasswordResetLink { .. } => "password_reset_link",
            Self::InvitationLink { .. } => "invitation_link",
            Self::PasswordChanged => "password_changed",
            Self::CustomerIdReminder { .. } => "customer_id_reminder",
            Self::EmailChangeCode { .. } => "email_change_code",
            Self::EmailChanged { .. } => "email_changed",
            Self::OrganizationCreated { .. } => "organization_created",
            Self::OrganizationValidated { .. } => "organization_validated",
            Self::OrganizationRejected { .. } => "organization_rejected",
            Self::Method { template, .. } => template,
        }
    }
}

/// A message with the context it is rendered in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub message: Message,
    /// `en` or `fr`.
    pub locale: String,
    /// The client's theme.
    pub theme: String,
    pub client_name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The provider refused or could not be reached; the user may retry.
    #[error("message delivery failed: {0}")]
    Failed(String),
    /// The message could not be built (template error, bad address).
    #[error("message could not be built: {0}")]
    Invalid(String),
}

/// Sends messages to users.
#[async_trait]
pub trait Notifier: Send + Sync {
    async fn email(&self, to: &Email, n: &Notification) -> Result<(), DeliveryError>;
    /// `to` is an E.164 number (`+33612345678`).
    async fn sms(&self, to: &str, n: &Notification) -> Result<(), DeliveryError>;
}

/// Where a message went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    Email(String),
    Phone(String),
}

/// Keeps every message in memory, newest last.
#[derive(Debug, Default)]
pub struct MemoryOutbox {
    sent: Mutex<Vec<(Recipient, Notification)>>,
}

impl MemoryOutbox {
    pub fn messages(&self) -> Vec<(Recipient, Notification)> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The newest message to a recipient.
    pub fn last_to(&self, to: &Recipient) -> Option<Notification> {
        self.messages()
            .into_iter()
            .rev()
            .find(|(r, _)| r == to)
            .map(|(_, n)| n)
    }
}

#[async_trait]
impl Notifier for MemoryOutbox {
    async fn email(&self, to: &Email, n: &Notification) -> Result<(), DeliveryError> {
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((Recipient::Email(to.as_str().to_owned()), n.clone()));
        Ok(())
    }

    async fn sms(&self, to: &str, n: &Notification) -> Result<(), DeliveryError> {
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((Recipient::Phone(to.to_owned()), n.clone()));
        Ok(())
    }
}

/// An email ready to send: rendered, with its subject and bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingEmail {
    /// One address (`alice@example.com`).
    pub to: String,
    pub subject: String,
    /// The plain-text body, always present.
    pub text: String,
    /// The HTML body; with it the message is `multipart/alternative`.
    pub html: Option<String>,
}

/// Delivers rendered emails (SMTP, a file outbox). Adapters hold their own
/// transport settings, including the sender address.
#[async_trait]
pub trait EmailSender: Send + Sync {
    async fn send_email(&self, email: &OutgoingEmail) -> Result<(), DeliveryError>;
}

/// Delivers rendered text messages (an HTTP provider, a file outbox).
#[async_trait]
pub trait SmsSender: Send + Sync {
    /// `to` is an E.164 number (`+33612345678`).
    async fn send_sms(&self, to: &str, text: &str) -> Result<(), DeliveryError>;
}
