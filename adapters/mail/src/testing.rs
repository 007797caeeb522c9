//! Test support: a real SMTP server process and a real MIME parser, for the
//! tests of this crate and of the server. Always compiled (it is small) so
//! other crates' tests can use it without a feature flag.
//!
//! [`SmtpSink`] runs Python's `aiosmtpd` with its stock `Mailbox` handler,
//! which stores every message it accepts in a Maildir; [`parse_email`] reads a
//! message back with Python's standard `email` package, an implementation
//! independent of the one that wrote it. Both need `python3` and the
//! `aiosmtpd` module (`python3 -m pip install aiosmtpd`, which `.ci/run`
//! does): when they are missing the tests fail with that instruction, they
//! are never skipped.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const INSTALL_HINT: &str = "the email tests need python3 with the aiosmtpd module: run `python3 -m pip install aiosmtpd` (.ci/run does)";

/// How many times, 50 ms apart, to try the port of a starting server (10 s).
const CONNECT_ATTEMPTS: u32 = 200;

/// A running `python3 -m aiosmtpd` on a free loopback port, writing what it
/// receives to a Maildir in a fresh temporary folder. Dropping it kills the
/// process and removes the folder.
pub struct SmtpSink {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl SmtpSink {
    /// Starts the server and waits (at most 10 s) until it accepts connections.
    ///
    /// # Panics
    /// When python3 or aiosmtpd is missing, or the server does not start.
    pub fn start() -> SmtpSink {
        check_aiosmtpd();
        let dir = std::env::temp_dir().join(format!(
            "idp-smtp-sink-{}",
            super::hex(&idp_core::random::bytes(8))
        ));
        std::fs::create_dir_all(&dir).expect("create the SMTP sink folder");
        let port = free_port();
        let log = |name: &str| {
            std::fs::File::create(dir.join(name)).expect("create the SMTP sink log file")
        };
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(dir.join("maildir"))
            .stdin(Stdio::null())
            .stdout(log("stdout.log"))
            .stderr(log("stderr.log"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 ({e}): {INSTALL_HINT}"));
        let mut sink = SmtpSink { child, port, dir };
        sink.wait_until_accepting();
        sink
    }

    fn wait_until_accepting(&mut self) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        for _ in 0..CONNECT_ATTEMPTS {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "aiosmtpd exited ({status}) before accepting connections: {}",
                    self.logs()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "aiosmtpd did not accept connections on {addr} within 10 s: {}",
            self.logs()
        );
    }

    /// What the server printed, for failure messages.
    pub fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!(
            "stdout: {}\nstderr: {}",
            read("stdout.log"),
            read("stderr.log")
        )
    }

    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every message received so far, as delivered (raw bytes), oldest first.
    pub fn raw_messages(&self) -> Vec<Vec<u8>> {
        let mut files = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(self.dir.join("maildir").join(sub)) else {
                continue;
            };
            for entry in entries.flatten() {
                let modified = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                files.push((modified, entry.path()));
            }
        }
        files.sort();
        files
            .into_iter()
            .map(|(_, path)| std::fs::read(&path).expect("read a delivered message"))
            .collect()
    }

    /// Every message received so far, parsed, oldest first.
    pub fn messages(&self) -> Vec<ParsedEmail> {
        self.raw_messages()
            .iter()
            .map(|raw| parse_email(raw))
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A message as Python's `email` package reads it (RFC 2047 words and
/// transfer encodings decoded).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ParsedEmail {
    /// Every header in order, with decoded values.
    pub headers: Vec<(String, String)>,
    /// The top-level content type (`multipart/alternative`, `text/plain`).
    pub content_type: String,
    /// The content type of every part, the top level first.
    pub part_types: Vec<String>,
    /// The `text/plain` body, decoded.
    pub text: Option<String>,
    /// The `text/html` body, decoded.
    pub html: Option<String>,
    /// Problems the parser found in the message (must be empty).
    pub defects: Vec<String>,
}

impl ParsedEmail {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

const PARSE_SCRIPT: &str = r#"
import email, email.policy, json, sys
msg = email.message_from_bytes(sys.stdin.buffer.read(), policy=email.policy.default)
def body(kind):
    part = msg.get_body(preferencelist=(kind,))
    return None if part is None else part.get_content()
defects = [repr(d) for part in msg.walk() for d in part.defects]
json.dump({
    "headers": [[k, str(v)] for k, v in msg.items()],
    "content_type": msg.get_content_type(),
    "part_types": [p.get_content_type() for p in msg.walk()],
    "text": body("plain"),
    "html": body("html"),
    "defects": defects,
}, sys.stdout)
"#;

/// Parses a raw RFC 5322 message with Python's standard `email` package.
///
/// # Panics
/// When python3 is missing or cannot parse the message.
pub fn parse_email(raw: &[u8]) -> ParsedEmail {
    let mut child = Command::new("python3")
        .args(["-c", PARSE_SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}): {INSTALL_HINT}"));
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(raw)
        .expect("write the message to python3");
    let output = child.wait_with_output().expect("python3 runs");
    assert!(
        output.status.success(),
        "python3 could not parse the message: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the parser prints JSON")
}

/// Parses a message file (an outbox `.eml`).
pub fn parse_email_file(path: &Path) -> ParsedEmail {
    parse_email(&std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())))
}

fn check_aiosmtpd() {
    let output = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}): {INSTALL_HINT}"));
    assert!(
        output.status.success(),
        "{INSTALL_HINT}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral loopback port")
        .port()
}
