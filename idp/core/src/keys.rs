//! Token signing keys: generation (ES256, RS256), encryption at rest, the
//! in-memory set used to sign and verify, and the published JWKS.
//!
//! One active key per algorithm signs; a rotated-out key is "retired" and stays
//! published (and accepted) until tokens it signed have expired.

use crate::domain::StoredSigningKey;
use crate::error::CoreError;
use crate::ports::SigningKeyRepo;
use crate::secret::KeyEncryptionKey;
use josekit::jwk::Jwk;
use josekit::jwk::KeyPair as _;
use josekit::jws::{ES256, JwsHeader, JwsSigner, JwsVerifier, RS256};
use josekit::jwt::{self, JwtPayload};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use time::OffsetDateTime;

/// A JWS algorithm we sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum SigningAlg {
    ES256,
    RS256,
}

impl SigningAlg {
    pub const ALL: [SigningAlg; 2] = [SigningAlg::ES256, SigningAlg::RS256];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ES256 => "ES256",
            Self::RS256 => "RS256",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ES256" => Some(Self::ES256),
            "RS256" => Some(Self::RS256),
            _ => None,
        }
    }
}

impl fmt::Display for SigningAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Makes a new key pair, its private half sealed with `kek`.
pub fn generate_key(
    alg: SigningAlg,
    kek: &KeyEncryptionKey,
    now: OffsetDateTime,
) -> Result<StoredSigningKey, CoreError> {
    let kid = crate::random::token()[..22].to_owned();
    let (mut private, mut public) = match alg {
        SigningAlg::ES256 => {
            let kp = ES256.generate_key_pair()?;
            (kp.to_jwk_key_pair(), kp.to_jwk_public_key())
        }
        SigningAlg::RS256 => {
            let kp = RS256.generate_key_pair(2048)?;
            (kp.to_jwk_key_pair(), kp.to_jwk_public_key())
        }
    };
    for jwk in [&mut private, &mut public] {
        jwk.set_key_id(&kid);
        jwk.set_algorithm(alg.as_str());
        jwk.set_key_use("sig");
    }
    Ok(StoredSigningKey {
        kid,
        alg: alg.as_str().to_owned(),
        private_jwe: kek.seal(private.to_string().as_bytes())?,
        public_jwk: public.to_string(),
        created_at: now,
        retired_at: None,
    })
}

/// Ensures one active key per algorithm exists (first start). Returns all keys.
pub async fn ensure_keys(
    repo: &dyn SigningKeyRepo,
    kek: &KeyEncryptionKey,
    now: OffsetDateTime,
) -> Result<Vec<StoredSigningKey>, CoreError> {
    let mut keys = repo.list().await?;
    for alg in SigningAlg::ALL {
        let has_active = keys
            .iter()
            .any(|k| k.alg == alg.as_str() && k.retired_at.is_none());
        if !has_active {
            let key = generate_key(alg, kek, now)?;
            repo.create(&key).await?;
            keys.push(key);
        }
    }
    Ok(keys)
}

/// How long a new key is published before it signs, and an old one keeps
/// signing after a rotation: the JWKS `max-age`, so relying parties that cache
/// the JWKS know a key before they meet a token signed with it.
pub const PROPAGATION: time::Duration = time::Duration::seconds(300);

/// Adds a new key for `alg`; the previous one(s) keep signing for
/// [`PROPAGATION`], then retire (and stay published until their tokens have
/// expired). Returns the new kid.
pub async fn rotate_key(
    repo: &dyn SigningKeyRepo,
    kek: &KeyEncryptionKey,
    alg: SigningAlg,
    now: OffsetDateTime,
) -> Result<String, CoreError> {
    let old: Vec<String> = repo
        .list()
        .await?
        .into_iter()
        .filter(|k| k.alg == alg.as_str() && k.retired_at.is_none())
        .map(|k| k.kid)
        .collect();
    let key = generate_key(alg, kek, now)?;
    repo.create(&key).await?;
    for kid in old {
        repo.retire(&kid, now + PROPAGATION).await?;
    }
    Ok(key.kid)
}

