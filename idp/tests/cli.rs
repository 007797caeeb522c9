//! The `idp` command line, run as the built binary in a temporary folder with
//! its own `idp.toml` (SQLite in the folder, no `IDP_*` variables inherited):
//! `config check` and its error messages, `user create` / `user list`,
//! `keys rotate` (old keys stay published), `keys new-kek`, `migrate`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A scratch folder with `idp.toml` and a `clients/` folder; removed on drop.
struct Workspace {
    dir: PathBuf,
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

impl Workspace {
    /// A folder with a valid configuration (no clients yet) plus `extra` lines.
    fn new(extra: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("idp-cli-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("clients")).unwrap();
        let ws = Self { dir };
        ws.write(
            "idp.toml",
            &format!(
                "# written by the cli tests\ndata_dir = {}\nclients_dir = \"clients\"\n{extra}\n",
                toml_str(ws.data_dir().to_str().unwrap())
            ),
        );
        ws
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn config(&self) -> PathBuf {
        self.dir.join("idp.toml")
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.dir.join(rel);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Runs `idp --config <idp.toml> args...`, with `stdin` piped in if given.
    fn idp(&self, args: &[&str], stdin: Option<&str>) -> Run {
        self.idp_with_config(&self.config(), args, stdin)
    }

    fn idp_with_config(&self, config: &Path, args: &[&str], stdin: Option<&str>) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_idp"));
        cmd.current_dir(&self.dir)
            .arg("--config")
            .arg(config)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("IDP_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd.spawn().expect("run the idp binary");
        if let Some(input) = stdin {
            use std::io::Write;
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(input.as_bytes()).unwrap();
        }
        Run(child.wait_with_output().unwrap(), args.join(" "))
    }

    /// A client secret and its `secret_hash` line, from `idp client secret`.
    fn client_secret(&self) -> (String, String) {
        let out = self.idp(&["client", "secret"], None).ok();
        let secret = out
            .lines()
            .find_map(|l| {
                l.split(": ")
                    .nth(1)
                    .filter(|_| l.starts_with("client secret"))
            })
            .expect("the secret line")
            .trim()
            .to_owned();
        let line = out
            .lines()
            .find(|l| l.starts_with("secret_hash = \""))
            .expect("the secret_hash line")
            .to_owned();
        (secret, line)
    }
}

/// A finished command and how it was called.
struct Run(Output, String);

impl Run {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }

    /// Asserts success; returns stdout.
    fn ok(&self) -> String {
        assert!(
            self.0.status.success(),
            "`idp {}` failed: {}\nstderr: {}",
            self.1,
            self.0.status,
            self.stderr()
        );
        self.stdout()
    }

    /// Asserts a non-zero exit; returns stderr.
    fn fails(&self) -> String {
        assert!(
            !self.0.status.success(),
            "`idp {}` should have failed; stdout: {}",
            self.1,
            self.stdout()
        );
        assert_ne!(self.0.status.code(), Some(0));
        self.stderr()
    }
}

fn confidential_client(secret_hash_line: &str) -> String {
    format!(
        "client_id = \"portal\"\nname = \"Portal\"\ntype = \"confidential\"\n{secret_hash_line}\n\
         redirect_uris = [\"https://portal.example/cb\", \"http://127.0.0.1:8081/cb\"]\n\
         post_logout_redirect_uris = [\"https://portal.example/bye\"]\n\
         grant_types = [\"authorization_code\", \"refresh_token\", \"client_credentials\"]\n"
    )
}

const PUBLIC_CLIENT: &str = "client_id = \"spa\"\nname = \"Single page\"\ntype = \"public\"\n\
     redirect_uris = [\"https://spa.example/cb\"]\n";

#[test]
fn config_check_accepts_a_good_configuration() {
    let ws = Workspace::new("");
    let (secret, hash_line) = ws.client_secret();
    assert!(secret.len() >= 32, "{secret}");
    assert!(
        !hash_line.contains(&secret),
        "only the hash goes into the file"
    );
    ws.write("clients/portal.toml", &confidential_client(&hash_line));
    ws.write("clients/spa.toml", PUBLIC_CLIENT);
    let out = ws.idp(&["config", "check"], None).ok();
    assert!(out.contains("configuration OK"), "{out}");
    assert!(out.contains("2 client(s)"), "{out}");
    assert!(out.contains(ws.config().to_str().unwrap()), "{out}");
    assert!(!out.contains(&secret));
    // Two runs of `client secret` give different secrets.
    assert_ne!(ws.client_secret().0, secret);
}

#[test]
fn config_check_names_the_file_and_field_of_each_error() {
    // An http redirect URI on a non-loopback host.
    let ws = Workspace::new("");
    let file = ws.write(
        "clients/portal.toml",
        "client_id = \"portal\"\nname = \"Portal\"\ntype = \"public\"\n\
         redirect_uris = [\"http://portal.example/cb\"]\n",
    );
    let err = ws.idp(&["config", "check"], None).fails();
    assert!(err.contains(file.to_str().unwrap()), "{err}");
    assert!(err.contains("redirect_uris[0]"), "{err}");

    // An unknown key in idp.toml.
    let ws = Workspace::new("colour = \"red\"");
    let err = ws.idp(&["config", "check"], None).fails();
    assert!(err.contains(ws.config().to_str().unwrap()), "{err}");
    assert!(err.contains("colour"), "{err}");

    // A malformed secret_hash.
    let ws = Workspace::new("");
    let file = ws.write(
        "clients/portal.toml",
        &confidential_client("secret_hash = \"md5:0123456789abcdef\""),
    );
    let err = ws.idp(&["config", "check"], None).fails();
    assert!(err.contains(file.to_str().unwrap()), "{err}");
    assert!(err.contains("secret_hash"), "{err}");

    // An unknown key in a client file.
    let ws = Workspace::new("");
    let file = ws.write(
        "clients/spa.toml",
        &format!("{PUBLIC_CLIENT}redirect_uri = \"https://spa.example/cb\"\n"),
    );
    let err = ws.idp(&["config", "check"], None).fails();
    assert!(err.contains(file.to_str().unwrap()), "{err}");
    assert!(err.contains("redirect_uri"), "{err}");

    // A --config file that does not exist.
    let ws = Workspace::new("");
    let missing = ws.dir.join("nope.toml");
    let err = ws
        .idp_with_config(&missing, &["config", "check"], None)
        .fails();
    assert!(err.contains(missing.to_str().unwrap()), "{err}");

    // A config that is not TOML at all.
    let ws = Workspace::new("");
    ws.write("idp.toml", "this is = = not toml\n");
    let err = ws.idp(&["config", "check"], None).fails();
    assert!(err.contains(ws.config().to_str().unwrap()), "{err}");
}

/// A flow claiming a level it cannot reach, or a level `idp.toml` does not
/// declare, is refused naming the client file and the flow's `acr`.
#[test]
fn config_check_refuses_a_level_a_flow_cannot_reach() {
    let flow = |acr: &str, steps: &str| {
        format!("{PUBLIC_CLIENT}[[login.flows]]\nname = \"f\"\nacr = \"{acr}\"\nsteps = {steps}\n")
    };
    // An emailed code never counts toward AAL2.
    let ws = Workspace::new("");
    let file = ws.write(
        "clients/spa.toml",
        &flow("2", r#"["identifier", "password", "email_code"]"#),
    );
    let err = ws.idp(&["config", "check"], None).fails();
    assert!(err.contains(file.to_str().unwrap()), "{err}");
    assert!(err.contains("login.flows[0].acr"), "{err}");
    assert!(err.contains("AAL2"), "{err}");
    // Nor does an emailed link.
    let ws = Workspace::new("");
    ws.write(
        "clients/spa.toml",
        &flow("2", r#"["identifier", "password", "magic_link"]"#),
    );
    let err = ws.idp(&["config", "check"], None).fails();
    assert!(err.contains("login.flows[0].acr"), "{err}");
    // A phishing-resistant level needs WebAuthn or a passkey.
    let ws = Workspace::new("");
    ws.write(
        "clients/spa.toml",
        &flow("3", r#"["identifier", "password", "totp"]"#),
    );
    let err = ws.idp(&["config", "check"], None).fails();
    assert!(err.contains("login.flows[0].acr"), "{err}");
    assert!(err.contains("phishing"), "{err}");
    // A level idp.toml does not declare.
    let ws = Workspace::new("");
    ws.write(
        "clients/spa.toml",
        &flow("gold", r#"["identifier", "password"]"#),
    );
    let err = ws.idp(&["config", "check"], None).fails();
    assert!(err.contains("login.flows[0].acr"), "{err}");
    assert!(err.contains("unknown level \"gold\""), "{err}");
    // The same flows pass where they claim what they reach.
    let ws = Workspace::new("");
    ws.write(
        "clients/spa.toml",
        &flow("1", r#"["identifier", "password", "magic_link"]"#),
    );
    ws.idp(&["config", "check"], None).ok();
    // (WebAuthn needs a host name, not the default loopback address.)
    let ws = Workspace::new("issuer = \"http://localhost:8080\"");
    ws.write("clients/spa.toml", &flow("3", r#"["passkey"]"#));
    ws.idp(&["config", "check"], None).ok();
}

/// The repository's own configuration (`config/idp.toml`, its example
/// clients and their themes in `themes/`, found through `themes_dir =
/// "../themes"` relative to the file) passes `config check`, as `idp demo`
/// and `idp serve` load it; a client naming a theme the folder lacks fails it.
#[test]
fn config_check_accepts_the_repository_configuration() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let ws = Workspace::new("");
    let config = repo.join("config/idp.toml");
    let out = ws.idp_with_config(&config, &["config", "check"], None).ok();
    assert!(out.contains("configuration OK"), "{out}");
    assert!(out.contains("6 client(s)"), "{out}");
    assert!(
        !ws.data_dir().exists() && !ws.dir.join("data").exists(),
        "a check writes nothing"
    );

    // The same files with a theme the themes folder does not have.
    let copy = ws.dir.join("repo-config");
    std::fs::create_dir_all(copy.join("clients")).unwrap();
    let idp_toml = std::fs::read_to_string(&config).unwrap().replace(
        "themes_dir = \"../themes\"",
        &format!(
            "themes_dir = {}",
            toml_str(repo.join("themes").to_str().unwrap())
        ),
    );
    assert!(
        idp_toml.contains("/themes\""),
        "config/idp.toml sets themes_dir"
    );
    std::fs::write(copy.join("idp.toml"), idp_toml).unwrap();
    std::fs::create_dir_all(copy.join("upstreams")).unwrap();
    for entry in std::fs::read_dir(repo.join("config/upstreams")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(
            &path,
            copy.join("upstreams").join(path.file_name().unwrap()),
        )
        .unwrap();
    }
    for entry in std::fs::read_dir(repo.join("config/clients")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("theme = \"marketplace\"", "theme = \"bazaar\"");
        std::fs::write(copy.join("clients").join(path.file_name().unwrap()), text).unwrap();
    }
    let err = ws
        .idp_with_config(&copy.join("idp.toml"), &["config", "check"], None)
        .fails();
    assert!(
        err.contains("marketplace") && err.contains("bazaar"),
        "{err}"
    );
}

/// A client file registering the account pages' client (`client_id =
/// "account"`) replaces the built-in one: `config check` refuses it, as
/// `idp serve` does, when it lacks what the account pages need (their
/// redirect URI, the `openid` scope), naming the file and the field; fixed,
/// it passes.
#[test]
fn config_check_runs_the_account_client_checks_of_serve() {
    let ws = Workspace::new("issuer = \"http://localhost:8080\"");
    let account = |redirect_uris: &str, scopes: &str| {
        format!(
            "client_id = \"account\"\nname = \"My account\"\ntype = \"public\"\n\
             redirect_uris = {redirect_uris}\nscopes = {scopes}\n"
        )
    };
    let file = ws.write(
        "clients/account.toml",
        &account("[\"http://localhost:8080/elsewhere\"]", "[\"openid\"]"),
    );
    let err = ws.idp(&["config", "check"], None).fails();
    assert!(err.contains(file.to_str().unwrap()), "{err}");
    assert!(err.contains("redirect_uris"), "{err}");
    assert!(
        err.contains("http://localhost:8080/account/callback"),
        "says which URI is needed: {err}"
    );

    // The scope the account pages ask for.
    ws.write(
        "clients/account.toml",
        &account(
            "[\"http://localhost:8080/account/callback\"]",
            "[\"email\"]",
        ),
    );
    let err = ws.idp(&["config", "check"], None).fails();
    assert!(err.contains(file.to_str().unwrap()), "{err}");
    assert!(err.contains("scopes"), "{err}");

    ws.write(
        "clients/account.toml",
        &account(
            "[\"http://localhost:8080/account/callback\"]",
            "[\"openid\", \"email\"]",
        ),
    );
    let out = ws.idp(&["config", "check"], None).ok();
    assert!(out.contains("configuration OK"), "{out}");
    assert!(out.contains("1 client(s)"), "{out}");
}

/// Two lower-case letters, five digits, `-idp`.
fn is_customer_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 11
        && b[..2].iter().all(u8::is_ascii_lowercase)
        && b[2..7].iter().all(u8::is_ascii_digit)
        && &s[7..] == "-idp"
}

#[test]
fn user_create_and_list() {
    let ws = Workspace::new("");
    let out = ws
        .idp(
            &[
                "user",
                "create",
                "--email",
                "a@example.com",
                "--name",
                "Ada",
                "--password-stdin",
            ],
            Some("a long enough password\n"),
        )
        .ok();
    let customer_id = out
        .split("customer identifier ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no customer identifier in {out}"))
        .to_owned();
    assert!(is_customer_id(&customer_id), "{customer_id}");
    assert!(!out.contains("a long enough password"));

    // The same email in another case.
    let err = ws
        .idp(
            &[
                "user",
                "create",
                "--email",
                "A@Example.COM",
                "--password-stdin",
            ],
            Some("another long password\n"),
        )
        .fails();
    assert!(err.contains("already exists"), "{err}");

    // Too short a password.
    let err = ws
        .idp(
            &[
                "user",
                "create",
                "--email",
                "b@example.com",
                "--password-stdin",
            ],
            Some("abc\n"),
        )
        .fails();
    assert!(err.contains("password"), "{err}");
    // An empty one, and a bad email.
    ws.idp(
        &[
            "user",
            "create",
            "--email",
            "c@example.com",
            "--password-stdin",
        ],
        Some(""),
    )
    .fails();
    let err = ws
        .idp(
            &[
                "user",
                "create",
                "--email",
                "not-an-email",
                "--password-stdin",
            ],
            Some("a long enough password\n"),
        )
        .fails();
    assert!(err.contains("--email"), "{err}");
    // The password never comes from the command line.
    ws.idp(&["user", "create", "--email", "d@example.com"], None)
        .fails();

    let out = ws.idp(&["user", "list"], None).ok();
    let rows: Vec<&str> = out
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(rows.len(), 1, "only the first user exists: {out}");
    assert!(rows[0].contains("a@example.com"), "{out}");
    assert!(rows[0].contains(&customer_id), "{out}");
    assert!(rows[0].contains("active"), "{out}");
}

/// The kid printed for `alg` by `keys rotate`.
fn kid_of(out: &str, alg: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{alg}: new active key ")))
        .unwrap_or_else(|| panic!("no {alg} key in {out}"))
        .trim()
        .to_owned()
}

#[tokio::test]
async fn keys_rotate_adds_keys_and_keeps_the_old_ones_published() {
    let ws = Workspace::new("");
    let out = ws.idp(&["keys", "rotate"], None).ok();
    let es1 = kid_of(&out, "ES256");
    let rs1 = kid_of(&out, "RS256");
    let out = ws.idp(&["keys", "rotate", "--alg", "ES256"], None).ok();
    let es2 = kid_of(&out, "ES256");
    assert!(!out.contains("RS256:"), "{out}");
    assert_ne!(es1, es2);
    let err = ws.idp(&["keys", "rotate", "--alg", "HS256"], None).fails();
    assert!(err.contains("HS256"), "{err}");

    // A node started on this database publishes the three keys and signs with the new ES256 one.
    let data = ws.data_dir();
    let cfg = idp::config::LoadedConfig {
        settings: idp::config::Settings {
            data_dir: data.clone(),
            ..Default::default()
        },
        source: None,
        issuer: "http://127.0.0.1:8080".into(),
        database_url: format!("sqlite://{}/idp.db?mode=rwc", data.display()),
        clients_dir: None,
        themes_dir: None,
        levels: idp_core::assurance::Levels::builtin(),
    };
    let state = idp::app::build_state(
        &cfg,
        idp_core::client::ClientRegistry::default(),
        idp::app::Overrides::default(),
    )
    .await
    .expect("a node starts on the rotated keys");
    let jwks: serde_json::Value =
        serde_json::from_str(state.provider.keys.current().jwks_json()).unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    for kid in [&es1, &es2, &rs1] {
        assert!(kids.contains(&kid.as_str()), "{kid} published: {kids:?}");
    }
    assert_eq!(kids.len(), 3, "{kids:?}");
}

#[test]
fn migrate_and_new_kek() {
    let ws = Workspace::new("");
    let out = ws.idp(&["migrate"], None).ok();
    assert!(out.contains("migrations applied"), "{out}");
    assert!(ws.data_dir().join("idp.db").is_file());
    // Idempotent.
    ws.idp(&["migrate"], None).ok();

    let kek = |ws: &Workspace| ws.idp(&["keys", "new-kek"], None).ok().trim().to_owned();
    let k1 = kek(&ws);
    assert_eq!(k1.len(), 43, "{k1}");
    assert!(
        k1.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "base64url: {k1}"
    );
    assert_ne!(k1, kek(&ws));
    // A printed key is accepted as key_encryption_key.
    let ws2 = Workspace::new(&format!("key_encryption_key = {}", toml_str(&k1)));
    ws2.idp(&["config", "check"], None).ok();
    let ws3 = Workspace::new("key_encryption_key = \"too-short\"");
    let err = ws3.idp(&["config", "check"], None).fails();
    assert!(err.contains("key_encryption_key"), "{err}");
}

/// Environment layering: `IDP_CONFIG` picks the file, `IDP_LOG` and the test
/// suite's `IDP_TEST_*` are not settings, `IDP_<KEY>` overrides a key
/// (`__` nests) and `IDP_<KEY>_FILE` reads a value from a file.
#[test]
fn environment_overrides_and_file_indirection() {
    let ws = Workspace::new("");
    let kek_file = ws.write("kek.txt", "   \n");
    let run = |envs: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_idp"));
        cmd.current_dir(&ws.dir).args(["config", "check"]);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("IDP_") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let config = ws.config();
    let config = config.to_str().unwrap();
    let out = run(&[
        ("IDP_CONFIG", config),
        ("IDP_LOG", "debug"),
        ("IDP_TEST_REDIS_URL", "redis://127.0.0.1:6379"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(config));
    // A nested override is applied (and checked).
    let out = run(&[("IDP_CONFIG", config), ("IDP_THROTTLE__WINDOW_SECS", "0")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("throttle"));
    let out = run(&[
        ("IDP_CONFIG", config),
        ("IDP_ISSUER", "https://login.example"),
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("issuer https://login.example"));
    // A secret from a file: a bad one is refused naming the key, a good one accepted.
    let out = run(&[
        ("IDP_CONFIG", config),
        ("IDP_KEY_ENCRYPTION_KEY_FILE", kek_file.to_str().unwrap()),
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("key_encryption_key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kek = ws.idp(&["keys", "new-kek"], None).ok();
    std::fs::write(&kek_file, format!("{}\n", kek.trim())).unwrap();
    let out = run(&[
        ("IDP_CONFIG", config),
        ("IDP_KEY_ENCRYPTION_KEY_FILE", kek_file.to_str().unwrap()),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A numeric setting from a file.
    let n = ws.write("memory.txt", "8192\n");
    let out = run(&[
        ("IDP_CONFIG", config),
        ("IDP_PASSWORD__MEMORY_KIB_FILE", n.to_str().unwrap()),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Recovery codes can be regenerated by an operator: ten new codes are
/// printed, different each time, and the previous ones stop existing.
#[test]
fn user_recovery_codes_are_regenerated() {
    let ws = Workspace::new("");
    ws.idp(
        &[
            "user",
            "create",
            "--email",
            "bob@example.com",
            "--password-stdin",
        ],
        Some("a long enough password\n"),
    )
    .ok();
    let first = ws
        .idp(
            &["user", "recovery-codes", "--email", "Bob@example.com"],
            None,
        )
        .ok();
    let codes: Vec<&str> = first.lines().collect();
    assert_eq!(codes.len(), 10, "{first}");
    assert!(
        codes
            .iter()
            .all(|c| c.len() == 11 && c.as_bytes()[5] == b'-'),
        "{first}"
    );
    let second = ws
        .idp(
            &["user", "recovery-codes", "--email", "bob@example.com"],
            None,
        )
        .ok();
    assert!(
        second.lines().all(|c| !codes.contains(&c)),
        "new codes each time"
    );
    let err = ws
        .idp(
            &["user", "recovery-codes", "--email", "nobody@example.com"],
            None,
        )
        .fails();
    assert!(err.contains("no user"), "{err}");
}

/// `[[upstreams]]` with its client (a flow starting with `upstream`) and the
/// secret in a file next to the config.
const UPSTREAM_CONFIG: &str = "[[upstreams]]\nname = \"partner\"\ndisplay_name = \"Partner SSO\"\n\
     issuer = \"https://sso.partner.example\"\nclient_id = \"cloud\"\n\
     client_secret_file = \"partner.secret\"\nclients = [\"portal\"]\n";

fn upstream_portal(secret_hash_line: &str) -> String {
    format!(
        "{}\n[[login.flows]]\nname = \"standard\"\nacr = \"1\"\nsteps = [\"identifier\", \"password\"]\n\
         [[login.flows]]\nname = \"partner\"\nacr = \"1\"\nsteps = [\"upstream\"]\n",
        confidential_client(secret_hash_line)
    )
}

/// Upstreams pass `config check` when consistent; each mistake names its
/// field, and the secret never appears in a message.
#[test]
fn config_check_of_upstreams() {
    let ws = Workspace::new(UPSTREAM_CONFIG);
    ws.write("partner.secret", "upstream-client-secret-value\n");
    let (_, hash) = ws.client_secret();
    ws.write("clients/portal.toml", &upstream_portal(&hash));
    let out = ws.idp(&["config", "check"], None).ok();
    assert!(out.contains("configuration OK"), "{out}");
    let cases: [(&str, &str, &str); 6] = [
        (
            "issuer = \"https://sso.partner.example\"",
            "issuer = \"http://sso.partner.example\"",
            "upstreams[0].issuer",
        ),
        (
            "name = \"partner\"",
            "name = \"Partner SSO\"",
            "upstreams[0].name",
        ),
        (
            "client_secret_file = \"partner.secret\"",
            "client_secret_file = \"missing.secret\"",
            "upstreams[0].client_secret_file",
        ),
        (
            "client_secret_file = \"partner.secret\"",
            "client_secret_env = \"IDP_TEST_NOT_SET_ANYWHERE\"",
            "upstreams[0].client_secret_env",
        ),
        (
            "clients = [\"portal\"]",
            "clients = [\"nobody\"]",
            "upstreams[0].clients[0]",
        ),
        (
            "client_id = \"cloud\"",
            "client_id = \"cloud\"\nscopes = [\"email\"]",
            "upstreams[0].scopes",
        ),
    ];
    for (from, to, field) in cases {
        let ws = Workspace::new(&UPSTREAM_CONFIG.replace(from, to));
        ws.write("partner.secret", "upstream-client-secret-value\n");
        ws.write("clients/portal.toml", &upstream_portal(&hash));
        let err = ws.idp(&["config", "check"], None).fails();
        assert!(err.contains(field), "{to}: {err}");
        assert!(!err.contains("upstream-client-secret-value"), "{err}");
    }
    // A flow with an upstream step no upstream lists, and the converse.
    let ws = Workspace::new("");
    ws.write("clients/portal.toml", &upstream_portal(&hash));
    let err = ws.idp(&["config", "check"], None).fails();
    assert!(
        err.contains("no [[upstreams]] entry lists this client"),
        "{err}"
    );
    let ws = Workspace::new(UPSTREAM_CONFIG);
    ws.write("partner.secret", "upstream-client-secret-value\n");
    ws.write("clients/portal.toml", &confidential_client(&hash));
    let err = ws.idp(&["config", "check"], None).fails();
    assert!(err.contains("upstreams[0].clients[0]"), "{err}");
    assert!(err.contains("\"upstream\" step"), "{err}");
}

/// `idp user link|identities|unlink`: an operator links an upstream identity
/// to an account, lists it, and unlinks it; mistakes exit non-zero with the
/// option at fault.
#[test]
fn user_link_identities_and_unlink() {
    let ws = Workspace::new(UPSTREAM_CONFIG);
    ws.write("partner.secret", "upstream-client-secret-value\n");
    let (_, hash) = ws.client_secret();
    ws.write("clients/portal.toml", &upstream_portal(&hash));
    ws.idp(
        &[
            "user",
            "create",
            "--email",
            "bob@example.com",
            "--password-stdin",
        ],
        Some("a long enough password\n"),
    )
    .ok();
    let link = |subject: &str| {
        ws.idp(
            &[
                "user",
                "link",
                "--email",
                "bob@example.com",
                "--upstream",
                "partner",
                "--subject",
                subject,
            ],
            None,
        )
    };
    let out = link("248289761001").ok();
    assert!(
        out.contains("linked partner identity 248289761001"),
        "{out}"
    );
    let err = link("another-subject").fails();
    assert!(err.contains("already has a link at partner"), "{err}");
    let err = ws
        .idp(
            &[
                "user",
                "link",
                "--email",
                "bob@example.com",
                "--upstream",
                "nope",
                "--subject",
                "x",
            ],
            None,
        )
        .fails();
    assert!(err.contains("--upstream"), "{err}");
    let listed = ws
        .idp(&["user", "identities", "--email", "bob@example.com"], None)
        .ok();
    assert!(
        listed.contains("partner") && listed.contains("248289761001"),
        "{listed}"
    );
    let out = ws
        .idp(
            &[
                "user",
                "unlink",
                "--email",
                "bob@example.com",
                "--upstream",
                "partner",
            ],
            None,
        )
        .ok();
    assert!(out.contains("unlinked"), "{out}");
    let err = ws
        .idp(
            &[
                "user",
                "unlink",
                "--email",
                "bob@example.com",
                "--upstream",
                "partner",
            ],
            None,
        )
        .fails();
    assert!(err.contains("has no link"), "{err}");
    let listed = ws
        .idp(&["user", "identities", "--email", "bob@example.com"], None)
        .ok();
    assert!(!listed.contains("248289761001"), "{listed}");
}
