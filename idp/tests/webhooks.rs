//! Outbound provisioning by webhooks, against a receiver started here (axum
//! on a loopback port) that is down for the first attempts, then up: every
//! event arrives once by its id, signatures verify (HMAC computed here), a
//! provider restart in between loses nothing, failures back off by the
//! injected clock and are given up in the end, the operator sees it all in
//! the admin API, and bad webhook configuration names its file and field.

mod support;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use idp_core::accounts::orgs::{MemberManager, OrgAction, PlatformOperator};
use idp_core::clock::Clock;
use idp_core::domain::RequestMeta;
use idp_core::domain::{Email, Membership, OrgId, OrgStatus, Organization, Role};
use idp_core::webhooks::WebhookEndpoint;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use support::{
    AppOptions, Backend, SharedDatabase, TempDir, TestApp, client_with_flows, spawn_app_adjusted,
    spawn_app_on, token_request, user_with_password,
};

/// The signing secret the test platform's file points to (plain text: its
/// bytes are the key).
const HOOK_SECRET: &str = "test-webhook-secret-0123456789-abcdefghijkl";
/// A `platform_admin` client, for the admin API.
const OPERATOR: &str = "operator";
const FLOW: &str = r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password"]}]"#;

// ------------------------------------------------------------- the receiver

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
    /// The status it answered.
    status: u16,
}

/// A platform's webhook receiver: answers `status` (503 while "down"),
/// records every request, and processes each `webhook-id` once.
struct Receiver {
    status: AtomicU16,
    log: Mutex<Vec<Received>>,
    /// Events processed (first accepted request of each id), in order.
    processed: Mutex<Vec<Value>>,
}

impl Receiver {
    fn set_status(&self, s: u16) {
        self.status.store(s, Ordering::SeqCst);
    }