struct ActiveKey {
    kid: String,
    signer: Box<dyn JwsSigner>,
}

/// The keys in memory: signers for the active keys, verifiers and the JWKS
/// document for every published key. Built once per refresh, shared read-only.
pub struct SigningKeys {
    active: HashMap<SigningAlg, ActiveKey>,
    verifiers: HashMap<String, Box<dyn JwsVerifier>>,
    jwks_json: String,
    jwks_etag: String,
}

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeys")
            .field(
                "active",
                &self
                    .active
                    .iter()
                    .map(|(a, k)| (a, &k.kid))
                    .collect::<Vec<_>>(),
            )
            .field("published", &self.verifiers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SigningKeys {
    /// Builds the set from stored keys. Retired keys stay published while
    /// `retired_at + keep_published > now`.
    pub fn from_stored(
        keys: &[StoredSigningKey],
        kek: &KeyEncryptionKey,
        now: OffsetDateTime,
        keep_published: time::Duration,
    ) -> Result<Self, CoreError> {
        let mut active = HashMap::new();
        let mut verifiers: HashMap<String, Box<dyn JwsVerifier>> = HashMap::new();
        let mut published = Vec::new();
        for k in keys {
            let alg = SigningAlg::parse(&k.alg).ok_or_else(|| {
                CoreError::Crypto(format!("key {} has unknown alg {}", k.kid, k.alg))
            })?;
            let is_published = k.retired_at.is_none_or(|r| r + keep_published > now);
            if !is_published {
                continue;
            }
            let public = Jwk::from_bytes(k.public_jwk.as_bytes())?;
            let verifier: Box<dyn JwsVerifier> = match alg {
                SigningAlg::ES256 => Box::new(ES256.verifier_from_jwk(&public)?),
                SigningAlg::RS256 => Box::new(RS256.verifier_from_jwk(&public)?),
            };
            verifiers.insert(k.kid.clone(), verifier);
            published.push(public);
        }
        for alg in SigningAlg::ALL {
            // Signing candidates: not yet retired. Prefer the newest key that
            // has been published long enough; a fresh set (first start) has
            // none, so its newest key signs at once.
            let candidates: Vec<&StoredSigningKey> = keys
                .iter()
                .filter(|k| k.alg == alg.as_str() && k.retired_at.is_none_or(|r| r > now))
                .collect();
            let chosen = candidates
                .iter()
                .filter(|k| k.created_at + PROPAGATION <= now)
                .max_by_key(|k| k.created_at)
                .or_else(|| candidates.iter().max_by_key(|k| k.created_at));
            if let Some(k) = chosen {
                let private = Jwk::from_bytes(kek.open(&k.private_jwe)?)?;
                let signer: Box<dyn JwsSigner> = match alg {
                    SigningAlg::ES256 => Box::new(Es256Signer::from_jwk(&private)?),
                    SigningAlg::RS256 => Box::new(RS256.signer_from_jwk(&private)?),
                };
                active.insert(
                    alg,
                    ActiveKey {
                        kid: k.kid.clone(),
                        signer,
                    },
                );
            }
        }
        let jwks_json = serde_json::json!({
            "keys": published.iter().map(|j| serde_json::Value::Object(j.as_ref().clone())).collect::<Vec<_>>()
        })
        .to_string();
        let jwks_etag = {
            use base64::Engine;
            use sha2::{Digest, Sha256};
            let digest = Sha256::digest(jwks_json.as_bytes());
            let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16]);
            format!("\"{tag}\"")
        };
        Ok(Self {
            active,
            verifiers,
            jwks_json,
            jwks_etag,
        })
    }

    /// The JWKS document (public keys only).
    pub fn jwks_json(&self) -> &str {
        &self.jwks_json
    }

    /// A strong entity tag of [`Self::jwks_json`] (quoted): it changes with
    /// the published keys.
    pub fn jwks_etag(&self) -> &str {
        &self.jwks_etag
    }

    pub fn active_kid(&self, alg: SigningAlg) -> Option<&str> {
        self.active.get(&alg).map(|k| k.kid.as_str())
    }

    /// Signs `claims` as a JWT with the active key of `alg`, header `typ`.
    pub fn sign(
        &self,
        alg: SigningAlg,
        typ: &str,
        claims: serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, CoreError> {
        let key = self
            .active
            .get(&alg)
            .ok_or_else(|| CoreError::Crypto(format!("no active {alg} key")))?;
        let mut header = JwsHeader::new();
        header.set_token_type(typ);
        header.set_key_id(&key.kid);
        let payload = JwtPayload::from_map(claims)?;
        Ok(jwt::encode_with_signer(
            &payload,
            &header,
            key.signer.as_ref(),
        )?)
    }

    /// Verifies a JWT signed by one of our published keys (signature only:
    /// the caller checks claims). Returns the claims and the `typ` header.
    pub fn verify(
        &self,
        token: &str,
    ) -> Result<(serde_json::Map<String, serde_json::Value>, Option<String>), CoreError> {
        self.verify_with_kid(token)
            .map(|verified| (verified.claims, verified.typ))
    }

    /// [`Self::verify`], also saying which key verified the signature.
    pub fn verify_with_kid(&self, token: &str) -> Result<VerifiedJwt, CoreError> {
        let (payload, header) = jwt::decode_with_verifier_selector(token, |header| {
            Ok(header
                .key_id()
                .and_then(|kid| self.verifiers.get(kid))
                .map(|v| v.as_ref()))
        })?;
        // The selector found a verifier by this kid, so there is one.
        let kid = header
            .key_id()
            .ok_or_else(|| CoreError::Crypto("verified a JWT without a kid".into()))?
            .to_owned();
        Ok(VerifiedJwt {
            claims: payload.claims_set().clone(),
            typ: header.token_type().map(str::to_owned),
            kid,
        })
    }

    /// Whether the key `kid` is published (and so accepted) in this set.
    pub fn publishes(&self, kid: &str) -> bool {
        self.verifiers.contains_key(kid)
    }
}

