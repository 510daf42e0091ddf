//! The operations layer's values on the wire (`nexus.node.v1`), both ways,
//! and errors as gRPC statuses that carry a [`Fault`]: the node encodes an
//! [`OpError`] once ([`status`]) and the client decodes it once
//! ([`op_error`]) into the same error, so message, exit code and hint are
//! identical embedded and through a node. Anything a peer sends that does
//! not decode is an error, never a panic.

use nexus_kernel::CheckReport;
use nexus_kernel::Claims;
use nexus_kernel::GcReport;
use nexus_kernel::KernelError;
use nexus_kernel::{Attached, PipeMode, PipeStat};
use nexus_kernel::{AuditRecord, StoredRecord};
use nexus_kernel::{Capabilities, Principal};
use nexus_kernel::{FileKind, Stat, ZoneId};
use nexus_kernel::{ReplicaProgress, ZoneStatus};
use nexus_kernel::{ZoneQuota, ZoneUsage};
use nexus_proto::node as pb;
use prost::Message;
use tonic::{Code, Status};

use super::{
    Decision, Entry, Issued, Membership, OpError, OpResult, PipeEntry, TupleRow, UsageReport,
    Written, ZoneRow,
};

/// The one mapping from an operation's error to a gRPC status: a code a
/// generic client understands, the message, and the [`pb::Fault`] in the
/// details.
pub fn status(e: &OpError) -> Status {
    let msg = e.to_string();
    tracing::debug!("request failed: {msg}");
    let (code, kind, detail, inode) = match e {
        OpError::Kernel(k) => {
            let inode = match k {
                KernelError::Conflict(ino) => *ino,
                _ => 0,
            };
            (k.code().as_str(), k.kind(), k.detail(), inode)
        }
        OpError::Usage(m) => ("", "usage", m.clone(), 0),
        OpError::Denied => ("", "denied", String::new(), 0),
        other => ("", "failed", other.to_string(), 0),
    };
    let fault = pb::Fault {
        code: code.to_owned(),
        kind: kind.to_owned(),
        detail,
        inode,
        hint: e.hint().unwrap_or_default().to_owned(),
        exit_code: u32::from(e.exit_code()),
    };
    let grpc = match e {
        OpError::Kernel(k) => grpc_code(k),
        OpError::Usage(_) => Code::InvalidArgument,
        OpError::Denied => Code::PermissionDenied,
        _ => Code::Internal,
    };
    Status::with_details(grpc, msg, fault.encode_to_vec().into())
}

fn grpc_code(e: &KernelError) -> Code {
    use nexus_kernel::ErrorCode as C;
    match e.code() {
        C::NoEntry => Code::NotFound,
        C::Access | C::NotPermitted => Code::PermissionDenied,
        C::Exist => Code::AlreadyExists,
        C::Invalid | C::NameTooLong => Code::InvalidArgument,
        C::Busy | C::NotEmpty => Code::FailedPrecondition,
        C::Quota | C::InsufficientSpace => Code::ResourceExhausted,
        C::Io if matches!(e, KernelError::Unavailable(_)) => Code::Unavailable,
        _ => Code::Internal,
    }
}

/// A status from a node as the error the same failure has in embedded
/// mode: exactly, when it carries a fault this version knows; otherwise by
/// its gRPC code (a status from the transport or an older node).
pub fn op_error(s: Status) -> OpError {
    if let Ok(f) = pb::Fault::decode(s.details()) {
        match f.kind.as_str() {
            "usage" => return OpError::Usage(f.detail),
            "denied" => return OpError::Denied,
            "failed" => return OpError::Failed(f.detail),
            "conflict" => return KernelError::Conflict(f.inode).into(),
            kind => {
                if let Some(k) = KernelError::from_kind(kind, &f.detail) {
                    return k.into();
                }
            }
        }
    }
    let m = s.message().to_owned();
    OpError::Kernel(match s.code() {
        Code::NotFound => KernelError::NotFound(m),
        Code::PermissionDenied | Code::Unauthenticated => KernelError::Access(m),
        Code::AlreadyExists => KernelError::Exist(m),
        Code::InvalidArgument => KernelError::Invalid(m),
        Code::FailedPrecondition => KernelError::Busy(m),
        Code::ResourceExhausted => KernelError::Quota(m),
        Code::Unavailable => KernelError::Unavailable(m),
        _ => KernelError::Storage(m),
    })
}

/// An answer the node should not give.
fn bad(what: &str) -> OpError {
    OpError::Failed(format!("the node answered a malformed {what}"))
}

