//! Changes that a node's caches depend on, and how every node hears of them.
//!
//! Introspection and userinfo answer from a per-node memo of access tokens
//! (see `oidc::verified_tokens`): once a token has been checked against the
//! short-lived store (not revoked) and the database (its grant live, its
//! user's claims), the answer is kept and given again without any I/O, for
//! as long as nothing it rests on has changed. Whatever could change it is a
//! [`Change`], announced to every node through a [`ChangeFeed`] right after
//! it is written (a revoked access token or grant, a user's claims, an
//! organization's status or members), and every node records it in its
//! [`ChangeLog`].
//!
//! The log decides whether a kept answer still holds, with counters rather
//! than timing: each change heard gets the next value of a counter (its
//! epoch); an answer is stamped with the counter's value taken *before* its
//! reads began. A change announced after its write is committed, and heard
//! after the stamp was taken, gets a larger epoch than the stamp, so the
//! answer is dropped; one heard before the stamp was taken was committed
//! before the reads began, so the reads saw it. Three more rules make it safe
//! when announcements can be lost:
//!
//! - nothing is kept while the node is not connected to the feed
//!   ([`ChangeLog::disconnected`]), and (re)connecting raises a floor that
//!   every older stamp is below, since changes announced during the outage
//!   were not heard;
//! - an answer is kept at most [`ChangeLog::MAX_AGE`], whatever happens: the
//!   bound on staleness should an announcement be lost without the
//!   connection dropping (a node that wrote a change but could not reach the
//!   feed), and for changes made by another process on an embedded database
//!   (the CLI), which has no feed to announce them on;
//! - only answers that a token is live are kept, never refusals.

use crate::clock::SharedClock;
use crate::domain::{OrgId, UserId};
use crate::ephemeral::StoreError;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use time::OffsetDateTime;
use uuid::Uuid;

/// Something cached answers may rest on has changed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Change {
    /// The access token with this `jti` was revoked.
    AccessToken(String),
    /// The grant (token family) was revoked.
    Grant(Uuid),
    /// The user's claims or organization memberships changed.
    User(UserId),
    /// The organization's status (or anything in its claim) changed.
    Organization(OrgId),
}

impl Change {
    /// The compact text form carried by a feed: `t:<jti>`, `g:<uuid>`,
    /// `u:<uuid>`, `o:<uuid>`.
    pub fn encode(&self) -> String {
        match self {
            Change::AccessToken(jti) => format!("t:{jti}"),
            Change::Grant(id) => format!("g:{id}"),
            Change::User(id) => format!("u:{}", id.0),
            Change::Organization(id) => format!("o:{}", id.0),
        }
    }

    /// The inverse of [`Self::encode`]; `None` for anything else.
    pub fn decode(s: &str) -> Option<Change> {
        let (kind, value) = s.split_once(':')?;
        let uuid = || Uuid::parse_str(value).ok();
        match kind {
            "t" if !value.is_empty() => Some(Change::AccessToken(value.to_owned())),
            "g" => uuid().map(Change::Grant),
            "u" => uuid().map(|u| Change::User(UserId(u))),
            "o" => uuid().map(|u| Change::Organization(OrgId(u))),
            _ => None,
        }
    }

    /// Several changes as one message (space-separated).
    pub fn encode_all(changes: &[Change]) -> String {
        changes
            .iter()
            .map(Change::encode)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The changes of a message; unreadable parts are skipped.
    pub fn decode_all(message: &str) -> Vec<Change> {
        message.split(' ').filter_map(Change::decode).collect()
    }
}

/// When an answer's reads began (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    epoch: u64,
    at: OffsetDateTime,
}

#[derive(Debug)]
struct Heard {
    /// The epoch and time each change was last heard.
    by_change: HashMap<Change, (u64, OffsetDateTime)>,
    next_prune: OffsetDateTime,
}

/// What this node has heard of changes (see the module documentation).
#[derive(Debug)]
pub struct ChangeLog {
    clock: SharedClock,
    epoch: AtomicU64,
    /// Stamps below it were taken before the current connection to the feed.
    floor: AtomicU64,
    connected: AtomicBool,
    heard: Mutex<Heard>,
}

