//! JWTs that clients sign: client assertions (`private_key_jwt` and
//! `client_secret_jwt`, RFC 7523 §3 with the audience rule of
//! draft-ietf-oauth-rfc7523bis) and request objects (RFC 9101 §6.3, with the
//! FAPI 2.0 Message Signing lifetime rule as an option).
//!
//! The client's public keys come in as JWKS JSON text ([`ClientKeys`]):
//! registered inline or fetched from its `jwks_uri` elsewhere; this module
//! does no I/O.
//!
//! Each check verifies the signature first and only then reads the claims,
//! so nothing unauthenticated decides more than which key to try.
//!
//! What is **not** done here, and is the caller's:
//! - replay: a client assertion's `jti` must be used once (RFC 7523 §3 item
//!   7); the caller stores [`VerifiedAssertion::jti`] until
//!   [`VerifiedAssertion::exp`] and refuses a `jti` it has seen. The same for
//!   a request object's `jti` where the profile asks for one-time use;
//! - finding the client: [`unverified_issuer`] and [`unverified_client_id`]
//!   read a JWT without verifying it, only to know which client's keys or
//!   secret to verify it with;
//! - comparing the request object with the authorization request around it
//!   (RFC 9101 §6.3: its `client_id` parameter must match; only the request
//!   object's parameters are used).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use josekit::jwk::Jwk;
use josekit::jws::{ES256, JwsVerifier, PS256, RS256};
use serde_json::{Map, Value};
use std::fmt;
use subtle::ConstantTimeEq as _;
use time::{Duration, OffsetDateTime};

/// How far a client's clock may be from ours: `exp` may be this much in the
/// past, `nbf` and `iat` this much in the future (RFC 7519 §4.1.4, §4.1.5
/// allow "some small leeway").
pub const CLOCK_SKEW_SECS: i64 = 60;

/// The longest lifetime (`exp` - `nbf`) of a request object when
/// [`RequestObjectRules::fapi2`] is set: 60 minutes (FAPI 2.0
/// Message Signing §5.3.1).
const MAX_REQUEST_OBJECT_LIFETIME_SECS: i64 = 3600;

/// Longer JWTs are refused before any decoding (a request object with a
/// large `claims` or `authorization_details` stays well below this).
const MAX_JWT_LEN: usize = 64 * 1024;

/// The shortest `client_secret` that may key HS256: as long as the hash
/// output (RFC 7518 §3.2).
const MIN_HS256_SECRET_BYTES: usize = 32;

/// Members that only a private or symmetric JWK has (RFC 7518 §6.2.2, §6.3.2,
/// §6.4.1).
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Why a client's JWT (or JWKS) is refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ClientJwtError {
    /// Not a well-formed JWT or JWKS, or a header we do not accept (`alg`,
    /// `typ`, `crit`).
    #[error("malformed: {0}")]
    Malformed(String),
    /// No registered key of the client fits the header (`kid`, `alg`).
    #[error("no registered key of the client matches the JWT header (kid, alg)")]
    UnknownKey,
    /// The signature does not verify with the key(s) or secret it may be
    /// signed with.
    #[error("the signature does not verify")]
    BadSignature,
    /// `exp` is past (beyond [`CLOCK_SKEW_SECS`]).
    #[error("expired (exp)")]
    Expired,
    /// `nbf` or `iat` is in the future (beyond [`CLOCK_SKEW_SECS`]).
    #[error("not yet valid (nbf or iat in the future)")]
    NotYetValid,
    /// `aud` is missing or is not the issuer identifier as required.
    #[error("wrong audience (aud)")]
    WrongAudience,
    /// `iss` (or, for a client assertion, `sub`) is missing or is not the
    /// client's `client_id`.
    #[error("wrong issuer (iss or sub is not the client_id)")]
    WrongIssuer,
    /// Another claim is missing, of the wrong type or not allowed.
    #[error("claim: {0}")]
    Claim(String),
}

fn malformed(msg: impl Into<String>) -> ClientJwtError {
    ClientJwtError::Malformed(msg.into())
}

fn claim_error(msg: impl Into<String>) -> ClientJwtError {
    ClientJwtError::Claim(msg.into())
}

/// The asymmetric JWS algorithms accepted from clients (RFC 7518 §3.3, §3.4,
/// §3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AsymAlg {
    RS256,
    PS256,
    ES256,
}

impl AsymAlg {
    fn parse(alg: &str) -> Option<Self> {
        match alg {
            "RS256" => Some(Self::RS256),
            "PS256" => Some(Self::PS256),
            "ES256" => Some(Self::ES256),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::PS256 => "PS256",
            Self::ES256 => "ES256",
        }
    }
}

/// One usable public key of a client, with a verifier for each algorithm it
/// may verify.
struct ClientKey {
    kid: Option<String>,
    kty: String,
    verifiers: Vec<(AsymAlg, Box<dyn JwsVerifier>)>,
}

impl Clone for ClientKey {
    fn clone(&self) -> Self {
        Self {
            kid: self.kid.clone(),
            kty: self.kty.clone(),
            verifiers: self
                .verifiers
                .iter()
                .map(|(alg, v)| (*alg, v.box_clone()))
                .collect(),
        }
    }
}

/// A client's public signing keys, parsed from its JWKS (RFC 7517 §5).
///
/// Kept: RSA keys (for RS256 and PS256, at least 2048 bits) and EC P-256 keys
/// (ES256), each with its `kid`; a key whose `alg` member is set verifies
/// only that algorithm. Skipped: keys whose `use` is not `sig` (`enc` keys,
/// RFC 7517 §4.2), whose `key_ops` lacks `verify` (§4.3), and keys of other
/// types, curves or algorithms, which could not verify anything we accept.
#[derive(Clone)]
pub struct ClientKeys {
    keys: Vec<ClientKey>,
}

impl fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| {
                (
                    &k.kid,
                    &k.kty,
                    k.verifiers
                        .iter()
                        .map(|(a, _)| a.as_str())
                        .collect::<Vec<_>>(),
                )
            }))
            .finish()
    }
}

