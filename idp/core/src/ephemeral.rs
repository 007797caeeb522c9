//! Short-lived state: login flows in progress, SSO sessions, authorization
//! codes, rate-limit counters. One contract, two implementations: the
//! in-process [`MemoryStore`] here (embedded default and fast tests) and Redis
//! in `adapters/redis-store`. Everything has a TTL.
//!
//! Values are opaque bytes; typed access goes through [`Records`] and the stores built on it.
//! Expiry by TTL is housekeeping: records that matter for security also carry
//! their own `expires_at`, checked against the injected [`Clock`](crate::clock::Clock).

use crate::clock::SharedClock;
use async_trait::async_trait;
use serde::{Serialize, de::DeserializeOwned};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;

pub use crate::error::StoreError;

/// The short-lived store. Keys are plain strings chosen by the core
/// (`code:<hash>`, `flow:<id>`, ...); implementations may prefix them.
#[async_trait]
pub trait EphemeralStore: Send + Sync {
    /// Sets `key` to `value` with a TTL, replacing any value.
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError>;
    /// Sets `key` only if absent (SET NX). Returns whether it was set.
    async fn put_new(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, StoreError>;
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// The values of several keys at once (MGET: one round trip), in order.
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, StoreError>;
    /// Returns the value and deletes it in one atomic step (GETDEL): of two
    /// concurrent takes, exactly one gets the value.
    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Replaces the value only if it is still byte-for-byte `expected`
    /// (compare-and-swap). Returns whether it was replaced.
    async fn replace_if(
        &self,
        key: &str,
        expected: &[u8],
        new: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Increments a counter, creating it at 1 with `ttl` if absent (the TTL is
    /// not extended by later increments: a fixed window). Returns the new value.
    async fn incr(&self, key: &str, ttl: Duration) -> Result<u64, StoreError>;
    /// Takes one back from a counter that exists and is above zero (its TTL
    /// unchanged); never creates one. Returns the new value (0 when absent).
    async fn decr(&self, key: &str) -> Result<u64, StoreError>;
    /// Remaining time to live of a key, if it exists.
    async fn ttl(&self, key: &str) -> Result<Option<Duration>, StoreError>;
}

/// The kinds of short-lived record kept besides the typed stores of flows,
/// sessions, codes, access tokens and counters (`flow::state`,
/// `sessions`, `oidc::codes`, `oidc::access_tokens`, `throttle`): each
/// under its own prefix, built only here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    /// An emailed password link, by the hash of its secret.
    PasswordLink,
    /// The newest password link of a purpose and user.
    LatestPasswordLink,
    /// A pending change of primary email, by user.
    EmailChange,
    /// A checked organization request waiting for its confirmation.
    OrgRequest,
    /// An authenticator app being added on the account pages.
    PendingTotp,
    /// A security key being added on the account pages.
    PendingKey,
    /// A deletion of a second factor in progress, by user (a lock).
    FactorDeletion,
    /// A solved proof-of-work challenge (single use).
    ProofOfWork,
    /// A logout waiting for the user's confirmation.
    LogoutConfirmation,
    /// The account pages' own sign-in in progress (state, nonce, verifier).
    AccountLogin,
    /// The health check's probe.
    Health,
    /// A client assertion's `jti`, by client (RFC 7523 §3: single use).
    ClientAssertion,
    /// A pushed authorization request, by its `request_uri` (RFC 9126).
    PushedRequest,
    /// A request object's `jti`, by client (RFC 9101: single use).
    RequestObject,
    /// A DPoP proof's `jti`, by key (RFC 9449 §11.1: single use).
    DpopProof,
}

impl Namespace {
    fn prefix(self) -> &'static str {
        match self {
            Self::PasswordLink => "link",
            Self::LatestPasswordLink => "link_latest",
            Self::EmailChange => "email_change",
            Self::OrgRequest => "org_request",
            Self::PendingTotp => "acct_totp",
            Self::PendingKey => "acct_webauthn",
            Self::FactorDeletion => "acct_mfa_delete",
            Self::ProofOfWork => "pow",
            Self::LogoutConfirmation => "logout",
            Self::AccountLogin => "account_login",
            Self::Health => "healthz",
            Self::ClientAssertion => "client_jti",
            Self::PushedRequest => "par",
            Self::RequestObject => "request_jti",
            Self::DpopProof => "dpop_jti",
        }
    }

    /// The store key of record `id` of this kind.
    fn key(self, id: &str) -> String {
        format!("{}:{id}", self.prefix())
    }
}

/// Typed access to the records of one [`Namespace`], as JSON.
pub struct Records<T> {
    store: Arc<dyn EphemeralStore>,
    ns: Namespace,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Records<T> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            ns: self.ns,
            _t: PhantomData,
        }
    }
}

