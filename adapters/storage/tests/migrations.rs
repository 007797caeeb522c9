//! Each migration applied to a database holding the previous schema's data, on
//! both backends (a SQLite file and a fresh PostgreSQL database): the fixture
//! rows are written with the previous schema's columns only, as the release
//! before the migration wrote them, then the rest of the migrations run and
//! the rows must read back through the current ports.

// Test names are `case__backend`.
#![allow(non_snake_case)]

use idp_core::domain::{
    AuditEvent, ClientId, CustomerId, Email, KnownDevice, Membership, OrgId, OrgStatus,
    Organization, Role, TokenHash, User, UserId, UserStatus,
};
use idp_core::password_policy::PasswordPolicy;
use idp_core::ports::{AuditRepo, CredentialRepo, DeviceRepo, OrgRepo, RepoError, UserRepo};
use idp_migrations::Migrator;
use idp_storage::SeaStorage;
use idp_storage::testing::fresh_postgres;
use sea_orm::sea_query::{Alias, Query};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, Value};
use sea_orm_migration::MigratorTrait;
use serde_json::json;
use std::path::PathBuf;
use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;

const CREATED: OffsetDateTime = datetime!(2026-11-20 08:30:00.5 UTC);

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("idp-migr-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A plain connection, outside the adapter, to drive the migrator step by step.
async fn raw_connection(url: &str) -> DatabaseConnection {
    let mut opts = ConnectOptions::new(url.to_owned());
    opts.max_connections(1).sqlx_logging(false);
    Database::connect(opts).await.unwrap()
}

async fn insert(db: &DatabaseConnection, table: &str, row: &[(&str, Value)]) {
    let stmt = Query::insert()
        .into_table(Alias::new(table))
        .columns(row.iter().map(|(col, _)| Alias::new(*col)))
        .values_panic(row.iter().map(|(_, v)| v.clone().into()))
        .to_owned();
    db.execute(&stmt).await.unwrap();
}

/// How many migrations follow the first `n`: what `Migrator::down` takes to
/// go back to the schema of the first `n`.
fn after_first(n: usize) -> u32 {
    u32::try_from(Migrator::migrations().len() - n).unwrap()
}

async fn applied(db: &DatabaseConnection) -> Vec<String> {
    Migrator::get_applied_migrations(db)
        .await
        .unwrap()
        .iter()
        .map(|m| m.name().to_owned())
        .collect()
}

/// `m20261122_000002_login_methods` on a database of the initial schema
/// holding a user with a password.
async fn login_methods_keeps_existing_users(url: &str) {
    let user_id = Uuid::now_v7();
    let phc = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";

    // The initial schema only, and rows as its release wrote them.
    let db = raw_connection(url).await;
    Migrator::up(&db, Some(1)).await.unwrap();
    assert_eq!(applied(&db).await, ["m20261122_000001_initial"]);
    insert(
        &db,
        "users",
        &[
            ("id", user_id.into()),
            ("customer_id", "ab12345-xyz".into()),
            ("email", "Alice@Example.com".into()),
            ("email_normalized", "alice@example.com".into()),
            ("email_verified", true.into()),
            ("name", "Alice Martin".into()),
            ("locale", "fr".into()),
            ("status", "active".into()),
            ("created_at", CREATED.into()),
            ("updated_at", CREATED.into()),
        ],
    )
    .await;
    insert(
        &db,
        "credentials",
        &[
            ("id", Uuid::now_v7().into()),
            ("user_id", user_id.into()),
            ("kind", "password".into()),
            ("secret", phc.into()),
            ("created_at", CREATED.into()),
            ("updated_at", CREATED.into()),
        ],
    )
    .await;
    db.close().await.unwrap();

    // The rest, as the server does at start-up.
    let s = SeaStorage::connect(url).await.unwrap();
    s.migrate().await.unwrap();
    let expected = User {
        id: UserId(user_id),
        customer_id: CustomerId::parse("ab12345-xyz").unwrap(),
        email: Email::parse("Alice@Example.com").unwrap(),
        email_verified: true,
        name: Some("Alice Martin".into()),
        locale: Some("fr".into()),
        status: UserStatus::Active,
        phone: None,
        phone_verified: false,
        mfa_required: false,
        last_method: None,
        backup_email: None,
        created_at: CREATED,
        updated_at: CREATED,
    };
    assert_eq!(s.find_by_id(UserId(user_id)).await.unwrap(), Some(expected));
    let password = s.find_password(UserId(user_id)).await.unwrap().unwrap();
    assert_eq!(password.phc, phc);
    assert_eq!(
        s.list_credentials(UserId(user_id), "totp").await.unwrap(),
        vec![]
    );

    // The new columns and table work for the old user.
    s.set_phone(UserId(user_id), Some("+33612345678"), true)
        .await
        .unwrap();
    s.set_mfa_required(UserId(user_id), true).await.unwrap();
    let device = KnownDevice {
        id: Uuid::now_v7(),
        user_id: UserId(user_id),
        token_hash: TokenHash::of("device cookie"),
        label: None,
        created_at: CREATED,
        last_seen_at: CREATED,
        revoked_at: None,
    };
    s.create_device(&device).await.unwrap();
    assert_eq!(
        s.list_devices(UserId(user_id)).await.unwrap(),
        vec![device.clone()]
    );
    let back = s.find_by_id(UserId(user_id)).await.unwrap().unwrap();
    assert_eq!(back.phone.as_deref(), Some("+33612345678"));
    assert!(back.phone_verified && back.mfa_required);
    drop(s);

    // Down and up again: the migration reverts cleanly and re-applies; the
    // user survives both, the new data goes with the reverted schema.
    let db = raw_connection(url).await;
    Migrator::down(&db, Some(after_first(1))).await.unwrap();
    assert_eq!(applied(&db).await, ["m20261122_000001_initial"]);
    Migrator::up(&db, None).await.unwrap();
    db.close().await.unwrap();
    let s = SeaStorage::connect(url).await.unwrap();
    let back = s.find_by_id(UserId(user_id)).await.unwrap().unwrap();
    assert_eq!(back.phone, None);
    assert!(!back.mfa_required);
    assert_eq!(s.list_devices(UserId(user_id)).await.unwrap(), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_methods_keeps_existing_users__sqlite() {
    let dir = TempDir::new();
    let url = format!("sqlite://{}?mode=rwc", dir.0.join("idp.db").display());
    login_methods_keeps_existing_users(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_methods_keeps_existing_users__postgres() {
    let db = fresh_postgres().await;
    let url = db.url().to_owned();
    let outcome = tokio::spawn(async move { login_methods_keeps_existing_users(&url).await }).await;
    db.drop_database().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// `m20261122_000003_accounts` on a database of the login-methods schema
/// holding a user and an audit event.
async fn accounts_keeps_existing_data(url: &str) {
    let user_id = Uuid::now_v7();
    let event_id = Uuid::now_v7();

    // The schema up to login methods, and rows as its release wrote them.
    let db = raw_connection(url).await;
    Migrator::up(&db, Some(2)).await.unwrap();
    assert_eq!(
        applied(&db).await,
        ["m20261122_000001_initial", "m20261122_000002_login_methods"]
    );
    insert(
        &db,
        "users",
        &[
            ("id", user_id.into()),
            ("customer_id", "ab12345-xyz".into()),
            ("email", "Alice@Example.com".into()),
            ("email_normalized", "alice@example.com".into()),
            ("email_verified", true.into()),
            ("name", "Alice Martin".into()),
            ("locale", "fr".into()),
            ("status", "active".into()),
            ("phone", "+33612345678".into()),
            ("phone_verified", true.into()),
            ("mfa_required", true.into()),
            ("last_method", "password".into()),
            ("created_at", CREATED.into()),
            ("updated_at", CREATED.into()),
        ],
    )
    .await;
    insert(
        &db,
        "audit_events",
        &[
            ("id", event_id.into()),
            ("at", CREATED.into()),
            ("kind", "login.succeeded".into()),
            ("user_id", user_id.into()),
            ("client_id", "console".into()),
            ("ip", "203.0.113.7".into()),
            ("user_agent", "Mozilla/5.0".into()),
            ("detail", r#"{"step":"password"}"#.into()),
        ],
    )
    .await;
    db.close().await.unwrap();

    // The rest, as the server does at start-up.
    let s = SeaStorage::connect(url).await.unwrap();
    s.migrate().await.unwrap();
    let alice = User {
        id: UserId(user_id),
        customer_id: CustomerId::parse("ab12345-xyz").unwrap(),
        email: Email::parse("Alice@Example.com").unwrap(),
        email_verified: true,
        name: Some("Alice Martin".into()),
        locale: Some("fr".into()),
        status: UserStatus::Active,
        phone: Some("+33612345678".into()),
        phone_verified: true,
        mfa_required: true,
        last_method: Some("password".into()),
        backup_email: None,
        created_at: CREATED,
        updated_at: CREATED,
    };
    assert_eq!(s.find_by_id(alice.id).await.unwrap(), Some(alice.clone()));
    let login = AuditEvent {
        id: event_id,
        at: CREATED,
        kind: "login.succeeded".into(),
        user_id: Some(alice.id),
        client_id: Some(ClientId("console".into())),
        org_id: None,
        ip: Some("203.0.113.7".into()),
        user_agent: Some("Mozilla/5.0".into()),
        detail: json!({ "step": "password" }),
    };
    assert_eq!(
        s.list_for_user(alice.id, 10).await.unwrap(),
        vec![login.clone()]
    );

    // The new columns and tables work for the old user.
    let backup = Email::parse("alice@example.org").unwrap();
    s.set_backup_email(alice.id, Some(&backup)).await.unwrap();
    let org = Organization {
        id: OrgId(Uuid::now_v7()),
        name: "Acme SAS".into(),
        siret: Some("73282932000074".into()),
        country: "FR".into(),
        status: OrgStatus::Pending,
        created_by: alice.id,
        created_at: CREATED,
        decided_at: None,
        mfa_required_for: vec!["console".into()],
        password_policy: PasswordPolicy::default(),
    };
    let admin = Membership {
        org_id: org.id,
        user_id: alice.id,
        roles: vec![Role::Administrator],
        created_at: CREATED,
    };
    s.create_org(&org, &admin).await.unwrap();
    assert_eq!(s.find_org(org.id).await.unwrap(), Some(org.clone()));
    assert_eq!(
        s.memberships_of(alice.id).await.unwrap(),
        vec![admin.clone()]
    );
    // The SIRET is unique among live organizations.
    let dup = Organization {
        id: OrgId(Uuid::now_v7()),
        ..org.clone()
    };
    let dup_admin = Membership {
        org_id: dup.id,
        ..admin.clone()
    };
    assert!(matches!(
        s.create_org(&dup, &dup_admin).await,
        Err(RepoError::Conflict(_))
    ));
    let created = AuditEvent {
        id: Uuid::now_v7(),
        kind: "org.created".into(),
        org_id: Some(org.id),
        detail: json!({}),
        ..login.clone()
    };
    s.record(&created).await.unwrap();
    assert_eq!(
        s.list_for_org(org.id, 10).await.unwrap(),
        vec![created.clone()]
    );
    let back = s.find_by_id(alice.id).await.unwrap().unwrap();
    assert_eq!(back.backup_email, Some(backup));
    drop(s);

    // Down and up again: the migration reverts cleanly and re-applies; the
    // user and the events survive both, the new data goes with the reverted
    // schema.
    let db = raw_connection(url).await;
    Migrator::down(&db, Some(after_first(2))).await.unwrap();
    assert_eq!(
        applied(&db).await,
        ["m20261122_000001_initial", "m20261122_000002_login_methods"]
    );
    Migrator::up(&db, None).await.unwrap();
    db.close().await.unwrap();
    let s = SeaStorage::connect(url).await.unwrap();
    assert_eq!(s.find_by_id(alice.id).await.unwrap(), Some(alice.clone()));
    assert_eq!(s.find_org(org.id).await.unwrap(), None);
    assert_eq!(s.memberships_of(alice.id).await.unwrap(), vec![]);
    assert_eq!(s.list_for_org(org.id, 10).await.unwrap(), vec![]);
    let unlinked = AuditEvent {
        org_id: None,
        ..created
    };
    let mut events = s.list_for_user(alice.id, 10).await.unwrap();
    events.sort_by_key(|e| e.kind.clone());
    assert_eq!(events, vec![login, unlinked]);
    // The schema is whole again: the SIRET is free and unique once more.
    s.create_org(&dup, &dup_admin).await.unwrap();
    assert!(matches!(
        s.create_org(&org, &admin).await,
        Err(RepoError::Conflict(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_keeps_existing_data__sqlite() {
    let dir = TempDir::new();
    let url = format!("sqlite://{}?mode=rwc", dir.0.join("idp.db").display());
    accounts_keeps_existing_data(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_keeps_existing_data__postgres() {
    let db = fresh_postgres().await;
    let url = db.url().to_owned();
    let outcome = tokio::spawn(async move { accounts_keeps_existing_data(&url).await }).await;
    db.drop_database().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// How many migrations come before `name`.
fn position_of(name: &str) -> usize {
    Migrator::migrations()
        .iter()
        .position(|m| m.name() == name)
        .unwrap_or_else(|| panic!("no migration {name}"))
}

/// `m20261208_000010_registered_clients` on a database of the previous
/// schema holding a user and a grant of a client: the grant can be revoked
/// by client afterwards, registered clients are stored, and the migration
/// reverts and re-applies leaving the grant alone.
async fn registered_clients_keeps_existing_grants(url: &str) {
    use idp_core::client::ClientSecretHash;
    use idp_core::ports::TokenFamilyRepo;
    use idp_core::registration::{ClientMetadata, RegisteredClient, RegisteredClientRepo};
    const NAME: &str = "m20261208_000010_registered_clients";
    let before = position_of(NAME);
    let user_id = Uuid::now_v7();
    let family_id = Uuid::now_v7();

    let db = raw_connection(url).await;
    Migrator::up(&db, Some(u32::try_from(before).unwrap()))
        .await
        .unwrap();
    assert!(!applied(&db).await.contains(&NAME.to_owned()));
    insert(
        &db,
        "users",
        &[
            ("id", user_id.into()),
            ("customer_id", "ab12345-xyz".into()),
            ("email", "alice@example.com".into()),
            ("email_normalized", "alice@example.com".into()),
            ("email_verified", true.into()),
            ("status", "active".into()),
            ("phone_verified", false.into()),
            ("mfa_required", false.into()),
            ("created_at", CREATED.into()),
            ("updated_at", CREATED.into()),
        ],
    )
    .await;
    insert(
        &db,
        "token_families",
        &[
            ("id", family_id.into()),
            ("user_id", user_id.into()),
            ("client_id", "dcr-portal".into()),
            ("scope", "openid".into()),
            ("auth_time", CREATED.into()),
            ("amr", "[\"pwd\"]".into()),
            ("created_at", CREATED.into()),
            ("expires_at", (CREATED + time::Duration::days(30)).into()),
        ],
    )
    .await;
    db.close().await.unwrap();

    let s = SeaStorage::connect(url).await.unwrap();
    s.migrate().await.unwrap();
    let client = ClientId("dcr-portal".into());
    assert_eq!(
        s.live_grants_of_client(&client).await.unwrap(),
        vec![family_id]
    );
    assert_eq!(s.registered_clients_version().await.unwrap(), (0, 0));
    let registered = RegisteredClient {
        id: client.clone(),
        metadata: ClientMetadata {
            redirect_uris: vec!["https://portal.example.com/cb".into()],
            token_endpoint_auth_method: "client_secret_basic".into(),
            grant_types: vec!["authorization_code".into()],
            response_types: vec!["code".into()],
            scope: "openid".into(),
            ..ClientMetadata::default()
        },
        secret_hash: Some(ClientSecretHash::of("secret")),
        registration_token_hash: ClientSecretHash::of("token"),
        enabled: true,
        created_at: CREATED,
        updated_at: CREATED,
    };
    s.create_registered_client(&registered).await.unwrap();
    assert!(matches!(
        s.create_registered_client(&registered).await,
        Err(RepoError::Conflict(_))
    ));
    assert_eq!(
        s.find_registered_client(&client).await.unwrap(),
        Some(registered.clone())
    );
    assert_eq!(s.registered_clients_version().await.unwrap(), (1, 1));
    // Writes need the current registration token, and each one counts.
    let wrong = ClientSecretHash::of("not the token");
    assert!(
        !s.replace_registered_client(&registered, &wrong)
            .await
            .unwrap()
    );
    assert!(
        s.replace_registered_client(&registered, &registered.registration_token_hash)
            .await
            .unwrap()
    );
    assert_eq!(s.registered_clients_version().await.unwrap(), (1, 2));
    assert!(
        s.revoke_family(family_id, CREATED, "client_removed")
            .await
            .unwrap()
    );
    assert!(s.live_grants_of_client(&client).await.unwrap().is_empty());
    assert!(
        s.delete_registered_client(&client, &registered.registration_token_hash, CREATED)
            .await
            .unwrap()
    );
    assert_eq!(s.find_registered_client(&client).await.unwrap(), None);
    assert_eq!(s.registered_clients_version().await.unwrap(), (1, 3));
    drop(s);

    // Down and up again: the grant stays; the registrations go with the
    // reverted schema.
    let db = raw_connection(url).await;
    Migrator::down(&db, Some(after_first(before)))
        .await
        .unwrap();
    assert!(!applied(&db).await.contains(&NAME.to_owned()));
    Migrator::up(&db, None).await.unwrap();
    db.close().await.unwrap();
    let s = SeaStorage::connect(url).await.unwrap();
    assert!(s.find_family(family_id).await.unwrap().is_some());
    assert_eq!(s.list_registered_clients().await.unwrap(), vec![]);
    assert_eq!(s.registered_clients_version().await.unwrap(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_clients_keeps_existing_grants__sqlite() {
    let dir = TempDir::new();
    let url = format!("sqlite://{}?mode=rwc", dir.0.join("idp.db").display());
    registered_clients_keeps_existing_grants(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_clients_keeps_existing_grants__postgres() {
    let db = fresh_postgres().await;
    let url = db.url().to_owned();
    let outcome =
        tokio::spawn(async move { registered_clients_keeps_existing_grants(&url).await }).await;
    db.drop_database().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