/// ES256 signatures with OpenSSL's ECDSA on a SHA-256 digest
/// (`ECDSA_do_sign`): the same P-256 code as josekit's signer, which instead
/// sets up an EVP signing context, and so looks the algorithm up in
/// OpenSSL's provider tables, for every signature, then re-encodes the DER
/// signature it gets back. That set-up was about a quarter of each ES256
/// signature (`cargo run --release -p idp-core --example es256_sign`). The
/// output is the JWS form, R and S as 32 bytes each (RFC 7518 §3.4).
#[derive(Clone)]
struct Es256Signer {
    key: openssl::ec::EcKey<openssl::pkey::Private>,
    kid: Option<String>,
}

impl fmt::Debug for Es256Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Es256Signer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Es256Signer {
    /// From a private JWK, checked as josekit checks it (`use`, `alg`, `crv`).
    fn from_jwk(jwk: &Jwk) -> Result<Self, CoreError> {
        // The checks, and the key in a form OpenSSL reads.
        ES256.signer_from_jwk(jwk)?;
        let der = josekit::jwk::alg::ec::EcKeyPair::from_jwk(jwk)?.to_der_private_key();
        let key = openssl::pkey::PKey::private_key_from_der(&der)
            .and_then(|k| k.ec_key())
            .map_err(|e| CoreError::Crypto(format!("ES256 key: {e}")))?;
        Ok(Self {
            key,
            kid: jwk.key_id().map(str::to_owned),
        })
    }
}

impl JwsSigner for Es256Signer {
    fn algorithm(&self) -> &dyn josekit::jws::JwsAlgorithm {
        &ES256
    }

