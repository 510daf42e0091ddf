//! The audit log: every denied operation and every mutation, as rows in a
//! RecordStore (sqlx: SQLite in the data directory by default, PostgreSQL
//! by URL).
//!
//! Records leave the hot path through a bounded queue to one writer task,
//! which inserts them in batches (one transaction per batch; a batch short
//! of full waits 5 ms for more, so a burst of writes through the preview1
//! adapter, 256 calls per MiB, is not a transaction and two thread
//! wake-ups per call). `flush` waits
//! until everything queued before it is committed; `Kernel::shutdown` calls
//! it, so a clean shutdown loses nothing. If the queue is full (the store
//! cannot keep up), records are counted, not queued, and the count is itself
//! written as an `audit-overflow` record once there is room.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Row;
use tokio::sync::{mpsc, oneshot};

use crate::error::{KernelError, Result};

/// Records queued at most before the writer catches up.
const QUEUE: usize = 64 * 1024;
/// Records per insert transaction at most.
const BATCH: usize = 1024;
/// Rows per INSERT statement (7 parameters each: within SQLite's 32,766
/// and PostgreSQL's 65,535).
const ROWS_PER_STATEMENT: usize = 1024;
/// How long a batch short of full waits for more records.
const LINGER: std::time::Duration = std::time::Duration::from_millis(5);

/// One audited event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// Nanoseconds since the Unix epoch.
    pub time: i64,
    pub zone: String,
    pub pid: u64,
    pub principal: String,
    pub op: String,
    pub path: String,
    /// `ok`, `denied`, or the error code of a failed mutation.
    pub result: String,
}

/// A stored record with its sequence number.
#[derive(Debug, Clone, Serialize)]
pub struct StoredRecord {
    pub id: i64,
    #[serde(flatten)]
    pub record: AuditRecord,
}

fn db_err(e: sqlx::Error) -> KernelError {
    KernelError::Storage(format!("record store: {e}"))
}

/// Where records are kept.
#[derive(Clone)]
pub enum RecordStore {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

const SQLITE_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, time BIGINT NOT NULL, zone TEXT NOT NULL,
    pid BIGINT NOT NULL, principal TEXT NOT NULL, op TEXT NOT NULL, path TEXT NOT NULL,
    result TEXT NOT NULL)";
const PG_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS audit (
    id BIGSERIAL PRIMARY KEY, time BIGINT NOT NULL, zone TEXT NOT NULL,
    pid BIGINT NOT NULL, principal TEXT NOT NULL, op TEXT NOT NULL, path TEXT NOT NULL,
    result TEXT NOT NULL)";

impl RecordStore {
    /// SQLite at `path` (created if missing), in WAL mode so `audit tail`
    /// can read while a node writes.
    pub async fn sqlite(path: &Path) -> Result<Self> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal);
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(opts)
            .await
            .map_err(db_err)?;
        sqlx::query(SQLITE_SCHEMA)
            .execute(&pool)
            .await
            .map_err(db_err)?;
        Ok(RecordStore::Sqlite(pool))
    }

    pub async fn postgres(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(url)
            .await
            .map_err(db_err)?;
        sqlx::query(PG_SCHEMA)
            .execute(&pool)
            .await
            .map_err(db_err)?;
        Ok(RecordStore::Postgres(pool))
    }

    /// `postgres://…` or `postgresql://…` selects PostgreSQL; anything else
    /// (or nothing) is SQLite at `default_sqlite`, or at `sqlite://PATH`.
    pub async fn open(url: Option<&str>, default_sqlite: &Path) -> Result<Self> {
        match url {
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                Self::postgres(u).await
            }
            Some(u) if u.starts_with("sqlite://") => {
                Self::sqlite(Path::new(&u["sqlite://".len()..])).await
            }
            Some(u) if !u.is_empty() => Err(KernelError::Invalid(format!(
                "record store {u:?}: use postgres://… or sqlite://PATH"
            ))),
            _ => Self::sqlite(default_sqlite).await,
        }
    }

    pub async fn insert(&self, records: &[AuditRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        // Many rows per statement: each statement is a round trip to the
        // database (for SQLite, to its connection's thread), so one per row
        // cost a thread hand-off per record.
        macro_rules! insert_all {
            ($pool:expr, $db:ty) => {{
                let mut tx = $pool.begin().await.map_err(db_err)?;
                for rows in records.chunks(ROWS_PER_STATEMENT) {
                    let mut insert = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO audit (time, zone, pid, principal, op, path, result) ",
                    );
                    insert.push_values(rows, |mut row, r| {
                        row.push_bind(r.time)
                            .push_bind(&r.zone)
                            .push_bind(r.pid as i64)
                            .push_bind(&r.principal)
                            .push_bind(&r.op)
                            .push_bind(&r.path)
                            .push_bind(&r.result);
                    });
                    insert.build().execute(&mut *tx).await.map_err(db_err)?;
                }
                tx.commit().await.map_err(db_err)
            }};
        }
        match self {
            RecordStore::Sqlite(p) => insert_all!(p, sqlx::Sqlite),
            RecordStore::Postgres(p) => insert_all!(p, sqlx::Postgres),
        }
    }

    /// Records with id > `after`, oldest first, at most `limit`; with
    /// `after == None`, the newest `limit` records. `zone` filters.
    pub async fn tail(
        &self,
        zone: Option<&str>,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<StoredRecord>> {
        let order = if after.is_some() { "ASC" } else { "DESC" };
        let sql = |p: &dyn Fn(u8) -> String| {
            format!(
                "SELECT id, time, zone, pid, principal, op, path, result FROM audit \
                 WHERE id > {} AND ({} = '' OR zone = {}) ORDER BY id {order} LIMIT {}",
                p(1),
                p(2),
                p(2),
                p(3)
            )
        };
        let (after, zone) = (after.unwrap_or(0), zone.unwrap_or(""));
        macro_rules! fetch {
            ($pool:expr, $sql:expr) => {
                sqlx::query(&$sql)
                    .bind(after)
                    .bind(zone)
                    .bind(limit)
                    .fetch_all($pool)
                    .await
                    .map_err(db_err)?
                    .into_iter()
                    .map(|row| {
                        Ok(StoredRecord {
                            id: row.try_get("id").map_err(db_err)?,
                            record: AuditRecord {
                                time: row.try_get("time").map_err(db_err)?,
                                zone: row.try_get("zone").map_err(db_err)?,
                                pid: row.try_get::<i64, _>("pid").map_err(db_err)? as u64,
                                principal: row.try_get("principal").map_err(db_err)?,
                                op: row.try_get("op").map_err(db_err)?,
                                path: row.try_get("path").map_err(db_err)?,
                                result: row.try_get("result").map_err(db_err)?,
                            },
                        })
                    })
                    .collect::<Result<Vec<_>>>()?
            };
        }
        let mut rows = match self {
            RecordStore::Sqlite(pool) => fetch!(pool, sql(&|n| format!("?{n}"))),
            RecordStore::Postgres(pool) => fetch!(pool, sql(&|n| format!("${n}"))),
        };
        if order == "DESC" {
            rows.reverse();
        }
        Ok(rows)
    }
}

