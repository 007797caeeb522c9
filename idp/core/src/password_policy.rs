//! Password rules, configured per organization and per client; when both
//! apply the strictest wins ([`PasswordPolicy::strictest`]).
//!
//! [`PasswordPolicy::check`] reports every rule a password breaks at once (as
//! [`Violation`]s with a message id and parameters for the theme's catalogs),
//! [`PasswordPolicy::rules`] lists the rules to show next to the field, and
//! [`PasswordPolicy::strength`] is the level the meter shows.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::sync::LazyLock;

/// NIST 800-63B §5.1.1.2: verifiers accept passwords of at least 64 characters.
const MIN_MAX_LENGTH: u32 = 64;
/// NIST 800-63B §5.1.1.2: memorized secrets are at least 8 characters.
const MIN_MIN_LENGTH: u32 = 8;
/// Context values (email local part, customer id) shorter than this are not
/// searched for in the password: too many passwords would contain them.
const MIN_CONTEXT_CHARS: usize = 4;
/// Length from which a password that passes may be "strong".
const STRONG_MIN_CHARS: usize = 10;
/// Length from which a password that passes may be "medium".
const MEDIUM_MIN_CHARS: usize = 8;

/// Password rules. Defaults follow NIST 800-63B §5.1.1.2: at least 8
/// characters, at most 128 (at least 64 must be accepted), no composition
/// rules, and a check against the most common breached passwords.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordPolicy {
    /// Minimum length in characters (8 = "medium", 10 = "strong" on the meter).
    pub min_length: u32,
    /// Maximum length in characters; never below 64.
    pub max_length: u32,
    pub require_lowercase: bool,
    pub require_uppercase: bool,
    pub require_digit: bool,
    /// At least one character of `allowed_special` (or any non-alphanumeric
    /// character when that is not set).
    pub require_special: bool,
    /// When set, the only special characters accepted (some portals pass
    /// passwords to systems that refuse others).
    pub allowed_special: Option<String>,
    /// Refuse passwords from the bundled list of common breached passwords.
    pub refuse_breached: bool,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_length: 8,
            max_length: 128,
            require_lowercase: false,
            require_uppercase: false,
            require_digit: false,
            require_special: false,
            allowed_special: None,
            refuse_breached: true,
        }
    }
}

/// A rule a password breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    TooShort {
        min: u32,
    },
    TooLong {
        max: u32,
    },
    MissingLowercase,
    MissingUppercase,
    MissingDigit,
    /// No special character (of `allowed_special` when the policy sets it).
    MissingSpecial,
    /// A special character outside `allowed` (empty: none is accepted).
    SpecialNotAllowed {
        allowed: String,
    },
    /// On the list of the most common breached passwords.
    Breached,
    /// Contains the user's email local part or customer identifier.
    ContainsContext,
}

impl Violation {
    /// The message id in the theme's catalogs (`password.rule.*`).
    pub fn message_key(&self) -> &'static str {
        match self {
            Self::TooShort { .. } => "password.rule.too_short",
            Self::TooLong { .. } => "password.rule.too_long",
            Self::MissingLowercase => "password.rule.missing_lowercase",
            Self::MissingUppercase => "password.rule.missing_uppercase",
            Self::MissingDigit => "password.rule.missing_digit",
            Self::MissingSpecial => "password.rule.missing_special",
            Self::SpecialNotAllowed { allowed } if allowed.is_empty() => {
                "password.rule.special_refused"
            }
            Self::SpecialNotAllowed { .. } => "password.rule.special_not_allowed",
            Self::Breached => "password.rule.breached",
            Self::ContainsContext => "password.rule.contains_context",
        }
    }

    /// The placeholders of the message (`{min}`, `{max}`, `{allowed}`).
    pub fn params(&self) -> BTreeMap<&'static str, String> {
        match self {
            Self::TooShort { min } => BTreeMap::from([("min", min.to_string())]),
            Self::TooLong { max } => BTreeMap::from([("max", max.to_string())]),
            Self::SpecialNotAllowed { allowed } if !allowed.is_empty() => {
                BTreeMap::from([("allowed", allowed.clone())])
            }
            _ => BTreeMap::new(),
        }
    }

    /// The English text (the default of the `en` catalog), for logs, the CLI
    /// and error displays.
    pub fn english(&self) -> String {
        match self {
            Self::TooShort { min } => {
                format!("The password must have at least {min} characters.")
            }
            Self::TooLong { max } => format!("The password must have at most {max} characters."),
            Self::MissingLowercase => "The password must contain a lower-case letter.".into(),
            Self::MissingUppercase => "The password must contain an upper-case letter.".into(),
            Self::MissingDigit => "The password must contain a digit.".into(),
            Self::MissingSpecial => "The password must contain a special character.".into(),
            Self::SpecialNotAllowed { allowed } if allowed.is_empty() => {
                "The password must not contain special characters.".into()
            }
            Self::SpecialNotAllowed { allowed } => {
                format!("Only these special characters are accepted: {allowed}")
            }
            Self::Breached => "This password is one of the most common ones and is easily \
                               guessed: choose another."
                .into(),
            Self::ContainsContext => {
                "The password must not contain your email address or customer identifier.".into()
            }
        }
    }
}