impl ClientKeys {
    /// Parses a JWK Set document `{"keys": [...]}` (RFC 7517 §5).
    ///
    /// Refused with [`ClientJwtError::Malformed`]: anything that is not a JWK
    /// Set, a key with a member only a private or symmetric key has (`d`,
    /// `p`, `q`, `dp`, `dq`, `qi`, `oth`, `k`: a client publishes public keys
    /// only, RFC 7517 §9.2), and a kept key that is itself malformed (missing
    /// `n`, RSA shorter than 2048 bits, ...). Keys that cannot verify
    /// anything we accept are skipped (see [`ClientKeys`]); the result may be
    /// empty ([`Self::is_empty`]).
    pub fn from_jwks(json: &str) -> Result<Self, ClientJwtError> {
        let doc: Value = serde_json::from_str(json)
            .map_err(|e| malformed(format!("the JWKS is not JSON: {e}")))?;
        let entries = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| malformed("the JWKS has no \"keys\" array"))?;
        let mut keys = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let map = entry
                .as_object()
                .ok_or_else(|| malformed(format!("JWKS key #{i} is not a JSON object")))?;
            let kid = optional_str(map, "kid")
                .map_err(|()| malformed(format!("JWKS key #{i}: kid must be a string")))?;
            let name = match kid {
                Some(kid) => format!("JWKS key #{i} (kid {kid:?})"),
                None => format!("JWKS key #{i}"),
            };
            if let Some(member) = PRIVATE_MEMBERS.iter().find(|m| map.contains_key(**m)) {
                return Err(malformed(format!(
                    "{name} holds private key material (member \"{member}\"): \
                     register public keys only, and replace this key, it is no longer secret"
                )));
            }
            let member = |m: &str| {
                optional_str(map, m)
                    .map_err(|()| malformed(format!("{name}: {m} must be a string")))
            };
            let kty = member("kty")?.ok_or_else(|| malformed(format!("{name} has no kty")))?;
            let alg = member("alg")?;
            if member("use")?.is_some_and(|u| u != "sig") {
                continue;
            }
            match map.get("key_ops") {
                None => {}
                Some(Value::Array(ops)) if !ops.iter().any(|op| op.as_str() == Some("verify")) => {
                    continue;
                }
                Some(Value::Array(_)) => {}
                Some(_) => return Err(malformed(format!("{name}: key_ops must be an array"))),
            }
            let algs: &[AsymAlg] = match kty {
                "RSA" => &[AsymAlg::RS256, AsymAlg::PS256],
                "EC" if map.get("crv").and_then(Value::as_str) == Some("P-256") => {
                    &[AsymAlg::ES256]
                }
                _ => continue,
            };
            let algs: Vec<AsymAlg> = algs
                .iter()
                .copied()
                .filter(|a| alg.is_none_or(|alg| alg == a.as_str()))
                .collect();
            if algs.is_empty() {
                continue;
            }
            let jwk = Jwk::from_map(map.clone()).map_err(|e| malformed(format!("{name}: {e}")))?;
            let mut verifiers: Vec<(AsymAlg, Box<dyn JwsVerifier>)> = Vec::new();
            for a in algs {
                let verifier: Result<Box<dyn JwsVerifier>, _> = match a {
                    AsymAlg::RS256 => RS256.verifier_from_jwk(&jwk).map(|v| Box::new(v) as _),
                    AsymAlg::PS256 => PS256.verifier_from_jwk(&jwk).map(|v| Box::new(v) as _),
                    AsymAlg::ES256 => ES256.verifier_from_jwk(&jwk).map(|v| Box::new(v) as _),
                };
                let verifier = verifier.map_err(|e| {
                    let cause = match &e {
                        josekit::JoseError::InvalidKeyFormat(cause) => cause.to_string(),
                        other => other.to_string(),
                    };
                    malformed(format!("{name} is not a usable {kty} key: {cause}"))
                })?;
                verifiers.push((a, verifier));
            }
            keys.push(ClientKey {
                kid: kid.map(str::to_owned),
                kty: kty.to_owned(),
                verifiers,
            });
        }
        Ok(Self { keys })
    }

    /// Whether no usable signing key was found.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies `signature` over `input` (RFC 7515 §5.2): with the keys of
    /// header `kid` if there is one, else with every key that can verify
    /// `alg`.
    fn verify(
        &self,
        alg: AsymAlg,
        kid: Option<&str>,
        input: &[u8],
        signature: &[u8],
    ) -> Result<(), ClientJwtError> {
        let mut candidates = self
            .keys
            .iter()
            .filter(|k| kid.is_none_or(|kid| k.kid.as_deref() == Some(kid)))
            .flat_map(|k| k.verifiers.iter())
            .filter(|(a, _)| *a == alg)
            .peekable();
        if candidates.peek().is_none() {
            return Err(ClientJwtError::UnknownKey);
        }
        if candidates.any(|(_, v)| v.verify(input, signature).is_ok()) {
            Ok(())
        } else {
            Err(ClientJwtError::BadSignature)
        }
    }
}

/// What verifies a client assertion's signature: the client's registered
/// public keys (`private_key_jwt`) or its secret (`client_secret_jwt`)
/// (OpenID Connect Core §9).
#[derive(Clone, Copy)]
pub enum Signer<'a> {
    /// `private_key_jwt`: RS256, PS256 or ES256 with one of these keys.
    Keys(&'a ClientKeys),
    /// `client_secret_jwt`: HS256 only, keyed with the client secret as
    /// bytes, which must be at least 32 bytes long (RFC 7518 §3.2).
    Secret(&'a [u8]),
}

impl fmt::Debug for Signer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Keys(keys) => f.debug_tuple("Keys").field(keys).finish(),
            Self::Secret(_) => f.write_str("Secret(..)"),
        }
    }
}

/// What a client assertion is checked against (RFC 7523 §3).
#[derive(Debug, Clone, Copy)]
pub struct AssertionRules<'a> {
    /// The authenticating client: `iss` and `sub` must both be it (§3 items
    /// 1 and 2.B).
    pub client_id: &'a str,
    /// Our issuer identifier, the only audience accepted
    /// (draft-ietf-oauth-rfc7523bis: not the token endpoint URL).
    pub issuer: &'a str,
    pub now: OffsetDateTime,
    /// The longest lifetime accepted: `exp` - `iat`, or `exp` - `now` (plus
    /// [`CLOCK_SKEW_SECS`]) when there is no `iat` (§3 item 4 lets the server
    /// bound it).
    pub max_lifetime_secs: i64,
    /// ES256 or PS256 only (FAPI 2.0 Security Profile §5.4.1).
    pub fapi2: bool,
}

