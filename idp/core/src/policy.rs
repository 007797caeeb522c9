//! The flow definition language: what a client's config says about the
//! steps its users go through, parsed and checked once at start-up.
//!
//! ```toml
//! [[login.flows]]
//! name = "default"
//! acr = "1"
//! steps = ["identifier", "password", { any = ["totp", "webauthn"], when = "enrolled" }]
//!
//! [[login.flows]]
//! name = "strong"
//! acr = "2"
//! steps = ["identifier", "password", "totp|webauthn|email_code"]
//! ```
//!
//! A step is a method name, or `a|b|c` for one of several methods the user
//! picks from; the table form adds a condition (`when`). The first flow is the
//! default; a request whose `acr_values` names another flow's `acr` runs that
//! flow instead (step-up).
//!
//! Methods are looked up in a [`MethodCatalog`] (the registered steps): what
//! a method is (identifying, proving, federating) is what its traits say.

use crate::assurance::{Aal, Level, Levels};
use crate::method::{Assurance, Factor, MethodCatalog, MethodId, StepTraits};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::fmt;

/// When a stage runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Always; a user with none of the methods enrolled enrolls one during login.
    Always,
    /// Only when the user has one of the methods enrolled; skipped otherwise.
    Enrolled,
    /// Only on a browser this user has not signed in from before (risk-based check).
    UnknownDevice,
    /// Only when the account must use a second factor (`mfa_required`, set by the
    /// organization's policy or an admin); a user with none enrolls one.
    MfaRequired,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::Enrolled => "enrolled",
            Self::UnknownDevice => "unknown_device",
            Self::MfaRequired => "mfa_required",
        }
    }
}

/// One stage of a flow: one method, or one of several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub methods: Vec<MethodId>,
    pub when: Condition,
    /// Its method identifies the user (identifier, passkey, upstream).
    pub identifies: bool,
    /// Every method of the stage proves something (all but the identifier).
    pub proves: bool,
    /// Its method signs in through an upstream provider.
    pub federates: bool,
}

impl Stage {
    /// The stage where the user types who they are: it identifies and
    /// proves nothing (its page offers the upstreams).
    pub fn is_typed_identifier(&self) -> bool {
        self.identifies && !self.proves
    }

    pub fn accepts(&self, method: &MethodId) -> bool {
        self.methods.contains(method)
    }
}

/// A named flow reaching an `acr` level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowDef {
    pub name: String,
    pub acr: String,
    pub stages: Vec<Stage>,
    /// User verification asked of WebAuthn second factors in this flow
    /// (`required`, `preferred`, `discouraged`); `None` follows
    /// `login_methods.webauthn_user_verification`.
    pub webauthn_user_verification: Option<String>,
}

impl FlowDef {
    /// Whether the first stage is where the user types who they are.
    pub fn starts_with_typed_identifier(&self) -> bool {
        self.stages.first().is_some_and(Stage::is_typed_identifier)
    }

    /// Whether the first stage signs in through an upstream provider.
    pub fn starts_with_federation(&self) -> bool {
        self.stages.first().is_some_and(|s| s.federates)
    }

    /// Whether some stage signs in through an upstream provider.
    pub fn federates(&self) -> bool {
        self.stages.iter().any(|s| s.federates)
    }
}

/// A client's login policy: its flows (the first is the default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginPolicy {
    pub flows: Vec<FlowDef>,
    /// How long a session's proofs may be relied on by this client's flows
    /// (`[login] reuse_secs`); `None`: as long as the session lasts.
    pub reuse_secs: Option<u64>,
}

impl LoginPolicy {
    /// The identifier-then-password flow of a client that declares none, at
    /// the first declared level of AAL1.
    pub fn password_only(
        catalog: &dyn MethodCatalog,
        levels: &Levels,
    ) -> Result<Self, DefinitionError> {
        let acr = levels
            .iter()
            .find(|l| l.aal == Aal::Aal1 && !l.phishing_resistant)
            .ok_or_else(|| {
                err(
                    "flows".into(),
                    "a client without flows signs in with identifier then password (AAL1): declare a level of aal = 1",
                )
            })?;
        let spec = FlowSpec {
            name: "default".into(),
            acr: acr.value.clone(),
            steps: vec![
                StageSpec::Short("identifier".into()),
                StageSpec::Short("password".into()),
            ],
            webauthn_user_verification: None,
        };
        parse_policy(&[spec], catalog, levels)
    }