    fn key_id(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    fn signature_len(&self) -> usize {
        64
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, josekit::JoseError> {
        use sha2::{Digest, Sha256};
        let sign = || -> Result<Vec<u8>, openssl::error::ErrorStack> {
            let sig = openssl::ecdsa::EcdsaSig::sign(&Sha256::digest(message), &self.key)?;
            let mut out = sig.r().to_vec_padded(32)?;
            out.extend_from_slice(&sig.s().to_vec_padded(32)?);
            Ok(out)
        };
        sign().map_err(|e| josekit::JoseError::InvalidSignature(e.into()))
    }

    fn box_clone(&self) -> Box<dyn JwsSigner> {
        Box::new(self.clone())
    }
}

/// A JWT whose signature one of our published keys verified.
#[derive(Debug, Clone)]
pub struct VerifiedJwt {
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// The `typ` header.
    pub typ: Option<String>,
    /// The key that verified it.
    pub kid: String,
}

/// The signing keys this node uses: loaded at start (created on first
/// start), reloaded from the database after a rotation on any node.
pub struct KeyRing {
    current: std::sync::RwLock<std::sync::Arc<SigningKeys>>,
    repo: std::sync::Arc<dyn SigningKeyRepo>,
    kek: KeyEncryptionKey,
    clock: crate::clock::SharedClock,
    /// How long a retired key stays published (the longest token lifetime
    /// plus a margin).
    keep_published: time::Duration,
}

impl KeyRing {
    /// Loads the keys, creating them on first start.
    pub async fn load(
        repo: std::sync::Arc<dyn SigningKeyRepo>,
        kek: KeyEncryptionKey,
        clock: crate::clock::SharedClock,
        keep_published: time::Duration,
    ) -> Result<Self, CoreError> {
        let stored = ensure_keys(repo.as_ref(), &kek, clock.now()).await?;
        let keys = SigningKeys::from_stored(&stored, &kek, clock.now(), keep_published)?;
        Ok(Self {
            current: std::sync::RwLock::new(std::sync::Arc::new(keys)),
            repo,
            kek,
            clock,
            keep_published,
        })
    }

    /// The current key set.
    pub fn current(&self) -> std::sync::Arc<SigningKeys> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads keys from the database (after `idp keys rotate` on any node).
    pub async fn reload(&self) -> Result<(), CoreError> {
        let stored = self.repo.list().await?;
        let keys =
            SigningKeys::from_stored(&stored, &self.kek, self.clock.now(), self.keep_published)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(keys);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_publish_both_algorithms() {
        let kek = KeyEncryptionKey::generate();
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let stored = vec![
            generate_key(SigningAlg::ES256, &kek, now).unwrap(),
            generate_key(SigningAlg::RS256, &kek, now).unwrap(),
        ];
        assert!(
            !stored[0].public_jwk.contains("\"d\""),
            "public JWK must not hold the private part"
        );
        let keys = SigningKeys::from_stored(&stored, &kek, now, time::Duration::hours(1)).unwrap();
        for alg in SigningAlg::ALL {
            let mut claims = serde_json::Map::new();
            claims.insert("sub".into(), "u1".into());
            let jwt = keys.sign(alg, "JWT", claims).unwrap();
            let (claims, typ) = keys.verify(&jwt).unwrap();
            assert_eq!(claims["sub"], "u1");
            assert_eq!(typ.as_deref(), Some("JWT"));
        }
        let jwks: serde_json::Value = serde_json::from_str(keys.jwks_json()).unwrap();
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
        assert!(!keys.jwks_json().contains("\"d\""));
    }

    #[test]
    fn es256_signatures_verify_with_josekit_and_differ_each_time() {
        let kp = ES256.generate_key_pair().unwrap();
        let mut private = kp.to_jwk_key_pair();
        private.set_key_id("k1");
        let ours = Es256Signer::from_jwk(&private).unwrap();
        let verifier = ES256.verifier_from_jwk(&kp.to_jwk_public_key()).unwrap();
        let a = ours.sign(b"header.payload").unwrap();
        let b = ours.sign(b"header.payload").unwrap();
        assert_eq!((a.len(), ours.key_id()), (64, Some("k1")));
        assert_ne!(a, b, "a fresh nonce for each signature");
        verifier.verify(b"header.payload", &a).unwrap();
        verifier.verify(b"header.payload", &b).unwrap();
        assert!(verifier.verify(b"header.payloaD", &a).is_err());
        // And the other way round: josekit's signature has the same form.
        let theirs = ES256.signer_from_jwk(&private).unwrap();
        let c = theirs.sign(b"header.payload").unwrap();
        assert_eq!(c.len(), 64);
        verifier.verify(b"header.payload", &c).unwrap();
        // A public key alone is refused.
        assert!(Es256Signer::from_jwk(&kp.to_jwk_public_key()).is_err());
    }

    #[test]
    fn retired_key_stays_published_then_disappears_and_tampering_fails() {
        let kek = KeyEncryptionKey::generate();
        let t0 = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let mut old = generate_key(SigningAlg::ES256, &kek, t0).unwrap();
        let new = generate_key(SigningAlg::ES256, &kek, t0).unwrap();
        let before = SigningKeys::from_stored(
            std::slice::from_ref(&old),
            &kek,
            t0,
            time::Duration::hours(1),
        )
        .unwrap();
        let jwt = before
            .sign(SigningAlg::ES256, "JWT", serde_json::Map::new())
            .unwrap();
        old.retired_at = Some(t0);
        let keep = time::Duration::hours(1);
        let during = SigningKeys::from_stored(
            &[old.clone(), new.clone()],
            &kek,
            t0 + time::Duration::minutes(30),
            keep,
        )
        .unwrap();
        assert!(during.verify(&jwt).is_ok());
        assert_eq!(during.active_kid(SigningAlg::ES256), Some(new.kid.as_str()));
        let after =
            SigningKeys::from_stored(&[old, new], &kek, t0 + time::Duration::hours(2), keep)
                .unwrap();
        assert!(after.verify(&jwt).is_err());
        let mut tampered = jwt.clone();
        tampered.insert(tampered.len() - 3, 'A');
        assert!(during.verify(&tampered).is_err());
    }

    #[test]
    fn a_rotated_in_key_signs_only_after_propagation() {
        let kek = KeyEncryptionKey::generate();
        let t0 = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let keep = time::Duration::hours(1);
        let mut old = generate_key(SigningAlg::ES256, &kek, t0 - time::Duration::days(1)).unwrap();
        let new = generate_key(SigningAlg::ES256, &kek, t0).unwrap();
        // What rotate_key stores: the old key retires after the propagation delay.
        old.retired_at = Some(t0 + PROPAGATION);
        let keys = [old.clone(), new.clone()];
        let at_rotation = SigningKeys::from_stored(&keys, &kek, t0, keep).unwrap();
        assert_eq!(
            at_rotation.active_kid(SigningAlg::ES256),
            Some(old.kid.as_str())
        );
        let published: serde_json::Value = serde_json::from_str(at_rotation.jwks_json()).unwrap();
        assert_eq!(
            published["keys"].as_array().unwrap().len(),
            2,
            "the new key is published at once"
        );
        let later = SigningKeys::from_stored(
            &keys,
            &kek,
            t0 + PROPAGATION + time::Duration::seconds(1),
            keep,
        )
        .unwrap();
        assert_eq!(later.active_kid(SigningAlg::ES256), Some(new.kid.as_str()));
        let jwt = at_rotation
            .sign(SigningAlg::ES256, "JWT", serde_json::Map::new())
            .unwrap();
        assert!(
            later.verify(&jwt).is_ok(),
            "tokens of the old key still verify"
        );
        // A first start signs with its only key at once.
        let first = SigningKeys::from_stored(std::slice::from_ref(&new), &kek, t0, keep).unwrap();
        assert_eq!(first.active_kid(SigningAlg::ES256), Some(new.kid.as_str()));
    }
}
