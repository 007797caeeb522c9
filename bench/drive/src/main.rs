//! The benchmark's driver for single-use tokens and interactive logins, the
//! same for this provider and the peer: it reads the server's discovery
//! document and behaves as a browser and a relying party would (cookies kept
//! per browser, the first POST form of each page filled in: `identifier`,
//! `password`, hidden fields kept), so nothing in it is server-specific.
//!
//! ```text
//! idp-bench-drive tokens  COMMON                    one login + code exchange; prints the tokens as JSON
//! idp-bench-drive codes   COMMON [--mint-secs S] [--max N] [--reps R]
//!     per repetition: one real login, then authorization codes minted through
//!     the single sign-on session (the same /authorize a portal sends), then
//!     every code exchanged (timed), then every refresh token of those
//!     exchanges refreshed once (timed)
//! idp-bench-drive logins  COMMON [--secs S] [--reps R]
//!     full interactive logins (authorize, identifier page, password page,
//!     code exchange), each by a new browser, `--concurrency` at a time
//! idp-bench-drive dpop-codes COMMON --dpop-client-id ID --client-key FILE
//!         [--mint-secs S] [--max N] [--reps R]
//!     as `codes`, for a second client that authenticates with
//!     `private_key_jwt` (RFC 7523) and binds its tokens with DPoP (RFC 9449):
//!     codes minted for it through the same kind of single sign-on session,
//!     then, before the timed run, one client assertion and one DPoP proof
//!     signed per code (ES256, each with a new `jti`), then every code
//!     exchanged with them (timed); each answer must have `token_type` DPoP,
//!     and after the run one access token is checked to be bound to the
//!     proof key (`cnf.jkt` in the JWT when it is one, and at introspection)
//! idp-bench-drive keygen --out FILE
//!     a new ES256 key pair: the private JWK into FILE (mode 0600), the
//!     public JWK Set on stdout (for the client's registration)
//! COMMON: --issuer URL --client-id ID --client-secret S --redirect-uri URI
//!         --username U --password P [--concurrency C] [--max-secs S]
//!         [--server-pid PID --clk-tck HZ]
//! ```
//!
//! Results are JSON lines: {"kind", "rep", "n", "ok", "errors", "secs",
//! "rps", "p50_ms", "p99_ms", "first_error", "server_cpu_s", "driver_cpu_s"}
//! (CPU seconds of the server process, when its pid is given, and of this
//! driver during the timed run). Every loop is bounded in count and time;
//! only the given issuer is contacted.

// A benchmark measures time: the provider's ban on reading the clock
// directly (clippy.toml) is for server code, which gets time from its Clock.
#![allow(clippy::disallowed_methods)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use josekit::jwk::{Jwk, KeyPair};
use josekit::jws::{ES256, JwsSigner};
use reqwest::header::{self, HeaderMap, HeaderValue};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Error = String;

#[derive(Clone)]
struct Opts {
    issuer: String,
    client_id: String,
    client_secret: String,
    redirect_uri: String,
    username: String,
    password: String,
    concurrency: usize,
    mint_secs: f64,
    max: usize,
    reps: usize,
    secs: f64,
    max_secs: f64,
    /// The server's process, for its CPU time per run (Linux /proc).
    server_pid: Option<u32>,
    clk_tck: f64,
    /// `dpop-codes`: the `private_key_jwt` + DPoP client and the file of
    /// its private key (a JWK, as `keygen` writes it).
    dpop_client_id: Option<String>,
    client_key: Option<String>,
}

