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

struct Server {
    http: reqwest::Client,
    o: Opts,
    origin: String,
    authorization_endpoint: String,
    token_endpoint: String,
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
            origin: u.origin().ascii_serialization(),
            http,
            o,
        })
    }

    fn authorize_url(&self, challenge: &str) -> String {
        let mut u = url::Url::parse(&self.authorization_endpoint).expect("authorization_endpoint");
        u.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.o.client_id)
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
        let res = self
            .http
            .post(&self.token_endpoint)
            .basic_auth(&self.o.client_id, Some(&self.o.client_secret))
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

    /// A full interactive login by a new browser, then the code exchange.
    async fn login(&self, jar: &mut Jar) -> Result<Value, Error> {
        let (verifier, challenge) = pkce();
        let code = self.browse(jar, self.authorize_url(&challenge)).await?;
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

async fn cmd_codes(s: Arc<Server>) -> Result<(), Error> {
    let o = s.o.clone();
    for rep in 1..=o.reps {
        // One real login gives the browser its single sign-on session.
        let mut jar = Jar::default();
        s.login(&mut jar).await?;
        // Codes minted through that session, `concurrency` requests at a time.
        let minted = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
        let mint_start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..o.concurrency {
            let (s, minted, jar) = (s.clone(), minted.clone(), jar.clone());
            let (secs, max) = (o.mint_secs, o.max);
            tasks.push(tokio::spawn(async move {
                let mut jar = jar;
                while mint_start.elapsed().as_secs_f64() < secs
                    && minted.lock().expect("minted").len() < max
                {
                    let (verifier, challenge) = pkce();
                    match s.browse(&mut jar, s.authorize_url(&challenge)).await {
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
        let mint_secs = mint_start.elapsed().as_secs_f64();
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
        eprintln!("usage: idp-bench-drive tokens|codes|logins --issuer URL ... (see the source)");
        std::process::exit(2);
    };
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
        other => Err(format!("unknown command {other}")),
    };
    if let Err(e) = r {
        eprintln!("drive: {e}");
        std::process::exit(1);
    }
}
