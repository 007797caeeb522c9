//! Single logout across portals (OpenID Connect Back-Channel Logout 1.0 and
//! Front-Channel Logout 1.0), against receivers started here (axum on a
//! loopback port): a logout at one portal reaches the others with a logout
//! token verified here against the provider's JWKS (`sid` as in their ID
//! tokens when they require it, the logout event, no `nonce`, unique `jti`,
//! their own `aud`); a receiver that is down gets it once it is up, across a
//! provider restart; signing out other sessions from the account page sends
//! it; the logout page frames the front-channel portals under a CSP that
//! allows exactly their origins.

mod support;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use idp_core::client::Client;
use idp_core::clock::Clock;
use idp_core::keys::SigningAlg;
use idp_core::oidc::logout_channels::{BACKCHANNEL_LOGOUT_EVENT, LogoutChannels};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use support::{
    AppOptions, Backend, Browser, PASSWORD, POST_LOGOUT, REDIRECT, SharedDatabase, TestApp,
    authorize_url, client_with_flows, exchange_code, location, query_param, spawn_app_adjusted,
    spawn_app_on,
};

const FLOW: &str = r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password"]}]"#;
/// The three portals of a back-channel test: the first two require `sid`.
const PORTALS: [&str; 3] = ["marketplace", "customer-space", "cloud-console"];

// ------------------------------------------------------------- the receiver

/// One logout token a receiver got.
#[derive(Debug, Clone)]
struct Received {
    /// The portal it was posted for (the path's last segment).
    portal: String,
    token: String,
    content_type: String,
    status: u16,
}

/// The portals' back-channel logout endpoints: answer `status` (503 while
/// "down") and record every request.
struct Receiver {
    status: AtomicU16,
    log: Mutex<Vec<Received>>,
}

