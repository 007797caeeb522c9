//! Domain types: identifiers and records the core works with. Raw strings from
//! requests and config become these types at the edge ("parse, don't validate").

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use time::OffsetDateTime;
use uuid::Uuid;

/// A user's stable internal id; also the `sub` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(transparent)]
pub struct UserId(pub Uuid);

impl UserId {
    pub fn new_v7() -> Self {
        Self(Uuid::now_v7())
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A relying party's client id, as registered in config.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(transparent)]
pub struct ClientId(pub String);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An email address, trimmed, stored as typed; compared case-insensitively
/// through [`Email::normalized`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid email address")]
pub struct InvalidEmail;

impl Email {
    pub fn parse(raw: &str) -> Result<Self, InvalidEmail> {
        let s = raw.trim();
        if s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(InvalidEmail);
        }
        let (local, domain) = s.rsplit_once('@').ok_or(InvalidEmail)?;
        if local.is_empty()
            || local.len() > 64
            || domain.is_empty()
            || domain.starts_with('.')
            || domain.ends_with('.')
            || domain.contains("..")
            || domain.contains('@')
        {
            return Err(InvalidEmail);
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The lookup key: lower-cased. Two addresses that differ only by case are
    /// the same account.
    pub fn normalized(&self) -> String {
        self.0.to_lowercase()
    }
}

impl TryFrom<String> for Email {
    type Error = InvalidEmail;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Email> for String {
    fn from(value: Email) -> Self {
        value.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The customer identifier shown on a user's account and usable to log in:
/// two lower-case letters, five digits, a dash and a configured suffix
/// (`ab12345-xyz`). Stored and compared lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CustomerId(String);

impl CustomerId {
    /// Parses what a user typed; `None` when it does not have the shape.
    pub fn parse(raw: &str) -> Option<Self> {
        let s = raw.trim().to_ascii_lowercase();
        let (head, suffix) = s.split_once('-')?;
        let b = head.as_bytes();
        let shape_ok = b.len() == 7
            && b[..2].iter().all(u8::is_ascii_lowercase)
            && b[2..].iter().all(u8::is_ascii_digit)
            && !suffix.is_empty()
            && suffix.len() <= 16
            && suffix
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        shape_ok.then_some(Self(s))
    }

    /// A fresh random identifier with the given suffix.
    pub fn generate(suffix: &str) -> Self {
        let letters: String = (0..2)
            .map(|_| char::from(b'a' + crate::random::below(26) as u8))
            .collect();
        let digits = crate::random::below(100_000);
        Self(format!(
            "{letters}{digits:05}-{}",
            suffix.to_ascii_lowercase()
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CustomerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Account state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    Active,
    Disabled,
}

impl UserStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "disabled" => Some(Self::Disabled),
            _ => None,
        }
    }
}

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub customer_id: CustomerId,
    pub email: Email,
    pub email_verified: bool,
    pub name: Option<String>,
    pub locale: Option<String>,
    pub status: UserStatus,
    /// Mobile number in E.164 form (`+33612345678`), for SMS codes.
    pub phone: Option<String>,
    pub phone_verified: bool,
    /// The account must use a second factor (organization policy or admin).
    pub mfa_required: bool,
    /// The login method this user passed last (shown first next time).
    pub last_method: Option<String>,
    /// A second address for account notices (never a login identifier).
    pub backup_email: Option<Email>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// A credential other than the password: a TOTP device, a WebAuthn key, a
/// recovery code. `secret` is kind-specific and never plain: a sealed TOTP
/// seed, a serialized WebAuthn public key and counter, a recovery code's hash.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCredential {
    pub id: Uuid,
    pub user_id: UserId,
    /// `totp`, `webauthn`, `recovery_code`.
    pub kind: String,
    /// Name chosen by the user ("Phone", "YubiKey").
    pub label: Option<String>,
    pub secret: String,
    pub created_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
}

impl fmt::Debug for StoredCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredCredential")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("kind", &self.kind)
            .field("label", &self.label)
            .field("secret", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// A browser a user signed in from, remembered by a long-lived cookie whose
/// value is random (only its hash is stored) and which can be revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownDevice {
    pub id: Uuid,
    pub user_id: UserId,
    pub token_hash: TokenHash,
    /// What the user sees in their device list (from the user agent).
    pub label: Option<String>,
    pub created_at: OffsetDateTime,
    pub last_seen_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
}

/// A stored password credential: an argon2 PHC string.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordCredential {
    pub user_id: UserId,
    pub phc: String,
    pub updated_at: OffsetDateTime,
}

impl fmt::Debug for PasswordCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordCredential")
            .field("user_id", &self.user_id)
            .field("phc", &"[redacted]")
            .finish()
    }
}

/// The SHA-256 of a high-entropy secret (authorization code, refresh token,
/// session id, opaque access token), hex-encoded. Only this is stored.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TokenHash(String);

impl TokenHash {
    pub fn of(secret: &str) -> Self {
        // By table: `write!("{:02x}")` per byte went through the formatting
        // machinery 32 times per hash, several hashes per token request.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let digest = Sha256::digest(secret.as_bytes());
        let mut hex = String::with_capacity(64);
        for b in digest {
            hex.push(char::from(HEX[usize::from(b >> 4)]));
            hex.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        Self(hex)
    }

    /// Rebuilds from the stored hex form.
    pub fn from_stored(hex: String) -> Self {
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({}…)", &self.0[..8.min(self.0.len())])
    }
}

/// Authentication method reference values (RFC 8176).
pub type Amr = String;

/// A grant: everything a chain of refresh tokens (and the access tokens minted
/// with them) stands for. Revoking the family revokes all of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenFamily {
    /// Claims the client named with the `claims` request parameter.
    pub claims: RequestedClaims,
    pub id: Uuid,
    pub user_id: UserId,
    pub client_id: ClientId,
    pub scope: String,
    /// The SSO session the grant came from, for logout.
    pub sid: Option<String>,
    pub auth_time: OffsetDateTime,
    pub acr: Option<String>,
    pub amr: Vec<Amr>,
    pub created_at: OffsetDateTime,
    /// Absolute end of the family: no refresh token of it outlives this.
    pub expires_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
    pub revoked_reason: Option<String>,
    /// The resources the grant is for (RFC 8707): its access tokens' audience.
    pub resources: Vec<String>,
    /// The DPoP key its refresh tokens are bound to (a public client's,
    /// RFC 9449 §5).
    pub dpop_jkt: Option<String>,
}

/// The claims a client named with the `claims` request parameter (OpenID
/// Connect Core §5.5), kept with the grant: they are returned in the ID
/// token or by userinfo besides those its scope grants, when the account
/// has them. (`essential` and `values` act at the authorization: see
/// `oidc::authorize::check_claims`.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestedClaims {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub id_token: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub userinfo: Vec<String>,
}

impl RequestedClaims {
    pub fn is_empty(&self) -> bool {
        self.id_token.is_empty() && self.userinfo.is_empty()
    }
}

/// One refresh token of a family. The token itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshTokenRecord {
    pub id: Uuid,
    pub family_id: Uuid,
    pub token_hash: TokenHash,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    /// Set when rotated; a used token presented again is a reuse.
    pub used_at: Option<OffsetDateTime>,
}