enum Msg {
    Record(AuditRecord),
    Flush(oneshot::Sender<Result<()>>),
}

/// The hot path's handle on the audit log.
pub struct AuditSink {
    /// Where the writer writes; read back by `Kernel::audit_tail`.
    store: RecordStore,
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    overflow: std::sync::Arc<AtomicU64>,
}

impl AuditSink {
    /// Starts the writer task on the current tokio runtime.
    pub fn spawn(store: RecordStore) -> Self {
        let (tx, mut rx) = mpsc::channel::<Msg>(QUEUE);
        let overflow = std::sync::Arc::new(AtomicU64::new(0));
        let lost = overflow.clone();
        let reader = store.clone();
        let writer = tokio::spawn(async move {
            let mut inbox = Vec::with_capacity(BATCH);
            let mut batch = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut inbox, BATCH).await > 0 {
                // A batch short of full waits a moment for what follows
                // (unless a flush waits for it): a burst of records is one
                // transaction and one wake-up of this task, not one each.
                if inbox.len() < BATCH && !inbox.iter().any(|m| matches!(m, Msg::Flush(_))) {
                    tokio::time::sleep(LINGER).await;
                    while inbox.len() < BATCH {
                        match rx.try_recv() {
                            Ok(m) => inbox.push(m),
                            Err(_) => break,
                        }
                    }
                }
                let mut waiters = Vec::new();
                for m in inbox.drain(..) {
                    match m {
                        Msg::Record(r) => batch.push(r),
                        Msg::Flush(w) => waiters.push(w),
                    }
                }
                let dropped = lost.swap(0, Ordering::Relaxed);
                if dropped > 0 {
                    batch.push(AuditRecord {
                        time: crate::types::now(),
                        zone: String::new(),
                        pid: 0,
                        principal: String::new(),
                        op: "audit-overflow".into(),
                        path: String::new(),
                        result: format!("{dropped} records not written: queue full"),
                    });
                }
                let written = store.insert(&batch).await;
                if let Err(e) = &written {
                    tracing::error!("audit batch of {} records failed: {e}", batch.len());
                }
                batch.clear();
                for w in waiters {
                    let _ = w.send(written.clone());
                }
            }
        });
        AuditSink {
            store: reader,
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            overflow,
        }
    }

    pub fn store(&self) -> &RecordStore {
        &self.store
    }

    pub fn record(&self, r: AuditRecord) {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match tx {
            Some(tx) if tx.try_send(Msg::Record(r)).is_ok() => {}
            _ => {
                self.overflow.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Waits until every record queued before this call is committed.
    pub async fn flush(&self) -> Result<()> {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(tx) = tx else { return Ok(()) };
        let (w, r) = oneshot::channel();
        tx.send(Msg::Flush(w))
            .await
            .map_err(|_| KernelError::Storage("audit writer stopped".into()))?;
        r.await
            .map_err(|_| KernelError::Storage("audit writer stopped".into()))?
    }

    /// Flushes, then stops the writer.
    pub async fn close(&self) -> Result<()> {
        let flushed = self.flush().await;
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = writer {
            let _ = w.await;
        }
        flushed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize) -> AuditRecord {
        AuditRecord {
            time: i as i64,
            zone: format!("z{}", i % 3),
            pid: i as u64,
            principal: "user:o'brien".into(),
            op: "write".into(),
            path: format!("/f{i}"),
            result: "ok".into(),
        }
    }

    /// A burst larger than one statement's rows, written through the sink
    /// (batches, the linger, several statements per batch): every record
    /// lands once, in order, with its fields.
    #[tokio::test]
    async fn a_burst_of_records_lands_whole_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::sqlite(&dir.path().join("audit.db"))
            .await
            .unwrap();
        let n = 2 * ROWS_PER_STATEMENT + 7;
        store
            .insert(&(0..n).map(record).collect::<Vec<_>>())
            .await
            .unwrap();
        let sink = AuditSink::spawn(store.clone());
        for i in n..2 * n {
            sink.record(record(i));
        }
        sink.close().await.unwrap();
        let got = store.tail(None, Some(0), 4 * n as i64).await.unwrap();
        let got: Vec<AuditRecord> = got.into_iter().map(|r| r.record).collect();
        assert_eq!(got, (0..2 * n).map(record).collect::<Vec<_>>());
    }
}
