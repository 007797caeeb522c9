//! `token_families.resources` and `token_families.dpop_jkt`:
//! - `resources`: the resource indicators a grant was made for (RFC 8707),
//!   as a JSON array of strings; NULL when none, as every grant made before
//!   this migration;
//! - `dpop_jkt`: the thumbprint of the DPoP key a public client's refresh
//!   tokens are bound to (RFC 9449 §5); NULL when unbound.
//!
//! Adding nullable columns is instant on both backends and rewrites no row.
//! Each step is skipped when its column exists, so an interrupted run can be
//! run again.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, column) in [
            ("resources", TokenFamilies::Resources),
            ("dpop_jkt", TokenFamilies::DpopJkt),
        ] {
            if manager.has_column("token_families", name).await? {
                continue;
            }
            manager
                .alter_table(
                    Table::alter()
                        .table(TokenFamilies::Table)
                        .add_column(text_null(column))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [TokenFamilies::Resources, TokenFamilies::DpopJkt] {
            manager
                .alter_table(
                    Table::alter()
                        .table(TokenFamilies::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum TokenFamilies {
    Table,
    Resources,
    DpopJkt,
}
