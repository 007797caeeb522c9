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

use crate::entities::{refresh_tokens, token_families};
use crate::{db_err, stored_time};
use idp_core::ports::RepoError;
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
    /// A new grant and, when the client gets refresh tokens, its first one.
    Create {
        family: Box<token_families::ActiveModel>,
        first: Option<refresh_tokens::ActiveModel>,
    },
    /// The refresh token `old` used `at`, replaced by `next`: done only if
    /// `old` is still unused.
    Rotate {
        old: Uuid,
        at: OffsetDateTime,
        next: refresh_tokens::ActiveModel,
    },
}

#[derive(Debug)]
struct Job {
    write: GrantWrite,
    done: oneshot::Sender<Result<bool, RepoError>>,
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

    /// Queues `write` and waits for its outcome: for a rotation, whether it
    /// won; for a new grant, `true`.
    pub(crate) async fn write(&self, write: GrantWrite) -> Result<bool, RepoError> {
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
                        Ok(outcomes) => Ok(outcomes[0]),
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
async fn apply(db: &DatabaseConnection, writes: &[&GrantWrite]) -> Result<Vec<bool>, Failure> {
    let statement = |e| Failure::Statement(db_err(e));
    let txn = db.begin().await.map_err(statement)?;
    let mut outcomes = vec![true; writes.len()];

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
                None => outcomes[*i] = false,
            }
        }
    }

    let mut families = Vec::new();
    let mut tokens = Vec::new();
    for (write, won) in writes.iter().zip(&outcomes) {
        match write {
            GrantWrite::Create { family, first } => {
                families.push(token_families::ActiveModel::clone(family));
                tokens.extend(first.clone());
            }
            GrantWrite::Rotate { next, .. } if *won => tokens.push(next.clone()),
            GrantWrite::Rotate { .. } => {}
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
        ClientId, CustomerId, Email, RefreshTokenRecord, TokenFamily, TokenHash, User, UserId,
        UserStatus,
    };
    use idp_core::ports::{TokenFamilyRepo, UserRepo};
    use time::Duration;

    const T0: OffsetDateTime = time::macros::datetime!(2026-03-01 10:00:00 UTC);

    async fn user(s: &SeaStorage) -> UserId {
        let u = User {
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
            created_at: T0,
            updated_at: T0,
        };
        UserRepo::create(s, &u).await.unwrap();
        u.id
    }

    fn family(user: UserId) -> TokenFamily {
        TokenFamily {
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
        }
    }

    fn rotate(old: Uuid, at: OffsetDateTime, next: &RefreshTokenRecord) -> GrantWrite {
        GrantWrite::Rotate {
            old,
            at,
            next: refresh_tokens::ActiveModel::from(next),
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

        let writes = [
            create(&b, Some(&b0)),
            rotate(a0.id, used, &a1),
            rotate(a0.id, used + Duration::seconds(1), &a1_late),
            rotate(Uuid::now_v7(), used, &stray),
            create(&c, None),
        ];
        let outcomes = apply(&s.writer, &writes.iter().collect::<Vec<_>>())
            .await
            .unwrap_or_else(|_| panic!("the batch failed"));
        assert_eq!(outcomes, vec![true, true, false, false, true]);

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
        assert!(outcomes.next().unwrap().await.unwrap().unwrap());
        assert!(matches!(
            outcomes.next().unwrap().await.unwrap(),
            Err(RepoError::Conflict(_))
        ));
        assert!(outcomes.next().unwrap().await.unwrap().unwrap());
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
