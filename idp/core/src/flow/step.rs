//! What a method is to the runner: the [`Step`] trait, what a step sees
//! ([`StepCx`]), what it shows ([`Challenge`]) and what it decides
//! ([`StepOutcome`]).

use crate::client::Client;
use crate::clock::SharedClock;
use crate::domain::{RequestMeta, User};
use crate::error::CoreError;
use crate::method::StepTraits;
use crate::password::PasswordHasher;
use crate::policy::FlowDef;
use crate::ports::{CredentialRepo, UserRepo};
use async_trait::async_trait;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::collections::HashMap;
use std::sync::Arc;

/// Whether a method can be used by this user now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applicability {
    /// The user has it: it can run.
    Applies,
    /// Not enrolled, and cannot be enrolled during login.
    Skip,
    /// Not enrolled, but can be enrolled during login.
    Enroll,
}

/// A view model for a page: a template key and what it shows. Never HTML.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Challenge {
    /// Template name without extension, e.g. `password`, `code`, `totp_enroll`.
    pub template: &'static str,
    /// Message id of an error to show, if any.
    pub error: Option<&'static str>,
    /// Template data (QR code, masked destination, WebAuthn options, ...).
    pub data: serde_json::Value,
}

impl Challenge {
    pub fn new(template: &'static str) -> Self {
        Self {
            template,
            error: None,
            data: serde_json::Value::Object(Default::default()),
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        if let serde_json::Value::Object(m) = &mut self.data {
            m.insert(key.to_owned(), value.into());
        }
        self
    }

    pub fn with_error(mut self, message_id: &'static str) -> Self {
        self.error = Some(message_id);
        self
    }
}

/// What a pass proved: its RFC 8176 `amr` values, the factors it proved
/// (at least those of the method's [`Assurance`](crate::method::Assurance)),
/// and which credential did (a TOTP device, a key).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Proven {
    pub amr: Vec<String>,
    pub factors: Vec<crate::method::Factor>,
    pub credential: Option<uuid::Uuid>,
}

impl Proven {
    /// Nothing proven (the identifier).
    pub fn nothing() -> Self {
        Self::default()
    }

    /// A pass with these `amr` values, proving these factors.
    pub fn new(amr: &[&str], factors: &[crate::method::Factor]) -> Self {
        Self {
            amr: amr.iter().map(|a| (*a).to_owned()).collect(),
            factors: factors.to_vec(),
            credential: None,
        }
    }

    /// Made with this credential.
    pub fn with_credential(mut self, id: uuid::Uuid) -> Self {
        self.credential = Some(id);
        self
    }
}

/// What a step decided about a submission.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome {
    /// Done: this was proven.
    Passed(Proven),
    /// Show this again (e.g. a new code was sent), no failure.
    Again(Challenge),
    /// Wrong answer; `count_failure` feeds the per-user, per-method throttle.
    Rejected {
        challenge: Challenge,
        count_failure: bool,
    },
    /// Leave for another site (an upstream provider's authorization
    /// endpoint); the flow goes on when the answer comes back.
    Redirect { location: String },
    /// An upstream provider vouched for this identity; the runner decides
    /// what it leads to (a linked account, a link to prove, a new account).
    Federated(Box<crate::federation::UpstreamIdentity>),
}

/// The field the runner sets on a submission it builds from a callback (a
/// posted form never carries it: the runner strips it).
pub const CALLBACK_FIELD: &str = "callback";

/// The fields of a submitted form (the runner removes `csrf`), and for a
/// callback what its token was bound to.
#[derive(Debug, Clone, Default)]
pub struct StepInput {
    fields: HashMap<String, String>,
    binding: serde_json::Value,
}

impl StepInput {
    pub fn new(fields: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            fields: fields.into_iter().collect(),
            binding: serde_json::Value::Null,
        }
    }

    /// With what a callback token was bound to (see
    /// [`super::state::CallbackBinding`]).
    pub fn with_binding(mut self, value: serde_json::Value) -> Self {
        self.binding = value;
        self
    }

    /// What the callback token of this submission was bound to (`Null` for
    /// a form).
    pub fn binding(&self) -> &serde_json::Value {
        &self.binding
    }

    /// Whether this submission is a callback the runner built.
    pub fn is_callback(&self) -> bool {
        self.get(CALLBACK_FIELD).is_some()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    /// The same fields but `name`.
    pub fn without(&self, name: &str) -> Self {
        let mut fields = self.fields.clone();
        fields.remove(name);
        Self {
            fields,
            binding: self.binding.clone(),
        }
    }

    /// A field as a secret (password, code).
    pub fn secret(&self, name: &str) -> Option<crate::secret::Secret> {
        self.get(name)
            .map(|s| crate::secret::Secret::new(s.to_owned()))
    }
}

/// Settings of the authentication methods (`[login_methods]` in idp.toml).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MethodSettings {
    /// How long an emailed or texted code is valid.
    pub code_ttl_secs: u32,
    /// Wrong entries allowed for one code before a new one is needed.
    pub code_max_attempts: u32,
    /// Minimum time between two sends of a code.
    pub code_resend_cooldown_secs: u32,
    /// Issuer shown in authenticator apps.
    pub totp_issuer: String,
    /// How many recovery codes are generated.
    pub recovery_codes: u32,
    /// WebAuthn user verification: `required`, `preferred` or `discouraged`.
    pub webauthn_user_verification: String,
    /// How long a browser is remembered after a successful check.
    pub device_cookie_days: u32,
}

impl Default for MethodSettings {
    fn default() -> Self {
        Self {
            code_ttl_secs: 600,
            code_max_attempts: 5,
            code_resend_cooldown_secs: 30,
            totp_issuer: "Identity provider".into(),
            recovery_codes: 10,
            webauthn_user_verification: "preferred".into(),
            device_cookie_days: 180,
        }
    }
}

