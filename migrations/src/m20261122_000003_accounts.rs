//! Accounts and organizations.
//!
//! - `users` gains a backup email (account notices only, never a login
//!   identifier). Existing rows get none.
//! - `audit_events` gains the organization an event concerns, so that its
//!   administrators can list them (index `(org_id, at)`). Existing events
//!   concern none.
//! - `organizations`: customer companies, with their validation status and
//!   security settings (enforced MFA kinds and password policy, as JSON text).
//!   A SIRET is unique among the organizations that are not rejected (partial
//!   unique index `uq_organizations_siret`): a rejected registration does not
//!   keep the company from registering again.
//! - `memberships`: which user belongs to which organization, with their roles
//!   (JSON array of role names). An organization's memberships go with it, a
//!   user's with the user; an organization keeps its creator (a user who
//!   created one cannot be deleted while it exists).
//!
//! As in `m20261122_000002_login_methods`, each added column is its own
//! statement and every step is skipped when already done, so a run interrupted
//! half-way can simply be run again.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        add_column(
            manager,
            Users::Table,
            Users::BackupEmail,
            text_null(Users::BackupEmail),
        )
        .await?;
        // No foreign key, like `user_id`: events outlive what they are about.
        add_column(
            manager,
            AuditEvents::Table,
            AuditEvents::OrgId,
            uuid_null(AuditEvents::OrgId),
        )
        .await?;
        // An organization's recent events, newest first.
        manager
            .create_index(
                Index::create()
                    .name(IDX_AUDIT_EVENTS_ORG_AT)
                    .if_not_exists()
                    .table(AuditEvents::Table)
                    .col(AuditEvents::OrgId)
                    .col(AuditEvents::At)
                    .to_owned(),
            )
            .await?;
        create_organizations(manager).await?;
        create_memberships(manager).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Children before parents.
        for table in [
            Memberships::Table.into_iden(),
            Organizations::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        // SQLite refuses to drop an indexed column: the index goes first.
        manager
            .drop_index(
                Index::drop()
                    .name(IDX_AUDIT_EVENTS_ORG_AT)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        drop_column(manager, AuditEvents::Table, AuditEvents::OrgId).await?;
        drop_column(manager, Users::Table, Users::BackupEmail).await
    }
}

const IDX_AUDIT_EVENTS_ORG_AT: &str = "idx_audit_events_org_at";

#[derive(DeriveIden, Clone, Copy)]
enum Users {
    Table,
    Id,
    BackupEmail,
}

#[derive(DeriveIden, Clone, Copy)]
enum AuditEvents {
    Table,
    OrgId,
    At,
}

#[derive(DeriveIden)]
enum Organizations {
    Table,
    Id,
    Name,
    Siret,
    Country,
    Status,
    CreatedBy,
    CreatedAt,
    DecidedAt,
    MfaRequiredFor,
    PasswordPolicy,
}

#[derive(DeriveIden)]
enum Memberships {
    Table,
    OrgId,
    UserId,
    Roles,
    CreatedAt,
}

/// Adds `column` to `table` unless it is there already.
async fn add_column<T, C>(
    manager: &SchemaManager<'_>,
    table: T,
    name: C,
    column: ColumnDef,
) -> Result<(), DbErr>
where
    T: Iden + Copy + 'static,
    C: Iden + Copy + 'static,
{
    if manager
        .has_column(table.unquoted(), name.unquoted())
        .await?
    {
        return Ok(());
    }
    manager
        .alter_table(Table::alter().table(table).add_column(column).to_owned())
        .await
}

/// Drops `column` of `table` if it is there.
async fn drop_column<T, C>(manager: &SchemaManager<'_>, table: T, name: C) -> Result<(), DbErr>
where
    T: Iden + Copy + 'static,
    C: Iden + Copy + 'static,
{
    if !manager
        .has_column(table.unquoted(), name.unquoted())
        .await?
    {
        return Ok(());
    }
    manager
        .alter_table(Table::alter().table(table).drop_column(name).to_owned())
        .await
}

async fn create_organizations(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    manager
        .create_table(
            Table::create()
                .table(Organizations::Table)
                .if_not_exists()
                .col(pk_uuid(Organizations::Id))
                .col(text(Organizations::Name))
                // 14 digits, for a company domiciled in France.
                .col(text_null(Organizations::Siret))
                // ISO 3166-1 alpha-2.
                .col(text(Organizations::Country))
                // `pending` | `validated` | `rejected`
                .col(text(Organizations::Status))
                .col(uuid(Organizations::CreatedBy))
                .col(timestamp_with_time_zone(Organizations::CreatedAt))
                // When it was validated or rejected.
                .col(timestamp_with_time_zone_null(Organizations::DecidedAt))
                // JSON array of authentication kinds (`console`, `api`, ...).
                .col(text(Organizations::MfaRequiredFor))
                // JSON object: the password policy.
                .col(text(Organizations::PasswordPolicy))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_organizations_created_by")
                        .from(Organizations::Table, Organizations::CreatedBy)
                        .to(Users::Table, Users::Id)
                        .on_delete(ForeignKeyAction::Restrict),
                )
                .to_owned(),
        )
        .await?;
    // Listing organizations in creation order (operator console).
    manager
        .create_index(
            Index::create()
                .name("idx_organizations_created_at")
                .if_not_exists()
                .table(Organizations::Table)
                .col(Organizations::CreatedAt)
                .to_owned(),
        )
        .await?;
    // One live registration per company: a SIRET is unique among the
    // organizations that are pending or validated. A partial index, which
    // both SQLite and PostgreSQL enforce; NULL SIRETs (foreign companies)
    // never collide.
    manager
        .create_index(
            Index::create()
                .name("uq_organizations_siret")
                .if_not_exists()
                .table(Organizations::Table)
                .col(Organizations::Siret)
                .unique()
                .and_where(Expr::col(Organizations::Status).ne("rejected"))
                .to_owned(),
        )
        .await
}

async fn create_memberships(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    manager
        .create_table(
            Table::create()
                .table(Memberships::Table)
                .if_not_exists()
                .col(uuid(Memberships::OrgId))
                .col(uuid(Memberships::UserId))
                // JSON array of role names (`administrator`, ...).
                .col(text(Memberships::Roles))
                // When the user joined.
                .col(timestamp_with_time_zone(Memberships::CreatedAt))
                .primary_key(
                    Index::create()
                        .name("pk_memberships")
                        .col(Memberships::OrgId)
                        .col(Memberships::UserId),
                )
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_memberships_org")
                        .from(Memberships::Table, Memberships::OrgId)
                        .to(Organizations::Table, Organizations::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_memberships_user")
                        .from(Memberships::Table, Memberships::UserId)
                        .to(Users::Table, Users::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
    // The organizations of a user (at login, on the account page); the
    // primary key already serves an organization's members.
    manager
        .create_index(
            Index::create()
                .name("idx_memberships_user")
                .if_not_exists()
                .table(Memberships::Table)
                .col(Memberships::UserId)
                .to_owned(),
        )
        .await
}
