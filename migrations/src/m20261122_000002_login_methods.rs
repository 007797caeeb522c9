//! Login methods: what the login flow needs beyond the password.
//!
//! - `users` gains the mobile number (SMS codes) and whether it is verified,
//!   whether the account must use a second factor, and the login method it
//!   passed last. Existing rows get no number, `false` for both flags and no
//!   last method.
//! - `known_devices`: browsers a user signed in from, remembered by the hash of
//!   a long-lived cookie (the new-device check); revoked rather than deleted,
//!   so a revoked cookie stays recognised as such.
//!
//! Other credentials (TOTP, WebAuthn, recovery codes) need no schema change:
//! they are rows of `credentials` with their own `kind`.
//!
//! SQLite adds one column per `ALTER TABLE` statement, and a `NOT NULL` column
//! only with a default; so each column is its own statement, and the flags
//! carry their default in the schema. sea-orm-migration runs a migration's
//! statements without a surrounding transaction, so each step is skipped when
//! already done: a run interrupted half-way can simply be run again.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, column) in [
            // E.164 (`+33612345678`).
            (Users::Phone, text_null(Users::Phone)),
            (
                Users::PhoneVerified,
                boolean(Users::PhoneVerified).default(false).to_owned(),
            ),
            (
                Users::MfaRequired,
                boolean(Users::MfaRequired).default(false).to_owned(),
            ),
            // A step kind (`password`, `webauthn`, ...), shown first next time.
            (Users::LastMethod, text_null(Users::LastMethod)),
        ] {
            if manager
                .has_column(Users::Table.unquoted(), name.unquoted())
                .await?
            {
                continue;
            }
            manager
                .alter_table(
                    Table::alter()
                        .table(Users::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        create_known_devices(manager).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(KnownDevices::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        for column in [
            Users::LastMethod,
            Users::MfaRequired,
            Users::PhoneVerified,
            Users::Phone,
        ] {
            if !manager
                .has_column(Users::Table.unquoted(), column.unquoted())
                .await?
            {
                continue;
            }
            manager
                .alter_table(
                    Table::alter()
                        .table(Users::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Phone,
    PhoneVerified,
    MfaRequired,
    LastMethod,
}

#[derive(DeriveIden)]
enum KnownDevices {
    Table,
    Id,
    UserId,
    TokenHash,
    Label,
    CreatedAt,
    LastSeenAt,
    RevokedAt,
}

async fn create_known_devices(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    manager
        .create_table(
            Table::create()
                .table(KnownDevices::Table)
                .if_not_exists()
                .col(pk_uuid(KnownDevices::Id))
                .col(uuid(KnownDevices::UserId))
                // SHA-256 hex of the device cookie; the cookie itself is never
                // stored.
                .col(text_uniq(KnownDevices::TokenHash))
                // From the user agent, for the user's device list.
                .col(text_null(KnownDevices::Label))
                .col(timestamp_with_time_zone(KnownDevices::CreatedAt))
                .col(timestamp_with_time_zone(KnownDevices::LastSeenAt))
                // Set once; a revoked device is unknown again.
                .col(timestamp_with_time_zone_null(KnownDevices::RevokedAt))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_known_devices_user")
                        .from(KnownDevices::Table, KnownDevices::UserId)
                        .to(Users::Table, Users::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
    // A user's devices (account page, cascade on delete).
    manager
        .create_index(
            Index::create()
                .name("idx_known_devices_user")
                .if_not_exists()
                .table(KnownDevices::Table)
                .col(KnownDevices::UserId)
                .to_owned(),
        )
        .await
}
