//! idp-storage: durable storage of the identity provider on sea-orm, over SQLite
//! (the embedded default) or PostgreSQL.
//!
//! [`SeaStorage`] implements every repository port of `idp_core::ports`; the
//! schema is owned by `idp_migrations` and applied with [`SeaStorage::migrate`].
//! The entities in [`entities`] mirror that schema and convert to and from the
//! domain types.
//!
//! Two facts hold on both backends because this adapter makes them so:
//! - **Timestamps are stored in UTC with microsecond precision** (PostgreSQL's
//!   precision); a value read back equals the value written truncated to
//!   microseconds. See [`stored_time`].
//! - **Ordering by time is exact.** SQLite keeps `timestamp with time zone` as
//!   RFC 3339 text whose fraction has a variable length (`…:05Z` and
//!   `…:05.5Z`), which does not sort as text; on SQLite queries order by a key
//!   that does (`SeaStorage::time_order`). A new query that compares or
//!   orders timestamp columns in SQL must go through such a key too.

use idp_core::ports::RepoError;
use sea_orm::sea_query::{Expr, Func, IntoColumnRef, Order};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    QueryOrder, QuerySelect, RuntimeErr, Select, SqlErr,
};
use sea_orm_migration::MigratorTrait;
use std::time::Duration;
use time::{OffsetDateTime, UtcOffset};

pub mod entities;
mod grant_writes;
mod repos;
pub mod testing;

/// Connections of a PostgreSQL pool: a node's requests are short, and several
/// nodes share the server's `max_connections`.
const POSTGRES_MAX_CONNECTIONS: u32 = 10;
/// Workers writing the token endpoint's grants on PostgreSQL, each a
/// transaction at a time (see [`grant_writes`]); the rest of the pool serves
/// everything else.
const POSTGRES_GRANT_WRITERS: usize = 3;
/// Reading connections to a SQLite file (WAL: readers never wait for the
/// writer nor for each other).
const SQLITE_FILE_READERS: u32 = 4;

/// How often the WAL of a SQLite file is checkpointed, by a background task
/// (see [`SeaStorage`]).
const SQLITE_CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// The WAL size (pages) at which the writer checkpoints on its own, only as
/// a safety net should the background task fall behind (SQLite's default is
/// 1000 pages; the task keeps the WAL well under this).
const SQLITE_WRITER_AUTOCHECKPOINT_PAGES: u32 = 16_000;
/// A pooled PostgreSQL connection idle for this long is pinged before use
/// (one idle that long may have been dropped by the server or a proxy);
/// busy ones are not, which saves a round trip per query.
const POSTGRES_PING_IF_IDLE_FOR: Duration = Duration::from_secs(30);

/// The storage adapter, implementing every repository port. Cheap to clone
/// (the pools are shared).
///
/// Reads go to `db`, writes to `writer`. On PostgreSQL and on an in-memory
/// SQLite database they are the same pool. On a SQLite file the writer is a
/// pool of its own with one connection: SQLite lets one connection write at
/// a time, and a second writer does not queue but fails with `SQLITE_BUSY`
/// and retries after sleeping (1, 2, 5, 10 ... 100 ms), which gave the
/// token endpoint's exchanges a p99 of 30 to 40 ms with four pooled writers.
/// With one writing connection, writes wait their turn in the pool's queue
/// instead. The reading connections are `query_only`, so a write sent to
/// them by mistake fails at once rather than bringing the sleeps back.
///
/// The WAL of a SQLite file is checkpointed (copied into the database file,
/// which is then synced) by a background task on a connection of its own,
/// every [`SQLITE_CHECKPOINT_EVERY`]: by default SQLite makes the commit that
/// fills 1000 pages of WAL run the checkpoint, so every few hundred token
/// exchanges one of them, and every write queued behind it, waited for a copy
/// and an fsync. A passive checkpoint does not block the writer.
#[derive(Clone, Debug)]
pub struct SeaStorage {
    db: DatabaseConnection,
    writer: DatabaseConnection,
    /// SQL of the hottest lookups, built once (see [`PrebuiltSql`]).
    sql: std::sync::Arc<PrebuiltSql>,
    /// The token endpoint's grant writes, grouped into transactions (see
    /// [`grant_writes`]).
    grants: grant_writes::GrantWriter,
    /// The SQLite checkpoint task, stopped with the last clone.
    _checkpoints: Option<std::sync::Arc<CheckpointTask>>,
}

/// The SQL text of the lookups every token request makes, built by
/// sea-query on first use and kept: only their bound values change from one
/// call to the next, and building a `SELECT` of a whole entity (its column
/// list, conditions, quoting) was about a sixth of an introspection's
/// instructions (callgrind). Each is built from the same sea-orm query as
/// before, with every bound value a lookup key given at the call.
#[derive(Debug, Default)]
pub(crate) struct PrebuiltSql {
    pub(crate) user_by_id: std::sync::OnceLock<String>,
    pub(crate) user_of_unrevoked_family: std::sync::OnceLock<String>,
    pub(crate) user_and_organizations_of_unrevoked_family: std::sync::OnceLock<String>,
    pub(crate) user_and_organizations: std::sync::OnceLock<String>,
    pub(crate) refresh_token_grant: std::sync::OnceLock<String>,
}

