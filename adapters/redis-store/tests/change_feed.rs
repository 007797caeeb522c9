//! `RedisChangeFeed` against a real Redis server (`IDP_TEST_REDIS_URL`,
//! default `redis://127.0.0.1:6379`): nodes sharing a Redis and key prefix
//! hear each other's changes, and a node whose subscribed connection is lost
//! keeps nothing until it is back, then drops what it kept before.
//!
//! The tests run one at a time (a lock): one of them finds its own
//! subscribed connection among the server's pub/sub clients by comparing
//! lists, which another test subscribing meanwhile would confuse.

use idp_core::changes::{Change, ChangeFeed, ChangeLog};
use idp_core::clock::{SettableClock, SharedClock};
use idp_core::domain::UserId;
use idp_redis_store::{RedisChangeFeed, RedisStore};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn redis_url() -> String {
    std::env::var("IDP_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

async fn feed(prefix: &str) -> RedisChangeFeed {
    RedisStore::connect(&redis_url(), prefix)
        .await
        .unwrap_or_else(|e| panic!("the change feed tests need a Redis server: {e}"))
        .change_feed()
}

fn log() -> Arc<ChangeLog> {
    let clock: SharedClock = Arc::new(SettableClock::starting_now());
    Arc::new(ChangeLog::new(clock))
}

fn user(n: u128) -> Change {
    Change::User(UserId(Uuid::from_u128(n)))
}

/// Waits (at most 5 s) for `condition`, which an I/O task makes true: the
/// subscription being confirmed, a message arriving.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    for _ in 0..500 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not within 5 s");
}

async fn pubsub_client_ids() -> BTreeSet<i64> {
    let mut c = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut c)
        .await
        .unwrap();
    list.lines()
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .filter_map(|id| id.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_hear_each_others_changes() {
    let _one = ONE_AT_A_TIME.lock().await;
    let prefix = format!("idp-test:{}:", Uuid::new_v4());
    let (a, b) = (feed(&prefix).await, feed(&prefix).await);
    let other_deployment = feed(&format!("idp-test:{}:", Uuid::new_v4())).await;
    let (log_a, log_b, log_other) = (log(), log(), log());
    a.subscribe(log_a.clone());
    b.subscribe(log_b.clone());
    other_deployment.subscribe(log_other.clone());
    eventually("subscribed", || {
        log_a.is_connected() && log_b.is_connected() && log_other.is_connected()
    })
    .await;
    let (stamp_a, stamp_b, stamp_other) = (
        log_a.stamp().unwrap(),
        log_b.stamp().unwrap(),
        log_other.stamp().unwrap(),
    );

    a.publish(&[user(1), user(2)]).await.unwrap();
    eventually("node b hears node a", || {
        !log_b.still_holds(&stamp_b, &[user(2)])
    })
    .await;
    // The publisher hears its own announcement too.
    eventually("node a hears itself", || {
        !log_a.still_holds(&stamp_a, &[user(1)])
    })
    .await;
    assert!(log_b.still_holds(&stamp_b, &[user(3)]), "only what changed");
    assert!(
        log_other.still_holds(&stamp_other, &[user(1), user(2)]),
        "another key prefix is another deployment"
    );
    drop(other_deployment);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_subscription_keeps_nothing_until_it_is_back() {
    let _one = ONE_AT_A_TIME.lock().await;
    let prefix = format!("idp-test:{}:", Uuid::new_v4());
    let publisher = feed(&prefix).await;
    let before = pubsub_client_ids().await;
    let node = feed(&prefix).await;
    let log = log();
    node.subscribe(log.clone());
    eventually("subscribed", || log.is_connected()).await;
    let ours: Vec<i64> = pubsub_client_ids()
        .await
        .difference(&before)
        .copied()
        .collect();
    assert_eq!(ours.len(), 1, "one subscribed connection: {ours:?}");
    let kept = log.stamp().unwrap();

    // The server drops the subscribed connection (as a restart or a network
    // failure would); a change published meanwhile is not heard...
    let mut admin = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(ours[0])
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(killed, 1);
    eventually("disconnected", || !log.is_connected()).await;
    assert!(log.stamp().is_none(), "nothing kept while disconnected");
    assert!(!log.still_holds(&kept, &[user(9)]));
    publisher.publish(&[user(1)]).await.unwrap();

    // ...so once back, nothing kept from before holds, whatever it rested on.
    eventually("reconnected", || log.is_connected()).await;
    assert!(!log.still_holds(&kept, &[user(9)]));
    let fresh = log.stamp().unwrap();
    assert!(log.still_holds(&fresh, &[user(1)]));
    publisher.publish(&[user(1)]).await.unwrap();
    eventually("heard after reconnecting", || {
        !log.still_holds(&fresh, &[user(1)])
    })
    .await;
}