/// The English texts of `violations`, joined by spaces (for error displays).
pub fn english_all(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(Violation::english)
        .collect::<Vec<_>>()
        .join(" ")
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.english())
    }
}

/// Serialized as `{"key": "password.rule.…", "params": {…}}`, the shape the
/// templates translate.
impl Serialize for Violation {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Rule {
            key: self.message_key(),
            params: self.params(),
        }
        .serialize(serializer)
    }
}

/// A rule to show next to the password field: a message id of the theme's
/// catalogs (`password.rule.*`) and its placeholders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub key: &'static str,
    pub params: BTreeMap<&'static str, String>,
}

impl Rule {
    fn new(key: &'static str) -> Self {
        Self {
            key,
            params: BTreeMap::new(),
        }
    }

    fn with(mut self, name: &'static str, value: impl ToString) -> Self {
        self.params.insert(name, value.to_string());
        self
    }
}

/// What the strength meter shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strength {
    /// Breaks a rule, or shorter than 8 characters.
    Weak,
    /// Passes, at least 8 characters.
    Medium,
    /// Passes, at least 10 characters and 3 kinds of characters (lower-case,
    /// upper-case, digits, special).
    Strong,
}

impl Strength {
    /// `weak`, `medium` or `strong`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Weak => "weak",
            Self::Medium => "medium",
            Self::Strong => "strong",
        }
    }

    /// The message id in the theme's catalogs (`password.strength.*`).
    pub fn message_key(self) -> &'static str {
        match self {
            Self::Weak => "password.strength.weak",
            Self::Medium => "password.strength.medium",
            Self::Strong => "password.strength.strong",
        }
    }
}

/// A special character: anything but a letter or a digit (punctuation,
/// symbols, spaces, emoji...).
fn is_special(c: char) -> bool {
    !c.is_alphanumeric()
}

/// The bundled list of common passwords, lower-cased (see the header of
/// `data/common-passwords.txt` for its source and license).
static COMMON_PASSWORDS: LazyLock<HashSet<String>> = LazyLock::new(|| {
    include_str!("../data/common-passwords.txt")
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_lowercase)
        .collect()
});

/// Whether `password` is on the bundled list of common breached passwords
/// (case-insensitive).
pub fn is_common_password(password: &str) -> bool {
    COMMON_PASSWORDS.contains(&password.to_lowercase())
}

impl PasswordPolicy {
    /// The policy that a password passes only when it passes both: the
    /// longest minimum, the shortest maximum (never below 64), every
    /// requirement of either, and only the special characters both accept.
    ///
    /// So that the merged policy can always be met: a minimum above the
    /// merged maximum is lowered to it (it is at least 64 characters anyway),
    /// and when no special character is accepted by both, none is required.
    pub fn strictest(&self, other: &Self) -> Self {
        let max_length = self.max_length.min(other.max_length).max(MIN_MAX_LENGTH);
        let min_length = self.min_length.max(other.min_length).min(max_length);
        let allowed_special = match (&self.allowed_special, &other.allowed_special) {
            (Some(a), Some(b)) => {
                let mut common = String::new();
                for c in a.chars().filter(|c| b.contains(*c)) {
                    if !common.contains(c) {
                        common.push(c);
                    }
                }
                Some(common)
            }
            (Some(a), None) | (None, Some(a)) => Some(a.clone()),
            (None, None) => None,
        };
        let special_possible = allowed_special.as_deref().is_none_or(|s| !s.is_empty());
        Self {
            min_length,
            max_length,
            require_lowercase: self.require_lowercase || other.require_lowercase,
            require_uppercase: self.require_uppercase || other.require_uppercase,
            require_digit: self.require_digit || other.require_digit,
            require_special: (self.require_special || other.require_special) && special_possible,
            allowed_special,
            refuse_breached: self.refuse_breached || other.refuse_breached,
        }
    }