fn zone(s: &str) -> OpResult<ZoneId> {
    ZoneId::new(s).map_err(|_| bad("zone name"))
}

pub fn quota(q: ZoneQuota) -> pb::Quota {
    pb::Quota {
        bytes: q.bytes,
        inodes: q.inodes,
    }
}

pub fn from_quota(q: pb::Quota) -> ZoneQuota {
    ZoneQuota {
        bytes: q.bytes,
        inodes: q.inodes,
    }
}

pub fn usage(r: UsageReport) -> pb::ZoneUsage {
    pb::ZoneUsage {
        bytes: r.usage.bytes,
        inodes: r.usage.inodes,
        quota: Some(quota(r.quota)),
    }
}

pub fn from_usage(u: pb::ZoneUsage) -> UsageReport {
    UsageReport {
        usage: ZoneUsage {
            bytes: u.bytes,
            inodes: u.inodes,
        },
        quota: u.quota.map(from_quota).unwrap_or_default(),
    }
}

pub fn zone_status(s: ZoneStatus) -> pb::ZoneStatus {
    pb::ZoneStatus {
        replica: s.replica,
        role: s.role,
        leader: s.leader,
        term: s.term,
        commit: s.commit,
        applied: s.applied,
        voters: s.voters,
        learners: s.learners,
        witnesses: s.witnesses,
        progress: s
            .progress
            .into_iter()
            .map(|p| pb::ReplicaProgress {
                replica: p.replica,
                matched: p.matched,
                lag: p.lag,
            })
            .collect(),
    }
}

pub fn from_zone_status(s: pb::ZoneStatus) -> ZoneStatus {
    ZoneStatus {
        replica: s.replica,
        role: s.role,
        leader: s.leader,
        term: s.term,
        commit: s.commit,
        applied: s.applied,
        voters: s.voters,
        learners: s.learners,
        witnesses: s.witnesses,
        progress: s
            .progress
            .into_iter()
            .map(|p| ReplicaProgress {
                replica: p.replica,
                matched: p.matched,
                lag: p.lag,
            })
            .collect(),
    }
}

pub fn membership(m: Membership) -> pb::Membership {
    pb::Membership {
        status: Some(zone_status(m.status)),
        warning: m.warning,
    }
}

pub fn from_membership(m: pb::Membership) -> OpResult<Membership> {
    Ok(Membership {
        status: from_zone_status(m.status.ok_or_else(|| bad("membership"))?),
        warning: m.warning,
    })
}

pub fn zone_row(r: ZoneRow) -> pb::ZoneRow {
    pb::ZoneRow {
        name: r.name,
        created: r.created,
        applied_index: r.applied_index,
        replicas: r.replicas,
    }
}

pub fn from_zone_row(r: pb::ZoneRow) -> ZoneRow {
    ZoneRow {
        name: r.name,
        created: r.created,
        applied_index: r.applied_index,
        replicas: r.replicas,
    }
}

pub fn gc_report(r: GcReport) -> pb::GcReport {
    pb::GcReport {
        scanned: r.scanned,
        referenced: r.referenced,
        deleted: r.deleted,
        bytes_freed: r.bytes_freed,
    }
}

pub fn from_gc_report(r: pb::GcReport) -> GcReport {
    GcReport {
        scanned: r.scanned,
        referenced: r.referenced,
        deleted: r.deleted,
        bytes_freed: r.bytes_freed,
    }
}

pub fn check_report(r: CheckReport) -> pb::CheckReport {
    pb::CheckReport {
        zone: r.zone,
        applied_index: r.applied_index,
        inodes: r.inodes,
        directories: r.directories,
        files: r.files,
        chunks: r.chunks,
        bytes: r.bytes,
        problems: r.problems,
    }
}

pub fn from_check_report(r: pb::CheckReport) -> CheckReport {
    CheckReport {
        zone: r.zone,
        applied_index: r.applied_index,
        inodes: r.inodes,
        directories: r.directories,
        files: r.files,
        chunks: r.chunks,
        bytes: r.bytes,
        problems: r.problems,
    }
}

fn kind(s: &str) -> OpResult<FileKind> {
    [
        FileKind::Dir,
        FileKind::Regular,
        FileKind::Mount,
        FileKind::Pipe,
        FileKind::Symlink,
    ]
    .into_iter()
    .find(|k| k.as_str() == s)
    .ok_or_else(|| bad("file kind"))
}