impl<T: Serialize + DeserializeOwned + Sync> Records<T> {
    pub fn new(store: Arc<dyn EphemeralStore>, ns: Namespace) -> Self {
        Self {
            store,
            ns,
            _t: PhantomData,
        }
    }

    fn encode(value: &T) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    pub async fn put(&self, id: &str, value: &T, ttl: Duration) -> Result<(), StoreError> {
        self.store
            .put(&self.ns.key(id), &Self::encode(value)?, ttl)
            .await
    }

    /// Stores only if absent; whether it did.
    pub async fn put_new(&self, id: &str, value: &T, ttl: Duration) -> Result<bool, StoreError> {
        self.store
            .put_new(&self.ns.key(id), &Self::encode(value)?, ttl)
            .await
    }

    pub async fn get(&self, id: &str) -> Result<Option<T>, StoreError> {
        decode(self.store.get(&self.ns.key(id)).await?)
    }

    /// Removes and returns the record (of two concurrent takes, one gets it).
    pub async fn take(&self, id: &str) -> Result<Option<T>, StoreError> {
        decode(self.store.take(&self.ns.key(id)).await?)
    }

    /// Replaces `old` by `new` if the record is still `old`; whether it did.
    pub async fn replace_if(
        &self,
        id: &str,
        old: &T,
        new: &T,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.store
            .replace_if(
                &self.ns.key(id),
                &Self::encode(old)?,
                &Self::encode(new)?,
                ttl,
            )
            .await
    }

    pub async fn delete(&self, id: &str) -> Result<(), StoreError> {
        self.store.delete(&self.ns.key(id)).await
    }
}

fn decode<T: DeserializeOwned>(bytes: Option<Vec<u8>>) -> Result<Option<T>, StoreError> {
    bytes
        .map(|b| serde_json::from_slice(&b).map_err(|e| StoreError::Corrupt(e.to_string())))
        .transpose()
}

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    expires_at: OffsetDateTime,
}

/// In-process store: a mutex-guarded map whose expiry follows the injected
/// clock, so tests move time instead of sleeping. One process only: a cluster
/// of nodes needs Redis.
#[derive(Debug)]
pub struct MemoryStore {
    clock: SharedClock,
    map: Mutex<Entries>,
}

#[derive(Debug)]
struct Entries {
    map: HashMap<String, Entry>,
    /// When expired entries are dropped next.
    next_sweep: OffsetDateTime,
}

/// Expired entries are dropped at most this often: a sweep visits every
/// entry, and many live for a day (the markers of redeemed codes), so
/// sweeping every 64th call, as before, meant visiting the whole map a few
/// times per request under load, with the lock held.
const SWEEP_EVERY: time::Duration = time::Duration::seconds(1);

impl MemoryStore {
    pub fn new(clock: SharedClock) -> Self {
        let next_sweep = clock.now() + SWEEP_EVERY;
        Self {
            clock,
            map: Mutex::new(Entries {
                map: HashMap::new(),
                next_sweep,
            }),
        }
    }

    fn with_live<R>(&self, f: impl FnOnce(&mut HashMap<String, Entry>, OffsetDateTime) -> R) -> R {
        let now = self.clock.now();
        let mut entries = self.map.lock().unwrap_or_else(|p| p.into_inner());
        // Sweep now and then so abandoned keys do not pile up.
        if now >= entries.next_sweep {
            entries.next_sweep = now + SWEEP_EVERY;
            entries.map.retain(|_, e| e.expires_at > now);
        }
        f(&mut entries.map, now)
    }

    fn expiry(now: OffsetDateTime, ttl: Duration) -> OffsetDateTime {
        // Saturate: `now + huge` would panic (with the lock held) past year 9999.
        time::Duration::try_from(ttl)
            .ok()
            .and_then(|ttl| now.checked_add(ttl))
            .unwrap_or(time::PrimitiveDateTime::MAX.assume_utc())
    }
}

