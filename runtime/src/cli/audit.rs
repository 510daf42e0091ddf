//! `nexus audit tail`: reads the record store directly, so it works while
//! another `nexus` process holds the data directory; with `--node`, a
//! zone's records in that node's log (for an admin of the zone).

use std::time::Duration;

use nexus_kernel::{RecordStore, StoredRecord};

use super::args::AuditCmd;
use crate::ops::{OpError, OpResult, Ops};
use crate::output;

/// The audit log's SQLite file in a data directory (embedded or a node's).
pub const RECORDS: &str = "records.db";

fn print(r: &StoredRecord, json: bool) -> OpResult {
    if json {
        let line = serde_json::to_string(r).map_err(|e| OpError::Usage(format!("json: {e}")))?;
        println!("{line}");
    } else {
        let a = &r.record;
        println!(
            "{} {:<8} pid {:<5} {:<20} {:<12} {:<8} {}",
            output::time(a.time),
            a.zone,
            a.pid,
            output::shown(&a.principal),
            a.op,
            a.result,
            output::shown(&a.path)
        );
    }
    Ok(())
}

/// Where `audit tail` reads: the record store itself (the data
/// directory's, or `--record-store`), or a node, for one zone.
pub enum Source<'a> {
    Store(&'a RecordStore),
    Node(&'a dyn Ops),
}

impl Source<'_> {
    async fn tail(
        &self,
        zone: Option<&str>,
        after: Option<i64>,
        limit: i64,
    ) -> OpResult<Vec<StoredRecord>> {
        match self {
            Source::Store(store) => Ok(store.tail(zone, after, limit).await?),
            Source::Node(ops) => {
                let zone = zone.ok_or_else(|| {
                    OpError::Usage(
                        "through a node, audit tail needs --zone (a zone you administer)".into(),
                    )
                })?;
                ops.audit_tail(zone, after, limit).await
            }
        }
    }
}

pub async fn run(source: Source<'_>, cmd: AuditCmd) -> OpResult {
    let AuditCmd::Tail {
        zone,
        follow,
        lines,
        json,
    } = cmd;
    let mut last = 0;
    for r in source.tail(zone.as_deref(), None, lines.max(0)).await? {
        last = r.id;
        print(&r, json)?;
    }
    if !follow {
        return Ok(());
    }
    // Until interrupted.
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        for r in source.tail(zone.as_deref(), Some(last), 1000).await? {
            last = r.id;
            print(&r, json)?;
        }
    }
}
