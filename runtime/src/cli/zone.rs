//! `nexus zone …` and `nexus gc`: arguments in, the operation, output out.

use nexus_kernel::CheckReport;
use nexus_kernel::GcReport;
use nexus_kernel::ZoneQuota;
use nexus_kernel::ZoneStatus;

use super::args::ZoneCmd;
use crate::ops::{Membership, OpError, OpResult, Ops, ReplicaSpec, UsageReport, ZoneRow};
use crate::{output, units};

pub async fn run(ops: &dyn Ops, cmd: ZoneCmd) -> OpResult {
    match cmd {
        ZoneCmd::Create { name, replicas } => {
            let replicas = replicas
                .iter()
                .map(|r| ReplicaSpec::parse(r))
                .collect::<OpResult<Vec<_>>>()?;
            ops.zone_create(&name, &replicas).await?;
            println!("created zone {name}");
        }
        ZoneCmd::AddReplica { name, replica } => {
            let m = ops
                .add_replica(&name, ReplicaSpec::parse(&replica)?)
                .await?;
            print_membership(&name, &m)?;
        }
        ZoneCmd::RemoveReplica { name, member } => {
            print_membership(&name, &ops.remove_replica(&name, member).await?)?;
        }
        ZoneCmd::Status { name, json } => {
            print_status(&name, &ops.zone_status(&name).await?, json)?;
        }
        ZoneCmd::Quota {
            name,
            bytes,
            inodes,
            json,
        } => {
            let set = quota_change(&ops.zone_quota(&name, None).await?, bytes, inodes)?;
            let report = ops.zone_quota(&name, set).await?;
            print_usage(&name, &report, json)?;
        }
        ZoneCmd::List { json } => print_list(&ops.zone_list().await?, json)?,
        ZoneCmd::Check { name, deep, json } => {
            print_check(&ops.zone_check(&name, deep).await?, json)?;
        }
        ZoneCmd::Destroy { name, yes } => {
            if !yes {
                return Err(OpError::Usage(format!(
                    "destroying zone {name} deletes all its files (on every node that serves it); repeat with --yes to confirm"
                )));
            }
            ops.zone_destroy(&name).await?;
            println!("destroyed zone {name}");
        }
    }
    Ok(())
}

/// The quota to set, if a limit was given: the current one with the
/// limits given replaced (`none` lifts one).
fn quota_change(
    now: &UsageReport,
    bytes: Option<String>,
    inodes: Option<String>,
) -> OpResult<Option<ZoneQuota>> {
    if bytes.is_none() && inodes.is_none() {
        return Ok(None);
    }
    let limit =
        |given: Option<String>, current: Option<u64>, parse: fn(&str) -> OpResult<u64>| match given
            .as_deref()
        {
            None => Ok(current),
            Some("none") => Ok(None),
            Some(v) => parse(v).map(Some),
        };
    Ok(Some(ZoneQuota {
        bytes: limit(bytes, now.quota.bytes, |v| Ok(units::size(v)? as u64))?,
        inodes: limit(inodes, now.quota.inodes, |v| {
            v.parse()
                .map_err(|_| OpError::Usage(format!("--inodes {v:?}: a number, or none")))
        })?,
    }))
}

fn print_usage(name: &str, r: &UsageReport, json: bool) -> OpResult {
    if json {
        return output::json(r);
    }
    let limit = |l: Option<u64>| l.map_or("no limit".to_owned(), |l| l.to_string());
    println!("zone {name}");
    println!(
        "  bytes:  {} (quota: {})",
        r.usage.bytes,
        limit(r.quota.bytes)
    );
    println!(
        "  inodes: {} (quota: {})",
        r.usage.inodes,
        limit(r.quota.inodes)
    );
    Ok(())
}

pub async fn gc(ops: &dyn Ops, json: bool) -> OpResult {
    let r = ops.gc().await?;
    if json {
        return output::json(&r);
    }
    print_gc(&r);
    Ok(())
}

fn print_gc(r: &GcReport) {
    println!(
        "scanned {} chunks, {} referenced, deleted {} ({} bytes freed)",
        r.scanned, r.referenced, r.deleted, r.bytes_freed
    );
}

fn print_list(rows: &[ZoneRow], json: bool) -> OpResult {
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

/// An inconsistent zone is a failure.
fn print_check(report: &CheckReport, json: bool) -> OpResult {
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
        return Err(OpError::Failed(format!(
            "zone {} is inconsistent: {} problem(s)",
            report.zone,
            report.problems.len()
        )));
    }
    Ok(())
}

/// The group after a membership change, and any warning.
fn print_membership(zone: &str, m: &Membership) -> OpResult {
    if let Some(w) = &m.warning {
        eprintln!("nexus: warning: {w}");
    }
    print_status(zone, &m.status, false)
}

fn print_status(name: &str, s: &ZoneStatus, json: bool) -> OpResult {
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