    /// Checks a policy read from configuration. The error names the field
    /// (`password_policy.max_length: ...`).
    pub fn validate(&self) -> Result<(), String> {
        if self.max_length < MIN_MAX_LENGTH {
            return Err(format!(
                "password_policy.max_length: must be at least {MIN_MAX_LENGTH} \
                 (NIST SP 800-63B), not {}",
                self.max_length
            ));
        }
        if self.min_length < MIN_MIN_LENGTH {
            return Err(format!(
                "password_policy.min_length: must be at least {MIN_MIN_LENGTH} \
                 (NIST SP 800-63B), not {}",
                self.min_length
            ));
        }
        if self.min_length > self.max_length {
            return Err(format!(
                "password_policy.min_length: must not exceed max_length ({}), not {}",
                self.max_length, self.min_length
            ));
        }
        if let Some(allowed) = &self.allowed_special {
            if allowed.is_empty() {
                return Err(
                    "password_policy.allowed_special: must not be empty when set \
                     (remove it to accept every special character)"
                        .into(),
                );
            }
            if let Some(c) = allowed.chars().find(|c| !c.is_ascii_punctuation()) {
                return Err(format!(
                    "password_policy.allowed_special: only ASCII punctuation is accepted, \
                     not {c:?}"
                ));
            }
        }
        Ok(())
    }

    /// Every rule `password` breaks, in the order of [`Self::rules`]; empty
    /// when it passes. `context` holds what the password must not contain
    /// (the user's email local part, customer identifier): compared
    /// case-insensitively, values shorter than 4 characters are ignored.
    ///
    /// Length counts Unicode characters; every printable character and the
    /// space are accepted (NIST 800-63B §5.1.1.2).
    pub fn check(&self, password: &str, context: &[&str]) -> Vec<Violation> {
        let mut violations = Vec::new();
        let length = password.chars().count();
        if length < self.min_length as usize {
            violations.push(Violation::TooShort {
                min: self.min_length,
            });
        }
        if length > self.max_length as usize {
            violations.push(Violation::TooLong {
                max: self.max_length,
            });
        }
        if self.require_lowercase && !password.chars().any(char::is_lowercase) {
            violations.push(Violation::MissingLowercase);
        }
        if self.require_uppercase && !password.chars().any(char::is_uppercase) {
            violations.push(Violation::MissingUppercase);
        }
        if self.require_digit && !password.chars().any(char::is_numeric) {
            violations.push(Violation::MissingDigit);
        }
        let allowed = self.allowed_special.as_deref();
        if self.require_special {
            let found = match allowed {
                Some(allowed) => password.chars().any(|c| allowed.contains(c)),
                None => password.chars().any(is_special),
            };
            if !found {
                violations.push(Violation::MissingSpecial);
            }
        }
        if let Some(allowed) = allowed
            && password
                .chars()
                .any(|c| is_special(c) && !allowed.contains(c))
        {
            violations.push(Violation::SpecialNotAllowed {
                allowed: allowed.to_owned(),
            });
        }
        if self.refuse_breached && is_common_password(password) {
            violations.push(Violation::Breached);
        }
        let lowered = password.to_lowercase();
        if context.iter().any(|value| {
            let value = value.trim();
            value.chars().count() >= MIN_CONTEXT_CHARS && lowered.contains(&value.to_lowercase())
        }) {
            violations.push(Violation::ContainsContext);
        }
        violations
    }

    /// The rules to show next to the password field, in a stable order.
    pub fn rules(&self) -> Vec<Rule> {
        let mut rules = vec![
            Rule::new("password.rule.length")
                .with("min", self.min_length)
                .with("max", self.max_length),
        ];
        if self.require_lowercase {
            rules.push(Rule::new("password.rule.lowercase"));
        }
        if self.require_uppercase {
            rules.push(Rule::new("password.rule.uppercase"));
        }
        if self.require_digit {
            rules.push(Rule::new("password.rule.digit"));
        }
        match (self.require_special, self.allowed_special.as_deref()) {
            (_, Some("")) => rules.push(Rule::new("password.rule.no_special")),
            (true, Some(allowed)) => {
                rules.push(Rule::new("password.rule.special_among").with("allowed", allowed));
            }
            (true, None) => rules.push(Rule::new("password.rule.special")),
            (false, Some(allowed)) => {
                rules.push(Rule::new("password.rule.special_only").with("allowed", allowed));
            }
            (false, None) => {}
        }
        if self.refuse_breached {
            rules.push(Rule::new("password.rule.not_common"));
        }
        rules.push(Rule::new("password.rule.not_personal"));
        rules
    }

