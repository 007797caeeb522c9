//! The example clients' themes as a browser sees them: the repository's
//! client files (`config/clients/`, only their redirect URIs and secrets
//! replaced) with the repository's themes (`themes/`), on the real server.
//! Each login page shows its client's logo, colours and product name, in
//! English and in French, through the default theme's templates; the files a
//! theme does not have come from the default theme; the customer space's
//! emailed code, sent over SMTP to a real SMTP server process, names its
//! product.

mod support;

use idp_core::client::{Client, ClientSecretHash};
use idp_mail::testing::SmtpSink;
use support::*;

/// Each themed example client: its id (also its theme's name), its `name`,
/// and its product name in English and in French.
const THEMED: [(&str, &str, &str, &str); 3] = [
    (
        "marketplace",
        "Cloud Marketplace",
        "Orchardly Market",
        "Marché Orchardly",
    ),
    (
        "customer-space",
        "Customer Space",
        "Lanternhouse",
        "Lanternhouse",
    ),
    (
        "cloud-console",
        "Cloud Console",
        "Nimbalt Console",
        "Console Nimbalt",
    ),
];

/// The example client files of `config/clients/` as the provider loads them,
/// with this harness's redirect URIs and secret.
fn example_clients() -> Vec<Client> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/clients");
    idp::config::load_client_files(Some(&dir), &idp_core::assurance::Levels::builtin())
        .expect("the example client files load")
        .into_iter()
        .map(|(_, mut c)| {
            c.redirect_uris = vec![REDIRECT.into()];
            c.post_logout_redirect_uris = vec![POST_LOGOUT.into()];
            if c.secret_hash.is_some() {
                c.secret_hash = Some(ClientSecretHash::of(SECRET));
            }
            c
        })
        .collect()
}

fn options() -> AppOptions {
    AppOptions {
        clients: example_clients(),
        themes_dir: Some(repo_themes_dir()),
        // WebAuthn, in the marketplace's and the console's flows, needs a host name.
        localhost: true,
        ..AppOptions::default()
    }
}

