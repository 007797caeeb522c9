//! `token_families.claims`: the claims a client named with the `claims`
//! request parameter (OpenID Connect Core §5.5), as a JSON object
//! `{"id_token": [...], "userinfo": [...]}`; NULL when it named none, as
//! every grant made before this migration.
//!
//! Adding a nullable column is instant on both backends and rewrites no row.
//! The step is skipped when the column exists, so an interrupted run can be
//! run again.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.has_column("token_families", "claims").await? {
            return Ok(());
        }
        manager
            .alter_table(
                Table::alter()
                    .table(TokenFamilies::Table)
                    .add_column(text_null(TokenFamilies::Claims))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(TokenFamilies::Table)
                    .drop_column(TokenFamilies::Claims)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum TokenFamilies {
    Table,
    Claims,
}