/// The relying party identity for WebAuthn, derived from the issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebauthnSettings {
    /// The issuer's host (`login.example.com`).
    pub rp_id: String,
    /// The issuer's origin (`https://login.example.com`).
    pub origin: String,
    pub rp_name: String,
}

/// The ports steps may use.
#[derive(Clone)]
pub struct StepPorts {
    /// The provider's issuer: links in messages start with it.
    pub issuer: String,
    pub users: Arc<dyn UserRepo>,
    pub credentials: Arc<dyn CredentialRepo>,
    /// Login flows, for steps that come back through a callback.
    pub flows: Arc<dyn super::state::FlowStore>,
    /// Counters (codes sent per destination).
    pub throttle: Arc<crate::throttle::Throttle>,
    pub hasher: PasswordHasher,
    pub clock: SharedClock,
    /// Seals secrets stored at rest (TOTP seeds).
    pub kek: crate::secret::KeyEncryptionKey,
    pub notifier: Arc<dyn crate::notify::Notifier>,
    pub settings: MethodSettings,
    pub webauthn: WebauthnSettings,
    /// Upstream OpenID providers (federation).
    pub upstreams: Arc<dyn crate::federation::Upstreams>,
}

/// What a step sees: a read-only view of the flow, its own scratch state, the
/// ports, and request facts.
pub struct StepCx<'a> {
    pub ports: &'a StepPorts,
    pub client: &'a Client,
    pub flow_id: &'a str,
    /// The user, once identified.
    pub user: Option<&'a User>,
    /// What the user typed at the identifier step, if any.
    pub identifier: Option<&'a str>,
    pub meta: &'a RequestMeta,
    pub locale: &'a str,
    /// The flow being run (its per-flow settings).
    pub flow: Option<&'a FlowDef>,
    /// How old the authentication may be, when the request limits it
    /// (`max_age`; `0` for `prompt=login`): for steps that sign in elsewhere.
    pub max_age: Option<u64>,
    scratch: &'a mut serde_json::Value,
    identified: Option<Identified>,
}

/// Set by an identifying step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identified {
    /// `None` when nobody matches: the flow goes on identically (no enumeration).
    pub user: Option<User>,
    pub identifier: String,
}

impl<'a> StepCx<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ports: &'a StepPorts,
        client: &'a Client,
        flow_id: &'a str,
        user: Option<&'a User>,
        identifier: Option<&'a str>,
        meta: &'a RequestMeta,
        locale: &'a str,
        scratch: &'a mut serde_json::Value,
    ) -> Self {
        Self {
            ports,
            client,
            flow_id,
            user,
            identifier,
            meta,
            locale,
            flow: None,
            max_age: None,
            scratch,
            identified: None,
        }
    }

    /// Tells the step how old the authentication may be.
    pub fn with_max_age(mut self, max_age: Option<u64>) -> Self {
        self.max_age = max_age;
        self
    }

    /// Tells the step which flow it runs in.
    pub fn in_flow(mut self, flow: &'a FlowDef) -> Self {
        self.flow = Some(flow);
        self
    }

    /// This step's scratch state (default when none saved yet).
    pub fn scratch<T: DeserializeOwned + Default>(&self) -> T {
        serde_json::from_value(self.scratch.clone()).unwrap_or_default()
    }

    pub fn set_scratch<T: Serialize>(&mut self, value: &T) -> Result<(), CoreError> {
        *self.scratch =
            serde_json::to_value(value).map_err(|e| CoreError::Internal(e.to_string()))?;
        Ok(())
    }

    /// For identifying steps: who the user is (or that nobody matches).
    pub fn identify(&mut self, user: Option<User>, identifier: String) {
        self.identified = Some(Identified { user, identifier });
    }

    pub fn take_identified(&mut self) -> Option<Identified> {
        self.identified.take()
    }

    /// The user; steps that `requires_subject` may rely on it being known
    /// (an unknown identifier reaches them with `None`, and they must answer
    /// exactly as for a wrong secret).
    pub fn subject(&self) -> Option<&'a User> {
        self.user
    }
}

/// One authentication method. Adding a method is one module implementing
/// this, its templates and messages, and one registry line.
#[async_trait]
pub trait Step: Send + Sync {
    /// What the method is: its id, whether it identifies, what it proves.
    fn traits(&self) -> &StepTraits;

    /// The page template of the method (or of its enrollment).
    fn template(&self, enrolling: bool) -> &'static str;

    /// Whether this user can use the method now, must enroll, or cannot.
    async fn applies(&self, cx: &StepCx<'_>) -> Result<Applicability, CoreError>;

    /// The page for the method (may send a code, prepare WebAuthn options).
    async fn present(&self, cx: &mut StepCx<'_>) -> Result<Challenge, CoreError>;

    /// Checks a submission.
    async fn submit(
        &self,
        cx: &mut StepCx<'_>,
        input: &StepInput,
    ) -> Result<StepOutcome, CoreError>;

    /// The enrollment page, for methods that can be enrolled during login.
    async fn present_enrollment(&self, _cx: &mut StepCx<'_>) -> Result<Challenge, CoreError> {
        Err(CoreError::Internal(format!(
            "{} cannot be enrolled during login",
            self.traits().id
        )))
    }

    /// Checks an enrollment submission; `Passed` when enrolled (and proven).
    async fn submit_enrollment(
        &self,
        _cx: &mut StepCx<'_>,
        _input: &StepInput,
    ) -> Result<StepOutcome, CoreError> {
        Err(CoreError::Internal(format!(
            "{} cannot be enrolled during login",
            self.traits().id
        )))
    }
}