/// Changes heard are forgotten once older than [`ChangeLog::MAX_AGE`] (no
/// kept answer can be that old), looked at no more than once a second and
/// only past this many.
const PRUNE_ABOVE: usize = 1024;

impl ChangeLog {
    /// How long an answer is kept at most.
    pub const MAX_AGE: time::Duration = time::Duration::seconds(10);

    /// A log not connected to any feed yet: nothing is kept until
    /// [`Self::connected`].
    pub fn new(clock: SharedClock) -> Self {
        let now = clock.now();
        Self {
            clock,
            epoch: AtomicU64::new(0),
            floor: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            heard: Mutex::new(Heard {
                by_change: HashMap::new(),
                next_prune: now,
            }),
        }
    }

    /// The stamp of reads about to begin, or `None` when their answer must
    /// not be kept (not connected to the feed).
    pub fn stamp(&self) -> Option<Stamp> {
        // The time first: it must not be later than the epoch it goes with.
        let at = self.clock.now();
        if !self.connected.load(Ordering::SeqCst) {
            return None;
        }
        Some(Stamp {
            epoch: self.epoch.load(Ordering::SeqCst),
            at,
        })
    }

    /// Whether an answer stamped `stamp`, resting on `changes`, still holds.
    pub fn still_holds(&self, stamp: &Stamp, changes: &[Change]) -> bool {
        if !self.connected.load(Ordering::SeqCst)
            || stamp.epoch < self.floor.load(Ordering::SeqCst)
            || self.clock.now() - stamp.at >= Self::MAX_AGE
        {
            return false;
        }
        // Nothing heard since the stamp: nothing it rests on changed.
        if self.epoch.load(Ordering::SeqCst) == stamp.epoch {
            return true;
        }
        let heard = self.lock();
        changes.iter().all(|c| {
            heard
                .by_change
                .get(c)
                .is_none_or(|(epoch, _)| *epoch <= stamp.epoch)
        })
    }

    /// Records changes heard from the feed (or made on this node).
    pub fn heard(&self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        let now = self.clock.now();
        let mut heard = self.lock();
        for c in changes {
            heard.by_change.insert(c.clone(), (epoch, now));
        }
        if heard.by_change.len() > PRUNE_ABOVE && now >= heard.next_prune {
            heard
                .by_change
                .retain(|_, (_, at)| now - *at < Self::MAX_AGE);
            heard.next_prune = now + time::Duration::seconds(1);
        }
    }

    /// The feed now delivers every change: answers may be kept again, but
    /// none stamped before this (changes may have been missed until now).
    pub fn connected(&self) {
        let floor = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        self.floor.store(floor, Ordering::SeqCst);
        self.connected.store(true, Ordering::SeqCst);
    }

