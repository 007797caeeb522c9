//! The hosted login pages as a browser sees them: no user enumeration,
//! throttling of failed passwords, flows bound to their browser and forms to
//! their CSRF token, security headers and cookie attributes, English and
//! French, login_hint, autocomplete tokens and help links; and the published
//! metadata (discovery, JWKS).

mod support;

use serde_json::Value;
use support::*;

const EN: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../themes/default/messages/en.toml"
));
const FR: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../themes/default/messages/fr.toml"
));

/// A message of the default theme's catalog, as the page shows it (HTML-escaped).
fn msg(lang: &str, id: &str) -> String {
    let catalog: toml::Table = toml::from_str(if lang == "fr" { FR } else { EN }).unwrap();
    let mut v = &toml::Value::Table(catalog);
    for part in id.split('.') {
        v = v
            .get(part)
            .unwrap_or_else(|| panic!("no message {id} in {lang}"));
    }
    v.as_str()
        .unwrap_or_else(|| panic!("{id} is not a message"))
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#x27;")
}

/// The text of a message up to its first `{placeholder}`.
fn msg_prefix(lang: &str, id: &str) -> String {
    let m = msg(lang, id);
    m.split('{').next().unwrap().to_owned()
}

/// The inner text of the first `<p class="{class}" ...>...</p>`.
fn paragraph(html: &str, class: &str) -> Option<String> {
    let start = html.find(&format!("<p class=\"{class}\""))?;
    let rest = &html[start..];
    let open_end = rest.find('>')? + 1;
    let close = rest.find("</p>")?;
    Some(rest[open_end..close].trim().to_owned())
}

/// The `<input>` tag whose name is `name`.
fn input_tag<'a>(html: &'a str, name: &str) -> &'a str {
    let needle = format!("name=\"{name}\"");
    let mut rest = html;
    while let Some(i) = rest.find("<input") {
        let tail = &rest[i..];
        let end = tail.find('>').expect("unclosed input");
        let tag = &tail[..=end];
        if tag.contains(&needle) {
            return tag;
        }
        rest = &tail[end..];
    }
    panic!("no input named {name}");
}

fn field(form: &Form, name: &str) -> String {
    form.fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no field {name} in {:?}", form.fields))
}

/// Starts a login flow for `conf` in `browser`; returns the identifier page
/// and the flow page URL.
async fn start_flow(app: &TestApp, browser: &Browser, extra: &[(&str, &str)]) -> (String, String) {
    let (_, challenge) = pkce();
    let (res, url) = browser
        .follow(app, &authorize_url(app, "conf", Some(&challenge), extra))
        .await;
    assert_eq!(res.status(), 200, "the identifier page");
    assert!(url.contains("/login/"), "{url}");
    (res.text().await.unwrap(), url)
}

/// Starts a flow and gets past the identifier screen; returns the password
/// page and the flow page URL.
async fn password_page(app: &TestApp, browser: &Browser, identifier: &str) -> (String, String) {
    let (html, url) = start_flow(app, browser, &[]).await;
    let res = browser
        .submit(app, &html, &[("identifier", identifier)])
        .await;
    assert_eq!(res.status(), 303, "identifier accepted: {identifier}");
    let (res, url2) = browser.follow(app, &app.url(&location(&res))).await;
    assert_eq!(res.status(), 200);
    assert_eq!(url, url2);
    (res.text().await.unwrap(), url)
}

fn flow_id(flow_url: &str) -> String {
    flow_url
        .rsplit("/login/")
        .next()
        .unwrap()
        .split(['?', '/'])
        .next()
        .unwrap()
        .to_owned()
}

