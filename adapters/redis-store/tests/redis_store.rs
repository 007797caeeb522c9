//! `RedisStore` against a real Redis server (`IDP_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379`): the shared store contract, then what is Redis's
//! own (TTL rounding, expiry set server-side, connection failures).
//!
//! Each test uses its own key prefix (`idp-test:<uuid>:`), so tests run in
//! parallel and never see each other's keys; every key has a TTL, so nothing
//! is left behind. An unreachable server fails the tests: it never skips them.

use idp_core::ephemeral::{EphemeralStore, StoreError, contract};
use idp_redis_store::RedisStore;
use std::sync::Arc;
use std::time::Duration;

fn redis_url() -> String {
    std::env::var("IDP_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn unique_prefix() -> String {
    format!("idp-test:{}:", uuid::Uuid::new_v4())
}

/// A store on the test server under a fresh prefix, and that prefix.
async fn store() -> (RedisStore, String) {
    let url = redis_url();
    let prefix = unique_prefix();
    match RedisStore::connect(&url, &prefix).await {
        Ok(store) => (store, prefix),
        // `e` names the URL without its credentials; `url` itself may hold a password.
        Err(e) => panic!(
            "the Redis adapter tests need a Redis server \
             (IDP_TEST_REDIS_URL, default redis://127.0.0.1:6379): {e}"
        ),
    }
}

async fn dyn_store() -> Arc<dyn EphemeralStore> {
    Arc::new(store().await.0)
}

/// A raw connection to the test server, to look behind the adapter's back.
async fn raw_connection() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .expect("a valid Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("a raw connection to the test Redis")
}

#[tokio::test]
async fn put_get_roundtrip() {
    contract::put_get_roundtrip(&*dyn_store().await, "c:").await;
}

#[tokio::test]
async fn put_replaces() {
    contract::put_replaces(&*dyn_store().await, "c:").await;
}

#[tokio::test]
async fn get_missing_is_none() {
    contract::get_missing_is_none(&*dyn_store().await, "c:").await;
}

#[tokio::test]
async fn get_many_in_order() {
    contract::get_many_in_order(&*dyn_store().await, "c:").await;
}

#[tokio::test]
async fn put_new_sets_only_when_absent() {
    contract::put_new_sets_only_when_absent(&*dyn_store().await, "c:").await;
}

#[tokio::test]
async fn take_returns_once() {
    contract::take_returns_once(&*dyn_store().await, "c:").await;
}

#[tokio::test]
async fn delete_removes() {
    contract::delete_removes(&*dyn_store().await, "c:").await;
}

#[tokio::test]
async fn replace_if_compares_bytes() {
    contract::replace_if_compares_bytes(&*dyn_store().await, "c:").await;
}

#[tokio::test]
async fn incr_counts_in_fixed_window() {
    contract::incr_counts_in_fixed_window(&*dyn_store().await, "c:").await;
}

#[tokio::test]
async fn decr_takes_back_without_creating() {
    contract::decr_takes_back_without_creating(&*dyn_store().await, "c:").await;
}

#[tokio::test]
async fn ttl_missing_is_none() {
    contract::ttl_missing_is_none(&*dyn_store().await, "c:").await;
}

#[tokio::test]
async fn put_sets_ttl() {
    contract::put_sets_ttl(&*dyn_store().await, "c:").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_takes_have_one_winner() {
    contract::concurrent_takes_have_one_winner(dyn_store().await, "c:").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_put_new_has_one_winner() {
    contract::concurrent_put_new_has_one_winner(dyn_store().await, "c:").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_replace_if_has_one_winner() {
    contract::concurrent_replace_if_has_one_winner(dyn_store().await, "c:").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_incr_counts_every_call() {
    contract::concurrent_incr_counts_every_call(dyn_store().await, "c:").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_all_passes() {
    contract::run_all(dyn_store().await, "all:").await;
}

/// Redis's clock cannot be set, so expiry is checked by what Redis will act
/// on: the key carries a server-side expiry (PTTL) within the asked TTL.
#[tokio::test]
async fn short_ttl_is_set_on_the_server() {
    let (store, prefix) = store().await;
    store
        .put("short", b"v", Duration::from_millis(50))
        .await
        .unwrap();
    let mut raw = raw_connection().await;
    let pttl: i64 = redis::cmd("PTTL")
        .arg(format!("{prefix}short"))
        .query_async(&mut raw)
        .await
        .unwrap();
    // -2 would mean it already expired: the command round trips are far
    // shorter than 50 ms here, so it should still be counting down.
    assert!((1..=50).contains(&pttl), "PTTL of the short key is {pttl}");
}

#[tokio::test]
async fn sub_millisecond_ttl_rounds_up_to_one_millisecond() {
    let (store, prefix) = store().await;
    // PX 0 is an error in Redis; the adapter must send 1 instead.
    store
        .put("tiny", b"v", Duration::from_micros(10))
        .await
        .expect("a sub-millisecond TTL is accepted");
    assert!(
        store
            .put_new("tiny-new", b"v", Duration::ZERO)
            .await
            .expect("a zero TTL is accepted")
    );
    let mut raw = raw_connection().await;
    for key in ["tiny", "tiny-new"] {
        let pttl: i64 = redis::cmd("PTTL")
            .arg(format!("{prefix}{key}"))
            .query_async(&mut raw)
            .await
            .unwrap();
        // Either still there with at most 1 ms left, or already gone; never
        // stored without an expiry (-1).
        assert!(
            pttl == -2 || (0..=1).contains(&pttl),
            "PTTL of {key} is {pttl}"
        );
    }
}

#[tokio::test]
async fn huge_ttl_is_capped_not_rejected() {
    let (store, _) = store().await;
    store
        .put("forever", b"v", Duration::MAX)
        .await
        .expect("a huge TTL is accepted");
    let ttl = store.ttl("forever").await.unwrap().expect("a TTL");
    assert!(
        ttl > Duration::from_secs(50 * 365 * 24 * 3600),
        "TTL is {ttl:?}"
    );
    store.delete("forever").await.unwrap();
}

#[tokio::test]
async fn keys_carry_the_prefix() {
    let (store, prefix) = store().await;
    store
        .put("flow:abc", b"v", Duration::from_secs(60))
        .await
        .unwrap();
    let mut raw = raw_connection().await;
    let raw_value: Option<Vec<u8>> = redis::cmd("GET")
        .arg(format!("{prefix}flow:abc"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(raw_value.as_deref(), Some(&b"v"[..]));

    // Another prefix is another namespace.
    let (other, _) = store_with_prefix(unique_prefix()).await;
    assert_eq!(other.get("flow:abc").await.unwrap(), None);
}

async fn store_with_prefix(prefix: String) -> (RedisStore, String) {
    let store = RedisStore::connect(&redis_url(), &prefix)
        .await
        .expect("connect to the test Redis");
    (store, prefix)
}

#[tokio::test]
async fn ttl_of_a_key_without_expiry_is_an_error() {
    let (store, prefix) = store().await;
    let mut raw = raw_connection().await;
    let key = format!("{prefix}no-expiry");
    // Written behind the adapter's back, without a TTL; cleaned up below.
    redis::cmd("SET")
        .arg(&key)
        .arg("v")
        .query_async::<()>(&mut raw)
        .await
        .unwrap();
    let result = store.ttl("no-expiry").await;
    redis::cmd("DEL")
        .arg(&key)
        .query_async::<()>(&mut raw)
        .await
        .unwrap();
    assert!(
        matches!(result, Err(StoreError::Corrupt(_))),
        "expected Corrupt, got {result:?}"
    );
}

#[tokio::test]
async fn incr_gives_a_counter_without_ttl_one() {
    let (store, prefix) = store().await;
    let mut raw = raw_connection().await;
    let key = format!("{prefix}legacy-counter");
    redis::cmd("SET")
        .arg(&key)
        .arg("7")
        .query_async::<()>(&mut raw)
        .await
        .unwrap();
    let n = store
        .incr("legacy-counter", Duration::from_secs(60))
        .await
        .unwrap();
    let ttl = store.ttl("legacy-counter").await;
    redis::cmd("DEL")
        .arg(&key)
        .query_async::<()>(&mut raw)
        .await
        .unwrap();
    assert_eq!(n, 8);
    let ttl = ttl.unwrap().expect("the counter now has a TTL");
    assert!(ttl <= Duration::from_secs(60) && ttl > Duration::from_secs(30));
}

#[tokio::test]
async fn incr_of_a_non_counter_is_corrupt() {
    let (store, _) = store().await;
    store
        .put("not-a-counter", b"hello", Duration::from_secs(60))
        .await
        .unwrap();
    let result = store.incr("not-a-counter", Duration::from_secs(60)).await;
    assert!(
        matches!(result, Err(StoreError::Corrupt(_))),
        "expected Corrupt, got {result:?}"
    );
    assert_eq!(
        store.get("not-a-counter").await.unwrap().as_deref(),
        Some(&b"hello"[..])
    );
}

#[tokio::test]
async fn ping_answers() {
    let (store, _) = store().await;
    store.ping().await.expect("PING");
}

#[tokio::test]
async fn connect_to_a_closed_port_fails_fast_with_unavailable() {
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        RedisStore::connect("redis://127.0.0.1:1", "idp-test:"),
    )
    .await
    .expect("connect gives up by itself");
    match result {
        Err(StoreError::Unavailable(message)) => {
            assert!(message.contains("redis://127.0.0.1:1"), "{message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn connect_errors_never_show_the_password() {
    let result = RedisStore::connect("redis://idp:hunter2-secret@127.0.0.1:1/0", "idp-test:").await;
    match result {
        Err(StoreError::Unavailable(message)) => {
            assert!(!message.contains("hunter2-secret"), "{message}");
            assert!(!message.contains("idp:"), "{message}");
            assert!(message.contains("redis://127.0.0.1:1/0"), "{message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// A server that accepts connections but never answers (a hung Redis, a
/// firewall half-open) must not hang start-up: `connect` gives up in ~3 s.
#[tokio::test]
async fn connect_to_a_silent_server_gives_up_within_the_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        RedisStore::connect(&format!("redis://{addr}"), "idp-test:"),
    )
    .await
    .expect("connect gives up by itself instead of hanging");
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "expected Unavailable, got {result:?}"
    );
}