pub fn stat(s: Stat) -> pb::Stat {
    pb::Stat {
        zone: s.zone.to_string(),
        ino: s.ino,
        kind: s.kind.as_str().to_owned(),
        size: s.size,
        version: s.version,
        atime: s.atime,
        mtime: s.mtime,
        ctime: s.ctime,
        mount_target: s.mount_target.map(|z| z.to_string()),
        pipe_capacity: s.pipe_capacity,
    }
}

pub fn from_stat(s: pb::Stat) -> OpResult<Stat> {
    Ok(Stat {
        zone: zone(&s.zone)?,
        ino: s.ino,
        kind: kind(&s.kind)?,
        size: s.size,
        version: s.version,
        atime: s.atime,
        mtime: s.mtime,
        ctime: s.ctime,
        mount_target: s.mount_target.as_deref().map(zone).transpose()?,
        pipe_capacity: s.pipe_capacity,
    })
}

pub fn entry(e: Entry) -> pb::Entry {
    pb::Entry {
        name: e.name,
        kind: e.kind,
        ino: e.ino,
        size: e.size,
        mtime: e.mtime,
        mount_target: e.mount_target,
    }
}

pub fn from_entry(e: pb::Entry) -> Entry {
    Entry {
        name: e.name,
        kind: e.kind,
        ino: e.ino,
        size: e.size,
        mtime: e.mtime,
        mount_target: e.mount_target,
    }
}

fn mode(m: PipeMode) -> &'static str {
    match m {
        PipeMode::Read => "read",
        PipeMode::Write => "write",
    }
}

pub fn pipe_stat(s: PipeStat) -> pb::PipeStat {
    pb::PipeStat {
        zone: s.zone.to_string(),
        ino: s.ino,
        capacity: s.capacity,
        occupancy: s.occupancy,
        bytes_in: s.bytes_in,
        bytes_out: s.bytes_out,
        readers: s.readers,
        writers: s.writers,
        attached: s
            .attached
            .into_iter()
            .map(|a| pb::Attached {
                pid: a.pid,
                principal: a.principal,
                mode: mode(a.mode).to_owned(),
            })
            .collect(),
        unsynced: s.unsynced,
    }
}

pub fn from_pipe_stat(s: pb::PipeStat) -> OpResult<PipeStat> {
    let attached = s
        .attached
        .into_iter()
        .map(|a| {
            let mode = match a.mode.as_str() {
                "read" => PipeMode::Read,
                "write" => PipeMode::Write,
                _ => return Err(bad("pipe mode")),
            };
            Ok(Attached {
                pid: a.pid,
                principal: a.principal,
                mode,
            })
        })
        .collect::<OpResult<_>>()?;
    Ok(PipeStat {
        zone: zone(&s.zone)?,
        ino: s.ino,
        capacity: s.capacity,
        occupancy: s.occupancy,
        bytes_in: s.bytes_in,
        bytes_out: s.bytes_out,
        readers: s.readers,
        writers: s.writers,
        attached,
        unsynced: s.unsynced,
    })
}

pub fn pipe_entry(p: PipeEntry) -> pb::PipeEntry {
    pb::PipeEntry {
        path: p.path,
        stat: Some(pipe_stat(p.stat)),
    }
}

pub fn from_pipe_entry(p: pb::PipeEntry) -> OpResult<PipeEntry> {
    Ok(PipeEntry {
        path: p.path,
        stat: from_pipe_stat(p.stat.ok_or_else(|| bad("pipe list"))?)?,
    })
}

pub fn written(w: Written) -> pb::Written {
    pb::Written {
        tuple: w.tuple,
        revision: w.revision,
        inserted: w.inserted,
    }
}

pub fn from_written(w: pb::Written) -> Written {
    Written {
        tuple: w.tuple,
        revision: w.revision,
        inserted: w.inserted,
    }
}

pub fn decision(d: Decision) -> pb::Decision {
    pb::Decision {
        subject: d.subject,
        permission: d.permission,
        object: d.object,
        allowed: d.allowed,
        proof: d.proof,
    }
}

pub fn from_decision(d: pb::Decision) -> Decision {
    Decision {
        subject: d.subject,
        permission: d.permission,
        object: d.object,
        allowed: d.allowed,
        proof: d.proof,
    }
}

pub fn tuple_row(t: TupleRow) -> pb::TupleRow {
    pb::TupleRow {
        tuple: t.tuple,
        object: t.object,
        relation: t.relation,
        subject: t.subject,
        path: t.path,
    }
}

pub fn from_tuple_row(t: pb::TupleRow) -> TupleRow {
    TupleRow {
        tuple: t.tuple,
        object: t.object,
        relation: t.relation,
        subject: t.subject,
        path: t.path,
    }
}

