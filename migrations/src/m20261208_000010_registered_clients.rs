//! Dynamic client registration (RFC 7591, RFC 7592):
//!
//! - `registered_clients`: one row per registered client. `metadata` is the
//!   client metadata as JSON; `secret_hash` (NULL for a public client) and
//!   `registration_token_hash` are `sha256:` hashes, never the values.
//!   Rows are never removed: a deletion sets `deleted_at`, and every write
//!   adds one to `revision`, so `(count, sum(revision))` changes with every
//!   write and nodes compare it to reload their cache.
//! - `initial_access_tokens`: hashes of the initial access tokens minted by
//!   `idp client initial-token`.
//! - An index on `token_families.client_id`: a deleted client's grants are
//!   revoked by client.
//!
//! New tables and an index: no existing row is rewritten. Each step is
//! skipped when done, so an interrupted run can be run again.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RegisteredClients::Table)
                    .if_not_exists()
                    .col(text(RegisteredClients::ClientId).primary_key())
                    .col(text(RegisteredClients::Metadata))
                    .col(text_null(RegisteredClients::SecretHash))
                    .col(text(RegisteredClients::RegistrationTokenHash))
                    .col(boolean(RegisteredClients::Enabled))
                    .col(big_integer(RegisteredClients::Revision))
                    .col(timestamp_with_time_zone(RegisteredClients::CreatedAt))
                    .col(timestamp_with_time_zone(RegisteredClients::UpdatedAt))
                    .col(timestamp_with_time_zone_null(RegisteredClients::DeletedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(InitialAccessTokens::Table)
                    .if_not_exists()
                    .col(text(InitialAccessTokens::TokenHash).primary_key())
                    .col(timestamp_with_time_zone(InitialAccessTokens::CreatedAt))
                    .col(timestamp_with_time_zone_null(
                        InitialAccessTokens::ExpiresAt,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(IDX_FAMILIES_CLIENT)
                    .if_not_exists()
                    .table(TokenFamilies::Table)
                    .col(TokenFamilies::ClientId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(IDX_FAMILIES_CLIENT)
                    .table(TokenFamilies::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        for table in [
            RegisteredClients::Table.into_iden(),
            InitialAccessTokens::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}

const IDX_FAMILIES_CLIENT: &str = "idx_token_families_client";

#[derive(DeriveIden)]
enum RegisteredClients {
    Table,
    ClientId,
    Metadata,
    SecretHash,
    RegistrationTokenHash,
    Enabled,
    Revision,
    CreatedAt,
    UpdatedAt,
    DeletedAt,
}

#[derive(DeriveIden)]
enum InitialAccessTokens {
    Table,
    TokenHash,
    CreatedAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum TokenFamilies {
    Table,
    ClientId,
}
