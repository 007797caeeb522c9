//! Throttling of secret checks (passwords, codes, keys) and of what costs
//! something to send, counted in the short-lived store in fixed windows.
//!
//! # Count first, then check
//!
//! An attempt is counted before the secret is checked, in one atomic
//! increment per bucket ([`Throttle::attempt`]): of N concurrent guesses on
//! one account, only those whose increment stayed within the limit are
//! checked at all; the others are refused as locked without touching the
//! secret. What was not a guess after all (a malformed code, a "send a new
//! code", a step that asked again) is given back ([`Throttle::refund`]); a
//! success clears the account's bucket and gives the IP's back
//! ([`Throttle::succeeded`]). A refused attempt (locked) is given back too:
//! it was not checked.
//!
//! # Buckets
//!
//! Every key this module counts under is built here: per method and account
//! (or per typed identifier when no account matches, so that unknown and
//! known identifiers behave alike), per client IP (IPv6 addresses by their
//! /64, which one subscriber usually holds whole), per account for the
//! current password check of the account page, and per destination for
//! codes sent.

use crate::clock::SharedClock;
use crate::domain::{TokenHash, UserId};
use crate::ephemeral::EphemeralStore;
use crate::error::StoreError;
use async_trait::async_trait;
use serde::Deserialize;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// Failed-login throttling (`[throttle]`): fixed windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleSettings {
    /// Attempts per identifier (known or not) and method in a window.
    pub account_max_failures: u32,
    /// Attempts per client IP (IPv6: per /64) in a window.
    pub ip_max_failures: u32,
    pub window_secs: u32,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self {
            account_max_failures: 5,
            ip_max_failures: 50,
            window_secs: 900,
        }
    }
}

/// A counter with its limit and window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    key: String,
    max: u32,
    window: Duration,
    /// The account's (cleared on success), not the IP's (given back).
    per_account: bool,
}