fn live<'a>(map: &'a HashMap<String, Entry>, key: &str, now: OffsetDateTime) -> Option<&'a Entry> {
    map.get(key).filter(|e| e.expires_at > now)
}

#[async_trait]
impl EphemeralStore for MemoryStore {
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        self.with_live(|map, now| {
            map.insert(
                key.to_owned(),
                Entry {
                    value: value.to_vec(),
                    expires_at: Self::expiry(now, ttl),
                },
            );
        });
        Ok(())
    }

    async fn put_new(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, StoreError> {
        Ok(self.with_live(|map, now| {
            if live(map, key, now).is_some() {
                return false;
            }
            map.insert(
                key.to_owned(),
                Entry {
                    value: value.to_vec(),
                    expires_at: Self::expiry(now, ttl),
                },
            );
            true
        }))
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.with_live(|map, now| live(map, key, now).map(|e| e.value.clone())))
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        Ok(self.with_live(|map, now| {
            keys.iter()
                .map(|key| live(map, key, now).map(|e| e.value.clone()))
                .collect()
        }))
    }

    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.with_live(|map, now| {
            map.remove(key)
                .filter(|e| e.expires_at > now)
                .map(|e| e.value)
        }))
    }

    async fn replace_if(
        &self,
        key: &str,
        expected: &[u8],
        new: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        Ok(self.with_live(|map, now| match map.get_mut(key) {
            Some(e) if e.expires_at > now && e.value == expected => {
                e.value = new.to_vec();
                e.expires_at = Self::expiry(now, ttl);
                true
            }
            _ => false,
        }))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.with_live(|map, _| {
            map.remove(key);
        });
        Ok(())
    }

    async fn incr(&self, key: &str, ttl: Duration) -> Result<u64, StoreError> {
        self.with_live(|map, now| match map.get_mut(key) {
            Some(e) if e.expires_at > now => {
                let n = std::str::from_utf8(&e.value)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| StoreError::Corrupt(format!("{key} is not a counter")))?
                    + 1;
                e.value = n.to_string().into_bytes();
                Ok(n)
            }
            _ => {
                map.insert(
                    key.to_owned(),
                    Entry {
                        value: b"1".to_vec(),
                        expires_at: Self::expiry(now, ttl),
                    },
                );
                Ok(1)
            }
        })
    }

    async fn decr(&self, key: &str) -> Result<u64, StoreError> {
        self.with_live(|map, now| match map.get_mut(key) {
            Some(e) if e.expires_at > now => {
                let n = std::str::from_utf8(&e.value)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| StoreError::Corrupt(format!("{key} is not a counter")))?
                    .saturating_sub(1);
                e.value = n.to_string().into_bytes();
                Ok(n)
            }
            _ => Ok(0),
        })
    }

    async fn ttl(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        Ok(self.with_live(|map, now| {
            live(map, key, now)
                .map(|e| Duration::try_from(e.expires_at - now).unwrap_or(Duration::ZERO))
        }))
    }
}

/// The behaviour every [`EphemeralStore`] must show, as reusable checks.
///
/// Each function exercises one rule against any store and panics (through
/// `assert!`) when the store breaks it. The in-process [`MemoryStore`] runs
/// them in this crate's tests; the Redis adapter runs the same functions
/// against a real server, so both implementations are held to one contract.
///
/// Every function takes a key `prefix` and only touches keys that start with
/// it, so tests can share one server. TTLs are long (a minute or more) so the
/// checks never depend on wall-clock timing; expiry itself is tested per
/// implementation (a settable clock for memory, PTTL for Redis).
pub mod contract {
    use super::EphemeralStore;
    use std::collections::BTreeSet;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::sync::Barrier;

    /// TTL used by the checks: long enough that nothing expires mid-test.
    const TTL: Duration = Duration::from_secs(60);

    /// Values are bytes, not text: include a NUL and invalid UTF-8.
    const V1: &[u8] = b"\x00\xffvalue-one";
    const V2: &[u8] = b"\x00\xffvalue-two";

    fn key(prefix: &str, name: &str) -> String {
        format!("{prefix}{name}")
    }

