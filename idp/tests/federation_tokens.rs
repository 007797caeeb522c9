//! Forged and broken upstream answers, through the browser: a scripted
//! upstream OpenID provider ("Scripted SSO", `adapters/upstream/tests/scripted`,
//! on 127.0.0.1, no UI: its `/authorize` answers at once) whose mode decides
//! what it forges, and the provider under test (on `localhost`) with a portal
//! whose flows are identifier + password, or the upstream, at the same level.
//!
//! Each refused case asserts the status and the page's message, that the
//! portal got no code, and that no account and no link were created. The
//! upstream tells time by the provider's settable clock: expiry is tested by
//! advancing it. The happy path (just-in-time account, custom claim mapping,
//! `amr`) and key rotation (JWKS cached, fetched again once for a new `kid`)
//! close the file. The same forgeries at the adapter level, with the exact
//! error of each, are in `adapters/upstream/tests/oidc_upstreams.rs`.

mod support;

#[path = "../../adapters/upstream/tests/scripted/mod.rs"]
mod scripted;

use idp::config::{UpstreamClaimsFile, UpstreamFile};
use idp_core::domain::Email;
use scripted::{IssParam, Mode, Registration, SUBJECT, ScriptedUpstream, Signing, UserInfo};
use serde_json::{Value, json};
use std::sync::Arc;
use support::*;

const UPSTREAM: &str = "scripted";
/// Our registration at the upstream.
const CLIENT_ID: &str = "downstream-idp";
/// The downstream client whose login page offers the upstream.
const PORTAL: &str = "portal";
/// Identifier and password, or the upstream, at the same level.
const PORTAL_FLOWS: &str = r#"[
    {"name": "standard", "acr": "1", "steps": ["identifier", "password"]},
    {"name": "sso", "acr": "1", "steps": ["upstream"]}
]"#;

/// The pages' messages (themes/default/messages/en.toml, `login.upstream.*`).
const WRONG_ISSUER: &str =
    "The answer came from another sign-in service than the one you chose. Please start again.";
const NOT_VERIFIED: &str = "answer could not be verified. Please start again";
const UNAVAILABLE: &str = "This sign-in service is not available right now.";

struct Fed {
    up: ScriptedUpstream,
    app: TestApp,
    _secret: TempDir,
}

impl Fed {
    async fn cleanup(self) {
        self.app.cleanup().await;
    }

    fn mode(&self, change: impl FnOnce(&mut Mode)) {
        self.up.set_mode(change);
    }
}

/// The scripted upstream, and the provider under test with `[[upstreams]]`
/// pointing at it (`adjust` changes that entry), telling time by the
/// provider's clock.
async fn fed_with(backend: Backend, adjust: impl FnOnce(&mut UpstreamFile)) -> Fed {
    let up_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let up = ScriptedUpstream::start(
        up_listener,
        Registration {
            client_id: CLIENT_ID.into(),
            client_secret: Some(SECRET.into()),
            redirect_uri: format!("http://localhost:{port}/login/upstream/{UPSTREAM}/callback"),
        },
    )
    .await;
    let (mut file, secret) = upstream_entry(
        UPSTREAM,
        "Scripted SSO",
        &up.issuer,
        CLIENT_ID,
        SECRET,
        &[PORTAL],
    );
    adjust(&mut file);
    let app = spawn_app_adjusted(
        backend,
        AppOptions {
            clients: vec![client_with_flows(PORTAL, PORTAL_FLOWS)],
            listener: Some(listener),
            localhost: true,
            ..AppOptions::default()
        },
        move |s| s.upstreams = vec![file],
    )
    .await;
    up.use_clock(Arc::new(app.clock.clone()));
    Fed {
        up,
        app,
        _secret: secret,
    }
}

async fn fed(backend: Backend) -> Fed {
    fed_with(backend, |_| {}).await
}

/// The portal's authorization request, then "Continue with Scripted SSO" on
/// the identifier page: the response to that button.
async fn press_continue(f: &Fed, browser: &Browser) -> reqwest::Response {
    press_continue_with(f, browser, &[]).await
}

