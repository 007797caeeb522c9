//! WebAuthn as a browser and an authenticator see it. The authenticator is
//! webauthn-authenticator-rs's `SoftPasskey`, a real one (it makes key pairs,
//! signs challenges, counts signatures), never a stand-in for the verifier:
//! the test reads the options from the page, as `webauthn.js` does, lets the
//! authenticator answer for the page's origin, and posts the JSON the script
//! would post.
//!
//! Covered: password + security key with forced enrollment (named key,
//! recovery codes shown once and acknowledged) then a login with the key;
//! passwordless login with a passkey enrolled through another client's flow;
//! assertions by another user's key, for another user's account or from a
//! wrong origin refused; a replayed assertion and a signature counter going
//! back refused; several keys per user, each usable.

mod support;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use idp_core::domain::{Email, StoredCredential, User};
use idp_core::secret::Secret;
use serde_json::{Value, json};
use support::*;
use webauthn_authenticator_rs::prelude::{
    CreationChallengeResponse, RequestChallengeResponse, Url, WebauthnAuthenticator,
};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

/// `identifier, password, webauthn`: a security key or passkey is required.
const KEY_CLIENT: &str = "keys";
/// `passkey`: passwordless.
const PASSKEY_CLIENT: &str = "passwordless";
/// Like [`KEY_CLIENT`], with user verification required by the flow.
const STRICT_CLIENT: &str = "strict-keys";

fn options() -> AppOptions {
    AppOptions {
        clients: vec![
            client_with_flows(
                KEY_CLIENT,
                r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password", "webauthn"]}]"#,
            ),
            client_with_flows(
                PASSKEY_CLIENT,
                r#"[{"name": "d", "acr": "1", "steps": ["passkey"]}]"#,
            ),
            client_with_flows(
                STRICT_CLIENT,
                r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password", "webauthn"], "webauthn_user_verification": "required"}]"#,
            ),
        ],
        // WebAuthn needs a host name as its relying-party id.
        localhost: true,
        ..AppOptions::default()
    }
}

const EMAIL: &str = "alice@example.com";

/// A user's authenticator: a `SoftPasskey`, plus what a platform
/// authenticator keeps for a discoverable credential (credential id and user
/// handle, per relying party), which `SoftPasskey` does not. With it, a
/// discoverable request (no `allowCredentials`) is answered as a browser's
/// account picker would: with the device's credential for that RP, and the
/// user handle stored with it. The signature is still the authenticator's,
/// over the page's challenge and origin.
struct Device {
    key: SoftPasskey,
    /// (credential id, user handle), base64url, in registration order.
    resident: Vec<(String, String)>,
}

impl Device {
    fn new() -> Self {
        // `true`: the authenticator claims user verification (PIN/biometrics).
        Self {
            key: SoftPasskey::new(true),
            resident: Vec::new(),
        }
    }