fn parse_opts(args: &[String]) -> Opts {
    let mut m: HashMap<&str, &str> = HashMap::new();
    let mut i = 0;
    while i + 1 < args.len() {
        let k = args[i]
            .strip_prefix("--")
            .unwrap_or_else(|| panic!("expected --option, got {}", args[i]));
        m.insert(k, &args[i + 1]);
        i += 2;
    }
    assert!(i == args.len(), "every option takes a value");
    let req = |k: &str| {
        m.get(k)
            .map(|s| (*s).to_owned())
            .unwrap_or_else(|| panic!("--{k} is required"))
    };
    let num = |k: &str, d: f64| m.get(k).map_or(d, |s| s.parse().expect("a number"));
    Opts {
        issuer: req("issuer").trim_end_matches('/').to_owned(),
        client_id: req("client-id"),
        client_secret: req("client-secret"),
        redirect_uri: req("redirect-uri"),
        username: req("username"),
        password: req("password"),
        concurrency: num("concurrency", 16.0) as usize,
        mint_secs: num("mint-secs", 3.0),
        max: num("max", 20_000.0) as usize,
        reps: num("reps", 3.0) as usize,
        secs: num("secs", 10.0),
        max_secs: num("max-secs", 60.0),
        server_pid: m.get("server-pid").map(|s| s.parse().expect("a pid")),
        clk_tck: num("clk-tck", 100.0),
        dpop_client_id: m.get("dpop-client-id").map(|s| (*s).to_owned()),
        client_key: m.get("client-key").map(|s| (*s).to_owned()),
    }
}

/// A browser's cookies (name and path as the key), with just enough of
/// RFC 6265 for the two servers: Path scoping, deletion by Max-Age/Expires.
#[derive(Clone, Default)]
struct Jar {
    cookies: Vec<(String, String, String)>,
}

impl Jar {
    fn header_for(&self, path: &str) -> Option<HeaderValue> {
        let v: Vec<String> = self
            .cookies
            .iter()
            .filter(|(_, p, _)| {
                path == p
                    || (path.starts_with(p.as_str())
                        && (p.ends_with('/') || path[p.len()..].starts_with('/')))
            })
            .map(|(n, _, v)| format!("{n}={v}"))
            .collect();
        (!v.is_empty()).then(|| HeaderValue::from_str(&v.join("; ")).expect("cookie header"))
    }

    fn store(&mut self, headers: &HeaderMap) {
        for h in headers.get_all(header::SET_COOKIE) {
            let Ok(s) = h.to_str() else { continue };
            let mut parts = s.split(';');
            let Some((name, value)) = parts.next().and_then(|nv| nv.split_once('=')) else {
                continue;
            };
            let (mut path, mut delete) = ("/".to_owned(), value.is_empty());
            for a in parts {
                let (k, v) = a.split_once('=').unwrap_or((a, ""));
                match k.trim().to_ascii_lowercase().as_str() {
                    "path" => path = v.trim().to_owned(),
                    "max-age" => delete |= v.trim().parse::<i64>().is_ok_and(|n| n <= 0),
                    "expires" => delete |= v.contains("1970"),
                    _ => {}
                }
            }
            let (name, value) = (name.trim().to_owned(), value.trim().to_owned());
            self.cookies.retain(|(n, p, _)| !(n == &name && p == &path));
            if !delete {
                self.cookies.push((name, path, value));
            }
        }
    }
}

/// The first POST form of a page: action and fields (hidden values kept).
fn parse_form(html: &str) -> Option<(String, Vec<(String, String)>)> {
    fn attr(tag: &str, name: &str) -> Option<String> {
        let needle = format!(" {name}=\"");
        let start = tag.find(&needle)? + needle.len();
        let end = tag[start..].find('"')? + start;
        Some(
            tag[start..end]
                .replace("&amp;", "&")
                .replace("&quot;", "\"")
                .replace("&#x27;", "'")
                .replace("&#39;", "'")
                .replace("&#x2F;", "/"),
        )
    }
    let mut rest = html;
    while let Some(i) = rest.find("<form") {
        let tail = &rest[i..];
        let end = tail.find("</form>")?;
        let body = &tail[..end];
        let open = &body[..body.find('>')?];
        if attr(open, "method").is_some_and(|m| m.eq_ignore_ascii_case("post")) {
            let mut fields = Vec::new();
            let mut b = body;
            while let Some(j) = b.find("<input") {
                let t = &b[j..];
                let close = t.find('>')?;
                let tag = &t[..close];
                if let Some(n) = attr(tag, "name") {
                    fields.push((n, attr(tag, "value").unwrap_or_default()));
                }
                b = &t[close..];
            }
            return Some((attr(open, "action")?, fields));
        }
        rest = &tail[end..];
    }
    None
}

fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// A PKCE pair: (verifier, S256 challenge).
fn pkce() -> (String, String) {
    let v = random_token();
    let c = URL_SAFE_NO_PAD.encode(Sha256::digest(v.as_bytes()));
    (v, c)
}