/// A signing key as stored: the private JWK is encrypted (compact JWE).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredSigningKey {
    pub kid: String,
    /// `ES256` or `RS256`.
    pub alg: String,
    /// Private JWK encrypted with the key-encryption key.
    pub private_jwe: String,
    /// Public JWK (JSON text), as published.
    pub public_jwk: String,
    pub created_at: OffsetDateTime,
    /// Set when a newer key of the same alg took over; still published until
    /// tokens it signed have expired.
    pub retired_at: Option<OffsetDateTime>,
}

impl fmt::Debug for StoredSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredSigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

/// Scopes a user granted a client (first-party clients record it implicitly).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    pub user_id: UserId,
    pub client_id: ClientId,
    pub scope: String,
    pub granted_at: OffsetDateTime,
}

/// A security-relevant event, as written to the audit table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub id: Uuid,
    pub at: OffsetDateTime,
    /// Stable event name, e.g. `login.succeeded`, `login.failed`, `token.reuse_detected`.
    pub kind: String,
    pub user_id: Option<UserId>,
    pub client_id: Option<ClientId>,
    /// The organization the event concerns, when there is one (listed to its
    /// administrators).
    pub org_id: Option<OrgId>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// Event-specific facts (never secrets).
    pub detail: serde_json::Value,
}

