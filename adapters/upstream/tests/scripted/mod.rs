//! A scripted upstream OpenID provider for the federation tests: no UI, no
//! database, on 127.0.0.1, with a [`Mode`] (shared, changed by the test at
//! any time) deciding what it forges.
//!
//! - `/.well-known/openid-configuration`: its metadata (`issuer`,
//!   `id_token_signing_alg_values_supported`, RFC 9207
//!   `authorization_response_iss_parameter_supported` as the mode says);
//! - `/jwks`: the public half of its current signing key (RS256, a `kid`);
//! - `/authorize`: checks the request (code flow, the registered client and
//!   redirect URI, PKCE S256, `state`), records it, and redirects straight
//!   back with a `code`, the `state`, and `iss` as the mode says. The ID
//!   token of that code is minted now (`iat`, `exp`), as a provider does when
//!   the user signs in there; it is signed at `/token`;
//! - `/token`: checks `client_secret_basic` (or, for a public registration,
//!   `client_id` alone), the code (single use), `redirect_uri` and the PKCE
//!   verifier against the S256 challenge it recorded; answers the ID token
//!   built per the mode with the nonce it recorded, or the mode's OAuth error;
//! - `/userinfo`: the bearer's claims, or the mode's failure.
//!
//! Every endpoint counts its hits, so a test can show what is cached. Shared
//! by `adapters/upstream/tests` and `idp/tests/federation_tokens.rs` (through
//! `#[path]`).

#![allow(dead_code, unreachable_pub)]

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use idp_core::clock::{SharedClock, SystemClock};
use josekit::jwk::Jwk;
use josekit::jwk::KeyPair as _;
use josekit::jws::{HS256, JwsHeader, RS256};
use josekit::jwt::{self, JwtPayload};
use serde_json::{Map, Value, json};
use sha2::Digest;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// The subject the upstream signs in (unless the mode says otherwise).
pub const SUBJECT: &str = "upstream-user-1";

/// What the upstream's RFC 9207 `iss` parameter says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssParam {
    /// Its own issuer.
    Correct,
    /// Another issuer's.
    Other(String),
    /// None at all.
    Missing,
}

/// How the ID token is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signing {
    /// With the published key, its `kid` in the header.
    Published,
    /// With a key the JWKS does not hold, under a `kid` it does not hold.
    UnpublishedKey,
    /// With a key the JWKS does not hold, under the published key's `kid`.
    UnpublishedKeySameKid,
    /// Not at all (`alg: none`).
    None,
    /// HS256 with these bytes (the client secret: what a relying party that
    /// accepts MAC-signed tokens would check).
    Hs256(String),
}

/// What `/userinfo` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserInfo {
    /// Answers the bearer's claims.
    Answer,
    /// Fails with this HTTP status.
    Status(u16),
    /// Is not in the metadata.
    NotOffered,
}

/// What the upstream forges (or not): the test changes it at any time.
#[derive(Debug, Clone)]
pub struct Mode {
    /// The `issuer` of the discovery document; `None`: its own.
    pub discovery_issuer: Option<String>,
    /// `authorization_response_iss_parameter_supported` (RFC 9207).
    pub advertise_iss: bool,
    pub iss_param: IssParam,
    /// `id_token_signing_alg_values_supported`.
    pub algs: Vec<String>,
    /// The token endpoint answers this OAuth error (after checking the
    /// request as usual).
    pub token_error: Option<String>,
    /// The token response carries an ID token.
    pub id_token: bool,
    pub signing: Signing,
    /// `sub` of the ID token (and of UserInfo).
    pub subject: String,
    /// Claims of the ID token besides `iss`, `sub`, `aud`, `iat`, `exp` and
    /// `nonce`.
    pub profile: Map<String, Value>,
    /// Set (`Some`) or removed (`None`) in the ID token last: forgeries.
    pub forged: Vec<(String, Option<Value>)>,
    pub userinfo: UserInfo,
    /// UserInfo's claims besides `sub`.
    pub userinfo_claims: Map<String, Value>,
    /// UserInfo names this `sub` instead.
    pub userinfo_sub: Option<String>,
    /// `exp - iat` of the ID tokens.
    pub lifetime_secs: i64,
}

impl Default for Mode {
    fn default() -> Self {
        Self {
            discovery_issuer: None,
            advertise_iss: true,
            iss_param: IssParam::Correct,
            algs: vec!["RS256".into()],
            token_error: None,
            id_token: true,
            signing: Signing::Published,
            subject: SUBJECT.into(),
            profile: json!({
                "email": "bob@partner.example",
                "email_verified": true,
                "name": "Bob Partner",
                "amr": ["pwd"],
            })
            .as_object()
            .cloned()
            .unwrap_or_default(),
            forged: Vec::new(),
            userinfo: UserInfo::Answer,
            userinfo_claims: Map::new(),
            userinfo_sub: None,
            lifetime_secs: 300,
        }
    }
}

