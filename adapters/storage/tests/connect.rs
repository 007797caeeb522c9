//! Connecting: SQLite files (WAL, persistence, concurrent writers) and the
//! test-database support of `idp_storage::testing`.

use idp_core::domain::{ClientId, TokenHash};
use idp_core::ports::{ClientStateRepo, RepoError};
use idp_storage::SeaStorage;
use idp_storage::testing::{fresh_postgres, fresh_postgres_at, fresh_sqlite};
use sea_orm::DbBackend;
use std::path::PathBuf;
use time::macros::datetime;
use uuid::Uuid;

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("idp-storage-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_uses_wal_and_keeps_data_across_connections() {
    let dir = TempDir::new();
    let path = dir.0.join("idp.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let at = datetime!(2026-11-22 10:00:00 UTC);
    let portal = ClientId("marketplace".into());

    let storage = SeaStorage::connect(&url).await.unwrap();
    assert_eq!(storage.backend(), DbBackend::Sqlite);
    storage.migrate().await.unwrap();
    storage.touch(&portal, at).await.unwrap();
    assert!(path.exists());
    assert!(
        dir.0.join("idp.db-wal").exists(),
        "a file database runs in WAL mode"
    );
    drop(storage);

    let reopened = SeaStorage::connect(&url).await.unwrap();
    reopened.migrate().await.unwrap();
    let state = reopened.find(&portal).await.unwrap().unwrap();
    assert_eq!(state.first_seen_at, at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_file_concurrent_rotation_has_one_winner() {
    use idp_core::domain::UserStatus;
    use idp_core::domain::{CustomerId, Email, RefreshTokenRecord, TokenFamily, User, UserId};
    use idp_core::ports::{TokenFamilyRepo, UserRepo};

    let dir = TempDir::new();
    let url = format!("sqlite://{}?mode=rwc", dir.0.join("idp.db").display());
    let s = SeaStorage::connect(&url).await.unwrap();
    s.migrate().await.unwrap();
    let t = datetime!(2026-11-22 10:00:00 UTC);
    let user = User {
        id: UserId(Uuid::now_v7()),
        customer_id: CustomerId::parse("ab12345-xyz").unwrap(),
        email: Email::parse("alice@example.com").unwrap(),
        email_verified: true,
        name: None,
        locale: None,
        status: UserStatus::Active,
        phone: None,
        phone_verified: false,
        mfa_required: false,
        last_method: None,
        backup_email: None,
        created_at: t,
        updated_at: t,
    };
    s.create(&user).await.unwrap();
    let fam = TokenFamily {
        claims: Default::default(),
        id: Uuid::now_v7(),
        user_id: user.id,
        client_id: ClientId("marketplace".into()),
        scope: "openid offline_access".into(),
        sid: None,
        auth_time: t,
        acr: None,
        amr: vec!["pwd".into()],
        created_at: t,
        expires_at: t + time::Duration::days(30),
        revoked_at: None,
        revoked_reason: None,
        resources: Vec::new(),
        dpop_jkt: None,
    };
    let token = |secret: &str| RefreshTokenRecord {
        id: Uuid::now_v7(),
        family_id: fam.id,
        token_hash: TokenHash::of(secret),
        created_at: t,
        expires_at: t + time::Duration::days(1),
        used_at: None,
    };
    let old = token("old");
    s.create_family(&fam, Some(&old)).await.unwrap();

    // Four writers on four pooled connections race for the same token.
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let (s, barrier, new) = (s.clone(), barrier.clone(), token(&format!("new-{i}")));
            tokio::spawn(async move {
                barrier.wait().await;
                s.rotate_refresh_token(old.id, t, &new).await
            })
        })
        .collect();
    let mut wins = 0;
    for h in handles {
        if h.await.unwrap().unwrap() {
            wins += 1;
        }
    }
    assert_eq!(wins, 1);
    let mut stored = 0;
    for i in 0..4 {
        let hash = TokenHash::of(&format!("new-{i}"));
        if s.find_refresh_token(&hash).await.unwrap().is_some() {
            stored += 1;
        }
    }
    assert_eq!(stored, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_file_concurrent_credential_swaps_have_one_winner() {
    use idp_core::domain::UserStatus;
    use idp_core::domain::{CustomerId, Email, StoredCredential, User, UserId};
    use idp_core::ports::{CredentialRepo, UserRepo};

    let dir = TempDir::new();
    let url = format!("sqlite://{}?mode=rwc", dir.0.join("idp.db").display());
    let s = SeaStorage::connect(&url).await.unwrap();
    s.migrate().await.unwrap();
    let t = datetime!(2026-11-22 10:00:00 UTC);
    let user = User {
        id: UserId(Uuid::now_v7()),
        customer_id: CustomerId::parse("ab12345-xyz").unwrap(),
        email: Email::parse("alice@example.com").unwrap(),
        email_verified: true,
        name: None,
        locale: None,
        status: UserStatus::Active,
        phone: None,
        phone_verified: false,
        mfa_required: false,
        last_method: None,
        backup_email: None,
        created_at: t,
        updated_at: t,
    };
    s.create(&user).await.unwrap();
    let totp = StoredCredential {
        id: Uuid::now_v7(),
        user_id: user.id,
        kind: "totp".into(),
        label: None,
        secret: "seed;last-step=100".into(),
        created_at: t,
        last_used_at: None,
    };
    s.create_credential(&totp).await.unwrap();

    // Eight writers on the pooled connections race for the same value.
    let tasks = 8;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(tasks));
    let handles: Vec<_> = (0..tasks)
        .map(|i| {
            let (s, barrier, id) = (s.clone(), barrier.clone(), totp.id);
            tokio::spawn(async move {
                barrier.wait().await;
                let new = format!("seed;last-step=101;task={i}");
                let won = s
                    .update_credential_secret(id, "seed;last-step=100", &new, t)
                    .await
                    .unwrap();
                won.then_some(new)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for h in handles {
        winners.extend(h.await.unwrap());
    }
    assert_eq!(winners.len(), 1, "exactly one swap wins: {winners:?}");
    let now = s.find_credential(totp.id).await.unwrap().unwrap();
    assert_eq!(now.secret, winners[0]);
}

#[tokio::test]
async fn each_in_memory_database_is_its_own() {
    let a = fresh_sqlite().await;
    let b = fresh_sqlite().await;
    let portal = ClientId("marketplace".into());
    a.touch(&portal, datetime!(2026-11-22 10:00:00 UTC))
        .await
        .unwrap();
    assert!(a.find(&portal).await.unwrap().is_some());
    assert!(b.find(&portal).await.unwrap().is_none());
}

#[tokio::test]
async fn unreachable_database_is_unavailable() {
    // Each retries until the connect timeout, so both at once.
    let (pg, lite) = tokio::join!(
        SeaStorage::connect("postgres://postgres@127.0.0.1:1/none"),
        SeaStorage::connect("sqlite:///nonexistent-dir/for/sure/idp.db"),
    );
    assert!(matches!(pg, Err(RepoError::Unavailable(_))), "{pg:?}");
    assert!(matches!(lite, Err(RepoError::Unavailable(_))), "{lite:?}");
}

#[tokio::test]
async fn postgres_storage_pings_and_reports_its_backend() {
    let db = fresh_postgres().await;
    assert!(db.name().starts_with("idp_t_"));
    assert!(db.url().ends_with(db.name()));
    let s = SeaStorage::connect(db.url()).await.unwrap();
    s.ping().await.unwrap();
    assert_eq!(s.backend(), DbBackend::Postgres);
    drop(s);
    db.drop_database().await;
}

#[tokio::test]
#[should_panic(
    expected = "PostgreSQL for the tests is unreachable at postgres://postgres@127.0.0.1:1/test"
)]
async fn missing_postgres_fails_the_test() {
    fresh_postgres_at("postgres://postgres@127.0.0.1:1/test").await;
}