    /// The meter's level: weak unless the password passes every rule (the
    /// context is not known here), medium from 8 characters, strong from 10
    /// characters with at least 3 kinds of characters.
    pub fn strength(&self, password: &str) -> Strength {
        let length = password.chars().count();
        if length < MEDIUM_MIN_CHARS || !self.check(password, &[]).is_empty() {
            return Strength::Weak;
        }
        let classes = [
            password.chars().any(char::is_lowercase),
            password.chars().any(char::is_uppercase),
            password.chars().any(char::is_numeric),
            password.chars().any(is_special),
        ]
        .into_iter()
        .filter(|present| *present)
        .count();
        if length >= STRONG_MIN_CHARS && classes >= 3 {
            Strength::Strong
        } else {
            Strength::Medium
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn composition() -> PasswordPolicy {
        PasswordPolicy {
            require_lowercase: true,
            require_uppercase: true,
            require_digit: true,
            require_special: true,
            ..PasswordPolicy::default()
        }
    }

    #[test]
    fn default_policy_is_nist() {
        let p = PasswordPolicy::default();
        assert_eq!(p.validate(), Ok(()));
        assert!(p.check("correct horse battery", &[]).is_empty());
        assert!(p.check("tr0ub4dor&3x", &[]).is_empty());
    }

    #[test]
    fn too_short_counts_unicode_characters() {
        let p = PasswordPolicy::default();
        assert_eq!(p.check("qzx12", &[]), vec![Violation::TooShort { min: 8 }]);
        // 8 characters, 16 bytes: long enough.
        assert!(p.check("éèàùçœæß", &[]).is_empty());
        // 7 characters but more than 8 bytes: too short.
        assert_eq!(
            p.check("日本語のパスワ", &[]),
            vec![Violation::TooShort { min: 8 }]
        );
        assert_eq!(p.check("", &[]), vec![Violation::TooShort { min: 8 }]);
    }

    #[test]
    fn too_long() {
        let p = PasswordPolicy {
            max_length: 64,
            ..PasswordPolicy::default()
        };
        assert!(p.check(&"x1".repeat(32), &[]).is_empty());
        assert_eq!(
            p.check(&format!("{}y", "x1".repeat(32)), &[]),
            vec![Violation::TooLong { max: 64 }]
        );
        // 64 characters of 3 bytes each are accepted.
        assert!(p.check(&"€".repeat(64), &[]).is_empty());
    }

    #[test]
    fn spaces_and_any_printable_unicode_are_accepted() {
        let p = PasswordPolicy::default();
        assert!(p.check("  my cat   has 🐈 emoji ", &[]).is_empty());
        assert!(p.check("Пароль для входа", &[]).is_empty());
    }

    #[test]
    fn lowercase_rule() {
        let p = PasswordPolicy {
            require_lowercase: true,
            ..PasswordPolicy::default()
        };
        assert_eq!(
            p.check("ABCDEFGH12", &[]),
            vec![Violation::MissingLowercase]
        );
        assert!(p.check("ABCDEFGH1é", &[]).is_empty());
    }

    #[test]
    fn uppercase_rule() {
        let p = PasswordPolicy {
            require_uppercase: true,
            ..PasswordPolicy::default()
        };
        assert_eq!(
            p.check("abcdefgh12", &[]),
            vec![Violation::MissingUppercase]
        );
        assert!(p.check("abcdefgh1É", &[]).is_empty());
    }

    #[test]
    fn digit_rule() {
        let p = PasswordPolicy {
            require_digit: true,
            ..PasswordPolicy::default()
        };
        assert_eq!(p.check("abcdefghij", &[]), vec![Violation::MissingDigit]);
        assert!(p.check("abcdefghi7", &[]).is_empty());
    }

    #[test]
    fn special_rule_without_a_list_accepts_any_non_alphanumeric() {
        let p = PasswordPolicy {
            require_special: true,
            ..PasswordPolicy::default()
        };
        assert_eq!(p.check("abcdefghi7", &[]), vec![Violation::MissingSpecial]);
        assert!(p.check("abcdefghi~", &[]).is_empty());
        assert!(p.check("abcd efghi", &[]).is_empty(), "a space is special");
        assert!(p.check("abcdefghi€", &[]).is_empty());
    }

    #[test]
    fn allowed_special_restricts_special_characters() {
        let p = PasswordPolicy {
            require_special: true,
            allowed_special: Some("!@#".into()),
            ..PasswordPolicy::default()
        };
        assert!(p.check("abcdefgh!1", &[]).is_empty());
        // Letters with accents are letters, not special characters.
        assert!(p.check("abcdéfgh@1", &[]).is_empty());
        assert_eq!(
            p.check("abcdefgh$1", &[]),
            vec![
                Violation::MissingSpecial,
                Violation::SpecialNotAllowed {
                    allowed: "!@#".into()
                }
            ]
        );
        assert_eq!(
            p.check("abcdefgh!$", &[]),
            vec![Violation::SpecialNotAllowed {
                allowed: "!@#".into()
            }]
        );
        // Without require_special, the list still restricts what is used.
        let optional = PasswordPolicy {
            require_special: false,
            ..p
        };
        assert!(optional.check("abcdefghi1", &[]).is_empty());
        assert_eq!(
            optional.check("abcd efghi", &[]),
            vec![Violation::SpecialNotAllowed {
                allowed: "!@#".into()
            }]
        );
    }

    #[test]
    fn breached_passwords_are_refused_case_insensitively() {
        let p = PasswordPolicy::default();
        assert_eq!(p.check("password", &[]), vec![Violation::Breached]);
        assert_eq!(p.check("PassWord", &[]), vec![Violation::Breached]);
        assert_eq!(p.check("qwertyuiop", &[]), vec![Violation::Breached]);
        assert_eq!(p.check("baseball", &[]), vec![Violation::Breached]);
        assert!(p.check("plinth-marmot-quay", &[]).is_empty());
        let off = PasswordPolicy {
            refuse_breached: false,
            ..PasswordPolicy::default()
        };
        assert!(off.check("password", &[]).is_empty());
    }

    #[test]
    fn the_bundled_list_is_loaded_without_its_header() {
        assert!(COMMON_PASSWORDS.len() > 9_000, "{}", COMMON_PASSWORDS.len());
        assert!(is_common_password("123456"));
        assert!(is_common_password("ILOVEYOU"));
        assert!(!is_common_password("# the 10 000 most common passwords"));
        assert!(!is_common_password(""));
        assert!(
            COMMON_PASSWORDS
                .iter()
                .all(|p| p.to_lowercase() == *p && !p.starts_with('#'))
        );
    }

    #[test]
    fn context_values_are_refused_case_insensitively() {
        let p = PasswordPolicy::default();
        let context = ["alice.martin", "ab12345-idp"];
        assert_eq!(
            p.check("Alice.Martin2024!", &context),
            vec![Violation::ContainsContext]
        );
        assert_eq!(
            p.check("my AB12345-IDP pass", &context),
            vec![Violation::ContainsContext]
        );
        assert!(p.check("unrelated words here", &context).is_empty());
    }

    #[test]
    fn short_context_values_are_ignored() {
        let p = PasswordPolicy::default();
        assert!(p.check("bob is my uncle", &["bob", "", "  "]).is_empty());
        assert_eq!(
            p.check("johnny be good", &["john"]),
            vec![Violation::ContainsContext]
        );
    }

    #[test]
    fn every_violation_is_reported_at_once() {
        let p = PasswordPolicy {
            allowed_special: Some("!".into()),
            ..composition()
        };
        assert_eq!(
            p.check("alice$", &["alice"]),
            vec![
                Violation::TooShort { min: 8 },
                Violation::MissingUppercase,
                Violation::MissingDigit,
                Violation::MissingSpecial,
                Violation::SpecialNotAllowed {
                    allowed: "!".into()
                },
                Violation::ContainsContext,
            ]
        );
        let p = PasswordPolicy {
            min_length: 12,
            ..composition()
        };
        assert_eq!(
            p.check("password", &[]),
            vec![
                Violation::TooShort { min: 12 },
                Violation::MissingUppercase,
                Violation::MissingDigit,
                Violation::MissingSpecial,
                Violation::Breached,
            ]
        );
    }

    #[test]
    fn violations_have_keys_params_and_english() {
        let cases = [
            (
                Violation::TooShort { min: 12 },
                "password.rule.too_short",
                vec![("min", "12")],
                "at least 12 characters",
            ),
            (
                Violation::TooLong { max: 64 },
                "password.rule.too_long",
                vec![("max", "64")],
                "at most 64 characters",
            ),
            (
                Violation::MissingLowercase,
                "password.rule.missing_lowercase",
                vec![],
                "lower-case",
            ),
            (
                Violation::MissingUppercase,
                "password.rule.missing_uppercase",
                vec![],
                "upper-case",
            ),
            (
                Violation::MissingDigit,
                "password.rule.missing_digit",
                vec![],
                "digit",
            ),
            (
                Violation::MissingSpecial,
                "password.rule.missing_special",
                vec![],
                "special character",
            ),
            (
                Violation::SpecialNotAllowed {
                    allowed: "!?".into(),
                },
                "password.rule.special_not_allowed",
                vec![("allowed", "!?")],
                "accepted: !?",
            ),
            (
                Violation::SpecialNotAllowed {
                    allowed: String::new(),
                },
                "password.rule.special_refused",
                vec![],
                "must not contain special characters",
            ),
            (
                Violation::Breached,
                "password.rule.breached",
                vec![],
                "most common",
            ),
            (
                Violation::ContainsContext,
                "password.rule.contains_context",
                vec![],
                "customer identifier",
            ),
        ];
        for (violation, key, params, text) in cases {
            assert_eq!(violation.message_key(), key);
            let expected: BTreeMap<&str, String> =
                params.into_iter().map(|(k, v)| (k, v.to_owned())).collect();
            assert_eq!(violation.params(), expected, "{key}");
            assert!(violation.english().contains(text), "{key}: {violation}");
            assert_eq!(violation.to_string(), violation.english());
        }
        assert_eq!(
            english_all(&[Violation::TooShort { min: 9 }, Violation::MissingDigit]),
            "The password must have at least 9 characters. The password must contain a digit."
        );
        assert_eq!(english_all(&[]), "");
        assert_eq!(
            serde_json::to_value(Violation::TooShort { min: 9 }).expect("serializes"),
            serde_json::json!({"key": "password.rule.too_short", "params": {"min": "9"}})
        );
    }

    /// The text of `key` in a catalog of the default theme (flat `key = "text"`
    /// lines), if any.
    fn catalog_text<'a>(catalog: &'a str, key: &str) -> Option<&'a str> {
        catalog.lines().find_map(|line| {
            let rest = line.strip_prefix(key)?.trim_start().strip_prefix('=')?;
            rest.trim().strip_prefix('"')?.strip_suffix('"')
        })
    }

