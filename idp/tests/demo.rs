//! The README's run command: `idp demo` with no configuration at all serves
//! the provider and the demo relying party on loopback, creates the demo user
//! and prints how to log in; a browser completes the login through the demo
//! portal and sees the verified claims. Also: password hashes made with old
//! parameters are upgraded at login.

mod support;

use idp_core::domain::PasswordCredential;
use idp_core::password::{Argon2Settings, PasswordHasher};
use idp_core::secret::Secret;
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

impl Demo {
    fn start(dir: &std::path::Path, idp_port: u16, rp_port: u16, envs: &[(&str, &str)]) -> Demo {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_idp"));
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("IDP_")) {
            cmd.env_remove(k);
        }
        cmd.current_dir(dir)
            .env("IDP_LISTEN", format!("127.0.0.1:{idp_port}"))
            .env("IDP_PASSWORD__MEMORY_KIB", "4096")
            .env("IDP_PASSWORD__ITERATIONS", "1")
            .envs(envs.iter().copied())
            .args(["demo", "--rp-port", &rp_port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = Killed(cmd.spawn().expect("run idp demo"));
        let stdout = child.0.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
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
/// portals' callbacks at `rp_port`.
fn copy_repo_config(dir: &std::path::Path, rp_port: u16) {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    std::fs::create_dir_all(dir.join("config/clients")).unwrap();
    std::fs::copy(src.join("idp.toml"), dir.join("config/idp.toml")).unwrap();
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

/// The newest 6-digit code in the demo's email outbox.
fn code_from_outbox(outbox: &std::path::Path) -> String {
    let mut files: Vec<_> = std::fs::read_dir(outbox)
        .unwrap_or_else(|e| panic!("{}: {e}", outbox.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let text = std::fs::read_to_string(files.last().expect("an email in the outbox")).unwrap();
    // The code stands alone on a line of the text part.
    text.lines()
        .map(str::trim)
        .find(|l| l.len() == 6 && l.chars().all(|c| c.is_ascii_digit()))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("a 6-digit code in the email: {text}"))
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

/// The three example portals of `config/clients` run their own flows in the
/// demo: the marketplace asks an emailed code from a new browser, the
/// customer space an emailed code on every login, the cloud console enrolls
/// an authenticator app at the first login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_portals_run_their_flows_in_the_demo() {
    let dir =
        TempDir(std::env::temp_dir().join(format!("idp-demo-{}", uuid::Uuid::new_v4().simple())));
    let (idp_port, rp_port) = (free_port(), free_port());
    copy_repo_config(&dir.0, rp_port);
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
    let outbox = dir.0.join("data/outbox");

    for portal in ["marketplace", "customer-space", "cloud-console"] {
        let browser = Browser::new();
        let res = browser.get(&format!("{rp}/{portal}/login")).await;
        let mut url = location(&res);
        let mut seen = Vec::new();
        // A page answered directly to a POST (200), else fetched.
        let mut shown: Option<String> = None;
        for step in 0..12 {
            let html = match shown.take() {
                Some(h) => h,
                None => {
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
                    assert_eq!(res.status(), 200, "{portal} step {step}");
                    res.text().await.unwrap()
                }
            };
            let form = Form::parse(&html)
                .unwrap_or_else(|| panic!("{portal} step {step}: no form in {html}"));
            let page = form.action.rsplit('/').next().unwrap().to_owned();
            let mut values = form.fields.clone();
            let set = |values: &mut Vec<(String, String)>, k: &str, v: &str| {
                for (n, val) in values.iter_mut() {
                    if n == k {
                        *val = v.to_owned();
                    }
                }
            };
            if html.contains("id=\"totp-key\"") {
                let key = html
                    .split("id=\"totp-key\">")
                    .nth(1)
                    .unwrap()
                    .split('<')
                    .next()
                    .unwrap()
                    .to_owned();
                set(&mut values, "code", &totp_now(&key));
                seen.push("totp_enroll".to_owned());
            } else if values.iter().any(|(n, _)| n == "acknowledge") {
                seen.push("recovery_codes".to_owned());
            } else {
                match page.as_str() {
                    "identifier" => set(&mut values, "identifier", "demo@example.com"),
                    "password" => set(&mut values, "password", &password),
                    "email_code" => set(&mut values, "code", &code_from_outbox(&outbox)),
                    other => panic!("{portal}: unexpected step {other}: {html}"),
                }
                seen.push(page.clone());
            }
            let res = browser
                .http
                .post(format!("{issuer}{}", form.action))
                .form(&values)
                .send()
                .await
                .unwrap();
            if res.status() == 200 {
                shown = Some(res.text().await.unwrap());
                continue;
            }
            assert_eq!(res.status(), 303, "{portal} step {step} ({page})");
            let loc = location(&res);
            url = if loc.starts_with('/') {
                format!("{issuer}{loc}")
            } else {
                loc
            };
            if url.starts_with(&rp) {
                break;
            }
        }
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
        assert!(html.contains("mfa"), "{portal}: two factors in amr: {html}");
    }
    drop(demo);
}
