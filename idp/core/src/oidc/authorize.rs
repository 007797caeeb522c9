//! The authorization request (RFC 6749 §4.1.1, OIDC Core §3.1.2.1): parsed
//! from the raw parameters and checked by a visible pipeline of `check_*`
//! functions, in order. Until the client and redirect URI are known good,
//! errors are shown on a page and never redirected (RFC 6749 §4.1.2.1).

use super::error::{ErrorCode, OAuthError};
use super::resources::ResourceServers;
use crate::client::{Client, ClientRegistry};
use crate::domain::RequestedClaims;
pub use crate::request::{AuthorizeRequest, Prompt, ResponseMode};
use std::collections::HashMap;
use std::sync::Arc;

/// Where an authorization error goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeError {
    /// Shown on an error page: the client or redirect URI cannot be trusted.
    Page(OAuthError),
    /// Sent back to the (validated) redirect URI.
    Redirect {
        redirect_uri: String,
        state: Option<String>,
        /// The request's response mode when it was valid, else `query`.
        mode: ResponseMode,
        error: OAuthError,
    },
}

/// The raw parameters, with duplicates detected (RFC 6749 §3.1: parameters
/// MUST NOT be included more than once).
pub struct RawParams {
    map: HashMap<String, String>,
    duplicated: Option<String>,
    /// Every `resource` value, in order: the one parameter that may be sent
    /// several times (RFC 8707 §2).
    resources: Vec<String>,
}

/// The parameter RFC 8707 §2 lets a request repeat.
pub const RESOURCE: &str = "resource";

impl RawParams {
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut map = HashMap::new();
        let mut duplicated = None;
        let mut resources = Vec::new();
        for (k, v) in pairs {
            if k == RESOURCE {
                resources.push(v);
                continue;
            }
            match map.entry(k) {
                std::collections::hash_map::Entry::Occupied(e) => {
                    duplicated.get_or_insert_with(|| e.key().clone());
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(v);
                }
            }
        }
        Self {
            map,
            duplicated,
            resources,
        }
    }

    /// The parameters (one of each name but `resource`), in no particular
    /// order.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.map
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .chain(self.resources.iter().map(|r| (RESOURCE.into(), r.clone())))
            .collect()
    }

    /// A parameter; an empty value counts as absent (RFC 6749 §3.1).
    pub fn get(&self, k: &str) -> Option<&str> {
        self.map
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The `resource` values (RFC 8707 §2), as sent (empty ones included, for
    /// the checks to refuse).
    pub fn resources(&self) -> &[String] {
        &self.resources
    }
}

/// Where an authorization request's parameters came from (see
/// [`super::pushed`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RequestSource {
    /// The `/authorize` request itself (or a request object it carried).
    #[default]
    Query,
    /// A pushed authorization request (RFC 9126).
    Pushed,
}

/// Runs the pipeline. Order matters: client and redirect URI first (page
/// errors), then everything else (redirected errors).
pub fn check_authorize_request(
    params: &RawParams,
    clients: &ClientRegistry,
    resources: &ResourceServers,
    source: RequestSource,
) -> Result<(Arc<Client>, AuthorizeRequest), AuthorizeError> {
    let client = check_client_id(params, clients).map_err(AuthorizeError::Page)?;
    let redirect_uri = check_redirect_uri(params, &client).map_err(AuthorizeError::Page)?;
    let state = params.get("state").map(str::to_owned);
    let response_mode =
        check_response_mode(params, &client).map_err(|error| AuthorizeError::Redirect {
            redirect_uri: redirect_uri.clone(),
            state: state.clone(),
            mode: ResponseMode::Query,
            error,
        })?;
    let redirect = |error: OAuthError| AuthorizeError::Redirect {
        redirect_uri: redirect_uri.clone(),
        state: state.clone(),
        mode: response_mode,
        error,
    };
    check_no_duplicates(params).map_err(redirect)?;
    check_request_objects(params).map_err(redirect)?;
    check_pushed(params, source, &client).map_err(redirect)?;
    check_response_type(params, &client).map_err(redirect)?;
    let scope = check_scope(params, &client).map_err(redirect)?;
    let code_challenge = check_pkce(params, &client).map_err(redirect)?;
    let prompt = check_prompt(params).map_err(redirect)?;
    let max_age = check_max_age(params).map_err(redirect)?;
    let (claims, acr_values) =
        check_claims(params, &client, acr_values(params)).map_err(redirect)?;
    let resources = resources
        .check_requested(&client, params.resources())
        .map_err(redirect)?;
    let dpop_jkt = check_dpop_jkt(params, &client).map_err(redirect)?;
    Ok((
        client.clone(),
        AuthorizeRequest {
            client_id: client.id.0.clone(),
            redirect_uri: redirect_uri.clone(),
            scope,
            state: state.clone(),
            nonce: params.get("nonce").map(str::to_owned),
            code_challenge,
            prompt,
            max_age,
            login_hint: params.get("login_hint").map(str::to_owned),
            ui_locales: params.get("ui_locales").map(str::to_owned),
            id_token_hint: params.get("id_token_hint").map(str::to_owned),
            acr_values,
            response_mode,
            claims,
            resources,
            dpop_jkt,
            device: None,
        },
    ))
}