fn form_body(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// RFC 7523 section 2.2.
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Seconds since the epoch.
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A compact JWS of `claims` under `header`, signed by `signer`.
fn sign_jwt(signer: &dyn JwsSigner, header: &Value, claims: &Value) -> Result<String, Error> {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = signer.sign(input.as_bytes()).map_err(|e| e.to_string())?;
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
}

/// The claims of a JWT (not verified), or None for an opaque token.
fn jwt_claims(token: &str) -> Option<Value> {
    let mut parts = token.split('.');
    let (_, payload, _, None) = (parts.next()?, parts.next()?, parts.next()?, parts.next()) else {
        return None;
    };
    let v: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    v.is_object().then_some(v)
}

/// The `private_key_jwt` + DPoP client: its registered ES256 key (read from
/// the file `keygen` wrote) signs the client assertions; a DPoP key made
/// for this run signs the proofs.
struct DpopClient {
    client_id: String,
    assertion_signer: Box<dyn JwsSigner>,
    kid: Option<String>,
    dpop_signer: Box<dyn JwsSigner>,
    /// The DPoP key's public members, the proofs' `jwk` header.
    dpop_jwk: Value,
    /// Its RFC 7638 thumbprint: the `cnf.jkt` tokens must carry.
    jkt: String,
}

impl DpopClient {
    fn new(client_id: &str, key_file: &str) -> Result<DpopClient, Error> {
        let bytes = std::fs::read(key_file).map_err(|e| format!("{key_file}: {e}"))?;
        let jwk = Jwk::from_bytes(bytes).map_err(|e| format!("{key_file}: {e}"))?;
        let assertion_signer = ES256
            .signer_from_jwk(&jwk)
            .map_err(|e| format!("{key_file}: {e}"))?;
        let pair = ES256.generate_key_pair().map_err(|e| e.to_string())?;
        let dpop_signer = ES256
            .signer_from_jwk(&pair.to_jwk_private_key())
            .map_err(|e| e.to_string())?;
        let public = pair.to_jwk_public_key();
        let member = |k: &str| {
            public
                .parameter(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("the DPoP key has no {k}"))
        };
        let (crv, x, y) = (member("crv")?, member("x")?, member("y")?);
        // RFC 7638 section 3.2: the required members, in lexicographic
        // order, no white space.
        let canonical = format!(r#"{{"crv":"{crv}","kty":"EC","x":"{x}","y":"{y}"}}"#);
        Ok(DpopClient {
            client_id: client_id.to_owned(),
            kid: jwk.key_id().map(str::to_owned),
            assertion_signer: Box::new(assertion_signer),
            dpop_signer: Box::new(dpop_signer),
            dpop_jwk: json!({"kty": "EC", "crv": crv, "x": x, "y": y}),
            jkt: URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())),
        })
    }

    /// A client assertion (RFC 7523 section 3) for `aud`: new jti, two
    /// minutes of life.
    fn assertion(&self, aud: &str) -> Result<String, Error> {
        let mut header = json!({"alg": "ES256"});
        if let Some(kid) = &self.kid {
            header["kid"] = json!(kid);
        }
        let now = now_secs();
        sign_jwt(
            self.assertion_signer.as_ref(),
            &header,
            &json!({
                "iss": self.client_id,
                "sub": self.client_id,
                "aud": aud,
                "jti": random_token(),
                "iat": now,
                "exp": now + 120,
            }),
        )
    }

    /// A DPoP proof (RFC 9449 section 4.2) for a request: new jti.
    fn proof(&self, htm: &str, htu: &str) -> Result<String, Error> {
        sign_jwt(
            self.dpop_signer.as_ref(),
            &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.dpop_jwk}),
            &json!({"jti": random_token(), "htm": htm, "htu": htu, "iat": now_secs()}),
        )
    }
}

/// One code exchange of the DPoP client, signed before the timed run.
struct DpopExchange {
    code: String,
    verifier: String,
    assertion: String,
    proof: String,
}