/// The same, with more parameters in the portal's request.
async fn press_continue_with(
    f: &Fed,
    browser: &Browser,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let (res, _) = browser
        .follow(&f.app, &authorize_url(&f.app, PORTAL, None, extra))
        .await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains("Continue with Scripted SSO"), "{html}");
    let form = Form::with_action(&html, "/federate").expect("the continue-with form");
    browser
        .submit_form(&f.app, &form, &[("upstream", UPSTREAM)])
        .await
}

/// Through the upstream (it answers at once) to its answer: the callback URL
/// on the provider under test.
async fn upstream_answer(f: &Fed, browser: &Browser) -> String {
    let res = press_continue(f, browser).await;
    assert_eq!(res.status(), 303);
    let to = location(&res);
    assert!(
        to.starts_with(&format!("{}/authorize?", f.up.issuer)),
        "{to}"
    );
    let res = browser.get(&to).await;
    assert_eq!(res.status(), 303, "the upstream answers at once");
    let callback = location(&res);
    assert!(
        callback.starts_with(&f.app.url(&format!("/login/upstream/{UPSTREAM}/callback?"))),
        "{callback}"
    );
    callback
}

/// The whole way in: the provider's response to the upstream's answer.
async fn sign_in(f: &Fed, browser: &Browser) -> reqwest::Response {
    let callback = upstream_answer(f, browser).await;
    browser.get(&callback).await
}

