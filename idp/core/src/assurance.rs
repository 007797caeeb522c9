//! Assurance: what a single sign-on session has proven ([`Proof`]s), what a
//! set of proofs is worth (`amr`, factors), and the levels an operator
//! declares once ([`Levels`]: the `acr` values clients' flows reach).
//!
//! A session never stores a level: each authorization evaluates the
//! requesting client's flow against the proofs (see `flow::runner`), and the
//! code's `acr` and `amr` say what that flow obtained.
//!
//! Facts this rests on (NIST SP 800-63B, RFC 8176):
//! - AAL1 is one proof; AAL2 two different kinds of factor (or one
//!   multi-factor authenticator); AAL3 adds verifier-impersonation
//!   resistance (WebAuthn, passkeys) on hardware.
//! - An emailed code or link is not an authenticator (SP 800-63B rev. 3
//!   §5.1.3.1): a proof of a mailbox, never a factor, never toward AAL2.
//! - SMS is a restricted authenticator: toward AAL2 only on a level that
//!   allows restricted authenticators.
//! - `mfa` is claimed only when two different kinds of factor were proven.

use crate::domain::TokenHash;
use crate::method::{Factor, MethodId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;

/// One thing a session proved: which method, which factors, with which
/// credential, when, and from which browser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    pub method: MethodId,
    /// The factors it proved (none for an emailed code).
    pub factors: Vec<Factor>,
    /// Its RFC 8176 `amr` values.
    pub amr: Vec<String>,
    /// The credential used (a TOTP device, a key), when there is one.
    #[serde(default)]
    pub credential: Option<uuid::Uuid>,
    /// Unix seconds.
    pub at: i64,
    /// The browser's device cookie (its hash) when the proof was made.
    #[serde(default)]
    pub device: Option<TokenHash>,
}

impl Proof {
    /// Whether the proof is young enough: at most `max_age` seconds old
    /// (when the request limits it) and at most `reuse_secs` (when the
    /// client limits how long proofs are reused), at `now`.
    pub fn is_fresh(&self, now: i64, max_age: Option<u64>, reuse_secs: Option<u64>) -> bool {
        let age = now.saturating_sub(self.at).max(0) as u64;
        max_age.is_none_or(|m| age <= m) && reuse_secs.is_none_or(|r| age <= r)
    }
}

/// The kinds of factor a set of proofs covers.
pub fn factor_kinds<'a>(proofs: impl IntoIterator<Item = &'a Proof>) -> BTreeSet<Factor> {
    proofs
        .into_iter()
        .flat_map(|p| p.factors.iter().copied())
        .collect()
}

/// Whether the proofs cover two different kinds of factor (`mfa`, AAL2).
pub fn is_multi_factor<'a>(proofs: impl IntoIterator<Item = &'a Proof>) -> bool {
    factor_kinds(proofs).len() >= 2
}

/// The `amr` of a set of proofs: their values in order, without repeats,
/// and `mfa` exactly when two different kinds of factor were proven (a
/// value `mfa` a method reported otherwise is dropped).
pub fn combined_amr(proofs: &[Proof]) -> Vec<String> {
    let mut amr: Vec<String> = Vec::new();
    for a in proofs.iter().flat_map(|p| &p.amr) {
        if a != "mfa" && !amr.contains(a) {
            amr.push(a.clone());
        }
    }
    if is_multi_factor(proofs) {
        amr.push("mfa".into());
    }
    amr
}

/// Merges `new` proofs into `kept` (a session's): a proof replaces an
/// older one of the same method and credential.
pub fn merge_proofs(kept: &mut Vec<Proof>, new: &[Proof]) {
    for p in new {
        kept.retain(|k| !(k.method == p.method && k.credential == p.credential));
        kept.push(p.clone());
    }
    kept.sort_by_key(|p| p.at);
}

