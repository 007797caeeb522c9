//! Measures resident memory after a burst of password hashes: the pooled
//! hasher against a fresh allocation per hash (RustCrypto argon2's
//! `hash_password`, which the provider used before).
//! `cargo run -p idp-core --example argon2_rss -- pooled|fresh [hashes]`

use argon2::PasswordHasher as _;
use idp_core::password::{Argon2Settings, PasswordHasher};
use idp_core::secret::Secret;

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "pooled".into());
    let n: usize = std::env::args()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let settings = Argon2Settings::default();
    let hasher = PasswordHasher::new(settings).expect("parameters");
    // The same bound as the hasher's: one hash per core at a time.
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(2));
    let before = rss_kib("VmRSS:");
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let hasher = hasher.clone();
            let mode = mode.clone();
            let permits = permits.clone();
            tokio::spawn(async move {
                let pw = Secret::new(format!("password number {i}"));
                if mode == "fresh" {
                    let _permit = permits.acquire().await.expect("open");
                    let params = argon2::Params::new(
                        settings.memory_kib,
                        settings.iterations,
                        settings.parallelism,
                        None,
                    )
                    .expect("parameters");
                    tokio::task::spawn_blocking(move || {
                        argon2::Argon2::new(
                            argon2::Algorithm::Argon2id,
                            argon2::Version::V0x13,
                            params,
                        )
                        .hash_password(pw.expose().as_bytes())
                        .map(|h| h.to_string())
                    })
                    .await
                    .expect("task")
                    .expect("hash");
                } else {
                    hasher.hash(&pw).await.expect("hash");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    println!(
        "{mode}: {n} hashes; RSS before {} MiB, after {} MiB, peak {} MiB",
        before / 1024,
        rss_kib("VmRSS:") / 1024,
        rss_kib("VmHWM:") / 1024
    );
}
