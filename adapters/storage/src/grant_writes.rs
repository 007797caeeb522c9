//! The writes of the token endpoint's grants, grouped: a code exchange's new
//! grant (its family and first refresh token) and a refresh token's rotation
//! (the old one marked used, the next one inserted).
//!
//! Each of these used to be a transaction of its own: BEGIN, two statements,
//! COMMIT, then the pool's test of the connection given back. Every one of
//! those is a message to the connection's thread (sqlx runs a SQLite
//! connection on a thread of its own) or a round trip to PostgreSQL, and on a
//! SQLite file all writes share the one writing connection, so under load
//! the exchanges queued behind each other's five hops: 46% of the server's
//! CPU was the kernel switching threads (perf), at about 1,850 exchanges/s.
//!
//! Here the writes wait in a queue, and a worker takes everything queued at
//! once (up to [`MAX_BATCH`]) into one transaction: one `UPDATE ... RETURNING`
//! marks every rotated token that was still unused, one multi-row `INSERT`
//! adds the families, one the refresh tokens, one COMMIT. Nothing waits for
//! a batch to fill: a write alone is written at once, alone; under load, the
//! writes that arrived while the previous batch ran go together.
//!
//! Each write keeps its own outcome:
//! - a rotation is won by exactly one of the writes naming the same old
//!   token, in the queue's order, and only if the token was still unused in
//!   the database; the losers insert nothing;
//! - if a statement of the batch fails (a duplicate family, say), the batch
//!   is rolled back and each of its writes is run again in a transaction of
//!   its own, so only the faulty one fails. A failed COMMIT is reported to
//!   every write of the batch, not retried: whether it took effect is
//!   unknown, and a rotation run twice would look like a token reuse.

use crate::entities::{memberships, organizations, refresh_tokens, token_families, users};
use crate::repos::users_with_organizations;
use crate::{db_err, stored_time};
use idp_core::domain::{User, UserStatus};
use idp_core::ports::{RepoError, UserOrganizations};
use sea_orm::sea_query::{CaseStatement, Expr, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryTrait,
    TransactionTrait,
};
use std::sync::Arc;
use time::OffsetDateTime;
use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;

/// The most writes one transaction takes.
pub(crate) const MAX_BATCH: usize = 128;

/// One grant write, in the form the tables store it.
#[derive(Debug)]
pub(crate) enum GrantWrite {
    /// A new grant and, when the client gets refresh tokens, its first one;
    /// with `user`, only if that user exists and is active (see
    /// [`UserCheck`]).
    Create {
        family: Box<token_families::ActiveModel>,
        first: Option<refresh_tokens::ActiveModel>,
        user: Option<UserCheck>,
    },
    /// The refresh token `old` used `at`, replaced by `next`: done only if
    /// `old` is still unused.
    Rotate {
        old: Uuid,
        at: OffsetDateTime,
        next: refresh_tokens::ActiveModel,
        user: Option<UserCheck>,
    },
}

/// The grant's user, read in the write's transaction: the grant is written
/// only if they exist and are active.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UserCheck {
    pub(crate) id: Uuid,
    pub(crate) with_organizations: bool,
}

/// A user with, when asked for, their organizations and roles.
pub(crate) type GrantUser = (User, Option<UserOrganizations>);

/// What became of one write.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// A rotation without a user check: whether it won.
    Rotated(bool),
    /// A rotation with a user check, won: the user if active.
    RotatedFor(Option<Box<GrantUser>>),
    /// A new grant without a user check, written.
    Created,
    /// A new grant with a user check: written, for this user.
    CreatedFor(Box<GrantUser>),
    /// A new grant with a user check: the user is unknown or not active,
    /// nothing written.
    NoActiveUser,
}

#[derive(Debug)]
struct Job {
    write: GrantWrite,
    done: oneshot::Sender<Result<Outcome, RepoError>>,
}

/// The queue of grant writes and its workers (see the module's text). Cheap
/// to clone; the workers stop when the last clone is dropped.
#[derive(Clone, Debug)]
pub(crate) struct GrantWriter {
    jobs: mpsc::UnboundedSender<Job>,
}

impl GrantWriter {
    /// Starts `workers` workers writing through `db`: one for a SQLite file
    /// (one connection writes at a time anyway), a few for PostgreSQL, whose
    /// transactions run side by side.
    pub(crate) fn start(db: DatabaseConnection, workers: usize) -> GrantWriter {
        let (jobs, queue) = mpsc::unbounded_channel();
        let queue = Arc::new(Mutex::new(queue));
        for _ in 0..workers.max(1) {
            tokio::spawn(work(db.clone(), queue.clone()));
        }
        GrantWriter { jobs }
    }

