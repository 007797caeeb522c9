//! The README's run command: `idp demo` with no configuration at all serves
//! the provider and the demo relying party on loopback, creates the demo user
//! and prints how to log in; a browser completes the login through the demo
//! portal and sees the verified claims. With the repository's configuration,
//! the three example portals run their login flows, and the account and
//! organization journeys (recovery, organization creation validated with the
//! `idp org` commands, the account page) work from their login pages, with
//! the emails read from the demo's file outbox. Also: password hashes made
//! with old parameters are upgraded at login.

mod support;

use idp_core::domain::PasswordCredential;
use idp_core::password::{Argon2Settings, PasswordHasher};
use idp_core::secret::Secret;
use idp_mail::testing::{ParsedEmail, parse_email_file};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use support::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `idp demo` running in `dir` (no `IDP_*` variables inherited but `envs`),
/// with cheap password hashing; killed on drop.
struct Demo {
    _child: Killed,
    password: String,
    printed: String,
}

/// The built `idp` binary run in `dir` as the demo is: no `IDP_*` variables
/// inherited but `envs`, the provider on `idp_port`, cheap password hashing.
/// Other commands run this way use the demo's configuration and database.
fn idp_command(dir: &std::path::Path, idp_port: u16, envs: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_idp"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("IDP_")) {
        cmd.env_remove(k);
    }
    cmd.current_dir(dir)
        .env("IDP_LISTEN", format!("127.0.0.1:{idp_port}"))
        .env("IDP_PASSWORD__MEMORY_KIB", "4096")
        .env("IDP_PASSWORD__ITERATIONS", "1")
        .envs(envs.iter().copied());
    cmd
}

