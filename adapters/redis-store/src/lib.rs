//! Short-lived state on Redis: the [`EphemeralStore`] of a cluster of stateless
//! nodes (login flows, SSO sessions, authorization codes, rate-limit counters).
//!
//! Each operation is one Redis command or one Lua script, so it is atomic on the
//! server: `take` is `GETDEL` (single use), `put_new` is `SET NX`, `replace_if`
//! and `incr` are scripts (compare-and-swap; count and start the window). Every
//! key carries a TTL in milliseconds and is prefixed with the configured
//! `key_prefix` so several deployments or tests can share one server.
//!
//! Connection handling is the `redis` crate's [`ConnectionManager`]: one
//! multiplexed connection, cloned per call, reconnected in the background after
//! an I/O error. Calls fail fast with [`StoreError::Unavailable`] rather than
//! queueing while Redis is down.

mod changes;

pub use changes::RedisChangeFeed;

use async_trait::async_trait;
use idp_core::ephemeral::{EphemeralStore, StoreError};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, Script, ServerErrorKind};
use std::time::Duration;

/// How long `connect` may take, PING included, before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one command may wait for its reply.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Reconnection attempts after a connection is lost (then calls fail fast).
const RECONNECT_RETRIES: usize = 1;

/// Swaps the value only if it is still byte-for-byte the expected one.
/// KEYS[1] = key; ARGV = expected, new value, TTL in ms. Lua strings are
/// binary-safe, and `GET` of a missing key gives `false`, which equals nothing.
const REPLACE_IF_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
";

/// Counts in a fixed window. KEYS[1] = key; ARGV[1] = window in ms.
/// The TTL is set in the same script as the INCR, so no crash can leave a
/// counter without one; a counter found without a TTL (PTTL -1) gets one too,
/// while an existing TTL is never extended.
const INCR_LUA: &str = r"
local n = redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return n
";

/// Takes one back from a live counter above zero: never creates a key (a
/// DECR on a missing key would make one without a TTL), never goes below 0.
const DECR_LUA: &str = r"
local v = redis.call('GET', KEYS[1])
if v and tonumber(v) > 0 then
  return redis.call('DECR', KEYS[1])
end
return 0
";

/// [`EphemeralStore`] over Redis. Cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    client: redis::Client,
    connection: ConnectionManager,
    key_prefix: String,
    replace_if_script: Script,
    incr_script: Script,
    decr_script: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to `url` (`redis://[user:password@]host:port[/db]`) and checks
    /// the server with PING. Fails with [`StoreError::Unavailable`] within about
    /// three seconds when Redis cannot be reached; the message names the URL
    /// without its credentials.
    pub async fn connect(url: &str, key_prefix: &str) -> Result<RedisStore, StoreError> {
        let shown = redact_url(url);
        let fail = |reason: String| {
            StoreError::Unavailable(scrub_secret(url, format!("{shown}: {reason}")))
        };

        let client = redis::Client::open(url).map_err(|e| fail(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(RECONNECT_RETRIES);
        let connecting = async {
            let connection = ConnectionManager::new_with_config(client.clone(), config).await?;
            let mut ping = connection.clone();
            redis::cmd("PING").query_async::<String>(&mut ping).await?;
            Ok::<_, RedisError>(connection)
        };
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| fail(format!("no answer within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| fail(e.to_string()))?;

        tracing::info!(url = %shown, key_prefix, "connected to Redis");
        Ok(RedisStore {
            client,
            connection,
            key_prefix: key_prefix.to_owned(),
            replace_if_script: Script::new(REPLACE_IF_LUA),
            incr_script: Script::new(INCR_LUA),
            decr_script: Script::new(DECR_LUA),
        })
    }

    /// Checks that Redis answers (for readiness probes).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.connection.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .map(drop)
            .map_err(|e| map_err("PING", e))
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.key_prefix)
    }

    /// The change feed of the nodes sharing this Redis and key prefix
    /// (publish/subscribe on the channel `<key_prefix>changes`).
    pub fn change_feed(&self) -> RedisChangeFeed {
        RedisChangeFeed::new(
            self.client.clone(),
            self.connection.clone(),
            self.key("changes"),
        )
    }
}

/// The longest TTL sent to Redis, about a hundred years: Redis rejects expiry
/// times that overflow its clock, and anything this long means "forever".
const MAX_TTL_MS: u64 = 100 * 365 * 24 * 60 * 60 * 1000;

/// A TTL as Redis milliseconds: at least 1 (PX 0 is an error, and a sub-
/// millisecond TTL would truncate to it), at most [`MAX_TTL_MS`].
fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_TTL_MS)
}

/// Sorts a Redis error into the two kinds the core knows: a value that is not
/// what the operation expects is `Corrupt`; everything else (I/O, timeouts,
/// authentication, permissions, a loading or read-only server) is `Unavailable`.
fn map_err(op: &str, e: RedisError) -> StoreError {
    let wrong_value = match e.kind() {
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => true,
        ErrorKind::Extension => e.code() == Some("WRONGTYPE"),
        ErrorKind::Server(ServerErrorKind::ResponseError) => {
            e.detail().is_some_and(|d| d.contains("not an integer"))
        }
        _ => false,
    };
    let message = format!("Redis {op}: {e}");
    if wrong_value {
        StoreError::Corrupt(message)
    } else {
        StoreError::Unavailable(message)
    }
}