    pub fn default_flow(&self) -> &FlowDef {
        &self.flows[0]
    }

    pub fn by_name(&self, name: &str) -> Option<&FlowDef> {
        self.flows.iter().find(|f| f.name == name)
    }

    /// The way in through an upstream provider offered on `flow`'s
    /// identifier page: the flow of the same level that starts with
    /// `upstream`.
    pub fn upstream_alternative(&self, flow: &FlowDef) -> Option<&FlowDef> {
        if !flow.starts_with_typed_identifier() {
            return None;
        }
        self.flows
            .iter()
            .find(|f| f.acr == flow.acr && f.starts_with_federation())
    }

    /// The flow through which a user proves they own a local account before
    /// an upstream identity is linked to it: the flow of `acr` that does not
    /// go through an upstream, else the first such flow.
    pub fn local_flow(&self, acr: &str) -> Option<&FlowDef> {
        let local = |f: &&FlowDef| f.starts_with_typed_identifier() && !f.federates();
        self.flows
            .iter()
            .filter(|f| f.acr == acr)
            .find(local)
            .or_else(|| self.flows.iter().find(local))
    }

    /// The flow for a request: the first requested `acr` a flow reaches, else the default.
    pub fn for_acr_values(&self, acr_values: &[String]) -> &FlowDef {
        acr_values
            .iter()
            .find_map(|a| self.flows.iter().find(|f| &f.acr == a))
            .unwrap_or_else(|| self.default_flow())
    }

    /// Every acr value the flows reach.
    pub fn acr_values(&self) -> impl Iterator<Item = &str> {
        self.flows.iter().map(|f| f.acr.as_str())
    }

    /// Every method any flow may use (with repeats).
    pub fn methods(&self) -> impl Iterator<Item = &MethodId> + '_ {
        self.flows
            .iter()
            .flat_map(|f| f.stages.iter().flat_map(|s| s.methods.iter()))
    }
}

/// A flow as written in config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowSpec {
    pub name: String,
    pub acr: String,
    pub steps: Vec<StageSpec>,
    #[serde(default)]
    pub webauthn_user_verification: Option<String>,
}

/// A stage as written: `"password"`, `"totp|webauthn"`, or a table.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StageSpec {
    Short(String),
    Table(StageTable),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageTable {
    /// One method, `a|b`, or a list.
    pub any: MethodList,
    #[serde(default = "always")]
    pub when: Condition,
}

fn always() -> Condition {
    Condition::Always
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum MethodList {
    One(String),
    Many(Vec<String>),
}

/// A definition error, naming where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionError {
    /// e.g. `flows[0].steps[2]`
    pub path: String,
    pub message: String,
}

impl fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for DefinitionError {}

fn err(path: String, message: impl Into<String>) -> DefinitionError {
    DefinitionError {
        path,
        message: message.into(),
    }
}