/// The `acr_values` parameter, in order (OpenID Connect Core §3.1.2.1).
pub(crate) fn acr_values(params: &RawParams) -> Vec<String> {
    params
        .get("acr_values")
        .map(|v| {
            v.split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The user claims the `claims` parameter may name (returned when the
/// account has them); other names are ignored.
pub const REQUESTABLE_CLAIMS: [&str; 7] = [
    "email",
    "email_verified",
    "name",
    "preferred_username",
    "customer_id",
    "locale",
    "updated_at",
];

/// OpenID Connect Core §5.5: the `claims` parameter, a JSON object whose
/// `id_token` and `userinfo` members name claims, each `null` or
/// `{"essential", "value", "values"}`. Returns the claims to add and the
/// `acr` values the authorization must reach:
/// - `acr` in `id_token` with `value`/`values` and `essential: true`
///   (§5.5.1.1): the flow is the first of the client's that claims one of
///   them, and `unmet_authentication_requirements` when none does, before
///   the user is asked anything;
/// - the same without `essential`: a preference, used when `acr_values` is
///   absent (as `acr_values` is, §3.1.2.1).
///
/// Unknown members and claim names are ignored (§5.5); anything that is not
/// that shape is `invalid_request`.
pub fn check_claims(
    params: &RawParams,
    client: &Client,
    acr_values: Vec<String>,
) -> Result<(RequestedClaims, Vec<String>), OAuthError> {
    /// Bounds on hostile input: more names than this is not a real request.
    const MAX_NAMES: usize = 64;
    let Some(raw) = params.get("claims") else {
        return Ok((RequestedClaims::default(), acr_values));
    };
    let malformed = |why: &'static str| OAuthError::invalid_request(why);
    let doc: serde_json::Value =
        serde_json::from_str(raw).map_err(|_| malformed("claims is not valid JSON"))?;
    let doc = doc
        .as_object()
        .ok_or_else(|| malformed("claims is not a JSON object"))?;
    let mut out = RequestedClaims::default();
    let mut acr_values = acr_values;
    for (member, target) in [
        ("id_token", &mut out.id_token),
        ("userinfo", &mut out.userinfo),
    ] {
        let Some(m) = doc.get(member) else { continue };
        let m = m
            .as_object()
            .ok_or_else(|| malformed("a member of claims is not a JSON object"))?;
        if m.len() > MAX_NAMES {
            return Err(malformed("claims names too many claims"));
        }
        for (name, spec) in m {
            if !(spec.is_null() || spec.is_object()) {
                return Err(malformed("a requested claim is neither null nor an object"));
            }
            if REQUESTABLE_CLAIMS.contains(&name.as_str()) {
                target.push(name.clone());
            }
            if member == "id_token" && name == "acr" {
                let wanted = requested_values(spec)
                    .ok_or_else(|| malformed("the acr claim's value or values is not a string"))?;
                let essential = spec.get("essential").and_then(|e| e.as_bool()) == Some(true);
                if wanted.is_empty() {
                    continue;
                }
                if essential {
                    let reachable: Vec<String> = wanted
                        .into_iter()
                        .filter(|w| client.login.acr_values().any(|a| a == w))
                        .collect();
                    if reachable.is_empty() {
                        return Err(OAuthError::new(
                            ErrorCode::UnmetAuthenticationRequirements,
                            "no login of this client reaches the essential acr requested",
                        ));
                    }
                    acr_values = reachable;
                } else if acr_values.is_empty() {
                    acr_values = wanted;
                }
            }
        }
    }
    Ok((out, acr_values))
}

/// The strings of a requested claim's `value` and `values` (§5.5.1); `None`
/// when one is not a string.
fn requested_values(spec: &serde_json::Value) -> Option<Vec<String>> {
    let mut out = Vec::new();
    if let Some(v) = spec.get("value") {
        out.push(v.as_str()?.to_owned());
    }
    if let Some(vs) = spec.get("values") {
        for v in vs.as_array()? {
            out.push(v.as_str()?.to_owned());
        }
    }
    Some(out)
}

/// RFC 6749 §4.1.2.1: an unknown or missing client_id is shown, never redirected.
pub fn check_client_id(
    params: &RawParams,
    clients: &ClientRegistry,
) -> Result<Arc<Client>, OAuthError> {
    let id = params
        .get("client_id")
        .ok_or_else(|| OAuthError::invalid_request("client_id is missing"))?;
    let client = clients.get(id).ok_or_else(|| {
        OAuthError::new(ErrorCode::InvalidRequest, "unknown client")
            .with_detail(format!("client_id={id}"))
    })?;
    if !client.allow_authorization_code {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "this client may not use the authorization code flow",
        ));
    }
    Ok(client)
}

/// RFC 9700 §2.1 / OIDC Core §3.1.2.1: redirect_uri is required and must equal
/// a registered value exactly (no normalization, no prefix, no added query).
pub fn check_redirect_uri(params: &RawParams, client: &Client) -> Result<String, OAuthError> {
    let uri = params
        .get("redirect_uri")
        .ok_or_else(|| OAuthError::invalid_request("redirect_uri is missing"))?;
    if client.redirect_uris.iter().any(|r| r == uri) {
        Ok(uri.to_owned())
    } else {
        Err(
            OAuthError::invalid_request("redirect_uri is not registered for this client")
                .with_detail(format!("redirect_uri={uri}")),
        )
    }
}

/// RFC 6749 §3.1: no parameter may appear twice.
pub fn check_no_duplicates(params: &RawParams) -> Result<(), OAuthError> {
    match &params.duplicated {
        Some(k) => Err(
            OAuthError::invalid_request("a parameter was sent more than once")
                .with_detail(format!("duplicate parameter {k}")),
        ),
        None => Ok(()),
    }
}

/// OIDC Core §6: request objects are not supported.
pub fn check_request_objects(params: &RawParams) -> Result<(), OAuthError> {
    // `super::pushed` resolves what is supported before the checks: a
    // pushed request's `request_uri`, and request objects of clients with
    // registered keys. What is left is not supported.
    if params.get("request").is_some() {
        return Err(OAuthError::new(
            ErrorCode::RequestNotSupported,
            "request objects are accepted only from clients with registered keys",
        ));
    }
    if params.get("request_uri").is_some() {
        return Err(OAuthError::new(
            ErrorCode::RequestUriNotSupported,
            "only request_uri values of the pushed authorization request endpoint are accepted",
        ));
    }
    Ok(())
}

/// RFC 9126 §5: a client required to push its requests (its file's
/// `require_pushed_authorization_requests`, or the server's) may not send
/// them to `/authorize` directly. FAPI 2.0 Security Profile §5.3.2.2 item
/// 11: a FAPI client's pushed request names its `redirect_uri`.
pub fn check_pushed(
    params: &RawParams,
    source: RequestSource,
    client: &Client,
) -> Result<(), OAuthError> {
    if client.protocol.require_par && source != RequestSource::Pushed {
        return Err(OAuthError::invalid_request(
            "this client must use pushed authorization requests",
        ));
    }
    if client.protocol.fapi2 && params.get("redirect_uri").is_none() {
        return Err(OAuthError::invalid_request(
            "redirect_uri is required (FAPI 2.0 Security Profile)",
        ));
    }
    Ok(())
}

/// RFC 9449 §10: `dpop_jkt`, the thumbprint of the DPoP key the code is to
/// be bound to: the base64url (no padding) of a SHA-256 hash, 43 characters.
/// Ignored (an unknown parameter, RFC 6749 §3.1) from a client without
/// DPoP.
pub fn check_dpop_jkt(params: &RawParams, client: &Client) -> Result<Option<String>, OAuthError> {
    let Some(jkt) = params
        .get("dpop_jkt")
        .filter(|_| client.protocol.dpop_bound)
    else {
        return Ok(None);
    };
    let well_formed = jkt.len() == 43
        && jkt
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !well_formed {
        return Err(OAuthError::invalid_request(
            "dpop_jkt is not a JWK SHA-256 thumbprint (RFC 9449 §10)",
        ));
    }
    Ok(Some(jkt.to_owned()))
}

/// RFC 6749 §4.1.1 and RFC 9700 §2.1.2: only `code`.
pub fn check_response_type(params: &RawParams, _client: &Client) -> Result<(), OAuthError> {
    match params.get("response_type") {
        None => Err(OAuthError::invalid_request("response_type is missing")),
        Some("code") => Ok(()),
        Some(_) => Err(OAuthError::new(
            ErrorCode::UnsupportedResponseType,
            "only response_type=code is supported",
        )),
    }
}

/// OAuth 2.0 Multiple Response Types §2.1, Form Post Response Mode, JARM
/// §2.3: `query` (the default of `code`), or a mode the client's file
/// enables. `fragment` is refused: it would put the code in the URL's
/// fragment, for no benefit over the query with `code` (RFC 9700 §2.1.2).
pub fn check_response_mode(
    params: &RawParams,
    client: &Client,
) -> Result<ResponseMode, OAuthError> {
    let Some(raw) = params.get("response_mode") else {
        return Ok(ResponseMode::Query);
    };
    let mode = ResponseMode::parse(raw).ok_or_else(|| {
        OAuthError::invalid_request("unsupported response_mode")
            .with_detail(format!("response_mode={raw}"))
    })?;
    if client.protocol.allows_response_mode(mode) {
        Ok(mode)
    } else {
        Err(
            OAuthError::invalid_request("this response_mode is not enabled for this client")
                .with_detail(format!("response_mode={raw}")),
        )
    }
}

/// The scope asking for refresh tokens (OpenID Connect Core §11).
pub const OFFLINE_ACCESS: &str = "offline_access";

/// RFC 6749 §3.3: every requested scope must be allowed for the client.
/// `offline_access` is the exception (see [`OFFLINE_ACCESS`]).
pub fn check_scope(params: &RawParams, client: &Client) -> Result<Vec<String>, OAuthError> {
    let raw = params
        .get("scope")
        .ok_or_else(|| OAuthError::new(ErrorCode::InvalidScope, "scope is missing"))?;
    let mut scope: Vec<String> = Vec::new();
    for s in raw.split(' ').filter(|s| !s.is_empty()) {
        if s == OFFLINE_ACCESS {
            // OpenID Connect Core §11: granted to a client allowed refresh
            // tokens, ignored for any other; never an error.
            if client.allow_refresh_token && !scope.iter().any(|x| x == s) {
                scope.push(s.to_owned());
            }
            continue;
        }
        if !client.scopes.contains(s) {
            return Err(OAuthError::new(
                ErrorCode::InvalidScope,
                "a requested scope is not allowed for this client",
            )
            .with_detail(format!("scope {s}")));
        }
        if !scope.iter().any(|x| x == s) {
            scope.push(s.to_owned());
        }
    }
    if scope.is_empty() {
        return Err(OAuthError::new(ErrorCode::InvalidScope, "scope is empty"));
    }
    Ok(scope)
}

/// RFC 7636 §4.3 and RFC 9700 §2.1.1: S256 only; required for public clients
/// (and confidential ones configured so); a challenge has 43–128 characters of
/// the unreserved set.
pub fn check_pkce(params: &RawParams, client: &Client) -> Result<Option<String>, OAuthError> {
    let challenge = params.get("code_challenge");
    let method = params.get("code_challenge_method");
    match (challenge, method) {
        (None, None) if client.pkce_required() => Err(OAuthError::invalid_request(
            "code_challenge is required (PKCE with S256)",
        )),
        (None, None) => Ok(None),
        (None, Some(_)) => Err(OAuthError::invalid_request("code_challenge is missing")),
        (Some(_), None | Some("plain")) => Err(OAuthError::invalid_request(
            "code_challenge_method must be S256",
        )),
        (Some(_), Some(m)) if m != "S256" => Err(OAuthError::invalid_request(
            "code_challenge_method must be S256",
        )),
        (Some(c), Some(_)) => {
            let ok = (43..=128).contains(&c.len())
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
            if ok {
                Ok(Some(c.to_owned()))
            } else {
                Err(OAuthError::invalid_request("code_challenge is malformed"))
            }
        }
    }
}

/// OIDC Core §3.1.2.1: `none` must stand alone; unknown values are refused.
pub fn check_prompt(params: &RawParams) -> Result<Prompt, OAuthError> {
    let mut p = Prompt::default();
    let Some(raw) = params.get("prompt") else {
        return Ok(p);
    };
    let mut count = 0;
    for v in raw.split(' ').filter(|s| !s.is_empty()) {
        count += 1;
        match v {
            "none" => p.none = true,
            "login" => p.login = true,
            // First-party portals: consent is implicit, one account per session.
            "consent" | "select_account" => {}
            _ => return Err(OAuthError::invalid_request("unsupported prompt value")),
        }
    }
    if p.none && count > 1 {
        return Err(OAuthError::invalid_request(
            "prompt=none cannot be combined with other values",
        ));
    }
    Ok(p)
}

/// OIDC Core §3.1.2.1: max_age is a non-negative number of seconds.
pub fn check_max_age(params: &RawParams) -> Result<Option<u64>, OAuthError> {
    params
        .get("max_age")
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| OAuthError::invalid_request("max_age must be a non-negative integer"))
        })
        .transpose()
}

