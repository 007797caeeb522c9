//! Pairwise subject identifiers (OpenID Connect Core §8): clients of one
//! sector see the same `sub`, a client of another sector a different one,
//! a public client the internal id; the same `sub` in the ID token,
//! userinfo, access tokens, introspection and exchanged tokens;
//! `id_token_hint`s with a pairwise `sub` still work at authorization and
//! logout; `sector_identifier_uri` is fetched and checked at start-up, on
//! both backends.

mod support;

use idp::config::ResourceServerFile;
use idp_core::client::{Client, PairwiseSubject};
use serde_json::{Value, json};
use support::*;

const FLOWS: &str = r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password"]}]"#;
const BILLING: &str = "https://billing.example/api";

/// Serves `doc` as the sector identifier document on a loopback port;
/// returns its URL.
async fn sector_server(doc: Value) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = doc.to_string();
    let app = axum::Router::new().route(
        "/sector.json",
        axum::routing::get(move || {
            let body = body.clone();
            async move { ([("content-type", "application/json")], body) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/sector.json")
}

fn pairwise(id: &str, sector: &str, sector_identifier_uri: Option<&str>) -> Client {
    let mut c = client_with_flows(id, FLOWS);
    c.protocol.pairwise = Some(PairwiseSubject {
        sector: sector.into(),
        sector_identifier_uri: sector_identifier_uri.map(str::to_owned),
        declared_in: format!("clients/{id}.toml"),
    });
    c
}

/// `north-a` and `north-b` share the sector of their
/// `sector_identifier_uri` (host 127.0.0.1); `south` is of another sector;
/// `conf` (a test client) is public. `north-a` may exchange tokens for the
/// billing API.
async fn spawn(backend: Backend) -> TestApp {
    let uri = sector_server(json!([REDIRECT, "https://north.example/other"])).await;
    let mut north_a = pairwise("north-a", "127.0.0.1", Some(&uri));
    north_a.protocol.token_exchange = true;
    let options = AppOptions {
        clients: vec![
            north_a,
            pairwise("north-b", "127.0.0.1", Some(&uri)),
            pairwise("south", "south.example", None),
            client_with_flows("billing-rs", FLOWS),
        ],
        ..AppOptions::default()
    };
    spawn_app_adjusted(backend, options, |s| {
        s.resource_servers = vec![ResourceServerFile {
            identifier: BILLING.into(),
            name: "Billing API".into(),
            access_token_secs: None,
            clients: vec![],
            introspection_clients: vec!["billing-rs".into()],
            exchange_clients: vec!["north-a".into()],
        }];
    })
    .await
}

fn id_sub(t: &Value) -> String {
    jwt_claims(t["id_token"].as_str().unwrap())["sub"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// One sector, one `sub`; another sector, another; a public client, the
/// internal id; every token and answer of a client agrees.
async fn subjects_follow_the_sector(backend: Backend) {
    let app = spawn(backend).await;
    let internal = app.user.id.to_string();
    let a = alice_tokens(&app, &Browser::new(), "north-a").await;
    let b = alice_tokens(&app, &Browser::new(), "north-b").await;
    let south = alice_tokens(&app, &Browser::new(), "south").await;
    let public = alice_tokens(&app, &Browser::new(), "conf").await;
    let sub = id_sub(&a);
    assert_eq!(sub, id_sub(&b), "two clients of one sector");
    assert_ne!(sub, id_sub(&south), "another sector");
    assert_ne!(sub, internal);
    assert_ne!(id_sub(&south), internal);
    assert_eq!(id_sub(&public), internal, "a public client");

    // Userinfo, the access token, introspection agree with the ID token.
    let access = a["access_token"].as_str().unwrap();
    assert_eq!(userinfo(&app, access).await["sub"], sub.as_str());
    assert_eq!(jwt_claims(access)["sub"], sub.as_str());
    let i = introspect_as(&app, "north-a", access).await;
    assert_eq!(
        (i["active"].as_bool(), i["sub"].as_str()),
        (Some(true), Some(sub.as_str()))
    );
    let refresh = a["refresh_token"].as_str().unwrap();
    let i = introspect_as(&app, "north-a", refresh).await;
    assert_eq!(i["sub"], sub.as_str(), "{i}");
    assert_eq!(
        userinfo(&app, south["access_token"].as_str().unwrap()).await["sub"],
        id_sub(&south)
    );
    assert_eq!(
        userinfo(&app, public["access_token"].as_str().unwrap()).await["sub"],
        internal
    );

    // A refresh keeps it.
    let (status, r) = token_request(
        &app,
        "north-a",
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(id_sub(&r), sub);
    assert_eq!(
        jwt_claims(r["access_token"].as_str().unwrap())["sub"],
        sub.as_str()
    );

    // A token exchange keeps the user mapping of the exchanging client.
    let (status, x) = token_request(
        &app,
        "north-a",
        &[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", r["access_token"].as_str().unwrap()),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:access_token",
            ),
            ("resource", BILLING),
        ],
    )
    .await;
    assert_eq!(status, 200, "{x}");
    let exchanged = x["access_token"].as_str().unwrap();
    assert_eq!(jwt_claims(exchanged)["sub"], sub.as_str());
    let i = introspect_as(&app, "billing-rs", exchanged).await;
    assert_eq!(
        (i["active"].as_bool(), i["sub"].as_str()),
        (Some(true), Some(sub.as_str()))
    );

    // Revocation by the client still finds the user behind a pairwise sub:
    // the token stops working.
    let res = reqwest::Client::new()
        .post(app.url("/revoke"))
        .basic_auth("north-a", Some(SECRET))
        .form(&[("token", access)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        introspect_as(&app, "north-a", access).await["active"],
        false
    );

    // The audit trail (like the admin API and webhooks) keeps the internal id.
    let events = app
        .state
        .provider
        .ports
        .audit
        .list_for_user(app.user.id, 50)
        .await
        .unwrap();
    assert!(events.iter().any(|e| e.kind == "token.exchanged"));

    let d = discovery(&app).await;
    assert_eq!(d["subject_types_supported"], json!(["public", "pairwise"]));
    app.cleanup().await;
}

/// A pairwise `sub` in an `id_token_hint`: a silent authorization finds the
/// session's user, and RP-initiated logout needs no confirmation.
async fn id_token_hints_with_a_pairwise_sub(backend: Backend) {
    let app = spawn(backend).await;
    let browser = Browser::new();
    let t = alice_tokens(&app, &browser, "north-a").await;
    let hint = t["id_token"].as_str().unwrap();
    assert_ne!(id_sub(&t), app.user.id.to_string());
    let (_, challenge) = pkce();
    let res = browser
        .get(&authorize_url(
            &app,
            "north-a",
            Some(&challenge),
            &[("prompt", "none"), ("id_token_hint", hint)],
        ))
        .await;
    let to = location(&res);
    assert!(query_param(&to, "code").is_some(), "{to}");

    let logout = format!(
        "{}?id_token_hint={hint}&post_logout_redirect_uri={}&state=bye",
        app.url("/logout"),
        url::form_urlencoded::byte_serialize(POST_LOGOUT.as_bytes()).collect::<String>()
    );
    let res = browser.get(&logout).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), format!("{POST_LOGOUT}?state=bye"));
    // Signed out.
    let res = browser
        .get(&authorize_url(
            &app,
            "north-a",
            Some(&challenge),
            &[("prompt", "none")],
        ))
        .await;
    assert_eq!(
        query_param(&location(&res), "error").as_deref(),
        Some("login_required")
    );
    app.cleanup().await;
}

/// The server does not start when a pairwise client's
/// `sector_identifier_uri` omits one of its redirect URIs, is not a JSON
/// array, or cannot be fetched; the error names the client file and field.
async fn sector_documents_are_checked_at_start_up(backend: Backend) {
    let missing = sector_server(json!(["https://north.example/other"])).await;
    let not_a_list = sector_server(json!({"redirect_uris": [REDIRECT]})).await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/sector.json", l.local_addr().unwrap())
    };
    for (uri, why) in [
        (missing, "does not list the redirect URI"),
        (not_a_list, "not a JSON array"),
        (closed, "fetch failed"),
    ] {
        let options = AppOptions {
            clients: vec![pairwise("north-a", "127.0.0.1", Some(&uri))],
            ..AppOptions::default()
        };
        // In a task of its own, to see the start-up's panic.
        let started = tokio::spawn(spawn_app_adjusted(backend, options, keep_settings)).await;
        let panic = match started {
            Ok(app) => {
                app.cleanup().await;
                panic!("started with {uri}");
            }
            Err(e) => e.into_panic(),
        };
        let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            message.contains("clients/north-a.toml: sector_identifier_uri: ")
                && message.contains(&uri)
                && message.contains(why),
            "{message}"
        );
    }
}

fn keep_settings(_: &mut idp::config::Settings) {}

on_both_backends!(
    subjects_follow_the_sector,
    id_token_hints_with_a_pairwise_sub,
    sector_documents_are_checked_at_start_up,
);
