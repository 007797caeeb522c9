//! Federation: `federated_identities` links an upstream provider's identity
//! (`upstream` = its configured name, `subject` = its `sub`) to a local
//! account.
//!
//! - Unique `(upstream, subject)`: an upstream identity signs in to one
//!   account only.
//! - Unique `(user_id, upstream)`: an account has at most one identity per
//!   upstream (unlink before linking another).
//! - Deleting the user deletes its links (cascade).
//!
//! Every step is skipped when already done, so an interrupted run can be run
//! again.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(FederatedIdentities::Table)
                    .if_not_exists()
                    .col(pk_uuid(FederatedIdentities::Id))
                    .col(uuid(FederatedIdentities::UserId))
                    .col(text(FederatedIdentities::Upstream))
                    .col(text(FederatedIdentities::Subject))
                    .col(text_null(FederatedIdentities::Email))
                    .col(timestamp_with_time_zone(FederatedIdentities::CreatedAt))
                    .col(timestamp_with_time_zone_null(
                        FederatedIdentities::LastUsedAt,
                    ))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_federated_identities_user")
                            .from(FederatedIdentities::Table, FederatedIdentities::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(IDX_SUBJECT)
                    .if_not_exists()
                    .unique()
                    .table(FederatedIdentities::Table)
                    .col(FederatedIdentities::Upstream)
                    .col(FederatedIdentities::Subject)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(IDX_USER)
                    .if_not_exists()
                    .unique()
                    .table(FederatedIdentities::Table)
                    .col(FederatedIdentities::UserId)
                    .col(FederatedIdentities::Upstream)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(FederatedIdentities::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}

const IDX_SUBJECT: &str = "idx_federated_identities_subject";
const IDX_USER: &str = "idx_federated_identities_user";

#[derive(DeriveIden)]
enum FederatedIdentities {
    Table,
    Id,
    UserId,
    Upstream,
    Subject,
    Email,
    CreatedAt,
    LastUsedAt,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}