/// A client assertion that passed [`verify_client_assertion`]: what the
/// caller needs to refuse a replay (RFC 7523 §3 item 7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAssertion {
    pub jti: String,
    /// Until when the `jti` must be remembered.
    pub exp: OffsetDateTime,
}

/// Verifies a client assertion (RFC 7523 §2.2 and §3).
///
/// - Signature (§3 item 9): with [`Signer::Keys`], `alg` RS256, PS256 or
///   ES256, the key chosen by the header's `kid`, else every key that can
///   verify `alg`; with [`Signer::Secret`], HS256 only. `none` is never
///   accepted, nor a symmetric `alg` with keys (RFC 8725 §3.1).
/// - `iss` and `sub` are both the client_id (§3 items 1, 2.B), else
///   [`ClientJwtError::WrongIssuer`].
/// - `aud` is the issuer identifier: the string itself or an array of that
///   one string (draft-ietf-oauth-rfc7523bis; §3 item 3); the token
///   endpoint URL or any other value is [`ClientJwtError::WrongAudience`].
/// - `exp` is required and not past (§3 item 4), `nbf` and `iat` if present
///   not in the future (items 5, 6), all with [`CLOCK_SKEW_SECS`]; the
///   lifetime is at most [`AssertionRules::max_lifetime_secs`].
/// - `jti` is required and not empty (item 7). Its one-time use is the
///   caller's to enforce.
/// - A `typ` header of `oauth-authz-req+jwt` is refused: a request object is
///   not a client assertion (RFC 8725 §3.11).
pub fn verify_client_assertion(
    jwt: &str,
    signer: &Signer,
    rules: &AssertionRules,
) -> Result<VerifiedAssertion, ClientJwtError> {
    let parsed = Parsed::new(jwt)?;
    let alg = parsed.alg()?;
    if parsed
        .typ()?
        .is_some_and(|t| media_type_is(t, "oauth-authz-req+jwt"))
    {
        return Err(malformed(
            "typ oauth-authz-req+jwt is a request object, not a client assertion",
        ));
    }
    match signer {
        Signer::Keys(keys) => {
            let alg = AsymAlg::parse(alg).ok_or_else(|| {
                malformed(format!(
                    "alg {alg} is not accepted for private_key_jwt (RS256, PS256 or ES256)"
                ))
            })?;
            if rules.fapi2 && alg == AsymAlg::RS256 {
                return Err(malformed(
                    "alg RS256 is not accepted from this client (FAPI 2.0: ES256 or PS256)",
                ));
            }
            keys.verify(
                alg,
                parsed.kid()?,
                parsed.signing_input.as_bytes(),
                &parsed.signature,
            )?;
        }
        Signer::Secret(secret) => {
            if alg != "HS256" {
                return Err(malformed(format!(
                    "alg {alg} is not accepted for client_secret_jwt (HS256 only)"
                )));
            }
            verify_hs256(secret, parsed.signing_input.as_bytes(), &parsed.signature)?;
        }
    }

    let claims = &parsed.claims;
    if string_claim(claims, "iss")? != Some(rules.client_id)
        || string_claim(claims, "sub")? != Some(rules.client_id)
    {
        return Err(ClientJwtError::WrongIssuer);
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(aud)) => aud == rules.issuer,
        Some(Value::Array(auds)) => {
            matches!(auds.as_slice(), [Value::String(aud)] if aud == rules.issuer)
        }
        _ => false,
    };
    if !aud_ok {
        return Err(ClientJwtError::WrongAudience);
    }
    let skew = Duration::seconds(CLOCK_SKEW_SECS);
    let exp = numeric_date(claims, "exp")?.ok_or_else(|| claim_error("exp is required"))?;
    if exp <= rules.now - skew {
        return Err(ClientJwtError::Expired);
    }
    let iat = numeric_date(claims, "iat")?;
    for t in [numeric_date(claims, "nbf")?, iat].into_iter().flatten() {
        if t > rules.now + skew {
            return Err(ClientJwtError::NotYetValid);
        }
    }
    let max = Duration::seconds(rules.max_lifetime_secs);
    let too_long = match iat {
        Some(iat) => exp - iat > max,
        None => exp - rules.now > max + skew,
    };
    if too_long {
        return Err(claim_error(format!(
            "the assertion lives longer than {} seconds (exp - iat)",
            rules.max_lifetime_secs
        )));
    }
    let jti = string_claim(claims, "jti")?
        .filter(|j| !j.is_empty())
        .ok_or_else(|| claim_error("jti is required"))?;
    Ok(VerifiedAssertion {
        jti: jti.to_owned(),
        exp,
    })
}

/// What a request object is checked against (RFC 9101 §6.3).
#[derive(Debug, Clone, Copy)]
pub struct RequestObjectRules<'a> {
    /// The client the request is from: `iss` must be it, and `client_id` if
    /// present.
    pub client_id: &'a str,
    /// Our issuer identifier, which `aud` must hold (RFC 9101 §4).
    pub issuer: &'a str,
    pub now: OffsetDateTime,
    /// The FAPI 2.0 profile: `exp` and `nbf` required, and `exp` at most 60
    /// minutes after `nbf` (which, with `exp` not past, also keeps `nbf`
    /// within 60 minutes of now; FAPI 2.0 Message Signing §5.3.1), and ES256
    /// or PS256 only (Security Profile §5.4.1).
    pub fapi2: bool,
}

/// A request object that passed [`verify_request_object`].
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedRequestObject {
    /// All its claims: the authorization request parameters (RFC 9101 §4),
    /// plus `iss`, `aud`, `exp`, ...
    pub claims: Map<String, Value>,
    /// For a caller that refuses a reused request object.
    pub jti: Option<String>,
    pub exp: Option<OffsetDateTime>,
}

