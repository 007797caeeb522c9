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
    ConnectOptions, Database, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryOrder,
    QuerySelect, RuntimeErr, Select, SqlErr,
};
use sea_orm_migration::MigratorTrait;
use std::time::Duration;
use time::{OffsetDateTime, UtcOffset};

pub mod entities;
mod repos;
pub mod testing;

/// Connections of a PostgreSQL pool: a node's requests are short, and several
/// nodes share the server's `max_connections`.
const POSTGRES_MAX_CONNECTIONS: u32 = 10;
/// Connections to a SQLite file (WAL: one writer at a time, readers alongside).
const SQLITE_FILE_MAX_CONNECTIONS: u32 = 4;

/// The storage adapter: one connection pool, implementing every repository
/// port. Cheap to clone (the pool is shared).
#[derive(Clone, Debug)]
pub struct SeaStorage {
    db: DatabaseConnection,
}

impl SeaStorage {
    /// Connects to `url`: `sqlite://path/to/idp.db?mode=rwc`, `sqlite::memory:`,
    /// or `postgres://user@host:port/db`.
    ///
    /// SQLite gets foreign keys on; a file database gets WAL with
    /// `synchronous = NORMAL` and a small pool; an in-memory database gets a
    /// single connection that is never closed, since every connection would
    /// otherwise see its own database and the database lives only as long as
    /// one connection does. PostgreSQL gets a pool of at most
    /// 10 connections.
    pub async fn connect(url: &str) -> Result<SeaStorage, RepoError> {
        let mut opts = ConnectOptions::new(url.to_owned());
        opts.sqlx_logging(false)
            .connect_timeout(Duration::from_secs(5))
            .acquire_timeout(Duration::from_secs(10));
        if url.starts_with("sqlite:") {
            let in_memory = is_sqlite_memory(url);
            opts.map_sqlx_sqlite_opts(move |o| {
                use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
                // sqlx's default too; said here because the schema's
                // ON DELETE CASCADE depends on it.
                let o = o.foreign_keys(true);
                if in_memory {
                    o
                } else {
                    o.journal_mode(SqliteJournalMode::Wal)
                        .synchronous(SqliteSynchronous::Normal)
                }
            });
            if in_memory {
                opts.max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None);
            } else {
                opts.max_connections(SQLITE_FILE_MAX_CONNECTIONS);
            }
        } else {
            opts.max_connections(POSTGRES_MAX_CONNECTIONS);
        }
        let db = Database::connect(opts)
            .await
            .map_err(|e| RepoError::Unavailable(format!("connecting to the database: {e}")))?;
        Ok(SeaStorage { db })
    }

    /// Applies the pending migrations of [`idp_migrations::Migrator`];
    /// running it again does nothing.
    pub async fn migrate(&self) -> Result<(), RepoError> {
        idp_migrations::Migrator::up(&self.db, None)
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