impl Demo {
    fn start(dir: &std::path::Path, idp_port: u16, rp_port: u16, envs: &[(&str, &str)]) -> Demo {
        let mut cmd = idp_command(dir, idp_port, envs);
        cmd.args(["demo", "--rp-port", &rp_port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = Killed(cmd.spawn().expect("run idp demo"));
        let stdout = child.0.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads to the end: a closed pipe would make the demo's next print
        // (or log line) fail, and a failed `println!` stops the demo.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut printed = String::new();
        loop {
            let line = rx
                .recv_timeout(std::time::Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("idp demo printed no password:\n{printed}"));
            printed.push_str(&line);
            printed.push('\n');
            if let Some(p) = line.trim().strip_prefix("password:") {
                return Demo {
                    _child: child,
                    password: p.trim().to_owned(),
                    printed,
                };
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_command_logs_a_user_in_through_the_demo_portal() {
    let dir =
        TempDir(std::env::temp_dir().join(format!("idp-demo-{}", uuid::Uuid::new_v4().simple())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let (idp_port, rp_port) = (free_port(), free_port());
    let demo = Demo::start(&dir.0, idp_port, rp_port, &[]);
    let (password, printed) = (demo.password.clone(), demo.printed.clone());
    assert!(printed.contains("demo@example.com"), "{printed}");
    assert!(
        printed.contains(&format!("http://127.0.0.1:{rp_port}/")),
        "{printed}"
    );
    assert!(
        dir.0.join("data").join("idp.db").exists(),
        "SQLite database in the data folder"
    );

    let rp = format!("http://127.0.0.1:{rp_port}");
    let issuer = format!("http://127.0.0.1:{idp_port}");
    let browser = Browser::new();
    let res = browser.get(&format!("{rp}/")).await;
    assert_eq!(res.status(), 200);
    assert!(
        res.text().await.unwrap().contains("href=\"/demo-portal/\""),
        "the index lists the demo portal"
    );
    let res = browser.get(&format!("{rp}/demo-portal/")).await;
    assert_eq!(res.status(), 200);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("href=\"/demo-portal/login\"")
    );
    let res = browser.get(&format!("{rp}/demo-portal/login")).await;
    let authorize = location(&res);
    assert!(
        authorize.starts_with(&format!("{issuer}/authorize?")),
        "{authorize}"
    );
    // Walk the provider's pages as a browser.
    let mut url = authorize;
    let mut page = String::new();
    for step in 0..6 {
        let res = browser.get(&url).await;
        if res.status().is_redirection() {
            let loc = location(&res);
            url = if loc.starts_with('/') {
                format!("{issuer}{loc}")
            } else {
                loc
            };
            if url.starts_with(&rp) {
                break;
            }
            continue;
        }
        let html = res.text().await.unwrap();
        let form = Form::parse(&html).unwrap_or_else(|| panic!("step {step}: no form in {html}"));
        let field = if form.fields.iter().any(|(n, _)| n == "identifier") {
            ("identifier", "demo@example.com")
        } else {
            ("password", password.as_str())
        };
        let action = format!("{issuer}{}", form.action);
        let mut values = form.fields.clone();
        for (n, v) in values.iter_mut() {
            if n == field.0 {
                *v = field.1.to_owned();
            }
        }
        let res = browser
            .http
            .post(&action)
            .form(&values)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 303, "step {step}");
        let loc = location(&res);
        url = if loc.starts_with('/') {
            format!("{issuer}{loc}")
        } else {
            loc
        };
        if url.starts_with(&rp) {
            break;
        }
        page = html;
    }
    assert!(
        url.starts_with(&format!("{rp}/demo-portal/callback?")),
        "ended at {url} after {page}"
    );
    let res = browser.get(&url).await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(
        html.contains("demo@example.com"),
        "the demo portal shows the verified claims: {html}"
    );
    assert!(html.contains("pwd"), "amr shown: {html}");
    drop(demo);
}

async fn password_hash_is_upgraded_at_login(app: &TestApp) {
    // Store the password with weaker parameters than configured.
    let weak = PasswordHasher::new(Argon2Settings {
        memory_kib: 1024,
        iterations: 1,
        parallelism: 1,
        max_concurrent: 1,
    })
    .unwrap();
    let phc = weak.hash(&Secret::new(PASSWORD)).await.unwrap();
    assert!(phc.contains("m=1024"));
    let creds = app.state.provider.ports.credentials.clone();
    creds
        .set_password(&PasswordCredential {
            user_id: app.user.id,
            phc: phc.clone(),
            updated_at: app.state.provider.clock.now(),
        })
        .await
        .unwrap();
    let (_, challenge) = pkce();
    let cb = Browser::new()
        .login(
            app,
            &authorize_url(app, "conf", Some(&challenge), &[]),
            "alice@example.com",
            PASSWORD,
        )
        .await;
    assert!(query_param(&cb, "code").is_some());
    let upgraded = creds.find_password(app.user.id).await.unwrap().unwrap().phc;
    assert_ne!(upgraded, phc);
    assert!(
        upgraded.starts_with("$argon2id$") && upgraded.contains("m=4096"),
        "rehashed with the configured parameters: {upgraded}"
    );
}

matrix!(password_hash_is_upgraded_at_login);

/// Copies the repository's `config/` into `dir`, pointing the example
/// portals' callbacks at `rp_port`, the demo's partner single sign-on at
/// `partner_port`, and `themes_dir` at the repository's `themes/` (the copy
/// is elsewhere, so `../themes` would miss it).
fn copy_repo_config(dir: &std::path::Path, rp_port: u16, partner_port: u16) {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    std::fs::create_dir_all(dir.join("config/clients")).unwrap();
    let themes = toml::Value::String(repo_themes_dir().to_str().unwrap().to_owned());
    let idp_toml = std::fs::read_to_string(src.join("idp.toml")).unwrap();
    assert!(
        idp_toml.contains("\nthemes_dir = \"../themes\"\n"),
        "{idp_toml}"
    );
    std::fs::write(
        dir.join("config/idp.toml"),
        idp_toml
            .replace(
                "\nthemes_dir = \"../themes\"\n",
                &format!("\nthemes_dir = {themes}\n"),
            )
            .replace(
                "\nissuer = \"http://127.0.0.1:8082\"\n",
                &format!("\nissuer = \"http://127.0.0.1:{partner_port}\"\n"),
            ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("config/upstreams")).unwrap();
    for entry in std::fs::read_dir(src.join("upstreams")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(
            &path,
            dir.join("config/upstreams").join(path.file_name().unwrap()),
        )
        .unwrap();
    }
    for entry in std::fs::read_dir(src.join("clients")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("127.0.0.1:8081", &format!("127.0.0.1:{rp_port}"));
        std::fs::write(
            dir.join("config/clients").join(path.file_name().unwrap()),
            text,
        )
        .unwrap();
    }
}

/// The emails of the demo's file outbox (`data/outbox/*.eml`), read as a
/// mail client reads them (Python's `email` package decodes the MIME parts
/// and their transfer encodings). Each email is taken once.
struct Outbox {
    dir: std::path::PathBuf,
    taken: std::sync::Mutex<HashSet<std::path::PathBuf>>,
    /// Complete emails already parsed, by file.
    parsed: std::sync::Mutex<HashMap<std::path::PathBuf, ParsedEmail>>,
}

impl Outbox {
    fn new(dir: std::path::PathBuf) -> Outbox {
        Outbox {
            dir,
            taken: Default::default(),
            parsed: Default::default(),
        }
    }

    /// The emails written so far and not taken, oldest first. A file still
    /// being written (a multipart message without its end) is left for later.
    fn untaken(&self) -> Vec<(std::path::PathBuf, ParsedEmail)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new(); // no email yet
        };
        let mut files: Vec<_> = entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        files.sort();
        let taken = self.taken.lock().unwrap();
        let mut parsed = self.parsed.lock().unwrap();
        let mut out = Vec::new();
        for f in files.into_iter().filter(|f| !taken.contains(f)) {
            if !parsed.contains_key(&f) {
                let mail = parse_email_file(&f);
                if !mail.defects.is_empty() || mail.text.is_none() || mail.html.is_none() {
                    continue;
                }
                parsed.insert(f.clone(), mail);
            }
            out.push((f.clone(), parsed[&f].clone()));
        }
        out
    }

    /// Waits (at most 30 s) for an email to `to` whose subject contains
    /// `subject`, not taken before; takes it.
    async fn take(&self, to: &str, subject: &str) -> ParsedEmail {
        let wait = async {
            loop {
                let found = self.untaken().into_iter().find(|(_, m)| {
                    m.header("To")
                        .is_some_and(|t| t.to_lowercase().contains(&to.to_lowercase()))
                        && m.header("Subject").is_some_and(|s| s.contains(subject))
                });
                if let Some((path, mail)) = found {
                    self.taken.lock().unwrap().insert(path);
                    return mail;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(30), wait)
            .await
            .unwrap_or_else(|_| {
                let left: Vec<String> = self
                    .untaken()
                    .iter()
                    .map(|(_, m)| format!("{:?} to {:?}", m.header("Subject"), m.header("To")))
                    .collect();
                panic!(
                    "no email {subject:?} to {to} in {} within 30 s; not taken: {left:?}",
                    self.dir.display()
                )
            })
    }

    /// The 6-digit sign-in code of the next sign-in code email to `to`.
    async fn sign_in_code(&self, to: &str) -> String {
        let mail = self.take(to, "Your sign-in code").await;
        let text = mail.text.unwrap_or_default();
        // The code stands alone on a line of the text part.
        text.lines()
            .map(str::trim)
            .find(|l| l.len() == 6 && l.chars().all(|c| c.is_ascii_digit()))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("a 6-digit code in the email: {text}"))
    }
}

/// The TOTP code of a base32 key now: the demo process runs on the real clock.
#[allow(clippy::disallowed_methods)]
fn totp_now(key: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    totp_rs::Builder::new()
        .with_secret(totp_rs::Secret::try_from_base32(key.replace(' ', "")).unwrap())
        .build()
        .unwrap()
        .generate(t)
        .to_string()
}

/// An absolute URL for a `Location` or `href` of the provider.
fn on(issuer: &str, loc: &str) -> String {
    if loc.starts_with('/') {
        format!("{issuer}{loc}")
    } else {
        loc.to_owned()
    }
}

/// Walks the provider's login pages from `url` as a browser until a
/// redirect leads to a URL starting with `until`, answering each step as
/// the user `email` with `password` (an emailed code from the outbox, a new
/// authenticator app, the recovery codes acknowledged). Returns the steps
/// seen and the URL it was sent to.
async fn walk_login(
    browser: &Browser,
    issuer: &str,
    url: String,
    until: &str,
    (email, password): (&str, &str),
    outbox: &Outbox,
) -> (Vec<String>, String) {
    let mut url = url;
    let mut seen = Vec::new();
    // A page answered directly to a POST (200), else fetched.
    let mut shown: Option<String> = None;
    for step in 0..12 {
        if url.starts_with(until) {
            return (seen, url);
        }
        let html = match shown.take() {
            Some(h) => h,
            None => {
                let res = browser.get(&url).await;
                if res.status().is_redirection() {
                    url = on(issuer, &location(&res));
                    continue;
                }
                assert_eq!(res.status(), 200, "step {step}: {url}");
                res.text().await.unwrap()
            }
        };
        let form = Form::parse(&html).unwrap_or_else(|| panic!("step {step}: no form in {html}"));
        let page = form.action.rsplit('/').next().unwrap().to_owned();
        let mut values = form.fields.clone();
        let set = |values: &mut Vec<(String, String)>, k: &str, v: &str| {
            for (n, val) in values.iter_mut() {
                if n == k {
                    *val = v.to_owned();
                }
            }
        };
        if let Some(key) = totp_key(&html) {
            set(&mut values, "code", &totp_now(&key));
            seen.push("totp_enroll".to_owned());
        } else if values.iter().any(|(n, _)| n == "acknowledge") {
            seen.push("recovery_codes".to_owned());
        } else {
            match page.as_str() {
                "identifier" => set(&mut values, "identifier", email),
                "password" => set(&mut values, "password", password),
                "email_code" => set(&mut values, "code", &outbox.sign_in_code(email).await),
                other => panic!("unexpected step {other}: {html}"),
            }
            seen.push(page.clone());
        }
        let res = browser
            .http
            .post(on(issuer, &form.action))
            .form(&values)
            .send()
            .await
            .unwrap();
        if res.status() == 200 {
            shown = Some(res.text().await.unwrap());
            continue;
        }
        assert_eq!(res.status(), 303, "step {step} ({page})");
        url = on(issuer, &location(&res));
    }
    panic!("the login did not reach {until}; last at {url} after {seen:?}")
}

/// The three example portals of `config/clients` run their own flows in the
/// demo, on their own themes: the marketplace asks an emailed code from a new browser, the
/// customer space an emailed code on every login, the cloud console enrolls
/// an authenticator app at the first login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_portals_run_their_flows_in_the_demo() {
    let dir =
        TempDir(std::env::temp_dir().join(format!("idp-demo-{}", uuid::Uuid::new_v4().simple())));
    let (idp_port, rp_port) = (free_port(), free_port());
    copy_repo_config(&dir.0, rp_port, free_port());
    let issuer_env = format!("http://localhost:{idp_port}");
    let demo = Demo::start(&dir.0, idp_port, rp_port, &[("IDP_ISSUER", &issuer_env)]);
    let (password, printed) = (demo.password.clone(), demo.printed.clone());
    for portal in ["marketplace", "customer-space", "cloud-console"] {
        assert!(
            printed.contains(&format!("/{portal}/")),
            "{portal} is served: {printed}"
        );
    }
    let rp = format!("http://127.0.0.1:{rp_port}");
    let issuer = format!("http://localhost:{idp_port}");
    let outbox = Outbox::new(dir.0.join("data/outbox"));

    // Device sign-in for the console's command-line tool: the two curl
    // commands, and a device authorization started, with its QR code and
    // the poll of its device code, which answers as a device's would.
    assert!(
        printed.contains(&format!(
            "curl -s -d client_id=cloud-cli -d 'scope=openid profile offline_access' {issuer}/device_authorization"
        )),
        "{printed}"
    );
    assert!(
        printed.contains('▀') || printed.contains('▄'),
        "a QR code: {printed}"
    );
    let poll = printed
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("curl") && l.contains("device_code=") && !l.contains("DEVICE_CODE"))
        .unwrap_or_else(|| panic!("a poll command: {printed}"));
    let device_code = poll
        .split("device_code=")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap();
    let res = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{idp_port}/token"))
        .form(&[
            ("client_id", "cloud-cli"),
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "authorization_pending");

    for (portal, brand) in [
        ("marketplace", "Orchardly Market"),
        ("customer-space", "Lanternhouse"),
        ("cloud-console", "Nimbalt Console"),
    ] {
        // Its first login page, in another browser: the portal's theme.
        let other = Browser::new();
        let mut url = location(&other.get(&format!("{rp}/{portal}/login")).await);
        let page = loop {
            let res = other.get(&url).await;
            if !res.status().is_redirection() {
                break res.text().await.unwrap();
            }
            url = on(&issuer, &location(&res));
        };
        assert!(
            page.contains(&format!(r#"src="/assets/{portal}/logo.svg""#))
                && page.contains(&format!(r#"<p class="masthead__name">{brand}</p>"#)),
            "{portal}: its theme from the repository's themes/: {page}"
        );

        let browser = Browser::new();
        let res = browser.get(&format!("{rp}/{portal}/login")).await;
        let (seen, url) = walk_login(
            &browser,
            &issuer,
            location(&res),
            &rp,
            ("demo@example.com", &password),
            &outbox,
        )
        .await;
        let expected: &[&str] = match portal {
            "marketplace" => &["identifier", "password", "email_code"],
            "customer-space" => &["identifier", "password", "email_code"],
            _ => &["identifier", "password", "totp_enroll", "recovery_codes"],
        };
        assert_eq!(seen, expected, "{portal}'s flow");
        assert!(
            url.starts_with(&format!("{rp}/{portal}/callback?")),
            "{portal} ended at {url}"
        );
        let html = browser.get(&url).await.text().await.unwrap();
        assert!(
            html.contains("demo@example.com"),
            "{portal}: the portal shows the verified claims"
        );
        // An emailed code is not a second factor (NIST SP 800-63B
        // §5.1.3.1): `email_otp`, without `mfa`; an authenticator app is.
        if portal == "cloud-console" {
            assert!(html.contains("mfa"), "{portal}: two factors in amr: {html}");
        } else {
            assert!(
                html.contains("email_otp"),
                "{portal}: the emailed code in amr: {html}"
            );
            assert!(!html.contains("mfa"), "{portal}: one factor only: {html}");
        }
    }
    drop(demo);
}

/// Single logout in the demo: signed in at the marketplace and then the
/// customer space (single sign-on), a sign-out at the marketplace reaches
/// the customer space through its back-channel logout endpoint (a logout
/// token the portal verifies against the provider's keys): its page shows
/// signed out on the next load, within a few delivery passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_out_at_one_demo_portal_signs_the_others_out() {
    let dir =
        TempDir(std::env::temp_dir().join(format!("idp-demo-{}", uuid::Uuid::new_v4().simple())));
    let (idp_port, rp_port) = (free_port(), free_port());
    copy_repo_config(&dir.0, rp_port, free_port());
    let issuer_env = format!("http://localhost:{idp_port}");
    let demo = Demo::start(&dir.0, idp_port, rp_port, &[("IDP_ISSUER", &issuer_env)]);
    let rp = format!("http://127.0.0.1:{rp_port}");
    let issuer = format!("http://localhost:{idp_port}");
    let outbox = Outbox::new(dir.0.join("data/outbox"));
    let browser = Browser::new();
    let signed_in = |html: &str| html.contains(r#"<table class="claims">"#);
    for portal in ["marketplace", "customer-space"] {
        let res = browser.get(&format!("{rp}/{portal}/login")).await;
        let (_, url) = walk_login(
            &browser,
            &issuer,
            location(&res),
            &rp,
            ("demo@example.com", &demo.password),
            &outbox,
        )
        .await;
        assert!(
            url.starts_with(&format!("{rp}/{portal}/callback?")),
            "{url}"
        );
        assert!(signed_in(&page(&browser, &url).await), "{portal}");
        // The portal keeps its session: its page shows the claims on reload.
        assert!(
            signed_in(&page(&browser, &format!("{rp}/{portal}/")).await),
            "{portal} keeps its session"
        );
    }

    // Sign out at the marketplace: its own session, then the provider's.
    let res = browser.get(&format!("{rp}/marketplace/logout")).await;
    assert_eq!(res.status(), 303);
    let end_session = location(&res);
    assert!(
        end_session.starts_with(&format!("{issuer}/logout?id_token_hint=")),
        "{end_session}"
    );
    let res = browser.get(&end_session).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), format!("{rp}/marketplace/"));
    assert!(!signed_in(
        &page(&browser, &format!("{rp}/marketplace/")).await
    ));

    // The customer space heard of it (the delivery worker passes every 5 s).
    let mut signed_out = false;
    for _ in 0..120 {
        if !signed_in(&page(&browser, &format!("{rp}/customer-space/")).await) {
            signed_out = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(signed_out, "the customer space shows signed out on reload");
    // A forged logout token is refused and drops nothing.
    let res = reqwest::Client::new()
        .post(format!("{rp}/customer-space/backchannel-logout"))
        .form(&[("logout_token", "eyJhbGciOiJub25lIn0.e30.")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    drop(demo);
}

/// The demo's partner single sign-on: "Continue with Partner SSO" on the
/// customer space, the partner's own sign-in page (another instance of
/// this provider), back with a new account made just in time, then the
/// customer space's emailed code; the portal sees `fed` in `amr`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_signs_in_through_its_partner_sso() {
    let dir =
        TempDir(std::env::temp_dir().join(format!("idp-demo-{}", uuid::Uuid::new_v4().simple())));
    let (idp_port, rp_port, partner_port) = (free_port(), free_port(), free_port());
    copy_repo_config(&dir.0, rp_port, partner_port);
    let issuer = format!("http://localhost:{idp_port}");
    let demo = Demo::start(&dir.0, idp_port, rp_port, &[("IDP_ISSUER", &issuer)]);
    let partner = format!("http://127.0.0.1:{partner_port}");
    assert!(
        demo.printed
            .contains(&format!("Upstream single sign-on: {partner}")),
        "{}",
        demo.printed
    );
    let sam_password = demo
        .printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("sam@partner.example"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the partner account's password: {}", demo.printed))
        .to_owned();
    let rp = format!("http://127.0.0.1:{rp_port}");
    let outbox = Outbox::new(dir.0.join("data/outbox"));
    let partner_outbox = Outbox::new(dir.0.join("data/partner-sso/outbox"));
    let browser = Browser::new();
    let login = provider_login_page(&browser, &rp, &issuer, "customer-space").await;
    assert!(login.contains("Continue with Partner SSO"), "{login}");
    let form = Form::with_action(&login, "/federate").expect("the continue-with form");
    let res = browser
        .http
        .post(on(&issuer, &form.action))
        .form(&form.fields)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let at_partner = location(&res);
    assert!(
        at_partner.starts_with(&format!("{partner}/authorize?")),
        "{at_partner}"
    );
    let callback = format!("{issuer}/login/upstream/partner-sso/callback");
    let (seen, url) = walk_login(
        &browser,
        &partner,
        at_partner,
        &callback,
        ("sam@partner.example", &sam_password),
        &partner_outbox,
    )
    .await;
    assert_eq!(
        seen,
        ["identifier", "password"],
        "the partner's own sign-in"
    );
    let (seen, url) = walk_login(
        &browser,
        &issuer,
        url,
        &format!("{rp}/customer-space/callback?"),
        ("sam@partner.example", ""),
        &outbox,
    )
    .await;
    assert_eq!(seen, ["email_code"], "then the customer space's own code");
    let html = page(&browser, &url).await;
    assert!(html.contains("sam@partner.example"), "{html}");
    assert!(
        html.contains("fed"),
        "amr names the federated login: {html}"
    );
    drop(demo);
}

/// The FAPI 2.0-style example portal (config/clients/partner-api.toml, a
/// `private_key_jwt` client with PAR and DPoP-bound tokens): the demo pushes
/// its authorization request (the browser is sent to `/authorize` with only
/// `client_id` and `request_uri`), the demo user signs in with a second
/// factor, and the portal shows a DPoP-bound access token, bound to the
/// demo's own DPoP key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fapi_portal_pushes_its_request_and_gets_a_dpop_bound_token() {
    let dir =
        TempDir(std::env::temp_dir().join(format!("idp-demo-{}", uuid::Uuid::new_v4().simple())));
    let (idp_port, rp_port) = (free_port(), free_port());
    copy_repo_config(&dir.0, rp_port, free_port());
    let issuer = format!("http://localhost:{idp_port}");
    let demo = Demo::start(&dir.0, idp_port, rp_port, &[("IDP_ISSUER", &issuer)]);
    let rp = format!("http://127.0.0.1:{rp_port}");
    assert!(
        demo.printed.contains(&format!("{rp}/partner-api/")),
        "the FAPI portal is served: {}",
        demo.printed
    );
    let outbox = Outbox::new(dir.0.join("data/outbox"));

    let browser = Browser::new();
    let res = browser.get(&format!("{rp}/partner-api/login")).await;
    assert_eq!(res.status(), 303);
    let authorize = location(&res);
    let url = url::Url::parse(&authorize).unwrap();
    assert_eq!(
        url.as_str().split('?').next(),
        Some(format!("{issuer}/authorize").as_str())
    );
    let params: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    assert_eq!(
        params.len(),
        2,
        "only client_id and request_uri: {authorize}"
    );
    assert_eq!(
        query_param(&authorize, "client_id").as_deref(),
        Some("partner-api")
    );
    assert!(
        query_param(&authorize, "request_uri")
            .is_some_and(|u| u.starts_with("urn:ietf:params:oauth:request_uri:")),
        "a pushed request's reference: {authorize}"
    );

    let (seen, url) = walk_login(
        &browser,
        &issuer,
        authorize,
        &rp,
        ("demo@example.com", &demo.password),
        &outbox,
    )
    .await;
    assert_eq!(
        seen,
        ["identifier", "password", "totp_enroll", "recovery_codes"],
        "password and a second factor"
    );
    assert!(
        url.starts_with(&format!("{rp}/partner-api/callback?")),
        "ended at {url}"
    );
    let html = page(&browser, &url).await;
    assert!(html.contains("demo@example.com"), "signed in: {html}");
    let row = |name: &str| {
        let start = html
            .find(&format!("<code>{name}</code>"))
            .unwrap_or_else(|| panic!("no row {name} in {html}"));
        let cell = &html[start..];
        let value = &cell[cell.find("<td>").unwrap() + 4..cell.find("</td>").unwrap()];
        value.to_owned()
    };
    assert_eq!(row("acr"), "2");
    assert!(row("amr").split(' ').any(|m| m == "mfa"), "{html}");
    assert_eq!(
        row("client authentication"),
        "private_key_jwt (an ES256 client assertion)"
    );
    assert_eq!(row("authorization request"), "pushed (PAR), PKCE S256");
    assert_eq!(row("token_type"), "DPoP");
    let jkt = row("access token cnf.jkt");
    assert!(
        jkt.ends_with(" (matches the DPoP key of this portal)"),
        "bound to the demo's DPoP key (the demo refuses any other): {jkt}"
    );
    assert_eq!(
        jkt.split(' ').next().unwrap().len(),
        43,
        "a SHA-256 thumbprint, base64url: {jkt}"
    );
    drop(demo);
}

// ------------------------------------------------- the account journeys

/// A 200 page's HTML.
async fn page(browser: &Browser, url: &str) -> String {
    let res = browser.get(url).await;
    assert_eq!(res.status(), 200, "{url}");
    res.text().await.unwrap()
}

/// The `href` of the link whose text is `text`.
fn href_of(html: &str, text: &str) -> String {
    let end = html
        .find(&format!(">{text}</a>"))
        .unwrap_or_else(|| panic!("no link {text:?} in {html}"));
    let start = html[..end].rfind("href=\"").expect("the link's href") + 6;
    html[start..start + html[start..].find('"').unwrap()].replace("&amp;", "&")
}

/// Posts the page's form as a browser does: hidden fields kept, `fields`
/// set by name (one value per name, as for a radio group).
async fn post_form(
    browser: &Browser,
    issuer: &str,
    html: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let form = Form::parse(html).expect("a form on the page");
    for (k, _) in fields {
        assert!(
            form.fields.iter().any(|(n, _)| n == k),
            "the form has no field {k}: {:?}",
            form.fields
        );
    }
    let mut values: Vec<(String, String)> = Vec::new();
    for (n, v) in form.fields {
        match fields.iter().find(|(k, _)| *k == n) {
            Some((_, typed)) if !values.iter().any(|(m, _)| *m == n) => {
                values.push((n, (*typed).to_owned()));
            }
            Some(_) => {}
            None => values.push((n, v)),
        }
    }
    browser
        .http
        .post(on(issuer, &form.action))
        .header("origin", issuer)
        .form(&values)
        .send()
        .await
        .expect("POST")
}

/// From a demo portal's home page, its sign-in link, to the provider's
/// identifier page; returns that page.
async fn provider_login_page(browser: &Browser, rp: &str, issuer: &str, portal: &str) -> String {
    let home = page(browser, &format!("{rp}/{portal}/")).await;
    let sign_in = href_of(&home, "Sign in with the identity provider");
    assert_eq!(sign_in, format!("/{portal}/login"));
    let res = browser.get(&format!("{rp}{sign_in}")).await;
    let mut url = location(&res);
    assert!(url.starts_with(&format!("{issuer}/authorize?")), "{url}");
    for _ in 0..5 {
        let res = browser.get(&url).await;
        if res.status().is_redirection() {
            url = on(issuer, &location(&res));
            continue;
        }
        assert_eq!(res.status(), 200, "{url}");
        let html = res.text().await.unwrap();
        assert!(html.contains(r#"name="identifier""#), "{html}");
        return html;
    }
    panic!("no identifier page from {portal}'s sign-in");
}

/// `idp <args>` as the operator runs it next to the demo: same folder,
/// configuration and environment, so the same SQLite database and outbox.
fn idp_next_to_demo(
    dir: &std::path::Path,
    idp_port: u16,
    envs: &[(&str, &str)],
    args: &[&str],
) -> String {
    let out = idp_command(dir, idp_port, envs)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run the idp binary");
    assert!(
        out.status.success(),
        "`idp {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const NEW_PASSWORD: &str = "Violet-Harbor-73-Drifts";

/// Every journey of accounts and organizations, from the login pages of the
/// three example portals of the demo, with the emails read from its file
/// outbox: "Forgot password?" from the marketplace (reset link, new
/// password, sign-in with it), "Forgot identifier?" from the customer space,
/// "Create an organization" from the cloud console for a new account,
/// validated by the operator with the `idp org` commands on the demo's
/// database, and the account page reached from the demo's index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_journeys_run_in_the_demo() {
    let dir =
        TempDir(std::env::temp_dir().join(format!("idp-demo-{}", uuid::Uuid::new_v4().simple())));
    let (idp_port, rp_port) = (free_port(), free_port());
    copy_repo_config(&dir.0, rp_port, free_port());
    let issuer = format!("http://localhost:{idp_port}");
    let envs = [("IDP_ISSUER", issuer.as_str())];
    let demo = Demo::start(&dir.0, idp_port, rp_port, &envs);
    let customer_id = demo
        .printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("customer identifier:"))
        .unwrap_or_else(|| panic!("the demo user's customer identifier: {}", demo.printed))
        .trim()
        .to_owned();
    let rp = format!("http://127.0.0.1:{rp_port}");
    let outbox = Outbox::new(dir.0.join("data/outbox"));
    let demo_user = "demo@example.com";

    // "Forgot password?" from the marketplace's login page.
    let browser = Browser::new();
    let login = provider_login_page(&browser, &rp, &issuer, "marketplace").await;
    let href = href_of(&login, "Forgot password?");
    assert_eq!(href, "/forgot-password?client_id=marketplace");
    let form = page(&browser, &on(&issuer, &href)).await;
    assert!(form.contains("Reset your password"), "{form}");
    let res = post_form(
        &browser,
        &issuer,
        &form,
        &[
            ("identifier", demo_user),
            ("altcha", &challenge_solution(&form)),
        ],
    )
    .await;
    assert_eq!(res.status(), 200);
    let sent = res.text().await.unwrap();
    assert!(sent.contains("Check your email"), "{sent}");
    let mail = outbox
        .take(demo_user, "Reset your password for Cloud Marketplace")
        .await;
    let text = mail.text.as_deref().unwrap();
    let link = text
        .split_whitespace()
        .find(|w| w.starts_with(&format!("{issuer}/reset-password?token=")))
        .unwrap_or_else(|| panic!("a reset link on the provider's address in {text}"))
        .to_owned();
    assert!(link.ends_with("&client_id=marketplace"), "{link}");
    let html_part = mail.html.as_deref().unwrap();
    assert!(
        html_part.contains(&format!(r#"href="{}""#, link.replace('&', "&amp;"))),
        "the HTML part links to the same page: {html_part}"
    );
    let form = page(&browser, &link).await;
    assert!(form.contains("Choose a new password"), "{form}");
    assert!(form.contains(r#"value="demo@example.com""#), "{form}");
    let res = post_form(
        &browser,
        &issuer,
        &form,
        &[("password", NEW_PASSWORD), ("confirmation", NEW_PASSWORD)],
    )
    .await;
    assert_eq!(res.status(), 200);
    let done = res.text().await.unwrap();
    assert!(done.contains("Your password is changed"), "{done}");
    let back = href_of(&done, "Go to Cloud Marketplace and sign in");
    assert!(
        back.starts_with(&format!("{rp}/")),
        "back to the portal: {back}"
    );
    outbox
        .take(demo_user, "Your Cloud Marketplace password was changed")
        .await;
    // Signing in to the marketplace with the new password (a new browser
    // for it: an emailed code).
    let res = browser.get(&format!("{rp}/marketplace/login")).await;
    let (seen, url) = walk_login(
        &browser,
        &issuer,
        location(&res),
        &rp,
        (demo_user, NEW_PASSWORD),
        &outbox,
    )
    .await;
    assert_eq!(seen, ["identifier", "password", "email_code"]);
    assert!(
        url.starts_with(&format!("{rp}/marketplace/callback?")),
        "{url}"
    );
    let claims = page(&browser, &url).await;
    assert!(claims.contains(demo_user), "signed in: {claims}");
    assert!(claims.contains("pwd"), "{claims}");

    // "Forgot identifier?" from the customer space's login page.
    let browser = Browser::new();
    let login = provider_login_page(&browser, &rp, &issuer, "customer-space").await;
    let href = href_of(&login, "Forgot your customer identifier?");
    assert_eq!(href, "/forgot-identifier?client_id=customer-space");
    let form = page(&browser, &on(&issuer, &href)).await;
    assert!(form.contains("Find your customer identifier"), "{form}");
    let res = post_form(
        &browser,
        &issuer,
        &form,
        &[("email", demo_user), ("altcha", &challenge_solution(&form))],
    )
    .await;
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("Check your email"));
    let mail = outbox
        .take(demo_user, "Your customer identifier for Customer Space")
        .await;
    let text = mail.text.as_deref().unwrap();
    assert!(
        text.lines().any(|l| l.trim() == customer_id),
        "the customer identifier {customer_id} in {text}"
    );

    // "Create an organization" from the cloud console's login page, for a
    // new account, abroad.
    let admin = "grace@widgets.example";
    let browser = Browser::new();
    let login = provider_login_page(&browser, &rp, &issuer, "cloud-console").await;
    let href = href_of(&login, "Create an organization");
    assert_eq!(href, "/organizations/new?client_id=cloud-console");
    let form = page(&browser, &on(&issuer, &href)).await;
    let res = post_form(
        &browser,
        &issuer,
        &form,
        &[
            ("account", "new"),
            ("email", admin),
            ("name", "Grace Widget"),
            ("password", NEW_PASSWORD),
            ("domicile", "abroad"),
            ("company_name", "Widgets Demo GmbH"),
            ("country", "de"),
            ("altcha", &challenge_solution(&form)),
        ],
    )
    .await;
    assert_eq!(res.status(), 200);
    let confirm = res.text().await.unwrap();
    assert!(confirm.contains("Confirm your organization"), "{confirm}");
    assert!(confirm.contains("Widgets Demo GmbH"), "{confirm}");
    assert!(confirm.contains(admin), "{confirm}");
    let res = post_form(&browser, &issuer, &confirm, &[]).await;
    assert_eq!(res.status(), 200);
    let created = res.text().await.unwrap();
    assert!(
        created.contains("The organization Widgets Demo GmbH is created."),
        "{created}"
    );
    assert!(
        created.contains("It is pending validation by our team."),
        "{created}"
    );
    assert!(
        created.contains(&format!("We sent a confirmation to {admin}.")),
        "{created}"
    );
    let mail = outbox
        .take(
            admin,
            "Your organization Widgets Demo GmbH is pending validation",
        )
        .await;
    let text = mail.text.as_deref().unwrap();
    assert!(
        text.contains("created on Cloud Console with you as its administrator"),
        "{text}"
    );

    // The operator lists the pending organizations and validates it, with
    // the demo's configuration, on its database.
    let list = idp_next_to_demo(
        &dir.0,
        idp_port,
        &envs,
        &["org", "list", "--status", "pending"],
    );
    let row = list
        .lines()
        .find(|l| l.ends_with("Widgets Demo GmbH"))
        .unwrap_or_else(|| panic!("the organization is listed as pending: {list}"));
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(columns[1..4], ["pending", "DE", "-"], "{row}");
    let id = columns[0].to_owned();
    let out = idp_next_to_demo(&dir.0, idp_port, &envs, &["org", "validate", &id]);
    assert!(
        out.contains(&format!("organization {id} (Widgets Demo GmbH) validated")),
        "{out}"
    );
    let mail = outbox
        .take(admin, "Your organization Widgets Demo GmbH is validated")
        .await;
    assert!(
        mail.text
            .as_deref()
            .unwrap()
            .contains("the organization Widgets Demo GmbH is now validated"),
        "{:?}",
        mail.text
    );
    let list = idp_next_to_demo(
        &dir.0,
        idp_port,
        &envs,
        &["org", "list", "--status", "pending"],
    );
    assert!(!list.contains(&id), "no longer pending: {list}");
    let list = idp_next_to_demo(
        &dir.0,
        idp_port,
        &envs,
        &["org", "list", "--status", "validated"],
    );
    assert!(list.contains(&id), "validated: {list}");

    // The account page, from the demo's index, signed in through
    // /account/login.
    let browser = Browser::new();
    let index = page(&browser, &format!("{rp}/")).await;
    let account = href_of(&index, "Account settings");
    assert_eq!(account, format!("{issuer}/account"));
    let res = browser.get(&account).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/account/login");
    let res = browser.get(&format!("{issuer}/account/login")).await;
    assert_eq!(res.status(), 303);
    let authorize = on(&issuer, &location(&res));
    assert_eq!(
        query_param(&authorize, "client_id").as_deref(),
        Some("account")
    );
    let (seen, url) = walk_login(
        &browser,
        &issuer,
        authorize,
        &format!("{issuer}/account/callback?"),
        (demo_user, NEW_PASSWORD),
        &outbox,
    )
    .await;
    assert_eq!(seen, ["identifier", "password"]);
    let res = browser.get(&url).await;
    assert_eq!(res.status(), 303, "the callback signs in");
    assert_eq!(location(&res), "/account");
    let html = page(&browser, &account).await;
    assert!(html.contains("Your account"), "{html}");
    assert!(html.contains(demo_user), "{html}");
    assert!(html.contains(&customer_id), "{html}");
    assert!(
        html.contains(r#"<h2 id="protection-title">Two-step verification</h2>"#),
        "the protections section: {html}"
    );
    assert!(
        html.contains("Your account has no second step"),
        "the demo user has no second factor: {html}"
    );
    assert!(html.contains(r#"href="/account/devices""#), "{html}");
    drop(demo);
}
