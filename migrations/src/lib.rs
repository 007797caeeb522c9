//! Database migrations of the identity provider, run by `idp migrate` and by
//! `idp_storage::SeaStorage::migrate` (sea-orm-migration).
//!
//! One module per migration, named `mYYYYMMDD_NNNNNN_what`, listed in order in
//! [`Migrator::migrations`]. A migration that has landed is never edited: a
//! schema change is a new migration. Every migration must run on both SQLite
//! and PostgreSQL, so they are written with sea-query builders and no
//! backend-specific SQL.

use sea_orm_migration::prelude::*;

mod m20261122_000001_initial;
mod m20261122_000002_login_methods;
mod m20261122_000003_accounts;
mod m20261122_000004_webhooks;
mod m20261203_000005_federation;
mod m20261207_000006_requested_claims;
mod m20261207_000007_grant_binding;
mod m20261208_000010_registered_clients;

/// Applies the migrations in order; `seaql_migrations` records which ran.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_initial::Migration),
            Box::new(m20261122_000002_login_methods::Migration),
            Box::new(m20261122_000003_accounts::Migration),
            Box::new(m20261122_000004_webhooks::Migration),
            Box::new(m20261203_000005_federation::Migration),
            Box::new(m20261207_000006_requested_claims::Migration),
            Box::new(m20261207_000007_grant_binding::Migration),
            Box::new(m20261208_000010_registered_clients::Migration),
        ]
    }
}
