//! The email adapters against the real thing: `SmtpSender` submits to an
//! `aiosmtpd` process started by the test, `OutboxSender` writes files; both
//! messages are read back with an independent MIME parser.

use idp_core::clock::SettableClock;
use idp_core::notify::{DeliveryError, EmailSender, OutgoingEmail};
use idp_mail::testing::{SmtpSink, parse_email_file};
use idp_mail::{OutboxSender, SmtpConfig, SmtpSender, SmtpTls};
use std::sync::Arc;

fn clock() -> Arc<SettableClock> {
    Arc::new(SettableClock::new(
        time::OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("valid time"),
    ))
}

fn login_code_email() -> OutgoingEmail {
    OutgoingEmail {
        to: "alice@example.com".into(),
        subject: "Votre code de connexion à Marketplace".into(),
        text: "Voici votre code : 482913\nIl est valable 10 minutes.\n".into(),
        html: Some("<p>Voici votre code&nbsp;: <strong>482913</strong></p>\n".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_sender_delivers_a_multipart_message_to_a_real_server() {
    let sink = SmtpSink::start();
    let sender = SmtpSender::new(
        &SmtpConfig {
            host: sink.host().into(),
            port: sink.port(),
            tls: SmtpTls::None,
            credentials: None,
            from: "Sign-in <no-reply@idp.example>".into(),
        },
        clock(),
    )
    .expect("valid config");

    sender
        .send_email(&login_code_email())
        .await
        .unwrap_or_else(|e| panic!("delivery failed: {e}\n{}", sink.logs()));
    sender
        .send_email(&OutgoingEmail {
            to: "bob@example.com".into(),
            subject: "Plain only".into(),
            text: "No HTML here.".into(),
            html: None,
        })
        .await
        .expect("second delivery");

    let messages = sink.messages();
    assert_eq!(messages.len(), 2, "{}", sink.logs());
    let m = messages
        .iter()
        .find(|m| m.header("X-RcptTo") == Some("alice@example.com"))
        .expect("a message for alice");
    assert_eq!(m.header("X-MailFrom"), Some("no-reply@idp.example"));
    assert_eq!(m.header("To"), Some("alice@example.com"));
    assert_eq!(m.header("From"), Some("Sign-in <no-reply@idp.example>"));
    assert_eq!(
        m.header("Subject"),
        Some("Votre code de connexion à Marketplace")
    );
    assert_eq!(
        m.header("Date"),
        Some("Fri, 15 Jan 2027 08:00:00 +0000"),
        "the date comes from the injected clock"
    );
    let id = m.header("Message-ID").expect("a Message-ID");
    assert!(id.starts_with('<') && id.ends_with("@idp.example>"), "{id}");
    assert_eq!(m.content_type, "multipart/alternative");
    assert_eq!(
        m.part_types,
        ["multipart/alternative", "text/plain", "text/html"]
    );
    assert_eq!(
        m.text.as_deref(),
        Some("Voici votre code : 482913\nIl est valable 10 minutes.\n")
    );
    assert_eq!(
        m.html.as_deref(),
        Some("<p>Voici votre code&nbsp;: <strong>482913</strong></p>\n")
    );
    assert!(m.defects.is_empty(), "{:?}", m.defects);

    let plain = messages
        .iter()
        .find(|m| m.header("X-RcptTo") == Some("bob@example.com"))
        .expect("a message for bob");
    assert_eq!(plain.content_type, "text/plain");
    assert_eq!(plain.html, None);
    assert_eq!(
        plain.text.as_deref().map(str::trim_end),
        Some("No HTML here.")
    );

    // Two senders' ids never collide.
    assert_ne!(plain.header("Message-ID"), m.header("Message-ID"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_sender_reports_an_unreachable_server() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port();
    let sender = SmtpSender::new(
        &SmtpConfig {
            host: "127.0.0.1".into(),
            port,
            tls: SmtpTls::None,
            credentials: None,
            from: "no-reply@idp.example".into(),
        },
        clock(),
    )
    .expect("valid config");
    let error = sender
        .send_email(&login_code_email())
        .await
        .expect_err("nothing listens");
    assert!(matches!(error, DeliveryError::Failed(_)), "{error}");
    assert!(
        error.to_string().contains(&format!("127.0.0.1:{port}")),
        "{error}"
    );

    let mut bad = login_code_email();
    bad.to = "not an address".into();
    assert!(matches!(
        sender.send_email(&bad).await,
        Err(DeliveryError::Invalid(_))
    ));
}

#[tokio::test]
async fn outbox_sender_writes_one_private_eml_file_per_message() {
    let dir = std::env::temp_dir().join(format!("idp-mail-outbox-{}", uuid_like()));
    let outbox_dir = dir.join("data/outbox");
    let sender = OutboxSender::new(&outbox_dir, "Sign-in <no-reply@idp.example>", clock())
        .expect("creates the folder");
    assert!(outbox_dir.is_dir());
    assert_eq!(sender.dir(), outbox_dir);

    sender
        .send_email(&login_code_email())
        .await
        .expect("written");
    sender
        .send_email(&login_code_email())
        .await
        .expect("a second message at the same instant gets its own file");

    let mut files: Vec<_> = std::fs::read_dir(&outbox_dir)
        .expect("list the outbox")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    for file in &files {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 name");
        assert!(
            name.starts_with("20270115T080000.000Z-") && name.ends_with(".eml"),
            "{name}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(file)
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        let m = parse_email_file(file);
        assert_eq!(m.header("To"), Some("alice@example.com"));
        assert_eq!(m.header("From"), Some("Sign-in <no-reply@idp.example>"));
        assert_eq!(
            m.header("Subject"),
            Some("Votre code de connexion à Marketplace")
        );
        assert_eq!(m.header("Date"), Some("Fri, 15 Jan 2027 08:00:00 +0000"));
        assert!(m.header("Message-ID").is_some());
        assert_eq!(m.content_type, "multipart/alternative");
        assert!(m.text.as_deref().is_some_and(|t| t.contains("482913")));
        assert!(
            m.html
                .as_deref()
                .is_some_and(|h| h.contains("<strong>482913</strong>"))
        );
        assert!(m.defects.is_empty(), "{:?}", m.defects);
    }
    std::fs::remove_dir_all(&dir).expect("clean up");

    // A folder that cannot be created is a setup error naming it.
    let blocker = std::env::temp_dir().join(format!("idp-mail-blocker-{}", uuid_like()));
    std::fs::write(&blocker, "a file, not a folder").expect("write");
    let error = OutboxSender::new(blocker.join("outbox"), "no-reply@idp.example", clock())
        .expect_err("a file is in the way");
    assert!(error.to_string().contains("idp-mail-blocker-"), "{error}");
    std::fs::remove_file(&blocker).expect("clean up");
}

fn uuid_like() -> String {
    idp_core::random::token()
}
