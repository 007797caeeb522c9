//! DPoP proof verification (RFC 9449, "OAuth 2.0 Demonstrating Proof of
//! Possession"): the checks of section 4.3 on a `DPoP` proof JWT, the JWK
//! thumbprint the proof binds tokens to (RFC 7638, RFC 9449 section 6.1), the
//! `ath` hash of an access token (RFC 9449 section 4.2) and stateless server
//! nonces (RFC 9449 section 8).
//!
//! Web-free: the caller passes the proof (the one `DPoP` header value; that
//! the request carried exactly one such header, RFC 9449 section 4.3 check 1,
//! is the caller's), the request's method and URL and the time, and renders
//! the [`DpopError`] as an `invalid_dpop_proof` or `use_dpop_nonce` error
//! (RFC 9449 sections 5, 7.1 and 8).
//!
//! Not done here: replay detection of `jti` (RFC 9449 section 11.1). A proof
//! verified here may have been presented before; the caller stores the
//! returned [`DpopProof::jti`] (with its [`DpopProof::jkt`], for as long as a
//! proof is accepted: [`PROOF_MAX_AGE_SECS`] plus [`CLOCK_SKEW_SECS`]) and
//! refuses one it has already seen.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit, Mac};
use josekit::jwk::Jwk;
use josekit::jws::{ES256, JwsVerifier, PS256, RS256};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};
use std::fmt;
use subtle::ConstantTimeEq as _;
use time::OffsetDateTime;

/// How old a proof's `iat` may be, in seconds: the "acceptable window" of
/// RFC 9449 section 4.3 check 11 (see also section 11.1).
pub const PROOF_MAX_AGE_SECS: i64 = 300;

/// How far in the future a proof's `iat` may be, in seconds, for clocks that
/// run ahead of ours (RFC 9449 section 11.1: servers "SHOULD accept DPoP
/// proofs with iat values slightly in the future").
pub const CLOCK_SKEW_SECS: i64 = 60;

/// The header `typ` of a DPoP proof (RFC 9449 section 4.2).
const PROOF_TYP: &str = "dpop+jwt";

/// The longest `jti` accepted (RFC 9449 section 4.2 asks for a unique
/// identifier, 96 bits of randomness suffice; this bounds what the caller
/// stores for replay detection).
const MAX_JTI_CHARS: usize = 256;

/// JWK members that only a private key has (RFC 7518 sections 6.2.2 and
/// 6.3.2, RFC 8037 section 2): a proof's `jwk` header must not contain them
/// (RFC 9449 section 4.3 check 7).
const PRIVATE_MEMBERS: [&str; 6] = ["d", "p", "q", "dp", "dq", "qi"];

/// Length of a nonce's time window, in seconds (RFC 9449 section 8 leaves
/// the nonce's form and lifetime to the server).
const NONCE_WINDOW_SECS: i64 = 60;

/// Bytes of the HMAC kept in a nonce.
const NONCE_MAC_LEN: usize = 16;

/// The HTTP request a DPoP proof came with: what RFC 9449 section 4.3
/// compares the proof's claims against.
#[derive(Debug, Clone, Copy)]
pub struct DpopRequest<'a> {
    /// The request's HTTP method, compared exactly with `htm` (RFC 9449
    /// section 4.3 check 8).
    pub method: &'a str,
    /// The request's absolute URL (query and fragment are ignored), compared
    /// with `htu` (RFC 9449 section 4.3 check 9).
    pub url: &'a str,
    /// The access token presented with the proof at a protected resource,
    /// whose hash must be the proof's `ath` (RFC 9449 sections 4.3 check 12
    /// and 7.1); `None` at the token endpoint, where `ath` is ignored.
    pub access_token: Option<&'a str>,
    /// Whether the proof must carry a nonce this server issued (RFC 9449
    /// section 4.3 check 10, section 8).
    pub nonce: NonceRule<'a>,
    /// The time the request is checked at (RFC 9449 section 4.3 check 11).
    pub now: OffsetDateTime,
    /// Only ES256 and PS256 (FAPI 2.0 Security Profile §5.4.1), not RS256.
    pub fapi2: bool,
}

/// Whether a proof must carry a server-provided nonce (RFC 9449 section 8).
#[derive(Debug, Clone, Copy)]
pub enum NonceRule<'a> {
    /// No nonce is asked for; a `nonce` claim, if any, is ignored.
    NotRequired,
    /// The proof's `nonce` claim must be one these nonces accept; otherwise
    /// [`DpopError::UseNonce`] (RFC 9449 section 8).
    Required(&'a DpopNonces),
}