/// Checks that the access token of a DPoP exchange is bound to the proof's
/// key: `cnf.jkt` in the token when it is a JWT, and in the introspection
/// answer (asked by the client itself, with a new assertion) for every
/// token. Returns what was checked.
async fn check_binding(s: &Server, c: &DpopClient, v: &Value) -> Result<String, Error> {
    let at = v["access_token"].as_str().ok_or("no access_token")?;
    let mut checked = Vec::new();
    if let Some(claims) = jwt_claims(at) {
        let jkt = claims["cnf"]["jkt"].as_str();
        if jkt != Some(c.jkt.as_str()) {
            return Err(format!(
                "the access token's cnf.jkt is {jkt:?}, not the proof key's thumbprint {}",
                c.jkt
            ));
        }
        checked.push("jwt");
    }
    let url = s
        .introspection_endpoint
        .as_deref()
        .ok_or("discovery: no introspection_endpoint")?;
    let assertion = c.assertion(&s.o.issuer)?;
    let res = s
        .http
        .post(url)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form_body(&[
            ("token", at),
            ("token_type_hint", "access_token"),
            ("client_id", &c.client_id),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &assertion),
        ]))
        .send()
        .await
        .map_err(|e| format!("introspection: {e}"))?;
    let st = res.status();
    let body = res.bytes().await.map_err(|e| e.to_string())?;
    if st != 200 {
        return Err(format!(
            "introspection: {st}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    let r: Value = serde_json::from_slice(&body).map_err(|e| format!("introspection: {e}"))?;
    if r["active"] != json!(true) || r["cnf"]["jkt"].as_str() != Some(c.jkt.as_str()) {
        return Err(format!(
            "introspection: expected active with cnf.jkt {}, got {r}",
            c.jkt
        ));
    }
    checked.push("introspection");
    Ok(checked.join("+"))
}

/// `keygen --out FILE`: a new ES256 key pair for the client's registration.
fn cmd_keygen(args: &[String]) -> Result<(), Error> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let [flag, path] = args else {
        return Err("usage: idp-bench-drive keygen --out FILE".into());
    };
    if flag != "--out" {
        return Err("usage: idp-bench-drive keygen --out FILE".into());
    }
    let pair = ES256.generate_key_pair().map_err(|e| e.to_string())?;
    let kid = format!("bench-{}", &random_token()[..12]);
    let mut private = pair.to_jwk_private_key();
    private.set_key_id(kid.clone());
    let mut public = pair.to_jwk_public_key();
    public.set_key_id(kid);
    public.set_key_use("sig");
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(private.to_string().as_bytes()))
        .map_err(|e| format!("{path}: {e}"))?;
    let public: serde_json::Map<String, Value> = public.into();
    println!("{}", json!({"keys": [public]}));
    Ok(())
}

struct Server {
    http: reqwest::Client,
    o: Opts,
    origin: String,
    authorization_endpoint: String,
    token_endpoint: String,
    introspection_endpoint: Option<String>,
}

