//! [`ChangeFeed`] over Redis publish/subscribe: the nodes sharing a Redis
//! (and key prefix) hear each other's changes (see `idp_core::changes`).
//!
//! Publishing is one `PUBLISH` on the store's connection. Each subscribed log
//! gets a task of its own, on a connection of its own (a subscribed
//! connection can do nothing else): it reports the log connected once
//! `SUBSCRIBE` is confirmed, hands every message to the log, pings the server
//! every [`PING_EVERY`] and reports the log disconnected as soon as the
//! connection ends or a ping goes unanswered for [`PING_TIMEOUT`] (a change
//! published meanwhile would not be heard), then connects again after
//! [`RETRY_AFTER`] (doubling, up to [`RETRY_AT_MOST`], while it keeps
//! failing). The tasks stop when the feed is dropped.

use async_trait::async_trait;
use futures_util::StreamExt as _;
use idp_core::changes::{Change, ChangeFeed, ChangeLog};
use idp_core::ephemeral::StoreError;
use redis::aio::ConnectionManager;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// How often the subscribed connection is checked with a PING.
const PING_EVERY: Duration = Duration::from_secs(1);
/// How long a PING (or connecting and subscribing) may take before the
/// connection is given up as lost.
const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// The wait before connecting again after a lost connection, doubled after
/// each failed attempt up to [`RETRY_AT_MOST`].
const RETRY_AFTER: Duration = Duration::from_millis(500);
const RETRY_AT_MOST: Duration = Duration::from_secs(10);

pub struct RedisChangeFeed {
    client: redis::Client,
    connection: ConnectionManager,
    channel: String,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for RedisChangeFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisChangeFeed")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisChangeFeed {
    fn drop(&mut self) {
        for task in self.tasks.get_mut().unwrap_or_else(|p| p.into_inner()) {
            task.abort();
        }
    }
}

impl RedisChangeFeed {
    pub(crate) fn new(
        client: redis::Client,
        connection: ConnectionManager,
        channel: String,
    ) -> Self {
        Self {
            client,
            connection,
            channel,
            tasks: Mutex::new(Vec::new()),
        }
    }
}

#[async_trait]
impl ChangeFeed for RedisChangeFeed {
    async fn publish(&self, changes: &[Change]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut c = self.connection.clone();
        redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(Change::encode_all(changes))
            .query_async::<i64>(&mut c)
            .await
            .map(drop)
            .map_err(|e| StoreError::Unavailable(format!("Redis PUBLISH: {e}")))
    }

    fn subscribe(&self, log: Arc<ChangeLog>) {
        let (client, channel) = (self.client.clone(), self.channel.clone());
        let task = tokio::spawn(async move {
            let mut wait = RETRY_AFTER;
            loop {
                let result = listen(&client, &channel, &log).await;
                // Connected for a while before it ended: retry soon again.
                if log.is_connected() {
                    wait = RETRY_AFTER;
                }
                log.disconnected();
                if let Err(e) = result {
                    tracing::warn!(
                        error = %e,
                        retry_in_ms = wait.as_millis() as u64,
                        "change feed: no subscription to Redis; token reads are not cached until it is back"
                    );
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RETRY_AT_MOST);
            }
        });
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
    }
}

/// One subscribed connection, for as long as it works.
async fn listen(client: &redis::Client, channel: &str, log: &ChangeLog) -> Result<(), String> {
    let subscribing = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    let pubsub = tokio::time::timeout(PING_TIMEOUT, subscribing)
        .await
        .map_err(|_| "no answer to SUBSCRIBE".to_owned())?
        .map_err(|e| e.to_string())?;
    // From here on every message published reaches this connection.
    log.connected();
    let (mut sink, mut messages) = pubsub.split();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else {
                    return Err("the subscribed connection closed".into());
                };
                match message.get_payload::<String>() {
                    Ok(text) => log.heard(&Change::decode_all(&text)),
                    // Something else on the channel: cannot tell what
                    // changed, so nothing kept is trusted any more.
                    Err(_) => log.connected(),
                }
            }
            _ = ping.tick() => {
                match tokio::time::timeout(PING_TIMEOUT, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(e.to_string()),
                    Err(_) => return Err("no answer to PING".into()),
                }
            }
        }
    }
}