/// A DPoP proof that passed the checks of RFC 9449 section 4.3 (all but the
/// replay check of `jti`, which is the caller's: see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpopProof {
    /// The JWK SHA-256 thumbprint (RFC 7638) of the proof's public key: the
    /// `jkt` a token is bound to (RFC 9449 section 6.1).
    pub jkt: String,
    /// The proof's unique identifier, for replay detection by the caller
    /// (RFC 9449 sections 4.2 and 11.1).
    pub jti: String,
    /// When the proof was made (its `iat`, RFC 9449 section 4.2).
    pub iat: OffsetDateTime,
}

/// Why a DPoP proof was refused (RFC 9449 section 4.3).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DpopError {
    /// The proof fails a check of RFC 9449 section 4.3: rendered as the
    /// `invalid_dpop_proof` error (RFC 9449 sections 5 and 7.1).
    #[error("invalid DPoP proof: {0}")]
    Invalid(String),
    /// The proof lacks a valid server nonce: rendered as the `use_dpop_nonce`
    /// error with a fresh `DPoP-Nonce` header (RFC 9449 section 8).
    #[error("a DPoP nonce from this server is required")]
    UseNonce,
}

impl DpopError {
    /// The OAuth error code for this error (RFC 9449 sections 7.1 and 8,
    /// registered in section 12.2).
    pub fn error_code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid_dpop_proof",
            Self::UseNonce => "use_dpop_nonce",
        }
    }
}

fn invalid(msg: impl Into<String>) -> DpopError {
    DpopError::Invalid(msg.into())
}