/// Verifies a signed request object (RFC 9101 §6.3; FAPI 2.0 Message
/// Signing §5.3.1 with [`RequestObjectRules::fapi2`]).
///
/// - Signed with an asymmetric `alg` (RS256, PS256, ES256) by one of `keys`
///   (RFC 9101 §6.2): unsigned (`none`) request objects are never accepted,
///   nor symmetric ones. Encrypted (JWE) request objects are not supported.
/// - `typ`, if present, is `oauth-authz-req+jwt` (RFC 9101 §10.8) or `JWT`.
/// - `iss` is the client_id ([`ClientJwtError::WrongIssuer`]), `aud` is the
///   issuer or an array holding it ([`ClientJwtError::WrongAudience`]), and a
///   `client_id` claim, if present, is the client_id (RFC 9101 §4, §5).
/// - `exp`, if present, is not past ([`ClientJwtError::Expired`]) and `nbf`,
///   if present, not in the future ([`ClientJwtError::NotYetValid`]), with
///   [`CLOCK_SKEW_SECS`].
/// - No `request` or `request_uri` claim (RFC 9101 §4: they must not be
///   included).
pub fn verify_request_object(
    jwt: &str,
    keys: &ClientKeys,
    rules: &RequestObjectRules,
) -> Result<VerifiedRequestObject, ClientJwtError> {
    let parsed = Parsed::new(jwt)?;
    let alg = parsed.alg()?;
    let alg = AsymAlg::parse(alg).ok_or_else(|| {
        if alg == "none" {
            malformed("unsigned request objects (alg none) are not accepted")
        } else {
            malformed(format!(
                "alg {alg} is not accepted for request objects (RS256, PS256 or ES256)"
            ))
        }
    })?;
    if rules.fapi2 && alg == AsymAlg::RS256 {
        return Err(malformed(
            "alg RS256 is not accepted from this client (FAPI 2.0: ES256 or PS256)",
        ));
    }
    if let Some(typ) = parsed.typ()?
        && !(media_type_is(typ, "oauth-authz-req+jwt") || media_type_is(typ, "jwt"))
    {
        return Err(malformed(format!(
            "typ {typ} is not accepted for a request object (oauth-authz-req+jwt)"
        )));
    }
    keys.verify(
        alg,
        parsed.kid()?,
        parsed.signing_input.as_bytes(),
        &parsed.signature,
    )?;

    let claims = parsed.claims;
    if string_claim(&claims, "iss")? != Some(rules.client_id) {
        return Err(ClientJwtError::WrongIssuer);
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(aud)) => aud == rules.issuer,
        Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(rules.issuer)),
        _ => false,
    };
    if !aud_ok {
        return Err(ClientJwtError::WrongAudience);
    }
    if string_claim(&claims, "client_id")?.is_some_and(|c| c != rules.client_id) {
        return Err(claim_error("client_id is not the client's"));
    }
    for forbidden in ["request", "request_uri"] {
        if claims.contains_key(forbidden) {
            return Err(claim_error(format!(
                "a request object must not contain {forbidden}"
            )));
        }
    }
    let skew = Duration::seconds(CLOCK_SKEW_SECS);
    let exp = numeric_date(&claims, "exp")?;
    let nbf = numeric_date(&claims, "nbf")?;
    if exp.is_some_and(|exp| exp <= rules.now - skew) {
        return Err(ClientJwtError::Expired);
    }
    if nbf.is_some_and(|nbf| nbf > rules.now + skew) {
        return Err(ClientJwtError::NotYetValid);
    }
    if rules.fapi2 {
        let (Some(exp), Some(nbf)) = (exp, nbf) else {
            return Err(claim_error("a request object must contain exp and nbf"));
        };
        if exp - nbf > Duration::seconds(MAX_REQUEST_OBJECT_LIFETIME_SECS) {
            return Err(claim_error(
                "a request object must not live longer than 60 minutes (exp - nbf)",
            ));
        }
    }
    let jti = string_claim(&claims, "jti")?.map(str::to_owned);
    Ok(VerifiedRequestObject { claims, jti, exp })
}

/// The `iss` claim (else `sub`) of a JWT, **not verified**: only to know
/// which client's keys or secret to verify it with (a client assertion's
/// `iss` is its client_id, RFC 7523 §3 item 1).
pub fn unverified_issuer(jwt: &str) -> Option<String> {
    let claims = unverified_claims(jwt)?;
    ["iss", "sub"]
        .iter()
        .find_map(|c| claims.get(*c).and_then(Value::as_str))
        .map(str::to_owned)
}

/// The `client_id` claim of a JWT, **not verified**: the client a request
/// object says it is from (RFC 9101 §5), to look up its keys.
pub fn unverified_client_id(jwt: &str) -> Option<String> {
    unverified_claims(jwt)?
        .get("client_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The payload of a JWS, whatever its header says.
fn unverified_claims(jwt: &str) -> Option<Map<String, Value>> {
    if jwt.len() > MAX_JWT_LEN {
        return None;
    }
    let [_, payload, _] = jwt.split('.').collect::<Vec<_>>()[..] else {
        return None;
    };
    match serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?) {
        Ok(Value::Object(claims)) => Some(claims),
        _ => None,
    }
}

/// A JWS in compact serialization (RFC 7515 §7.1), decoded but not verified.
struct Parsed<'a> {
    /// `header.payload`, what the signature is over (RFC 7515 §5.2).
    signing_input: &'a str,
    header: Map<String, Value>,
    claims: Map<String, Value>,
    signature: Vec<u8>,
}

impl<'a> Parsed<'a> {
    fn new(jwt: &'a str) -> Result<Self, ClientJwtError> {
        if jwt.len() > MAX_JWT_LEN {
            return Err(malformed(format!("longer than {MAX_JWT_LEN} bytes")));
        }
        let parts: Vec<&str> = jwt.split('.').collect();
        let [header, payload, signature] = parts.as_slice() else {
            return Err(if parts.len() == 5 {
                malformed("encrypted JWTs (JWE) are not supported")
            } else {
                malformed("not a JWS in compact serialization (three parts)")
            });
        };
        let signing_input = &jwt[..header.len() + 1 + payload.len()];
        let object = |part: &str, what: &str| -> Result<Map<String, Value>, ClientJwtError> {
            let bytes = URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| malformed(format!("the {what} is not base64url")))?;
            match serde_json::from_slice(&bytes) {
                Ok(Value::Object(map)) => Ok(map),
                _ => Err(malformed(format!("the {what} is not a JSON object"))),
            }
        };
        let header = object(header, "header")?;
        let claims = object(payload, "payload")?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| malformed("the signature is not base64url"))?;
        // RFC 7515 §4.1.11: we understand no extension, so none may be critical.
        if header.contains_key("crit") {
            return Err(malformed(
                "critical header extensions (crit) are not supported",
            ));
        }
        Ok(Self {
            signing_input,
            header,
            claims,
            signature,
        })
    }

    fn header_str(&self, name: &str) -> Result<Option<&str>, ClientJwtError> {
        optional_str(&self.header, name)
            .map_err(|()| malformed(format!("header {name} must be a string")))
    }

    fn alg(&self) -> Result<&str, ClientJwtError> {
        self.header_str("alg")?
            .ok_or_else(|| malformed("the header has no alg"))
    }

    fn kid(&self) -> Result<Option<&str>, ClientJwtError> {
        self.header_str("kid")
    }

    fn typ(&self) -> Result<Option<&str>, ClientJwtError> {
        self.header_str("typ")
    }
}