impl Mode {
    /// Sets `claim` of the ID token to `value`, whatever the upstream would
    /// have put there.
    pub fn forge(&mut self, claim: &str, value: Value) -> &mut Self {
        self.forged.push((claim.into(), Some(value)));
        self
    }

    /// Leaves `claim` out of the ID token.
    pub fn drop_claim(&mut self, claim: &str) -> &mut Self {
        self.forged.push((claim.into(), None));
        self
    }
}

/// Hits per endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hits {
    pub discovery: usize,
    pub jwks: usize,
    pub authorize: usize,
    pub token: usize,
    pub userinfo: usize,
}

#[derive(Default)]
struct Counters {
    discovery: AtomicUsize,
    jwks: AtomicUsize,
    authorize: AtomicUsize,
    token: AtomicUsize,
    userinfo: AtomicUsize,
}

struct SigningKey {
    kid: String,
    /// Without `kid` (josekit would write the key's over the header's).
    private: Jwk,
    public: Jwk,
}

impl SigningKey {
    fn generate() -> Self {
        let kid = idp_core::random::token()[..16].to_owned();
        let pair = RS256.generate_key_pair(2048).expect("an RSA key");
        let mut private = pair.to_jwk_private_key();
        private.set_algorithm("RS256");
        let mut public = pair.to_jwk_public_key();
        public.set_algorithm("RS256");
        public.set_key_use("sig");
        public.set_key_id(&kid);
        Self {
            kid,
            private,
            public,
        }
    }
}

/// A code given at `/authorize`, until `/token` takes it.
struct Grant {
    redirect_uri: String,
    challenge: String,
    nonce: Option<String>,
    /// When the ID token was minted (Unix seconds).
    minted_at: i64,
}

struct Inner {
    issuer: String,
    client_id: String,
    client_secret: Option<String>,
    redirect_uri: String,
    clock: RwLock<SharedClock>,
    mode: Mutex<Mode>,
    published: Mutex<SigningKey>,
    unpublished: SigningKey,
    grants: Mutex<HashMap<String, Grant>>,
    /// Access token → subject.
    access_tokens: Mutex<HashMap<String, String>>,
    hits: Counters,
    /// Why token requests were refused (a wrong verifier, a wrong secret...).
    token_refusals: Mutex<Vec<String>>,
    /// The query of every authorization request.
    authorize_requests: Mutex<Vec<HashMap<String, String>>>,
}

impl Inner {
    fn mode(&self) -> Mode {
        self.mode.lock().unwrap().clone()
    }

    fn now(&self) -> i64 {
        self.clock.read().unwrap().now().unix_timestamp()
    }
}