impl Server {
    async fn connect(o: Opts) -> Result<Server, Error> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(o.concurrency.max(1))
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        let d: Value = serde_json::from_slice(
            &http
                .get(format!("{}/.well-known/openid-configuration", o.issuer))
                .send()
                .await
                .map_err(|e| format!("discovery: {e}"))?
                .bytes()
                .await
                .map_err(|e| e.to_string())?,
        )
        .map_err(|e| format!("discovery: {e}"))?;
        let s = |k: &str| {
            d[k].as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("discovery: no {k}"))
        };
        let u = url::Url::parse(&o.issuer).map_err(|e| e.to_string())?;
        Ok(Server {
            authorization_endpoint: s("authorization_endpoint")?,
            token_endpoint: s("token_endpoint")?,
            introspection_endpoint: s("introspection_endpoint").ok(),
            origin: u.origin().ascii_serialization(),
            http,
            o,
        })
    }

    fn authorize_url(&self, client_id: &str, challenge: &str) -> String {
        let mut u = url::Url::parse(&self.authorization_endpoint).expect("authorization_endpoint");
        u.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", &self.o.redirect_uri)
            .append_pair("scope", "openid profile email")
            .append_pair("state", &random_token()[..16])
            .append_pair("nonce", &random_token()[..16])
            .append_pair("code_challenge", challenge)
            .append_pair("code_challenge_method", "S256");
        u.into()
    }

    /// Behaves as a browser from `url` until the server redirects to the
    /// client's redirect URI; returns the code. Fills the login forms it is
    /// shown (at most a few pages: a loop or a refused password is an error).
    async fn browse(&self, jar: &mut Jar, url: String) -> Result<String, Error> {
        let mut url = url;
        let mut forms = 0;
        for _ in 0..20 {
            let path = url::Url::parse(&url)
                .map_err(|e| e.to_string())?
                .path()
                .to_owned();
            let mut req = self.http.get(&url);
            if let Some(c) = jar.header_for(&path) {
                req = req.header(header::COOKIE, c);
            }
            let res = req.send().await.map_err(|e| format!("GET {url}: {e}"))?;
            jar.store(res.headers());
            let res = if res.status().is_redirection() {
                res
            } else if res.status() == 200 {
                forms += 1;
                if forms > 3 {
                    return Err("more than 3 pages: the login is not completing".into());
                }
                let html = res.text().await.map_err(|e| e.to_string())?;
                let (action, mut fields) =
                    parse_form(&html).ok_or_else(|| format!("no POST form at {url}"))?;
                for (k, v) in &mut fields {
                    if k == "identifier" {
                        v.clone_from(&self.o.username);
                    } else if k == "password" {
                        v.clone_from(&self.o.password);
                    }
                }
                let target = url::Url::parse(&url)
                    .and_then(|u| u.join(&action))
                    .map_err(|e| e.to_string())?;
                let mut req = self
                    .http
                    .post(target.as_str())
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .header(header::ORIGIN, &self.origin)
                    .body(
                        url::form_urlencoded::Serializer::new(String::new())
                            .extend_pairs(fields.iter())
                            .finish(),
                    );
                if let Some(c) = jar.header_for(target.path()) {
                    req = req.header(header::COOKIE, c);
                }
                let res = req
                    .send()
                    .await
                    .map_err(|e| format!("POST {target}: {e}"))?;
                jar.store(res.headers());
                if !res.status().is_redirection() {
                    let st = res.status();
                    let body = res.text().await.unwrap_or_default();
                    return Err(format!(
                        "POST {target}: {st}: {}",
                        body.chars().take(300).collect::<String>()
                    ));
                }
                res
            } else {
                let st = res.status();
                let body = res.text().await.unwrap_or_default();
                return Err(format!(
                    "GET {url}: {st}: {}",
                    body.chars().take(300).collect::<String>()
                ));
            };
            let loc = res
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or("redirect without Location")?;
            let next = url::Url::parse(&url)
                .and_then(|u| u.join(loc))
                .map_err(|e| e.to_string())?;
            if next.as_str().starts_with(&self.o.redirect_uri) {
                return next
                    .query_pairs()
                    .find(|(k, _)| k == "code")
                    .map(|(_, v)| v.into_owned())
                    .ok_or_else(|| format!("redirected without a code: {next}"));
            }
            url = next.into();
        }
        Err("too many redirects".into())
    }

    /// POSTs a token request (client_secret_basic); returns the JSON response.
    async fn token(&self, form: &[(&str, &str)]) -> Result<Value, Error> {
        let req = self
            .http
            .post(&self.token_endpoint)
            .basic_auth(&self.o.client_id, Some(&self.o.client_secret));
        self.send_token(req, form).await
    }

    /// POSTs a token request authenticated by its form (a client assertion)
    /// with a `DPoP` proof; returns the JSON response.
    async fn token_dpop(&self, form: &[(&str, &str)], proof: &str) -> Result<Value, Error> {
        let req = self.http.post(&self.token_endpoint).header("DPoP", proof);
        self.send_token(req, form).await
    }

    async fn send_token(
        &self,
        req: reqwest::RequestBuilder,
        form: &[(&str, &str)],
    ) -> Result<Value, Error> {
        let res = req
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form_body(form))
            .send()
            .await
            .map_err(|e| format!("token: {e}"))?;
        let st = res.status();
        let body = res.bytes().await.map_err(|e| e.to_string())?;
        if st != 200 {
            return Err(format!("token: {st}: {}", String::from_utf8_lossy(&body)));
        }
        let v: Value = serde_json::from_slice(&body).map_err(|e| format!("token: {e}"))?;
        if v["access_token"].as_str().is_none() {
            return Err(format!("token: no access_token in {v}"));
        }
        Ok(v)
    }

    async fn exchange(&self, code: &str, verifier: &str) -> Result<Value, Error> {
        self.token(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &self.o.redirect_uri),
            ("code_verifier", verifier),
        ])
        .await
    }

    /// The code exchange of the `private_key_jwt` + DPoP client, with its
    /// pre-signed assertion and proof; the answer must be a DPoP token.
    async fn exchange_dpop(&self, client_id: &str, x: &DpopExchange) -> Result<Value, Error> {
        let v = self
            .token_dpop(
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &x.code),
                    ("redirect_uri", &self.o.redirect_uri),
                    ("code_verifier", &x.verifier),
                    ("client_id", client_id),
                    ("client_assertion_type", ASSERTION_TYPE),
                    ("client_assertion", &x.assertion),
                ],
                &x.proof,
            )
            .await?;
        match v["token_type"].as_str() {
            // Token types are case-insensitive (RFC 6749 section 7.1).
            Some(t) if t.eq_ignore_ascii_case("DPoP") => Ok(v),
            t => Err(format!("token: token_type {t:?}, not DPoP")),
        }
    }

    /// A full interactive login by a new browser, then the code exchange.
    async fn login(&self, jar: &mut Jar) -> Result<Value, Error> {
        let (verifier, challenge) = pkce();
        let code = self
            .browse(jar, self.authorize_url(&self.o.client_id, &challenge))
            .await?;
        self.exchange(&code, &verifier).await
    }
}