/// Parses and checks a client's flows: unknown steps, steps that can never be
/// reached, and flows that can never complete are refused.
pub fn parse_policy(
    specs: &[FlowSpec],
    catalog: &dyn MethodCatalog,
    levels: &Levels,
) -> Result<LoginPolicy, DefinitionError> {
    if specs.is_empty() {
        return LoginPolicy::password_only(catalog, levels);
    }
    let mut flows = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let at = format!("flows[{i}]");
        if spec.name.is_empty()
            || !spec
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        {
            return Err(err(
                format!("{at}.name"),
                "letters, digits, '-' and '_' only",
            ));
        }
        if flows.iter().any(|f: &FlowDef| f.name == spec.name) {
            return Err(err(
                format!("{at}.name"),
                format!("a flow named {:?} is already defined", spec.name),
            ));
        }
        let Some(level) = levels.get(&spec.acr) else {
            return Err(err(
                format!("{at}.acr"),
                format!(
                    "unknown level {:?}; declared levels: {} (idp.toml [[assurance_levels]])",
                    spec.acr,
                    levels.values().join(", ")
                ),
            ));
        };
        let mut stages = Vec::new();
        for (j, s) in spec.steps.iter().enumerate() {
            stages.push(parse_stage(s, catalog).map_err(|m| err(format!("{at}.steps[{j}]"), m))?);
        }
        // Flows of one level are alternatives only as a way in through an
        // upstream provider, offered on the identifier page of the first.
        if let Some(first) = flows.iter().find(|f: &&FlowDef| f.acr == spec.acr) {
            let upstream_first = stages.first().is_some_and(|s: &Stage| s.federates);
            if !upstream_first || !first.starts_with_typed_identifier() {
                return Err(err(
                    format!("{at}.acr"),
                    format!(
                        "two flows reach acr {:?}: requests could not choose (a second flow of a level must start with \"upstream\", and the first with \"identifier\", whose page offers it)",
                        spec.acr
                    ),
                ));
            }
            if flows
                .iter()
                .filter(|f| f.acr == spec.acr)
                .any(|f| f.starts_with_federation())
            {
                return Err(err(
                    format!("{at}.acr"),
                    format!(
                        "another flow already signs in through an upstream at acr {:?}",
                        spec.acr
                    ),
                ));
            }
        }
        check_flow(&stages).map_err(|(j, m)| match j {
            Some(j) => err(format!("{at}.steps[{j}]"), m),
            None => err(format!("{at}.steps"), m),
        })?;
        if let Some(uv) = &spec.webauthn_user_verification
            && !matches!(uv.as_str(), "required" | "preferred" | "discouraged")
        {
            return Err(err(
                format!("{at}.webauthn_user_verification"),
                "required, preferred or discouraged",
            ));
        }
        check_level(&stages, level, catalog).map_err(|m| err(format!("{at}.acr"), m))?;
        flows.push(FlowDef {
            name: spec.name.clone(),
            acr: spec.acr.clone(),
            stages,
            webauthn_user_verification: spec.webauthn_user_verification.clone(),
        });
    }
    Ok(LoginPolicy {
        flows,
        reuse_secs: None,
    })
}

/// What one way through a flow (one method per unconditional stage) is
/// worth.
#[derive(Debug, Clone)]
struct PathWorth<'a> {
    methods: Vec<&'a StepTraits>,
}

impl PathWorth<'_> {
    fn factors(&self, count_restricted: bool) -> BTreeSet<Factor> {
        self.methods
            .iter()
            .filter(|t| count_restricted || !t.assurance.restricted)
            .flat_map(|t| t.assurance.factors.iter().copied())
            .collect()
    }

    /// The AAL this path reaches (`None`: it proves nothing).
    fn aal(&self, count_restricted: bool) -> Option<Aal> {
        let kinds = self.factors(count_restricted).len();
        let proves = self.methods.iter().any(|t| t.assurance.proves);
        if kinds >= 2 {
            Some(if self.phishing_resistant() {
                Aal::Aal3
            } else {
                Aal::Aal2
            })
        } else if proves {
            Some(Aal::Aal1)
        } else {
            None
        }
    }

    fn phishing_resistant(&self) -> bool {
        self.methods.iter().any(|t| t.assurance.phishing_resistant)
    }

    fn describe(&self) -> String {
        self.methods
            .iter()
            .map(|t| t.id)
            .collect::<Vec<_>>()
            .join(" + ")
    }
}

/// Every way through the unconditional stages of a flow (conditional stages
/// may be skipped, so they guarantee nothing), at most `LIMIT` of them.
fn paths<'a>(
    stages: &[Stage],
    catalog: &'a dyn MethodCatalog,
) -> Result<Vec<PathWorth<'a>>, String> {
    const LIMIT: usize = 10_000;
    let mut paths = vec![PathWorth {
        methods: Vec::new(),
    }];
    for st in stages.iter().filter(|s| s.when == Condition::Always) {
        let options: Vec<&StepTraits> = st
            .methods
            .iter()
            .filter_map(|m| catalog.traits(m.as_str()))
            .collect();
        if paths.len().saturating_mul(options.len()) > LIMIT {
            return Err("too many alternatives to check the level it reaches".into());
        }
        paths = paths
            .iter()
            .flat_map(|p| {
                options.iter().map(move |t| {
                    let mut next = p.clone();
                    next.methods.push(t);
                    next
                })
            })
            .collect();
    }
    Ok(paths)
}

