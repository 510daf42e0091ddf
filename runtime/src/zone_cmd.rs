//! `nexus zone …` and `nexus gc`.

use nexus_kernel::check::CheckReport;
use nexus_kernel::content::GcReport;
use nexus_kernel::driver::ZoneStatus;
use nexus_kernel::kernel::Kernel;
use nexus_kernel::types::ZoneId;
use serde::Serialize;

use crate::cli::ZoneCmd;
use crate::error::{CliError, CliResult};
use crate::output;
use crate::session::Acting;

/// A row of `nexus zone list`.
#[derive(Serialize, serde::Deserialize)]
pub struct ZoneRow {
    name: String,
    created: i64,
    applied_index: u64,
    replicas: Vec<u64>,
}

impl ZoneRow {
    pub fn of(k: &Kernel, r: &nexus_kernel::kernel::ZoneRecord) -> CliResult<Self> {
        Ok(ZoneRow {
            applied_index: k.zone_state(&r.id)?.applied_index()?,
            name: r.id.to_string(),
            created: r.created,
            replicas: r.replicas.iter().map(|(id, _)| *id).collect(),
        })
    }
}

pub fn print_list(rows: &[ZoneRow], json: bool) -> CliResult {
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
    Ok(())
}

pub async fn run(k: &Kernel, acting: &Acting, cmd: ZoneCmd) -> CliResult {
    match cmd {
        ZoneCmd::Create { name, replicas } => {
            if !replicas.is_empty() {
                return Err(CliError::Usage(
                    "--replicas places a zone on several nodes: use it with --node".into(),
                ));
            }
            let id = ZoneId::new(&name)?;
            k.create_zone(&acting.principal, &id).await?;
            println!("created zone {id}");
        }
        ZoneCmd::AddReplica { .. } | ZoneCmd::RemoveReplica { .. } => {
            return Err(CliError::Usage(
                "a zone's replicas live on the nodes of a cluster: use --node".into(),
            ));
        }
        ZoneCmd::Status { name, json } => {
            let status = k.zone_status(&acting.task(k, &name)?).await?;
            print_status(&name, &status, json)?;
        }
        ZoneCmd::List { json } => {
            let rows = k
                .zone_records()?
                .iter()
                .map(|r| ZoneRow::of(k, r))
                .collect::<CliResult<Vec<_>>>()?;
            print_list(&rows, json)?;
        }
        ZoneCmd::Check { name, deep, json } => {
            let report = k.check_zone(&acting.task(k, &name)?, deep).await?;
            print_check(&report, json)?;
        }
        ZoneCmd::Destroy { name, yes } => {
            let task = acting.task(k, &name)?;
            let id = task.zone().clone();
            if !yes {
                return Err(CliError::Usage(format!(
                    "destroying zone {id} deletes all its files; repeat with --yes to confirm"
                )));
            }
            k.destroy_zone(&task)?;
            println!("destroyed zone {id}");
        }
    }
    Ok(())
}

/// GC spans every zone on the node, so it runs as a task in each zone in
/// turn to prove `admin` on all of them.
pub async fn gc(k: &Kernel, acting: &Acting, json: bool) -> CliResult {
    print_gc(&collect(k, acting).await?, json)
}

pub async fn collect(k: &Kernel, acting: &Acting) -> CliResult<GcReport> {
    let tasks = k
        .zone_records()?
        .iter()
        .map(|z| acting.task(k, z.id.as_str()))
        .collect::<CliResult<Vec<_>>>()?;
    Ok(k.gc(&tasks).await?)
}

pub fn print_gc(r: &GcReport, json: bool) -> CliResult {
    if json {
        return output::json(&r);
    }
    println!(
        "scanned {} chunks, {} referenced, deleted {} ({} bytes freed)",
        r.scanned, r.referenced, r.deleted, r.bytes_freed
    );
    Ok(())
}

/// Prints `nexus zone check`'s report (shared with client mode); an
/// inconsistent zone is a failure.
pub fn print_check(report: &CheckReport, json: bool) -> CliResult {
    if json {
        output::json(report)?;
    } else {
        println!(
            "zone {}: {} inodes ({} dirs, {} files, {} bytes in {} chunks), applied index {}",
            report.zone,
            report.inodes,
            report.directories,
            report.files,
            report.bytes,
            report.chunks,
            report.applied_index
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
            "zone {} is inconsistent: {} problem(s)",
            report.zone,
            report.problems.len()
        )));
    }
    Ok(())
}

/// Prints `nexus zone status` (shared with client mode).
pub fn print_status(name: &str, s: &ZoneStatus, json: bool) -> CliResult {
    if json {
        return output::json(s);
    }
    println!("zone:    {name}");
    println!("replica: {} ({})", s.replica, s.role);
    println!("leader:  {}", s.leader);
    println!("term:    {}", s.term);
    println!("commit:  {}", s.commit);
    println!("applied: {}", s.applied);
    println!("voters:  {:?}", s.voters);
    if !s.learners.is_empty() {
        println!("learners: {:?}", s.learners);
    }
    if !s.witnesses.is_empty() {
        println!("witnesses: {:?}", s.witnesses);
    }
    for p in &s.progress {
        println!(
            "  replica {}: matched {}, lag {}",
            p.replica, p.matched, p.lag
        );
    }
    Ok(())
}
