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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_command_logs_a_user_in_through_the_demo_portal() {
    let dir =
        TempDir(std::env::temp_dir().join(format!("idp-demo-{}", uuid::Uuid::new_v4().simple())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let (idp_port, rp_port) = (free_port(), free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_idp"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("IDP_")) {
        cmd.env_remove(k);
    }
    let child = cmd
        .current_dir(&dir.0)
        .env("IDP_LISTEN", format!("127.0.0.1:{idp_port}"))
        .env("IDP_PASSWORD__MEMORY_KIB", "4096")
        .env("IDP_PASSWORD__ITERATIONS", "1")
        .args(["demo", "--rp-port", &rp_port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run idp demo");
    let mut child = Killed(child);
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut password = None;
    let mut printed = String::new();
    while password.is_none() {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("idp demo printed no password:\n{printed}"));
        printed.push_str(&line);
        printed.push('\n');
        if let Some(p) = line.trim().strip_prefix("password:") {
            password = Some(p.trim().to_owned());
        }
    }
    let password = password.unwrap();
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
    drop(child);
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