/// Whether `typ` names the media type `subtype` (RFC 7515 §4.1.9: compared
/// without case, `application/` may be left out).
fn media_type_is(typ: &str, subtype: &str) -> bool {
    let typ = typ.to_ascii_lowercase();
    typ.strip_prefix("application/").unwrap_or(&typ) == subtype
}

/// HMAC-SHA256 (RFC 7518 §3.2), compared in constant time.
fn verify_hs256(secret: &[u8], input: &[u8], signature: &[u8]) -> Result<(), ClientJwtError> {
    use hmac::{KeyInit, Mac};
    if secret.len() < MIN_HS256_SECRET_BYTES {
        return Err(malformed(format!(
            "the client secret is shorter than {MIN_HS256_SECRET_BYTES} bytes, too short for HS256"
        )));
    }
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret)
        .map_err(|_| malformed("the client secret cannot key HMAC"))?;
    mac.update(input);
    let expected = mac.finalize().into_bytes();
    if bool::from(expected.as_slice().ct_eq(signature)) {
        Ok(())
    } else {
        Err(ClientJwtError::BadSignature)
    }
}

/// `Err(())` when present but not a string.
fn optional_str<'m>(map: &'m Map<String, Value>, name: &str) -> Result<Option<&'m str>, ()> {
    match map.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(()),
    }
}

fn string_claim<'m>(
    claims: &'m Map<String, Value>,
    name: &str,
) -> Result<Option<&'m str>, ClientJwtError> {
    optional_str(claims, name).map_err(|()| claim_error(format!("{name} must be a string")))
}