/// A running scripted upstream; stops when dropped.
pub struct ScriptedUpstream {
    /// `http://127.0.0.1:<port>`.
    pub issuer: String,
    inner: Arc<Inner>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for ScriptedUpstream {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Our registration at the upstream.
pub struct Registration {
    pub client_id: String,
    /// `None`: a public registration (PKCE only).
    pub client_secret: Option<String>,
    pub redirect_uri: String,
}

impl ScriptedUpstream {
    /// Serves on `listener` (bound beforehand when the provider under test
    /// must know the address first).
    pub async fn start(listener: tokio::net::TcpListener, registration: Registration) -> Self {
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Inner {
            issuer: format!("http://{addr}"),
            client_id: registration.client_id,
            client_secret: registration.client_secret,
            redirect_uri: registration.redirect_uri,
            clock: RwLock::new(Arc::new(SystemClock)),
            mode: Mutex::new(Mode::default()),
            published: Mutex::new(SigningKey::generate()),
            unpublished: SigningKey::generate(),
            grants: Mutex::default(),
            access_tokens: Mutex::default(),
            hits: Counters::default(),
            token_refusals: Mutex::default(),
            authorize_requests: Mutex::default(),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/userinfo", get(userinfo))
            .with_state(inner.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            issuer: inner.issuer.clone(),
            inner,
            server,
        }
    }

    /// Tells time by `clock` (the provider's settable clock, so that
    /// advancing it ages the upstream's tokens too).
    pub fn use_clock(&self, clock: SharedClock) {
        *self.inner.clock.write().unwrap() = clock;
    }

    /// Changes what it forges from now on.
    pub fn set_mode(&self, change: impl FnOnce(&mut Mode)) {
        change(&mut self.inner.mode.lock().unwrap());
    }

    pub fn hits(&self) -> Hits {
        let c = &self.inner.hits;
        Hits {
            discovery: c.discovery.load(Ordering::SeqCst),
            jwks: c.jwks.load(Ordering::SeqCst),
            authorize: c.authorize.load(Ordering::SeqCst),
            token: c.token.load(Ordering::SeqCst),
            userinfo: c.userinfo.load(Ordering::SeqCst),
        }
    }

    /// Why token requests were refused so far (none when the relying party
    /// authenticated and sent the right code, redirect URI and verifier).
    pub fn token_refusals(&self) -> Vec<String> {
        self.inner.token_refusals.lock().unwrap().clone()
    }

    /// The last authorization request's query.
    pub fn last_authorize_request(&self) -> Option<HashMap<String, String>> {
        self.inner
            .authorize_requests
            .lock()
            .unwrap()
            .last()
            .cloned()
    }

    /// The `kid` the JWKS publishes.
    pub fn kid(&self) -> String {
        self.inner.published.lock().unwrap().kid.clone()
    }

    /// Key rotation: a new key with a new `kid` signs, and the JWKS publishes
    /// it alone. Returns the new `kid`.
    pub fn rotate_key(&self) -> String {
        let key = SigningKey::generate();
        let kid = key.kid.clone();
        *self.inner.published.lock().unwrap() = key;
        kid
    }
}

fn oauth_error(status: StatusCode, error: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({ "error": error })),
    )
        .into_response()
}

async fn discovery(State(s): State<Arc<Inner>>) -> Json<Value> {
    s.hits.discovery.fetch_add(1, Ordering::SeqCst);
    let m = s.mode();
    let base = &s.issuer;
    let mut doc = json!({
        "issuer": m.discovery_issuer.as_deref().unwrap_or(base),
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "userinfo_endpoint": format!("{base}/userinfo"),
        "jwks_uri": format!("{base}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": m.algs,
        "scopes_supported": ["openid", "email", "profile"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "none"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": m.advertise_iss,
    });
    if m.userinfo == UserInfo::NotOffered {
        doc.as_object_mut().unwrap().remove("userinfo_endpoint");
    }
    Json(doc)
}

async fn jwks(State(s): State<Arc<Inner>>) -> Json<Value> {
    s.hits.jwks.fetch_add(1, Ordering::SeqCst);
    let key = s.published.lock().unwrap();
    Json(json!({ "keys": [Value::Object(key.public.as_ref().clone())] }))
}

async fn authorize(
    State(s): State<Arc<Inner>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    s.hits.authorize.fetch_add(1, Ordering::SeqCst);
    s.authorize_requests.lock().unwrap().push(q.clone());
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or_default();
    let problem = if get("response_type") != "code" {
        Some("response_type must be code")
    } else if get("client_id") != s.client_id {
        Some("unknown client_id")
    } else if get("redirect_uri") != s.redirect_uri {
        Some("redirect_uri is not the registered one")
    } else if get("code_challenge_method") != "S256" || get("code_challenge").len() < 43 {
        Some("PKCE S256 is required")
    } else if get("state").is_empty() {
        Some("state is required")
    } else if !get("scope").split(' ').any(|x| x == "openid") {
        Some("scope must include openid")
    } else {
        None
    };
    if let Some(problem) = problem {
        return (StatusCode::BAD_REQUEST, problem).into_response();
    }
    let code = idp_core::random::token();
    s.grants.lock().unwrap().insert(
        code.clone(),
        Grant {
            redirect_uri: get("redirect_uri").to_owned(),
            challenge: get("code_challenge").to_owned(),
            nonce: q.get("nonce").cloned(),
            minted_at: s.now(),
        },
    );
    let mut to = url::Url::parse(&s.redirect_uri).unwrap();
    {
        let mut p = to.query_pairs_mut();
        p.append_pair("code", &code)
            .append_pair("state", get("state"));
        match s.mode().iss_param {
            IssParam::Correct => {
                p.append_pair("iss", &s.issuer);
            }
            IssParam::Other(iss) => {
                p.append_pair("iss", &iss);
            }
            IssParam::Missing => {}
        }
    }
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

/// One `client_secret_basic` component (form-urlencoded, RFC 6749 §2.3.1).
fn basic_part(s: &str) -> String {
    url::form_urlencoded::parse(s.as_bytes())
        .next()
        .map(|(k, _)| k.into_owned())
        .unwrap_or_default()
}

/// Who `headers` and `form` authenticate as, if they do it right.
fn client_authentication(
    s: &Inner,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<(), String> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "));
    match (&s.client_secret, basic) {
        (Some(secret), Some(b)) => {
            let decoded = STANDARD
                .decode(b)
                .ok()
                .and_then(|d| String::from_utf8(d).ok())
                .ok_or("Basic credentials are not base64 text")?;
            let (id, pw) = decoded
                .split_once(':')
                .ok_or("Basic credentials without ':'")?;
            if basic_part(id) != s.client_id || basic_part(pw) != *secret {
                return Err("wrong client credentials".into());
            }
            if form.contains_key("client_secret") {
                return Err("two client authentication methods".into());
            }
            Ok(())
        }
        (Some(_), None) => Err("no client_secret_basic credentials".into()),
        (None, Some(_)) => Err("a public client sent credentials".into()),
        (None, None) if form.get("client_id") == Some(&s.client_id) => Ok(()),
        (None, None) => Err("a public client must send its client_id".into()),
    }
}

async fn token(
    State(s): State<Arc<Inner>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    s.hits.token.fetch_add(1, Ordering::SeqCst);
    let refuse = |status: StatusCode, error: &str, why: String| {
        s.token_refusals.lock().unwrap().push(why);
        oauth_error(status, error)
    };
    if let Err(why) = client_authentication(&s, &headers, &form) {
        return refuse(StatusCode::UNAUTHORIZED, "invalid_client", why);
    }
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    if get("grant_type") != "authorization_code" {
        return refuse(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            format!("grant_type {:?}", get("grant_type")),
        );
    }
    let Some(grant) = s.grants.lock().unwrap().remove(get("code")) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "unknown or used code".into(),
        );
    };
    if get("redirect_uri") != grant.redirect_uri {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "redirect_uri differs from the authorization request's".into(),
        );
    }
    let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(get("code_verifier").as_bytes()));
    if challenge != grant.challenge {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "the PKCE verifier does not match the S256 challenge".into(),
        );
    }
    let m = s.mode();
    if let Some(error) = &m.token_error {
        return oauth_error(StatusCode::BAD_REQUEST, error);
    }
    let access_token = idp_core::random::token();
    s.access_tokens
        .lock()
        .unwrap()
        .insert(access_token.clone(), m.subject.clone());
    let mut body = json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "openid email profile",
    });
    if m.id_token {
        body["id_token"] = Value::String(id_token(&s, &m, &grant));
    }
    (
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store")],
        Json(body),
    )
        .into_response()
}

