//! Messages to users as they leave the server: the themed notifier renders a
//! login code with a client's theme in the user's language and submits it to
//! a real SMTP server process (aiosmtpd), which is read back and parsed.

use idp::notifier::ThemedNotifier;
use idp_core::clock::SettableClock;
use idp_core::domain::Email;
use idp_core::notify::{Message, Notification, Notifier};
use idp_mail::testing::SmtpSink;
use idp_mail::{SmtpConfig, SmtpSender, SmtpTls};
use idp_sms::OutboxSmsSender;
use std::path::PathBuf;
use std::sync::Arc;

/// A folder under the system temp folder, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "idp-notifications-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    fn write(&self, relative: &str, content: &str) {
        let path = self.0.join(relative);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("create dirs");
        std::fs::write(path, content).expect("write file");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_code_in_french_with_the_client_theme_reaches_a_real_smtp_server() {
    let sink = SmtpSink::start();
    let clock = Arc::new(SettableClock::starting_now());
    let email = SmtpSender::new(
        &SmtpConfig {
            host: sink.host().into(),
            port: sink.port(),
            tls: SmtpTls::None,
            credentials: None,
            from: "Marketplace <no-reply@marketplace.example>".into(),
        },
        clock.clone(),
    )
    .expect("valid SMTP config");
    let dir = TempDir::new();
    // The client's theme changes one French message and inherits the rest.
    dir.write(
        "themes/marketplace/messages/fr.toml",
        "email.automatic = \"Message automatique de la Marketplace : n’y répondez pas.\"\n",
    );
    let sms_file = dir.0.join("sms-outbox.jsonl");
    let sms = OutboxSmsSender::new(&sms_file, clock).expect("SMS outbox");
    let notifier =
        ThemedNotifier::load(Some(&dir.0.join("themes")), Arc::new(email), Arc::new(sms))
            .expect("themes load");

    let notification = Notification {
        message: Message::LoginCode {
            code: "482913".into(),
            valid_minutes: 10,
        },
        locale: "fr".into(),
        theme: "marketplace".into(),
        client_name: "Marketplace <Pro> & Co".into(),
    };
    let to = Email::parse("alice@example.com").expect("valid email");
    notifier
        .email(&to, &notification)
        .await
        .unwrap_or_else(|e| panic!("delivery failed: {e}\n{}", sink.logs()));

    let messages = sink.messages();
    assert_eq!(messages.len(), 1, "{}", sink.logs());
    let m = &messages[0];
    assert_eq!(m.header("X-RcptTo"), Some("alice@example.com"));
    assert_eq!(m.header("To"), Some("alice@example.com"));
    assert_eq!(
        m.header("From"),
        Some("Marketplace <no-reply@marketplace.example>")
    );
    assert_eq!(
        m.header("Subject"),
        Some("Votre code de connexion à Marketplace <Pro> & Co")
    );
    assert_eq!(
        m.part_types,
        ["multipart/alternative", "text/plain", "text/html"]
    );
    assert!(m.defects.is_empty(), "{:?}", m.defects);

    let text = m.text.as_deref().expect("a text part");
    assert!(text.contains("\n    482913\n"), "{text}");
    assert!(
        text.contains("Saisissez ce code pour vous connecter à Marketplace <Pro> & Co\u{a0}:"),
        "{text}"
    );
    assert!(text.contains("valable 10\u{a0}minutes"), "{text}");
    assert!(
        text.contains("Message automatique de la Marketplace"),
        "the client's theme: {text}"
    );

    let html = m.html.as_deref().expect("an HTML part");
    assert!(html.contains("<html lang=\"fr\">"), "{html}");
    assert!(html.contains(">482913</p>"), "{html}");
    assert!(
        html.contains("Marketplace &lt;Pro&gt; &amp; Co") && !html.contains("<Pro>"),
        "escaped client name: {html}"
    );
    assert!(html.contains("valable 10\u{a0}minutes"), "{html}");
    assert!(
        html.contains("Message automatique de la Marketplace"),
        "the client's theme: {html}"
    );

    // The same message by SMS: one short French line.
    notifier
        .sms("+33612345678", &notification)
        .await
        .expect("SMS written");
    let line: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&sms_file)
            .expect("SMS outbox")
            .trim_end(),
    )
    .expect("one JSON line");
    assert_eq!(line["to"], "+33612345678");
    assert_eq!(
        line["text"],
        "482913 est votre code de connexion à Marketplace <Pro> & Co. Il expire dans 10\u{a0}min. Ne le communiquez à personne."
    );
}
