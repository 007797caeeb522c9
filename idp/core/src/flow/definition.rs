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

use super::StepKind;
use serde::Deserialize;
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
    pub methods: Vec<StepKind>,
    pub when: Condition,
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
    /// Whether the first step is `kind` alone.
    pub fn starts_with(&self, kind: StepKind) -> bool {
        self.stages.first().is_some_and(|s| s.methods == [kind])
    }
}

/// A client's login policy: its flows (the first is the default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginPolicy {
    pub flows: Vec<FlowDef>,
}

impl LoginPolicy {
    /// The identifier-then-password flow of a client that declares none.
    pub fn password_only() -> Self {
        Self {
            flows: vec![FlowDef {
                name: "default".into(),
                acr: "1".into(),
                stages: vec![
                    Stage {
                        methods: vec![StepKind::Identifier],
                        when: Condition::Always,
                    },
                    Stage {
                        methods: vec![StepKind::Password],
                        when: Condition::Always,
                    },
                ],
                webauthn_user_verification: None,
            }],
        }
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
        if !flow.starts_with(StepKind::Identifier) {
            return None;
        }
        self.flows
            .iter()
            .find(|f| f.acr == flow.acr && f.starts_with(StepKind::Upstream))
    }

    /// The flow through which a user proves they own a local account before
    /// an upstream identity is linked to it: the flow of `acr` that does not
    /// go through an upstream, else the first such flow.
    pub fn local_flow(&self, acr: &str) -> Option<&FlowDef> {
        let local = |f: &&FlowDef| {
            f.starts_with(StepKind::Identifier)
                && !f
                    .stages
                    .iter()
                    .any(|s| s.methods.contains(&StepKind::Upstream))
        };
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

    /// Every method any flow may use.
    pub fn methods(&self) -> impl Iterator<Item = StepKind> + '_ {
        self.flows
            .iter()
            .flat_map(|f| f.stages.iter().flat_map(|s| s.methods.iter().copied()))
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
pub fn parse_policy(specs: &[FlowSpec]) -> Result<LoginPolicy, DefinitionError> {
    if specs.is_empty() {
        return Ok(LoginPolicy::password_only());
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
        if spec.acr.is_empty() || spec.acr.contains(' ') {
            return Err(err(format!("{at}.acr"), "a non-empty value without spaces"));
        }
        let mut stages = Vec::new();
        for (j, s) in spec.steps.iter().enumerate() {
            stages.push(parse_stage(s).map_err(|m| err(format!("{at}.steps[{j}]"), m))?);
        }
        // Flows of one level are alternatives only as a way in through an
        // upstream provider, offered on the identifier page of the first.
        if let Some(first) = flows.iter().find(|f: &&FlowDef| f.acr == spec.acr) {
            let upstream_first = stages
                .first()
                .is_some_and(|s| s.methods == [StepKind::Upstream]);
            if !upstream_first || !first.starts_with(StepKind::Identifier) {
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
                .any(|f| f.starts_with(StepKind::Upstream))
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
        flows.push(FlowDef {
            name: spec.name.clone(),
            acr: spec.acr.clone(),
            stages,
            webauthn_user_verification: spec.webauthn_user_verification.clone(),
        });
    }
    Ok(LoginPolicy { flows })
}

fn parse_methods(text: &str) -> Result<Vec<StepKind>, String> {
    text.split('|')
        .map(|m| m.trim())
        .map(parse_method)
        .collect()
}

fn parse_method(m: &str) -> Result<StepKind, String> {
    StepKind::parse(m).ok_or_else(|| {
        format!(
            "unknown step {m:?}; known steps: {}",
            StepKind::ALL
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

fn parse_stage(s: &StageSpec) -> Result<Stage, String> {
    let (methods, when) = match s {
        StageSpec::Short(text) => (parse_methods(text)?, Condition::Always),
        StageSpec::Table(t) => {
            let methods = match &t.any {
                MethodList::One(text) => parse_methods(text)?,
                MethodList::Many(list) => {
                    let mut v = Vec::new();
                    for m in list {
                        v.extend(parse_methods(m)?);
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
    let identifying = methods.iter().filter(|m| m.identifies()).count();
    if identifying > 0 && methods.len() > 1 {
        return Err(
            "identifier, passkey and upstream cannot be offered as alternatives to other methods"
                .into(),
        );
    }
    if identifying > 0 && when != Condition::Always {
        return Err("a step that identifies the user cannot be conditional".into());
    }
    Ok(Stage { methods, when })
}

/// Whole-flow checks: the user is identified (by identifier or passkey)
/// exactly once, before any step that needs to know who they are; every step
/// can be reached; at least one step authenticates unconditionally.
fn check_flow(stages: &[Stage]) -> Result<(), (Option<usize>, String)> {
    if stages.is_empty() {
        return Err((None, "a flow needs at least one step".into()));
    }
    let mut identified = false;
    let mut seen: Vec<StepKind> = Vec::new();
    for (j, st) in stages.iter().enumerate() {
        if st.methods[0].identifies() {
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
        seen.extend(st.methods.iter().copied());
    }
    let authenticates = stages.iter().any(|s| {
        s.when == Condition::Always
            && (s.methods[0] == StepKind::Passkey || s.methods.iter().all(|m| m.authenticates()))
    });
    if !authenticates {
        return Err((None, "no step authenticates the user on every login: the flow could complete without any proof".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(toml_text: &str) -> Result<LoginPolicy, DefinitionError> {
        #[derive(Deserialize)]
        struct Doc {
            flows: Vec<FlowSpec>,
        }
        let doc: Doc = serde_json::from_value(toml_to_json(toml_text))
            .map_err(|e| err("parse".into(), e.to_string()))?;
        parse_policy(&doc.flows)
    }

    // A tiny TOML subset reader is not worth it: the tests use JSON directly.
    fn toml_to_json(s: &str) -> serde_json::Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn the_three_example_shapes_parse() {
        let p = policy(r#"{"flows": [
            {"name": "default", "acr": "1", "steps": ["identifier", "password", {"any": ["totp", "webauthn"], "when": "enrolled"}]},
            {"name": "strong", "acr": "2", "steps": ["identifier", "password", "totp|webauthn|email_code|sms_code|recovery_code"]},
            {"name": "passwordless", "acr": "3", "steps": ["passkey"]}
        ]}"#).unwrap();
        assert_eq!(p.default_flow().name, "default");
        assert_eq!(p.default_flow().stages[2].when, Condition::Enrolled);
        assert_eq!(p.for_acr_values(&["9".into(), "2".into()]).name, "strong");
        assert_eq!(p.for_acr_values(&[]).name, "default");
        assert_eq!(p.by_name("strong").unwrap().stages[2].methods.len(), 5);
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
            {"name": "sso-only", "acr": "3", "steps": ["upstream"]}
        ]}"#).unwrap();
        let standard = p.by_name("standard").unwrap();
        assert_eq!(p.upstream_alternative(standard).unwrap().name, "partner");
        assert_eq!(p.upstream_alternative(p.by_name("strong").unwrap()), None);
        assert_eq!(p.upstream_alternative(p.by_name("partner").unwrap()), None);
        // Requests of a level run its first flow.
        assert_eq!(p.for_acr_values(&["1".into()]).name, "standard");
        assert_eq!(p.for_acr_values(&["3".into()]).name, "sso-only");
        assert_eq!(p.local_flow("1").unwrap().name, "standard");
        assert_eq!(p.local_flow("2").unwrap().name, "strong");
        assert_eq!(p.local_flow("3").unwrap().name, "standard");
    }

    #[test]
    fn no_flows_means_identifier_then_password() {
        assert_eq!(parse_policy(&[]).unwrap(), LoginPolicy::password_only());
    }
}