async fn wrong_password_and_unknown_identifier_look_the_same(app: &TestApp) {
    let unknown_customer = if app.user.customer_id.as_str() == "zz00000-idp" {
        "zz00001-idp"
    } else {
        "zz00000-idp"
    };
    let mut seen: Vec<(u16, String, String)> = Vec::new();
    for identifier in [
        "alice@example.com",
        app.user.customer_id.as_str(),
        "nobody@example.com",
        unknown_customer,
    ] {
        let browser = Browser::new();
        let (html, url) = password_page(app, &browser, identifier).await;
        let csrf = field(&Form::parse(&html).unwrap(), "csrf");
        let res = browser
            .submit(app, &html, &[("password", "wrong password 123")])
            .await;
        let status = res.status().as_u16();
        let body = res.text().await.unwrap();
        let error = paragraph(&body, "field__error").expect("an error message");
        let normalized = body
            .replace(&flow_id(&url), "FLOW")
            .replace(&csrf, "CSRF")
            .replace(identifier, "IDENTIFIER");
        seen.push((status, error, normalized));
    }
    let (status, error, page) = &seen[0];
    assert_eq!(*status, 401);
    assert_eq!(*error, msg("en", "login.invalid_credentials"));
    for (i, (s, e, p)) in seen.iter().enumerate().skip(1) {
        assert_eq!(s, status, "case {i}: same status");
        assert_eq!(e, error, "case {i}: same message");
        assert_eq!(
            p, page,
            "case {i}: same page but for flow id, CSRF and identifier"
        );
    }

    // Neither an email nor a customer identifier: asked again, on the same screen.
    for bad in ["not an identifier", "ab123-idp", "@", "alice@"] {
        let browser = Browser::new();
        let (html, _) = start_flow(app, &browser, &[]).await;
        let res = browser.submit(app, &html, &[("identifier", bad)]).await;
        assert_eq!(res.status(), 400, "{bad}");
        let body = res.text().await.unwrap();
        assert_eq!(
            paragraph(&body, "field__error").as_deref(),
            Some(msg("en", "login.invalid_identifier").as_str()),
            "{bad}"
        );
        assert!(body.contains("autocomplete=\"username\""), "{bad}");
    }
}

/// Submits `password` `times` times on the password page; returns the last
/// response's status and page.
async fn submit_passwords(
    app: &TestApp,
    browser: &Browser,
    mut html: String,
    password: &str,
    times: usize,
    expect_each: u16,
) -> String {
    for i in 0..times {
        let res = browser.submit(app, &html, &[("password", password)]).await;
        assert_eq!(res.status(), expect_each, "attempt {}", i + 1);
        html = res.text().await.unwrap();
    }
    html
}

async fn five_failures_lock_the_identifier_even_for_the_right_password(app: &TestApp) {
    let locked = msg_prefix("en", "login.locked");
    for identifier in ["alice@example.com", "ghost@example.com"] {
        let browser = Browser::new();
        let (html, _) = password_page(app, &browser, identifier).await;
        let html = submit_passwords(app, &browser, html, "wrong password 123", 5, 401).await;
        let res = browser.submit(app, &html, &[("password", PASSWORD)]).await;
        assert_eq!(res.status(), 429, "{identifier}: locked");
        assert!(res.headers().get("location").is_none());
        let body = res.text().await.unwrap();
        let error = paragraph(&body, "field__error").expect("the lock message");
        assert!(error.starts_with(&locked), "{error}");
    }
    // The lock holds for the identifier in any case, in a new flow and browser.
    let browser = Browser::new();
    let (html, _) = password_page(app, &browser, "ALICE@Example.COM").await;
    let res = browser.submit(app, &html, &[("password", PASSWORD)]).await;
    assert_eq!(res.status(), 429);

    if app.backend == Backend::Sqlite {
        // The in-process store expires the window by the test clock (Redis TTLs are real time).
        app.clock.advance(time::Duration::minutes(16));
        let res = browser.submit(app, &html, &[("password", PASSWORD)]).await;
        assert_eq!(res.status(), 303, "unlocked after the window");
        let to = location(&res);
        assert!(
            to.starts_with(REDIRECT) && query_param(&to, "code").is_some(),
            "{to}"
        );
    }
}

