//! Subject identifiers (OpenID Connect Core §8): the `sub` a client sees.
//!
//! A public client (the default) sees the internal user id. A pairwise
//! client (`subject_type = "pairwise"`) sees an identifier of its sector
//! (§8.1: the host of its `sector_identifier_uri`, else of its redirect
//! URIs): `base64url(SHA-256(sector || user id || salt))`, the same for
//! every client of one sector and unrelated across sectors, so portals of
//! different sectors cannot join their users by `sub`. The salt is derived
//! from the key-encryption key every node shares (the same `sub` on every
//! node and across restarts), and is never logged.
//!
//! Used for ID tokens, userinfo, access tokens, introspection answers and
//! `id_token_hint`s; the admin API and webhooks keep the internal id.

use crate::client::Client;
use crate::domain::UserId;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// Computes the `sub` each client sees.
pub struct Subjects {
    salt: [u8; 32],
}

impl std::fmt::Debug for Subjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Subjects { salt: <secret> }")
    }
}

impl Subjects {
    pub fn new(salt: [u8; 32]) -> Self {
        Self { salt }
    }

    /// The salt, derived from the key-encryption key (HMAC under its own
    /// purpose, so it reveals nothing of the key and no other use of it).
    pub fn from_kek(kek: &crate::secret::KeyEncryptionKey) -> Self {
        let derived = kek.mac("pairwise-subject-salt", b"");
        Self::new(Sha256::digest(derived.as_bytes()).into())
    }

    /// The `sub` of `user` as `client` sees it (§8).
    pub fn sub(&self, client: &Client, user: UserId) -> String {
        match &client.protocol.pairwise {
            None => user.to_string(),
            Some(p) => self.pairwise(&p.sector, user),
        }
    }

    /// §8.1: `base64url(SHA-256(sector || local id || salt))`.
    pub fn pairwise(&self, sector: &str, user: UserId) -> String {
        let mut h = Sha256::new();
        h.update(sector.as_bytes());
        h.update(user.to_string().as_bytes());
        h.update(self.salt);
        URL_SAFE_NO_PAD.encode(h.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::PairwiseSubject;

    fn client(sector: Option<&str>) -> Client {
        let mut c = crate::oidc::authorize::tests::client(false);
        c.protocol.pairwise = sector.map(|s| PairwiseSubject {
            sector: s.into(),
            sector_identifier_uri: None,
            declared_in: "test".into(),
        });
        c
    }

    #[test]
    fn pairwise_subjects_follow_the_sector() {
        let s = Subjects::new([7; 32]);
        let user = UserId(uuid::Uuid::now_v7());
        let other = UserId(uuid::Uuid::now_v7());
        let a = s.sub(&client(Some("portal.example")), user);
        assert_eq!(a, s.sub(&client(Some("portal.example")), user));
        assert_ne!(a, s.sub(&client(Some("other.example")), user));
        assert_ne!(a, s.sub(&client(Some("portal.example")), other));
        assert_ne!(a, user.to_string());
        assert_eq!(a.len(), 43, "base64url of a SHA-256");
        assert!(
            uuid::Uuid::parse_str(&a).is_err(),
            "never mistaken for an id"
        );
        // Another salt (another deployment): unrelated identifiers.
        assert_ne!(
            a,
            Subjects::new([8; 32]).sub(&client(Some("portal.example")), user)
        );
        // Public clients see the internal id.
        assert_eq!(s.sub(&client(None), user), user.to_string());
        assert!(!format!("{s:?}").contains('7'));
    }
}
