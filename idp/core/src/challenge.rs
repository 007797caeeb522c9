//! Self-hosted proof-of-work challenge for the public recovery forms (forgot
//! password, forgot identifier, organization creation), in the format of
//! ALTCHA (<https://altcha.org>, "challenge v1"), so no third-party service
//! is involved and no personal data leaves the provider.
//!
//! The server draws a secret number `n <= max_number` and a salt carrying its
//! own expiry, and publishes `challenge = SHA-256(salt || n)` with an HMAC
//! signature of it. The browser tries numbers until the hash matches (about
//! `max_number / 2` hashes on average) and posts them back as a base64 JSON
//! payload. Verification is cheap: one hash, one HMAC, one single-use mark in
//! the short-lived store, so a solved challenge cannot be replayed.

use crate::ephemeral::Records;
use crate::error::CoreError;
use crate::secret::KeyEncryptionKey;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::time::Duration;
use time::OffsetDateTime;

/// How long a challenge may take to be solved and submitted.
pub const CHALLENGE_LIFETIME_SECS: i64 = 20 * 60;

/// The MAC purpose of challenge signatures (domain separation).
const MAC_PURPOSE: &str = "altcha-challenge";

/// What the page hands to the browser's solver (serialized as JSON into a
/// `data-challenge` attribute).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeSpec {
    pub algorithm: String,
    pub challenge: String,
    pub maxnumber: u64,
    pub salt: String,
    pub signature: String,
}