/// No account but Alice (the harness's), no link of the upstream's subject,
/// none on Alice.
async fn assert_nothing_created(f: &Fed) {
    assert_eq!(account_count(&f.app).await, 1, "no account was created");
    let ports = &f.app.state.provider.ports;
    assert!(
        ports
            .identities
            .find_identity(UPSTREAM, SUBJECT)
            .await
            .unwrap()
            .is_none(),
        "no link was made"
    );
    assert!(
        f.app
            .state
            .provider
            .federated
            .linked_identities(f.app.user.id)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A refusal page with `message`, no redirect (the portal gets no code), and
/// nothing created.
async fn assert_refused(f: &Fed, res: reqwest::Response, message: &str) {
    assert_eq!(res.status(), 403);
    assert!(
        res.headers().get("location").is_none(),
        "no redirect: the portal gets no code"
    );
    let html = res.text().await.unwrap();
    assert!(html.contains(message), "{message:?} in {html}");
    assert_nothing_created(f).await;
}

/// A sign-in that must be refused with `message`.
async fn refused_with(f: &Fed, message: &str) {
    let res = sign_in(f, &Browser::new()).await;
    assert_refused(f, res, message).await;
}

/// A sign-in that must succeed: the portal's ID token claims.
async fn signed_in(f: &Fed) -> Value {
    let res = sign_in(f, &Browser::new()).await;
    assert_eq!(res.status(), 303);
    let to = location(&res);
    assert!(to.starts_with(REDIRECT), "back to the portal: {to}");
    id_token_claims(&f.app, PORTAL, &to).await
}

// ------------------------------------------------------------------ issuers

/// The ID token names another issuer.
async fn id_token_of_another_issuer(backend: Backend) {
    let f = fed(backend).await;
    f.mode(|m| {
        m.forge("iss", json!("https://evil.example"));
    });
    refused_with(&f, WRONG_ISSUER).await;
    f.cleanup().await;
}

/// RFC 9207: the answer's `iss` parameter names another issuer (a mix-up):
/// refused before its code goes to any token endpoint.
async fn iss_parameter_of_another_issuer(backend: Backend) {
    let f = fed(backend).await;
    f.mode(|m| m.iss_param = IssParam::Other("https://evil.example".into()));
    refused_with(&f, WRONG_ISSUER).await;
    assert_eq!(f.up.hits().token, 0, "the code was not exchanged");
    f.cleanup().await;
}

/// The upstream advertises `authorization_response_iss_parameter_supported`
/// but the answer has no `iss`.
async fn iss_parameter_missing_though_advertised(backend: Backend) {
    let f = fed(backend).await;
    f.mode(|m| m.iss_param = IssParam::Missing);
    refused_with(&f, WRONG_ISSUER).await;
    assert_eq!(f.up.hits().token, 0, "the code was not exchanged");
    f.cleanup().await;
}

/// Without that metadata, an answer without `iss` is fine.
async fn iss_parameter_optional_when_not_advertised(backend: Backend) {
    let f = fed(backend).await;
    f.mode(|m| {
        m.advertise_iss = false;
        m.iss_param = IssParam::Missing;
    });
    let claims = signed_in(&f).await;
    assert_eq!(claims["email"], "bob@partner.example");
    f.cleanup().await;
}

/// The discovery document names another issuer than the configured one: the
/// button shows the refusal at once, and the browser is sent nowhere.
async fn discovery_of_another_issuer(backend: Backend) {
    let f = fed(backend).await;
    f.mode(|m| m.discovery_issuer = Some("https://evil.example".into()));
    let res = press_continue(&f, &Browser::new()).await;
    // A misconfiguration (nothing answered yet): the service is unusable.
    assert_refused(&f, res, UNAVAILABLE).await;
    let hits = f.up.hits();
    assert_eq!(hits.authorize, 0, "no redirect to the upstream happened");
    assert_eq!((hits.jwks, hits.token), (0, 0), "{hits:?}");
    // Not cached: once the upstream is right, the next sign-in works.
    f.mode(|m| m.discovery_issuer = None);
    signed_in(&f).await;
    f.cleanup().await;
}

// ---------------------------------------------------------------- audiences

/// `aud` is another client of the upstream.
async fn audience_of_another_client(backend: Backend) {
    let f = fed(backend).await;
    f.mode(|m| {
        m.forge("aud", json!("someone-else"));
    });
    refused_with(&f, NOT_VERIFIED).await;
    f.cleanup().await;
}

/// `aud` is us and another client, without `azp`.
async fn audiences_ours_and_another_without_azp(backend: Backend) {
    let f = fed(backend).await;
    f.mode(|m| {
        m.forge("aud", json!([CLIENT_ID, "someone-else"]));
    });
    refused_with(&f, NOT_VERIFIED).await;
    f.cleanup().await;
}

/// `aud` is us and another client, `azp` the other.
async fn audiences_ours_and_another_with_azp_of_the_other(backend: Backend) {
    let f = fed(backend).await;
    f.mode(|m| {
        m.forge("aud", json!([CLIENT_ID, "someone-else"]))
            .forge("azp", json!("someone-else"));
    });
    refused_with(&f, NOT_VERIFIED).await;
    f.cleanup().await;
}

/// `aud` is us, but `azp` (the party the token was issued to) is another
/// client: OIDC Core §3.1.3.7 step 5 (and the adapter's documentation).
async fn azp_of_another_client(backend: Backend) {
    let f = fed(backend).await;
    f.mode(|m| {
        m.forge("azp", json!("someone-else"));
    });
    refused_with(&f, NOT_VERIFIED).await;
    f.cleanup().await;
}

// ------------------------------------------------------------------- nonces

async fn wrong_nonce(backend: Backend) {
    let f = fed(backend).await;
    f.mode(|m| {
        m.forge("nonce", json!("not-the-nonce"));
    });
    refused_with(&f, NOT_VERIFIED).await;
    f.cleanup().await;
}

async fn no_nonce(backend: Backend) {
    let f = fed(backend).await;
    f.mode(|m| {
        m.drop_claim("nonce");
    });
    refused_with(&f, NOT_VERIFIED).await;
    f.cleanup().await;
}

// --------------------------------------------------------------------- time

/// The ID token is minted when the user signs in at the upstream (valid 5
/// minutes); its code comes back 6 minutes later (the clock is advanced, as
/// the provider's and the upstream's): expired. 4 minutes later: fine.
async fn expired_id_token(backend: Backend) {
    let f = fed(backend).await;
    let browser = Browser::new();
    let callback = upstream_answer(&f, &browser).await;
    f.app.clock.advance(time::Duration::minutes(6));
    let res = browser.get(&callback).await;
    assert_refused(&f, res, NOT_VERIFIED).await;
    let browser = Browser::new();
    let callback = upstream_answer(&f, &browser).await;
    f.app.clock.advance(time::Duration::minutes(4));
    let res = browser.get(&callback).await;
    assert_eq!(res.status(), 303);
    assert!(location(&res).starts_with(REDIRECT));
    f.cleanup().await;
}

/// An ID token issued an hour from now (the adapter documents that it checks
/// `iat`).
async fn issued_in_the_future(backend: Backend) {
    let f = fed(backend).await;
    let now = clock_secs(&f.app) as i64;
    f.mode(|m| {
        m.forge("iat", json!(now + 3600))
            .forge("exp", json!(now + 3900));
    });
    refused_with(&f, NOT_VERIFIED).await;
    f.cleanup().await;
}

// --------------------------------------------------------------- signatures

/// Signed by a key the JWKS does not hold, under a `kid` it does not hold:
/// the keys are fetched again once, still no such key.
async fn key_not_in_the_jwks(backend: Backend) {
    let f = fed(backend).await;
    f.mode(|m| m.signing = Signing::UnpublishedKey);
    refused_with(&f, NOT_VERIFIED).await;
    assert_eq!(f.up.hits().jwks, 2, "fetched, then fetched again once");
    f.cleanup().await;
}

/// Signed by another key under the published `kid`.
async fn other_key_under_the_published_kid(backend: Backend) {
    let f = fed(backend).await;
    f.mode(|m| m.signing = Signing::UnpublishedKeySameKid);
    refused_with(&f, NOT_VERIFIED).await;
    assert_eq!(f.up.hits().jwks, 1);
    f.cleanup().await;
}

/// `alg: none`, even though the metadata lists it.
async fn unsigned_id_token(backend: Backend) {
    let f = fed(backend).await;
    f.mode(|m| {
        m.signing = Signing::None;
        m.algs = vec!["RS256".into(), "none".into()];
    });
    refused_with(&f, NOT_VERIFIED).await;
    f.cleanup().await;
}

/// HS256 with our client secret (anyone holding the secret could forge it),
/// even though the metadata lists HS256.
async fn mac_with_the_client_secret(backend: Backend) {
    let f = fed(backend).await;
    f.mode(|m| {
        m.signing = Signing::Hs256(SECRET.into());
        m.algs = vec!["RS256".into(), "HS256".into()];
    });
    refused_with(&f, NOT_VERIFIED).await;
    f.cleanup().await;
}

/// A token response without an ID token.
async fn no_id_token(backend: Backend) {
    let f = fed(backend).await;
    f.mode(|m| m.id_token = false);
    refused_with(&f, NOT_VERIFIED).await;
    f.cleanup().await;
}

// ------------------------------------------------- UserInfo, token endpoint

/// UserInfo names another subject than the ID token.
async fn userinfo_of_another_subject(backend: Backend) {
    let f = fed(backend).await;
    f.mode(|m| m.userinfo_sub = Some("someone-else".into()));
    refused_with(&f, NOT_VERIFIED).await;
    f.cleanup().await;
}

/// UserInfo answers 500.
async fn userinfo_failing(backend: Backend) {
    let f = fed(backend).await;
    f.mode(|m| m.userinfo = UserInfo::Status(500));
    refused_with(&f, UNAVAILABLE).await;
    f.cleanup().await;
}

/// The token endpoint refuses the code (`invalid_grant`).
async fn code_refused_by_the_token_endpoint(backend: Backend) {
    let f = fed(backend).await;
    f.mode(|m| m.token_error = Some("invalid_grant".into()));
    refused_with(&f, NOT_VERIFIED).await;
    assert_eq!(f.up.hits().token, 1);
    f.cleanup().await;
}

// ------------------------------------------------------------ what succeeds

/// The portal asks `max_age` (or `prompt=login`): the upstream is asked the
/// same (it must not answer from an older session of its own), and its ID
/// token's `auth_time` must be recent enough; a missing or old one is
/// refused, a fresh one signs in.
async fn max_age_is_passed_on_and_checked(backend: Backend) {
    let f = fed(backend).await;
    let answer = |extra: &'static [(&'static str, &'static str)]| {
        let f = &f;
        async move {
            let browser = Browser::new();
            let res = press_continue_with(f, &browser, extra).await;
            let to = location(&res);
            let res = browser.get(&to).await;
            (browser, to, location(&res))
        }
    };
    // Without auth_time.
    let (browser, to, callback) = answer(&[("max_age", "60")]).await;
    assert_eq!(query_param(&to, "max_age").as_deref(), Some("60"), "{to}");
    assert_eq!(query_param(&to, "prompt"), None);
    let res = browser.get(&callback).await;
    assert_refused(&f, res, NOT_VERIFIED).await;
    // Authenticated an hour ago.
    let now = clock_secs(&f.app) as i64;
    f.mode(|m| {
        m.forge("auth_time", json!(now - 3600));
    });
    let (browser, _, callback) = answer(&[("max_age", "60")]).await;
    let res = browser.get(&callback).await;
    assert_refused(&f, res, NOT_VERIFIED).await;
    // prompt=login: max_age=0 and prompt=login upstream too.
    let (_, to, _) = answer(&[("prompt", "login")]).await;
    assert_eq!(query_param(&to, "prompt").as_deref(), Some("login"), "{to}");
    assert_eq!(query_param(&to, "max_age").as_deref(), Some("0"), "{to}");
    // Authenticated just now: signed in.
    f.mode(|m| {
        m.forge("auth_time", json!(now));
    });
    let (browser, _, callback) = answer(&[("max_age", "60")]).await;
    let res = browser.get(&callback).await;
    assert_eq!(res.status(), 303);
    assert!(location(&res).starts_with(REDIRECT), "{}", location(&res));
    f.cleanup().await;
}

/// Nothing forged, the default claim mapping: a just-in-time account. Two
/// sign-ins with the same key fetch discovery and the JWKS once; the
/// upstream then rotates to a new key (new `kid`, the old one no longer
/// published): the next sign-in still works, fetching the keys once more,
/// and the one after uses the cache again.
async fn key_rotation(backend: Backend) {
    let f = fed(backend).await;
    let first = signed_in(&f).await;
    // The default claim mapping, the mode untouched.
    assert_eq!(first["email"], "bob@partner.example");
    assert_eq!(first["email_verified"], true);
    assert_eq!(first["name"], "Bob Partner");
    assert_eq!(first["amr"], json!(["fed", "pwd"]));
    let again = signed_in(&f).await;
    assert_eq!(again["sub"], first["sub"], "the same (linked) account");
    let hits = f.up.hits();
    assert_eq!(
        (hits.discovery, hits.jwks),
        (1, 1),
        "two sign-ins, one fetch: {hits:?}"
    );
    let old = f.up.kid();
    assert_ne!(f.up.rotate_key(), old);
    let rotated = signed_in(&f).await;
    assert_eq!(rotated["sub"], first["sub"]);
    assert_eq!(f.up.hits().jwks, 2, "fetched again once for the new kid");
    signed_in(&f).await;
    assert_eq!(f.up.hits().jwks, 2, "then cached");
    assert_eq!(account_count(&f.app).await, 2, "Alice and the one created");
    f.cleanup().await;
}

/// A mapped username claim naming a customer identifier finds that account
/// (whatever the email says), and links it only after its own password.
async fn username_claim_finds_the_account_to_prove(backend: Backend) {
    let f = fed_with(backend, |u| {
        u.claims.username = Some("preferred_username".into());
    })
    .await;
    let alice_id = f.app.user.customer_id.as_str().to_owned();
    f.mode(|m| {
        m.profile = json!({
            "preferred_username": alice_id,
            "email": "someone.else@partner.example",
            "email_verified": false,
            "amr": ["pwd"],
        })
        .as_object()
        .cloned()
        .unwrap();
    });
    let browser = Browser::new();
    let res = sign_in(&f, &browser).await;
    assert_eq!(res.status(), 303);
    let to = location(&res);
    assert!(to.starts_with("/login/"), "the proof follows: {to}");
    let (res, _) = browser.follow(&f.app, &f.app.url(&to)).await;
    let html = res.text().await.unwrap();
    assert!(html.contains("link it to Scripted SSO"), "{html}");
    assert_nothing_created(&f).await;
    let res = browser
        .submit(&f.app, &html, &[("password", PASSWORD)])
        .await;
    let to = location(&res);
    assert!(to.starts_with(REDIRECT), "{to}");
    let claims = id_token_claims(&f.app, PORTAL, &to).await;
    assert_eq!(claims["sub"], f.app.user.id.to_string());
    let link = f
        .app
        .state
        .provider
        .ports
        .identities
        .find_identity(UPSTREAM, SUBJECT)
        .await
        .unwrap()
        .expect("linked after the proof");
    assert_eq!(link.user_id, f.app.user.id);
    f.cleanup().await;
}

/// Nothing forged: a just-in-time account from the configured claim mapping
/// (`mail`, `mail_verified` sent as the string "true", `display_name` from
/// UserInfo; the standard claims the upstream also sends are not the mapped
/// ones), linked; our ID token's `amr` is `fed` and the upstream's values
/// (junk dropped, UserInfo's ignored), with `mfa` for two categories.
async fn just_in_time_account_with_mapped_claims(backend: Backend) {
    let f = fed_with(backend, |u| {
        u.claims = UpstreamClaimsFile {
            email: "mail".into(),
            email_verified: "mail_verified".into(),
            name: "display_name".into(),
            username: None,
        };
    })
    .await;
    f.mode(|m| {
        m.profile = json!({
            "mail": "bob@partner.example",
            "mail_verified": "true",
            "email": "decoy@partner.example",
            "email_verified": false,
            "name": "Not This Name",
            "amr": ["pwd", "otp", "Not Valid!"],
        })
        .as_object()
        .cloned()
        .unwrap();
        m.userinfo_claims = json!({"display_name": "Bob Partner", "amr": ["hwk"]})
            .as_object()
            .cloned()
            .unwrap();
    });
    let claims = signed_in(&f).await;
    assert_eq!(claims["email"], "bob@partner.example");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["name"], "Bob Partner");
    assert_eq!(claims["acr"], "1");
    // The upstream's values are passed on; `mfa` is claimed only for
    // factors this provider counted (an upstream sign-in counts as one).
    assert_eq!(claims["amr"], json!(["fed", "pwd", "otp"]));
    // What the upstream saw: our registration, PKCE S256, the scopes.
    let q = f.up.last_authorize_request().unwrap();
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(q["scope"].split(' ').any(|s| s == "email"), "{q:?}");
    assert!(
        f.up.token_refusals().is_empty(),
        "client_secret_basic and the PKCE verifier accepted: {:?}",
        f.up.token_refusals()
    );
    let hits = f.up.hits();
    assert_eq!((hits.token, hits.userinfo), (1, 1), "{hits:?}");
    // The account: created, its email verified, linked to the subject.
    let ports = &f.app.state.provider.ports;
    let bob = ports
        .users
        .find_by_email(&Email::parse("bob@partner.example").unwrap())
        .await
        .unwrap()
        .expect("the account");
    assert_eq!(claims["sub"], bob.id.to_string());
    assert!(bob.email_verified);
    assert_eq!(bob.name.as_deref(), Some("Bob Partner"));
    let link = ports
        .identities
        .find_identity(UPSTREAM, SUBJECT)
        .await
        .unwrap()
        .expect("the link");
    assert_eq!(link.user_id, bob.id);
    assert_eq!(link.email.as_deref(), Some("bob@partner.example"));
    assert!(
        ports
            .users
            .find_by_email(&Email::parse("decoy@partner.example").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(account_count(&f.app).await, 2);
    f.cleanup().await;
}

on_both_backends!(
    username_claim_finds_the_account_to_prove,
    max_age_is_passed_on_and_checked,
    id_token_of_another_issuer,
    iss_parameter_of_another_issuer,
    iss_parameter_missing_though_advertised,
    iss_parameter_optional_when_not_advertised,
    discovery_of_another_issuer,
    audience_of_another_client,
    audiences_ours_and_another_without_azp,
    audiences_ours_and_another_with_azp_of_the_other,
    azp_of_another_client,
    wrong_nonce,
    no_nonce,
    expired_id_token,
    issued_in_the_future,
    key_not_in_the_jwks,
    other_key_under_the_published_kid,
    unsigned_id_token,
    mac_with_the_client_secret,
    no_id_token,
    userinfo_of_another_subject,
    userinfo_failing,
    code_refused_by_the_token_endpoint,
    key_rotation,
    just_in_time_account_with_mapped_claims,
);
