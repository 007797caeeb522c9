//! Access tokens (JWTs) whose signature has been verified, remembered so that
//! the endpoints reading a token back (introspection, userinfo, revocation,
//! the admin API) do not verify the same ES256/RS256 signature again on every
//! call: a verification costs about 55 µs of CPU, most of an introspection.
//!
//! Only what the signature proves is remembered, and that never changes for
//! the same bytes: *these exact bytes were signed by key `kid` and say these
//! claims*. Everything that can change is checked on every call, after the
//! lookup, as for a token seen for the first time: expiry against the clock,
//! revocation of the token and of its grant (short-lived store and database),
//! and that key `kid` is still published (a key taken out of the key set
//! stops its tokens at the next key refresh, remembered or not).
//!
//! An entry also keeps the last answer that the token is live (its grant's
//! user and organizations, as read), with the [`Stamp`] of those reads: it
//! is given again, without any I/O, while the node's [`crate::changes`] log
//! says nothing it rests on has changed since.
//!
//! Keyed by SHA-256 of the whole token, so a hit means the very bytes that
//! were verified; a token that fails verification is never remembered, so
//! only tokens we signed take room. Bounded: two generations of at most
//! [`VerifiedTokens::GENERATION`] entries each; when the current one is full
//! it becomes the previous one and the oldest is dropped, and a hit in the
//! previous generation moves the entry forward (least recently used out,
//! approximately, at O(1) per call).

use crate::access_token::AccessTokenInfo;
use crate::changes::{Change, Stamp};
use crate::domain::{Organization, Role, User};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// SHA-256 of a token.
pub(crate) type TokenDigest = [u8; 32];

pub(crate) fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// What a verified signature proves, and the last answer that the token is
/// live.
#[derive(Debug)]
pub(crate) struct Verified {
    /// The key that verified it (empty for an opaque handle).
    pub(crate) kid: String,
    pub(crate) info: AccessTokenInfo,
    live: Mutex<Option<Arc<LiveToken>>>,
}

impl Verified {
    pub(crate) fn new(kid: String, info: AccessTokenInfo) -> Self {
        Self {
            kid,
            info,
            live: Mutex::new(None),
        }
    }

    /// The answer kept by [`Self::keep_live`], if any (still to be checked
    /// against the change log).
    pub(crate) fn kept_live(&self) -> Option<Arc<LiveToken>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn keep_live(&self, live: Arc<LiveToken>) {
        *self.live.lock().unwrap_or_else(|p| p.into_inner()) = Some(live);
    }
}

/// A live access token's grant, as read from the short-lived store and the
/// database.
#[derive(Debug)]
pub(crate) struct LiveToken {
    /// When its reads began; `None` when it must not be kept.
    pub(crate) stamp: Option<Stamp>,
    /// What a change of would make it wrong: the token, its grant, its user,
    /// the user's organizations.
    pub(crate) resting_on: Vec<Change>,
    /// `None` for a token without a grant (client credentials).
    pub(crate) user: Option<User>,
    /// The user's organizations and roles, when they were read.
    pub(crate) organizations: Option<Vec<(Organization, Vec<Role>)>>,
}

#[derive(Default)]
struct Generations {
    current: HashMap<TokenDigest, Arc<Verified>>,
    previous: HashMap<TokenDigest, Arc<Verified>>,
}

impl Generations {
    fn insert(&mut self, key: TokenDigest, value: Arc<Verified>, limit: usize) {
        if self.current.len() >= limit {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key, value);
    }
}

/// The memo (see the module documentation). One per provider.
pub(crate) struct VerifiedTokens {
    generations: Mutex<Generations>,
    limit: usize,
}

impl std::fmt::Debug for VerifiedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedTokens")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl Default for VerifiedTokens {
    fn default() -> Self {
        Self::with_generation(Self::GENERATION)
    }
}

impl VerifiedTokens {
    /// Entries per generation: at most twice this many tokens are held
    /// (about 300 bytes each, so a few MiB at most).
    pub(crate) const GENERATION: usize = 8192;

    pub(crate) fn with_generation(limit: usize) -> Self {
        Self {
            generations: Mutex::new(Generations::default()),
            limit: limit.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        self.generations.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn get(&self, key: &TokenDigest) -> Option<Arc<Verified>> {
        let mut g = self.lock();
        if let Some(v) = g.current.get(key) {
            return Some(v.clone());
        }
        let v = g.previous.remove(key)?;
        g.insert(*key, v.clone(), self.limit);
        Some(v)
    }

    /// Remembers a token whose signature has just been verified.
    pub(crate) fn insert(&self, key: TokenDigest, verified: Arc<Verified>) {
        self.lock().insert(key, verified, self.limit);
    }

    pub(crate) fn len(&self) -> usize {
        let g = self.lock();
        g.current.len() + g.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(jti: &str) -> Verified {
        Verified::new(
            "k1".into(),
            AccessTokenInfo {
                client_id: "c".into(),
                sub: "s".into(),
                user_id: None,
                scope: String::new(),
                iat: 0,
                exp: 1,
                jti: jti.into(),
                family_id: None,
                aud: vec!["c".into()],
                amr: Vec::new(),
                userinfo_claims: Vec::new(),
                jkt: None,
                act: None,
            },
        )
    }

    #[test]
    fn bounded_and_recently_used_entries_stay() {
        let memo = VerifiedTokens::with_generation(2);
        let (a, b, c, d) = (digest("a"), digest("b"), digest("c"), digest("d"));
        memo.insert(a, Arc::new(verified("a")));
        memo.insert(b, Arc::new(verified("b")));
        // The current generation is full: {a, b} become the previous one.
        memo.insert(c, Arc::new(verified("c")));
        assert_eq!(memo.len(), 3);
        // A hit in the previous generation moves `a` forward...
        assert_eq!(memo.get(&a).unwrap().info.jti, "a");
        // ...so when the next generation starts, `b` (unused) is the one dropped.
        memo.insert(d, Arc::new(verified("d")));
        assert!(memo.get(&b).is_none());
        assert!(memo.get(&a).is_some());
        assert!(memo.get(&c).is_some());
        assert!(memo.get(&d).is_some());
        assert!(memo.len() <= 4, "never more than two generations");
    }

    #[test]
    fn keyed_by_the_whole_token() {
        let memo = VerifiedTokens::default();
        memo.insert(digest("header.payload.signature"), Arc::new(verified("x")));
        assert!(memo.get(&digest("header.payload.signaturE")).is_none());
        assert!(memo.get(&digest("header.payload.signature")).is_some());
    }
}