/// The lock is per account: once locked through its email, the account
/// cannot be tried through its customer identifier either.
async fn lock_covers_the_account_under_each_of_its_identifiers(app: &TestApp) {
    let browser = Browser::new();
    let (html, _) = password_page(app, &browser, "alice@example.com").await;
    let html = submit_passwords(app, &browser, html, "wrong password 123", 5, 401).await;
    let res = browser.submit(app, &html, &[("password", PASSWORD)]).await;
    assert_eq!(res.status(), 429);

    let browser = Browser::new();
    let (html, _) = password_page(app, &browser, app.user.customer_id.as_str()).await;
    let res = browser.submit(app, &html, &[("password", PASSWORD)]).await;
    assert_eq!(
        res.status(),
        429,
        "five failures on the email lock the account, customer identifier included"
    );
}

async fn flows_are_bound_to_their_browser_and_forms_to_their_csrf_token(app: &TestApp) {
    let browser = Browser::new();
    let (html, flow_url) = start_flow(app, &browser, &[]).await;
    let form = Form::parse(&html).unwrap();
    let action = app.url(&form.action);
    let csrf = field(&form, "csrf");

    // Another browser opening the flow page: refused.
    let other = Browser::new();
    let res = other.get(&flow_url).await;
    assert_eq!(res.status(), 400);
    let body = res.text().await.unwrap();
    assert_eq!(
        paragraph(&body, "card__lead").as_deref(),
        Some(msg("en", "error.flow_expired").as_str())
    );
    // ...or posting to it, even with the right CSRF token.
    let res = other
        .http
        .post(&action)
        .header("origin", &app.issuer)
        .form(&[("csrf", csrf.as_str()), ("identifier", "alice@example.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);

    // The right browser with a wrong or missing CSRF token.
    for fields in [
        &[("csrf", "wrong"), ("identifier", "alice@example.com")][..],
        &[("identifier", "alice@example.com")][..],
    ] {
        let res = browser
            .http
            .post(&action)
            .header("origin", &app.issuer)
            .form(fields)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{fields:?}");
        let body = res.text().await.unwrap();
        assert_eq!(
            paragraph(&body, "card__lead").as_deref(),
            Some(msg("en", "error.csrf").as_str())
        );
    }
    // A cross-site post, even with the right token.
    let res = browser
        .http
        .post(&action)
        .header("origin", "http://evil.example")
        .form(&[("csrf", csrf.as_str()), ("identifier", "alice@example.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let res = browser
        .http
        .post(&action)
        .header("sec-fetch-site", "cross-site")
        .form(&[("csrf", csrf.as_str()), ("identifier", "alice@example.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);

    // None of that moved the flow: it completes normally.
    let res = browser
        .submit(app, &html, &[("identifier", "alice@example.com")])
        .await;
    assert_eq!(res.status(), 303);
    let (res, _) = browser.follow(app, &app.url(&location(&res))).await;
    let html = res.text().await.unwrap();
    let form = Form::parse(&html).unwrap();
    assert!(form.action.ends_with("/password"), "{}", form.action);
    let res = browser.submit(app, &html, &[("password", PASSWORD)]).await;
    assert_eq!(res.status(), 303);
    assert!(location(&res).starts_with(REDIRECT));

    // Replaying the same password POST does not sign in again.
    let mut values = form.fields.clone();
    for (n, v) in values.iter_mut() {
        if n == "password" {
            *v = PASSWORD.to_owned();
        }
    }
    let res = browser
        .http
        .post(app.url(&form.action))
        .header("origin", &app.issuer)
        .form(&values)
        .send()
        .await
        .unwrap();
    let replay_status = res.status();
    let replay_to = res
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned());
    assert!(
        !(replay_status.is_redirection()
            && replay_to
                .as_deref()
                .is_some_and(|l| l.starts_with(REDIRECT))),
        "a replayed password post must not reach the client again: {replay_status} {replay_to:?}"
    );
    assert!(
        !res.headers()
            .get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap().starts_with("idp_session=")),
        "no new session from a replay"
    );
    assert!(
        replay_status.is_client_error()
            || replay_to
                .as_deref()
                .is_some_and(|l| l.starts_with(&format!("/login/{}", flow_id(&flow_url)))),
        "an error page or back to the flow page: {replay_status} {replay_to:?}"
    );
}

fn set_cookies(res: &reqwest::Response) -> Vec<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

fn assert_cookie(cookies: &[String], name: &str) {
    let c = cookies
        .iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie in {cookies:?}"));
    let attrs: Vec<String> = c
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect();
    assert!(attrs.iter().any(|a| a == "httponly"), "{c}");
    assert!(attrs.iter().any(|a| a == "samesite=lax"), "{c}");
    assert!(attrs.iter().any(|a| a == "path=/"), "{c}");
    // Plain-HTTP loopback development: a Secure cookie would never come back.
    assert!(!attrs.iter().any(|a| a == "secure"), "{c}");
}

fn assert_security_headers(res: &reqwest::Response) {
    let h = |n: &str| {
        res.headers()
            .get(n)
            .unwrap_or_else(|| panic!("no {n} header"))
            .to_str()
            .unwrap()
            .to_owned()
    };
    let csp = h("content-security-policy");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(!csp.contains("unsafe-eval"), "{csp}");
    assert_eq!(h("x-frame-options"), "DENY");
    assert!(h("cache-control").contains("no-store"));
    assert_eq!(h("referrer-policy"), "no-referrer");
    assert_eq!(h("x-content-type-options"), "nosniff");
}

/// The page must work under its own CSP: no inline script or style.
fn assert_no_inline_code(html: &str) {
    for (i, _) in html.match_indices("<script") {
        let tag = &html[i..i + html[i..].find('>').unwrap()];
        assert!(tag.contains(" src="), "inline script: {tag}");
    }
    assert!(!html.contains("<style"), "inline <style>");
    assert!(!html.contains(" style=\""), "inline style attribute");
    assert!(!html.contains(" onclick="), "inline event handler");
}

async fn login_pages_send_security_headers_and_safe_cookies(app: &TestApp) {
    let browser = Browser::new();
    let (_, challenge) = pkce();
    let res = browser
        .get(&authorize_url(app, "conf", Some(&challenge), &[]))
        .await;
    assert_eq!(res.status(), 303);
    assert_cookie(&set_cookies(&res), "idp_browser");
    assert!(
        !set_cookies(&res)
            .iter()
            .any(|c| c.starts_with("idp_session=")),
        "no session before login"
    );
    assert_security_headers(&res);

    let res = browser.get(&app.url(&location(&res))).await;
    assert_eq!(res.status(), 200);
    assert_security_headers(&res);
    let html = res.text().await.unwrap();
    assert_no_inline_code(&html);

    let res = browser
        .submit(app, &html, &[("identifier", "alice@example.com")])
        .await;
    let res = browser.get(&app.url(&location(&res))).await;
    assert_eq!(res.status(), 200);
    assert_security_headers(&res);
    let html = res.text().await.unwrap();
    assert_no_inline_code(&html);

    // A failed attempt and an error page carry them too.
    let failed = browser
        .submit(app, &html, &[("password", "wrong password 123")])
        .await;
    assert_eq!(failed.status(), 401);
    assert_security_headers(&failed);
    let error_page = Browser::new()
        .get(&format!("{}/login/does-not-exist", app.issuer))
        .await;
    assert_eq!(error_page.status(), 400);
    assert_security_headers(&error_page);

    let res = browser.submit(app, &html, &[("password", PASSWORD)]).await;
    assert_eq!(res.status(), 303);
    assert_security_headers(&res);
    assert_cookie(&set_cookies(&res), "idp_session");
}

async fn pages_speak_french_when_asked(app: &TestApp) {
    let label_fr = msg("fr", "login.identifier.label");
    let label_en = msg("en", "login.identifier.label");
    assert_ne!(label_fr, label_en);

    // Accept-Language.
    let browser = Browser::with_language("fr-FR,fr;q=0.9,en;q=0.5");
    let (html, flow_url) = start_flow(app, &browser, &[]).await;
    assert!(html.contains("<html lang=\"fr\">"));
    assert!(html.contains(&label_fr), "{html}");
    assert!(html.contains(&msg("fr", "login.identifier.submit")));
    assert!(html.contains(&msg("fr", "login.forgot_password")));
    // The error messages too.
    let res = browser
        .submit(app, &html, &[("identifier", "not an identifier")])
        .await;
    assert_eq!(res.status(), 400);
    let body = res.text().await.unwrap();
    assert_eq!(
        paragraph(&body, "field__error").as_deref(),
        Some(msg("fr", "login.invalid_identifier").as_str())
    );

    // ?lang=en switches back, and the choice sticks.
    let res = browser.get(&format!("{flow_url}?lang=en")).await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains("<html lang=\"en\">"));
    assert!(html.contains(&label_en) && !html.contains(&label_fr));
    let res = browser.get(&flow_url).await;
    let html = res.text().await.unwrap();
    assert!(
        html.contains(&label_en),
        "the language choice is remembered"
    );
    // ...and back to French by the same switch.
    let res = browser.get(&format!("{flow_url}?lang=fr")).await;
    assert!(res.text().await.unwrap().contains(&label_fr));

    // ui_locales from the client, for an English browser.
    let browser = Browser::new();
    let (html, _) = start_flow(app, &browser, &[("ui_locales", "fr-CA fr en")]).await;
    assert!(html.contains("<html lang=\"fr\">"));
    assert!(html.contains(&label_fr));
    let res = browser
        .submit(app, &html, &[("identifier", "alice@example.com")])
        .await;
    let (res, _) = browser.follow(app, &app.url(&location(&res))).await;
    let html = res.text().await.unwrap();
    assert!(html.contains(&msg("fr", "login.password.label")));

    // An English browser without ui_locales gets English.
    let (html, _) = start_flow(app, &Browser::new(), &[]).await;
    assert!(html.contains(&label_en));
}

async fn login_hint_prefills_the_identifier(app: &TestApp) {
    let browser = Browser::new();
    let (html, _) = start_flow(app, &browser, &[("login_hint", "alice@example.com")]).await;
    let form = Form::parse(&html).unwrap();
    assert_eq!(field(&form, "identifier"), "alice@example.com");
    // The prefilled form goes straight on.
    let res = browser.submit(app, &html, &[]).await;
    assert_eq!(res.status(), 303);
    let (res, _) = browser.follow(app, &app.url(&location(&res))).await;
    let html = res.text().await.unwrap();
    assert!(html.contains("autocomplete=\"current-password\""));
    assert!(html.contains("value=\"alice@example.com\""));
    // A hint is HTML-escaped, never markup.
    let (html, _) = start_flow(
        app,
        &Browser::new(),
        &[("login_hint", "\"><script>x</script>")],
    )
    .await;
    assert!(!html.contains("<script>x"), "{html}");
    let tag = input_tag(&html, "identifier");
    assert!(
        tag.contains("value=\"&quot;&gt;&lt;script&gt;x&lt;/script&gt;\""),
        "{tag}"
    );
}

async fn login_forms_carry_autocomplete_tokens_and_help_links(app: &TestApp) {
    let browser = Browser::new();
    let (html, _) = start_flow(app, &browser, &[]).await;
    let identifier = input_tag(&html, "identifier");
    assert!(
        identifier.contains("autocomplete=\"username\""),
        "{identifier}"
    );
    assert!(html.contains(&format!(
        "href=\"/forgot-password?client_id=conf\">{}</a>",
        msg("en", "login.forgot_password")
    )));
    assert!(html.contains(&format!(
        "href=\"/forgot-identifier?client_id=conf\">{}</a>",
        msg("en", "login.forgot_identifier")
    )));
    assert!(input_tag(&html, "csrf").contains("type=\"hidden\""));

    let res = browser
        .submit(app, &html, &[("identifier", "alice@example.com")])
        .await;
    let (res, _) = browser.follow(app, &app.url(&location(&res))).await;
    let html = res.text().await.unwrap();
    let password = input_tag(&html, "password");
    assert!(
        password.contains("autocomplete=\"current-password\"")
            && password.contains("type=\"password\""),
        "{password}"
    );
    // The identifier is repeated for password managers.
    assert!(input_tag(&html, "username").contains("autocomplete=\"username\""));
    assert!(html.contains(&format!(
        "href=\"/forgot-password?client_id=conf\">{}</a>",
        msg("en", "login.forgot_password")
    )));
    assert!(html.contains(&msg("en", "login.change_identifier")));
}

async fn discovery_and_jwks_describe_the_provider(app: &TestApp) {
    let http = reqwest::Client::new();
    let res = http
        .get(app.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let d: Value = res.json().await.unwrap();
    assert_eq!(d["issuer"], app.issuer.as_str());
    assert_eq!(
        d["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(d["response_types_supported"], serde_json::json!(["code"]));
    let algs = d["id_token_signing_alg_values_supported"]
        .as_array()
        .unwrap();
    for alg in ["ES256", "RS256"] {
        assert!(algs.iter().any(|a| a == alg), "{alg} in {algs:?}");
    }
    assert!(!algs.iter().any(|a| a == "none" || a == "HS256"));
    assert_eq!(d["authorization_response_iss_parameter_supported"], true);
    assert_eq!(d["request_uri_parameter_supported"], false);
    for endpoint in [
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "jwks_uri",
        "end_session_endpoint",
        "revocation_endpoint",
        "introspection_endpoint",
    ] {
        let url = d[endpoint]
            .as_str()
            .unwrap_or_else(|| panic!("no {endpoint}"));
        assert!(
            url.starts_with(&format!("{}/", app.issuer)),
            "{endpoint}: {url}"
        );
    }
    let grants = d["grant_types_supported"].as_array().unwrap();
    assert!(!grants.iter().any(|g| g == "password" || g == "implicit"));

    let jwks: Value = http
        .get(d["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = jwks["keys"].as_array().expect("keys");
    assert!(keys.len() >= 2, "{jwks}");
    let mut kids = Vec::new();
    for k in keys {
        let kid = k["kid"].as_str().unwrap_or_else(|| panic!("a kid on {k}"));
        assert!(!kid.is_empty());
        kids.push(kid.to_owned());
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(k.get(private).is_none(), "private member {private} in {k}");
        }
    }
    let n = kids.len();
    kids.sort();
    kids.dedup();
    assert_eq!(kids.len(), n, "kids are unique");
    for kty in ["EC", "RSA"] {
        assert!(keys.iter().any(|k| k["kty"] == kty), "a {kty} key");
    }
}

matrix!(
    wrong_password_and_unknown_identifier_look_the_same,
    five_failures_lock_the_identifier_even_for_the_right_password,
    lock_covers_the_account_under_each_of_its_identifiers,
    flows_are_bound_to_their_browser_and_forms_to_their_csrf_token,
    login_pages_send_security_headers_and_safe_cookies,
    pages_speak_french_when_asked,
    login_hint_prefills_the_identifier,
    login_forms_carry_autocomplete_tokens_and_help_links,
    discovery_and_jwks_describe_the_provider,
);