/// Who a login attempt is for.
#[derive(Debug, Clone, Copy)]
pub enum Attempted<'a> {
    /// A known account.
    User(UserId),
    /// What was typed, when it matches no account.
    Typed(&'a str),
    /// Nobody yet (a passkey before it names its account): this flow.
    Flow(&'a str),
}

/// The typed stores of counters: one atomic step per bucket.
#[async_trait]
pub trait ThrottleStore: Send + Sync {
    /// Counts one in each bucket (starting its window if new); the counts.
    async fn count(&self, buckets: &[Bucket]) -> Result<Vec<u64>, StoreError>;
    /// Gives one back in each bucket that exists.
    async fn uncount(&self, buckets: &[Bucket]) -> Result<(), StoreError>;
    /// Forgets a bucket.
    async fn clear(&self, bucket: &Bucket) -> Result<(), StoreError>;
    /// Each bucket's count and what is left of its window.
    async fn read(&self, buckets: &[Bucket]) -> Result<Vec<(u64, Duration)>, StoreError>;
}

/// [`ThrottleStore`] over the short-lived store (in-process or Redis).
pub struct StoredCounters {
    store: Arc<dyn EphemeralStore>,
}

impl StoredCounters {
    pub fn new(store: Arc<dyn EphemeralStore>) -> Self {
        Self { store }
    }
}

#[async_trait]
impl ThrottleStore for StoredCounters {
    async fn count(&self, buckets: &[Bucket]) -> Result<Vec<u64>, StoreError> {
        let mut counts = Vec::with_capacity(buckets.len());
        for b in buckets {
            counts.push(self.store.incr(&b.key, b.window).await?);
        }
        Ok(counts)
    }

    async fn uncount(&self, buckets: &[Bucket]) -> Result<(), StoreError> {
        for b in buckets {
            self.store.decr(&b.key).await?;
        }
        Ok(())
    }

    async fn clear(&self, bucket: &Bucket) -> Result<(), StoreError> {
        self.store.delete(&bucket.key).await
    }

    async fn read(&self, buckets: &[Bucket]) -> Result<Vec<(u64, Duration)>, StoreError> {
        let keys: Vec<&str> = buckets.iter().map(|b| b.key.as_str()).collect();
        let values = self.store.get_many(&keys).await?;
        let mut out = Vec::with_capacity(buckets.len());
        for (b, v) in buckets.iter().zip(values) {
            let n = v
                .and_then(|v| String::from_utf8(v).ok())
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
            let left = if n > 0 {
                self.store.ttl(&b.key).await?.unwrap_or_default()
            } else {
                Duration::ZERO
            };
            out.push((n, left));
        }
        Ok(out)
    }
}

/// An attempt that was counted and may be checked.
#[derive(Debug)]
#[must_use = "an attempt is refunded, kept as a failure, or succeeded"]
pub struct Ticket {
    buckets: Vec<Bucket>,
}

/// What counting an attempt allowed.
#[derive(Debug)]
pub enum Attempt {
    /// Within every limit: check the secret, then settle the ticket.
    Allowed(Ticket),
    /// A limit is reached: the secret is not checked.
    Locked { until: OffsetDateTime },
}

/// The throttling rules over a [`ThrottleStore`].
pub struct Throttle {
    store: Arc<dyn ThrottleStore>,
    settings: ThrottleSettings,
    clock: SharedClock,
}

impl Throttle {
    pub fn new(
        store: Arc<dyn ThrottleStore>,
        settings: ThrottleSettings,
        clock: SharedClock,
    ) -> Self {
        Self {
            store,
            settings,
            clock,
        }
    }

    pub fn settings(&self) -> ThrottleSettings {
        self.settings
    }

    fn window(&self) -> Duration {
        Duration::from_secs(u64::from(self.settings.window_secs))
    }

    fn account_bucket(&self, key: String) -> Bucket {
        Bucket {
            key,
            max: self.settings.account_max_failures,
            window: self.window(),
            per_account: true,
        }
    }

    fn ip_bucket(&self, ip: Option<&str>) -> Option<Bucket> {
        ip.map(|ip| Bucket {
            key: format!("throttle:ip:{}", ip_group(ip)),
            max: self.settings.ip_max_failures,
            window: self.window(),
            per_account: false,
        })
    }

    /// The buckets of a login step: per method and account (or typed
    /// identifier, or flow), and per client IP.
    pub fn login(&self, method: &str, who: Attempted<'_>, ip: Option<&str>) -> Vec<Bucket> {
        let account = match who {
            Attempted::User(id) => format!("throttle:{method}:user:{id}"),
            Attempted::Typed(typed) => format!(
                "throttle:{method}:ident:{}",
                TokenHash::of(&typed.trim().to_lowercase()).as_str()
            ),
            Attempted::Flow(id) => format!("throttle:{method}:flow:{id}"),
        };
        let mut b = vec![self.account_bucket(account)];
        b.extend(self.ip_bucket(ip));
        b
    }

    /// The buckets of the account page's current password check: its own
    /// per account (the login's password bucket is not spent by it), and
    /// the client IP's.
    pub fn password_change(&self, user: UserId, ip: Option<&str>) -> Vec<Bucket> {
        let mut b = vec![self.account_bucket(format!("password_change_failures:{user}"))];
        b.extend(self.ip_bucket(ip));
        b
    }

    /// The bucket of codes sent to one destination (an address or number,
    /// as a keyed hash): at most `max` per hour.
    pub fn code_sends(destination_mac: &str, max: u32) -> Bucket {
        Bucket {
            key: format!("code_sends:{destination_mac}"),
            max,
            window: Duration::from_secs(3600),
            per_account: true,
        }
    }

    /// The bucket of a recovery form's requests from one client IP.
    pub fn recovery_ip(ip: Option<&str>, max: u32, window: Duration) -> Bucket {
        Bucket {
            key: format!("recover_ip:{}", ip.map_or_else(|| "-".to_owned(), ip_group)),
            max,
            window,
            per_account: false,
        }
    }

    /// The bucket of client registrations (RFC 7591 `POST /register`) from
    /// one client IP, per hour: registration creates rows, so even an open
    /// policy cannot fill the database from one address.
    pub fn registrations(ip: Option<&str>, max: u32) -> Bucket {
        Bucket {
            key: format!(
                "register_ip:{}",
                ip.map_or_else(|| "-".to_owned(), ip_group)
            ),
            max,
            window: Duration::from_secs(3600),
            per_account: false,
        }
    }

    /// The bucket of recovery emails to one target (as typed).
    pub fn recovery_target(target: &str, max: u32, window: Duration) -> Bucket {
        Bucket {
            key: format!(
                "recover_to:{}",
                TokenHash::of(&target.trim().to_lowercase()).as_str()
            ),
            max,
            window,
            per_account: true,
        }
    }

    /// The bucket of codes sent to a new primary address, per account.
    pub fn email_change_sends(user: UserId, max: u32) -> Bucket {
        Bucket {
            key: format!("email_change_sends:{user}"),
            max,
            window: Duration::from_secs(3600),
            per_account: true,
        }
    }

    /// Guesses of device user codes (RFC 8628 §5.1): per browser when it is
    /// known (cleared by a right code), per client IP, and across the whole
    /// provider, each in a window of `window`.
    pub fn device_user_code(
        browser: Option<&str>,
        ip: Option<&str>,
        [max, ip_max, global_max]: [u32; 3],
        window: Duration,
    ) -> Vec<Bucket> {
        let browser = browser.map(|b| Bucket {
            key: format!("device_guess:browser:{}", TokenHash::of(b).as_str()),
            max,
            window,
            per_account: true,
        });
        browser
            .into_iter()
            .chain([
                Bucket {
                    key: format!(
                        "device_guess:ip:{}",
                        ip.map_or_else(|| "-".to_owned(), ip_group)
                    ),
                    max: ip_max,
                    window,
                    per_account: false,
                },
                Bucket {
                    key: "device_guess:all".to_owned(),
                    max: global_max,
                    window,
                    per_account: false,
                },
            ])
            .collect()
    }

    /// Counts an attempt in every bucket at once; refuses (and gives it back)
    /// when one of them is past its limit.
    pub async fn attempt(&self, buckets: Vec<Bucket>) -> Result<Attempt, StoreError> {
        let counts = self.store.count(&buckets).await?;
        let over: Vec<&Bucket> = buckets
            .iter()
            .zip(&counts)
            .filter(|(b, n)| **n > u64::from(b.max))
            .map(|(b, _)| b)
            .collect();
        if over.is_empty() {
            return Ok(Attempt::Allowed(Ticket { buckets }));
        }
        let until = self.until(&over).await?;
        self.store.uncount(&buckets).await?;
        Ok(Attempt::Locked { until })
    }

    /// Counts one thing that is not a guess (a code sent, a recovery
    /// request): `true` within the limit. Nothing is given back.
    pub async fn spend(&self, bucket: Bucket) -> Result<bool, StoreError> {
        let n = self.store.count(std::slice::from_ref(&bucket)).await?;
        Ok(n[0] <= u64::from(bucket.max))
    }

    /// How many were counted in `bucket` in its current window.
    pub async fn count(&self, bucket: &Bucket) -> Result<u64, StoreError> {
        let read = self.store.read(std::slice::from_ref(bucket)).await?;
        Ok(read[0].0)
    }

    /// Seconds left in the window of `bucket` (at least 1).
    pub async fn retry_after(&self, bucket: &Bucket) -> Result<u64, StoreError> {
        let read = self.store.read(std::slice::from_ref(bucket)).await?;
        Ok(read[0].1.as_secs().max(1))
    }

    /// What was counted was no guess: given back.
    pub async fn refund(&self, ticket: Ticket) -> Result<(), StoreError> {
        self.store.uncount(&ticket.buckets).await
    }

    /// A wrong guess: it stays counted.
    pub fn failed(&self, ticket: Ticket) {
        drop(ticket);
    }

    /// The secret was right: the account's count starts again; the IP's
    /// attempt is given back.
    pub async fn succeeded(&self, ticket: Ticket) -> Result<(), StoreError> {
        for b in &ticket.buckets {
            if b.per_account {
                self.store.clear(b).await?;
            } else {
                self.store.uncount(std::slice::from_ref(b)).await?;
            }
        }
        Ok(())
    }

    /// Until when the next attempt would be refused, if it would.
    pub async fn locked_until(
        &self,
        buckets: &[Bucket],
    ) -> Result<Option<OffsetDateTime>, StoreError> {
        let read = self.store.read(buckets).await?;
        let mut until: Option<OffsetDateTime> = None;
        for (b, (n, left)) in buckets.iter().zip(read) {
            if n >= u64::from(b.max) {
                let t = self.clock.now() + time::Duration::try_from(left).unwrap_or_default();
                until = Some(until.map_or(t, |u| u.max(t)));
            }
        }
        Ok(until)
    }

    async fn until(&self, over: &[&Bucket]) -> Result<OffsetDateTime, StoreError> {
        let over: Vec<Bucket> = over.iter().map(|b| (*b).clone()).collect();
        let read = self.store.read(&over).await?;
        let left = read.iter().map(|(_, l)| *l).max().unwrap_or_default();
        Ok(self.clock.now() + time::Duration::try_from(left).unwrap_or_default())
    }
}

/// The group a client address is counted in: an IPv4 address alone, an
/// IPv6 address by its /64 (a subscriber's usual allocation: one host can
/// pick any of its 2^64 addresses), an IPv4-mapped IPv6 address as IPv4.
/// Anything that is not an address is counted as given.
pub fn ip_group(ip: &str) -> String {
    match ip.trim().parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        Err(_) => ip.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SettableClock;
    use crate::ephemeral::MemoryStore;

    fn throttle(max: u32) -> Throttle {
        let clock = SettableClock::new(OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap());
        let store = Arc::new(MemoryStore::new(Arc::new(clock.clone())));
        Throttle::new(
            Arc::new(StoredCounters::new(store)),
            ThrottleSettings {
                account_max_failures: max,
                ip_max_failures: 100,
                window_secs: 900,
            },
            Arc::new(clock),
        )
    }

    #[test]
    fn ipv6_is_counted_by_its_64() {
        assert_eq!(ip_group("203.0.113.7"), "203.0.113.7");
        assert_eq!(
            ip_group("2001:db8:aa:bb:1:2:3:4"),
            ip_group("2001:db8:aa:bb:ffff:ffff:ffff:ffff")
        );
        assert_eq!(ip_group("2001:db8:aa:bb::1"), "2001:db8:aa:bb::/64");
        assert_ne!(ip_group("2001:db8:aa:bb::1"), ip_group("2001:db8:aa:bc::1"));
        assert_eq!(ip_group("::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(ip_group("not-an-ip"), "not-an-ip");
    }

    #[tokio::test]
    async fn concurrent_attempts_are_allowed_up_to_the_limit_only() {
        let t = Arc::new(throttle(5));
        let user = UserId::new_v7();
        let tasks: Vec<_> = (0..40)
            .map(|_| {
                let t = t.clone();
                tokio::spawn(async move {
                    match t
                        .attempt(t.login("password", Attempted::User(user), Some("198.51.100.1")))
                        .await
                        .unwrap()
                    {
                        Attempt::Allowed(ticket) => {
                            t.failed(ticket);
                            true
                        }
                        Attempt::Locked { .. } => false,
                    }
                })
            })
            .collect();
        let mut allowed = 0;
        for task in tasks {
            allowed += usize::from(task.await.unwrap());
        }
        assert_eq!(allowed, 5);
        let buckets = t.login("password", Attempted::User(user), Some("198.51.100.1"));
        assert!(t.locked_until(&buckets).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn refunds_and_successes_give_attempts_back() {
        let t = throttle(2);
        let who = Attempted::Typed("Someone@Example.com");
        let b = || t.login("email_code", who, Some("2001:db8::1"));
        let Attempt::Allowed(first) = t.attempt(b()).await.unwrap() else {
            panic!("first attempt")
        };
        t.refund(first).await.unwrap();
        for _ in 0..2 {
            let Attempt::Allowed(ticket) = t.attempt(b()).await.unwrap() else {
                panic!("within the limit")
            };
            t.failed(ticket);
        }
        assert!(matches!(
            t.attempt(b()).await.unwrap(),
            Attempt::Locked { .. }
        ));
        // Case and spaces of what was typed do not make a new bucket.
        let other = t.login(
            "email_code",
            Attempted::Typed(" someone@example.COM "),
            None,
        );
        assert!(t.locked_until(&other[..1]).await.unwrap().is_some());
        // Another method has its own count.
        let Attempt::Allowed(ok) = t
            .attempt(t.login("password", who, Some("2001:db8::1")))
            .await
            .unwrap()
        else {
            panic!("another method")
        };
        t.succeeded(ok).await.unwrap();
    }
}