/// A NIST authenticator assurance level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Aal {
    Aal1 = 1,
    Aal2 = 2,
    Aal3 = 3,
}

impl Aal {
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            1 => Some(Self::Aal1),
            2 => Some(Self::Aal2),
            3 => Some(Self::Aal3),
            _ => None,
        }
    }

    pub fn number(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for Aal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AAL{}", self.number())
    }
}

/// An assurance level as declared in `idp.toml` (`[[assurance_levels]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelSpec {
    /// The `acr` value: a URI or a short string without spaces.
    pub value: String,
    /// What it means, for people (docs, the operator).
    pub label: String,
    /// The NIST AAL every flow claiming it must reach: 1, 2 or 3.
    pub aal: u8,
    /// Only WebAuthn keys or passkeys may reach it (every path through the
    /// flow has one). Implied by `aal = 3`.
    #[serde(default)]
    pub phishing_resistant: bool,
    /// SMS codes (restricted authenticators, SP 800-63B §5.1.3.3) count
    /// toward its AAL. Off by default: a flow whose second factor may be a
    /// text message then claims a level of AAL1.
    #[serde(default)]
    pub restricted_authenticators: bool,
}

/// A declared assurance level, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Level {
    pub value: String,
    pub label: String,
    pub aal: Aal,
    pub phishing_resistant: bool,
    pub restricted_authenticators: bool,
}

/// The declared levels, in declaration order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Levels(Vec<Level>);

impl Levels {
    /// The levels a configuration that declares none has: `1` (one
    /// factor), `2` (two kinds of factor, no SMS) and `3` (a WebAuthn key
    /// or passkey).
    pub fn builtin() -> Self {
        Self::from_specs(&Self::builtin_specs()).expect("the built-in levels are valid")
    }

    pub fn builtin_specs() -> Vec<LevelSpec> {
        vec![
            LevelSpec {
                value: "1".into(),
                label: "One proof: a password, a passkey, an upstream sign-in or an emailed code"
                    .into(),
                aal: 1,
                phishing_resistant: false,
                restricted_authenticators: false,
            },
            LevelSpec {
                value: "2".into(),
                label: "Two kinds of factor: a password and an authenticator app, a security key or a recovery code".into(),
                aal: 2,
                phishing_resistant: false,
                restricted_authenticators: false,
            },
            LevelSpec {
                value: "3".into(),
                label: "Phishing-resistant: a security key or a passkey with user verification"
                    .into(),
                aal: 2,
                phishing_resistant: true,
                restricted_authenticators: false,
            },
        ]
    }

    /// Checks declared levels; the error names the entry and the field.
    pub fn from_specs(specs: &[LevelSpec]) -> Result<Self, String> {
        let mut levels: Vec<Level> = Vec::new();
        for (i, s) in specs.iter().enumerate() {
            let at = format!("assurance_levels[{i}]");
            if s.value.is_empty() || s.value.contains(char::is_whitespace) || s.value.len() > 255 {
                return Err(format!(
                    "{at}.value: a non-empty acr value without spaces (a URI or a short string)"
                ));
            }
            if levels.iter().any(|l| l.value == s.value) {
                return Err(format!("{at}.value: {:?} is declared twice", s.value));
            }
            if s.label.trim().is_empty() {
                return Err(format!("{at}.label: say what the level means"));
            }
            let aal = Aal::from_number(s.aal)
                .ok_or_else(|| format!("{at}.aal: 1, 2 or 3 (NIST SP 800-63B)"))?;
            levels.push(Level {
                value: s.value.clone(),
                label: s.label.clone(),
                aal,
                phishing_resistant: s.phishing_resistant || aal == Aal::Aal3,
                restricted_authenticators: s.restricted_authenticators,
            });
        }
        if levels.is_empty() {
            return Err("assurance_levels: declare at least one level".into());
        }
        Ok(Self(levels))
    }

