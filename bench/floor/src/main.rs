//! Crypto floor: operations per second of what the provider's endpoints sign,
//! verify and hash, on one core and on every core at once, through the
//! provider's own code: `idp_core::keys::SigningKeys` (the signers and
//! verifiers the token endpoints use) and `idp_core::password::PasswordHasher`
//! (the password check of a login, at the configured argon2id parameters,
//! off the async runtime with one permit per thread, as the server runs it).
//! Prints one JSON object.
//!
//! Usage: idp-bench-floor [--secs S] [--argon2 M,T,P]

// A benchmark measures time: the provider's ban on reading the clock
// directly (clippy.toml) is for server code, which gets time from its Clock.
#![allow(clippy::disallowed_methods)]

use idp_core::keys::{SigningAlg, SigningKeys, generate_key};
use idp_core::password::{Argon2Settings, PasswordCheck, PasswordHasher};
use idp_core::secret::{KeyEncryptionKey, Secret};
use serde_json::{Map, Value, json};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// Claims shaped like an access token of the provider (RFC 9068).
fn claims() -> Map<String, Value> {
    let mut c = Map::new();
    c.insert("iss".into(), "http://127.0.0.1:18080".into());
    c.insert("sub".into(), "0190f1e2-7c1a-7d3e-9a4b-3c2d1e0f9a8b".into());
    c.insert("aud".into(), "bench".into());
    c.insert("client_id".into(), "bench".into());
    c.insert("iat".into(), 1_800_000_000_i64.into());
    c.insert("exp".into(), 1_800_000_600_i64.into());
    c.insert("jti".into(), "6f1c2e7a-8d3b-4c5e-9f0a-1b2c3d4e5f60".into());
    c.insert("scope".into(), "openid profile email".into());
    c
}

/// One measured operation.
type Op = Arc<dyn Fn() + Send + Sync>;

/// Runs `op` for `secs` on `threads` threads at once; returns operations per
/// second (all threads together).
fn rate(threads: usize, secs: f64, op: &Op) -> f64 {
    let deadline = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let op = op.clone();
            std::thread::spawn(move || {
                let t0 = Instant::now();
                let mut n = 0u64;
                while t0.elapsed() < deadline {
                    op();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().expect("thread")).sum();
    total as f64 / start.elapsed().as_secs_f64()
}

/// Password checks per second with `threads` logins at once, through a
/// hasher allowed `threads` concurrent hashes (the server allows one per
/// core), on a runtime of `cores` workers.
fn password_rate(settings: Argon2Settings, threads: usize, cores: usize, secs: f64) -> f64 {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let hasher = PasswordHasher::new(Argon2Settings {
            max_concurrent: threads,
            ..settings
        })
        .expect("argon2 parameters");
        let password = Secret::new("correct horse battery staple");
        let stored = hasher.hash(&password).await.expect("hash");
        // Warm-up: the working memory of each permit.
        for _ in 0..threads {
            hasher
                .verify(&password, Some(&stored))
                .await
                .expect("verify");
        }
        let done = Arc::new(AtomicU64::new(0));
        let deadline = Duration::from_secs_f64(secs);
        let start = Instant::now();
        let tasks: Vec<_> = (0..threads)
            .map(|_| {
                let (hasher, password, stored, done) = (
                    hasher.clone(),
                    password.clone(),
                    stored.clone(),
                    done.clone(),
                );
                tokio::spawn(async move {
                    while start.elapsed() < deadline {
                        let check = hasher.verify(&password, Some(&stored)).await;
                        assert!(matches!(check, Ok(PasswordCheck::Match { .. })));
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
    })
}

fn entry(name: &str, one: f64, all: f64, cores: usize) -> (String, Value) {
    eprintln!("floor: {name}: {one:.1}/s on one core, {all:.1}/s on {cores} cores");
    (
        name.to_owned(),
        json!({"per_core": round(one), "all_cores": round(all), "cores": cores}),
    )
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn main() {
    let mut secs = 2.0_f64;
    let mut settings = Argon2Settings::default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).map(String::as_str).unwrap_or_default();
        match args[i].as_str() {
            "--secs" => secs = value.parse().expect("--secs S"),
            "--argon2" => {
                let v: Vec<u32> = value
                    .split(',')
                    .map(|x| x.parse().expect("--argon2 M,T,P"))
                    .collect();
                let [m, t, p] = v[..] else {
                    panic!("--argon2 M,T,P")
                };
                settings.memory_kib = m;
                settings.iterations = t;
                settings.parallelism = p;
            }
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);

    let kek = KeyEncryptionKey::generate();
    let now = OffsetDateTime::now_utc();
    let stored = [
        generate_key(SigningAlg::ES256, &kek, now).expect("ES256 key"),
        generate_key(SigningAlg::RS256, &kek, now).expect("RS256 key"),
    ];
    let keys = Arc::new(
        SigningKeys::from_stored(&stored, &kek, now, time::Duration::hours(1))
            .expect("signing keys"),
    );
    let token = keys
        .sign(SigningAlg::ES256, "at+jwt", claims())
        .expect("sign");

    let mut out = Map::new();
    let ops: Vec<(&str, Op)> = vec![
        ("es256_sign", {
            let keys = keys.clone();
            Arc::new(move || {
                black_box(
                    keys.sign(SigningAlg::ES256, "at+jwt", claims())
                        .expect("sign"),
                );
            })
        }),
        ("es256_verify", {
            let keys = keys.clone();
            Arc::new(move || {
                black_box(keys.verify_with_kid(&token).expect("verify"));
            })
        }),
        ("rs256_sign", {
            let keys = keys.clone();
            Arc::new(move || {
                black_box(keys.sign(SigningAlg::RS256, "JWT", claims()).expect("sign"));
            })
        }),
    ];
    for (name, op) in ops {
        op(); // warm up
        let (one, all) = (rate(1, secs, &op), rate(cores, secs, &op));
        let (k, v) = entry(name, one, all, cores);
        out.insert(k, v);
    }
    // A check takes milliseconds, so a few seconds hold few of them: the
    // median of three runs, so one run's hiccup does not move the floor.
    let median = |threads: usize| {
        let mut runs: Vec<f64> = (0..3)
            .map(|_| password_rate(settings, threads, cores, secs))
            .collect();
        runs.sort_by(f64::total_cmp);
        runs[1]
    };
    let (one, all) = (median(1), median(cores));
    let (k, v) = entry("argon2id_hash", one, all, cores);
    out.insert(k, v);
    out.insert(
        "argon2id_params".into(),
        json!({
            "memory_kib": settings.memory_kib,
            "iterations": settings.iterations,
            "parallelism": settings.parallelism,
        }),
    );
    println!("{}", Value::Object(out));
}
