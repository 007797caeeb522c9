//! Login codes delivered for real during a flow: the emailed code through
//! SMTP to a real SMTP server process (aiosmtpd) started by the test, the
//! SMS code through the generic HTTP SMS adapter to a local HTTP server
//! started by the test. Each code is read where it arrived and typed in.

mod support;

use axum::routing::post;
use idp::config::{MailSettings, MailTransport, SmsSettings, SmsTransport, SmtpTlsMode};
use idp_mail::testing::SmtpSink;
use std::sync::{Arc, Mutex};
use support::*;

const FLOW: &str = r#"[{"name": "d", "acr": "checked", "steps": ["identifier", "password", "email_code|sms_code"]}]"#;

/// A stand-in SMS provider: records each request's auth header and body.
async fn sms_provider() -> (String, Arc<Mutex<Vec<(String, String)>>>) {
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/messages",
        post(move |headers: axum::http::HeaderMap, body: String| {
            let record = record.clone();
            async move {
                let auth = headers
                    .get("x-api-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                record.lock().unwrap().push((auth, body));
                axum::http::StatusCode::ACCEPTED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/messages", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

fn six_digits(text: &str) -> String {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .unwrap_or_else(|| panic!("no 6-digit code in {text}"))
        .to_owned()
}

/// Identifier and password, then the code page of the current method.
async fn code_page(app: &TestApp, browser: &Browser) -> String {
    let (_, challenge) = pkce();
    let (res, _) = browser
        .follow(app, &authorize_url(app, "space", Some(&challenge), &[]))
        .await;
    let html = res.text().await.unwrap();
    let res = browser
        .submit(app, &html, &[("identifier", "alice@example.com")])
        .await;
    let (res, _) = browser.follow(app, &app.url(&location(&res))).await;
    let html = res.text().await.unwrap();
    let res = browser.submit(app, &html, &[("password", PASSWORD)]).await;
    let (res, _) = browser.follow(app, &app.url(&location(&res))).await;
    assert_eq!(res.status(), 200);
    res.text().await.unwrap()
}

async fn codes_arrive_by_smtp_and_by_the_http_sms_provider(backend: Backend) {
    let sink = SmtpSink::start();
    let (sms_url, sms_seen) = sms_provider().await;
    let smtp_port = sink.port();
    let options = AppOptions {
        clients: vec![client_with_flows("space", FLOW)],
        configured_delivery: true,
        ..AppOptions::default()
    };
    let app = spawn_app_adjusted(backend, options, move |s| {
        s.mail = MailSettings {
            transport: MailTransport::Smtp,
            from: Some("Customer Space <no-reply@space.example>".into()),
            smtp_host: Some("127.0.0.1".into()),
            smtp_port: Some(smtp_port),
            smtp_tls: SmtpTlsMode::None,
            ..MailSettings::default()
        };
        s.sms = SmsSettings {
            transport: SmsTransport::Http,
            url: Some(sms_url),
            auth_header_name: Some("X-Api-Key".into()),
            auth_header_value: Some("provider-key-123".into()),
            ..SmsSettings::default()
        };
    })
    .await;
    app.state
        .provider
        .ports
        .users
        .set_phone(app.user.id, Some("+33612345678"), true)
        .await
        .unwrap();

    // Email: through SMTP to the server process, read back from its mailbox.
    let browser = Browser::new();
    let html = code_page(&app, &browser).await;
    assert!(Form::parse(&html).unwrap().action.ends_with("/email_code"));
    let mails = sink.messages();
    assert_eq!(mails.len(), 1, "one email");
    let mail = &mails[0];
    assert!(mail.header("To").unwrap().contains("Alice@Example.com"));
    let code = six_digits(mail.text.as_deref().unwrap());
    assert!(mail.html.as_deref().unwrap().contains(&code));
    let res = browser.submit(&app, &html, &[("code", &code)]).await;
    assert!(
        query_param(&location(&res), "code").is_some(),
        "signed in with the emailed code"
    );

    // SMS: through the HTTP adapter to the provider, read from its request.
    let browser = Browser::new();
    let html = code_page(&app, &browser).await;
    let switch = html
        .split("<form")
        .find(|f| f.contains("value=\"sms_code\""))
        .map(|f| format!("<form{f}"))
        .expect("SMS offered");
    let res = browser.submit(&app, &switch, &[]).await;
    let (res, _) = browser.follow(&app, &app.url(&location(&res))).await;
    let html = res.text().await.unwrap();
    let requests = sms_seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 1, "one SMS");
    let (auth, body) = &requests[0];
    assert_eq!(auth, "provider-key-123");
    let json: serde_json::Value = serde_json::from_str(body).expect("the default JSON body");
    assert_eq!(json["to"], "+33612345678");
    let code = six_digits(json["text"].as_str().unwrap());
    let res = browser.submit(&app, &html, &[("code", &code)]).await;
    assert!(
        query_param(&location(&res), "code").is_some(),
        "signed in with the texted code"
    );
    app.cleanup().await;
}

mod sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn codes_arrive_by_smtp_and_by_the_http_sms_provider() {
        super::codes_arrive_by_smtp_and_by_the_http_sms_provider(super::Backend::Sqlite).await;
    }
}

mod postgres_redis {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn codes_arrive_by_smtp_and_by_the_http_sms_provider() {
        super::codes_arrive_by_smtp_and_by_the_http_sms_provider(super::Backend::Postgres).await;
    }
}
