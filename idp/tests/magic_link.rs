//! The emailed sign-in link (method `magic_link`): sent once the user is
//! identified, it signs in the browser that asked, once, for 10 minutes;
//! opened elsewhere it says where to open it and stays usable; an unknown
//! address gets the same page and no email. Both backends.

mod support;

use idp_core::notify::Message;
use support::*;

const LINK: &str = "link";
const FLOWS: &str = r#"[{"name": "d", "acr": "1", "steps": ["identifier", "magic_link"]}]"#;

fn options() -> AppOptions {
    AppOptions {
        clients: vec![client_with_flows(LINK, FLOWS)],
        ..AppOptions::default()
    }
}

/// Identifier typed at `client` in `browser`: the link page (asserted).
async fn link_page(app: &TestApp, browser: &Browser, identifier: &str) -> String {
    let (res, _) = browser
        .follow(app, &authorize_url(app, LINK, None, &[]))
        .await;
    let html = res.text().await.unwrap();
    let res = browser
        .submit(app, &html, &[("identifier", identifier)])
        .await;
    assert_eq!(res.status(), 303);
    let (res, _) = browser.follow(app, &app.url(&location(&res))).await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains("Check your email"), "{html}");
    html
}

/// The URLs of the sign-in links emailed to `email` so far.
fn links_to(app: &TestApp, email: &str) -> Vec<String> {
    messages_to(app, email)
        .into_iter()
        .filter_map(|m| match m {
            Message::Method { template, fields } if template == "magic_link" => {
                fields["url"].as_str().map(str::to_owned)
            }
            _ => None,
        })
        .collect()
}

/// The `n`th link emailed to `email` (they go out in the background).
async fn nth_link(app: &TestApp, email: &str, n: usize) -> String {
    wait_for("the sign-in link", || links_to(app, email).get(n).cloned()).await
}

async fn opens_once_in_the_browser_that_asked(app: &TestApp) {
    let browser = Browser::new();
    let email = app.user.email.as_str().to_owned();
    link_page(app, &browser, &email).await;
    let url = nth_link(app, &email, 0).await;
    assert!(url.starts_with(&app.url("/login/callback?token=")), "{url}");
    let res = browser.get(&url).await;
    assert_eq!(res.status(), 303);
    let to = location(&res);
    assert!(to.starts_with(REDIRECT), "signed in: {to}");
    let claims = id_token_claims(app, LINK, &to).await;
    assert_eq!(claims["acr"], "1");
    assert_eq!(claims["amr"], serde_json::json!(["email_link"]));
    // Used twice: refused.
    let res = browser.get(&url).await;
    assert_eq!(res.status(), 400);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("expired or was already used")
    );
}

async fn an_expired_link_signs_nobody_in(app: &TestApp) {
    let browser = Browser::new();
    let email = app.user.email.as_str().to_owned();
    link_page(app, &browser, &email).await;
    let url = nth_link(app, &email, 0).await;
    app.clock.advance(time::Duration::minutes(11));
    let res = browser.get(&url).await;
    assert_eq!(res.status(), 401);
    let html = res.text().await.unwrap();
    assert!(html.contains("expired"), "{html}");
    // A new link works.
    link_page(app, &browser, &email).await;
    let url = nth_link(app, &email, 1).await;
    let res = browser.get(&url).await;
    assert!(location(&res).starts_with(REDIRECT));
}

async fn opened_elsewhere_it_says_where_and_stays_usable(app: &TestApp) {
    let browser = Browser::new();
    let email = app.user.email.as_str().to_owned();
    link_page(app, &browser, &email).await;
    let url = nth_link(app, &email, 0).await;
    let phone = Browser::new();
    let res = phone.get(&url).await;
    assert_eq!(res.status(), 400);
    let html = res.text().await.unwrap();
    assert!(
        html.contains("works only in the browser where you started signing in"),
        "{html}"
    );
    // Not used up: the browser that asked signs in with it.
    let res = browser.get(&url).await;
    assert!(location(&res).starts_with(REDIRECT));
}

async fn an_unknown_address_gets_the_same_page_and_no_email(app: &TestApp) {
    // Both addresses show masked as `a***@example.com`.
    let known = link_page(app, &Browser::new(), "alice@example.com").await;
    let unknown = link_page(app, &Browser::new(), "anna@example.com").await;
    // The same page but for the flow's ids.
    let shape = |html: &str| {
        let mut out = html.to_owned();
        for form in Form::all(html) {
            out = out.replace(&form.action, "ACTION");
            let flow_id = form.action.split('/').nth(2).expect("/login/<flow id>");
            out = out.replace(flow_id, "FLOW");
            for (_, v) in form.fields {
                if !v.is_empty() {
                    out = out.replace(&v, "VALUE");
                }
            }
        }
        out
    };
    assert!(known.contains("a***@example.com"), "{known}");
    assert_eq!(shape(&known), shape(&unknown));
    let email = app.user.email.as_str().to_owned();
    wait_for("the known account's link", || {
        links_to(app, &email).first().cloned()
    })
    .await;
    assert!(
        app.outbox
            .messages()
            .iter()
            .all(|(to, _)| *to != idp_core::notify::Recipient::Email("anna@example.com".into())),
        "nothing is sent to an address without an account"
    );
}

async fn a_new_link_replaces_the_older_one(app: &TestApp) {
    let browser = Browser::new();
    let email = app.user.email.as_str().to_owned();
    let html = link_page(app, &browser, &email).await;
    let old = nth_link(app, &email, 0).await;
    // Too soon: wait.
    let res = browser.press(app, &html, "resend", "1").await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains("ask for a new link in 30"), "{html}");
    app.clock.advance(time::Duration::minutes(2));
    let res = browser.press(app, &html, "resend", "1").await;
    let html = res.text().await.unwrap();
    assert!(html.contains("previous one no longer works"), "{html}");
    let new = nth_link(app, &email, 1).await;
    assert_ne!(old, new);
    // Refused as a wrong answer is: 401, the step's page with the reason.
    let res = browser.get(&old).await;
    assert_eq!(res.status(), 401);
    let html = res.text().await.unwrap();
    assert!(html.contains("use the most recent email"), "{html}");
    let res = browser.get(&new).await;
    assert!(location(&res).starts_with(REDIRECT));
}

matrix_with!(
    crate::options(), |_| {};
    opens_once_in_the_browser_that_asked,
    an_expired_link_signs_nobody_in,
    opened_elsewhere_it_says_where_and_stays_usable,
    an_unknown_address_gets_the_same_page_and_no_email,
    a_new_link_replaces_the_older_one,
);