impl Receiver {
    fn log(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    fn accepted(&self) -> Vec<Received> {
        self.log().into_iter().filter(|r| r.status < 300).collect()
    }
}

async fn backchannel(
    State(r): State<Arc<Receiver>>,
    Path(portal): Path<String>,
    headers: axum::http::HeaderMap,
    body: String,
) -> StatusCode {
    let form: Vec<(String, String)> = serde_urlencoded::from_str(&body).unwrap_or_default();
    let token = form
        .iter()
        .find(|(k, _)| k == "logout_token")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let status = r.status.load(Ordering::SeqCst);
    r.log.lock().unwrap().push(Received {
        portal,
        token,
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        status,
    });
    StatusCode::from_u16(status).unwrap()
}

/// Starts a receiver answering `status`; returns it and its base URL
/// (`<base>/<portal>` is a portal's back-channel logout URI).
async fn spawn_receiver(status: u16) -> (Arc<Receiver>, String) {
    let r = Arc::new(Receiver {
        status: AtomicU16::new(status),
        log: Mutex::new(Vec::new()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/backchannel", listener.local_addr().unwrap());
    let router = axum::Router::new()
        .route("/backchannel/{portal}", axum::routing::post(backchannel))
        .with_state(r.clone());
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    (r, base)
}

// --------------------------------------------------------------- the setup

/// A portal posting logout tokens to `<base>/<id>`.
fn backchannel_portal(id: &str, base: &str, session_required: bool, alg: SigningAlg) -> Client {
    let mut c = client_with_flows(id, FLOW);
    c.name = id.into();
    c.id_token_alg = alg;
    c.protocol.logout = LogoutChannels {
        backchannel_uri: Some(format!("{base}/{id}")),
        backchannel_session_required: session_required,
        ..LogoutChannels::default()
    };
    c
}

/// marketplace and customer-space (ES256, `sid` required), cloud-console
/// (RS256, `sid` not required, pairwise subjects).
fn portals(base: &str) -> Vec<Client> {
    let mut console = backchannel_portal(PORTALS[2], base, false, SigningAlg::RS256);
    console.protocol.pairwise = Some(idp_core::client::PairwiseSubject {
        sector: "console.example".into(),
        sector_identifier_uri: None,
        declared_in: "test".into(),
    });
    vec![
        backchannel_portal(PORTALS[0], base, true, SigningAlg::ES256),
        backchannel_portal(PORTALS[1], base, true, SigningAlg::ES256),
        console,
    ]
}

/// The background pass never runs during a test: passes are run by hand.
fn manual_passes(s: &mut idp::config::Settings) {
    s.webhook_delivery.poll_interval_secs = 86_400;
}

fn options(clients: Vec<Client>) -> AppOptions {
    AppOptions {
        clients,
        ..AppOptions::default()
    }
}

/// Signs in at `portal` in `browser` (the login pages the first time, single
/// sign-on after) and exchanges the code: the ID token and its claims.
async fn sign_in_at(app: &TestApp, browser: &Browser, portal: &str) -> (String, Value) {
    let url = authorize_url(app, portal, None, &[]);
    let (res, _) = browser.follow(app, &url).await;
    let back = if res.status().is_redirection() {
        location(&res)
    } else {
        browser
            .login(app, &url, "alice@example.com", PASSWORD)
            .await
    };
    assert!(back.starts_with(REDIRECT), "{back}");
    let code = query_param(&back, "code").expect("a code");
    let tokens = exchange_code(app, portal, &code, None).await;
    let id_token = tokens["id_token"].as_str().unwrap().to_owned();
    let claims = support::jwt_claims(&id_token);
    (id_token, claims)
}

/// RP-initiated logout from `portal` with its ID token and a registered
/// post-logout URI: the provider's response.
async fn logout_from(app: &TestApp, browser: &Browser, id_token: &str) -> reqwest::Response {
    let url = format!(
        "{}?id_token_hint={id_token}&post_logout_redirect_uri={}&state=bye",
        app.url("/logout"),
        urlencode(POST_LOGOUT)
    );
    browser.get(&url).await
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A logout token checked here, independently of the provider's code: its
/// signature against the published JWKS with the header's `kid` and `alg`.
/// Returns (header, claims).
async fn verified(app: &TestApp, token: &str) -> (Value, Value) {
    use base64::Engine;
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    let jwks: Value = reqwest::get(app.url("/jwks"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .unwrap_or_else(|| panic!("kid {} not published", header["kid"]));
    let jwk = josekit::jwk::Jwk::from_map(key.as_object().unwrap().clone()).unwrap();
    let payload = match header["alg"].as_str().unwrap() {
        "ES256" => {
            let v = josekit::jws::ES256.verifier_from_jwk(&jwk).unwrap();
            josekit::jwt::decode_with_verifier(token, &v).map(|(p, _)| p)
        }
        "RS256" => {
            let v = josekit::jws::RS256.verifier_from_jwk(&jwk).unwrap();
            josekit::jwt::decode_with_verifier(token, &v).map(|(p, _)| p)
        }
        other => panic!("unexpected alg {other}"),
    }
    .expect("the signature verifies against the JWKS");
    (header, Value::Object(payload.claims_set().clone()))
}

/// Asserts what every logout token must say (Back-Channel Logout §2.4).
fn assert_logout_token(app: &TestApp, header: &Value, claims: &Value, portal: &str) {
    assert_eq!(header["typ"], "logout+jwt", "{header}");
    assert_eq!(claims["iss"], app.issuer);
    assert_eq!(claims["aud"], portal);
    assert_eq!(
        claims["events"],
        serde_json::json!({ BACKCHANNEL_LOGOUT_EVENT: {} })
    );
    assert!(claims.get("nonce").is_none(), "no nonce: {claims}");
    let iat = claims["iat"].as_i64().unwrap();
    let exp = claims["exp"].as_i64().unwrap();
    assert!(exp > iat && exp - iat <= 120, "short-lived: {claims}");
    assert!(!claims["jti"].as_str().unwrap().is_empty());
    assert!(claims["sub"].is_string() || claims["sid"].is_string());
}

// ------------------------------------------------------------------ tests

/// Alice uses the three portals in one browser (two of them authorized at
/// the same moment), and marketplace only in a second browser. Signing out
/// at marketplace in the first reaches the three portals of that session,
/// once each, and nobody about the second session; a bad logout request
/// before it sends nothing.
async fn logout_at_one_portal_reaches_the_others(backend: Backend) {
    let (receiver, base) = spawn_receiver(200).await;
    let app = spawn_app_adjusted(backend, options(portals(&base)), manual_passes).await;
    let browser = Browser::new();
    let (market_token, market) = sign_in_at(&app, &browser, PORTALS[0]).await;
    // Two authorizations of one session at once: the session keeps both.
    let (a, b) = tokio::join!(
        sign_in_at(&app, &browser, PORTALS[1]),
        sign_in_at(&app, &browser, PORTALS[2])
    );
    let id_tokens = [market, a.1, b.1];
    assert_ne!(id_tokens[2]["sub"], id_tokens[0]["sub"], "pairwise");
    let sid = id_tokens[0]["sid"].as_str().unwrap().to_owned();
    for t in &id_tokens {
        assert_eq!(t["sid"], sid, "one sid across the session's ID tokens");
    }
    let other = Browser::new();
    let (other_token, other_claims) = sign_in_at(&app, &other, PORTALS[0]).await;
    assert_ne!(other_claims["sid"], sid);

    // A forged hint ends nothing and sends nothing.
    let res = logout_from(&app, &browser, "not.a.token").await;
    assert_eq!(res.status(), 400);
    assert_eq!(app.state.webhooks.run_once().await.unwrap().attempted(), 0);

    let res = logout_from(&app, &browser, &market_token).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), format!("{POST_LOGOUT}?state=bye"));
    let pass = app.state.webhooks.run_once().await.unwrap();
    assert_eq!((pass.delivered, pass.retrying), (3, 0));
    let got = receiver.accepted();
    assert_eq!(
        got.iter()
            .map(|r| r.portal.as_str())
            .collect::<BTreeSet<_>>(),
        PORTALS.into_iter().collect::<BTreeSet<_>>(),
        "each portal of the session, once"
    );
    let mut jtis = BTreeSet::new();
    for r in &got {
        assert_eq!(r.content_type, "application/x-www-form-urlencoded");
        let (header, claims) = verified(&app, &r.token).await;
        assert_logout_token(&app, &header, &claims, &r.portal);
        // The user as this portal knows them (the pairwise one too).
        let i = PORTALS.iter().position(|p| *p == r.portal).unwrap();
        assert_eq!(claims["sub"], id_tokens[i]["sub"], "{claims}");
        assert_eq!(claims["iat"], app.clock.now().unix_timestamp());
        // Signed with the portal's ID token algorithm; the ended session's
        // sid even for the portal that did not require it (without it the
        // token would mean "every session of this user").
        if r.portal == PORTALS[2] {
            assert_eq!(header["alg"], "RS256");
        } else {
            assert_eq!(header["alg"], "ES256");
        }
        assert_eq!(claims["sid"], sid, "{claims}");
        assert!(jtis.insert(claims["jti"].as_str().unwrap().to_owned()));
    }
    // Delivered ones are not sent again.
    app.clock.advance(time::Duration::hours(1));
    assert_eq!(app.state.webhooks.run_once().await.unwrap().attempted(), 0);

    // The second session still works, and its own logout reaches its one
    // portal with its own sid.
    let res = browser
        .get(&authorize_url(&app, PORTALS[0], None, &[]))
        .await;
    assert_eq!(res.status(), 303);
    assert!(
        !location(&res).starts_with(REDIRECT),
        "the first browser signs in again"
    );
    let res = other.get(&authorize_url(&app, PORTALS[1], None, &[])).await;
    assert!(location(&res).starts_with(REDIRECT), "still signed in");
    let res = logout_from(&app, &other, &other_token).await;
    assert_eq!(res.status(), 303);
    let pass = app.state.webhooks.run_once().await.unwrap();
    assert_eq!(pass.delivered, 2);
    let second: Vec<Received> = receiver.accepted().into_iter().skip(3).collect();
    assert_eq!(second.len(), 2);
    for r in &second {
        let (header, claims) = verified(&app, &r.token).await;
        assert_logout_token(&app, &header, &claims, &r.portal);
        assert_eq!(claims["sid"], other_claims["sid"]);
        assert!(jtis.insert(claims["jti"].as_str().unwrap().to_owned()));
    }
    assert_eq!(
        second
            .iter()
            .map(|r| r.portal.as_str())
            .collect::<BTreeSet<_>>(),
        PORTALS[..2].iter().copied().collect::<BTreeSet<_>>()
    );
    app.cleanup().await;
}

/// The portals' receiver is down when the logout happens; the provider
/// restarts on the same database; once the receiver is up the tokens
/// arrive, signed at that attempt (not expired), with the `jti` of the
/// failed attempts.
async fn receiver_down_then_up_across_a_restart(backend: Backend) {
    let (receiver, base) = spawn_receiver(503).await;
    let db = SharedDatabase::new(backend).await;
    let app = spawn_app_on(&db, backend, options(portals(&base)), manual_passes).await;
    let browser = Browser::new();
    let (token, claims) = sign_in_at(&app, &browser, PORTALS[0]).await;
    sign_in_at(&app, &browser, PORTALS[1]).await;
    let res = logout_from(&app, &browser, &token).await;
    assert_eq!(res.status(), 303);
    let pass = app.state.webhooks.run_once().await.unwrap();
    assert_eq!((pass.delivered, pass.retrying), (0, 2));
    let failed = receiver.log();
    assert_eq!(failed.len(), 2);
    // Backed off: not again before its delay.
    app.clock.advance(time::Duration::seconds(5));
    assert_eq!(app.state.webhooks.run_once().await.unwrap().attempted(), 0);

    // Restart: a new server on the same database, the same clock moment.
    let at = app.clock.now();
    app.stop().await;
    let app = spawn_app_on(&db, backend, options(portals(&base)), manual_passes).await;
    app.clock.set(at);
    receiver.status.store(200, Ordering::SeqCst);
    app.clock.advance(time::Duration::minutes(10));
    let pass = app.state.webhooks.run_once().await.unwrap();
    assert_eq!((pass.delivered, pass.retrying, pass.given_up), (2, 0, 0));
    let got = receiver.accepted();
    assert_eq!(got.len(), 2);
    for r in &got {
        let (header, c) = verified(&app, &r.token).await;
        assert_logout_token(&app, &header, &c, &r.portal);
        assert_eq!(c["sid"], claims["sid"]);
        // Signed now: valid at delivery, ten minutes after the logout.
        assert_eq!(c["iat"], app.clock.now().unix_timestamp());
        // The same token id as the attempt that failed.
        let before = failed.iter().find(|f| f.portal == r.portal).unwrap();
        assert_eq!(support::jwt_claims(&before.token)["jti"], c["jti"]);
    }
    app.clock.advance(time::Duration::hours(1));
    assert_eq!(app.state.webhooks.run_once().await.unwrap().attempted(), 0);
    app.stop().await;
    db.cleanup().await;
}

/// Signing out the other sessions from the account page sends their
/// portals a logout token with their `sid`; the account's own session is
/// not logged out anywhere.
async fn signing_out_other_sessions_from_the_account_page(backend: Backend) {
    let (receiver, base) = spawn_receiver(200).await;
    let app = spawn_app_adjusted(backend, options(portals(&base)), manual_passes).await;
    let b = Browser::new();
    let (_, claims_b) = sign_in_at(&app, &b, PORTALS[1]).await;
    let a = Browser::new();
    let (_, claims_a) = sign_in_at(&app, &a, PORTALS[0]).await;
    // A opens the account pages in its session (single sign-on).
    let (res, url) = a.follow(&app, &app.url("/account/login")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(url, app.url("/account"), "no login page: single sign-on");
    let html = res.text().await.unwrap();
    let form = support::Form::with_action(&html, "/account/sessions/sign-out-others")
        .expect("the sign-out-others form");
    let res = a.submit_form(&app, &form, &[]).await;
    assert_eq!(location(&res), "/account?done=sessions_ended");
    let pass = app.state.webhooks.run_once().await.unwrap();
    assert_eq!(pass.delivered, 1);
    let got = receiver.accepted();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].portal, PORTALS[1]);
    let (header, c) = verified(&app, &got[0].token).await;
    assert_logout_token(&app, &header, &c, PORTALS[1]);
    assert_eq!(c["sid"], claims_b["sid"]);
    assert_ne!(c["sid"], claims_a["sid"]);
    app.cleanup().await;
}

/// Two front-channel portals (one requiring `iss` and `sid`) on two origins
/// and a back-channel one: the logout page frames exactly the two, under a
/// CSP whose `frame-src` lists exactly their origins, with no inline
/// script, and goes on to the post-logout URI; the back-channel portal gets
/// its token. A logout whose session framed nobody keeps the strict CSP.
async fn front_channel_logout_frames_the_portals(backend: Backend) {
    let (receiver, base) = spawn_receiver(200).await;
    let mut news = client_with_flows("news", FLOW);
    news.protocol.logout = LogoutChannels {
        frontchannel_uri: Some("http://127.0.0.1:9/frontchannel".into()),
        frontchannel_session_required: true,
        ..LogoutChannels::default()
    };
    let mut forum = client_with_flows("forum", FLOW);
    forum.redirect_uris.push("http://localhost:9/cb".into());
    forum.protocol.logout = LogoutChannels {
        frontchannel_uri: Some("http://localhost:9/fc?portal=forum".into()),
        ..LogoutChannels::default()
    };
    let mut clients = portals(&base);
    clients.push(news);
    clients.push(forum);
    let app = spawn_app_adjusted(backend, options(clients), manual_passes).await;

    let discovery = support::discovery(&app).await;
    for key in [
        "backchannel_logout_supported",
        "backchannel_logout_session_supported",
        "frontchannel_logout_supported",
        "frontchannel_logout_session_supported",
    ] {
        assert_eq!(discovery[key], true, "{key}");
    }

    let browser = Browser::new();
    let (news_token, news_claims) = sign_in_at(&app, &browser, "news").await;
    sign_in_at(&app, &browser, "forum").await;
    sign_in_at(&app, &browser, PORTALS[0]).await;
    let sid = news_claims["sid"].as_str().unwrap();
    let res = logout_from(&app, &browser, &news_token).await;
    assert_eq!(res.status(), 200, "the front-channel page");
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    let frame_src: Vec<&str> = csp
        .split(';')
        .map(str::trim)
        .find_map(|d| d.strip_prefix("frame-src "))
        .expect("a frame-src directive")
        .split(' ')
        .collect();
    assert_eq!(frame_src, ["http://127.0.0.1:9", "http://localhost:9"]);
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let cleared = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|c| c.to_str().unwrap().starts_with("idp_session=;"));
    assert!(cleared, "the session cookie is removed");
    let html = res.text().await.unwrap();
    let frames: Vec<&str> = html
        .match_indices("<iframe ")
        .map(|(at, _)| {
            let tag = &html[at..];
            let src = &tag[tag.find("src=\"").unwrap() + 5..];
            &src[..src.find('"').unwrap()]
        })
        .collect();
    let news_frame = format!(
        "http://127.0.0.1:9/frontchannel?iss={}&amp;sid={sid}",
        urlencode(&app.issuer)
    );
    assert_eq!(
        frames,
        ["http://localhost:9/fc?portal=forum", news_frame.as_str()]
    );
    for (at, _) in html.match_indices("<script") {
        assert!(
            html[at..].starts_with("<script src=\"/assets/"),
            "no inline script"
        );
    }
    let next = format!("{}?state=bye", POST_LOGOUT);
    assert!(html.contains(&format!("href=\"{next}\"")), "{html}");
    assert!(
        html.contains(&format!("data-continue=\"{next}\"")),
        "{html}"
    );

    // The session is over; the back-channel portal was told.
    let res = browser.get(&authorize_url(&app, "news", None, &[])).await;
    assert!(!location(&res).starts_with(REDIRECT));
    assert_eq!(app.state.webhooks.run_once().await.unwrap().delivered, 1);
    assert_eq!(receiver.accepted()[0].portal, PORTALS[0]);

    // A session with back-channel portals only: a redirect, strict CSP.
    let other = Browser::new();
    let (token, _) = sign_in_at(&app, &other, PORTALS[0]).await;
    let res = logout_from(&app, &other, &token).await;
    assert_eq!(res.status(), 303);
    let csp = res.headers()["content-security-policy"].to_str().unwrap();
    assert!(!csp.contains("frame-src"), "{csp}");

    // A logout the user confirms (no hint): the same frames, then the
    // provider's signed-out page.
    let third = Browser::new();
    let (_, claims) = sign_in_at(&app, &third, "news").await;
    let res = third.get(&app.url("/logout")).await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    let res = third.submit(&app, &html, &[]).await;
    assert_eq!(res.status(), 200, "the front-channel page");
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.ends_with("; frame-src http://127.0.0.1:9"), "{csp}");
    let html = res.text().await.unwrap();
    assert_eq!(html.matches("<iframe ").count(), 1);
    assert!(html.contains(&format!("sid={}", claims["sid"].as_str().unwrap())));
    assert!(html.contains("href=\"/logged-out\""), "{html}");
    app.cleanup().await;
}

/// The client file keys: parsed, and refused when not a logout URI.
#[test]
fn client_file_keys_are_checked() {
    let levels = idp_core::assurance::Levels::builtin();
    let dir = support::TempDir(
        std::env::temp_dir().join(format!("idp-logout-{}", uuid::Uuid::new_v4().simple())),
    );
    let load = |extra: &str| {
        std::fs::create_dir_all(&dir.0).unwrap();
        std::fs::write(
            dir.0.join("shop.toml"),
            format!(
                "client_id = \"shop\"\nname = \"Shop\"\ntype = \"public\"\nredirect_uris = [\"https://shop.example/cb\"]\n{extra}"
            ),
        )
        .unwrap();
        idp::config::load_clients(Some(&dir.0), &levels).map_err(|e| format!("{e:#}"))
    };
    let clients = load(
        "backchannel_logout_uri = \"https://shop.example/bc\"\nbackchannel_logout_session_required = true\nfrontchannel_logout_uri = \"https://shop.example/fc\"\nfrontchannel_logout_session_required = true\n",
    )
    .unwrap();
    let shop = clients.get("shop").unwrap();
    assert_eq!(
        shop.protocol.logout,
        LogoutChannels {
            backchannel_uri: Some("https://shop.example/bc".into()),
            backchannel_session_required: true,
            frontchannel_uri: Some("https://shop.example/fc".into()),
            frontchannel_session_required: true,
        }
    );
    let defaults = load("").unwrap();
    assert_eq!(
        defaults.get("shop").unwrap().protocol.logout,
        LogoutChannels::default()
    );
    for (extra, expected) in [
        (
            "backchannel_logout_uri = \"http://shop.example/bc\"",
            "backchannel_logout_uri: ",
        ),
        (
            "backchannel_logout_uri = \"https://shop.example/bc#x\"",
            "no fragment",
        ),
        ("backchannel_logout_uri = \"/bc\"", "not an absolute URL"),
        (
            "backchannel_logout_session_required = true",
            "set backchannel_logout_uri too",
        ),
        (
            "frontchannel_logout_uri = \"https://elsewhere.example/fc\"",
            "scheme, host and port of one of redirect_uris",
        ),
    ] {
        let err = load(extra).map(|_| ()).unwrap_err();
        assert!(err.contains(expected), "{extra}: {err}");
    }
    // http on a loopback address is allowed (test receivers, the demo).
    assert!(
        load("backchannel_logout_uri = \"http://127.0.0.1:8081/shop/backchannel-logout\"").is_ok()
    );
}

/// The operator ends every session of a user through the admin API: the
/// portals of both of them get a logout token with their session's `sid`,
/// the grants stop working, another user's session lives on, and neither a
/// portal's token nor an unknown user gets anywhere.
async fn an_operator_ends_a_users_sessions(backend: Backend) {
    let (receiver, base) = spawn_receiver(200).await;
    let mut clients = portals(&base);
    let mut ops = client_with_flows("ops", FLOW);
    ops.account.platform_admin = true;
    clients.push(ops);
    let app = spawn_app_adjusted(backend, options(clients), manual_passes).await;
    let (a, b) = (Browser::new(), Browser::new());
    let (_, claims_a) = sign_in_at(&app, &a, PORTALS[0]).await;
    let (_, claims_b) = sign_in_at(&app, &b, PORTALS[1]).await;
    assert_ne!(claims_a["sid"], claims_b["sid"]);
    let user = claims_a["sub"].as_str().unwrap().to_owned();
    let revoke = |token: String, user: String| {
        let url = app.url(&format!("/admin/api/users/{user}/sessions/revoke"));
        async move {
            let res = reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // A portal's own client-credentials token is not an operator's.
    let (status, body) = support::token_request(
        &app,
        PORTALS[0],
        &[("grant_type", "client_credentials"), ("scope", "admin_api")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let portal_token = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(revoke(portal_token, user.clone()).await.0, 403);
    assert_eq!(app.state.webhooks.run_once().await.unwrap().attempted(), 0);

    let (status, body) = support::token_request(
        &app,
        "ops",
        &[("grant_type", "client_credentials"), ("scope", "admin_api")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let ops_token = body["access_token"].as_str().unwrap().to_owned();
    let unknown = "00000000-0000-7000-8000-000000000000".to_owned();
    assert_eq!(revoke(ops_token.clone(), unknown).await.0, 404);
    let (status, body) = revoke(ops_token.clone(), user.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sessions_ended"], 2);

    let pass = app.state.webhooks.run_once().await.unwrap();
    assert_eq!(pass.delivered, 2);
    let mut got = receiver.accepted();
    got.sort_by(|x, y| x.portal.cmp(&y.portal));
    assert_eq!(
        got.iter().map(|r| r.portal.as_str()).collect::<Vec<_>>(),
        [PORTALS[1], PORTALS[0]]
    );
    for (r, claims) in got.iter().zip([&claims_b, &claims_a]) {
        let (header, c) = verified(&app, &r.token).await;
        assert_logout_token(&app, &header, &c, &r.portal);
        assert_eq!(c["sid"], claims["sid"]);
    }
    // Both browsers sign in again; a second revocation has nothing to end.
    for browser in [&a, &b] {
        let url = authorize_url(&app, PORTALS[0], None, &[]);
        let (res, _) = browser.follow(&app, &url).await;
        assert_eq!(res.status(), 200, "the login page again");
    }
    let (status, body) = revoke(ops_token, user).await;
    assert_eq!(
        (status, body["sessions_ended"].clone()),
        (200, serde_json::json!(0))
    );
    app.cleanup().await;
}

on_both_backends!(
    logout_at_one_portal_reaches_the_others,
    receiver_down_then_up_across_a_restart,
    signing_out_other_sessions_from_the_account_page,
    front_channel_logout_frames_the_portals,
    an_operator_ends_a_users_sessions,
);
