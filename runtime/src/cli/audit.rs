//! `nexus audit tail`: reads the record store directly, so it works while
//! another `nexus` process holds the data directory.

use std::time::Duration;

use nexus_kernel::{RecordStore, StoredRecord};

use super::args::AuditCmd;
use crate::ops::{OpError, OpResult};
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
            a.principal,
            a.op,
            a.result,
            a.path
        );
    }
    Ok(())
}

pub async fn run(store: &RecordStore, cmd: AuditCmd) -> OpResult {
    let AuditCmd::Tail {
        zone,
        follow,
        lines,
        json,
    } = cmd;
    let mut last = 0;
    for r in store.tail(zone.as_deref(), None, lines.max(0)).await? {
        last = r.id;
        print(&r, json)?;
    }
    if !follow {
        return Ok(());
    }
    // Until interrupted.
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        for r in store.tail(zone.as_deref(), Some(last), 1000).await? {
            last = r.id;
            print(&r, json)?;
        }
    }
}
