//! Crypto floor: operations per second of what the provider's endpoints sign,
//! verify and hash, on one core and on every core at once, with the
//! provider's own libraries (josekit/OpenSSL for JWTs, argon2 for passwords)
//! and its configured argon2id parameters. Prints one JSON object.
//!
//! Also measured, for comparison only: argon2id with argon2-rust, the
//! implementation inside the peer's @node-rs/argon2.
//!
//! Usage: idp-bench-floor [--secs S] [--argon2 M,T,P]

// A benchmark measures time: the provider's ban on reading the clock
// directly (clippy.toml) is for server code, which gets time from its Clock.
#![allow(clippy::disallowed_methods)]

use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, Version};
use josekit::jwk::KeyPair as _;
use josekit::jws::{ES256, JwsHeader, JwsSigner, JwsVerifier, RS256};
use josekit::jwt::{self, JwtPayload};
use serde_json::{Map, Value, json};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One measured operation.
type Op = Arc<dyn Fn() + Send + Sync>;

/// Claims shaped like an access token of the provider (RFC 9068).
fn claims() -> JwtPayload {
    let mut c = Map::new();
    c.insert("iss".into(), "http://127.0.0.1:18080".into());
    c.insert("sub".into(), "0190f1e2-7c1a-7d3e-9a4b-3c2d1e0f9a8b".into());
    c.insert("aud".into(), "bench".into());
    c.insert("client_id".into(), "bench".into());
    c.insert("iat".into(), 1_800_000_000_i64.into());
    c.insert("exp".into(), 1_800_000_600_i64.into());
    c.insert("jti".into(), "6f1c2e7a-8d3b-4c5e-9f0a-1b2c3d4e5f60".into());
    c.insert("scope".into(), "openid profile email".into());
    JwtPayload::from_map(c).expect("claims")
}

/// Runs `op` for `secs` on `threads` threads at once; returns operations per second (all threads).
fn rate(threads: usize, secs: f64, op: Op) -> f64 {
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

fn measure(name: &str, cores: usize, secs: f64, op: Op) -> (String, Value) {
    op(); // warm up
    let one = rate(1, secs, op.clone());
    let all = rate(cores, secs, op);
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
    let (mut m, mut t, mut p) = (19_456_u32, 2_u32, 1_u32);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--secs" => secs = args[i + 1].parse().expect("--secs S"),
            "--argon2" => {
                let v: Vec<u32> = args[i + 1]
                    .split(',')
                    .map(|x| x.parse().expect("--argon2 M,T,P"))
                    .collect();
                (m, t, p) = (v[0], v[1], v[2]);
            }
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);

    let es = ES256.generate_key_pair().expect("ES256 key");
    let es_signer: Arc<dyn JwsSigner> = Arc::new(
        ES256
            .signer_from_jwk(&es.to_jwk_private_key())
            .expect("signer"),
    );
    let es_verifier: Arc<dyn JwsVerifier> = Arc::new(
        ES256
            .verifier_from_jwk(&es.to_jwk_public_key())
            .expect("verifier"),
    );
    let rs = RS256.generate_key_pair(2048).expect("RS256 key");
    let rs_signer: Arc<dyn JwsSigner> = Arc::new(
        RS256
            .signer_from_jwk(&rs.to_jwk_private_key())
            .expect("signer"),
    );
    let payload = Arc::new(claims());
    let mut header = JwsHeader::new();
    header.set_token_type("at+jwt");
    header.set_key_id("bench");
    let header = Arc::new(header);
    let token = jwt::encode_with_signer(&payload, &header, es_signer.as_ref()).expect("sign");

    let mut out = Map::new();
    let ops: Vec<(&str, Op)> = vec![
        ("es256_sign", {
            let (p, h, s) = (payload.clone(), header.clone(), es_signer.clone());
            Arc::new(move || {
                black_box(jwt::encode_with_signer(&p, &h, s.as_ref()).expect("sign"));
            })
        }),
        ("es256_verify", {
            let v = es_verifier.clone();
            Arc::new(move || {
                black_box(jwt::decode_with_verifier(&token, v.as_ref()).expect("verify"));
            })
        }),
        ("rs256_sign", {
            let (p, h, s) = (payload.clone(), header.clone(), rs_signer.clone());
            Arc::new(move || {
                black_box(jwt::encode_with_signer(&p, &h, s.as_ref()).expect("sign"));
            })
        }),
        ("argon2id_hash", {
            let params = Params::new(m, t, p, None).expect("argon2 parameters");
            Arc::new(move || {
                let a = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
                black_box(
                    a.hash_password(b"correct horse battery staple")
                        .expect("hash"),
                );
            })
        }),
        ("argon2id_hash_argon2_rust", {
            let params = argon2_rust::Params::builder()
                .memory(argon2_rust::params::Memory::kib(u64::from(m)))
                .passes(t)
                .lanes(p)
                .threads(p)
                .build()
                .expect("argon2-rust parameters");
            Arc::new(move || {
                let a = argon2_rust::Argon2::new(
                    argon2_rust::Algorithm::Argon2id,
                    argon2_rust::Version::V0x13,
                    params,
                );
                let mut tag = [0u8; 32];
                a.hash_into(
                    b"correct horse battery staple",
                    b"0123456789abcdef",
                    &mut tag,
                )
                .expect("hash");
                black_box(tag);
            })
        }),
    ];
    for (name, op) in ops {
        let s = if name.starts_with("argon2") {
            secs * 2.0
        } else {
            secs
        };
        let (k, v) = measure(name, cores, s, op);
        out.insert(k, v);
    }
    out.insert(
        "argon2id_params".into(),
        json!({"memory_kib": m, "iterations": t, "parallelism": p}),
    );
    println!("{}", Value::Object(out));
}