    #[test]
    fn the_default_theme_has_every_text() {
        let en = include_str!("../../../themes/default/messages/en.toml");
        let fr = include_str!("../../../themes/default/messages/fr.toml");
        let violations = [
            Violation::TooShort { min: 12 },
            Violation::TooLong { max: 64 },
            Violation::MissingLowercase,
            Violation::MissingUppercase,
            Violation::MissingDigit,
            Violation::MissingSpecial,
            Violation::SpecialNotAllowed {
                allowed: "!?".into(),
            },
            Violation::SpecialNotAllowed {
                allowed: String::new(),
            },
            Violation::Breached,
            Violation::ContainsContext,
        ];
        for v in &violations {
            let key = v.message_key();
            let mut text = catalog_text(en, key)
                .unwrap_or_else(|| panic!("{key} missing from en.toml"))
                .to_owned();
            for (name, value) in v.params() {
                text = text.replace(&format!("{{{name}}}"), &value);
            }
            assert_eq!(text, v.english(), "{key}: en.toml and english() differ");
            assert!(
                catalog_text(fr, key).is_some(),
                "{key} missing from fr.toml"
            );
        }
        let policies = [
            PasswordPolicy {
                allowed_special: Some("!".into()),
                ..composition()
            },
            PasswordPolicy {
                require_special: false,
                allowed_special: Some("!".into()),
                ..PasswordPolicy::default()
            },
            PasswordPolicy {
                allowed_special: Some(String::new()),
                ..PasswordPolicy::default()
            },
            composition(),
        ];
        let rule_keys = policies
            .iter()
            .flat_map(PasswordPolicy::rules)
            .map(|r| r.key);
        let strength_keys = [Strength::Weak, Strength::Medium, Strength::Strong]
            .map(Strength::message_key)
            .into_iter()
            .chain(["password.strength.label", "password.rule.heading"]);
        for key in rule_keys.chain(strength_keys) {
            assert!(
                catalog_text(en, key).is_some(),
                "{key} missing from en.toml"
            );
            assert!(
                catalog_text(fr, key).is_some(),
                "{key} missing from fr.toml"
            );
        }
    }