impl SeaStorage {
    /// The statement of `query` with `values` bound: its SQL built once into
    /// `slot` (by `query`, whose own values are only samples), then reused.
    pub(crate) fn prebuilt<const N: usize>(
        &self,
        slot: &std::sync::OnceLock<String>,
        query: impl FnOnce() -> sea_orm::Statement,
        values: [sea_orm::Value; N],
    ) -> sea_orm::Statement {
        let sql = slot.get_or_init(|| {
            let built = query();
            let bound = built.values.as_ref().map_or(0, |v| v.0.len());
            // Every bound value must be one of the call's: a constant bound by
            // the query itself would be lost.
            assert_eq!(bound, N, "a prebuilt query binds only its lookup keys");
            built.sql
        });
        sea_orm::Statement::from_sql_and_values(self.backend(), sql.clone(), values)
    }
}

/// Aborts the background checkpoint task when dropped.
#[derive(Debug)]
struct CheckpointTask(tokio::task::JoinHandle<()>);

impl Drop for CheckpointTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl SeaStorage {
    /// Connects to `url`: `sqlite://path/to/idp.db?mode=rwc`, `sqlite::memory:`,
    /// or `postgres://user@host:port/db`.
    ///
    /// SQLite gets foreign keys on; a file database gets WAL with
    /// `synchronous = NORMAL`, one writing connection and a few reading ones;
    /// an in-memory database gets a single connection that is never closed,
    /// since every connection would otherwise see its own database and the
    /// database lives only as long as one connection does. PostgreSQL gets a
    /// pool of at most 10 connections.
    pub async fn connect(url: &str) -> Result<SeaStorage, RepoError> {
        let open = |opts: ConnectOptions| async move {
            Database::connect(opts)
                .await
                .map_err(|e| RepoError::Unavailable(format!("connecting to the database: {e}")))
        };
        if !url.starts_with("sqlite:") {
            let mut opts = base_options(url);
            opts.max_connections(POSTGRES_MAX_CONNECTIONS)
                .test_before_acquire_if_idle_for(POSTGRES_PING_IF_IDLE_FOR);
            let db = open(opts).await?;
            return Ok(SeaStorage {
                writer: db.clone(),
                grants: grant_writes::GrantWriter::start(db.clone(), POSTGRES_GRANT_WRITERS),
                db,
                sql: Default::default(),
                _checkpoints: None,
            });
        }
        if is_sqlite_memory(url) {
            let mut opts = base_options(url);
            opts.map_sqlx_sqlite_opts(|o| o.foreign_keys(true))
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .test_before_acquire(false);
            let db = open(opts).await?;
            return Ok(SeaStorage {
                writer: db.clone(),
                grants: grant_writes::GrantWriter::start(db.clone(), 1),
                db,
                sql: Default::default(),
                _checkpoints: None,
            });
        }
        #[derive(Clone, Copy, PartialEq)]
        enum Role {
            Writer,
            Reader,
            Checkpointer,
        }
        let file = |role: Role| {
            let mut opts = base_options(url);
            // An in-process connection cannot go stale: no ping per checkout.
            opts.test_before_acquire(false);
            opts.map_sqlx_sqlite_opts(move |o| {
                use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
                // sqlx's default too; said here because the schema's
                // ON DELETE CASCADE depends on it.
                let o = o
                    .foreign_keys(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal);
                match role {
                    Role::Writer => o.pragma(
                        "wal_autocheckpoint",
                        SQLITE_WRITER_AUTOCHECKPOINT_PAGES.to_string(),
                    ),
                    Role::Reader => o.pragma("query_only", "ON"),
                    Role::Checkpointer => o,
                }
            });
            opts
        };
        // The writer first: it creates the file and switches it to WAL,
        // which a query-only connection could not do.
        let mut writer = file(Role::Writer);
        writer.max_connections(1);
        let writer = open(writer).await?;
        let mut readers = file(Role::Reader);
        readers.max_connections(SQLITE_FILE_READERS);
        let db = open(readers).await?;
        let mut checkpointer = file(Role::Checkpointer);
        checkpointer.max_connections(1);
        let checkpointer = open(checkpointer).await?;
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(SQLITE_CHECKPOINT_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = checkpointer
                    .execute_unprepared("PRAGMA wal_checkpoint(PASSIVE)")
                    .await
                {
                    tracing::warn!(error = %e, "SQLite WAL checkpoint failed");
                }
            }
        });
        Ok(SeaStorage {
            db,
            grants: grant_writes::GrantWriter::start(writer.clone(), 1),
            writer,
            sql: Default::default(),
            _checkpoints: Some(std::sync::Arc::new(CheckpointTask(task))),
        })
    }

    /// Applies the pending migrations of [`idp_migrations::Migrator`];
    /// running it again does nothing.
    pub async fn migrate(&self) -> Result<(), RepoError> {
        idp_migrations::Migrator::up(&self.writer, None)
            .await
            .map_err(|e| RepoError::Unavailable(format!("migrating the database: {e}")))
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), RepoError> {
        self.db.ping().await.map_err(db_err)
    }

    /// The backend this storage runs on.
    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// An expression that sorts the timestamp column `col` chronologically on
    /// this backend. On SQLite the stored text is `YYYY-MM-DDTHH:MM:SS[.f]Z`
    /// (always UTC, see [`stored_time`]); trimming the `Z` gives text that sorts
    /// as the instants do, since a shorter fraction is then a prefix.
    pub(crate) fn time_order(&self, col: impl IntoColumnRef) -> Expr {
        match self.backend() {
            DbBackend::Sqlite => Func::cust("rtrim").arg(Expr::col(col)).arg("Z").into(),
            _ => Expr::col(col),
        }
    }

    /// One page (`limit` rows after `offset`) of `query`'s rows, oldest
    /// first by the timestamp column `created` (ties by `id`), as `T`.
    pub(crate) async fn oldest_first_page<E, T>(
        &self,
        query: Select<E>,
        created: E::Column,
        id: E::Column,
        limit: u64,
        offset: u64,
    ) -> Result<Vec<T>, RepoError>
    where
        E: EntityTrait,
        T: TryFrom<E::Model, Error = RepoError>,
    {
        query
            .order_by(self.time_order((E::default(), created)), Order::Asc)
            .order_by_asc(id)
            .limit(limit)
            .offset(offset)
            .all(&self.db)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(T::try_from)
            .collect()
    }
}