    /// `navigator.credentials.create` for these options at this origin;
    /// returns the credential JSON the page posts.
    fn register(&mut self, origin: &str, options: &Value) -> String {
        let ccr: CreationChallengeResponse =
            serde_json::from_value(options.clone()).expect("creation options");
        let reg = self
            .key
            .do_registration(Url::parse(origin).unwrap(), ccr)
            .expect("the authenticator registers");
        let posted = serde_json::to_value(&reg).unwrap();
        self.resident.push((
            posted["rawId"].as_str().unwrap().to_owned(),
            options["publicKey"]["user"]["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        ));
        posted.to_string()
    }

    /// `navigator.credentials.get` for these options at this origin (the
    /// device's first credential answers a discoverable request).
    fn sign(&mut self, origin: &str, options: &Value) -> String {
        self.sign_with(origin, options, 0)
    }

    /// As [`Device::sign`], the `n`-th credential answering a discoverable request.
    fn sign_with(&mut self, origin: &str, options: &Value, n: usize) -> String {
        let mut options = options.clone();
        let discoverable = options["publicKey"]["allowCredentials"]
            .as_array()
            .is_none_or(|a| a.is_empty());
        let user_handle = if discoverable {
            let (id, handle) = self.resident[n].clone();
            options["publicKey"]["allowCredentials"] = json!([{"type": "public-key", "id": id}]);
            Some(handle)
        } else {
            None
        };
        let rcr: RequestChallengeResponse =
            serde_json::from_value(options).expect("request options");
        let assertion = self
            .key
            .do_authentication(Url::parse(origin).unwrap(), rcr)
            .expect("the authenticator signs");
        let mut posted = serde_json::to_value(&assertion).unwrap();
        if let Some(handle) = user_handle {
            posted["response"]["userHandle"] = Value::String(handle);
        }
        posted.to_string()
    }

    fn credential_id(&self, n: usize) -> &str {
        &self.resident[n].0
    }
}

/// The options of a WebAuthn page, from its JSON data block.
fn page_options(html: &str) -> Value {
    let open = r#"<script type="application/json" id="webauthn-options">"#;
    let start = html
        .find(open)
        .unwrap_or_else(|| panic!("no options block in {html}"))
        + open.len();
    let end = start + html[start..].find("</script>").expect("end of the block");
    serde_json::from_str(&html[start..end]).expect("options are JSON")
}

/// Recovery codes shown on a page.
fn shown_codes(html: &str) -> Vec<String> {
    html.split(r#"<code class="recovery-codes__code">"#)
        .skip(1)
        .map(|s| s[..s.find("</code>").unwrap()].to_owned())
        .collect()
}

/// The URL of the page of the flow a form posts to.
fn flow_page(app: &TestApp, html: &str) -> String {
    let action = Form::parse(html).expect("a form").action;
    let (flow, _) = action.rsplit_once('/').unwrap();
    app.url(flow)
}

/// Signs in with identifier and password on `client`; returns the next
/// page (the WebAuthn step or its enrollment).
async fn through_password(browser: &Browser, app: &TestApp, client: &str, email: &str) -> String {
    let (res, _) = browser
        .follow(app, &authorize_url(app, client, None, &[]))
        .await;
    assert_eq!(res.status(), 200, "identifier page");
    let html = res.text().await.unwrap();
    let res = browser.submit(app, &html, &[("identifier", email)]).await;
    assert_eq!(res.status(), 303);
    let (res, _) = browser.follow(app, &app.url(&location(&res))).await;
    let html = res.text().await.unwrap();
    let res = browser.submit(app, &html, &[("password", PASSWORD)]).await;
    assert_eq!(res.status(), 303, "password accepted");
    let (res, _) = browser.follow(app, &app.url(&location(&res))).await;
    assert_eq!(res.status(), 200);
    res.text().await.unwrap()
}

/// The first login of a user on [`KEY_CLIENT`]: the key is enrolled under
/// `name`, the recovery codes (if first) acknowledged. Returns the redirect.
async fn enroll(app: &TestApp, device: &mut Device, email: &str, name: &str) -> String {
    let browser = Browser::new();
    let html = through_password(&browser, app, KEY_CLIENT, email).await;
    assert!(html.contains(r#"data-webauthn="create""#), "{html}");
    let credential = device.register(&app.issuer, &page_options(&html));
    let res = browser
        .submit(app, &html, &[("name", name), ("credential", &credential)])
        .await;
    if res.status() == 303 {
        return location(&res);
    }
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert_eq!(shown_codes(&html).len(), 10, "{html}");
    let res = browser.submit(app, &html, &[]).await;
    assert_eq!(res.status(), 303, "acknowledged");
    location(&res)
}

/// A second factor login on [`KEY_CLIENT`] with the device's key.
async fn sign_in_with_key(app: &TestApp, device: &mut Device, email: &str) -> String {
    let browser = Browser::new();
    let html = through_password(&browser, app, KEY_CLIENT, email).await;
    assert!(html.contains(r#"data-webauthn="get""#), "{html}");
    let assertion = device.sign(&app.issuer, &page_options(&html));
    let res = browser
        .submit(app, &html, &[("credential", &assertion)])
        .await;
    assert_eq!(res.status(), 303, "key accepted");
    location(&res)
}

fn amr(claims: &Value) -> Vec<String> {
    claims["amr"]
        .as_array()
        .expect("amr")
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

async fn keys_of(app: &TestApp, user: &User) -> Vec<StoredCredential> {
    app.state
        .provider
        .ports
        .credentials
        .list_credentials(user.id, "webauthn")
        .await
        .unwrap()
}

async fn create_user(app: &TestApp, email: &str) -> User {
    app.state
        .provider
        .accounts
        .create_user(Email::parse(email).unwrap(), None, &Secret::new(PASSWORD))
        .await
        .expect("create user")
}

/// Posts `credential` in the page's form; expects a refusal that keeps the
/// user on the step, with fresh options. Returns the new page.
async fn refused(
    app: &TestApp,
    browser: &Browser,
    html: &str,
    credential: &str,
    what: &str,
) -> String {
    let res = browser
        .submit(app, html, &[("credential", credential)])
        .await;
    assert_eq!(res.status(), 401, "{what} is refused");
    let page = res.text().await.unwrap();
    assert!(
        page.contains(r#"role="alert""#),
        "an error is shown: {page}"
    );
    assert_ne!(
        page_options(&page)["publicKey"]["challenge"],
        page_options(html)["publicKey"]["challenge"],
        "a refused challenge is not offered again"
    );
    page
}

async fn password_and_key_with_forced_enrollment_then_key_logins(app: &TestApp) {
    let mut device = Device::new();
    let browser = Browser::new();
    let (res, _) = browser
        .follow(app, &authorize_url(app, KEY_CLIENT, None, &[]))
        .await;
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = res.text().await.unwrap();
    let res = browser.submit(app, &html, &[("identifier", EMAIL)]).await;
    let (res, _) = browser.follow(app, &app.url(&location(&res))).await;
    let html = res.text().await.unwrap();
    let res = browser.submit(app, &html, &[("password", PASSWORD)]).await;
    assert_eq!(res.status(), 303);
    let (res, _) = browser.follow(app, &app.url(&location(&res))).await;
    let html = res.text().await.unwrap();

    // Forced enrollment: creation options for a discoverable credential of this user.
    assert!(html.contains("Set up a security key or passkey"), "{html}");
    assert!(html.contains(r#"name="name""#) && html.contains(r#"value="Security key""#));
    assert!(html.contains(r#"<script src="/assets/default/webauthn.js" defer></script>"#));
    let options = page_options(&html);
    let pk = &options["publicKey"];
    assert_eq!(pk["rp"]["id"], "localhost");
    assert_eq!(
        pk["user"]["id"],
        URL_SAFE_NO_PAD.encode(app.user.id.0.as_bytes()),
        "the user handle is the user's id"
    );
    assert_eq!(pk["authenticatorSelection"]["residentKey"], "preferred");
    assert!(pk.get("hints").is_none());
    let credential = device.register(&app.issuer, &options);
    let res = browser
        .submit(
            app,
            &html,
            &[("name", "  YubiKey 5C  "), ("credential", &credential)],
        )
        .await;
    assert_eq!(res.status(), 200);
    let codes_page = res.text().await.unwrap();
    let codes = shown_codes(&codes_page);
    assert_eq!(codes.len(), 10, "{codes_page}");

    let keys = keys_of(app, &app.user).await;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].label.as_deref(), Some("YubiKey 5C"));
    assert!(
        keys[0].secret.starts_with(r#"{"cred":"#),
        "a webauthn-rs credential"
    );

    // Shown once: the page again has no codes.
    let again = browser.get(&flow_page(app, &codes_page)).await;
    let again = again.text().await.unwrap();
    assert!(shown_codes(&again).is_empty(), "{again}");
    assert!(!again.contains(&codes[0]));
    let res = browser.submit(app, &again, &[]).await;
    assert_eq!(res.status(), 303, "acknowledged");
    let claims = id_token_claims(app, KEY_CLIENT, &location(&res)).await;
    let first = amr(&claims);
    for v in ["pwd", "hwk", "mfa"] {
        assert!(first.contains(&v.to_owned()), "{v} in {first:?}");
    }

    // A later login asks for the key, and accepts it.
    let browser = Browser::new();
    let html = through_password(&browser, app, KEY_CLIENT, EMAIL).await;
    assert!(html.contains("Use your security key or passkey"), "{html}");
    let options = page_options(&html);
    assert_eq!(options["publicKey"]["rpId"], "localhost");
    let allowed = options["publicKey"]["allowCredentials"].as_array().unwrap();
    assert_eq!(allowed.len(), 1);
    assert_eq!(allowed[0]["id"], device.credential_id(0));
    assert!(
        !html.contains(&keys[0].secret),
        "the stored credential stays on the server"
    );
    let assertion = device.sign(&app.issuer, &options);
    let res = browser
        .submit(app, &html, &[("credential", &assertion)])
        .await;
    assert_eq!(res.status(), 303);
    let claims = id_token_claims(app, KEY_CLIENT, &location(&res)).await;
    assert_eq!(claims["sub"], app.user.id.to_string());
    let second = amr(&claims);
    for v in ["pwd", "hwk", "mfa"] {
        assert!(second.contains(&v.to_owned()), "{v} in {second:?}");
    }
    let after = keys_of(app, &app.user).await;
    assert!(after[0].last_used_at.is_some());
    assert_ne!(
        after[0].secret, keys[0].secret,
        "the signature counter was stored"
    );
}

async fn passwordless_passkey_identifies_the_user(app: &TestApp) {
    let mut device = Device::new();
    enroll(app, &mut device, EMAIL, "Phone").await;

    let browser = Browser::new();
    let (res, _) = browser
        .follow(app, &authorize_url(app, PASSKEY_CLIENT, None, &[]))
        .await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains("Sign in with a passkey</h1>"), "{html}");
    assert!(!html.contains(r#"name="identifier""#) && !html.contains(r#"name="password""#));
    let options = page_options(&html);
    assert_eq!(
        options["publicKey"]["allowCredentials"],
        json!([]),
        "no user is known yet"
    );
    assert_eq!(options["publicKey"]["userVerification"], "required");
    assert!(options.get("mediation").is_none());

    let assertion = device.sign(&app.issuer, &options);
    let res = browser
        .submit(app, &html, &[("credential", &assertion)])
        .await;
    assert_eq!(res.status(), 303, "signed in without typing anything");
    let claims = id_token_claims(app, PASSKEY_CLIENT, &location(&res)).await;
    assert_eq!(claims["sub"], app.user.id.to_string());
    let amr = amr(&claims);
    assert!(
        amr.contains(&"hwk".to_owned()) && amr.contains(&"mfa".to_owned()),
        "{amr:?}"
    );
    assert!(!amr.contains(&"pwd".to_owned()), "{amr:?}");
}

async fn assertions_of_another_user_or_origin_are_refused(app: &TestApp) {
    let mut alice = Device::new();
    enroll(app, &mut alice, EMAIL, "Alice's key").await;
    let bob_email = "bob@example.com";
    let bob = create_user(app, bob_email).await;
    let mut bobs = Device::new();
    enroll(app, &mut bobs, bob_email, "Bob's key").await;
    assert_eq!(keys_of(app, &bob).await.len(), 1);

    // Second factor: Bob's key answers Alice's challenge (his browser lists
    // his own credential): not one of Alice's keys.
    let browser = Browser::new();
    let html = through_password(&browser, app, KEY_CLIENT, EMAIL).await;
    let mut options = page_options(&html);
    options["publicKey"]["allowCredentials"] =
        json!([{"type": "public-key", "id": bobs.credential_id(0)}]);
    let forged = bobs.sign(&app.issuer, &options);
    let html = refused(app, &browser, &html, &forged, "another user's key").await;
    assert!(html.contains("could not be verified"), "{html}");

    // Alice's own key, used on a phishing page that relays the challenge
    // under its own relying-party id: wrong origin.
    let mut options = page_options(&html);
    options["publicKey"]["rpId"] = json!("evil.example");
    let phished = alice.sign("https://evil.example", &options);
    let html = refused(app, &browser, &html, &phished, "a relayed challenge").await;

    // ... or on another site under the same RP id (a sibling subdomain,
    // which browsers let use `localhost`'s credentials): wrong origin too.
    let sibling = alice.sign("https://evil.localhost", &page_options(&html));
    let html = refused(app, &browser, &html, &sibling, "a sibling origin").await;

    // The step was not passed: it is still asked, and Alice's key passes it.
    let good = alice.sign(&app.issuer, &page_options(&html));
    let res = browser.submit(app, &html, &[("credential", &good)]).await;
    assert_eq!(res.status(), 303);
    let claims = id_token_claims(app, KEY_CLIENT, &location(&res)).await;
    assert_eq!(claims["sub"], app.user.id.to_string());

    // Passwordless: Bob's passkey claiming to be Alice's account (user handle).
    let browser = Browser::new();
    let (res, _) = browser
        .follow(app, &authorize_url(app, PASSKEY_CLIENT, None, &[]))
        .await;
    let html = res.text().await.unwrap();
    let forged = bobs.sign(&app.issuer, &page_options(&html));
    let mut forged: Value = serde_json::from_str(&forged).unwrap();
    forged["response"]["userHandle"] = json!(URL_SAFE_NO_PAD.encode(app.user.id.0.as_bytes()));
    let html = refused(
        app,
        &browser,
        &html,
        &forged.to_string(),
        "another account's handle",
    )
    .await;
    assert!(
        html.contains("This passkey could not be used to sign in."),
        "{html}"
    );

    // Alice's passkey from a wrong origin.
    let sibling = alice.sign("https://evil.localhost", &page_options(&html));
    let html = refused(
        app,
        &browser,
        &html,
        &sibling,
        "a passkey from a sibling origin",
    )
    .await;

    // Bob's passkey as Bob's: Bob signs in, not Alice.
    let own = bobs.sign(&app.issuer, &page_options(&html));
    let res = browser.submit(app, &html, &[("credential", &own)]).await;
    assert_eq!(res.status(), 303);
    let claims = id_token_claims(app, PASSKEY_CLIENT, &location(&res)).await;
    assert_eq!(claims["sub"], bob.id.to_string());
}

async fn a_replayed_assertion_or_a_counter_going_back_is_refused(app: &TestApp) {
    let mut device = Device::new();
    enroll(app, &mut device, EMAIL, "Key").await;

    // A first login with an assertion X.
    let browser = Browser::new();
    let first_page = through_password(&browser, app, KEY_CLIENT, EMAIL).await;
    let x = device.sign(&app.issuer, &page_options(&first_page));
    let res = browser
        .submit(app, &first_page, &[("credential", &x)])
        .await;
    assert_eq!(res.status(), 303);
    // The same post again: that flow is over.
    let res = browser
        .submit(app, &first_page, &[("credential", &x)])
        .await;
    assert_eq!(res.status(), 400, "the flow is gone");

    // X posted to a new flow: its challenge was spent.
    let browser = Browser::new();
    let html = through_password(&browser, app, KEY_CLIENT, EMAIL).await;
    let html = refused(app, &browser, &html, &x, "a replay in a new flow").await;
    // Posted twice there too: still refused.
    let html = refused(app, &browser, &html, &x, "a second replay").await;

    // A cloned authenticator: an assertion made earlier (lower counter)
    // arrives after a later one was accepted.
    let early = device.sign(&app.issuer, &page_options(&html));
    let other = Browser::new();
    let other_page = through_password(&other, app, KEY_CLIENT, EMAIL).await;
    let later = device.sign(&app.issuer, &page_options(&other_page));
    let res = other
        .submit(app, &other_page, &[("credential", &later)])
        .await;
    assert_eq!(res.status(), 303, "the later assertion passes");
    let stored = keys_of(app, &app.user).await[0].secret.clone();
    let html = refused(app, &browser, &html, &early, "a lower counter").await;
    assert_eq!(
        keys_of(app, &app.user).await[0].secret,
        stored,
        "a refused assertion changes nothing"
    );

    // The step still works with a fresh assertion.
    let fresh = device.sign(&app.issuer, &page_options(&html));
    let res = browser.submit(app, &html, &[("credential", &fresh)]).await;
    assert_eq!(res.status(), 303);
}

async fn a_user_with_two_keys_signs_in_with_either(app: &TestApp) {
    let mut laptop = Device::new();
    let mut yubikey = Device::new();
    enroll(app, &mut laptop, EMAIL, "Laptop").await;
    // With a key, login asks for it rather than for a new one. There is no
    // key management page yet: the first key is set aside so that the
    // forced enrollment runs again for the second one, then put back.
    let first = keys_of(app, &app.user).await.remove(0);
    let credentials = &app.state.provider.ports.credentials;
    assert!(credentials.delete_credential(first.id).await.unwrap());
    let redirect = enroll(app, &mut yubikey, EMAIL, "YubiKey").await;
    assert!(
        redirect.starts_with(REDIRECT),
        "recovery codes exist already: none shown"
    );
    credentials.create_credential(&first).await.unwrap();
    let keys = keys_of(app, &app.user).await;
    let mut names: Vec<_> = keys.iter().filter_map(|k| k.label.clone()).collect();
    names.sort();
    assert_eq!(names, ["Laptop", "YubiKey"]);

    let browser = Browser::new();
    let html = through_password(&browser, app, KEY_CLIENT, EMAIL).await;
    let allowed: Vec<_> = page_options(&html)["publicKey"]["allowCredentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(allowed.len(), 2);
    assert!(allowed.contains(&laptop.credential_id(0).to_owned()));
    assert!(allowed.contains(&yubikey.credential_id(0).to_owned()));

    for device in [&mut laptop, &mut yubikey] {
        let redirect = sign_in_with_key(app, device, EMAIL).await;
        let claims = id_token_claims(app, KEY_CLIENT, &redirect).await;
        assert_eq!(claims["sub"], app.user.id.to_string());
    }
    // Both keys work for passwordless login too.
    for device in [&mut laptop, &mut yubikey] {
        let browser = Browser::new();
        let (res, _) = browser
            .follow(app, &authorize_url(app, PASSKEY_CLIENT, None, &[]))
            .await;
        let html = res.text().await.unwrap();
        let assertion = device.sign(&app.issuer, &page_options(&html));
        let res = browser
            .submit(app, &html, &[("credential", &assertion)])
            .await;
        assert_eq!(res.status(), 303);
        let claims = id_token_claims(app, PASSKEY_CLIENT, &location(&res)).await;
        assert_eq!(claims["sub"], app.user.id.to_string());
    }
    let used = keys_of(app, &app.user).await;
    assert!(used.iter().all(|k| k.last_used_at.is_some()), "{used:?}");
}

async fn the_script_is_served_as_javascript(app: &TestApp) {
    let res = Browser::new()
        .get(&app.url("/assets/default/webauthn.js"))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "text/javascript; charset=utf-8",
        "nosniff: browsers run scripts only with a JavaScript type"
    );
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("navigator.credentials.get")
    );
}

/// User verification is a setting of the flow (else of `login_methods`):
/// the same user meets `preferred` on one client and `required` on another.
async fn user_verification_follows_the_flow(app: &TestApp) {
    let uv = |html: &str| {
        page_options(html)["publicKey"]["authenticatorSelection"]["userVerification"].clone()
    };
    let html = through_password(&Browser::new(), app, KEY_CLIENT, "alice@example.com").await;
    assert_eq!(uv(&html), "preferred", "{html}");
    let html = through_password(&Browser::new(), app, STRICT_CLIENT, "alice@example.com").await;
    assert_eq!(uv(&html), "required", "{html}");
}

matrix_with!(crate::options(), |_| {};
    user_verification_follows_the_flow,

    password_and_key_with_forced_enrollment_then_key_logins,
    passwordless_passkey_identifies_the_user,
    assertions_of_another_user_or_origin_are_refused,
    a_replayed_assertion_or_a_counter_going_back_is_refused,
    a_user_with_two_keys_signs_in_with_either,
    the_script_is_served_as_javascript,
);