    /// Queues `write` and waits for its outcome.
    pub(crate) async fn write(&self, write: GrantWrite) -> Result<Outcome, RepoError> {
        let stopped = || RepoError::Unavailable("the grant writer has stopped".into());
        let (done, outcome) = oneshot::channel();
        self.jobs.send(Job { write, done }).map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

/// How a batch failed.
enum Failure {
    /// Before COMMIT: nothing was written.
    Statement(RepoError),
    /// At COMMIT: whether anything was written is unknown.
    Commit(RepoError),
}

async fn work(db: DatabaseConnection, queue: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>) {
    loop {
        let mut jobs = Vec::new();
        {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            jobs.push(first);
            while jobs.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
        }
        let writes: Vec<&GrantWrite> = jobs.iter().map(|j| &j.write).collect();
        match apply(&db, &writes).await {
            Ok(outcomes) => {
                for (job, outcome) in jobs.into_iter().zip(outcomes) {
                    // A caller that stopped waiting (its request was dropped)
                    // does not need the answer.
                    let _ = job.done.send(Ok(outcome));
                }
            }
            Err(Failure::Statement(_)) if jobs.len() > 1 => {
                for job in jobs {
                    let outcome = match apply(&db, &[&job.write]).await {
                        Ok(mut outcomes) => Ok(outcomes.remove(0)),
                        Err(Failure::Statement(e) | Failure::Commit(e)) => Err(e),
                    };
                    let _ = job.done.send(outcome);
                }
            }
            Err(Failure::Statement(e) | Failure::Commit(e)) => {
                for job in jobs {
                    let _ = job.done.send(Err(copy(&e)));
                }
            }
        }
    }
}

fn copy(e: &RepoError) -> RepoError {
    match e {
        RepoError::Conflict(m) => RepoError::Conflict(m.clone()),
        RepoError::Corrupt(m) => RepoError::Corrupt(m.clone()),
        RepoError::Unavailable(m) => RepoError::Unavailable(m.clone()),
    }
}

/// Writes `writes` in one transaction; their outcomes in the same order.
async fn apply(db: &DatabaseConnection, writes: &[&GrantWrite]) -> Result<Vec<Outcome>, Failure> {
    let statement = |e| Failure::Statement(db_err(e));
    let txn = db.begin().await.map_err(statement)?;
    let mut outcomes: Vec<Outcome> = writes
        .iter()
        .map(|w| match w {
            GrantWrite::Rotate { user: None, .. } => Outcome::Rotated(true),
            GrantWrite::Rotate { user: Some(_), .. } => Outcome::RotatedFor(None),
            GrantWrite::Create { user: None, .. } => Outcome::Created,
            GrantWrite::Create { user: Some(_), .. } => Outcome::NoActiveUser,
        })
        .collect();

    // The rotations' compare-and-set, all at once: the tokens still unused
    // are marked (each with its own time) and named back. PostgreSQL
    // re-checks `used_at IS NULL` after waiting for a row locked by another
    // transaction; SQLite runs one writer at a time.
    let rotations: Vec<(usize, Uuid, OffsetDateTime)> = writes
        .iter()
        .enumerate()
        .filter_map(|(i, w)| match w {
            GrantWrite::Rotate { old, at, .. } => Some((i, *old, *at)),
            GrantWrite::Create { .. } => None,
        })
        .collect();
    if !rotations.is_empty() {
        let mut when = CaseStatement::new();
        for (_, old, at) in &rotations {
            when = when.case(
                refresh_tokens::Column::Id.eq(*old),
                Expr::value(stored_time(*at)),
            );
        }
        let mut update = refresh_tokens::Entity::update_many()
            .col_expr(refresh_tokens::Column::UsedAt, when.into())
            .filter(refresh_tokens::Column::Id.is_in(rotations.iter().map(|(_, old, _)| *old)))
            .filter(refresh_tokens::Column::UsedAt.is_null())
            .into_query();
        update.returning(Query::returning().column(refresh_tokens::Column::Id));
        let marked: Vec<Uuid> = txn
            .query_all(&update)
            .await
            .map_err(statement)?
            .iter()
            .map(|row| row.try_get::<Uuid>("", "id"))
            .collect::<Result<_, _>>()
            .map_err(statement)?;
        // Each marked token goes to the first rotation naming it.
        let mut unclaimed = marked;
        for (i, old, _) in &rotations {
            match unclaimed.iter().position(|m| m == old) {
                Some(p) => {
                    unclaimed.swap_remove(p);
                }
                None => outcomes[*i] = Outcome::Rotated(false),
            }
        }
    }

    // The users of the grants that need one, in one read; each grant gets
    // its user only if they are active.
    let checked: Vec<Uuid> = writes
        .iter()
        .filter_map(|w| match w {
            GrantWrite::Create { user: Some(u), .. } | GrantWrite::Rotate { user: Some(u), .. } => {
                Some(u.id)
            }
            _ => None,
        })
        .collect();
    if !checked.is_empty() {
        let rows = users::Entity::find()
            .filter(users::Column::Id.is_in(checked))
            .find_also_related(memberships::Entity)
            .and_also_related(organizations::Entity)
            .all(&txn)
            .await
            .map_err(statement)?;
        let found = users_with_organizations(rows).map_err(Failure::Statement)?;
        for (write, outcome) in writes.iter().zip(outcomes.iter_mut()) {
            let (GrantWrite::Create { user: Some(u), .. }
            | GrantWrite::Rotate { user: Some(u), .. }) = write
            else {
                continue;
            };
            let Some((user, orgs)) = found
                .iter()
                .find(|(user, _)| user.id.0 == u.id && user.status == UserStatus::Active)
            else {
                continue;
            };
            let found = Box::new((user.clone(), u.with_organizations.then(|| orgs.clone())));
            match outcome {
                Outcome::NoActiveUser => *outcome = Outcome::CreatedFor(found),
                Outcome::RotatedFor(_) => *outcome = Outcome::RotatedFor(Some(found)),
                // A rotation that lost reads no user.
                _ => {}
            }
        }
    }

    let mut families = Vec::new();
    let mut tokens = Vec::new();
    for (write, outcome) in writes.iter().zip(&outcomes) {
        match (write, outcome) {
            (_, Outcome::NoActiveUser | Outcome::Rotated(false)) => {}
            (GrantWrite::Create { family, first, .. }, _) => {
                families.push(token_families::ActiveModel::clone(family));
                tokens.extend(first.clone());
            }
            (GrantWrite::Rotate { next, .. }, _) => tokens.push(next.clone()),
        }
    }
    // Families first: the tokens refer to them.
    if !families.is_empty() {
        token_families::Entity::insert_many(families)
            .exec_without_returning(&txn)
            .await
            .map_err(statement)?;
    }
    if !tokens.is_empty() {
        refresh_tokens::Entity::insert_many(tokens)
            .exec_without_returning(&txn)
            .await
            .map_err(statement)?;
    }
    txn.commit().await.map_err(|e| Failure::Commit(db_err(e)))?;
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SeaStorage;
    use idp_core::domain::{
        ClientId, CustomerId, Email, Organization, RefreshTokenRecord, Role, TokenFamily,
        TokenHash, UserId,
    };
    use idp_core::ports::{TokenFamilyRepo, UserRepo};
    use time::Duration;

    const T0: OffsetDateTime = time::macros::datetime!(2026-03-01 10:00:00 UTC);

    async fn user(s: &SeaStorage) -> UserId {
        user_with(s, "alice@example.com", "ab12345-xyz", UserStatus::Active).await
    }

    async fn user_with(
        s: &SeaStorage,
        email: &str,
        customer_id: &str,
        status: UserStatus,
    ) -> UserId {
        let u = User {
            id: UserId(Uuid::now_v7()),
            customer_id: CustomerId::parse(customer_id).unwrap(),
            email: Email::parse(email).unwrap(),
            email_verified: true,
            name: None,
            locale: None,
            status,
            phone: None,
            phone_verified: false,
            mfa_required: false,
            last_method: None,
            backup_email: None,
            created_at: T0,
            updated_at: T0,
        };
        UserRepo::create(s, &u).await.unwrap();
        u.id
    }

    fn family(user: UserId) -> TokenFamily {
        TokenFamily {
            claims: Default::default(),
            id: Uuid::now_v7(),
            user_id: user,
            client_id: ClientId("marketplace".into()),
            scope: "openid".into(),
            sid: None,
            auth_time: T0,
            acr: None,
            amr: vec!["pwd".into()],
            created_at: T0,
            expires_at: T0 + Duration::days(30),
            revoked_at: None,
            revoked_reason: None,
            resources: Vec::new(),
            dpop_jkt: None,
        }
    }

    fn token(family: &TokenFamily, secret: &str) -> RefreshTokenRecord {
        RefreshTokenRecord {
            id: Uuid::now_v7(),
            family_id: family.id,
            token_hash: TokenHash::of(secret),
            created_at: T0,
            expires_at: T0 + Duration::days(1),
            used_at: None,
        }
    }

    fn create(f: &TokenFamily, first: Option<&RefreshTokenRecord>) -> GrantWrite {
        GrantWrite::Create {
            family: Box::new(token_families::ActiveModel::try_from(f).unwrap()),
            first: first.map(refresh_tokens::ActiveModel::from),
            user: None,
        }
    }

    fn create_checked(f: &TokenFamily, with_organizations: bool) -> GrantWrite {
        GrantWrite::Create {
            family: Box::new(token_families::ActiveModel::try_from(f).unwrap()),
            first: None,
            user: Some(UserCheck {
                id: f.user_id.0,
                with_organizations,
            }),
        }
    }

    /// The outcomes in short: "created", "for <email> <organizations>",
    /// "no user", "won", "lost".
    fn summary(outcomes: &[Outcome]) -> Vec<String> {
        outcomes
            .iter()
            .map(|o| match o {
                Outcome::Created => "created".to_owned(),
                Outcome::CreatedFor(found) => format!(
                    "for {} {:?}",
                    found.0.email.as_str(),
                    found.1.as_ref().map(|orgs| orgs
                        .iter()
                        .map(|(o, roles)| format!("{}:{roles:?}", o.name))
                        .collect::<Vec<_>>())
                ),
                Outcome::NoActiveUser => "no user".to_owned(),
                Outcome::Rotated(true) => "won".to_owned(),
                Outcome::RotatedFor(found) => format!(
                    "won for {:?}",
                    found.as_ref().map(|f| f.0.email.as_str().to_owned())
                ),
                Outcome::Rotated(false) => "lost".to_owned(),
            })
            .collect()
    }

    fn rotate(old: Uuid, at: OffsetDateTime, next: &RefreshTokenRecord) -> GrantWrite {
        GrantWrite::Rotate {
            old,
            at,
            next: refresh_tokens::ActiveModel::from(next),
            user: None,
        }
    }

    /// Writes of every kind in one transaction: each gets its own outcome,
    /// and only the winners' rows are written.
    async fn one_batch_keeps_each_outcome(s: &SeaStorage) {
        let uid = user(s).await;
        let a = family(uid);
        let a0 = token(&a, "a0");
        s.create_family(&a, Some(&a0)).await.unwrap();
        let b = family(uid);
        let b0 = token(&b, "b0");
        let c = family(uid);
        let (a1, a1_late, stray) = (token(&a, "a1"), token(&a, "a1-late"), token(&a, "x"));
        let used = T0 + Duration::seconds(7);

        // Users checked in the same batch: active with an organization,
        // active without, disabled, unknown.
        let org = Organization {
            id: idp_core::domain::OrgId(Uuid::now_v7()),
            name: "Acme".into(),
            siret: None,
            country: "FR".into(),
            status: idp_core::domain::OrgStatus::Pending,
            created_by: uid,
            created_at: T0,
            decided_at: None,
            mfa_required_for: vec![],
            password_policy: Default::default(),
        };
        let admin = idp_core::domain::Membership {
            org_id: org.id,
            user_id: uid,
            roles: vec![Role::Administrator],
            created_at: T0,
        };
        idp_core::ports::OrgRepo::create_org(s, &org, &admin)
            .await
            .unwrap();
        let bob = user_with(s, "bob@example.com", "bo12345-xyz", UserStatus::Active).await;
        let off = user_with(s, "off@example.com", "of12345-xyz", UserStatus::Disabled).await;
        let (e, f, g, h, k) = (
            family(uid),
            family(bob),
            family(off),
            family(UserId(Uuid::now_v7())),
            family(uid),
        );

        let writes = [
            create(&b, Some(&b0)),
            rotate(a0.id, used, &a1),
            rotate(a0.id, used + Duration::seconds(1), &a1_late),
            rotate(Uuid::now_v7(), used, &stray),
            create(&c, None),
            create_checked(&e, true),
            create_checked(&f, true),
            create_checked(&g, true),
            create_checked(&h, false),
            create_checked(&k, false),
        ];
        let outcomes = apply(&s.writer, &writes.iter().collect::<Vec<_>>())
            .await
            .unwrap_or_else(|_| panic!("the batch failed"));
        assert_eq!(
            summary(&outcomes),
            [
                "created",
                "won",
                "lost",
                "lost",
                "created",
                "for alice@example.com Some([\"Acme:[Administrator]\"])",
                "for bob@example.com Some([])",
                "no user",
                "no user",
                "for alice@example.com None",
            ]
        );
        if let Outcome::CreatedFor(found) = &outcomes[5] {
            let (user, orgs) = s.find_with_organizations(uid).await.unwrap().unwrap();
            assert_eq!(
                **found,
                (user, Some(orgs)),
                "as the user's own read gives it"
            );
        }
        for written in [&e, &f, &k] {
            assert_eq!(
                s.find_family(written.id).await.unwrap().as_ref(),
                Some(written)
            );
        }
        for refused in [&g, &h] {
            assert_eq!(s.find_family(refused.id).await.unwrap(), None);
        }
        assert_eq!(s.find_family(b.id).await.unwrap(), Some(b));
        assert_eq!(s.find_family(c.id).await.unwrap(), Some(c));
        assert_eq!(
            s.find_refresh_token(&b0.token_hash).await.unwrap(),
            Some(b0)
        );
        assert_eq!(
            s.find_refresh_token(&a1.token_hash).await.unwrap(),
            Some(a1)
        );
        for lost in [&a1_late, &stray] {
            assert_eq!(s.find_refresh_token(&lost.token_hash).await.unwrap(), None);
        }
        let a0_now = s.find_refresh_token(&a0.token_hash).await.unwrap().unwrap();
        assert_eq!(a0_now.used_at, Some(used), "the winner's time");
    }

    /// A batch with a faulty write: the others are written anyway, each in
    /// a transaction of its own, and only the faulty one fails.
    async fn a_faulty_write_fails_alone(s: &SeaStorage) {
        let uid = user(s).await;
        let a = family(uid);
        let a0 = token(&a, "a0");
        s.create_family(&a, Some(&a0)).await.unwrap();
        let (d, a1) = (family(uid), token(&a, "a1"));
        let d0 = token(&d, "d0");

        // Queued before the worker starts, so it takes all three at once.
        let (jobs, queue) = mpsc::unbounded_channel();
        let mut outcomes = Vec::new();
        for write in [
            create(&d, Some(&d0)),
            create(&a, None), // the same family again
            rotate(a0.id, T0, &a1),
        ] {
            let (done, outcome) = oneshot::channel();
            jobs.send(Job { write, done }).unwrap();
            outcomes.push(outcome);
        }
        drop(jobs);
        work(s.writer.clone(), Arc::new(Mutex::new(queue))).await;

        let mut outcomes = outcomes.into_iter();
        assert!(matches!(
            outcomes.next().unwrap().await.unwrap(),
            Ok(Outcome::Created)
        ));
        assert!(matches!(
            outcomes.next().unwrap().await.unwrap(),
            Err(RepoError::Conflict(_))
        ));
        assert!(matches!(
            outcomes.next().unwrap().await.unwrap(),
            Ok(Outcome::Rotated(true))
        ));
        assert_eq!(s.find_family(d.id).await.unwrap(), Some(d));
        assert_eq!(
            s.find_refresh_token(&d0.token_hash).await.unwrap(),
            Some(d0)
        );
        assert_eq!(
            s.find_refresh_token(&a1.token_hash).await.unwrap(),
            Some(a1)
        );
    }

    async fn on_each_backend<F, Fut>(case: F)
    where
        F: Fn(SeaStorage) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        case(crate::testing::fresh_sqlite().await).await;

        let dir = std::env::temp_dir().join(format!("idp-grants-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = SeaStorage::connect(&format!("sqlite://{}/idp.db?mode=rwc", dir.display()))
            .await
            .unwrap();
        file.migrate().await.unwrap();
        let outcome = tokio::spawn(case(file)).await;
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }

        let db = crate::testing::fresh_postgres().await;
        let pg = SeaStorage::connect(db.url()).await.unwrap();
        pg.migrate().await.unwrap();
        let outcome = tokio::spawn(case(pg)).await;
        db.drop_database().await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_batch_keeps_each_outcome_on_each_backend() {
        on_each_backend(|s| async move { one_batch_keeps_each_outcome(&s).await }).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_faulty_write_fails_alone_on_each_backend() {
        on_each_backend(|s| async move { a_faulty_write_fails_alone(&s).await }).await;
    }
}
