//! Embeds the default theme in the binary: its page templates (through
//! minijinja-embed), and its email and SMS templates and static files
//! (listed into `$OUT_DIR`), so that a file added to `themes/default/` is
//! embedded without a line of code.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    minijinja_embed::embed_templates!("../themes/default/templates");
    let theme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../themes/default");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let mut templates = String::from("&[\n");
    for folder in ["emails", "sms"] {
        for (name, path) in files(&theme.join(folder)) {
            writeln!(
                templates,
                "    ({:?}, include_str!({:?})),",
                format!("{folder}/{name}"),
                path
            )
            .unwrap();
        }
    }
    templates.push(']');
    std::fs::write(out.join("message_templates.rs"), templates).unwrap();
    let mut assets = String::from("&[\n");
    for (name, path) in files(&theme.join("static")) {
        writeln!(assets, "    ({name:?}, include_bytes!({path:?})),").unwrap();
    }
    assets.push(']');
    std::fs::write(out.join("assets.rs"), assets).unwrap();
    for folder in ["emails", "sms", "static", "templates"] {
        println!("cargo:rerun-if-changed={}", theme.join(folder).display());
    }
}

/// The files of `dir`, sorted by name, with their absolute paths.
fn files(dir: &Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .map(|e| {
            let path = std::fs::canonicalize(e.path()).expect("a file's path");
            (
                e.file_name().to_string_lossy().into_owned(),
                path.to_string_lossy().into_owned(),
            )
        })
        .collect();
    out.sort();
    out
}