/// The ID token of `grant`, built and signed as `m` says.
fn id_token(s: &Inner, m: &Mode, grant: &Grant) -> String {
    let mut claims = Map::new();
    claims.insert("iss".into(), json!(s.issuer));
    claims.insert("sub".into(), json!(m.subject));
    claims.insert("aud".into(), json!(s.client_id));
    claims.insert("iat".into(), json!(grant.minted_at));
    claims.insert("exp".into(), json!(grant.minted_at + m.lifetime_secs));
    if let Some(nonce) = &grant.nonce {
        claims.insert("nonce".into(), json!(nonce));
    }
    claims.extend(m.profile.clone());
    for (k, v) in &m.forged {
        match v {
            Some(v) => claims.insert(k.clone(), v.clone()),
            None => claims.remove(k),
        };
    }
    let payload = JwtPayload::from_map(claims).expect("JWT claims");
    let mut h = JwsHeader::new();
    h.set_token_type("JWT");
    let published = s.published.lock().unwrap();
    let signed = match &m.signing {
        Signing::Published => {
            h.set_key_id(&published.kid);
            jwt::encode_with_signer(
                &payload,
                &h,
                &RS256.signer_from_jwk(&published.private).unwrap(),
            )
        }
        Signing::UnpublishedKey => {
            h.set_key_id(&s.unpublished.kid);
            jwt::encode_with_signer(
                &payload,
                &h,
                &RS256.signer_from_jwk(&s.unpublished.private).unwrap(),
            )
        }
        Signing::UnpublishedKeySameKid => {
            h.set_key_id(&published.kid);
            jwt::encode_with_signer(
                &payload,
                &h,
                &RS256.signer_from_jwk(&s.unpublished.private).unwrap(),
            )
        }
        Signing::None => jwt::encode_unsecured(&payload, &h),
        Signing::Hs256(secret) => jwt::encode_with_signer(
            &payload,
            &h,
            &HS256.signer_from_bytes(secret.as_bytes()).unwrap(),
        ),
    };
    signed.expect("a signed ID token")
}

async fn userinfo(State(s): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    s.hits.userinfo.fetch_add(1, Ordering::SeqCst);
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let Some(subject) = s.access_tokens.lock().unwrap().get(bearer).cloned() else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_token");
    };
    let m = s.mode();
    match m.userinfo {
        UserInfo::Status(code) => (
            StatusCode::from_u16(code).unwrap(),
            "the UserInfo endpoint failed",
        )
            .into_response(),
        UserInfo::Answer | UserInfo::NotOffered => {
            let mut claims = Map::new();
            claims.insert("sub".into(), json!(m.userinfo_sub.unwrap_or(subject)));
            claims.extend(m.userinfo_claims);
            Json(Value::Object(claims)).into_response()
        }
    }
}