    /// The feed may be missing changes: keep nothing until [`Self::connected`].
    pub fn disconnected(&self) {
        self.connected.store(false, Ordering::SeqCst);
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Heard> {
        self.heard.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where changes are announced to every node (a port: in-process for a
/// single node, Redis publish/subscribe for a cluster).
#[async_trait]
pub trait ChangeFeed: Send + Sync {
    /// Announces `changes` to every node subscribed, this one included.
    async fn publish(&self, changes: &[Change]) -> Result<(), StoreError>;
    /// Delivers every change announced from now on to `log`, and keeps the
    /// log's connection state ([`ChangeLog::connected`],
    /// [`ChangeLog::disconnected`]) in step with the feed's for as long as
    /// the feed lives.
    fn subscribe(&self, log: Arc<ChangeLog>);
}

/// The feed of a single process (the embedded default, with the in-process
/// short-lived store): announcements go straight to the logs subscribed.
#[derive(Debug, Default)]
pub struct LocalChangeFeed {
    logs: Mutex<Vec<Weak<ChangeLog>>>,
}

#[async_trait]
impl ChangeFeed for LocalChangeFeed {
    async fn publish(&self, changes: &[Change]) -> Result<(), StoreError> {
        let mut logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        logs.retain(|log| match log.upgrade() {
            Some(log) => {
                log.heard(changes);
                true
            }
            None => false,
        });
        Ok(())
    }

    fn subscribe(&self, log: Arc<ChangeLog>) {
        log.connected();
        self.logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::downgrade(&log));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SettableClock;

    fn log() -> (Arc<SettableClock>, ChangeLog) {
        let clock = Arc::new(SettableClock::new(OffsetDateTime::UNIX_EPOCH));
        let log = ChangeLog::new(clock.clone());
        (clock, log)
    }

    fn user(n: u128) -> Change {
        Change::User(UserId(Uuid::from_u128(n)))
    }

    #[test]
    fn nothing_is_kept_before_the_feed_connects() {
        let (_, log) = log();
        assert!(log.stamp().is_none());
        log.connected();
        assert!(log.stamp().is_some());
        log.disconnected();
        assert!(log.stamp().is_none());
    }

    #[test]
    fn a_change_heard_after_the_stamp_drops_the_answers_resting_on_it() {
        let (_, log) = log();
        log.connected();
        let stamp = log.stamp().unwrap();
        assert!(log.still_holds(&stamp, &[user(1)]));
        log.heard(&[user(2)]);
        assert!(log.still_holds(&stamp, &[user(1)]), "another user's change");
        log.heard(&[user(1)]);
        assert!(!log.still_holds(&stamp, &[user(1)]));
        assert!(!log.still_holds(&stamp, &[user(3), user(1)]));
        // Reads begun after the change saw it: their answer holds.
        let later = log.stamp().unwrap();
        assert!(log.still_holds(&later, &[user(1)]));
    }

    #[test]
    fn a_reconnection_drops_every_answer_stamped_before_it() {
        let (_, log) = log();
        log.connected();
        let stamp = log.stamp().unwrap();
        log.disconnected();
        assert!(
            !log.still_holds(&stamp, &[user(1)]),
            "not while disconnected"
        );
        log.connected();
        assert!(
            !log.still_holds(&stamp, &[user(1)]),
            "changes may have been missed in between"
        );
        let after = log.stamp().unwrap();
        assert!(log.still_holds(&after, &[user(1)]));
    }

    #[test]
    fn answers_are_kept_at_most_max_age() {
        let (clock, log) = log();
        log.connected();
        let stamp = log.stamp().unwrap();
        clock.advance(ChangeLog::MAX_AGE - time::Duration::milliseconds(1));
        assert!(log.still_holds(&stamp, &[user(1)]));
        clock.advance(time::Duration::milliseconds(1));
        assert!(!log.still_holds(&stamp, &[user(1)]));
    }

    #[test]
    fn old_changes_are_forgotten_without_reviving_answers() {
        let (clock, log) = log();
        log.connected();
        let stamp = log.stamp().unwrap();
        log.heard(&[user(0)]);
        for n in 1..=(PRUNE_ABOVE as u128 + 10) {
            log.heard(&[user(n)]);
        }
        clock.advance(ChangeLog::MAX_AGE);
        log.heard(&[user(u128::MAX)]);
        assert!(log.lock().by_change.len() <= 1, "pruned");
        // The answer that rested on user 0 is past its age anyway.
        assert!(!log.still_holds(&stamp, &[user(0)]));
    }

    #[test]
    fn changes_round_trip_as_text() {
        let all = vec![
            Change::AccessToken("6f1c2e7a-8d3b".into()),
            Change::Grant(Uuid::from_u128(7)),
            user(8),
            Change::Organization(OrgId(Uuid::from_u128(9))),
        ];
        let text = Change::encode_all(&all);
        assert_eq!(Change::decode_all(&text), all);
        assert_eq!(Change::decode_all("x:1 g:not-a-uuid t: u"), vec![]);
    }

    #[tokio::test]
    async fn the_local_feed_delivers_to_every_log_subscribed() {
        let feed = LocalChangeFeed::default();
        let (_, a) = log();
        let (_, b) = log();
        let (a, b) = (Arc::new(a), Arc::new(b));
        feed.subscribe(a.clone());
        feed.subscribe(b.clone());
        let (sa, sb) = (a.stamp().unwrap(), b.stamp().unwrap());
        feed.publish(&[user(1)]).await.unwrap();
        assert!(!a.still_holds(&sa, &[user(1)]));
        assert!(!b.still_holds(&sb, &[user(1)]));
        drop(b);
        feed.publish(&[user(2)]).await.unwrap();
        assert_eq!(feed.logs.lock().unwrap().len(), 1);
    }
}