/// An organization (a customer company).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(transparent)]
pub struct OrgId(pub Uuid);

impl OrgId {
    pub fn new_v7() -> Self {
        Self(Uuid::now_v7())
    }
}

impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where an organization stands with the platform operator. Tokens of its
/// members carry it so relying parties can restrict a pending organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrgStatus {
    /// Created, waiting for an operator to validate it.
    Pending,
    Validated,
    Rejected,
}

impl OrgStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Validated => "validated",
            Self::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "validated" => Some(Self::Validated),
            "rejected" => Some(Self::Rejected),
            _ => None,
        }
    }
}

/// A customer company. French companies are identified by their SIRET
/// number (checked against the company registry); others by name and country.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Organization {
    pub id: OrgId,
    /// As confirmed by the creator (the registry's name for a French company).
    pub name: String,
    /// 14 digits, for a company domiciled in France.
    pub siret: Option<String>,
    /// ISO 3166-1 alpha-2 country code (`FR`, `DE`, ...).
    pub country: String,
    pub status: OrgStatus,
    pub created_by: UserId,
    pub created_at: OffsetDateTime,
    /// When it was validated or rejected.
    pub decided_at: Option<OffsetDateTime>,
    /// Authentication kinds (a client's `auth_kind`, e.g. `console`, `api`)
    /// for which members must use a second factor.
    pub mfa_required_for: Vec<String>,
    /// The organization's password rules (merged with the client's: the
    /// strictest wins).
    pub password_policy: crate::password_policy::PasswordPolicy,
}

/// What a member may do in an organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Manages members and roles (the creator is the first one).
    Administrator,
    /// Manages security settings: enforced MFA, password policy, audit trail.
    SecurityManager,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Administrator => "administrator",
            Self::SecurityManager => "security_manager",
            Self::Member => "member",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "administrator" => Some(Self::Administrator),
            "security_manager" => Some(Self::SecurityManager),
            "member" => Some(Self::Member),
            _ => None,
        }
    }
}

/// A user's membership of an organization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub org_id: OrgId,
    pub user_id: UserId,
    /// Never empty.
    pub roles: Vec<Role>,
    pub created_at: OffsetDateTime,
}

/// Runtime state of a registered client (the registration itself is config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientState {
    pub client_id: ClientId,
    pub first_seen_at: OffsetDateTime,
    pub last_token_at: Option<OffsetDateTime>,
}

/// Facts about the HTTP request, for throttling and the audit trail.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_is_trimmed_and_compared_case_insensitively() {
        let a = Email::parse("  Alice@Example.COM ").unwrap();
        assert_eq!(a.as_str(), "Alice@Example.COM");
        assert_eq!(a.normalized(), "alice@example.com");
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "a b@example.com",
            "a@.x",
            "a@x..y",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn customer_id_has_the_documented_shape() {
        for _ in 0..200 {
            let id = CustomerId::generate("xyz");
            assert_eq!(CustomerId::parse(id.as_str()), Some(id.clone()));
            assert_eq!(id.as_str().len(), 11);
        }
        assert_eq!(
            CustomerId::parse(" AB12345-XYZ ").unwrap().as_str(),
            "ab12345-xyz"
        );
        for bad in [
            "ab1234-xyz",
            "a123456-xyz",
            "ab12345",
            "ab12345-",
            "ab12345-x_z",
            "alice@example.com",
        ] {
            assert!(CustomerId::parse(bad).is_none(), "{bad} should be refused");
        }
    }

    #[test]
    fn token_hash_is_sha256_hex() {
        assert_eq!(
            TokenHash::of("abc").as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