    /// Asserts that `key` has a TTL in `(max / 2, max]`: set, not extended
    /// beyond what was asked, and not mistaken for a smaller unit.
    async fn assert_ttl_within(store: &dyn EphemeralStore, key: &str, max: Duration) -> Duration {
        let ttl = store
            .ttl(key)
            .await
            .expect("ttl")
            .unwrap_or_else(|| panic!("{key} should have a TTL"));
        assert!(ttl <= max, "TTL of {key} is {ttl:?}, more than {max:?}");
        assert!(ttl > max / 2, "TTL of {key} is {ttl:?}, far below {max:?}");
        ttl
    }

    /// `put` then `get` returns the same bytes.
    pub async fn put_get_roundtrip(store: &dyn EphemeralStore, prefix: &str) {
        let k = key(prefix, "roundtrip");
        store.put(&k, V1, TTL).await.expect("put");
        assert_eq!(store.get(&k).await.expect("get").as_deref(), Some(V1));
        // Reading does not consume.
        assert_eq!(store.get(&k).await.expect("get").as_deref(), Some(V1));

        let empty = key(prefix, "roundtrip-empty");
        store.put(&empty, b"", TTL).await.expect("put empty");
        assert_eq!(
            store.get(&empty).await.expect("get empty").as_deref(),
            Some(&b""[..]),
            "an empty value is a value, not an absence"
        );
    }

    /// A second `put` replaces the value.
    pub async fn put_replaces(store: &dyn EphemeralStore, prefix: &str) {
        let k = key(prefix, "replaces");
        store.put(&k, V1, TTL).await.expect("put");
        store.put(&k, V2, TTL).await.expect("put again");
        assert_eq!(store.get(&k).await.expect("get").as_deref(), Some(V2));
    }

    /// `get` of a key never written is `None`.
    pub async fn get_missing_is_none(store: &dyn EphemeralStore, prefix: &str) {
        let k = key(prefix, "never-written");
        assert_eq!(store.get(&k).await.expect("get"), None);
    }

    /// `get_many` gives each key's value in the order asked, `None` for
    /// keys never written, the same key twice if asked twice.
    pub async fn get_many_in_order(store: &dyn EphemeralStore, prefix: &str) {
        let (a, b, missing) = (
            key(prefix, "many-a"),
            key(prefix, "many-b"),
            key(prefix, "many-x"),
        );
        store.put(&a, V1, TTL).await.expect("put");
        store.put(&b, V2, TTL).await.expect("put");
        let got = store
            .get_many(&[&b, &missing, &a, &b])
            .await
            .expect("get_many");
        assert_eq!(
            got,
            vec![
                Some(V2.to_vec()),
                None,
                Some(V1.to_vec()),
                Some(V2.to_vec())
            ]
        );
        assert!(store.get_many(&[]).await.expect("get_many").is_empty());
    }

    /// `put_new` sets only when the key is absent and leaves an existing
    /// value alone.
    pub async fn put_new_sets_only_when_absent(store: &dyn EphemeralStore, prefix: &str) {
        let k = key(prefix, "put-new");
        assert!(store.put_new(&k, V1, TTL).await.expect("put_new"));
        assert!(!store.put_new(&k, V2, TTL).await.expect("put_new again"));
        assert_eq!(store.get(&k).await.expect("get").as_deref(), Some(V1));
        assert_ttl_within(store, &k, TTL).await;

        // Once the key is gone, put_new works again.
        store.delete(&k).await.expect("delete");
        assert!(
            store
                .put_new(&k, V2, TTL)
                .await
                .expect("put_new after delete")
        );
        assert_eq!(store.get(&k).await.expect("get").as_deref(), Some(V2));
    }

    /// `take` returns the value once, then `None`, and the key is gone.
    pub async fn take_returns_once(store: &dyn EphemeralStore, prefix: &str) {
        let k = key(prefix, "take");
        store.put(&k, V1, TTL).await.expect("put");
        assert_eq!(store.take(&k).await.expect("take").as_deref(), Some(V1));
        assert_eq!(store.take(&k).await.expect("second take"), None);
        assert_eq!(store.get(&k).await.expect("get"), None);
        assert_eq!(
            store
                .take(&key(prefix, "take-missing"))
                .await
                .expect("take missing"),
            None
        );
    }