/// A file of the repository's `themes/`.
fn theme_file(path: &str) -> Vec<u8> {
    std::fs::read(repo_themes_dir().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// GETs an asset: its content type and bytes.
async fn asset(app: &TestApp, path: &str) -> (String, Vec<u8>) {
    let res = reqwest::get(app.url(path)).await.unwrap();
    assert_eq!(res.status(), 200, "{path}");
    let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
    (content_type, res.bytes().await.unwrap().to_vec())
}

/// The first login page of `client` in a browser speaking `lang`.
async fn login_page(app: &TestApp, client: &str, lang: &str) -> String {
    let (_, challenge) = pkce();
    let browser = Browser::with_language(lang);
    let (res, _) = browser
        .follow(app, &authorize_url(app, client, Some(&challenge), &[]))
        .await;
    assert_eq!(res.status(), 200, "{client}: the identifier page");
    res.text().await.unwrap()
}

async fn example_login_pages_show_their_theme(app: &TestApp) {
    for (id, name, brand_en, brand_fr) in THEMED {
        assert_eq!(
            app.state.provider.clients.get(id).expect(id).theme,
            id,
            "{id}'s file names its theme"
        );
        for (lang, brand, label) in [
            ("en", brand_en, "Email or customer identifier"),
            ("fr", brand_fr, "Adresse e-mail ou identifiant client"),
        ] {
            let html = login_page(app, id, lang).await;
            assert!(
                html.contains(&format!(
                    r#"<img class="masthead__logo" src="/assets/{id}/logo.svg""#
                )),
                "{id} {lang}: its logo: {html}"
            );
            assert!(
                html.contains(&format!(
                    r#"<link rel="stylesheet" href="/assets/{id}/theme.css">"#
                )),
                "{id} {lang}: its colours"
            );
            assert!(
                html.contains(&format!(r#"<p class="masthead__name">{brand}</p>"#)),
                "{id} {lang}: its product name: {html}"
            );
            assert!(
                html.contains(&format!(" · {brand}</title>")),
                "{id} {lang}: the window title"
            );
            // The page itself is the default theme's identifier page.
            assert!(html.contains(label), "{id} {lang}: {html}");
            assert!(html.contains(r#"autocomplete="username""#));
            assert!(html.contains(name), "{id} {lang}: the client is named");
        }

        // Its own logo and colours; the style sheet of the default theme.
        let (content_type, logo) = asset(app, &format!("/assets/{id}/logo.svg")).await;
        assert_eq!(content_type, "image/svg+xml");
        assert_eq!(logo, theme_file(&format!("{id}/static/logo.svg")));
        assert_ne!(logo, asset(app, "/assets/default/logo.svg").await.1);
        let (content_type, colours) = asset(app, &format!("/assets/{id}/theme.css")).await;
        assert_eq!(content_type, "text/css; charset=utf-8");
        assert_eq!(colours, theme_file(&format!("{id}/static/theme.css")));
        assert_eq!(
            asset(app, &format!("/assets/{id}/style.css")).await.1,
            asset(app, "/assets/default/style.css").await.1,
            "{id} inherits style.css"
        );
        assert_eq!(
            asset(app, &format!("/assets/{id}/webauthn.js")).await.1,
            asset(app, "/assets/default/webauthn.js").await.1,
            "{id} inherits the scripts"
        );
    }

    // A client without a theme keeps the default one, named after the client.
    let html = login_page(app, "conf", "en").await;
    assert!(html.contains(r#"src="/assets/default/logo.svg""#), "{html}");
    assert!(html.contains(r#"<p class="masthead__name">Portal conf</p>"#));
    for (_, _, brand_en, _) in THEMED {
        assert!(!html.contains(brand_en), "{html}");
    }
}

matrix_with!(
    crate::options(),
    |s: &mut idp::config::Settings| s.upstreams = crate::support::repo_upstreams();
    example_login_pages_show_their_theme,
);

/// The customer space's flow (identifier, password, emailed code) over
/// SMTP: the email's HTML part is headed with the theme's product name and
/// its text part signed with it; the subject names the client.
async fn customer_space_email_names_its_product(backend: Backend) {
    let sink = SmtpSink::start();
    let app = spawn_app_with_smtp(
        backend,
        options(),
        "Sign-in <no-reply@example.test>",
        sink.port(),
        |s| s.upstreams = repo_upstreams(),
    )
    .await;
    let (verifier, challenge) = pkce();
    let browser = Browser::new();
    let to = browser
        .login(
            &app,
            &authorize_url(&app, "customer-space", Some(&challenge), &[]),
            "alice@example.com",
            PASSWORD,
        )
        .await;
    assert!(to.starts_with("/login/"), "the code step follows: {to}");
    let (res, _) = browser.follow(&app, &app.url(&to)).await;
    let html = res.text().await.unwrap();
    assert!(html.contains(r#"<p class="masthead__name">Lanternhouse</p>"#));
    let mail = wait_for("the emailed code", || sink.messages().into_iter().next()).await;
    let subject = mail.header("Subject").unwrap_or_default().to_owned();
    assert!(subject.contains("Customer Space"), "{subject}");
    let body = mail.html.as_deref().expect("an HTML part");
    assert!(
        body.contains(">Lanternhouse</p>"),
        "the HTML part is headed with the product name: {body}"
    );
    let text = mail.text.as_deref().expect("a text part");
    assert!(
        text.replace("\r\n", "\n").contains("-- \nLanternhouse\n"),
        "the text part is signed with the product name: {text}"
    );
    let code = text
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .expect("a 6-digit code")
        .to_owned();
    let res = browser.submit(&app, &html, &[("code", &code)]).await;
    let callback = location(&res);
    let code = query_param(&callback, "code").expect("signed in with the emailed code");
    let _ = exchange_code(&app, "customer-space", &code, Some(&verifier)).await;
    app.cleanup().await;
}

on_both_backends!(customer_space_email_names_its_product);