/// The row of a query that matches at most one row by construction (a
/// primary key or a unique column), or `None`.
///
/// Not `Select::one`: it binds `LIMIT 1` as a parameter, and SQLite (3.46
/// and later) lets the value of a bound `LIMIT` steer the query plan, so it
/// marks the statement to be compiled again whenever that parameter is bound,
/// that is on every execution: every `one()` on SQLite parsed and planned its
/// statement anew instead of reusing the cached one (14% of the CPU time of
/// an introspection request, measured with perf). Without a `LIMIT` the
/// cached statement is reused. A second row would break the uniqueness this
/// relies on, and is reported as corrupt data.
pub(crate) async fn unique_row<E, C>(
    query: Select<E>,
    db: &C,
) -> Result<Option<E::Model>, RepoError>
where
    E: EntityTrait,
    C: ConnectionTrait,
{
    at_most_one(query.all(db).await.map_err(db_err)?)
}

/// The only row of `rows`, or `None`; more than one is corrupt data (see
/// [`unique_row`]).
pub(crate) fn at_most_one<T>(mut rows: Vec<T>) -> Result<Option<T>, RepoError> {
    if rows.len() > 1 {
        return Err(RepoError::Corrupt(format!(
            "{} rows where at most one was expected",
            rows.len()
        )));
    }
    Ok(rows.pop())
}

/// Options every pool shares.
fn base_options(url: &str) -> ConnectOptions {
    let mut opts = ConnectOptions::new(url.to_owned());
    opts.sqlx_logging(false)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(10));
    opts
}

fn is_sqlite_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

/// How a timestamp is stored: in UTC, truncated to microseconds, so that both
/// backends give back the same value and SQLite's text sorts (see
/// `SeaStorage::time_order`).
pub fn stored_time(t: OffsetDateTime) -> OffsetDateTime {
    let t = t.to_offset(UtcOffset::UTC);
    t.replace_nanosecond(t.nanosecond() / 1_000 * 1_000)
        .expect("a truncated nanosecond is in range")
}

/// Maps a sea-orm error to the port's error: constraint violations are
/// conflicts, undecodable values are corruption, the rest is the database
/// being unavailable.
pub(crate) fn db_err(e: DbErr) -> RepoError {
    match e.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(m)) => RepoError::Conflict(m),
        // The row referred to is gone (e.g. the user was deleted meanwhile).
        Some(SqlErr::ForeignKeyConstraintViolation(m)) => RepoError::Conflict(m),
        _ => match &e {
            DbErr::Type(_) | DbErr::TryIntoErr { .. } | DbErr::Json(_) => {
                RepoError::Corrupt(e.to_string())
            }
            DbErr::Query(RuntimeErr::SqlxError(inner))
            | DbErr::Exec(RuntimeErr::SqlxError(inner))
                if matches!(
                    **inner,
                    sea_orm::sqlx::Error::ColumnDecode { .. } | sea_orm::sqlx::Error::Decode(_)
                ) =>
            {
                RepoError::Corrupt(e.to_string())
            }
            _ => RepoError::Unavailable(e.to_string()),
        },
    }
}