/// What the browser posts back (base64 of this JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Solution {
    pub algorithm: String,
    pub challenge: String,
    pub number: u64,
    pub salt: String,
    pub signature: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ChallengeError {
    /// Missing, malformed, wrong, expired or already used.
    #[error("the anti-robot check failed or expired; please try again")]
    Invalid,
    #[error(transparent)]
    Core(#[from] CoreError),
}

fn sha256_hex(data: &str) -> String {
    Sha256::digest(data.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A fresh challenge, valid [`CHALLENGE_LIFETIME_SECS`] from `now`.
pub fn issue(kek: &KeyEncryptionKey, now: OffsetDateTime, max_number: u64) -> ChallengeSpec {
    let max_number = max_number.max(1);
    let upper = u32::try_from(max_number.saturating_add(1)).unwrap_or(u32::MAX);
    let number = u64::from(crate::random::below(upper));
    let salt_bytes: String = crate::random::bytes(12)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let expires = now.unix_timestamp() + CHALLENGE_LIFETIME_SECS;
    let salt = format!("{salt_bytes}?expires={expires}");
    let challenge = sha256_hex(&format!("{salt}{number}"));
    let signature = kek.mac(MAC_PURPOSE, challenge.as_bytes());
    ChallengeSpec {
        algorithm: "SHA-256".into(),
        challenge,
        maxnumber: max_number,
        salt,
        signature,
    }
}

/// Checks a posted solution and marks it used. Of two submissions of the same
/// solution, only the first passes.
pub async fn verify(
    kek: &KeyEncryptionKey,
    used: &Records<bool>,
    now: OffsetDateTime,
    payload: &str,
) -> Result<(), ChallengeError> {
    let sol = decode(payload).ok_or(ChallengeError::Invalid)?;
    if sol.algorithm != "SHA-256" {
        return Err(ChallengeError::Invalid);
    }
    let expires = sol
        .salt
        .split_once("?expires=")
        .and_then(|(_, e)| e.parse::<i64>().ok())
        .ok_or(ChallengeError::Invalid)?;
    let left = expires - now.unix_timestamp();
    if left <= 0 || left > CHALLENGE_LIFETIME_SECS {
        return Err(ChallengeError::Invalid);
    }
    let expected_sig = kek.mac(MAC_PURPOSE, sol.challenge.as_bytes());
    let sig_ok: bool =
        subtle::ConstantTimeEq::ct_eq(expected_sig.as_bytes(), sol.signature.as_bytes()).into();
    if !sig_ok || sha256_hex(&format!("{}{}", sol.salt, sol.number)) != sol.challenge {
        return Err(ChallengeError::Invalid);
    }
    let first = used
        .put_new(
            &sol.challenge,
            &true,
            Duration::from_secs(u64::try_from(left).unwrap_or(1)),
        )
        .await
        .map_err(CoreError::from)?;
    if first {
        Ok(())
    } else {
        Err(ChallengeError::Invalid)
    }
}

fn decode(payload: &str) -> Option<Solution> {
    if payload.len() > 2048 {
        return None;
    }
    let json = STANDARD.decode(payload.trim()).ok()?;
    serde_json::from_slice(&json).ok()
}

/// Solves a challenge the way the browser does (tests, scripted clients).
/// `None` when no number up to `maxnumber` matches.
pub fn solve(spec: &ChallengeSpec) -> Option<String> {
    (0..=spec.maxnumber)
        .find(|n| sha256_hex(&format!("{}{n}", spec.salt)) == spec.challenge)
        .map(|number| {
            let sol = Solution {
                algorithm: spec.algorithm.clone(),
                challenge: spec.challenge.clone(),
                number,
                salt: spec.salt.clone(),
                signature: spec.signature.clone(),
            };
            STANDARD.encode(serde_json::to_vec(&sol).expect("a solution serializes"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, SettableClock, SharedClock};
    use crate::ephemeral::MemoryStore;
    use std::sync::Arc;

    fn setup() -> (KeyEncryptionKey, Arc<SettableClock>, Records<bool>) {
        let clock = Arc::new(SettableClock::new(
            OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000),
        ));
        let shared: SharedClock = clock.clone();
        (
            KeyEncryptionKey::generate(),
            clock,
            Records::new(
                Arc::new(MemoryStore::new(shared)),
                crate::ephemeral::Namespace::ProofOfWork,
            ),
        )
    }

    #[tokio::test]
    async fn a_solved_challenge_passes_once() {
        let (kek, clock, store) = setup();
        let spec = issue(&kek, clock.now(), 2000);
        let payload = solve(&spec).expect("solvable");
        verify(&kek, &store, clock.now(), &payload).await.unwrap();
        assert!(matches!(
            verify(&kek, &store, clock.now(), &payload).await,
            Err(ChallengeError::Invalid)
        ));
    }

    #[tokio::test]
    async fn wrong_number_forged_signature_other_key_and_expiry_are_refused() {
        let (kek, clock, store) = setup();
        let spec = issue(&kek, clock.now(), 2000);
        let good: Solution =
            serde_json::from_slice(&STANDARD.decode(solve(&spec).unwrap()).unwrap()).unwrap();
        let enc = |s: &Solution| STANDARD.encode(serde_json::to_vec(s).unwrap());

        let mut wrong = good.clone();
        wrong.number += 1;
        assert!(
            verify(&kek, &store, clock.now(), &enc(&wrong))
                .await
                .is_err()
        );

        // A challenge of the attacker's own making (easy number, own signature).
        let mut forged = good.clone();
        forged.salt = "00?expires=9999999999".into();
        forged.number = 0;
        forged.challenge = sha256_hex("00?expires=99999999990");
        assert!(
            verify(&kek, &store, clock.now(), &enc(&forged))
                .await
                .is_err()
        );

        let other = KeyEncryptionKey::generate();
        assert!(
            verify(&other, &store, clock.now(), &enc(&good))
                .await
                .is_err()
        );

        for garbage in ["", "not base64!", "e30=", &"A".repeat(5000)] {
            assert!(verify(&kek, &store, clock.now(), garbage).await.is_err());
        }

        clock.advance(time::Duration::seconds(CHALLENGE_LIFETIME_SECS + 1));
        assert!(
            verify(&kek, &store, clock.now(), &enc(&good))
                .await
                .is_err()
        );
    }
}