    #[test]
    fn strictest_takes_the_strongest_of_each_rule() {
        let platform = PasswordPolicy::default();
        let org = PasswordPolicy {
            min_length: 12,
            max_length: 200,
            require_digit: true,
            allowed_special: Some("!@#$".into()),
            refuse_breached: false,
            ..PasswordPolicy::default()
        };
        let client = PasswordPolicy {
            min_length: 10,
            max_length: 72,
            require_uppercase: true,
            require_special: true,
            allowed_special: Some("$#%".into()),
            refuse_breached: false,
            ..PasswordPolicy::default()
        };
        let merged = platform.strictest(&org).strictest(&client);
        assert_eq!(
            merged,
            PasswordPolicy {
                min_length: 12,
                max_length: 72,
                require_lowercase: false,
                require_uppercase: true,
                require_digit: true,
                require_special: true,
                allowed_special: Some("#$".into()),
                refuse_breached: true,
            }
        );
        // Order does not matter (up to the order of allowed characters).
        let other = client.strictest(&org).strictest(&platform);
        assert_eq!(
            PasswordPolicy {
                allowed_special: None,
                ..other.clone()
            },
            PasswordPolicy {
                allowed_special: None,
                ..merged
            }
        );
        assert_eq!(other.allowed_special.as_deref(), Some("$#"));
    }

