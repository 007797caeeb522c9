//! [`RegisteredClientRepo`] on the `registered_clients` and
//! `initial_access_tokens` tables.

use crate::entities::{initial_access_tokens, registered_clients, token_families};
use crate::{SeaStorage, db_err, stored_time};
use async_trait::async_trait;
use idp_core::client::ClientSecretHash;
use idp_core::domain::ClientId;
use idp_core::ports::RepoError;
use idp_core::registration::{InitialAccessToken, RegisteredClient, RegisteredClientRepo};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect, Statement};
use time::OffsetDateTime;
use uuid::Uuid;

fn metadata_json(c: &RegisteredClient) -> Result<String, RepoError> {
    serde_json::to_string(&c.metadata).map_err(|e| RepoError::Corrupt(e.to_string()))
}

#[async_trait]
impl RegisteredClientRepo for SeaStorage {
    async fn create_registered_client(&self, c: &RegisteredClient) -> Result<(), RepoError> {
        let row = registered_clients::ActiveModel {
            client_id: Set(c.id.0.clone()),
            metadata: Set(metadata_json(c)?),
            secret_hash: Set(c.secret_hash.as_ref().map(ClientSecretHash::encode)),
            registration_token_hash: Set(c.registration_token_hash.encode()),
            enabled: Set(c.enabled),
            revision: Set(1),
            created_at: Set(stored_time(c.created_at)),
            updated_at: Set(stored_time(c.updated_at)),
            deleted_at: Set(None),
        };
        registered_clients::Entity::insert(row)
            .exec_without_returning(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn find_registered_client(
        &self,
        id: &ClientId,
    ) -> Result<Option<RegisteredClient>, RepoError> {
        crate::unique_row(
            registered_clients::Entity::find_by_id(id.0.clone())
                .filter(registered_clients::Column::DeletedAt.is_null()),
            &self.db,
        )
        .await?
        .map(RegisteredClient::try_from)
        .transpose()
    }

    async fn list_registered_clients(&self) -> Result<Vec<RegisteredClient>, RepoError> {
        let rows = registered_clients::Entity::find()
            .filter(registered_clients::Column::DeletedAt.is_null())
            .all(&self.db)
            .await
            .map_err(db_err)?;
        let mut clients = rows
            .into_iter()
            .map(RegisteredClient::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        // In Rust: SQLite's timestamp text does not sort (see the crate doc).
        clients.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.0.cmp(&b.id.0)));
        Ok(clients)
    }

    async fn replace_registered_client(
        &self,
        c: &RegisteredClient,
        expected: &ClientSecretHash,
    ) -> Result<bool, RepoError> {
        use registered_clients::Column;
        let res = registered_clients::Entity::update_many()
            .col_expr(Column::Metadata, Expr::value(metadata_json(c)?))
            .col_expr(
                Column::SecretHash,
                Expr::value(c.secret_hash.as_ref().map(ClientSecretHash::encode)),
            )
            .col_expr(
                Column::RegistrationTokenHash,
                Expr::value(c.registration_token_hash.encode()),
            )
            .col_expr(Column::UpdatedAt, Expr::value(stored_time(c.updated_at)))
            .col_expr(Column::Revision, Expr::col(Column::Revision).add(1))
            .filter(Column::ClientId.eq(c.id.0.as_str()))
            .filter(Column::RegistrationTokenHash.eq(expected.encode()))
            .filter(Column::Enabled.eq(true))
            .filter(Column::DeletedAt.is_null())
            .exec(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(res.rows_affected == 1)
    }

    async fn set_registered_client_enabled(
        &self,
        id: &ClientId,
        enabled: bool,
        at: OffsetDateTime,
    ) -> Result<bool, RepoError> {
        use registered_clients::Column;
        let res = registered_clients::Entity::update_many()
            .col_expr(Column::Enabled, Expr::value(enabled))
            .col_expr(Column::UpdatedAt, Expr::value(stored_time(at)))
            .col_expr(Column::Revision, Expr::col(Column::Revision).add(1))
            .filter(Column::ClientId.eq(id.0.as_str()))
            .filter(Column::DeletedAt.is_null())
            .exec(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(res.rows_affected == 1)
    }

    async fn delete_registered_client(
        &self,
        id: &ClientId,
        expected: &ClientSecretHash,
        at: OffsetDateTime,
    ) -> Result<bool, RepoError> {
        use registered_clients::Column;
        let res = registered_clients::Entity::update_many()
            .col_expr(Column::Enabled, Expr::value(false))
            .col_expr(Column::DeletedAt, Expr::value(Some(stored_time(at))))
            .col_expr(Column::UpdatedAt, Expr::value(stored_time(at)))
            .col_expr(Column::Revision, Expr::col(Column::Revision).add(1))
            .filter(Column::ClientId.eq(id.0.as_str()))
            .filter(Column::RegistrationTokenHash.eq(expected.encode()))
            .filter(Column::DeletedAt.is_null())
            .exec(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(res.rows_affected == 1)
    }

    async fn registered_clients_version(&self) -> Result<(i64, i64), RepoError> {
        let backend = self.db.get_database_backend();
        let stmt = Statement::from_string(
            backend,
            "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(revision), 0) AS BIGINT) AS s \
             FROM registered_clients",
        );
        let row = self
            .db
            .query_one_raw(stmt)
            .await
            .map_err(db_err)?
            .ok_or_else(|| RepoError::Corrupt("no count".into()))?;
        let n: i64 = row.try_get("", "n").map_err(db_err)?;
        let s: i64 = row.try_get("", "s").map_err(db_err)?;
        Ok((n, s))
    }

    async fn live_grants_of_client(&self, client: &ClientId) -> Result<Vec<Uuid>, RepoError> {
        token_families::Entity::find()
            .select_only()
            .column(token_families::Column::Id)
            .filter(token_families::Column::ClientId.eq(client.0.as_str()))
            .filter(token_families::Column::RevokedAt.is_null())
            .into_tuple::<Uuid>()
            .all(&self.writer)
            .await
            .map_err(db_err)
    }

    async fn create_initial_access_token(&self, t: &InitialAccessToken) -> Result<(), RepoError> {
        let row = initial_access_tokens::ActiveModel {
            token_hash: Set(t.hash.encode()),
            created_at: Set(stored_time(t.created_at)),
            expires_at: Set(t.expires_at.map(stored_time)),
        };
        initial_access_tokens::Entity::insert(row)
            .exec_without_returning(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn initial_access_token_valid(
        &self,
        hash: &ClientSecretHash,
        at: OffsetDateTime,
    ) -> Result<bool, RepoError> {
        let row = crate::unique_row(
            initial_access_tokens::Entity::find_by_id(hash.encode()),
            &self.db,
        )
        .await?;
        Ok(row.is_some_and(|r| r.expires_at.is_none_or(|e| e > at)))
    }
}
