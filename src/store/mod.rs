//! PostgreSQL persistence: sagas, their history, outbox, inbox, timers and definition
//! snapshots. Every function that changes a saga takes the caller's transaction, so a
//! transition's state, history, messages and timers commit together or not at all.

mod announce;
mod batch;
mod dead_letters;
mod listing;
mod outbox;
mod queries;
mod starts;
pub mod wake;

pub use announce::Announcement;
pub use batch::WriteBatch;
pub use dead_letters::*;
pub use listing::*;
pub use outbox::*;
pub use queries::*;
pub use starts::{Inserted, NewSaga, insert_sagas};

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Executor, PgPool, Postgres, Transaction};

pub type Tx<'c> = Transaction<'c, Postgres>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored state of saga {id} cannot be read")]
    CorruptState {
        id: uuid::Uuid,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid database URL")]
    Url(#[source] sqlx::Error),
}

/// Embedded so the binary migrates itself (`sagaflow migrate`, or at `serve` start).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Clone)]
pub struct Store {
    pub pool: PgPool,
    /// Bumped after this process commits outbox rows, and on other writers' `NOTIFY`
    /// of the outbox channel: this replica's relay starts a round without waiting for
    /// its own notification to come back from PostgreSQL.
    outbox_wake: Arc<tokio::sync::watch::Sender<u64>>,
    /// This store's `NOTIFY` payload on the outbox channel, by which its relay tells
    /// its own commits (already woken for) from other writers'.
    origin: Arc<str>,
    /// Sends what this process's commits announce to other processes, after the commit.
    announcer: announce::Announcer,
}

impl Store {
    pub fn from_pool(pool: PgPool) -> Store {
        let origin: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
        Store {
            announcer: announce::Announcer::spawn(pool.clone(), origin.clone()),
            pool,
            outbox_wake: Arc::new(tokio::sync::watch::Sender::new(0)),
            origin,
        }
    }

    /// See `origin`: the payload of this store's outbox notifications.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// A transaction that wrote `a` was committed (or its commit failed, and it may
    /// have been): wakes this process's relay if it wrote outbox rows, and announces it
    /// to other replicas' relays and to live streams.
    pub fn committed(&self, a: Announcement) {
        if a.outbox {
            self.outbox_written();
        }
        self.announcer.send(a);
    }

    /// Commits `tx`, which wrote `a`, and announces it (see [`committed`](Self::committed))
    /// also when the commit fails: a failed commit may have committed all the same.
    pub async fn commit(&self, tx: Tx<'_>, a: Announcement) -> Result<(), StoreError> {
        let committed = tx.commit().await.map_err(StoreError::from);
        self.committed(a);
        committed
    }

    /// Outbox rows were committed: wakes this process's relay, and only it (see
    /// [`committed`](Self::committed)).
    pub fn outbox_written(&self) {
        self.outbox_wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// What [`outbox_written`](Self::outbox_written) bumps, for the relay to wait on.
    pub fn outbox_woken(&self) -> tokio::sync::watch::Receiver<u64> {
        self.outbox_wake.subscribe()
    }

    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(StoreError::Url)?
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500));
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Ok(Store::from_pool(pool))
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    pub async fn begin(&self) -> Result<Tx<'static>, StoreError> {
        Ok(self.pool.begin().await?)
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.pool.execute("SELECT 1").await?;
        Ok(())
    }
}

/// Creates the database named in `url` if it does not exist (used by `sagaflow dev`
/// and tests), connecting to the server's `postgres` database to do so.
pub async fn ensure_database(url: &str) -> Result<(), StoreError> {
    let options = PgConnectOptions::from_str(url).map_err(StoreError::Url)?;
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let admin = options.clone().database("postgres");
    let mut conn = admin.connect().await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        // Two processes may race to create it; the loser's error is harmless.
        if let Err(e) = conn.execute(sql.as_str()).await {
            let duplicate = e
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c == "42P04");
            if !duplicate {
                return Err(e.into());
            }
        }
    }
    Ok(())
}