    #[test]
    fn strictest_keeps_one_sided_lists_and_stays_satisfiable() {
        let a = PasswordPolicy {
            allowed_special: Some("!!?".into()),
            ..PasswordPolicy::default()
        };
        let b = PasswordPolicy::default();
        assert_eq!(a.strictest(&b).allowed_special.as_deref(), Some("!!?"));
        assert_eq!(b.strictest(&a).allowed_special.as_deref(), Some("!!?"));
        assert_eq!(a.strictest(&a).allowed_special.as_deref(), Some("!?"));
        assert_eq!(b.strictest(&b).allowed_special, None);

        // A maximum below 64 (never valid in configuration) is raised to 64.
        let short = PasswordPolicy {
            max_length: 20,
            ..PasswordPolicy::default()
        };
        assert_eq!(short.strictest(&b).max_length, 64);

        // A minimum above the merged maximum is lowered to it.
        let long_min = PasswordPolicy {
            min_length: 100,
            max_length: 200,
            ..PasswordPolicy::default()
        };
        let short_max = PasswordPolicy {
            max_length: 64,
            ..PasswordPolicy::default()
        };
        let merged = long_min.strictest(&short_max);
        assert_eq!((merged.min_length, merged.max_length), (64, 64));

        // Disjoint lists: no special character is accepted, none is required.
        let c = PasswordPolicy {
            require_special: true,
            allowed_special: Some("!".into()),
            ..PasswordPolicy::default()
        };
        let d = PasswordPolicy {
            allowed_special: Some("?".into()),
            ..PasswordPolicy::default()
        };
        let merged = c.strictest(&d);
        assert_eq!(merged.allowed_special.as_deref(), Some(""));
        assert!(!merged.require_special);
        assert!(merged.check("abcdefghij", &[]).is_empty());
        assert_eq!(
            merged.check("abcdefghi!", &[]),
            vec![Violation::SpecialNotAllowed {
                allowed: String::new()
            }]
        );
    }

    #[test]
    fn validate_names_the_field() {
        let err = |p: PasswordPolicy| p.validate().expect_err("invalid");
        let e = err(PasswordPolicy {
            max_length: 63,
            ..PasswordPolicy::default()
        });
        assert!(e.starts_with("password_policy.max_length:"), "{e}");
        assert!(e.contains("64") && e.contains("63"), "{e}");

        let e = err(PasswordPolicy {
            min_length: 6,
            ..PasswordPolicy::default()
        });
        assert!(e.starts_with("password_policy.min_length:"), "{e}");
        assert!(e.contains("at least 8"), "{e}");

        let e = err(PasswordPolicy {
            min_length: 130,
            ..PasswordPolicy::default()
        });
        assert!(e.starts_with("password_policy.min_length:"), "{e}");
        assert!(e.contains("max_length"), "{e}");

        let e = err(PasswordPolicy {
            allowed_special: Some(String::new()),
            ..PasswordPolicy::default()
        });
        assert!(e.starts_with("password_policy.allowed_special:"), "{e}");
        assert!(e.contains("empty"), "{e}");

        for bad in ["!a", "! ", "!€", "!1"] {
            let e = err(PasswordPolicy {
                allowed_special: Some(bad.into()),
                ..PasswordPolicy::default()
            });
            assert!(e.starts_with("password_policy.allowed_special:"), "{e}");
            assert!(e.contains("ASCII punctuation"), "{e}");
        }

        let ok = PasswordPolicy {
            min_length: 64,
            max_length: 64,
            allowed_special: Some("!#$%&*+-.:;=?@_~".into()),
            ..composition()
        };
        assert_eq!(ok.validate(), Ok(()));
    }