    /// `delete` removes a key; deleting a missing key is not an error.
    pub async fn delete_removes(store: &dyn EphemeralStore, prefix: &str) {
        let k = key(prefix, "delete");
        store.put(&k, V1, TTL).await.expect("put");
        store.delete(&k).await.expect("delete");
        assert_eq!(store.get(&k).await.expect("get"), None);
        assert_eq!(store.ttl(&k).await.expect("ttl"), None);
        store.delete(&k).await.expect("delete of a missing key");
    }

    /// `replace_if` swaps the value only when the current bytes are exactly
    /// the expected ones, and applies the new TTL when it does.
    pub async fn replace_if_compares_bytes(store: &dyn EphemeralStore, prefix: &str) {
        let k = key(prefix, "cas");
        store.put(&k, V1, TTL).await.expect("put");

        // A prefix of the current value is not the current value.
        assert!(
            !store
                .replace_if(&k, &V1[..V1.len() - 1], V2, TTL)
                .await
                .expect("replace_if with a truncated expected")
        );
        assert_eq!(store.get(&k).await.expect("get").as_deref(), Some(V1));

        let longer_ttl = TTL * 10;
        assert!(
            store
                .replace_if(&k, V1, V2, longer_ttl)
                .await
                .expect("replace_if with the right expected")
        );
        assert_eq!(store.get(&k).await.expect("get").as_deref(), Some(V2));
        let ttl = assert_ttl_within(store, &k, longer_ttl).await;
        assert!(ttl > TTL, "replace_if should apply its TTL, got {ttl:?}");

        // V1 is now stale: the swap fails and the value stays V2.
        assert!(
            !store
                .replace_if(&k, V1, b"third", TTL)
                .await
                .expect("replace_if with stale expected")
        );
        assert_eq!(store.get(&k).await.expect("get").as_deref(), Some(V2));

        // A missing key matches nothing and is not created.
        let missing = key(prefix, "cas-missing");
        assert!(
            !store
                .replace_if(&missing, b"", V1, TTL)
                .await
                .expect("replace_if on a missing key")
        );
        assert_eq!(store.get(&missing).await.expect("get"), None);
    }

    /// `incr` counts 1, 2, 3; the first call sets the TTL and later calls do
    /// not extend it, even when they ask for a longer one (fixed window).
    pub async fn incr_counts_in_fixed_window(store: &dyn EphemeralStore, prefix: &str) {
        let k = key(prefix, "counter");
        assert_eq!(store.incr(&k, TTL).await.expect("incr"), 1);
        let first_ttl = assert_ttl_within(store, &k, TTL).await;

        let longer = TTL * 60;
        assert_eq!(store.incr(&k, longer).await.expect("incr"), 2);
        assert_eq!(store.incr(&k, longer).await.expect("incr"), 3);
        let ttl = store
            .ttl(&k)
            .await
            .expect("ttl")
            .expect("the counter keeps its TTL");
        assert!(
            ttl <= first_ttl,
            "later increments extended the window: {ttl:?} > {first_ttl:?}"
        );

        // Counters are independent.
        let other = key(prefix, "counter-other");
        assert_eq!(store.incr(&other, TTL).await.expect("incr other"), 1);
        assert_eq!(store.incr(&k, TTL).await.expect("incr"), 4);
    }

    /// `decr` takes one back from a live counter, keeps its window, stops at
    /// zero, and never creates a counter.
    pub async fn decr_takes_back_without_creating(store: &dyn EphemeralStore, prefix: &str) {
        let k = key(prefix, "decr");
        assert_eq!(store.decr(&k).await.expect("decr absent"), 0);
        assert_eq!(
            store.get(&k).await.expect("get"),
            None,
            "no counter created"
        );
        store.incr(&k, TTL).await.expect("incr");
        store.incr(&k, TTL).await.expect("incr");
        assert_eq!(store.decr(&k).await.expect("decr"), 1);
        assert_ttl_within(store, &k, TTL).await;
        assert_eq!(store.decr(&k).await.expect("decr"), 0);
        assert_eq!(store.decr(&k).await.expect("decr at zero"), 0);
        assert_eq!(store.incr(&k, TTL).await.expect("incr"), 1);
    }

    /// `ttl` of a key never written is `None`.
    pub async fn ttl_missing_is_none(store: &dyn EphemeralStore, prefix: &str) {
        let k = key(prefix, "ttl-missing");
        assert_eq!(store.ttl(&k).await.expect("ttl"), None);
    }