/// The URL for messages and logs: scheme, host, port and path, without the
/// userinfo (`user:password@`) or the query (which may carry `pass=`).
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<invalid Redis URL>".to_owned();
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}{path}")
}

/// Removes the URL's password from `message` in case an error quoted it.
fn scrub_secret(url: &str, message: String) -> String {
    let Some((_, rest)) = url.split_once("://") else {
        return message;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return message;
    };
    let password = userinfo.split_once(':').map_or(userinfo, |(_, p)| p);
    if password.is_empty() {
        message
    } else {
        message.replace(password, "***")
    }
}

#[async_trait]
impl EphemeralStore for RedisStore {
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let mut c = self.connection.clone();
        redis::cmd("SET")
            .arg(self.key(key))
            .arg(value)
            .arg("PX")
            .arg(millis(ttl))
            .query_async::<()>(&mut c)
            .await
            .map_err(|e| map_err("SET", e))
    }

    async fn put_new(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, StoreError> {
        let mut c = self.connection.clone();
        // "OK" when set, nil when the key already exists.
        let reply: Option<String> = redis::cmd("SET")
            .arg(self.key(key))
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl))
            .query_async(&mut c)
            .await
            .map_err(|e| map_err("SET NX", e))?;
        Ok(reply.is_some())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut c = self.connection.clone();
        redis::cmd("GET")
            .arg(self.key(key))
            .query_async(&mut c)
            .await
            .map_err(|e| map_err("GET", e))
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.connection.clone();
        let mut mget = redis::cmd("MGET");
        for key in keys {
            mget.arg(self.key(key));
        }
        mget.query_async(&mut c)
            .await
            .map_err(|e| map_err("MGET", e))
    }

    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut c = self.connection.clone();
        redis::cmd("GETDEL")
            .arg(self.key(key))
            .query_async(&mut c)
            .await
            .map_err(|e| map_err("GETDEL", e))
    }

    async fn replace_if(
        &self,
        key: &str,
        expected: &[u8],
        new: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut c = self.connection.clone();
        let replaced: i64 = self
            .replace_if_script
            .key(self.key(key))
            .arg(expected)
            .arg(new)
            .arg(millis(ttl))
            .invoke_async(&mut c)
            .await
            .map_err(|e| map_err("replace_if script", e))?;
        Ok(replaced == 1)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let mut c = self.connection.clone();
        redis::cmd("DEL")
            .arg(self.key(key))
            .query_async::<()>(&mut c)
            .await
            .map_err(|e| map_err("DEL", e))
    }

    async fn incr(&self, key: &str, ttl: Duration) -> Result<u64, StoreError> {
        let mut c = self.connection.clone();
        let n: i64 = self
            .incr_script
            .key(self.key(key))
            .arg(millis(ttl))
            .invoke_async(&mut c)
            .await
            .map_err(|e| map_err("incr script", e))?;
        u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("counter went negative: {n}")))
    }

    async fn decr(&self, key: &str) -> Result<u64, StoreError> {
        let mut c = self.connection.clone();
        let n: i64 = self
            .decr_script
            .key(self.key(key))
            .invoke_async(&mut c)
            .await
            .map_err(|e| map_err("decr script", e))?;
        u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("counter went negative: {n}")))
    }

    /// PTTL: -2 (no such key) is `None`. -1 (a key without expiry) is an error:
    /// every key this store writes has a TTL, so such a key was written by
    /// someone else or by a bug, and answering `None` ("absent") would
    /// contradict `get`, while inventing a TTL would hide the problem.
    async fn ttl(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        let mut c = self.connection.clone();
        let ms: i64 = redis::cmd("PTTL")
            .arg(self.key(key))
            .query_async(&mut c)
            .await
            .map_err(|e| map_err("PTTL", e))?;
        match ms {
            -2 => Ok(None),
            -1 => Err(StoreError::Corrupt(
                "a short-lived key has no TTL (written outside this store?)".to_owned(),
            )),
            ms => u64::try_from(ms)
                .map(|ms| Some(Duration::from_millis(ms)))
                .map_err(|_| StoreError::Corrupt(format!("Redis PTTL answered {ms}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_drops_credentials_and_query() {
        assert_eq!(
            redact_url("redis://user:s3cret@cache.internal:6380/2?pass=x"),
            "redis://cache.internal:6380/2"
        );
        assert_eq!(redact_url("rediss://:p@ss@host"), "rediss://host");
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(redact_url("not a url"), "<invalid Redis URL>");
    }

    #[test]
    fn scrub_secret_removes_the_password() {
        assert_eq!(
            scrub_secret("redis://u:s3cret@h", "auth s3cret failed".to_owned()),
            "auth *** failed"
        );
        assert_eq!(
            scrub_secret("redis://h", "plain".to_owned()),
            "plain".to_owned()
        );
    }

    #[test]
    fn millis_rounds_up_and_saturates() {
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(millis(Duration::from_micros(10)), 1);
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::MAX), MAX_TTL_MS);
    }
}