    pub fn get(&self, value: &str) -> Option<&Level> {
        self.0.iter().find(|l| l.value == value)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Level> {
        self.0.iter()
    }

    /// The values, for discovery's `acr_values_supported`.
    pub fn values(&self) -> Vec<String> {
        self.0.iter().map(|l| l.value.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proof(method: &'static str, factors: &[Factor], amr: &[&str], at: i64) -> Proof {
        Proof {
            method: MethodId::new(method),
            factors: factors.to_vec(),
            amr: amr.iter().map(|a| (*a).to_owned()).collect(),
            credential: None,
            at,
            device: None,
        }
    }

    #[test]
    fn mfa_needs_two_kinds_of_factor() {
        let pwd = proof("password", &[Factor::Knowledge], &["pwd"], 1);
        let email = proof("email_code", &[], &["email_otp"], 2);
        let totp = proof("totp", &[Factor::Possession], &["otp"], 3);
        let recovery = proof("recovery_code", &[Factor::Possession], &["otp"], 4);
        assert_eq!(
            combined_amr(&[pwd.clone(), email.clone()]),
            ["pwd", "email_otp"]
        );
        assert_eq!(
            combined_amr(&[pwd.clone(), totp.clone()]),
            ["pwd", "otp", "mfa"]
        );
        // Two possession factors are one kind.
        assert_eq!(combined_amr(&[totp.clone(), recovery]), ["otp"]);
        // A method's own `mfa` counts only through its factors.
        let key = proof(
            "passkey",
            &[Factor::Possession, Factor::Verified],
            &["hwk", "mfa"],
            5,
        );
        assert_eq!(combined_amr(&[key]), ["hwk", "mfa"]);
        let upstream = proof("upstream", &[Factor::Knowledge], &["fed", "mfa"], 6);
        assert_eq!(combined_amr(&[upstream]), ["fed"]);
    }

    #[test]
    fn freshness_follows_max_age_and_the_reuse_window() {
        let p = proof("password", &[Factor::Knowledge], &["pwd"], 1_000);
        assert!(p.is_fresh(1_000, Some(0), None));
        assert!(!p.is_fresh(1_001, Some(0), None));
        assert!(p.is_fresh(1_600, Some(600), None));
        assert!(!p.is_fresh(1_601, Some(600), None));
        assert!(p.is_fresh(9_999, None, None));
        assert!(!p.is_fresh(1_100, None, Some(60)));
        assert!(!p.is_fresh(1_100, Some(u64::MAX), Some(60)));
    }

    #[test]
    fn a_newer_proof_of_the_same_credential_replaces_the_older() {
        let mut kept = vec![proof("password", &[Factor::Knowledge], &["pwd"], 1)];
        merge_proofs(
            &mut kept,
            &[
                proof("password", &[Factor::Knowledge], &["pwd"], 5),
                proof("totp", &[Factor::Possession], &["otp"], 6),
            ],
        );
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].at, 5);
    }

    #[test]
    fn levels_are_checked_with_their_place() {
        assert!(Levels::builtin().get("2").is_some());
        let bad = |f: fn(&mut LevelSpec)| {
            let mut specs = Levels::builtin_specs();
            f(&mut specs[1]);
            Levels::from_specs(&specs).unwrap_err()
        };
        assert!(bad(|s| s.aal = 4).starts_with("assurance_levels[1].aal"));
        assert!(bad(|s| s.value = "1".into()).contains("declared twice"));
        assert!(bad(|s| s.value = "a b".into()).starts_with("assurance_levels[1].value"));
        assert!(bad(|s| s.label = " ".into()).starts_with("assurance_levels[1].label"));
        assert!(Levels::from_specs(&[]).is_err());
        let mut specs = Levels::builtin_specs();
        specs[1].aal = 3;
        assert!(
            Levels::from_specs(&specs)
                .unwrap()
                .get("2")
                .unwrap()
                .phishing_resistant
        );
    }
}