    /// A value put with a TTL reports a remaining TTL no longer than it.
    pub async fn put_sets_ttl(store: &dyn EphemeralStore, prefix: &str) {
        let k = key(prefix, "ttl");
        store.put(&k, V1, TTL).await.expect("put");
        assert_ttl_within(store, &k, TTL).await;

        // A second put sets the TTL afresh.
        let shorter = TTL / 4;
        store.put(&k, V2, shorter).await.expect("put shorter");
        assert_ttl_within(store, &k, shorter).await;
    }

    /// Of 32 concurrent `take`s of one key, exactly one gets the value.
    pub async fn concurrent_takes_have_one_winner(store: Arc<dyn EphemeralStore>, prefix: &str) {
        const TASKS: usize = 32;
        let k = key(prefix, "race-take");
        store.put(&k, V1, TTL).await.expect("put");

        let barrier = Arc::new(Barrier::new(TASKS));
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let (store, barrier, k) = (store.clone(), barrier.clone(), k.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.take(&k).await.expect("take")
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            if let Some(v) = task.await.expect("take task") {
                winners.push(v);
            }
        }
        assert_eq!(winners, vec![V1.to_vec()], "exactly one take wins");
        assert_eq!(store.get(&k).await.expect("get"), None);
    }

    /// Of 32 concurrent `put_new`s of one key, exactly one sets it, and the
    /// stored value is the winner's.
    pub async fn concurrent_put_new_has_one_winner(store: Arc<dyn EphemeralStore>, prefix: &str) {
        const TASKS: usize = 32;
        let k = key(prefix, "race-put-new");

        let barrier = Arc::new(Barrier::new(TASKS));
        let tasks: Vec<_> = (0..TASKS)
            .map(|i| {
                let (store, barrier, k) = (store.clone(), barrier.clone(), k.clone());
                tokio::spawn(async move {
                    let value = format!("writer-{i}").into_bytes();
                    barrier.wait().await;
                    let set = store.put_new(&k, &value, TTL).await.expect("put_new");
                    set.then_some(value)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            if let Some(v) = task.await.expect("put_new task") {
                winners.push(v);
            }
        }
        assert_eq!(winners.len(), 1, "exactly one put_new wins");
        assert_eq!(store.get(&k).await.expect("get"), winners.pop());
    }

    /// Of 16 concurrent `replace_if`s expecting the same bytes, exactly one
    /// succeeds, and the stored value is the winner's.
    pub async fn concurrent_replace_if_has_one_winner(
        store: Arc<dyn EphemeralStore>,
        prefix: &str,
    ) {
        const TASKS: usize = 16;
        let k = key(prefix, "race-cas");
        store.put(&k, V1, TTL).await.expect("put");

        let barrier = Arc::new(Barrier::new(TASKS));
        let tasks: Vec<_> = (0..TASKS)
            .map(|i| {
                let (store, barrier, k) = (store.clone(), barrier.clone(), k.clone());
                tokio::spawn(async move {
                    let value = format!("version-2-by-{i}").into_bytes();
                    barrier.wait().await;
                    let swapped = store
                        .replace_if(&k, V1, &value, TTL)
                        .await
                        .expect("replace_if");
                    swapped.then_some(value)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            if let Some(v) = task.await.expect("replace_if task") {
                winners.push(v);
            }
        }
        assert_eq!(winners.len(), 1, "exactly one replace_if wins");
        assert_eq!(store.get(&k).await.expect("get"), winners.pop());
    }

    /// 50 concurrent `incr`s of one counter return exactly 1..=50, each once,
    /// and leave the counter at 50.
    pub async fn concurrent_incr_counts_every_call(store: Arc<dyn EphemeralStore>, prefix: &str) {
        const TASKS: u64 = 50;
        let k = key(prefix, "race-counter");

        let barrier = Arc::new(Barrier::new(TASKS as usize));
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let (store, barrier, k) = (store.clone(), barrier.clone(), k.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.incr(&k, TTL).await.expect("incr")
                })
            })
            .collect();
        let mut seen = BTreeSet::new();
        for task in tasks {
            let n = task.await.expect("incr task");
            assert!(seen.insert(n), "incr returned {n} twice");
        }
        assert_eq!(seen, (1..=TASKS).collect::<BTreeSet<_>>());
        // The counter stands at 50: the next increment is 51.
        assert_eq!(store.incr(&k, TTL).await.expect("incr"), TASKS + 1);
        assert_ttl_within(&*store, &k, TTL).await;
    }

    /// Runs every check, each under its own sub-prefix of `prefix`.
    pub async fn run_all(store: Arc<dyn EphemeralStore>, prefix: &str) {
        let s = &*store;
        put_get_roundtrip(s, &format!("{prefix}roundtrip:")).await;
        put_replaces(s, &format!("{prefix}replaces:")).await;
        get_missing_is_none(s, &format!("{prefix}missing:")).await;
        put_new_sets_only_when_absent(s, &format!("{prefix}put-new:")).await;
        take_returns_once(s, &format!("{prefix}take:")).await;
        delete_removes(s, &format!("{prefix}delete:")).await;
        replace_if_compares_bytes(s, &format!("{prefix}cas:")).await;
        incr_counts_in_fixed_window(s, &format!("{prefix}incr:")).await;
        decr_takes_back_without_creating(s, &format!("{prefix}decr:")).await;
        ttl_missing_is_none(s, &format!("{prefix}ttl-missing:")).await;
        put_sets_ttl(s, &format!("{prefix}ttl:")).await;
        concurrent_takes_have_one_winner(store.clone(), &format!("{prefix}race-take:")).await;
        concurrent_put_new_has_one_winner(store.clone(), &format!("{prefix}race-put-new:")).await;
        concurrent_replace_if_has_one_winner(store.clone(), &format!("{prefix}race-cas:")).await;
        concurrent_incr_counts_every_call(store, &format!("{prefix}race-incr:")).await;
    }
}

#[cfg(test)]
mod tests {
    use super::contract;
    use super::*;
    use crate::clock::SettableClock;
    use std::sync::Arc;

    fn store() -> (Arc<MemoryStore>, SettableClock) {
        let clock = SettableClock::new(
            OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("a valid instant"),
        );
        (Arc::new(MemoryStore::new(Arc::new(clock.clone()))), clock)
    }

    fn dyn_store() -> Arc<dyn EphemeralStore> {
        store().0
    }

    fn held(s: &MemoryStore) -> usize {
        s.map.lock().unwrap().map.len()
    }

    #[tokio::test]
    async fn expired_entries_are_swept_at_most_once_per_interval() {
        let (s, clock) = store();
        for i in 0..100 {
            s.put(&format!("short:{i}"), b"v", Duration::from_secs(1))
                .await
                .unwrap();
        }
        s.put("long", b"v", Duration::from_secs(3600))
            .await
            .unwrap();
        clock.advance(time::Duration::seconds(2));
        // The first call after the interval sweeps; only the live key stays.
        assert_eq!(s.get("long").await.unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(held(&s), 1);
        // Expired again, but within the interval: kept (unreadable) until
        // the next sweep.
        s.put("brief", b"v", Duration::from_millis(1))
            .await
            .unwrap();
        clock.advance(time::Duration::milliseconds(500));
        assert!(s.get("brief").await.unwrap().is_none());
        assert_eq!(held(&s), 2);
        clock.advance(time::Duration::seconds(1));
        assert!(s.get("brief").await.unwrap().is_none());
        assert_eq!(held(&s), 1);
    }

    #[tokio::test]
    async fn put_get_roundtrip() {
        contract::put_get_roundtrip(&*dyn_store(), "t:").await;
    }

    #[tokio::test]
    async fn put_replaces() {
        contract::put_replaces(&*dyn_store(), "t:").await;
    }

    #[tokio::test]
    async fn get_missing_is_none() {
        contract::get_missing_is_none(&*dyn_store(), "t:").await;
    }

    #[tokio::test]
    async fn get_many_in_order() {
        contract::get_many_in_order(&*dyn_store(), "t:").await;
    }

    #[tokio::test]
    async fn put_new_sets_only_when_absent() {
        contract::put_new_sets_only_when_absent(&*dyn_store(), "t:").await;
    }

    #[tokio::test]
    async fn take_returns_once() {
        contract::take_returns_once(&*dyn_store(), "t:").await;
    }

    #[tokio::test]
    async fn delete_removes() {
        contract::delete_removes(&*dyn_store(), "t:").await;
    }

    #[tokio::test]
    async fn replace_if_compares_bytes() {
        contract::replace_if_compares_bytes(&*dyn_store(), "t:").await;
    }

    #[tokio::test]
    async fn incr_counts_in_fixed_window() {
        contract::incr_counts_in_fixed_window(&*dyn_store(), "t:").await;
    }

    #[tokio::test]
    async fn ttl_missing_is_none() {
        contract::ttl_missing_is_none(&*dyn_store(), "t:").await;
    }

    #[tokio::test]
    async fn decr_takes_back_without_creating() {
        contract::decr_takes_back_without_creating(&*dyn_store(), "t:").await;
    }

    #[tokio::test]
    async fn put_sets_ttl() {
        contract::put_sets_ttl(&*dyn_store(), "t:").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_takes_have_one_winner() {
        contract::concurrent_takes_have_one_winner(dyn_store(), "t:").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_put_new_has_one_winner() {
        contract::concurrent_put_new_has_one_winner(dyn_store(), "t:").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_replace_if_has_one_winner() {
        contract::concurrent_replace_if_has_one_winner(dyn_store(), "t:").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_incr_counts_every_call() {
        contract::concurrent_incr_counts_every_call(dyn_store(), "t:").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn run_all_passes() {
        contract::run_all(dyn_store(), "all:").await;
    }

    const TTL: Duration = Duration::from_secs(30);

    /// Moves the clock to one second past `TTL`.
    fn expire(clock: &SettableClock) {
        clock.advance(time::Duration::try_from(TTL).expect("small TTL") + time::Duration::SECOND);
    }

    #[tokio::test]
    async fn value_lives_until_its_ttl_has_passed() {
        let (store, clock) = store();
        store.put("k", b"v", TTL).await.unwrap();
        clock.advance(time::Duration::try_from(TTL).unwrap() - time::Duration::MILLISECOND);
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(
            store.ttl("k").await.unwrap(),
            Some(Duration::from_millis(1))
        );
        clock.advance(time::Duration::MILLISECOND);
        assert_eq!(store.get("k").await.unwrap(), None);
        assert_eq!(store.ttl("k").await.unwrap(), None);
    }

    #[tokio::test]
    async fn get_after_expiry_is_none() {
        let (store, clock) = store();
        store.put("k", b"v", TTL).await.unwrap();
        expire(&clock);
        assert_eq!(store.get("k").await.unwrap(), None);
        assert_eq!(store.ttl("k").await.unwrap(), None);
    }

    #[tokio::test]
    async fn take_after_expiry_is_none() {
        let (store, clock) = store();
        store.put("k", b"v", TTL).await.unwrap();
        expire(&clock);
        assert_eq!(store.take("k").await.unwrap(), None);
    }

    #[tokio::test]
    async fn incr_after_expiry_starts_a_new_window() {
        let (store, clock) = store();
        assert_eq!(store.incr("n", TTL).await.unwrap(), 1);
        assert_eq!(store.incr("n", TTL).await.unwrap(), 2);
        expire(&clock);
        assert_eq!(store.incr("n", TTL).await.unwrap(), 1);
        assert_eq!(store.ttl("n").await.unwrap(), Some(TTL));
    }

    #[tokio::test]
    async fn replace_if_after_expiry_fails_and_creates_nothing() {
        let (store, clock) = store();
        store.put("k", b"v", TTL).await.unwrap();
        expire(&clock);
        assert!(!store.replace_if("k", b"v", b"w", TTL).await.unwrap());
        assert_eq!(store.get("k").await.unwrap(), None);
    }

    #[tokio::test]
    async fn put_new_after_expiry_sets() {
        let (store, clock) = store();
        store.put("k", b"old", TTL).await.unwrap();
        expire(&clock);
        assert!(store.put_new("k", b"new", TTL).await.unwrap());
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"new"[..]));
        assert_eq!(store.ttl("k").await.unwrap(), Some(TTL));
    }

    #[tokio::test]
    async fn huge_ttl_does_not_panic() {
        let (store, _clock) = store();
        store.put("k", b"v", Duration::MAX).await.unwrap();
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
        assert!(store.ttl("k").await.unwrap().is_some());
    }
}