/// Verifies a DPoP proof JWT against the request it came with, per RFC 9449
/// section 4.3, and returns the proof's key thumbprint, `jti` and `iat`.
///
/// Checked: a single compact JWS (check 2); header `typ` `dpop+jwt`
/// (check 4); `alg` ES256, RS256 or PS256, never `none` or a MAC (check 5);
/// header `jwk` a public key (check 7) that verifies the signature (check 6);
/// claims `jti`, `htm`, `htu` and `iat` present (check 3) with `htm` the
/// request's method (check 8), `htu` its URL without query and fragment
/// (check 9), `iat` within [`PROOF_MAX_AGE_SECS`] in the past and
/// [`CLOCK_SKEW_SECS`] in the future (check 11); with an access token, `ath`
/// its hash (check 12); and, when required, a nonce these servers issued
/// (check 10). The nonce is checked last, so [`DpopError::UseNonce`] is only
/// returned for a proof that is otherwise valid. Replay of `jti` is not
/// checked here (see the module doc).
pub fn verify_proof(proof_jwt: &str, req: &DpopRequest<'_>) -> Result<DpopProof, DpopError> {
    // Check 2: one JWS in compact serialization.
    let parts: Vec<&str> = proof_jwt.split('.').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(invalid(
            "not a compact JWS (three non-empty parts separated by dots)",
        ));
    }
    let header = decode_json_object(parts[0])
        .ok_or_else(|| invalid("the JOSE header is not base64url-encoded JSON object"))?;

    // Check 4: typ.
    match header.get("typ") {
        Some(Value::String(typ)) if typ == PROOF_TYP => {}
        Some(Value::String(typ)) => {
            return Err(invalid(format!(
                "header typ must be {PROOF_TYP}, not {typ:?}"
            )));
        }
        Some(_) => return Err(invalid("header typ must be a string")),
        None => return Err(invalid("header typ is missing")),
    }

    // Check 5: an asymmetric algorithm we support.
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg.as_str(),
        Some(_) => return Err(invalid("header alg must be a string")),
        None => return Err(invalid("header alg is missing")),
    };
    if alg.eq_ignore_ascii_case("none") {
        return Err(invalid("alg none is refused: a proof must be signed"));
    }
    if alg.starts_with("HS") {
        return Err(invalid(format!(
            "alg {alg} is refused: a proof needs an asymmetric signature"
        )));
    }
    if !matches!(alg, "ES256" | "RS256" | "PS256") {
        return Err(invalid(format!(
            "alg {alg} is not supported (ES256, RS256 or PS256)"
        )));
    }
    if req.fapi2 && alg == "RS256" {
        return Err(invalid(
            "alg RS256 is refused for this client (FAPI 2.0: ES256 or PS256)",
        ));
    }

    // Check 7: the jwk header, a public key.
    let jwk_map = match header.get("jwk") {
        Some(Value::Object(map)) => map,
        Some(_) => return Err(invalid("header jwk must be a JSON object")),
        None => return Err(invalid("header jwk is missing")),
    };
    if let Some(member) = PRIVATE_MEMBERS.iter().find(|m| jwk_map.contains_key(**m)) {
        return Err(invalid(format!(
            "header jwk holds a private key (member {member:?})"
        )));
    }
    let jwk = Jwk::from_map(jwk_map.clone())
        .map_err(|e| invalid(format!("header jwk is not a valid JWK: {e}")))?;

    // Check 6: the signature, by that key.
    let verifier: Box<dyn JwsVerifier> = match alg {
        "ES256" => ES256
            .verifier_from_jwk(&jwk)
            .map(|v| Box::new(v) as Box<dyn JwsVerifier>),
        "RS256" => RS256
            .verifier_from_jwk(&jwk)
            .map(|v| Box::new(v) as Box<dyn JwsVerifier>),
        _ => PS256
            .verifier_from_jwk(&jwk)
            .map(|v| Box::new(v) as Box<dyn JwsVerifier>),
    }
    .map_err(|e| invalid(format!("header jwk is not a {alg} public key: {e}")))?;
    let (payload, _) = josekit::jws::deserialize_compact(proof_jwt, verifier.as_ref())
        .map_err(|e| invalid(format!("signature does not verify with header jwk: {e}")))?;
    let claims = match serde_json::from_slice::<Value>(&payload) {
        Ok(Value::Object(claims)) => claims,
        _ => return Err(invalid("the payload is not a JSON object")),
    };

    // Check 3 and 4.2: jti.
    let jti = match claims.get("jti") {
        Some(Value::String(jti)) if jti.is_empty() => return Err(invalid("claim jti is empty")),
        Some(Value::String(jti)) if jti.chars().count() > MAX_JTI_CHARS => {
            return Err(invalid(format!(
                "claim jti is longer than {MAX_JTI_CHARS} characters"
            )));
        }
        Some(Value::String(jti)) => jti.clone(),
        Some(_) => return Err(invalid("claim jti must be a string")),
        None => return Err(invalid("claim jti is missing")),
    };

    // Check 8: htm.
    match claims.get("htm") {
        Some(Value::String(htm)) if htm == req.method => {}
        Some(Value::String(htm)) => {
            return Err(invalid(format!(
                "claim htm {htm:?} is not the request method {:?}",
                req.method
            )));
        }
        Some(_) => return Err(invalid("claim htm must be a string")),
        None => return Err(invalid("claim htm is missing")),
    }

    // Check 9: htu.
    let htu = match claims.get("htu") {
        Some(Value::String(htu)) => htu,
        Some(_) => return Err(invalid("claim htu must be a string")),
        None => return Err(invalid("claim htu is missing")),
    };
    let htu_url =
        url::Url::parse(htu).map_err(|e| invalid(format!("claim htu is not a URL: {e}")))?;
    let req_url = url::Url::parse(req.url)
        .map_err(|e| invalid(format!("the request URL is not an absolute URL: {e}")))?;
    if !same_target(&htu_url, &req_url) {
        return Err(invalid(format!(
            "claim htu {htu:?} is not the request URL (query and fragment ignored)"
        )));
    }

    // Check 11: iat.
    let iat_secs = match claims.get("iat") {
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite())
                    .map(|f| f.floor() as i64)
            })
            .ok_or_else(|| invalid("claim iat is not a usable NumericDate"))?,
        Some(_) => return Err(invalid("claim iat must be a number")),
        None => return Err(invalid("claim iat is missing")),
    };
    let now_secs = req.now.unix_timestamp();
    if iat_secs > now_secs.saturating_add(CLOCK_SKEW_SECS) {
        return Err(invalid(format!(
            "claim iat is more than {CLOCK_SKEW_SECS} s in the future"
        )));
    }
    if iat_secs < now_secs.saturating_sub(PROOF_MAX_AGE_SECS) {
        return Err(invalid(format!(
            "claim iat is more than {PROOF_MAX_AGE_SECS} s old"
        )));
    }
    let iat = OffsetDateTime::from_unix_timestamp(iat_secs)
        .map_err(|_| invalid("claim iat is out of range"))?;

    // Check 12: ath, when an access token came with the proof.
    if let Some(token) = req.access_token {
        match claims.get("ath") {
            Some(Value::String(ath)) => {
                let expected = access_token_hash(token);
                if !bool::from(ath.as_bytes().ct_eq(expected.as_bytes())) {
                    return Err(invalid("claim ath is not the hash of the access token"));
                }
            }
            Some(_) => return Err(invalid("claim ath must be a string")),
            None => {
                return Err(invalid(
                    "claim ath is missing, an access token was presented",
                ));
            }
        }
    }

    // Check 10: the server nonce, last (see the doc above).
    if let NonceRule::Required(nonces) = req.nonce {
        match claims.get("nonce") {
            Some(Value::String(nonce)) if nonces.accepts(nonce, req.now) => {}
            _ => return Err(DpopError::UseNonce),
        }
    }

    Ok(DpopProof {
        jkt: jwk_thumbprint(&jwk)?,
        jti,
        iat,
    })
}

