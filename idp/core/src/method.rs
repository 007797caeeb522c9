//! What an authentication method is, as the rest of the provider sees it:
//! its id ([`MethodId`]) and what it says of itself ([`StepTraits`]): whether
//! it identifies the user, which authentication factors it proves, whether
//! it resists phishing, its `amr` values, whether it comes back through a
//! callback, whether it creates recovery codes. The runner, the flow
//! definition checks and the server crate ask these traits; none of them
//! lists the methods.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;

/// A method's id: its name in client files, templates, URLs, audit events
/// and session proofs (`password`, `totp`, ...).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MethodId(Cow<'static, str>);

impl MethodId {
    /// A method id known at compile time (each step module has one).
    pub const fn new(id: &'static str) -> Self {
        Self(Cow::Borrowed(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for MethodId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for MethodId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for MethodId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for MethodId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// An authentication factor (NIST SP 800-63B §4: something you know, have,
/// are). A WebAuthn assertion with user verification proves possession of
/// the key *and* a verification by the authenticator (a PIN or biometrics,
/// which browsers do not tell apart): [`Factor::Verified`] stands for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Factor {
    /// Something you know (a password).
    Knowledge,
    /// Something you have (an authenticator app, a key, a phone, recovery codes).
    Possession,
    /// Something you are (biometrics).
    Inherence,
    /// A PIN or biometrics checked by the authenticator itself (WebAuthn UV).
    Verified,
}

/// What a method is worth as evidence (NIST SP 800-63B; see
/// `config/README.md`, "Assurance levels").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assurance {
    /// Proves something: a session may rely on it (all methods but the
    /// identifier). An emailed code proves control of a mailbox: a proof,
    /// but not an authenticator.
    pub proves: bool,
    /// The factors a pass always proves (never fewer; a WebAuthn key may
    /// prove more at run time, with user verification).
    pub factors: &'static [Factor],
    /// Verifier-impersonation resistant (WebAuthn, passkeys).
    pub phishing_resistant: bool,
    /// A restricted authenticator (SP 800-63B §5.1.3.3: SMS): counts toward
    /// AAL2 only where the level allows restricted authenticators.
    pub restricted: bool,
}

impl Assurance {
    /// Identifies, proves nothing.
    pub const NONE: Assurance = Assurance {
        proves: false,
        factors: &[],
        phishing_resistant: false,
        restricted: false,
    };

    /// A proof that is not an authenticator (email).
    pub const NOT_AN_AUTHENTICATOR: Assurance = Assurance {
        proves: true,
        factors: &[],
        phishing_resistant: false,
        restricted: false,
    };

    /// One factor of kind `f`.
    pub const fn single(f: &'static [Factor]) -> Assurance {
        Assurance {
            proves: true,
            factors: f,
            phishing_resistant: false,
            restricted: false,
        }
    }
}

/// What a method says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepTraits {
    /// The method's id (see [`StepTraits::method`]).
    pub id: &'static str,
    /// Establishes who the user is (identifier, passkey, upstream): comes
    /// first in a flow, never as an alternative, never conditional.
    pub identifies: bool,
    /// What a pass is worth.
    pub assurance: Assurance,
    /// The RFC 8176 `amr` values a pass may report (documentation and checks).
    pub amr: &'static [&'static str],
    /// Comes back to the provider through a URL of its own (an upstream's
    /// answer, an emailed link), not only through its form.
    pub callback: bool,
    /// Signs in through an upstream provider (federation): a flow starting
    /// with it is the way in offered on the identifier page of its level.
    pub federates: bool,
    /// Can be enrolled during a login (a user with none enrolls one).
    pub enrollable: bool,
    /// Offered when an organization enforces a second factor and the flow
    /// asks none (see `policy::LoginPolicy`).
    pub second_factor: bool,
    /// Its enrollment shows the recovery codes page (first second factor).
    pub creates_recovery_codes: bool,
    /// Needs the issuer to be a host name (WebAuthn relying-party ids
    /// cannot be IP addresses).
    pub needs_host_name: bool,
    /// Page templates (without `.html`) it renders, enrollment included.
    pub templates: &'static [&'static str],
}

impl StepTraits {
    /// The method's id.
    pub fn method(&self) -> MethodId {
        MethodId::new(self.id)
    }

    /// The traits of a plain method: proves `assurance`, shows `templates`;
    /// the other traits start false (set them with struct update syntax).
    pub const fn new(
        id: &'static str,
        assurance: Assurance,
        templates: &'static [&'static str],
    ) -> Self {
        Self {
            id,
            identifies: false,
            assurance,
            amr: &[],
            callback: false,
            federates: false,
            enrollable: false,
            second_factor: false,
            creates_recovery_codes: false,
            needs_host_name: false,
            templates,
        }
    }
}

/// Looks methods up by id: what the flow definitions are checked against.
pub trait MethodCatalog {
    /// The traits of the method `id`, if this build has it.
    fn traits(&self, id: &str) -> Option<&StepTraits>;
    /// Every method's id, in registration order.
    fn ids(&self) -> Vec<MethodId>;
}