/// CPU seconds (user + system) of a process so far, from /proc/PID/stat.
fn cpu_secs(pid: &str, clk_tck: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clk_tck)
}

/// CPU seconds of the server and of this driver, read at the start and
/// the end of a timed run.
#[derive(Clone, Copy)]
struct CpuMark {
    server: Option<f64>,
    driver: Option<f64>,
}

impl CpuMark {
    fn now(o: &Opts) -> CpuMark {
        CpuMark {
            server: o
                .server_pid
                .and_then(|p| cpu_secs(&p.to_string(), o.clk_tck)),
            driver: cpu_secs("self", o.clk_tck),
        }
    }

    fn since(self, o: &Opts) -> Value {
        let end = CpuMark::now(o);
        let d = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => json!(((b - a) * 1000.0).round() / 1000.0),
            _ => Value::Null,
        };
        json!({"server_cpu_s": d(self.server, end.server), "driver_cpu_s": d(self.driver, end.driver)})
    }
}

/// Latencies and outcomes of one timed run.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    ok: usize,
    errors: usize,
    first_error: Option<String>,
}

impl Tally {
    fn record(&mut self, started: Instant, r: Result<(), Error>) {
        self.latencies_us.push(started.elapsed().as_micros() as u64);
        match r {
            Ok(()) => self.ok += 1,
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }

    fn report(mut self, kind: &str, rep: usize, secs: f64, cpu: Value) -> Value {
        self.latencies_us.sort_unstable();
        let pct = |p: f64| {
            if self.latencies_us.is_empty() {
                return 0.0;
            }
            let i = ((p / 100.0) * self.latencies_us.len() as f64).ceil() as usize;
            self.latencies_us[i.clamp(1, self.latencies_us.len()) - 1] as f64 / 1000.0
        };
        json!({
            "kind": kind,
            "rep": rep,
            "n": self.latencies_us.len(),
            "ok": self.ok,
            "errors": self.errors,
            "secs": (secs * 1000.0).round() / 1000.0,
            "rps": ((self.ok as f64 / secs) * 10.0).round() / 10.0,
            "p50_ms": (pct(50.0) * 1000.0).round() / 1000.0,
            "p99_ms": (pct(99.0) * 1000.0).round() / 1000.0,
            "first_error": self.first_error,
            "server_cpu_s": cpu["server_cpu_s"],
            "driver_cpu_s": cpu["driver_cpu_s"],
        })
    }
}

/// Runs `work(item)` over `items` with `concurrency` tasks, each item once;
/// stops taking new items after `max_secs`. Returns the tally and the
/// elapsed seconds.
async fn run_queue<T, F, Fut>(o: &Opts, items: Vec<T>, work: F) -> (Tally, f64, Value)
where
    T: Send + Sync + 'static,
    F: Fn(Arc<Vec<T>>, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<(), Error>> + Send,
{
    let (concurrency, max_secs) = (o.concurrency, o.max_secs);
    let cpu = CpuMark::now(o);
    let items = Arc::new(items);
    let next = Arc::new(AtomicUsize::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let start = Instant::now();
    let deadline = Duration::from_secs_f64(max_secs);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (items, next, tally, work) = (items.clone(), next.clone(), tally.clone(), work.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= items.len() || start.elapsed() > deadline {
                    break;
                }
                let t0 = Instant::now();
                let r = work(items.clone(), i).await;
                tally.lock().expect("tally").record(t0, r);
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu.since(o);
    let tally = std::mem::take(&mut *tally.lock().expect("tally"));
    (tally, secs, cpu)
}

async fn cmd_tokens(s: Arc<Server>) -> Result<(), Error> {
    let v = s.login(&mut Jar::default()).await?;
    println!(
        "{}",
        json!({"access_token": v["access_token"], "refresh_token": v["refresh_token"], "id_token": v["id_token"]})
    );
    Ok(())
}

/// Authorization codes for `client_id` minted through the single sign-on
/// session of `jar`, `concurrency` requests at a time, for `--mint-secs` or
/// up to `--max` codes: (code, PKCE verifier) pairs and the seconds taken.
async fn mint_codes(
    s: &Arc<Server>,
    jar: &Jar,
    client_id: &str,
) -> Result<(Vec<(String, String)>, f64), Error> {
    let o = &s.o;
    let minted = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let mint_start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..o.concurrency {
        let (s, minted, jar) = (s.clone(), minted.clone(), jar.clone());
        let (secs, max, client_id) = (o.mint_secs, o.max, client_id.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut jar = jar;
            while mint_start.elapsed().as_secs_f64() < secs
                && minted.lock().expect("minted").len() < max
            {
                let (verifier, challenge) = pkce();
                match s
                    .browse(&mut jar, s.authorize_url(&client_id, &challenge))
                    .await
                {
                    Ok(code) => minted.lock().expect("minted").push((code, verifier)),
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await.expect("task")?;
    }
    let codes = std::mem::take(&mut *minted.lock().expect("minted"));
    Ok((codes, mint_start.elapsed().as_secs_f64()))
}

async fn cmd_codes(s: Arc<Server>) -> Result<(), Error> {
    let o = s.o.clone();
    for rep in 1..=o.reps {
        // One real login gives the browser its single sign-on session.
        let mut jar = Jar::default();
        s.login(&mut jar).await?;
        let (codes, mint_secs) = mint_codes(&s, &jar, &o.client_id).await?;
        eprintln!(
            "drive: rep {rep}: minted {} codes in {mint_secs:.1} s through the SSO session",
            codes.len()
        );
        let refresh = Arc::new(Mutex::new(Vec::<String>::new()));
        let (t, secs, cpu) = {
            let (s, refresh) = (s.clone(), refresh.clone());
            run_queue(&o, codes, move |items, i| {
                let (s, refresh) = (s.clone(), refresh.clone());
                async move {
                    let (code, verifier) = &items[i];
                    let v = s.exchange(code, verifier).await?;
                    if let Some(rt) = v["refresh_token"].as_str() {
                        refresh.lock().expect("refresh").push(rt.to_owned());
                    }
                    Ok(())
                }
            })
            .await
        };
        println!("{}", t.report("token_code", rep, secs, cpu));
        let tokens = std::mem::take(&mut *refresh.lock().expect("refresh"));
        let (t, secs, cpu) = {
            let s = s.clone();
            run_queue(&o, tokens, move |items, i| {
                let s = s.clone();
                async move {
                    s.token(&[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", &items[i]),
                    ])
                    .await
                    .map(|_| ())
                }
            })
            .await
        };
        println!("{}", t.report("token_refresh", rep, secs, cpu));
    }
    Ok(())
}

/// `dpop-codes`: code exchanges of the `private_key_jwt` + DPoP client.
async fn cmd_dpop_codes(s: Arc<Server>) -> Result<(), Error> {
    let o = s.o.clone();
    let client_id = o
        .dpop_client_id
        .clone()
        .ok_or("--dpop-client-id is required")?;
    let key = o.client_key.clone().ok_or("--client-key is required")?;
    let client = Arc::new(DpopClient::new(&client_id, &key)?);
    for rep in 1..=o.reps {
        // One real login (the portal client) gives the browser its single
        // sign-on session; the codes are the DPoP client's.
        let mut jar = Jar::default();
        s.login(&mut jar).await?;
        let (codes, mint_secs) = mint_codes(&s, &jar, &client_id).await?;
        eprintln!(
            "drive: rep {rep}: minted {} codes for {client_id} in {mint_secs:.1} s through the SSO session",
            codes.len()
        );
        // The client's signatures, made before the timed run as the PKCE
        // pairs are made at minting: the run times the servers, not the
        // driver (one thread on the servers' 2 cores). Each assertion and
        // proof is fresh: its own jti, iat now (the run lasts seconds, well
        // within both servers' windows).
        let sign_start = Instant::now();
        let items: Vec<DpopExchange> = codes
            .into_iter()
            .map(|(code, verifier)| {
                Ok(DpopExchange {
                    assertion: client.assertion(&o.issuer)?,
                    proof: client.proof("POST", &s.token_endpoint)?,
                    code,
                    verifier,
                })
            })
            .collect::<Result<_, Error>>()?;
        let sign_us = sign_start.elapsed().as_secs_f64() * 1e6 / items.len().max(1) as f64;
        eprintln!(
            "drive: rep {rep}: signed {n} client assertions and {n} DPoP proofs, {sign_us:.0} µs per exchange (not timed)",
            n = items.len()
        );
        let first_ok = Arc::new(Mutex::new(None::<Value>));
        let (t, secs, cpu) = {
            let (s, first_ok, client_id) = (s.clone(), first_ok.clone(), client_id.clone());
            run_queue(&o, items, move |items, i| {
                let (s, first_ok, client_id) = (s.clone(), first_ok.clone(), client_id.clone());
                async move {
                    let v = s.exchange_dpop(&client_id, &items[i]).await?;
                    first_ok.lock().expect("first_ok").get_or_insert(v);
                    Ok(())
                }
            })
            .await
        };
        let mut line = t.report("token_code_dpop", rep, secs, cpu);
        // The binding, once per repetition (not timed): a DPoP token_type
        // alone would not show that the token is bound to the proof's key.
        let v = first_ok
            .lock()
            .expect("first_ok")
            .take()
            .ok_or_else(|| format!("no exchange succeeded: {}", line["first_error"]))?;
        let checked = check_binding(&s, &client, &v).await?;
        line["client_sign_us"] = json!(sign_us.round());
        line["bound_checked"] = json!(checked);
        println!("{line}");
    }
    Ok(())
}

async fn cmd_logins(s: Arc<Server>) -> Result<(), Error> {
    let o = s.o.clone();
    // A warm-up login, and a check that the flow works at all.
    s.login(&mut Jar::default()).await?;
    for rep in 1..=o.reps {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let cpu = CpuMark::now(&o);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..o.concurrency {
            let (s, tally) = (s.clone(), tally.clone());
            let secs = o.secs;
            tasks.push(tokio::spawn(async move {
                while start.elapsed().as_secs_f64() < secs {
                    let t0 = Instant::now();
                    let r = s.login(&mut Jar::default()).await.map(|_| ());
                    tally.lock().expect("tally").record(t0, r);
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let secs = start.elapsed().as_secs_f64();
        let cpu = cpu.since(&o);
        let t = std::mem::take(&mut *tally.lock().expect("tally"));
        println!("{}", t.report("login", rep, secs, cpu));
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first().cloned() else {
        eprintln!(
            "usage: idp-bench-drive tokens|codes|logins|dpop-codes|keygen ... (see the source)"
        );
        std::process::exit(2);
    };
    if cmd == "keygen" {
        if let Err(e) = cmd_keygen(&args[1..]) {
            eprintln!("drive: {e}");
            std::process::exit(1);
        }
        return;
    }
    let o = parse_opts(&args[1..]);
    let s = match Server::connect(o).await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("drive: {e}");
            std::process::exit(1);
        }
    };
    let r = match cmd.as_str() {
        "tokens" => cmd_tokens(s).await,
        "codes" => cmd_codes(s).await,
        "logins" => cmd_logins(s).await,
        "dpop-codes" => cmd_dpop_codes(s).await,
        other => Err(format!("unknown command {other}")),
    };
    if let Err(e) = r {
        eprintln!("drive: {e}");
        std::process::exit(1);
    }
}