pub fn audit_record(r: StoredRecord) -> pb::AuditRecord {
    let a = r.record;
    pb::AuditRecord {
        id: r.id,
        time: a.time,
        zone: a.zone,
        pid: a.pid,
        principal: a.principal,
        op: a.op,
        path: a.path,
        result: a.result,
    }
}

pub fn from_audit_record(r: pb::AuditRecord) -> StoredRecord {
    StoredRecord {
        id: r.id,
        record: AuditRecord {
            time: r.time,
            zone: r.zone,
            pid: r.pid,
            principal: r.principal,
            op: r.op,
            path: r.path,
            result: r.result,
        },
    }
}

pub fn claims(c: Claims) -> pb::Claims {
    pb::Claims {
        id: c.id,
        principal: c.principal.to_string(),
        zone: c.zone.to_string(),
        caps: c.caps.to_string(),
        issued: c.issued,
        expires: c.expires,
        reach: c.reach.iter().map(ToString::to_string).collect(),
    }
}

pub fn from_claims(c: pb::Claims) -> OpResult<Claims> {
    Ok(Claims {
        id: c.id,
        principal: Principal::parse(&c.principal).map_err(|_| bad("principal"))?,
        zone: zone(&c.zone)?,
        caps: Capabilities::parse(&c.caps).map_err(|_| bad("capability set"))?,
        issued: c.issued,
        expires: c.expires,
        reach: c.reach.iter().map(|z| zone(z)).collect::<OpResult<_>>()?,
    })
}

pub fn issued(i: Issued) -> pb::Issued {
    pb::Issued {
        token: i.token,
        claims: Some(claims(i.claims)),
    }
}

pub fn from_issued(i: pb::Issued) -> OpResult<Issued> {
    Ok(Issued {
        token: i.token,
        claims: from_claims(i.claims.ok_or_else(|| bad("token"))?)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_crosses_the_wire_unchanged() {
        let zone = ZoneId::new("z1").unwrap();
        // Every kernel error, then the layer's own.
        let kernel = [
            KernelError::NotFound("/a".into()),
            KernelError::Exist("/a".into()),
            KernelError::NotDirectory("/a".into()),
            KernelError::IsDirectory("/a".into()),
            KernelError::NotEmpty("/d".into()),
            KernelError::Access("no".into()),
            KernelError::Invalid("bad".into()),
            KernelError::NameTooLong("n".into()),
            KernelError::FileTooLarge("f".into()),
            KernelError::Busy("in use by another nexus".into()),
            KernelError::CrossZone("c".into()),
            KernelError::Quota("q".into()),
            KernelError::NoSpace("n".into()),
            KernelError::Unsupported("u".into()),
            KernelError::BrokenPipe("p".into()),
            KernelError::WouldBlock("w".into()),
            KernelError::ZoneNotFound(zone.clone()),
            KernelError::ZoneExists(zone),
            KernelError::Conflict(7),
            KernelError::Unavailable("no leader".into()),
            KernelError::Storage("s".into()),
            KernelError::Content("c".into()),
            KernelError::Corrupt("c".into()),
        ];
        let mut errors: Vec<OpError> = kernel.into_iter().map(OpError::Kernel).collect();
        errors.extend([
            OpError::Usage("bad flag".into()),
            OpError::Failed("inconsistent".into()),
            OpError::Denied,
        ]);
        for e in errors {
            let back = op_error(status(&e));
            if let (OpError::Kernel(a), OpError::Kernel(b)) = (&back, &e) {
                assert_eq!(a, b);
                assert_eq!(a.code(), b.code());
            }
            assert_eq!(back.to_string(), e.to_string());
            assert_eq!(back.exit_code(), e.exit_code());
            assert_eq!(back.hint(), e.hint());
        }
    }

    #[test]
    fn a_status_without_a_fault_maps_by_its_code() {
        let e = op_error(Status::not_found("gone"));
        assert_eq!(e.exit_code(), crate::ops::exit::NOT_FOUND);
        // Details that are not a fault are not trusted, nor do they panic.
        let junk = Status::with_details(Code::Internal, "x", vec![0xff; 9].into());
        assert_eq!(op_error(junk).exit_code(), crate::ops::exit::FAILURE);
    }

    #[test]
    fn a_malformed_answer_is_an_error() {
        let s = pb::Stat {
            zone: "../x".into(),
            kind: "dir".into(),
            ..Default::default()
        };
        assert!(from_stat(s).is_err());
        let s = pb::Stat {
            zone: "z".into(),
            kind: "socket".into(),
            ..Default::default()
        };
        assert!(from_stat(s).is_err());
    }
}
