//! `nexus zone …` and `nexus gc`.

use nexus_kernel::kernel::Kernel;
use nexus_kernel::types::ZoneId;
use serde::Serialize;

use crate::cli::ZoneCmd;
use crate::error::{CliError, CliResult};
use crate::output;

#[derive(Serialize)]
struct ZoneRow {
    name: String,
    created: i64,
    applied_index: u64,
    replicas: Vec<u64>,
}

pub async fn run(k: &Kernel, cmd: ZoneCmd) -> CliResult {
    match cmd {
        ZoneCmd::Create { name } => {
            let id = ZoneId::new(&name)?;
            k.create_zone(&id).await?;
            println!("created zone {id}");
        }
        ZoneCmd::List { json } => {
            let mut rows = Vec::new();
            for r in k.zone_records()? {
                rows.push(ZoneRow {
                    applied_index: k.zone_state(&r.id)?.applied_index()?,
                    name: r.id.to_string(),
                    created: r.created,
                    replicas: r.replicas.iter().map(|(id, _)| *id).collect(),
                });
            }
            if json {
                return output::json(&rows);
            }
            println!("{:<24} {:<20} {:>10}", "ZONE", "CREATED", "APPLIED");
            for r in rows {
                println!(
                    "{:<24} {:<20} {:>10}",
                    r.name,
                    output::time(r.created),
                    r.applied_index
                );
            }
        }
        ZoneCmd::Check { name, deep, json } => {
            let id = ZoneId::new(&name)?;
            let report = k.check_zone(&id, deep).await?;
            if json {
                output::json(&report)?;
            } else {
                println!(
                    "zone {}: {} inodes ({} dirs, {} files, {} bytes in {} chunks), applied index {}",
                    report.zone, report.inodes, report.directories, report.files, report.bytes, report.chunks, report.applied_index
                );
                for p in &report.problems {
                    println!("problem: {p}");
                }
                if report.consistent() {
                    println!("consistent");
                }
            }
            if !report.consistent() {
                return Err(CliError::Failed(format!(
                    "zone {name} is inconsistent: {} problem(s)",
                    report.problems.len()
                )));
            }
        }
        ZoneCmd::Destroy { name, yes } => {
            let id = ZoneId::new(&name)?;
            if !yes {
                return Err(CliError::Usage(format!(
                    "destroying zone {id} deletes all its files; repeat with --yes to confirm"
                )));
            }
            k.destroy_zone(&id)?;
            println!("destroyed zone {id}");
        }
    }
    Ok(())
}

pub async fn gc(k: &Kernel, json: bool) -> CliResult {
    let r = k.gc().await?;
    if json {
        return output::json(&r);
    }
    println!(
        "scanned {} chunks, {} referenced, deleted {} ({} bytes freed)",
        r.scanned, r.referenced, r.deleted, r.bytes_freed
    );
    Ok(())
}