    #[test]
    fn validate_rejects_what_deserializes() {
        let p: PasswordPolicy =
            serde_json::from_value(serde_json::json!({"max_length": 32})).expect("deserializes");
        assert!(p.validate().is_err());
        assert!(
            serde_json::from_value::<PasswordPolicy>(serde_json::json!({"min_len": 9})).is_err(),
            "unknown fields are refused"
        );
    }

    #[test]
    fn rules_list_what_applies() {
        let keys = |p: &PasswordPolicy| p.rules().iter().map(|r| r.key).collect::<Vec<_>>();
        assert_eq!(
            keys(&PasswordPolicy::default()),
            [
                "password.rule.length",
                "password.rule.not_common",
                "password.rule.not_personal"
            ]
        );
        let rules = composition().rules();
        assert_eq!(
            rules.iter().map(|r| r.key).collect::<Vec<_>>(),
            [
                "password.rule.length",
                "password.rule.lowercase",
                "password.rule.uppercase",
                "password.rule.digit",
                "password.rule.special",
                "password.rule.not_common",
                "password.rule.not_personal"
            ]
        );
        assert_eq!(
            rules[0].params,
            BTreeMap::from([("min", "8".to_owned()), ("max", "128".to_owned())])
        );
        let among = PasswordPolicy {
            require_special: true,
            allowed_special: Some("!?".into()),
            refuse_breached: false,
            ..PasswordPolicy::default()
        };
        let rules = among.rules();
        assert_eq!(rules[1].key, "password.rule.special_among");
        assert_eq!(rules[1].params["allowed"], "!?");
        assert!(!keys(&among).contains(&"password.rule.not_common"));
        let only = PasswordPolicy {
            require_special: false,
            ..among
        };
        assert_eq!(only.rules()[1].key, "password.rule.special_only");
        let none = PasswordPolicy {
            allowed_special: Some(String::new()),
            ..PasswordPolicy::default()
        };
        assert_eq!(none.rules()[1].key, "password.rule.no_special");
        assert_eq!(
            serde_json::to_value(&rules[1]).expect("serializes"),
            serde_json::json!({"key": "password.rule.special_among", "params": {"allowed": "!?"}})
        );
    }

    #[test]
    fn strength_levels() {
        let p = PasswordPolicy::default();
        assert_eq!(p.strength("short"), Strength::Weak);
        assert_eq!(p.strength("password"), Strength::Weak, "breached");
        assert_eq!(p.strength("zebulonk"), Strength::Medium, "8 characters");
        assert_eq!(
            p.strength("zebulonkatze"),
            Strength::Medium,
            "long but one kind"
        );
        assert_eq!(p.strength("Zebul0nk!"), Strength::Medium, "9 characters");
        assert_eq!(p.strength("Zebulonk42"), Strength::Strong);
        assert_eq!(p.strength("zebulon k42"), Strength::Strong);
        // A policy rule broken: weak whatever the length.
        let strict = composition();
        assert_eq!(strict.strength("zebulonkatze42"), Strength::Weak);
        assert_eq!(strict.strength("Zebulonk42!"), Strength::Strong);
        // A long minimum: 9 characters do not pass.
        let long = PasswordPolicy {
            min_length: 12,
            ..PasswordPolicy::default()
        };
        assert_eq!(long.strength("Zebulonk42"), Strength::Weak);
        assert_eq!(long.strength("Zebulonk4242"), Strength::Strong);
    }

    #[test]
    fn strength_serializes_lowercase_with_message_keys() {
        for (s, name) in [
            (Strength::Weak, "weak"),
            (Strength::Medium, "medium"),
            (Strength::Strong, "strong"),
        ] {
            assert_eq!(serde_json::to_value(s).expect("serializes"), name);
            assert_eq!(s.as_str(), name);
            assert_eq!(s.message_key(), format!("password.strength.{name}"));
        }
    }
}