/// A flow must reach the level it claims on every way through it: the
/// level's AAL (an emailed code is never a factor, an SMS code counts only
/// where the level allows restricted authenticators), and a WebAuthn key or
/// passkey on every way when the level is phishing-resistant.
pub fn check_level(
    stages: &[Stage],
    level: &Level,
    catalog: &dyn MethodCatalog,
) -> Result<(), String> {
    for path in paths(stages, catalog)? {
        let reached = path.aal(level.restricted_authenticators);
        if reached.is_none_or(|a| a < level.aal) {
            let with_sms = path.aal(true);
            let hint = if !level.restricted_authenticators && with_sms >= Some(level.aal) {
                " (an SMS code is a restricted authenticator: it counts only on a level with restricted_authenticators = true)"
            } else if path
                .methods
                .iter()
                .any(|t| t.assurance == Assurance::NOT_AN_AUTHENTICATOR)
            {
                " (an emailed code or link is not an authenticator and never counts toward AAL2)"
            } else {
                ""
            };
            return Err(format!(
                "level {:?} needs {} but the flow can complete with {} ({}){hint}",
                level.value,
                level.aal,
                path.describe(),
                reached.map_or_else(|| "no proof".to_owned(), |a| a.to_string()),
            ));
        }
        if level.phishing_resistant && !path.phishing_resistant() {
            return Err(format!(
                "level {:?} is phishing-resistant, but the flow can complete with {} (no security key or passkey)",
                level.value,
                path.describe()
            ));
        }
    }
    Ok(())
}

fn parse_methods(text: &str, catalog: &dyn MethodCatalog) -> Result<Vec<MethodId>, String> {
    text.split('|')
        .map(|m| m.trim())
        .map(|m| parse_method(m, catalog))
        .collect()
}

