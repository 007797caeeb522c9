//! Test support: fresh, migrated databases for the storage tests and the
//! server's test harness. Always compiled (it is small) so other crates' tests
//! can use it without a feature flag.
//!
//! PostgreSQL is required, never optional: when it is unreachable
//! [`fresh_postgres`] panics, so a missing server fails the tests instead of
//! skipping them.

use crate::SeaStorage;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};
use std::time::Duration;
use url::Url;
use uuid::Uuid;

/// Environment variable holding the admin URL of the test PostgreSQL server.
pub const POSTGRES_URL_ENV: &str = "IDP_TEST_POSTGRES_URL";
/// Admin URL used when [`POSTGRES_URL_ENV`] is unset.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A new, empty SQLite database in memory, migrated.
pub async fn fresh_sqlite() -> SeaStorage {
    let storage = SeaStorage::connect("sqlite::memory:")
        .await
        .expect("opening an in-memory SQLite database");
    storage
        .migrate()
        .await
        .expect("migrating an in-memory SQLite database");
    storage
}

/// Creates a new, empty PostgreSQL database `idp_t_<uuid>` on the server of
/// [`POSTGRES_URL_ENV`] (default [`DEFAULT_POSTGRES_URL`]). It is not migrated:
/// connect with [`SeaStorage::connect`]`(db.url())` and call
/// [`SeaStorage::migrate`].
///
/// # Panics
/// When the server is unreachable or refuses to create the database.
pub async fn fresh_postgres() -> TestDatabase {
    let admin_url = std::env::var(POSTGRES_URL_ENV).unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into());
    fresh_postgres_at(&admin_url).await
}

/// [`fresh_postgres`] on the server of `admin_url` (a URL whose user may
/// create databases).
///
/// # Panics
/// When the server is unreachable or refuses to create the database.
pub async fn fresh_postgres_at(admin_url: &str) -> TestDatabase {
    let admin_url = admin_url.to_owned();
    let mut url = Url::parse(&admin_url)
        .unwrap_or_else(|e| panic!("{POSTGRES_URL_ENV} is not a URL ({e}): {admin_url:?}"));
    let shown = redacted(&url);
    let admin = admin_connection(&admin_url).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL for the tests is unreachable at {shown}: {e}. \
             Start it, or point {POSTGRES_URL_ENV} at one."
        )
    });
    let name = format!("idp_t_{}", Uuid::new_v4().simple());
    admin
        .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap_or_else(|e| panic!("creating test database {name} on {shown}: {e}"));
    let _ = admin.close().await;
    url.set_path(&format!("/{name}"));
    TestDatabase {
        admin_url,
        name,
        url: url.into(),
        dropped: false,
    }
}

/// A PostgreSQL database created for one test.
///
/// Clean up with [`TestDatabase::drop_database`]. If the value is dropped
/// instead (a test panicked), `Drop` starts a detached thread that drops the
/// database and does not wait for it: `Drop` never blocks the test's runtime,
/// but the process may exit before the thread finishes, leaving an `idp_t_*`
/// database behind. Such leftovers are harmless and can be removed with
/// `DROP DATABASE`.
#[derive(Debug)]
pub struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
    dropped: bool,
}

impl TestDatabase {
    /// URL of the new database, for [`SeaStorage::connect`].
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Name of the new database (`idp_t_<uuid>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the database, closing the connections still open to it
    /// (`WITH (FORCE)`). Failing to is reported on stderr, not raised: the
    /// test has already passed or failed by then.
    pub async fn drop_database(mut self) {
        self.dropped = true;
        if let Err(e) = drop_database(&self.admin_url, &self.name).await {
            eprintln!("warning: could not drop test database {}: {e}", self.name);
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("drop-{name}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        eprintln!("warning: could not drop test database {name}: {e}");
                        return;
                    }
                };
                if let Err(e) = rt.block_on(drop_database(&admin_url, &name)) {
                    eprintln!("warning: could not drop test database {name}: {e}");
                }
            });
        if let Err(e) = spawned {
            eprintln!("warning: could not drop test database {}: {e}", self.name);
        }
    }
}

async fn admin_connection(admin_url: &str) -> Result<DatabaseConnection, sea_orm::DbErr> {
    let mut opts = ConnectOptions::new(admin_url.to_owned());
    opts.max_connections(1)
        .connect_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    Database::connect(opts).await
}

async fn drop_database(admin_url: &str, name: &str) -> Result<(), sea_orm::DbErr> {
    let admin = admin_connection(admin_url).await?;
    let res = admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await;
    let _ = admin.close().await;
    res.map(|_| ())
}

/// The URL without its password, for messages.
fn redacted(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    shown.to_string()
}