/// A NumericDate claim (RFC 7519 §2: seconds since the epoch, maybe with a
/// fraction).
fn numeric_date(
    claims: &Map<String, Value>,
    name: &str,
) -> Result<Option<OffsetDateTime>, ClientJwtError> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    let bad = || claim_error(format!("{name} must be a NumericDate"));
    let n = value.as_number().ok_or_else(bad)?;
    let date = if let Some(secs) = n.as_i64() {
        OffsetDateTime::from_unix_timestamp(secs).ok()
    } else {
        // Outside i64 (u64 or a fraction): as f64; the range check refuses
        // what is too far off, and NaN cannot come from JSON.
        n.as_f64()
            .filter(|f| f.abs() < 1e12)
            .and_then(|f| OffsetDateTime::from_unix_timestamp_nanos((f * 1e9) as i128).ok())
    };
    date.map(Some).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use josekit::jws::{HS256, JwsSigner};
    use serde_json::json;

    const ISSUER: &str = "https://id.example.com";
    const TOKEN_ENDPOINT: &str = "https://id.example.com/oauth2/token";
    const CLIENT: &str = "client-1";
    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    fn t(offset: i64) -> i64 {
        now().unix_timestamp() + offset
    }

    /// A key pair: its signer (with `kid`) and its public JWK.
    struct TestKey {
        signer: Box<dyn JwsSigner>,
        public: Jwk,
    }

    fn es256_key(kid: &str) -> TestKey {
        let kp = ES256.generate_key_pair().unwrap();
        let mut private = kp.to_jwk_key_pair();
        private.set_key_id(kid);
        let mut public = kp.to_jwk_public_key();
        public.set_key_id(kid);
        TestKey {
            signer: Box::new(ES256.signer_from_jwk(&private).unwrap()),
            public,
        }
    }

    fn rs256_key(kid: &str) -> TestKey {
        let kp = RS256.generate_key_pair(2048).unwrap();
        let mut private = kp.to_jwk_key_pair();
        private.set_key_id(kid);
        let mut public = kp.to_jwk_public_key();
        public.set_key_id(kid);
        TestKey {
            signer: Box::new(RS256.signer_from_jwk(&private).unwrap()),
            public,
        }
    }

    fn jwks(keys: &[&Jwk]) -> String {
        json!({ "keys": keys.iter().map(|k| Value::Object(k.as_ref().clone())).collect::<Vec<_>>() })
            .to_string()
    }

    fn client_keys(keys: &[&Jwk]) -> ClientKeys {
        ClientKeys::from_jwks(&jwks(keys)).unwrap()
    }

    /// Signs `claims` (as they are, even ill-typed); the header has the
    /// signer's `alg`, `kid` (if any) and `typ`.
    fn sign(signer: &dyn JwsSigner, typ: Option<&str>, claims: Value) -> String {
        let mut header = json!({ "alg": signer.algorithm().name() });
        if let Some(typ) = typ {
            header["typ"] = typ.into();
        }
        if let Some(kid) = signer.key_id() {
            header["kid"] = kid.into();
        }
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = signer.sign(input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// A JWT with this header and payload and an empty signature.
    fn unsigned(header: Value, claims: Value) -> String {
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    fn assertion_claims() -> Value {
        json!({
            "iss": CLIENT,
            "sub": CLIENT,
            "aud": ISSUER,
            "jti": "jti-1",
            "iat": t(-10),
            "exp": t(50),
        })
    }

    fn with(mut claims: Value, name: &str, value: Value) -> Value {
        claims[name] = value;
        claims
    }

    fn without(mut claims: Value, name: &str) -> Value {
        claims.as_object_mut().unwrap().remove(name);
        claims
    }

    fn assertion_rules() -> AssertionRules<'static> {
        AssertionRules {
            client_id: CLIENT,
            issuer: ISSUER,
            now: now(),
            max_lifetime_secs: 300,
            fapi2: false,
        }
    }

    fn request_claims() -> Value {
        json!({
            "iss": CLIENT,
            "aud": ISSUER,
            "client_id": CLIENT,
            "response_type": "code",
            "redirect_uri": "https://rp.example.com/cb",
            "scope": "openid",
            "nbf": t(-10),
            "exp": t(290),
            "jti": "ro-1",
        })
    }

    fn request_rules(fapi2: bool) -> RequestObjectRules<'static> {
        RequestObjectRules {
            client_id: CLIENT,
            issuer: ISSUER,
            now: now(),
            fapi2,
        }
    }

    #[test]
    fn es256_assertion_verifies() {
        let key = es256_key("k1");
        let keys = client_keys(&[&key.public]);
        let jwt = sign(key.signer.as_ref(), None, assertion_claims());
        let verified =
            verify_client_assertion(&jwt, &Signer::Keys(&keys), &assertion_rules()).unwrap();
        assert_eq!(verified.jti, "jti-1");
        assert_eq!(verified.exp.unix_timestamp(), t(50));
        assert_eq!(unverified_issuer(&jwt).as_deref(), Some(CLIENT));
    }

    #[test]
    fn rs256_assertion_verifies_and_a_key_without_kid_is_tried() {
        let mut key = rs256_key("r1");
        let keys = client_keys(&[&key.public]);
        let jwt = sign(key.signer.as_ref(), None, assertion_claims());
        assert!(verify_client_assertion(&jwt, &Signer::Keys(&keys), &assertion_rules()).is_ok());

        // No kid in the header: every RSA key is tried (the EC key is not).
        let ec = es256_key("e1");
        let kp_without_kid = RS256.generate_key_pair(2048).unwrap();
        key.signer = Box::new(
            RS256
                .signer_from_jwk(&kp_without_kid.to_jwk_key_pair())
                .unwrap(),
        );
        let keys = client_keys(&[&ec.public, &key.public, &kp_without_kid.to_jwk_public_key()]);
        let jwt = sign(key.signer.as_ref(), None, assertion_claims());
        assert!(verify_client_assertion(&jwt, &Signer::Keys(&keys), &assertion_rules()).is_ok());
    }

    #[test]
    fn ps256_assertion_verifies_unless_the_key_says_rs256() {
        let kp = RS256.generate_key_pair(2048).unwrap();
        let mut private = kp.to_jwk_key_pair();
        private.set_key_id("p1");
        private.set_algorithm("PS256");
        let signer = PS256.signer_from_jwk(&private).unwrap();
        let mut public = kp.to_jwk_public_key();
        public.set_key_id("p1");
        // A key without alg verifies RS256 and PS256.
        public.set_parameter("alg", None).unwrap();
        let jwt = sign(&signer, None, assertion_claims());
        let keys = client_keys(&[&public]);
        assert!(verify_client_assertion(&jwt, &Signer::Keys(&keys), &assertion_rules()).is_ok());
        public.set_algorithm("RS256");
        let keys = client_keys(&[&public]);
        assert_eq!(
            verify_client_assertion(&jwt, &Signer::Keys(&keys), &assertion_rules()),
            Err(ClientJwtError::UnknownKey)
        );
    }

    #[test]
    fn hs256_assertion_verifies_with_the_secret_only() {
        let signer = HS256.signer_from_bytes(SECRET).unwrap();
        let jwt = sign(&signer, None, assertion_claims());
        let verified =
            verify_client_assertion(&jwt, &Signer::Secret(SECRET), &assertion_rules()).unwrap();
        assert_eq!(verified.jti, "jti-1");
        assert_eq!(
            verify_client_assertion(
                &jwt,
                &Signer::Secret(b"1123456789abcdef0123456789abcdef"),
                &assertion_rules()
            ),
            Err(ClientJwtError::BadSignature)
        );
        // A secret too short for HS256 is refused before anything else.
        assert!(matches!(
            verify_client_assertion(&jwt, &Signer::Secret(b"short"), &assertion_rules()),
            Err(ClientJwtError::Malformed(_))
        ));
        // An asymmetric alg with a secret is refused.
        let key = es256_key("k1");
        let jwt = sign(key.signer.as_ref(), None, assertion_claims());
        assert!(matches!(
            verify_client_assertion(&jwt, &Signer::Secret(SECRET), &assertion_rules()),
            Err(ClientJwtError::Malformed(_))
        ));
    }

    #[test]
    fn hs256_is_refused_with_keys() {
        let key = es256_key("k1");
        let keys = client_keys(&[&key.public]);
        let signer = HS256.signer_from_bytes(SECRET).unwrap();
        let jwt = sign(&signer, None, assertion_claims());
        assert!(matches!(
            verify_client_assertion(&jwt, &Signer::Keys(&keys), &assertion_rules()),
            Err(ClientJwtError::Malformed(_))
        ));
    }

    #[test]
    fn alg_none_is_refused() {
        let key = es256_key("k1");
        let keys = client_keys(&[&key.public]);
        let jwt = unsigned(json!({"alg": "none"}), assertion_claims());
        assert!(matches!(
            verify_client_assertion(&jwt, &Signer::Keys(&keys), &assertion_rules()),
            Err(ClientJwtError::Malformed(_))
        ));
        assert!(matches!(
            verify_client_assertion(&jwt, &Signer::Secret(SECRET), &assertion_rules()),
            Err(ClientJwtError::Malformed(_))
        ));
        // A real signature with the header's alg swapped for none.
        let signed = sign(key.signer.as_ref(), None, assertion_claims());
        let (_, rest) = signed.split_once('.').unwrap();
        let swapped = format!(
            "{}.{rest}",
            URL_SAFE_NO_PAD.encode(json!({"alg": "none", "kid": "k1"}).to_string())
        );
        assert!(matches!(
            verify_client_assertion(&swapped, &Signer::Keys(&keys), &assertion_rules()),
            Err(ClientJwtError::Malformed(_))
        ));
    }

    #[test]
    fn audience_is_the_issuer_only() {
        let key = es256_key("k1");
        let keys = client_keys(&[&key.public]);
        let check = |aud: Value| {
            let jwt = sign(
                key.signer.as_ref(),
                None,
                with(assertion_claims(), "aud", aud),
            );
            verify_client_assertion(&jwt, &Signer::Keys(&keys), &assertion_rules())
        };
        assert!(check(json!([ISSUER])).is_ok());
        assert_eq!(
            check(json!(TOKEN_ENDPOINT)),
            Err(ClientJwtError::WrongAudience)
        );
        assert_eq!(
            check(json!([ISSUER, TOKEN_ENDPOINT])),
            Err(ClientJwtError::WrongAudience)
        );
        assert_eq!(check(json!([])), Err(ClientJwtError::WrongAudience));
        assert_eq!(
            check(json!(format!("{ISSUER}/"))),
            Err(ClientJwtError::WrongAudience)
        );
        let jwt = sign(
            key.signer.as_ref(),
            None,
            without(assertion_claims(), "aud"),
        );
        assert_eq!(
            verify_client_assertion(&jwt, &Signer::Keys(&keys), &assertion_rules()),
            Err(ClientJwtError::WrongAudience)
        );
    }

    #[test]
    fn iss_and_sub_must_be_the_client() {
        let key = es256_key("k1");
        let keys = client_keys(&[&key.public]);
        for claims in [
            with(assertion_claims(), "iss", json!("client-2")),
            with(assertion_claims(), "sub", json!("client-2")),
            without(assertion_claims(), "sub"),
        ] {
            let jwt = sign(key.signer.as_ref(), None, claims);
            assert_eq!(
                verify_client_assertion(&jwt, &Signer::Keys(&keys), &assertion_rules()),
                Err(ClientJwtError::WrongIssuer)
            );
        }
    }

    #[test]
    fn assertion_times_are_checked() {
        let key = es256_key("k1");
        let keys = client_keys(&[&key.public]);
        let check = |claims: Value| {
            let jwt = sign(key.signer.as_ref(), None, claims);
            verify_client_assertion(&jwt, &Signer::Keys(&keys), &assertion_rules())
        };
        let claims = |iat: i64, exp: i64| {
            with(
                with(assertion_claims(), "iat", json!(t(iat))),
                "exp",
                json!(t(exp)),
            )
        };
        assert_eq!(check(claims(-200, -61)), Err(ClientJwtError::Expired));
        assert_eq!(check(claims(-200, -60)), Err(ClientJwtError::Expired));
        assert!(check(claims(-200, -59)).is_ok(), "within the clock skew");
        assert!(matches!(
            check(without(assertion_claims(), "exp")),
            Err(ClientJwtError::Claim(_))
        ));
        assert_eq!(check(claims(61, 100)), Err(ClientJwtError::NotYetValid));
        assert!(check(claims(60, 100)).is_ok(), "within the clock skew");
        assert_eq!(
            check(with(assertion_claims(), "nbf", json!(t(120)))),
            Err(ClientJwtError::NotYetValid)
        );
        assert!(matches!(
            check(claims(0, 301)),
            Err(ClientJwtError::Claim(_))
        ));
        assert!(check(claims(0, 300)).is_ok());
        let no_iat = |exp: i64| with(without(assertion_claims(), "iat"), "exp", json!(t(exp)));
        assert!(check(no_iat(300 + 60)).is_ok());
        assert!(matches!(
            check(no_iat(300 + 61)),
            Err(ClientJwtError::Claim(_))
        ));
        assert!(matches!(
            check(with(assertion_claims(), "exp", json!("soon"))),
            Err(ClientJwtError::Claim(_))
        ));
        assert!(check(with(assertion_claims(), "exp", json!(t(50) as f64 + 0.5))).is_ok());
    }

    #[test]
    fn jti_is_required() {
        let key = es256_key("k1");
        let keys = client_keys(&[&key.public]);
        for claims in [
            without(assertion_claims(), "jti"),
            with(assertion_claims(), "jti", json!("")),
            with(assertion_claims(), "jti", json!(7)),
        ] {
            let jwt = sign(key.signer.as_ref(), None, claims);
            assert!(matches!(
                verify_client_assertion(&jwt, &Signer::Keys(&keys), &assertion_rules()),
                Err(ClientJwtError::Claim(_))
            ));
        }
    }

    #[test]
    fn a_key_not_registered_does_not_verify() {
        let registered = es256_key("k1");
        let keys = client_keys(&[&registered.public]);
        let other_kid = es256_key("k2");
        let jwt = sign(other_kid.signer.as_ref(), None, assertion_claims());
        assert_eq!(
            verify_client_assertion(&jwt, &Signer::Keys(&keys), &assertion_rules()),
            Err(ClientJwtError::UnknownKey)
        );
        let same_kid = es256_key("k1");
        let jwt = sign(same_kid.signer.as_ref(), None, assertion_claims());
        assert_eq!(
            verify_client_assertion(&jwt, &Signer::Keys(&keys), &assertion_rules()),
            Err(ClientJwtError::BadSignature)
        );
        // An RS256 signature, and only EC keys registered.
        let rsa = rs256_key("k1");
        let jwt = sign(rsa.signer.as_ref(), None, assertion_claims());
        assert_eq!(
            verify_client_assertion(&jwt, &Signer::Keys(&keys), &assertion_rules()),
            Err(ClientJwtError::UnknownKey)
        );
        // A tampered payload.
        let jwt = sign(registered.signer.as_ref(), None, assertion_claims());
        let mut parts: Vec<String> = jwt.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(
            with(assertion_claims(), "exp", json!(t(200)))
                .to_string()
                .as_bytes(),
        );
        assert_eq!(
            verify_client_assertion(&parts.join("."), &Signer::Keys(&keys), &assertion_rules()),
            Err(ClientJwtError::BadSignature)
        );
    }

    #[test]
    fn jwks_with_private_keys_is_refused() {
        let kp = ES256.generate_key_pair().unwrap();
        let err = ClientKeys::from_jwks(&jwks(&[&kp.to_jwk_key_pair()])).unwrap_err();
        let ClientJwtError::Malformed(msg) = err else {
            panic!("{err:?}")
        };
        assert!(msg.contains("private key material"), "{msg}");
        let err = ClientKeys::from_jwks(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).unwrap_err();
        assert!(matches!(err, ClientJwtError::Malformed(_)));
    }

    #[test]
    fn jwks_keeps_signing_keys_only() {
        let sig = es256_key("s1");
        let mut enc = es256_key("e1").public;
        enc.set_key_use("enc");
        let keys = client_keys(&[&enc]);
        assert!(keys.is_empty());
        let keys = client_keys(&[&enc, &sig.public]);
        assert!(!keys.is_empty());
        // An alg we do not accept makes the key unusable, not the set invalid.
        let mut rs512 = rs256_key("r1").public;
        rs512.set_algorithm("RS512");
        assert!(client_keys(&[&rs512]).is_empty());
        for bad in [
            "not json",
            "{}",
            r#"{"keys":{}}"#,
            r#"{"keys":[1]}"#,
            r#"{"keys":[{"kid":"x"}]}"#,
            r#"{"keys":[{"kty":"EC","crv":"P-256","x":"AA"}]}"#,
        ] {
            assert!(
                matches!(
                    ClientKeys::from_jwks(bad),
                    Err(ClientJwtError::Malformed(_))
                ),
                "{bad}"
            );
        }
        assert!(ClientKeys::from_jwks(r#"{"keys":[]}"#).unwrap().is_empty());
    }

    #[test]
    fn request_object_verifies() {
        let key = es256_key("k1");
        let keys = client_keys(&[&key.public]);
        let jwt = sign(
            key.signer.as_ref(),
            Some("oauth-authz-req+jwt"),
            request_claims(),
        );
        assert_eq!(unverified_client_id(&jwt).as_deref(), Some(CLIENT));
        let verified = verify_request_object(&jwt, &keys, &request_rules(true)).unwrap();
        assert_eq!(verified.claims["scope"], "openid");
        assert_eq!(verified.jti.as_deref(), Some("ro-1"));
        assert_eq!(verified.exp.map(|e| e.unix_timestamp()), Some(t(290)));

        // RS256, typ JWT, aud an array holding the issuer, no exp/nbf/jti.
        let rsa = rs256_key("r1");
        let keys = client_keys(&[&key.public, &rsa.public]);
        let claims = with(
            without(without(without(request_claims(), "exp"), "nbf"), "jti"),
            "aud",
            json!([ISSUER, "https://other.example.com"]),
        );
        let jwt = sign(rsa.signer.as_ref(), Some("JWT"), claims);
        let verified = verify_request_object(&jwt, &keys, &request_rules(false)).unwrap();
        assert_eq!((verified.jti, verified.exp), (None, None));
        // Under FAPI 2.0, RS256 is refused before anything else.
        assert!(matches!(
            verify_request_object(&jwt, &keys, &request_rules(true)),
            Err(ClientJwtError::Malformed(m)) if m.contains("RS256")
        ));
    }

    #[test]
    fn request_object_claims_are_checked() {
        let key = es256_key("k1");
        let keys = client_keys(&[&key.public]);
        let check = |claims: Value, fapi2: bool| {
            let jwt = sign(key.signer.as_ref(), None, claims);
            verify_request_object(&jwt, &keys, &request_rules(fapi2))
        };
        assert_eq!(
            check(with(request_claims(), "exp", json!(t(-61))), false),
            Err(ClientJwtError::Expired)
        );
        assert_eq!(
            check(with(request_claims(), "nbf", json!(t(61))), false),
            Err(ClientJwtError::NotYetValid)
        );
        let long = with(
            with(request_claims(), "nbf", json!(t(-10))),
            "exp",
            json!(t(3591)),
        );
        assert!(check(long.clone(), false).is_ok());
        assert!(matches!(check(long, true), Err(ClientJwtError::Claim(_))));
        let hour = with(
            with(request_claims(), "nbf", json!(t(-10))),
            "exp",
            json!(t(3590)),
        );
        assert!(check(hour, true).is_ok());
        for forbidden in ["request_uri", "request"] {
            assert!(matches!(
                check(with(request_claims(), forbidden, json!("x")), false),
                Err(ClientJwtError::Claim(_))
            ));
        }
        assert_eq!(
            check(with(request_claims(), "iss", json!("client-2")), false),
            Err(ClientJwtError::WrongIssuer)
        );
        assert_eq!(
            check(without(request_claims(), "iss"), false),
            Err(ClientJwtError::WrongIssuer)
        );
        assert!(matches!(
            check(
                with(request_claims(), "client_id", json!("client-2")),
                false
            ),
            Err(ClientJwtError::Claim(_))
        ));
        assert_eq!(
            check(with(request_claims(), "aud", json!(TOKEN_ENDPOINT)), false),
            Err(ClientJwtError::WrongAudience)
        );
    }

    #[test]
    fn request_object_must_be_signed_by_the_client() {
        let key = es256_key("k1");
        let keys = client_keys(&[&key.public]);
        let jwt = unsigned(json!({"alg": "none"}), request_claims());
        assert!(matches!(
            verify_request_object(&jwt, &keys, &request_rules(false)),
            Err(ClientJwtError::Malformed(_))
        ));
        let hs = HS256.signer_from_bytes(SECRET).unwrap();
        let jwt = sign(&hs, None, request_claims());
        assert!(matches!(
            verify_request_object(&jwt, &keys, &request_rules(false)),
            Err(ClientJwtError::Malformed(_))
        ));
        let jwt = sign(key.signer.as_ref(), Some("at+jwt"), request_claims());
        assert!(matches!(
            verify_request_object(&jwt, &keys, &request_rules(false)),
            Err(ClientJwtError::Malformed(_))
        ));
        let other = es256_key("k2");
        let jwt = sign(other.signer.as_ref(), None, request_claims());
        assert_eq!(
            verify_request_object(&jwt, &keys, &request_rules(false)),
            Err(ClientJwtError::UnknownKey)
        );
        // A request object is not a client assertion.
        let claims = with(
            with(request_claims(), "sub", json!(CLIENT)),
            "exp",
            json!(t(50)),
        );
        let jwt = sign(key.signer.as_ref(), Some("oauth-authz-req+jwt"), claims);
        assert!(matches!(
            verify_client_assertion(&jwt, &Signer::Keys(&keys), &assertion_rules()),
            Err(ClientJwtError::Malformed(_))
        ));
    }

    #[test]
    fn malformed_jwts_are_refused() {
        let key = es256_key("k1");
        let keys = client_keys(&[&key.public]);
        for bad in [
            "",
            "a.b",
            "a.b.c.d.e",
            "!!.!!.!!",
            &unsigned(json!([1]), request_claims()),
            &unsigned(json!({"alg": "ES256", "crit": ["exp"]}), request_claims()),
            &unsigned(json!({"alg": 1}), request_claims()),
        ] {
            assert!(
                matches!(
                    verify_request_object(bad, &keys, &request_rules(false)),
                    Err(ClientJwtError::Malformed(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(
            unverified_issuer(&unsigned(json!({"alg": "none"}), json!({"sub": "s"}))).as_deref(),
            Some("s")
        );
        assert_eq!(unverified_client_id("x.y.z"), None);
        let crit = unsigned(json!({"alg": "ES256", "crit": ["x"]}), request_claims());
        assert_eq!(unverified_client_id(&crit).as_deref(), Some(CLIENT));
    }
}