/// The redirect URI with `params` appended to its query (keeping any query it had).
pub fn redirect_with(redirect_uri: &str, params: &[(&str, &str)]) -> String {
    match url::Url::parse(redirect_uri) {
        Ok(mut url) => {
            {
                let mut q = url.query_pairs_mut();
                for (k, v) in params {
                    q.append_pair(k, v);
                }
            }
            url.into()
        }
        // Registered URIs are validated as absolute at start-up.
        Err(_) => redirect_uri.to_owned(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::client::{AccessTokenFormat, Lifetimes, TokenEndpointAuthMethod};
    use crate::domain::ClientId;
    use crate::keys::SigningAlg;

    /// The pipeline without resource servers.
    fn check_authorize_request(
        params: &RawParams,
        clients: &ClientRegistry,
        source: RequestSource,
    ) -> Result<(Arc<Client>, AuthorizeRequest), AuthorizeError> {
        super::check_authorize_request(params, clients, &ResourceServers::default(), source)
    }

    pub(crate) fn client(public: bool) -> Client {
        Client {
            id: ClientId("portal".into()),
            name: "Portal".into(),
            auth_method: if public {
                TokenEndpointAuthMethod::None
            } else {
                TokenEndpointAuthMethod::ClientSecretBasic
            },
            secret_hash: None,
            redirect_uris: vec![
                "https://rp.example/cb".into(),
                "https://rp.example/cb?x=1".into(),
            ],
            post_logout_redirect_uris: vec![],
            allow_authorization_code: true,
            allow_refresh_token: true,
            allow_client_credentials: false,
            scopes: ["openid", "email", "profile"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            theme: "default".into(),
            access_token_format: AccessTokenFormat::Jwt,
            id_token_alg: SigningAlg::ES256,
            access_token_alg: SigningAlg::ES256,
            require_pkce: false,
            lifetimes: Lifetimes::default(),
            login: crate::policy::LoginPolicy::password_only(
                &crate::policy::tests::TestCatalog::new(),
                &crate::assurance::Levels::builtin(),
            )
            .unwrap(),
            account: Default::default(),
            protocol: Default::default(),
        }
    }

    const CH: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn params(extra: &[(&str, &str)]) -> RawParams {
        let mut v: Vec<(String, String)> = [
            ("client_id", "portal"),
            ("redirect_uri", "https://rp.example/cb"),
            ("response_type", "code"),
            ("scope", "openid email"),
            ("state", "st"),
            ("code_challenge", CH),
            ("code_challenge_method", "S256"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, val) in extra {
            v.retain(|(kk, _)| kk != k);
            if !val.is_empty() {
                v.push((k.to_string(), val.to_string()));
            }
        }
        RawParams::new(v)
    }

    fn reg(public: bool) -> ClientRegistry {
        ClientRegistry::new([client(public)])
    }

    fn code_of(r: Result<(Arc<Client>, AuthorizeRequest), AuthorizeError>) -> (bool, ErrorCode) {
        match r {
            Err(AuthorizeError::Page(e)) => (false, e.code),
            Err(AuthorizeError::Redirect { error, .. }) => (true, error.code),
            Ok(_) => panic!("expected an error"),
        }
    }

    #[test]
    fn happy_request_parses() {
        let (_, req) = check_authorize_request(
            &params(&[("extra", "foobar"), ("display", "page")]),
            &reg(true),
            RequestSource::Query,
        )
        .unwrap();
        assert_eq!(req.scope, vec!["openid", "email"]);
        assert_eq!(req.code_challenge.as_deref(), Some(CH));
        assert_eq!(req.state.as_deref(), Some("st"));
    }

    #[test]
    fn untrusted_client_or_redirect_uri_is_never_redirected() {
        for extra in [
            [("client_id", "nope")],
            [("client_id", "")],
            [("redirect_uri", "https://evil.example/cb")],
            [("redirect_uri", "https://rp.example/cb/")],
            [("redirect_uri", "https://RP.example/cb")],
            [("redirect_uri", "https://rp.example/cb?x=2")],
            [("redirect_uri", "https://rp.example/cb?x=1&y=2")],
            [("redirect_uri", "")],
        ] {
            assert_eq!(
                code_of(check_authorize_request(
                    &params(&extra),
                    &reg(true),
                    RequestSource::Query,
                )),
                (false, ErrorCode::InvalidRequest),
                "{extra:?}"
            );
        }
        // A registered URI with a query is fine.
        assert!(
            check_authorize_request(
                &params(&[("redirect_uri", "https://rp.example/cb?x=1")]),
                &reg(true),
                RequestSource::Query,
            )
            .is_ok()
        );
    }

    #[test]
    fn other_errors_are_redirected_with_their_codes() {
        let cases: &[(&[(&str, &str)], ErrorCode)] = &[
            (&[("response_type", "")], ErrorCode::InvalidRequest),
            (
                &[("response_type", "token")],
                ErrorCode::UnsupportedResponseType,
            ),
            (
                &[("response_type", "code id_token")],
                ErrorCode::UnsupportedResponseType,
            ),
            (&[("scope", "openid admin")], ErrorCode::InvalidScope),
            (&[("code_challenge", "")], ErrorCode::InvalidRequest),
            (
                &[("code_challenge_method", "plain")],
                ErrorCode::InvalidRequest,
            ),
            (&[("code_challenge_method", "")], ErrorCode::InvalidRequest),
            (&[("code_challenge", "short")], ErrorCode::InvalidRequest),
            (&[("prompt", "none login")], ErrorCode::InvalidRequest),
            (&[("prompt", "bogus")], ErrorCode::InvalidRequest),
            (&[("max_age", "-1")], ErrorCode::InvalidRequest),
            (&[("request", "eyJ...")], ErrorCode::RequestNotSupported),
            (
                &[("request_uri", "https://x")],
                ErrorCode::RequestUriNotSupported,
            ),
            (&[("response_mode", "fragment")], ErrorCode::InvalidRequest),
        ];
        for (extra, code) in cases {
            assert_eq!(
                code_of(check_authorize_request(
                    &params(extra),
                    &reg(true),
                    RequestSource::Query,
                )),
                (true, *code),
                "{extra:?}"
            );
        }
        let dup = RawParams::new(vec![
            ("client_id".into(), "portal".into()),
            ("redirect_uri".into(), "https://rp.example/cb".into()),
            ("response_type".into(), "code".into()),
            ("scope".into(), "openid".into()),
            ("scope".into(), "email".into()),
        ]);
        assert_eq!(
            code_of(check_authorize_request(
                &dup,
                &reg(false),
                RequestSource::Query,
            )),
            (true, ErrorCode::InvalidRequest)
        );
    }

    #[test]
    fn pkce_optional_for_confidential_but_honoured() {
        let no_pkce = params(&[("code_challenge", ""), ("code_challenge_method", "")]);
        assert!(
            check_authorize_request(&no_pkce, &reg(false), RequestSource::Query,)
                .unwrap()
                .1
                .code_challenge
                .is_none()
        );
        assert_eq!(
            code_of(check_authorize_request(
                &no_pkce,
                &reg(true),
                RequestSource::Query,
            )),
            (true, ErrorCode::InvalidRequest)
        );
    }

    #[test]
    fn redirect_keeps_existing_query() {
        assert_eq!(
            redirect_with(
                "https://rp.example/cb?x=1",
                &[("code", "a b"), ("state", "s")]
            ),
            "https://rp.example/cb?x=1&code=a+b&state=s"
        );
    }
}
