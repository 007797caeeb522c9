//! The SMS adapters against the real thing: `HttpSmsSender` posts to an axum
//! server started by the test on a loopback port, which records every request;
//! `OutboxSmsSender` appends to a file.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::any;
use idp_core::clock::SettableClock;
use idp_core::notify::{DeliveryError, SmsSender};
use idp_core::secret::Secret;
use idp_sms::{AuthHeader, HttpSmsConfig, HttpSmsSender, OutboxSmsSender};
use std::sync::{Arc, Mutex};

/// A request as the provider received it.
#[derive(Debug, Clone)]
struct Recorded {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: String,
}

#[derive(Clone)]
struct Provider {
    requests: Arc<Mutex<Vec<Recorded>>>,
    status: StatusCode,
}

async fn record(
    State(p): State<Provider>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, &'static str) {
    p.requests.lock().expect("lock").push(Recorded {
        method,
        path: uri.path().to_owned(),
        headers,
        body,
    });
    (p.status, r#"{"id":"msg-1"}"#)
}

/// Starts a provider answering `status`; returns its base URL and its log.
async fn start_provider(status: StatusCode) -> (String, Arc<Mutex<Vec<Recorded>>>) {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route("/{*path}", any(record))
        .with_state(Provider {
            requests: requests.clone(),
            status,
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    (format!("http://{addr}"), requests)
}

fn config(base: &str) -> HttpSmsConfig {
    HttpSmsConfig {
        url: url::Url::parse(&format!("{base}/v1/messages")).expect("url"),
        auth_header: Some(AuthHeader {
            name: "X-Api-Key".into(),
            value: Secret::new("key-0123456789"),
        }),
        body_template: r#"{"from":"IDP","destination":"{to}","message":"{text}"}"#.into(),
        content_type: "application/json; charset=utf-8".into(),
    }
}

#[tokio::test]
async fn http_sender_posts_the_rendered_template_with_the_auth_header() {
    let (base, requests) = start_provider(StatusCode::ACCEPTED).await;
    let sender = HttpSmsSender::new(&config(&base)).expect("valid config");
    sender
        .send_sms("+33612345678", "Votre code : 482913\n\"Marketplace\"")
        .await
        .expect("delivered");

    let requests = requests.lock().expect("lock").clone();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.method, Method::POST);
    assert_eq!(r.path, "/v1/messages");
    assert_eq!(
        r.headers.get("x-api-key").and_then(|v| v.to_str().ok()),
        Some("key-0123456789")
    );
    assert_eq!(
        r.headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(
        r.body,
        r#"{"from":"IDP","destination":"+33612345678","message":"Votre code : 482913\n\"Marketplace\""}"#
    );
    let parsed: serde_json::Value = serde_json::from_str(&r.body).expect("valid JSON");
    assert_eq!(parsed["message"], "Votre code : 482913\n\"Marketplace\"");
}

#[tokio::test]
async fn http_sender_reports_a_refusal_without_the_credential() {
    let (base, requests) = start_provider(StatusCode::INTERNAL_SERVER_ERROR).await;
    let sender = HttpSmsSender::new(&config(&base)).expect("valid config");
    let error = sender
        .send_sms("+33612345678", "Code 482913")
        .await
        .expect_err("the provider failed");
    assert!(matches!(error, DeliveryError::Failed(_)), "{error}");
    let text = error.to_string();
    assert!(text.contains("500"), "{text}");
    assert!(!text.contains("key-0123456789"), "{text}");
    assert_eq!(requests.lock().expect("lock").len(), 1);

    // Nothing listening: a failure too, naming the endpoint only.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port();
    let mut unreachable = config(&format!("http://127.0.0.1:{port}"));
    unreachable.url.set_query(Some("api_key=in-the-query"));
    let error = HttpSmsSender::new(&unreachable)
        .expect("valid config")
        .send_sms("+33612345678", "Code 482913")
        .await
        .expect_err("nothing listens");
    assert!(matches!(error, DeliveryError::Failed(_)), "{error}");
    let text = error.to_string();
    assert!(
        !text.contains("in-the-query") && !text.contains("key-0123456789"),
        "{text}"
    );
}

#[tokio::test]
async fn outbox_appends_one_private_json_line_per_message() {
    let dir = std::env::temp_dir().join(format!("idp-sms-outbox-{}", idp_core::random::token()));
    let path = dir.join("data/sms-outbox.jsonl");
    let clock = Arc::new(SettableClock::new(
        time::OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time"),
    ));
    let sender = OutboxSmsSender::new(&path, clock).expect("creates the folder");
    assert_eq!(sender.path(), path);
    sender
        .send_sms("+33612345678", "Code 111111")
        .await
        .expect("written");
    sender
        .send_sms("+33700000000", "Ligne\navec \"guillemets\"")
        .await
        .expect("written");

    let text = std::fs::read_to_string(&path).expect("read");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["to"], "+33612345678");
    assert_eq!(lines[0]["text"], "Code 111111");
    assert_eq!(lines[0]["at"], "2027-01-15T08:00:00Z");
    assert_eq!(lines[1]["to"], "+33700000000");
    assert_eq!(lines[1]["text"], "Ligne\navec \"guillemets\"");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    std::fs::remove_dir_all(&dir).expect("clean up");
}