fn parse_method(m: &str, catalog: &dyn MethodCatalog) -> Result<MethodId, String> {
    catalog.traits(m).map(StepTraits::method).ok_or_else(|| {
        format!(
            "unknown step {m:?}; known steps: {}",
            catalog
                .ids()
                .iter()
                .map(MethodId::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

fn parse_stage(s: &StageSpec, catalog: &dyn MethodCatalog) -> Result<Stage, String> {
    let (methods, when) = match s {
        StageSpec::Short(text) => (parse_methods(text, catalog)?, Condition::Always),
        StageSpec::Table(t) => {
            let methods = match &t.any {
                MethodList::One(text) => parse_methods(text, catalog)?,
                MethodList::Many(list) => {
                    let mut v = Vec::new();
                    for m in list {
                        v.extend(parse_methods(m, catalog)?);
                    }
                    v
                }
            };
            (methods, t.when)
        }
    };
    if methods.is_empty() {
        return Err("a step needs at least one method".into());
    }
    for (i, m) in methods.iter().enumerate() {
        if methods[..i].contains(m) {
            return Err(format!("{} is listed twice", m.as_str()));
        }
    }
    let traits = |m: &MethodId| catalog.traits(m.as_str());
    let identifying = methods
        .iter()
        .filter(|m| traits(m).is_some_and(|t| t.identifies))
        .count();
    if identifying > 0 && methods.len() > 1 {
        return Err(
            "identifier, passkey and upstream cannot be offered as alternatives to other methods"
                .into(),
        );
    }
    if identifying > 0 && when != Condition::Always {
        return Err("a step that identifies the user cannot be conditional".into());
    }
    let proves = methods
        .iter()
        .all(|m| traits(m).is_some_and(|t| t.assurance.proves));
    let federates = methods
        .iter()
        .any(|m| traits(m).is_some_and(|t| t.federates));
    Ok(Stage {
        methods,
        when,
        identifies: identifying > 0,
        proves,
        federates,
    })
}

/// Whole-flow checks: the user is identified (by identifier or passkey)
/// exactly once, before any step that needs to know who they are; every step
/// can be reached; at least one step authenticates unconditionally.
fn check_flow(stages: &[Stage]) -> Result<(), (Option<usize>, String)> {
    if stages.is_empty() {
        return Err((None, "a flow needs at least one step".into()));
    }
    let mut identified = false;
    let mut seen: Vec<&MethodId> = Vec::new();
    for (j, st) in stages.iter().enumerate() {
        if st.identifies {
            if identified {
                return Err((
                    Some(j),
                    "the user is already identified: this step can never be reached".into(),
                ));
            }
            identified = true;
        } else if !identified {
            return Err((
                Some(j),
                format!(
                    "{} needs to know the user: put \"identifier\" (or \"passkey\", \"upstream\") before it",
                    st.methods
                        .iter()
                        .map(|m| m.as_str())
                        .collect::<Vec<_>>()
                        .join("|")
                ),
            ));
        }
        if let Some(m) = st
            .methods
            .iter()
            .find(|m| seen.contains(m) && st.methods.len() == 1)
        {
            return Err((
                Some(j),
                format!(
                    "{} already ran in an earlier step: this step can never be reached",
                    m.as_str()
                ),
            ));
        }
        seen.extend(st.methods.iter());
    }
    let authenticates = stages
        .iter()
        .any(|s| s.when == Condition::Always && s.proves);
    if !authenticates {
        return Err((None, "no step authenticates the user on every login: the flow could complete without any proof".into()));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::method::{Assurance, Factor};

    /// The built-in methods as their traits describe them, for checks that
    /// need no step code.
    pub(crate) struct TestCatalog(Vec<StepTraits>);

    impl TestCatalog {
        pub(crate) fn new() -> Self {
            let t = |id: &'static str, a: Assurance| StepTraits::new(id, a, &[]);
            let identifying = |mut t: StepTraits| {
                t.identifies = true;
                t
            };
            let have = Assurance::single(&[Factor::Possession]);
            let key = Assurance {
                phishing_resistant: true,
                ..have
            };
            let mut upstream = identifying(t("upstream", Assurance::single(&[Factor::Knowledge])));
            upstream.federates = true;
            let sms = Assurance {
                restricted: true,
                ..have
            };
            Self(vec![
                identifying(t("identifier", Assurance::NONE)),
                t("password", Assurance::single(&[Factor::Knowledge])),
                t("email_code", Assurance::NOT_AN_AUTHENTICATOR),
                t("magic_link", Assurance::NOT_AN_AUTHENTICATOR),
                t("sms_code", sms),
                t("totp", have),
                t("webauthn", key),
                t("recovery_code", Assurance::single(&[Factor::Possession])),
                identifying(t(
                    "passkey",
                    Assurance {
                        factors: &[Factor::Possession, Factor::Verified],
                        ..key
                    },
                )),
                upstream,
            ])
        }
    }

    impl MethodCatalog for TestCatalog {
        fn traits(&self, id: &str) -> Option<&StepTraits> {
            self.0.iter().find(|t| t.id == id)
        }
        fn ids(&self) -> Vec<MethodId> {
            self.0.iter().map(StepTraits::method).collect()
        }
    }

    fn policy(toml_text: &str) -> Result<LoginPolicy, DefinitionError> {
        #[derive(Deserialize)]
        struct Doc {
            flows: Vec<FlowSpec>,
        }
        let doc: Doc = serde_json::from_value(toml_to_json(toml_text))
            .map_err(|e| err("parse".into(), e.to_string()))?;
        parse_policy(&doc.flows, &TestCatalog::new(), &Levels::builtin())
    }

    // A tiny TOML subset reader is not worth it: the tests use JSON directly.
    fn toml_to_json(s: &str) -> serde_json::Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn the_three_example_shapes_parse() {
        let p = policy(r#"{"flows": [
            {"name": "default", "acr": "1", "steps": ["identifier", "password", {"any": ["totp", "webauthn"], "when": "enrolled"}]},
            {"name": "strong", "acr": "2", "steps": ["identifier", "password", "totp|webauthn|recovery_code"]},
            {"name": "passwordless", "acr": "3", "steps": ["passkey"]}
        ]}"#).unwrap();
        assert_eq!(p.default_flow().name, "default");
        assert_eq!(p.default_flow().stages[2].when, Condition::Enrolled);
        assert_eq!(p.for_acr_values(&["9".into(), "2".into()]).name, "strong");
        assert_eq!(p.for_acr_values(&[]).name, "default");
        assert_eq!(p.by_name("strong").unwrap().stages[2].methods.len(), 3);
        let p = policy(r#"{"flows": [{"name": "d", "acr": "1", "steps": ["identifier", "password", {"any": "email_code", "when": "unknown_device"}]}]}"#).unwrap();
        assert_eq!(p.flows[0].stages[2].when, Condition::UnknownDevice);
    }

    #[test]
    fn bad_definitions_are_refused_with_their_place() {
        let cases = [
            (
                r#"[{"name": "d", "acr": "1", "steps": ["identifier", "pasword"]}]"#,
                "flows[0].steps[1]",
                "unknown step",
            ),
            (
                r#"[{"name": "d", "acr": "1", "steps": ["password"]}]"#,
                "flows[0].steps[0]",
                "needs to know the user",
            ),
            (
                r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password", "identifier"]}]"#,
                "flows[0].steps[2]",
                "never be reached",
            ),
            (
                r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password", "password"]}]"#,
                "flows[0].steps[2]",
                "never be reached",
            ),
            (
                r#"[{"name": "d", "acr": "1", "steps": ["identifier", {"any": ["totp"], "when": "enrolled"}]}]"#,
                "flows[0].steps",
                "without any proof",
            ),
            (
                r#"[{"name": "d", "acr": "1", "steps": ["identifier"]}]"#,
                "flows[0].steps",
                "without any proof",
            ),
            (
                r#"[{"name": "d", "acr": "1", "steps": []}]"#,
                "flows[0].steps",
                "at least one step",
            ),
            (
                r#"[{"name": "d", "acr": "1", "steps": ["identifier|password"]}]"#,
                "flows[0].steps[0]",
                "alternatives",
            ),
            (
                r#"[{"name": "d", "acr": "1", "steps": ["identifier", "totp|totp"]}]"#,
                "flows[0].steps[1]",
                "twice",
            ),
            (
                r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password"]}, {"name": "d", "acr": "2", "steps": ["passkey"]}]"#,
                "flows[1].name",
                "already defined",
            ),
            (
                r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password"]}, {"name": "e", "acr": "1", "steps": ["passkey"]}]"#,
                "flows[1].acr",
                "two flows",
            ),
            (
                r#"[{"name": "d", "acr": "1", "steps": ["passkey"]}, {"name": "e", "acr": "1", "steps": ["upstream"]}]"#,
                "flows[1].acr",
                "two flows",
            ),
            (
                r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password"]}, {"name": "e", "acr": "1", "steps": ["upstream"]}, {"name": "f", "acr": "1", "steps": ["upstream", "totp"]}]"#,
                "flows[2].acr",
                "already signs in through an upstream",
            ),
            (
                r#"[{"name": "d", "acr": "1", "steps": ["upstream", "upstream"]}]"#,
                "flows[0].steps[1]",
                "never be reached",
            ),
            (
                r#"[{"name": "d", "acr": "1", "steps": ["identifier", "upstream|password"]}]"#,
                "flows[0].steps[1]",
                "alternatives",
            ),
            (
                r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password"], "webauthn_user_verification": "always"}]"#,
                "flows[0].webauthn_user_verification",
                "required, preferred",
            ),
        ];
        for (flows, path, msg) in cases {
            let e = policy(&format!(r#"{{"flows": {flows}}}"#)).unwrap_err();
            assert_eq!(e.path, path, "{flows}: {e}");
            assert!(e.message.contains(msg), "{flows}: {e}");
        }
    }

    #[test]
    fn an_upstream_flow_is_the_alternative_of_its_level() {
        let p = policy(r#"{"flows": [
            {"name": "standard", "acr": "1", "steps": ["identifier", "password"]},
            {"name": "partner", "acr": "1", "steps": ["upstream", {"any": "totp", "when": "enrolled"}]},
            {"name": "strong", "acr": "2", "steps": ["identifier", "password", "totp"]},
            {"name": "passwordless", "acr": "3", "steps": ["passkey"]}
        ]}"#).unwrap();
        let standard = p.by_name("standard").unwrap();
        assert_eq!(p.upstream_alternative(standard).unwrap().name, "partner");
        assert_eq!(p.upstream_alternative(p.by_name("strong").unwrap()), None);
        assert_eq!(p.upstream_alternative(p.by_name("partner").unwrap()), None);
        // Requests of a level run its first flow.
        assert_eq!(p.for_acr_values(&["1".into()]).name, "standard");
        assert_eq!(p.for_acr_values(&["3".into()]).name, "passwordless");
        assert_eq!(p.local_flow("1").unwrap().name, "standard");
        assert_eq!(p.local_flow("2").unwrap().name, "strong");
        assert_eq!(p.local_flow("3").unwrap().name, "standard");
    }

    #[test]
    fn a_flow_must_reach_the_level_it_claims() {
        let refused = |steps: &str, acr: &str| {
            let e = policy(&format!(
                r#"{{"flows": [{{"name": "d", "acr": "{acr}", "steps": {steps}}}]}}"#
            ))
            .unwrap_err();
            assert_eq!(e.path, "flows[0].acr", "{steps}: {e}");
            e.message
        };
        let ok = |steps: &str, acr: &str| {
            policy(&format!(
                r#"{{"flows": [{{"name": "d", "acr": "{acr}", "steps": {steps}}}]}}"#
            ))
            .unwrap_or_else(|e| panic!("{steps} at {acr}: {e}"));
        };
        // An emailed code never counts toward AAL2.
        let m = refused(r#"["identifier", "password", "email_code"]"#, "2");
        assert!(m.contains("password + email_code"), "{m}");
        assert!(m.contains("not an authenticator"), "{m}");
        refused(r#"["identifier", "password", "totp|email_code"]"#, "2");
        refused(r#"["identifier", "password", "magic_link"]"#, "2");
        // SMS only where the level allows restricted authenticators.
        let m = refused(r#"["identifier", "password", "sms_code"]"#, "2");
        assert!(m.contains("restricted"), "{m}");
        // Conditional stages guarantee nothing.
        refused(
            r#"["identifier", "password", {"any": "totp", "when": "enrolled"}]"#,
            "2",
        );
        // Phishing-resistant: a key or passkey on every way through.
        let m = refused(r#"["identifier", "password", "totp|webauthn"]"#, "3");
        assert!(m.contains("phishing-resistant"), "{m}");
        ok(r#"["identifier", "password", "webauthn"]"#, "3");
        ok(r#"["passkey"]"#, "3");
        ok(
            r#"["identifier", "password", "totp|webauthn|recovery_code"]"#,
            "2",
        );
        ok(r#"["identifier", "password", "email_code|sms_code"]"#, "1");
        ok(r#"["identifier", "email_code"]"#, "1");
        // An unknown level is refused with the declared ones.
        let m = refused(r#"["identifier", "password"]"#, "gold");
        assert!(m.contains("unknown level") && m.contains("1, 2, 3"), "{m}");
        // A level allowing restricted authenticators takes SMS.
        let mut specs = Levels::builtin_specs();
        specs[1].restricted_authenticators = true;
        let levels = Levels::from_specs(&specs).unwrap();
        let spec: Vec<FlowSpec> = serde_json::from_str(
            r#"[{"name": "d", "acr": "2", "steps": ["identifier", "password", "sms_code"]}]"#,
        )
        .unwrap();
        parse_policy(&spec, &TestCatalog::new(), &levels).unwrap();
    }

    #[test]
    fn no_flows_means_identifier_then_password() {
        let c = TestCatalog::new();
        let p = parse_policy(&[], &c, &Levels::builtin()).unwrap();
        assert_eq!(
            p,
            LoginPolicy::password_only(&c, &Levels::builtin()).unwrap()
        );
        assert_eq!(p.flows[0].stages[0].methods, [MethodId::new("identifier")]);
        assert_eq!(p.flows[0].stages[1].methods, [MethodId::new("password")]);
    }
}
