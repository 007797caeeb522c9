//! ES256 signing cost: josekit's signer (OpenSSL EVP, a fresh context per
//! signature) against ECDSA_do_sign on a SHA-256 digest with the same key.
//! `cargo run --release -p idp-core --example es256_sign -- 20000`
#![allow(clippy::disallowed_methods)]

use josekit::jwk::KeyPair as _;
use josekit::jws::{ES256, JwsSigner};
use openssl::bn::BigNumContext;
use openssl::ec::EcKey;
use openssl::ecdsa::EcdsaSig;
use sha2::{Digest, Sha256};
use std::time::Instant;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let kp = ES256.generate_key_pair().unwrap();
    let der = kp.to_der_private_key();
    let signer = ES256.signer_from_der(&der).unwrap();
    let pkey = openssl::pkey::PKey::private_key_from_der(&der).unwrap();
    let ec: EcKey<openssl::pkey::Private> = pkey.ec_key().unwrap();
    let msg = vec![b'a'; 400];
    let _ = BigNumContext::new();
    for round in 0..3 {
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(signer.sign(&msg).unwrap());
        }
        let a = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        let t = Instant::now();
        for _ in 0..n {
            let d = Sha256::digest(&msg);
            let sig = EcdsaSig::sign(&d, &ec).unwrap();
            let mut out = sig.r().to_vec_padded(32).unwrap();
            out.extend_from_slice(&sig.s().to_vec_padded(32).unwrap());
            std::hint::black_box(out);
        }
        let b = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        println!("round {round}: josekit {a:.1} us/sign, ECDSA_do_sign {b:.1} us/sign");
    }
    // The low-level signature verifies with josekit's verifier.
    let verifier = ES256.verifier_from_jwk(&kp.to_jwk_public_key()).unwrap();
    let d = Sha256::digest(&msg);
    let sig = EcdsaSig::sign(&d, &ec).unwrap();
    let mut out = sig.r().to_vec_padded(32).unwrap();
    out.extend_from_slice(&sig.s().to_vec_padded(32).unwrap());
    josekit::jws::JwsVerifier::verify(&verifier, &msg, &out).unwrap();
    println!("verified");
}