    fn log(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    fn processed(&self) -> Vec<Value> {
        self.processed.lock().unwrap().clone()
    }

    /// How many 2xx answers each id got.
    fn accepted_per_id(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for r in self.log().iter().filter(|r| (200..300).contains(&r.status)) {
            *m.entry(r.id.clone()).or_insert(0) += 1;
        }
        m
    }
}

async fn hook(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: String) -> StatusCode {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let status = r.status.load(Ordering::SeqCst);
    let id = h("webhook-id");
    if (200..300).contains(&status) {
        let seen = r.log().iter().any(|x| x.id == id && x.status < 300);
        if !seen {
            r.processed
                .lock()
                .unwrap()
                .push(serde_json::from_str(&body).expect("a JSON body"));
        }
    }
    r.log.lock().unwrap().push(Received {
        id,
        timestamp: h("webhook-timestamp"),
        signature: h("webhook-signature"),
        body,
        status,
    });
    StatusCode::from_u16(status).unwrap()
}

/// Starts a receiver answering `status`; returns it and its URL.
async fn spawn_receiver(status: u16) -> (Arc<Receiver>, String) {
    let r = Arc::new(Receiver {
        status: AtomicU16::new(status),
        log: Mutex::new(Vec::new()),
        processed: Mutex::new(Vec::new()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/idp", listener.local_addr().unwrap());
    let router = axum::Router::new()
        .route("/hooks/idp", axum::routing::post(hook))
        .with_state(r.clone());
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    (r, url)
}

/// Whether `r` carries a valid Standard Webhooks signature under `secret`
/// (computed here, independently of the provider's code).
fn signature_verifies(secret: &[u8], r: &Received) -> bool {
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    m.update(format!("{}.{}.{}", r.id, r.timestamp, r.body).as_bytes());
    let expected = format!("v1,{}", STANDARD.encode(m.finalize().into_bytes()));
    r.signature.split(' ').any(|s| s == expected)
}

// --------------------------------------------------------------- the setup

/// A folder with one client file (`platform.toml`) whose webhooks are
/// `hooks` (TOML of `[[webhooks]]` entries), and the secret file they may
/// point to (`hook.secret`).
fn client_folder(hooks: &str) -> TempDir {
    let dir =
        TempDir(std::env::temp_dir().join(format!("idp-hooks-{}", uuid::Uuid::new_v4().simple())));
    std::fs::create_dir_all(&dir.0).unwrap();
    std::fs::write(dir.0.join("hook.secret"), format!("{HOOK_SECRET}\n")).unwrap();
    std::fs::write(
        dir.0.join("platform.toml"),
        format!(
            "client_id = \"platform\"\nname = \"Platform\"\ntype = \"public\"\nredirect_uris = [\"https://platform.example/cb\"]\n\n{hooks}"
        ),
    )
    .unwrap();
    dir
}

/// The platform's endpoints, read from its client file as the server does.
fn endpoints(url: &str, events: &[&str]) -> Vec<WebhookEndpoint> {
    let events: Vec<String> = events.iter().map(|e| format!("{e:?}")).collect();
    let dir = client_folder(&format!(
        "[[webhooks]]\nurl = \"{url}\"\nsecret_file = \"hook.secret\"\nevents = [{}]\n",
        events.join(", ")
    ));
    let loaded = idp::config::load_webhooks(Some(&dir.0)).expect("valid webhooks");
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].url, url);
    assert!(
        !format!("{loaded:?}").contains(HOOK_SECRET),
        "secret in Debug"
    );
    loaded
}

const ALL_EVENTS: [&str; 5] = [
    "user.created",
    "user.updated",
    "user.roles_changed",
    "user.deleted",
    "organization.validated",
];

fn options(webhooks: Vec<WebhookEndpoint>) -> AppOptions {
    let mut operator = client_with_flows(OPERATOR, FLOW);
    operator.account.platform_admin = true;
    AppOptions {
        clients: vec![operator],
        webhooks,
        ..AppOptions::default()
    }
}

/// The background pass never runs during a test: passes are run by hand.
fn manual_passes(s: &mut idp::config::Settings) {
    s.webhook_delivery.poll_interval_secs = 86_400;
}

/// A client_credentials token of `client`.
async fn client_token(app: &TestApp, client: &str) -> String {
    let (status, v) = token_request(
        app,
        client,
        &[("grant_type", "client_credentials"), ("scope", "admin_api")],
    )
    .await;
    assert_eq!(status, 200, "{v}");
    v["access_token"].as_str().unwrap().to_owned()
}

/// `GET /admin/api/webhooks/deliveries?{query}` with `token`: (status, body).
async fn deliveries(app: &TestApp, token: Option<&str>, query: &str) -> (u16, Value) {
    let mut req =
        reqwest::Client::new().get(app.url(&format!("/admin/api/webhooks/deliveries?{query}")));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// The deliveries the operator sees with `query`.
async fn listed(app: &TestApp, query: &str) -> Vec<Value> {
    let token = client_token(app, OPERATOR).await;
    let (status, v) = deliveries(app, Some(&token), query).await;
    assert_eq!(status, 200, "{v}");
    v["deliveries"].as_array().unwrap().clone()
}

fn rfc3339(v: &Value) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(
        v.as_str().expect("a time"),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

/// An organization created by `creator` (its administrator), pending.
async fn pending_org(app: &TestApp, name: &str) -> Organization {
    let now = app.clock.now();
    let org = Organization {
        id: OrgId::new_v7(),
        name: name.into(),
        siret: None,
        country: "DE".into(),
        status: OrgStatus::Pending,
        created_by: app.user.id,
        created_at: now,
        decided_at: None,
        mfa_required_for: Vec::new(),
        password_policy: Default::default(),
    };
    let creator = Membership {
        org_id: org.id,
        user_id: app.user.id,
        roles: vec![Role::Administrator],
        created_at: now,
    };
    app.state
        .provider
        .ports
        .orgs
        .create_org(&org, &creator)
        .await
        .unwrap();
    org
}

fn of_type<'a>(events: &'a [Value], t: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == t).collect()
}

// ------------------------------------------------------------------ tests

/// The receiver is down for the first attempts; the provider restarts in
/// between (a new server on the same database); once the receiver is up,
/// every event arrives, once, signed.
async fn every_event_arrives_once_despite_outage_and_restart(backend: Backend) {
    let (receiver, url) = spawn_receiver(503).await;
    let hooks = endpoints(&url, &ALL_EVENTS);
    let db = SharedDatabase::new(backend).await;

    // ---- first run: events happen while the receiver is down
    let app = spawn_app_on(&db, backend, options(hooks.clone()), manual_passes).await;
    let bob = user_with_password(&app, "bob@example.com", Some("Bob")).await;
    let org = pending_org(&app, "Acme GmbH").await;
    let op = client_token(&app, OPERATOR).await;
    let res = reqwest::Client::new()
        .post(app.url(&format!("/admin/api/organizations/{}/validate", org.id)))
        .bearer_auth(&op)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let validated = app
        .state
        .provider
        .ports
        .orgs
        .find_org(org.id)
        .await
        .unwrap()
        .unwrap();
    let carol = app
        .state
        .provider
        .organizations
        .add_org_member(
            &MemberManager::Operator(PlatformOperator { client_id: None }, validated.clone()),
            &Email::parse("carol@example.com").unwrap(),
            Some("Carol".into()),
            &[Role::Member],
            &RequestMeta::default(),
        )
        .await
        .unwrap()
        .user;
    // Alice (created at start), Bob, the validation, Carol's account and role.
    let first_run = listed(&app, "").await;
    assert_eq!(first_run.len(), 5, "{first_run:#?}");
    assert!(first_run.iter().all(|d| d["status"] == "pending"));

    let pass = app.state.webhooks.run_once().await.unwrap();
    assert_eq!((pass.delivered, pass.retrying), (0, 5));
    let attempted_at = app.clock.now();
    let log = receiver.log();
    assert_eq!(log.len(), 5, "each delivery attempted once");
    for r in &log {
        assert_eq!(r.status, 503);
        assert!(signature_verifies(HOOK_SECRET.as_bytes(), r), "{r:?}");
        assert_eq!(r.timestamp, attempted_at.unix_timestamp().to_string());
    }
    // Backed off: nothing is due again yet, not even just before the
    // shortest delay (10 s) has passed.
    let pending = listed(&app, "status=pending").await;
    assert_eq!(pending.len(), 5);
    for d in &pending {
        assert_eq!(d["attempts"], 1);
        assert_eq!(d["last_error"], "HTTP 503");
        let due = rfc3339(&d["next_attempt_at"]) - attempted_at;
        assert!(
            due >= time::Duration::seconds(10) && due <= time::Duration::seconds(12),
            "{d}"
        );
    }
    assert_eq!(app.state.webhooks.run_once().await.unwrap().attempted(), 0);
    app.clock.advance(time::Duration::seconds(9));
    assert_eq!(app.state.webhooks.run_once().await.unwrap().attempted(), 0);
    assert_eq!(receiver.log().len(), 5, "no retry before its due time");

    // ---- restart: the first server stops, a new one opens the database
    app.stop().await;
    let app = spawn_app_on(&db, backend, options(hooks), manual_passes).await;
    assert_eq!(listed(&app, "status=pending").await.len(), 5, "none lost");
    user_with_password(&app, "dave@example.com", None).await;
    let actor = app
        .state
        .provider
        .organizations
        .org_actor(app.user.id, None, org.id, OrgAction::ManageMembers, true)
        .await
        .unwrap();
    app.state
        .provider
        .organizations
        .set_org_member_roles(
            &actor,
            carol.id,
            &[Role::SecurityManager, Role::Member],
            &RequestMeta::default(),
        )
        .await
        .unwrap();

    // ---- the receiver is up
    receiver.set_status(200);
    app.clock.advance(time::Duration::minutes(1));
    let pass = app.state.webhooks.run_once().await.unwrap();
    assert_eq!((pass.delivered, pass.retrying, pass.given_up), (7, 0, 0));
    assert_eq!(app.state.webhooks.run_once().await.unwrap().attempted(), 0);
    app.clock.advance(time::Duration::hours(2));
    assert_eq!(
        app.state.webhooks.run_once().await.unwrap().attempted(),
        0,
        "delivered ones are never sent again"
    );

    let all = listed(&app, "").await;
    assert_eq!(all.len(), 7);
    assert!(all.iter().all(|d| d["status"] == "delivered"), "{all:#?}");
    let event_ids: BTreeSet<String> = all
        .iter()
        .map(|d| d["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(event_ids.len(), 7, "one delivery per event and endpoint");
    let accepted = receiver.accepted_per_id();
    assert_eq!(
        accepted.keys().cloned().collect::<BTreeSet<_>>(),
        event_ids,
        "every event arrived"
    );
    assert!(
        accepted.values().all(|n| *n == 1),
        "each exactly once: {accepted:?}"
    );
    for r in receiver.log() {
        assert!(signature_verifies(HOOK_SECRET.as_bytes(), &r), "{r:?}");
        assert!(!r.timestamp.is_empty());
    }
    let before_restart: BTreeSet<&str> = first_run
        .iter()
        .map(|d| d["event_id"].as_str().unwrap())
        .collect();
    for d in &all {
        let expected = if before_restart.contains(d["event_id"].as_str().unwrap()) {
            2
        } else {
            1
        };
        assert_eq!(d["attempts"], expected, "{d}");
        assert!(d["delivered_at"].is_string());
    }

    // What the platform was told.
    let events = receiver.processed();
    assert_eq!(events.len(), 7);
    for e in &events {
        assert!(event_ids.contains(e["id"].as_str().unwrap()), "{e}");
        assert!(e["timestamp"].is_string());
    }
    let created: Vec<&str> = of_type(&events, "user.created")
        .iter()
        .map(|e| e["data"]["user"]["email"].as_str().unwrap())
        .collect();
    assert_eq!(
        created.iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([
            "Alice@Example.com",
            "bob@example.com",
            "carol@example.com",
            "dave@example.com"
        ]),
        "{created:?}"
    );
    let bob_event = of_type(&events, "user.created")
        .into_iter()
        .find(|e| e["data"]["user"]["email"] == "bob@example.com")
        .unwrap();
    assert_eq!(bob_event["data"]["user"]["id"], bob.id.to_string());
    assert_eq!(bob_event["data"]["user"]["name"], "Bob");
    assert_eq!(
        bob_event["data"]["user"]["customer_id"],
        bob.customer_id.as_str()
    );
    let validated = of_type(&events, "organization.validated");
    assert_eq!(validated.len(), 1);
    let o = &validated[0]["data"]["organization"];
    assert_eq!(o["id"], org.id.to_string());
    assert_eq!(o["status"], "validated");
    assert_eq!(o["members"][0]["user_id"], app.user.id.to_string());
    assert_eq!(
        o["members"][0]["roles"],
        serde_json::json!(["administrator"])
    );
    let roles: Vec<&Value> = of_type(&events, "user.roles_changed");
    assert_eq!(roles.len(), 2);
    for r in &roles {
        assert_eq!(r["data"]["user"]["id"], carol.id.to_string());
        assert_eq!(r["data"]["organization"]["id"], org.id.to_string());
    }
    let role_sets: BTreeSet<String> = roles
        .iter()
        .map(|r| r["data"]["roles"].to_string())
        .collect();
    assert_eq!(
        role_sets,
        BTreeSet::from([
            r#"["member"]"#.to_owned(),
            r#"["security_manager","member"]"#.to_owned(),
        ])
    );

    app.stop().await;
    db.cleanup().await;
}

/// Failed deliveries back off by the clock, then are given up; the
/// operator lists failures with their last error; nobody else may look.
async fn failures_back_off_then_are_given_up(backend: Backend) {
    let (receiver, url) = spawn_receiver(500).await;
    // A second endpoint nothing listens on: a port bound but never put to
    // listen, held for the whole test, so connections are refused and no
    // other server (of a test running beside this one) can take the port.
    let reserved = tokio::net::TcpSocket::new_v4().unwrap();
    reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let closed = format!("http://{}/hook", reserved.local_addr().unwrap());
    let mut hooks = endpoints(&url, &["user.created"]);
    hooks.extend(endpoints(&closed, &["user.created", "user.updated"]));
    let app = spawn_app_adjusted(backend, options(hooks), |s| {
        manual_passes(s);
        s.webhook_delivery.max_attempts = 3;
    })
    .await;
    // Alice's account (created at start) goes to both endpoints.
    assert_eq!(listed(&app, "status=pending").await.len(), 2);

    let pass = app.state.webhooks.run_once().await.unwrap();
    assert_eq!((pass.retrying, pass.given_up), (2, 0));
    let mut last_attempt = app.clock.now();
    for attempt in 2..=3u32 {
        let dues: Vec<time::OffsetDateTime> = listed(&app, "status=pending")
            .await
            .iter()
            .map(|d| rfc3339(&d["next_attempt_at"]))
            .collect();
        assert_eq!(dues.len(), 2);
        // 10 s after the first failure, 20 s after the second (plus jitter).
        let min = last_attempt + time::Duration::seconds(10 << (attempt - 2));
        assert!(dues.iter().all(|d| *d >= min), "backoff: {dues:?} >= {min}");
        // Just before the earliest is due: nothing is sent.
        let earliest = *dues.iter().min().unwrap();
        app.clock.set(earliest - time::Duration::milliseconds(1));
        assert_eq!(app.state.webhooks.run_once().await.unwrap().attempted(), 0);
        assert_eq!(receiver.log().len(), attempt as usize - 1);
        // Once both are due, both are tried again.
        app.clock.set(*dues.iter().max().unwrap());
        let pass = app.state.webhooks.run_once().await.unwrap();
        assert_eq!(pass.attempted(), 2, "attempt {attempt}");
        assert_eq!(receiver.log().len(), attempt as usize);
        if attempt == 3 {
            assert_eq!(pass.given_up, 2, "max_attempts = 3");
        } else {
            assert_eq!(pass.retrying, 2);
        }
        last_attempt = app.clock.now();
    }
    let failed = listed(&app, "status=failed").await;
    assert_eq!(failed.len(), 2, "{failed:#?}");
    let by_url: BTreeMap<&str, &Value> = failed
        .iter()
        .map(|d| (d["url"].as_str().unwrap(), d))
        .collect();
    assert_eq!(by_url[url.as_str()]["last_error"], "HTTP 500");
    assert!(
        by_url[closed.as_str()]["last_error"]
            .as_str()
            .unwrap()
            .starts_with("connection failed"),
        "{failed:#?}"
    );
    for d in &failed {
        assert_eq!(d["attempts"], 3);
        assert_eq!(d["event_type"], "user.created");
        assert_eq!(d["client_id"], "platform");
        assert!(d["delivered_at"].is_null());
    }
    assert!(listed(&app, "status=pending").await.is_empty());
    assert!(listed(&app, "status=delivered").await.is_empty());
    app.clock.advance(time::Duration::days(1));
    assert_eq!(app.state.webhooks.run_once().await.unwrap().attempted(), 0);

    // Only the platform operator may read the outbox.
    assert_eq!(deliveries(&app, None, "").await.0, 401);
    let other = client_token(&app, "conf").await;
    assert_eq!(deliveries(&app, Some(&other), "").await.0, 403);
    let op = client_token(&app, OPERATOR).await;
    assert_eq!(deliveries(&app, Some(&op), "status=lost").await.0, 400);
    let (status, v) = deliveries(&app, Some(&op), "limit=1").await;
    assert_eq!(status, 200);
    assert_eq!(v["deliveries"].as_array().unwrap().len(), 1);
    app.cleanup().await;
    drop(reserved);
}

on_both_backends!(
    every_event_arrives_once_despite_outage_and_restart,
    failures_back_off_then_are_given_up,
);

/// The POST form of `html` whose action is `action`.
fn form_for(html: &str, action: &str) -> String {
    let at = html
        .find(&format!("action=\"{action}\""))
        .unwrap_or_else(|| panic!("no form posting to {action} in {html}"));
    let start = html[..at].rfind("<form").expect("form start");
    let end = at + html[at..].find("</form>").expect("form end") + "</form>".len();
    html[start..end].to_owned()
}

/// A user who changes their email on the account page is sent as
/// `user.updated`, with the new, verified address.
async fn an_email_change_is_sent_as_user_updated(backend: Backend) {
    use idp_core::notify::{Message, Recipient};
    let (receiver, url) = spawn_receiver(204).await;
    let hooks = endpoints(&url, &["user.updated"]);
    let app = spawn_app_adjusted(backend, options(hooks), manual_passes).await;
    assert!(
        listed(&app, "").await.is_empty(),
        "user.created is not subscribed"
    );

    let browser = support::Browser::new();
    let res = browser.get(&app.url("/account")).await;
    assert_eq!(support::location(&res), "/account/login");
    let to = browser
        .login(
            &app,
            &app.url("/account/login"),
            "alice@example.com",
            support::PASSWORD,
        )
        .await;
    let (res, _) = browser.follow(&app, &to).await;
    assert_eq!(res.status(), 200, "the account page");
    let html = browser
        .get(&app.url("/account/email"))
        .await
        .text()
        .await
        .unwrap();
    let res = browser
        .submit(
            &app,
            &form_for(&html, "/account/email"),
            &[("new_email", "alice.martin@new.example")],
        )
        .await;
    assert_eq!(res.status(), 303);
    let code = match app
        .outbox
        .last_to(&Recipient::Email("alice.martin@new.example".into()))
        .expect("a code to the new address")
        .message
    {
        Message::EmailChangeCode { code, .. } => code,
        other => panic!("{other:?}"),
    };
    let html = browser
        .get(&app.url("/account/email"))
        .await
        .text()
        .await
        .unwrap();
    let res = browser
        .submit(
            &app,
            &form_for(&html, "/account/email/confirm"),
            &[("code", &code)],
        )
        .await;
    assert_eq!(support::location(&res), "/account?done=email_changed");

    let pass = app.state.webhooks.run_once().await.unwrap();
    assert_eq!(pass.delivered, 1);
    let events = receiver.processed();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "user.updated");
    let user = &events[0]["data"]["user"];
    assert_eq!(user["id"], app.user.id.to_string());
    assert_eq!(user["email"], "alice.martin@new.example");
    assert_eq!(user["email_verified"], true);
    assert!(signature_verifies(
        HOOK_SECRET.as_bytes(),
        &receiver.log()[0]
    ));
    app.cleanup().await;
}

on_both_backends!(an_email_change_is_sent_as_user_updated);

// ------------------------------------------------------------ configuration

/// Loads the webhooks of a client folder with `hooks`; the error text.
fn config_error(hooks: &str) -> String {
    let dir = client_folder(hooks);
    let err = format!(
        "{:#}",
        idp::config::load_webhooks(Some(&dir.0)).expect_err(hooks)
    );
    // Every way in checks the same: `idp config check` and the server load
    // the client files through `load_client_files`.
    let again = format!(
        "{:#}",
        idp::config::load_client_files(Some(&dir.0), &idp_core::assurance::Levels::builtin())
            .expect_err(hooks)
    );
    assert_eq!(err, again);
    assert!(err.contains("platform.toml"), "names the file: {err}");
    err
}

#[test]
fn webhook_config_errors_name_the_file_and_field() {
    let ok = "secret_file = \"hook.secret\"\nevents = [\"user.created\"]";
    let cases: Vec<(String, &str)> = vec![
        (
            format!("[[webhooks]]\nurl = \"http://platform.example/hook\"\n{ok}"),
            "webhooks[0].url: must be an https URL",
        ),
        (
            format!("[[webhooks]]\nurl = \"/relative\"\n{ok}"),
            "webhooks[0].url",
        ),
        (
            "[[webhooks]]\nurl = \"https://platform.example/hook\"\nevents = [\"user.created\"]"
                .into(),
            "webhooks[0].secret_env: set exactly one of secret_env and secret_file",
        ),
        (
            "[[webhooks]]\nurl = \"https://platform.example/hook\"\nsecret = \"inline\"\nevents = [\"user.created\"]"
                .into(),
            "unknown field `secret`",
        ),
        (
            "[[webhooks]]\nurl = \"https://platform.example/hook\"\nsecret_env = \"IDP_TEST_WEBHOOK_SECRET_THAT_IS_NOT_SET\"\nevents = [\"user.created\"]"
                .into(),
            "webhooks[0].secret_env: the environment variable IDP_TEST_WEBHOOK_SECRET_THAT_IS_NOT_SET is not set",
        ),
        (
            "[[webhooks]]\nurl = \"https://platform.example/hook\"\nsecret_file = \"missing.secret\"\nevents = [\"user.created\"]"
                .into(),
            "webhooks[0].secret_file: cannot read",
        ),
        (
            "[[webhooks]]\nurl = \"https://platform.example/hook\"\nsecret_file = \"short.secret\"\nevents = [\"user.created\"]"
                .into(),
            "webhooks[0].secret_file: the secret must hold at least 32 bytes",
        ),
        (
            "[[webhooks]]\nurl = \"https://platform.example/hook\"\nsecret_file = \"hook.secret\"\nevents = [\"user.exploded\"]"
                .into(),
            "webhooks[0].events[0]: unknown event type \"user.exploded\"",
        ),
        (
            "[[webhooks]]\nurl = \"https://platform.example/hook\"\nsecret_file = \"hook.secret\"\nevents = []"
                .into(),
            "webhooks[0].events: at least one event type is needed",
        ),
        (
            format!(
                "[[webhooks]]\nurl = \"https://platform.example/a\"\n{ok}\n\n[[webhooks]]\nurl = \"https://platform.example/a\"\n{ok}"
            ),
            "webhooks[1].url: https://platform.example/a is listed twice",
        ),
    ];
    for (hooks, expected) in &cases {
        let dir_hooks = hooks.clone();
        let err = if hooks.contains("short.secret") {
            let dir = client_folder(&dir_hooks);
            std::fs::write(dir.0.join("short.secret"), "too-short-secret").unwrap();
            let err = format!(
                "{:#}",
                idp::config::load_webhooks(Some(&dir.0)).expect_err(hooks)
            );
            assert!(!err.contains("too-short-secret"), "secret in error: {err}");
            err
        } else {
            config_error(&dir_hooks)
        };
        assert!(err.contains(expected), "{hooks}\n  gave: {err}");
    }
    // Loopback receivers may use plain http; a whsec_ secret is base64.
    let dir = client_folder(
        "[[webhooks]]\nurl = \"http://127.0.0.1:9/hook\"\nsecret_file = \"hook.secret\"\nevents = [\"user.deleted\", \"organization.validated\"]",
    );
    let loaded = idp::config::load_webhooks(Some(&dir.0)).unwrap();
    assert_eq!(loaded[0].events.len(), 2);
    assert_eq!(loaded[0].client_id.0, "platform");
}

#[test]
fn webhook_delivery_settings_errors_name_the_field() {
    let dir = TempDir(
        std::env::temp_dir().join(format!("idp-hooks-cfg-{}", uuid::Uuid::new_v4().simple())),
    );
    std::fs::create_dir_all(dir.0.join("clients")).unwrap();
    let path: PathBuf = dir.0.join("idp.toml");
    let load = |text: &str| {
        std::fs::write(&path, text).unwrap();
        idp::config::load(Some(Path::new(&path))).map_err(|e| format!("{e:#}"))
    };
    let ok = load("[webhook_delivery]\ntimeout_secs = 3\nmax_attempts = 5").unwrap();
    assert_eq!(ok.settings.webhook_delivery.timeout_secs, 3);
    assert_eq!(ok.settings.webhook_delivery.retry_policy().max_attempts, 5);
    for (text, field) in [
        (
            "[webhook_delivery]\ntimeout_secs = 0",
            "webhook_delivery.timeout_secs",
        ),
        (
            "[webhook_delivery]\nretry_base_secs = 60\nretry_max_delay_secs = 30",
            "webhook_delivery.retry_max_delay_secs",
        ),
        ("[webhook_delivery]\nretries = 3", "retries"),
    ] {
        let err = load(text).unwrap_err();
        assert!(err.contains("idp.toml"), "{text}: {err}");
        assert!(err.contains(field), "{text}: {err}");
    }
}