/// Decodes a base64url (no padding) JSON object, as a JOSE header is.
fn decode_json_object(b64: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(b64).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// Whether `htu` and the request URL name the same resource: same scheme,
/// host, port (a default port written or not) and path; query and fragment
/// ignored (RFC 9449 section 4.3 check 9, URI normalization per section 4.3's
/// reference to RFC 3986 section 6.2.2 and 6.2.3, done by the `url` parser).
fn same_target(htu: &url::Url, req: &url::Url) -> bool {
    htu.scheme() == req.scheme()
        && htu.host() == req.host()
        && htu.port_or_known_default() == req.port_or_known_default()
        && htu.path() == req.path()
}

/// The JWK SHA-256 thumbprint of a public key (RFC 7638 section 3, as used
/// for `jkt` by RFC 9449 section 6.1): base64url without padding of the
/// SHA-256 of the key's required members, in lexicographic order, as JSON
/// without whitespace. EC keys: `crv`, `kty`, `x`, `y`; RSA: `e`, `kty`, `n`;
/// OKP (RFC 8037 section 2): `crv`, `kty`, `x`.
pub fn jwk_thumbprint(jwk: &Jwk) -> Result<String, DpopError> {
    let members: &[&str] = match jwk.key_type() {
        "EC" => &["crv", "kty", "x", "y"],
        "RSA" => &["e", "kty", "n"],
        "OKP" => &["crv", "kty", "x"],
        other => {
            return Err(invalid(format!("no thumbprint for a JWK of kty {other:?}")));
        }
    };
    // A BTreeMap keeps the (already sorted) members in lexicographic order,
    // and serde_json writes it without whitespace, escaping as JSON needs.
    let mut required = std::collections::BTreeMap::new();
    for member in members {
        match jwk.parameter(member) {
            Some(Value::String(v)) => {
                required.insert(*member, v.as_str());
            }
            Some(_) => return Err(invalid(format!("JWK member {member} must be a string"))),
            None => return Err(invalid(format!("JWK member {member} is missing"))),
        }
    }
    let json = serde_json::to_string(&required)
        .map_err(|e| invalid(format!("cannot serialize the JWK members: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(Sha256::digest(json.as_bytes())))
}

/// The `ath` claim for an access token: base64url without padding of the
/// SHA-256 of the token's ASCII bytes (RFC 9449 section 4.2).
pub fn access_token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

/// Stateless server nonces for DPoP proofs (RFC 9449 section 8): a nonce is
/// base64url (no padding) of an 8-byte big-endian time window number (unix
/// time / 60 s) followed by the first 16 bytes of HMAC-SHA256 of those 8
/// bytes under this key. A nonce is accepted during its own window and the
/// next one, so it lives 60 to 120 s; every node with the same key issues and
/// accepts the same nonces, with nothing stored.
#[derive(Clone)]
pub struct DpopNonces {
    key: [u8; 32],
}

impl fmt::Debug for DpopNonces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpopNonces").finish_non_exhaustive()
    }
}

impl DpopNonces {
    /// Nonces under this HMAC-SHA256 key (RFC 9449 section 8: the nonce is
    /// opaque to the client, its form the server's).
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// Nonces keyed by a key derived from the key-encryption key, which
    /// every node of a deployment shares: any node accepts another's nonce.
    pub fn from_kek(kek: &crate::secret::KeyEncryptionKey) -> Self {
        let derived = kek.mac("dpop-nonce", b"");
        Self::new(Sha256::digest(derived.as_bytes()).into())
    }

    /// A nonce for the window holding `now`, for a `DPoP-Nonce` response
    /// header (RFC 9449 section 8).
    pub fn issue(&self, now: OffsetDateTime) -> String {
        let window = window_of(now);
        let mut bytes = Vec::with_capacity(8 + NONCE_MAC_LEN);
        bytes.extend_from_slice(&window.to_be_bytes());
        bytes.extend_from_slice(&self.mac(window)[..NONCE_MAC_LEN]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Whether `nonce` is one this key issued in the window holding `now` or
    /// the one before (RFC 9449 section 8). A tampered, malformed, expired or
    /// future nonce is refused.
    pub fn accepts(&self, nonce: &str, now: OffsetDateTime) -> bool {
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(nonce) else {
            return false;
        };
        if bytes.len() != 8 + NONCE_MAC_LEN {
            return false;
        }
        let (window_bytes, mac) = bytes.split_at(8);
        let mut be = [0u8; 8];
        be.copy_from_slice(window_bytes);
        let window = i64::from_be_bytes(be);
        let current = window_of(now);
        if window != current && window != current.saturating_sub(1) {
            return false;
        }
        bool::from(self.mac(window)[..NONCE_MAC_LEN].ct_eq(mac))
    }

    fn mac(&self, window: i64) -> [u8; 32] {
        let mut m = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .expect("HMAC takes keys of any length");
        m.update(&window.to_be_bytes());
        m.finalize().into_bytes().into()
    }
}

/// The nonce window holding `now`.
fn window_of(now: OffsetDateTime) -> i64 {
    now.unix_timestamp().div_euclid(NONCE_WINDOW_SECS)
}

/// Checks the DPoP proofs of requests (RFC 9449 §4.3) and remembers their
/// `jti` until they are too old to be accepted anyway (§11.1: a replayed
/// proof is refused), in the short-lived store shared by every node.
pub struct DpopProofs {
    seen: crate::ephemeral::Records<bool>,
    clock: crate::clock::SharedClock,
    nonces: DpopNonces,
}

/// What a client's proofs must meet beyond RFC 9449 §4.3.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProofPolicy {
    /// A nonce this provider issued (§8; the client's `require_dpop_nonce`).
    pub nonce: bool,
    /// ES256 or PS256 only (FAPI 2.0 Security Profile §5.4.1).
    pub fapi2: bool,
}

impl ProofPolicy {
    /// The policy of `client`'s proofs.
    pub fn of(client: &crate::client::Client) -> Self {
        Self {
            nonce: client.protocol.require_dpop_nonce,
            fapi2: client.protocol.fapi2,
        }
    }
}

impl DpopProofs {
    pub fn new(
        store: std::sync::Arc<dyn crate::ephemeral::EphemeralStore>,
        clock: crate::clock::SharedClock,
        nonces: DpopNonces,
    ) -> Self {
        Self {
            seen: crate::ephemeral::Records::new(store, crate::ephemeral::Namespace::DpopProof),
            clock,
            nonces,
        }
    }

    /// A fresh nonce, for the `DPoP-Nonce` header (RFC 9449 §8).
    pub fn nonce(&self) -> String {
        self.nonces.issue(self.clock.now())
    }

    /// The proof among `headers` (the request's `DPoP` header values) for
    /// `method` and `url`, with `ath` for `access_token`: `None` when there
    /// is none; `invalid_dpop_proof` when there are several (§4.3 check 1),
    /// or it fails a check, or its `jti` was seen.
    pub async fn check(
        &self,
        headers: &[&str],
        method: &str,
        url: &str,
        access_token: Option<&str>,
        policy: ProofPolicy,
    ) -> Result<Option<DpopProof>, super::error::OAuthError> {
        use super::error::{ErrorCode, OAuthError};
        let invalid = |why: String| {
            OAuthError::new(ErrorCode::InvalidDpopProof, "the DPoP proof is invalid")
                .with_detail(why)
        };
        let proof = match headers {
            [] => return Ok(None),
            [one] => *one,
            _ => return Err(invalid("more than one DPoP header".into())),
        };
        let now = self.clock.now();
        let checked = verify_proof(
            proof,
            &DpopRequest {
                method,
                url,
                access_token,
                nonce: if policy.nonce {
                    NonceRule::Required(&self.nonces)
                } else {
                    NonceRule::NotRequired
                },
                now,
                fapi2: policy.fapi2,
            },
        )
        .map_err(|e| match e {
            DpopError::UseNonce => {
                OAuthError::new(ErrorCode::UseDpopNonce, "a DPoP nonce is required")
            }
            DpopError::Invalid(why) => invalid(why),
        })?;
        let first = self
            .seen
            .put_new(
                &format!("{}\u{0}{}", checked.jkt, checked.jti),
                &true,
                std::time::Duration::from_secs((PROOF_MAX_AGE_SECS + CLOCK_SKEW_SECS) as u64),
            )
            .await
            .map_err(crate::error::CoreError::from)?;
        if !first {
            return Err(invalid("jti replayed".into()));
        }
        Ok(Some(checked))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use josekit::jwk::KeyPair as _;
    use josekit::jws::{HS256, JwsHeader, JwsSigner};
    use serde_json::json;

    const URL: &str = "https://idp.example.com/oauth2/token";

    fn t(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(secs).unwrap()
    }

    const NOW: i64 = 1_800_000_000;

    struct Key {
        private: Jwk,
        public: Jwk,
        alg: &'static str,
    }

    fn es256_key() -> Key {
        let kp = ES256.generate_key_pair().unwrap();
        Key {
            private: kp.to_jwk_key_pair(),
            public: kp.to_jwk_public_key(),
            alg: "ES256",
        }
    }

    fn rs256_key() -> Key {
        let kp = RS256.generate_key_pair(2048).unwrap();
        Key {
            private: kp.to_jwk_key_pair(),
            public: kp.to_jwk_public_key(),
            alg: "RS256",
        }
    }

    fn signer(key: &Key) -> Box<dyn JwsSigner> {
        match key.alg {
            "ES256" => Box::new(ES256.signer_from_jwk(&key.private).unwrap()),
            "RS256" => Box::new(RS256.signer_from_jwk(&key.private).unwrap()),
            _ => Box::new(PS256.signer_from_jwk(&key.private).unwrap()),
        }
    }

    fn claims(iat: i64) -> Map<String, Value> {
        json!({"jti": "e1j3V_bKic8-LAEB", "htm": "POST", "htu": URL, "iat": iat})
            .as_object()
            .unwrap()
            .clone()
    }

    /// A proof signed by `signer`, header `typ` and `jwk` as given.
    fn sign_with(
        signer: &dyn JwsSigner,
        typ: &str,
        jwk: &Jwk,
        claims: &Map<String, Value>,
    ) -> String {
        let mut header = JwsHeader::new();
        header.set_token_type(typ);
        header.set_jwk(jwk.clone());
        let payload = serde_json::to_vec(claims).unwrap();
        josekit::jws::serialize_compact(&payload, &header, signer).unwrap()
    }

    /// A well-formed proof by `key` with these claims.
    fn proof(key: &Key, claims: &Map<String, Value>) -> String {
        sign_with(signer(key).as_ref(), PROOF_TYP, &key.public, claims)
    }

    fn req<'a>() -> DpopRequest<'a> {
        DpopRequest {
            method: "POST",
            url: URL,
            access_token: None,
            nonce: NonceRule::NotRequired,
            now: t(NOW),
            fapi2: false,
        }
    }

    fn err(proof: &str, req: &DpopRequest<'_>) -> String {
        match verify_proof(proof, req) {
            Err(DpopError::Invalid(msg)) => msg,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn happy_path_es256_and_rs256_and_ps256() {
        let kp = PS256.generate_key_pair(2048).unwrap();
        let pss = Key {
            private: kp.to_jwk_key_pair(),
            public: kp.to_jwk_public_key(),
            alg: "PS256",
        };
        for key in [es256_key(), rs256_key(), pss] {
            let p = proof(&key, &claims(NOW - 10));
            let ok = verify_proof(&p, &req()).unwrap();
            assert_eq!(ok.jti, "e1j3V_bKic8-LAEB");
            assert_eq!(ok.iat, t(NOW - 10));
            assert_eq!(ok.jkt, jwk_thumbprint(&key.public).unwrap());
            // Stable: the same key gives the same thumbprint, its private
            // half too (only the public members count).
            assert_eq!(ok.jkt, jwk_thumbprint(&key.private).unwrap());
            let again = verify_proof(&proof(&key, &claims(NOW)), &req()).unwrap();
            assert_eq!(again.jkt, ok.jkt);
            assert_eq!(ok.jkt.len(), 43, "{}: base64url of 32 bytes", key.alg);
        }
    }

    #[test]
    fn rfc7638_example_thumbprint() {
        // RFC 7638 section 3.1.
        let jwk = Jwk::from_bytes(
            br#"{
              "kty": "RSA",
              "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
              "e": "AQAB",
              "alg": "RS256",
              "kid": "2011-04-29"
            }"#,
        )
        .unwrap();
        assert_eq!(
            jwk_thumbprint(&jwk).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        let oct = Jwk::from_bytes(br#"{"kty":"oct","k":"c2VjcmV0"}"#).unwrap();
        assert!(jwk_thumbprint(&oct).is_err());
    }

    #[test]
    fn access_token_hash_is_base64url_sha256() {
        // RFC 9449 section 7.1's example access token and its ath.
        assert_eq!(
            access_token_hash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
            "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
        );
    }

    #[test]
    fn wrong_method_refused() {
        let key = es256_key();
        let mut c = claims(NOW);
        c.insert("htm".into(), "GET".into());
        assert!(err(&proof(&key, &c), &req()).contains("htm"));
        // Exact: no case folding.
        c.insert("htm".into(), "post".into());
        assert!(err(&proof(&key, &c), &req()).contains("htm"));
    }

    #[test]
    fn wrong_url_refused_query_fragment_and_default_port_ignored() {
        let key = es256_key();
        let mut c = claims(NOW);
        c.insert(
            "htu".into(),
            "https://idp.example.com/oauth2/userinfo".into(),
        );
        assert!(err(&proof(&key, &c), &req()).contains("htu"));
        c.insert("htu".into(), "http://idp.example.com/oauth2/token".into());
        assert!(err(&proof(&key, &c), &req()).contains("htu"));
        c.insert(
            "htu".into(),
            "https://idp.example.com:8443/oauth2/token".into(),
        );
        assert!(err(&proof(&key, &c), &req()).contains("htu"));
        c.insert("htu".into(), "/oauth2/token".into());
        assert!(err(&proof(&key, &c), &req()).contains("not a URL"));

        for same in [
            "https://idp.example.com/oauth2/token?x=1#frag",
            "https://IDP.example.com:443/oauth2/token",
        ] {
            c.insert("htu".into(), same.into());
            verify_proof(&proof(&key, &c), &req()).unwrap();
        }
        // The request's own query is ignored too.
        let mut r = req();
        r.url = "https://idp.example.com/oauth2/token?foo=bar";
        verify_proof(&proof(&key, &claims(NOW)), &r).unwrap();
    }

    #[test]
    fn iat_too_old_or_in_the_future_refused() {
        let key = es256_key();
        let old = proof(&key, &claims(NOW - PROOF_MAX_AGE_SECS - 1));
        assert!(err(&old, &req()).contains("old"));
        verify_proof(&proof(&key, &claims(NOW - PROOF_MAX_AGE_SECS)), &req()).unwrap();
        let future = proof(&key, &claims(NOW + CLOCK_SKEW_SECS + 1));
        assert!(err(&future, &req()).contains("future"));
        verify_proof(&proof(&key, &claims(NOW + CLOCK_SKEW_SECS)), &req()).unwrap();
        let mut c = claims(NOW);
        c.insert("iat".into(), "1800000000".into());
        assert!(err(&proof(&key, &c), &req()).contains("iat must be a number"));
        c.remove("iat");
        assert!(err(&proof(&key, &c), &req()).contains("iat is missing"));
    }

    #[test]
    fn jti_checked() {
        let key = es256_key();
        let mut c = claims(NOW);
        c.insert("jti".into(), "".into());
        assert!(err(&proof(&key, &c), &req()).contains("jti is empty"));
        c.insert("jti".into(), "x".repeat(257).into());
        assert!(err(&proof(&key, &c), &req()).contains("longer"));
        c.insert("jti".into(), "x".repeat(256).into());
        verify_proof(&proof(&key, &c), &req()).unwrap();
        c.remove("jti");
        assert!(err(&proof(&key, &c), &req()).contains("jti is missing"));
    }

    #[test]
    fn ath_required_with_an_access_token() {
        let key = es256_key();
        let token = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU";
        let mut r = req();
        r.access_token = Some(token);
        let without = proof(&key, &claims(NOW));
        assert!(err(&without, &r).contains("ath is missing"));
        let mut c = claims(NOW);
        c.insert("ath".into(), access_token_hash("another token").into());
        assert!(err(&proof(&key, &c), &r).contains("not the hash"));
        c.insert("ath".into(), access_token_hash(token).into());
        let with = proof(&key, &c);
        verify_proof(&with, &r).unwrap();
        // Without an access token, ath is ignored.
        verify_proof(&with, &req()).unwrap();
        verify_proof(&without, &req()).unwrap();
    }

    #[test]
    fn wrong_typ_refused() {
        let key = es256_key();
        let s = signer(&key);
        for typ in ["JWT", "DPoP+JWT", "at+jwt"] {
            let p = sign_with(s.as_ref(), typ, &key.public, &claims(NOW));
            assert!(err(&p, &req()).contains("typ"), "{typ}");
        }
    }

    #[test]
    fn alg_none_and_hmac_refused() {
        let key = es256_key();
        let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
        let header = json!({"typ": PROOF_TYP, "alg": "none", "jwk": key.public.as_ref()});
        let body = b64(&Value::Object(claims(NOW)));
        let unsigned = format!("{}.{body}.", b64(&header));
        assert!(err(&unsigned, &req()).contains("not a compact JWS"));
        let fake_sig = format!("{}.{body}.AAAA", b64(&header));
        assert!(err(&fake_sig, &req()).contains("alg none"));

        let hs = HS256
            .signer_from_bytes(b"0123456789abcdef0123456789abcdef")
            .unwrap();
        let p = sign_with(&hs, PROOF_TYP, &key.public, &claims(NOW));
        assert!(err(&p, &req()).contains("asymmetric"));

        let es384 = json!({"typ": PROOF_TYP, "alg": "ES384", "jwk": key.public.as_ref()});
        let p = format!("{}.{body}.AAAA", b64(&es384));
        assert!(err(&p, &req()).contains("not supported"));
    }

    #[test]
    fn private_key_in_header_refused() {
        for key in [es256_key(), rs256_key()] {
            let p = sign_with(signer(&key).as_ref(), PROOF_TYP, &key.private, &claims(NOW));
            assert!(err(&p, &req()).contains("private key"), "{}", key.alg);
        }
    }

    #[test]
    fn missing_or_mismatched_jwk_refused() {
        let key = es256_key();
        let mut header = JwsHeader::new();
        header.set_token_type(PROOF_TYP);
        let payload = serde_json::to_vec(&claims(NOW)).unwrap();
        let p = josekit::jws::serialize_compact(&payload, &header, signer(&key).as_ref()).unwrap();
        assert!(err(&p, &req()).contains("jwk is missing"));
        // An RSA key in the header of an ES256 proof.
        let rsa = rs256_key();
        let p = sign_with(signer(&key).as_ref(), PROOF_TYP, &rsa.public, &claims(NOW));
        assert!(err(&p, &req()).contains("not a ES256 public key"));
    }

    #[test]
    fn signature_by_another_key_refused() {
        let key = es256_key();
        let other = es256_key();
        let p = sign_with(
            signer(&other).as_ref(),
            PROOF_TYP,
            &key.public,
            &claims(NOW),
        );
        assert!(err(&p, &req()).contains("signature"));
        let rsa = rs256_key();
        let rsa_other = rs256_key();
        let p = sign_with(
            signer(&rsa_other).as_ref(),
            PROOF_TYP,
            &rsa.public,
            &claims(NOW),
        );
        assert!(err(&p, &req()).contains("signature"));
        // A tampered payload.
        let good = proof(&key, &claims(NOW));
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        let mut c = claims(NOW);
        c.insert("htm".into(), "POST ".into());
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap());
        assert!(err(&parts.join("."), &req()).contains("signature"));
    }

    #[test]
    fn malformed_proofs_refused() {
        for bad in ["", "a.b", "a.b.c.d", "not base64!.e30.AAAA", "e30.e30"] {
            assert!(matches!(
                verify_proof(bad, &req()),
                Err(DpopError::Invalid(_))
            ));
        }
    }

    #[test]
    fn nonce_required_missing_or_bad_is_use_nonce() {
        let key = es256_key();
        let nonces = DpopNonces::new([7u8; 32]);
        let mut r = req();
        r.nonce = NonceRule::Required(&nonces);
        assert_eq!(
            verify_proof(&proof(&key, &claims(NOW)), &r),
            Err(DpopError::UseNonce)
        );
        assert_eq!(DpopError::UseNonce.error_code(), "use_dpop_nonce");

        let mut c = claims(NOW);
        c.insert("nonce".into(), nonces.issue(t(NOW - 30)).into());
        verify_proof(&proof(&key, &c), &r).unwrap();

        // A nonce of another key, or two windows old.
        let other = DpopNonces::new([8u8; 32]);
        c.insert("nonce".into(), other.issue(t(NOW)).into());
        assert_eq!(verify_proof(&proof(&key, &c), &r), Err(DpopError::UseNonce));
        c.insert("nonce".into(), nonces.issue(t(NOW - 120)).into());
        assert_eq!(verify_proof(&proof(&key, &c), &r), Err(DpopError::UseNonce));

        // Not required: no nonce needed, any nonce ignored.
        verify_proof(&proof(&key, &c), &req()).unwrap();
        // An otherwise invalid proof is Invalid, not UseNonce.
        let mut bad = claims(NOW);
        bad.insert("htm".into(), "GET".into());
        assert!(matches!(
            verify_proof(&proof(&key, &bad), &r),
            Err(DpopError::Invalid(_))
        ));
    }

    #[test]
    fn nonce_windows() {
        let nonces = DpopNonces::new([1u8; 32]);
        // 1_800_000_000 is a multiple of 60: the start of a window.
        let start = NOW;
        let n = nonces.issue(t(start + 5));
        assert_eq!(n, nonces.issue(t(start + 59)), "one nonce per window");
        assert_ne!(n, nonces.issue(t(start + 60)));
        assert!(nonces.accepts(&n, t(start)));
        assert!(nonces.accepts(&n, t(start + 119)), "the next window too");
        assert!(!nonces.accepts(&n, t(start + 120)), "two windows later");
        assert!(!nonces.accepts(&n, t(start - 1)), "from the future");
        assert!(!nonces.accepts(&nonces.issue(t(start + 60)), t(start)));
        assert!(!nonces.accepts("", t(start)));
        assert!(!nonces.accepts("not base64!", t(start)));
    }

    #[test]
    fn tampered_nonce_refused() {
        let nonces = DpopNonces::new([1u8; 32]);
        let n = nonces.issue(t(NOW));
        let mut bytes = URL_SAFE_NO_PAD.decode(&n).unwrap();
        assert_eq!(bytes.len(), 24);
        // A flipped MAC bit.
        bytes[20] ^= 1;
        assert!(!nonces.accepts(&URL_SAFE_NO_PAD.encode(&bytes), t(NOW)));
        // A window moved forward, MAC kept.
        let mut moved = URL_SAFE_NO_PAD.decode(&n).unwrap();
        moved[7] = moved[7].wrapping_add(1);
        assert!(!nonces.accepts(&URL_SAFE_NO_PAD.encode(&moved), t(NOW + 60)));
        // Truncated.
        assert!(!nonces.accepts(&n[..n.len() - 2], t(NOW)));
        assert!(format!("{nonces:?}").contains("DpopNonces"));
        assert!(!format!("{nonces:?}").contains("1, 1"));
    }
}
