//! [`Ops`] over a kernel in this process, as one identity: the behaviour
//! of every command, once. The embedded CLI holds one for the operator (or
//! `--as`, `--token`); a node builds one per call for the call's token.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use nexus_kernel::CheckReport;
use nexus_kernel::Claims;
use nexus_kernel::GcReport;
use nexus_kernel::Kernel;
use nexus_kernel::KernelError;
use nexus_kernel::StoredRecord;
use nexus_kernel::ZoneQuota;
use nexus_kernel::ZoneStatus;
use nexus_kernel::{Capabilities, Permission, Principal, Task};
use nexus_kernel::{Destination, SecretHeader};
use nexus_kernel::{FileKind, Stat, ZoneId};
use nexus_kernel::{Handle, OpenOptions};
use nexus_kernel::{ObjectRef, Relation, Subject, Tuple};
use nexus_kernel::{PipeEnd, PipeMode, PipeRead, PipeStat};

use super::run::Hosts;
use super::{
    ByteStream, CheckQuery, Decision, Download, Entry, Issued, Membership, OpError, OpResult, Ops,
    PipeEntry, Range, ReplicaSpec, RunIo, RunSpec, SecretEntry, TupleRow, TupleSpec, UsageReport,
    Written, ZoneRow, TRANSFER_CHUNK,
};
use crate::session::Acting;

/// Bytes `pipe cat` takes per read.
const PIPE_CHUNK: usize = 64 << 10;

pub struct Local {
    kernel: Arc<Kernel>,
    acting: Acting,
    hosts: Arc<Hosts>,
}

impl Local {
    pub fn new(kernel: Arc<Kernel>, acting: Acting, hosts: Arc<Hosts>) -> Self {
        Local {
            kernel,
            acting,
            hosts,
        }
    }

    fn task(&self, zone: &str) -> OpResult<Task> {
        self.acting.task(&self.kernel, zone)
    }

    /// A task for a read, after a ReadIndex round if `linearizable`.
    async fn reader(&self, zone: &str, linearizable: bool) -> OpResult<Task> {
        let task = self.task(zone)?;
        if linearizable {
            self.kernel.linearize(&task).await?;
        }
        Ok(task)
    }

    fn zone_row(&self, r: &nexus_kernel::ZoneRecord) -> OpResult<ZoneRow> {
        Ok(ZoneRow {
            applied_index: self.kernel.zone_state(&r.id)?.applied_index()?,
            name: r.id.to_string(),
            created: r.created,
            replicas: r.replicas.iter().map(|(id, _)| *id).collect(),
        })
    }

    /// OBJECT on the command line: a path, `zone`, or `NAMESPACE:ID`.
    fn object(&self, task: &Task, spec: &str) -> OpResult<ObjectRef> {
        if spec == "zone" {
            return Ok(ObjectRef::zone(task.zone()));
        }
        if spec.starts_with('/') {
            let (zone, obj) = self.kernel.object_at(task, spec)?;
            if &zone != task.zone() {
                return Err(OpError::Usage(format!(
                    "{spec} lies in zone {zone} (through a mount): grant there with --zone {zone}"
                )));
            }
            return Ok(obj);
        }
        Ok(ObjectRef::parse(spec)?)
    }

    /// `done` once the operation behind it is durable: an operation
    /// acknowledged to a user or client survives a crash (an agent's file
    /// commands wait for its `sync`, as POSIX; ARCHITECTURE.md invariant 25).
    async fn durable<T>(&self, done: T) -> OpResult<T> {
        self.kernel.make_durable().await?;
        Ok(done)
    }

    fn clustered(what: &str) -> OpError {
        OpError::Usage(format!(
            "{what}: a zone's replicas live on the nodes of a cluster: use --node"
        ))
    }
}

#[tonic::async_trait]
impl Ops for Local {
    async fn zone_create(&self, zone: &str, replicas: &[ReplicaSpec]) -> OpResult {
        if !replicas.is_empty() {
            return Err(OpError::Usage(
                "--replicas places a zone on several nodes: use it with --node".into(),
            ));
        }
        let id = ZoneId::new(zone)?;
        self.kernel.create_zone(&self.acting.principal, &id).await?;
        Ok(())
    }

    async fn zone_list(&self) -> OpResult<Vec<ZoneRow>> {
        let records = match &self.acting.zone {
            // A token sees its own zone only.
            Some(bound) => self.kernel.zone_record(bound).into_iter().collect(),
            None => self.kernel.zone_records()?,
        };
        records.iter().map(|r| self.zone_row(r)).collect()
    }

    async fn zone_status(&self, zone: &str) -> OpResult<ZoneStatus> {
        Ok(self.kernel.zone_status(&self.task(zone)?).await?)
    }

    async fn zone_quota(&self, zone: &str, set: Option<ZoneQuota>) -> OpResult<UsageReport> {
        let task = self.task(zone)?;
        if let Some(quota) = set {
            self.kernel.set_zone_quota(&task, quota).await?;
        }
        let (usage, quota) = self.kernel.zone_usage(&task)?;
        Ok(UsageReport { usage, quota })
    }

    async fn zone_check(&self, zone: &str, deep: bool) -> OpResult<CheckReport> {
        Ok(self.kernel.check_zone(&self.task(zone)?, deep).await?)
    }

    async fn zone_destroy(&self, zone: &str) -> OpResult {
        Ok(self.kernel.destroy_zone(&self.task(zone)?)?)
    }

    async fn add_replica(&self, _zone: &str, _replica: ReplicaSpec) -> OpResult<Membership> {
        Err(Self::clustered("zone add-replica"))
    }

    async fn remove_replica(&self, _zone: &str, _node: u64) -> OpResult<Membership> {
        Err(Self::clustered("zone remove-replica"))
    }

    /// GC spans every zone on the node, so it runs as a task in each zone
    /// in turn to prove `admin` on all of them.
    async fn audit_tail(
        &self,
        zone: &str,
        after: Option<i64>,
        limit: i64,
    ) -> OpResult<Vec<StoredRecord>> {
        let task = self.task(zone)?;
        Ok(self.kernel.audit_tail(&task, after, limit).await?)
    }

    async fn gc(&self) -> OpResult<GcReport> {
        let tasks = self
            .kernel
            .zone_records()?
            .iter()
            .map(|z| self.task(z.id.as_str()))
            .collect::<OpResult<Vec<_>>>()?;
        Ok(self.kernel.gc(&tasks).await?)
    }

    async fn mkdir(&self, zone: &str, path: &str, parents: bool) -> OpResult {
        let task = self.task(zone)?;
        if parents {
            self.kernel.mkdir_all(&task, path).await?;
        } else {
            self.kernel.mkdir(&task, path).await?;
        }
        self.durable(()).await
    }

    async fn put(&self, zone: &str, path: &str, mut data: ByteStream) -> OpResult<u64> {
        let task = self.task(zone)?;
        let mut new = self.kernel.begin_replace(&task, path).await?;
        // Whole chunks, so each write replaces exactly one content chunk.
        let mut buf = BytesMut::with_capacity(TRANSFER_CHUNK);
        let copied: OpResult = async {
            while let Some(piece) = data.next().await {
                let mut piece = piece?;
                while !piece.is_empty() {
                    let take = piece.len().min(TRANSFER_CHUNK - buf.len());
                    buf.extend_from_slice(&piece.split_to(take));
                    if buf.len() == TRANSFER_CHUNK {
                        new.write(&buf).await?;
                        buf.clear();
                    }
                }
            }
            if !buf.is_empty() {
                new.write(&buf).await?;
            }
            Ok(())
        }
        .await;
        match copied {
            Ok(()) => Ok(new.commit().await?),
            Err(e) => {
                new.abort().await;
                Err(e)
            }
        }
    }

    async fn write_file(&self, zone: &str, path: &str, data: Vec<u8>) -> OpResult {
        let task = self.task(zone)?;
        let h = self
            .kernel
            .open_path(&task, path, OpenOptions::CREATE)
            .await?;
        self.kernel.write(&task, &h, 0, &data).await?;
        // Acknowledged means durable: written out now.
        self.kernel.sync(&task, &h).await?;
        Ok(())
    }

    async fn get(
        &self,
        zone: &str,
        path: &str,
        range: Range,
        linearizable: bool,
    ) -> OpResult<Download> {
        let task = self.reader(zone, linearizable).await?;
        let h = self.kernel.resolve(&task, path, true)?;
        // A read of nothing checks the gate and the file's kind before a
        // byte is promised.
        self.kernel.read(&task, &h, 0, 0).await?;
        let size = self.kernel.stat_handle(&task, &h)?.size;
        let start = range.offset.min(size);
        let end = match range.length {
            Some(n) => start.saturating_add(n).min(size),
            None => size,
        };
        Ok(Download {
            total: end - start,
            bytes: read_range(self.kernel.clone(), task, h, start..end, linearizable),
        })
    }

    async fn stat(&self, zone: &str, path: &str, linearizable: bool) -> OpResult<Stat> {
        let task = self.reader(zone, linearizable).await?;
        Ok(self.kernel.lstat(&task, path)?)
    }

    async fn list(&self, zone: &str, path: &str, linearizable: bool) -> OpResult<Vec<Entry>> {
        let task = self.reader(zone, linearizable).await?;
        let k = &self.kernel;
        let dir = k.resolve(&task, path, true)?;
        if dir.kind != FileKind::Dir {
            return Err(KernelError::NotDirectory(path.to_owned()).into());
        }
        let mut rows = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = k.readdir_handle(&task, &dir, cursor.as_deref(), 1024)?;
            for e in page.entries {
                let child = format!("{}/{}", path.trim_end_matches('/'), e.name);
                let s = k.lstat(&task, &child)?;
                rows.push(Entry {
                    name: e.name,
                    kind: e.kind.as_str().to_owned(),
                    ino: e.ino,
                    size: s.size,
                    mtime: s.mtime,
                    mount_target: s.mount_target.map(|t| t.to_string()),
                });
            }
            match page.next {
                Some(n) => cursor = Some(n),
                None => return Ok(rows),
            }
        }
    }

    async fn remove(&self, zone: &str, path: &str, recursive: bool) -> OpResult {
        let task = self.task(zone)?;
        let removed = self.kernel.remove_path(&task, path, recursive).await?;
        self.durable(removed).await
    }

    async fn rename(&self, zone: &str, from: &str, to: &str) -> OpResult {
        let renamed = self.kernel.rename(&self.task(zone)?, from, to).await?;
        self.durable(renamed).await
    }

    async fn link(&self, zone: &str, from: &str, to: &str) -> OpResult {
        let linked = self.kernel.link(&self.task(zone)?, from, to).await?;
        self.durable(linked).await
    }

    async fn symlink(&self, zone: &str, target: &str, path: &str) -> OpResult {
        self.kernel.symlink(&self.task(zone)?, target, path).await?;
        self.durable(()).await
    }

    async fn readlink(&self, zone: &str, path: &str) -> OpResult<String> {
        Ok(self.kernel.readlink(&self.task(zone)?, path)?)
    }

    async fn mount(&self, zone: &str, path: &str, target: &str) -> OpResult<u64> {
        let target = ZoneId::new(target)?;
        let h = self.kernel.mount(&self.task(zone)?, path, &target).await?;
        self.durable(h.ino).await
    }

    async fn pipe_create(&self, zone: &str, path: &str, capacity: u64) -> OpResult {
        self.kernel
            .mkpipe(&self.task(zone)?, path, capacity)
            .await?;
        self.durable(()).await
    }

    async fn pipe_stat(&self, zone: &str, path: &str) -> OpResult<PipeStat> {
        Ok(self.kernel.pipe_stat(&self.task(zone)?, path)?)
    }

    async fn pipe_list(&self, zone: &str, dir: &str) -> OpResult<Vec<PipeEntry>> {
        let pipes = self.kernel.pipe_list(&self.task(zone)?, dir)?;
        Ok(pipes
            .into_iter()
            .map(|(path, stat)| PipeEntry { path, stat })
            .collect())
    }

    async fn pipe_cat(&self, zone: &str, path: &str, follow: bool) -> OpResult<ByteStream> {
        let task = self.task(zone)?;
        let end = self.kernel.pipe_open(&task, path, PipeMode::Read).await?;
        Ok(drain(self.kernel.clone(), task, end, follow))
    }

    async fn pipe_remove(&self, zone: &str, path: &str) -> OpResult {
        let removed = self.kernel.remove_pipe(&self.task(zone)?, path).await?;
        self.durable(removed).await
    }

    async fn write_tuple(&self, zone: &str, t: TupleSpec, insert: bool) -> OpResult<Written> {
        let task = self.task(zone)?;
        let tuple = Tuple {
            object: self.object(&task, &t.object)?,
            relation: Relation::parse(&t.relation)?,
            subject: Subject::parse(&t.subject)?,
        };
        let shown = tuple.to_string();
        let (add, del) = if insert {
            (vec![tuple], vec![])
        } else {
            (vec![], vec![tuple])
        };
        let revision = self.kernel.write_tuples(&task, add, del).await?;
        Ok(Written {
            tuple: shown,
            revision,
            inserted: insert,
        })
    }

    async fn secret_set(&self, zone: &str, destination: &str, headers: &[String]) -> OpResult<u64> {
        let task = self.task(zone)?;
        let dest = Destination::parse(destination.strip_prefix("host:").unwrap_or(destination))?;
        let headers = headers
            .iter()
            .map(|h| SecretHeader::parse(h))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.kernel.set_secret(&task, &dest, headers).await?)
    }

    async fn secret_list(&self, zone: &str) -> OpResult<Vec<SecretEntry>> {
        let rows = self.kernel.secrets(&self.task(zone)?)?;
        Ok(rows
            .into_iter()
            .map(|r| SecretEntry {
                destination: r.destination,
                headers: r.headers,
            })
            .collect())
    }

    async fn check(&self, zone: &str, q: CheckQuery) -> OpResult<Decision> {
        let task = self.task(zone)?;
        let who = Principal::parse(&q.subject)?;
        let perm = Permission::parse(&q.permission)?;
        let obj = self.object(&task, &q.object)?;
        let d = self.kernel.explain(&task, &who, &obj, perm, q.at).await?;
        Ok(Decision {
            subject: who.to_string(),
            permission: perm.as_str().to_owned(),
            object: obj.to_string(),
            allowed: d.allowed,
            proof: d.proof,
        })
    }

    async fn tuples(&self, zone: &str) -> OpResult<Vec<TupleRow>> {
        Ok(self
            .kernel
            .tuples(&self.task(zone)?)?
            .into_iter()
            .map(|(t, path)| TupleRow {
                tuple: t.to_string(),
                object: t.object.to_string(),
                relation: t.relation.as_str().to_owned(),
                subject: t.subject.to_string(),
                path,
            })
            .collect())
    }

    async fn token_issue(
        &self,
        zone: &str,
        principal: Option<&str>,
        ttl: Duration,
        caps: &str,
        reach: &[String],
    ) -> OpResult<Issued> {
        let zone = ZoneId::new(zone)?;
        let subject = principal.map(Principal::parse).transpose()?;
        let caps = Capabilities::parse(caps)?;
        let reach = reach
            .iter()
            .map(|z| ZoneId::new(z))
            .collect::<nexus_kernel::Result<_>>()?;
        let issuer = self.acting.issuer();
        let (token, claims) = self
            .kernel
            .issue_token(&issuer, subject, &zone, reach, caps, ttl)?;
        Ok(Issued { token, claims })
    }

    async fn token_verify(&self, token: &str) -> OpResult<Claims> {
        Ok(self.kernel.verify_token(token)?)
    }

    async fn token_revoke(&self, zone: Option<&str>, id: &str) -> OpResult<Option<String>> {
        // A token holder revokes in its own zone when it names none.
        let zone = zone
            .map(str::to_owned)
            .or(self.acting.zone.as_ref().map(ZoneId::to_string));
        match zone {
            Some(zone) => {
                self.kernel.revoke_token(&self.task(&zone)?, id).await?;
                Ok(Some(zone))
            }
            None => {
                // This data directory's own list: its operator only.
                if self.acting.principal != crate::session::operator() {
                    return Err(KernelError::Access(
                        "only the node's operator revokes tokens".into(),
                    )
                    .into());
                }
                self.kernel.tokens().revoke(id)?;
                Ok(None)
            }
        }
    }

    async fn run(&self, spec: RunSpec, io: RunIo) -> OpResult<Option<i32>> {
        super::run::run(&self.kernel, &self.hosts, &self.acting, spec, io).await
    }
}

/// Bytes `start..end` of the file, a chunk per read, read as the
/// consumer asks for them.
/// `range` of the file behind `h`, read lazily; a linearizable read sees
/// committed content only (see `Kernel::read_linearized`).
fn read_range(
    kernel: Arc<Kernel>,
    task: Task,
    h: Handle,
    range: std::ops::Range<u64>,
    linearizable: bool,
) -> ByteStream {
    let end = range.end;
    futures::stream::try_unfold(range.start, move |at| {
        let (kernel, task, h) = (kernel.clone(), task.clone(), h.clone());
        async move {
            if at >= end {
                return Ok(None);
            }
            let want = (end - at).min(TRANSFER_CHUNK as u64);
            let bytes: Bytes = if linearizable {
                kernel.read_linearized(&task, &h, at, want).await?
            } else {
                kernel.read(&task, &h, at, want).await?
            };
            if bytes.is_empty() {
                // The file shrank while it was read.
                return Ok(None);
            }
            let next = at + bytes.len() as u64;
            Ok(Some((bytes, next)))
        }
    })
    .boxed()
}

/// The pipe's bytes as they are read (and consumed). Without `follow` it
/// ends when the pipe is empty; with it, at end-of-file (every writer
/// gone). At the end what was read is made durable as consumed.
fn drain(kernel: Arc<Kernel>, task: Task, end: PipeEnd, follow: bool) -> ByteStream {
    let end = Arc::new(end);
    futures::stream::try_unfold(false, move |finished| {
        let (kernel, task, end) = (kernel.clone(), task.clone(), end.clone());
        async move {
            if finished {
                return Ok(None);
            }
            let chunk = if follow {
                kernel.pipe_read(&task, &end, PIPE_CHUNK).await?
            } else {
                match kernel.pipe_try_read(&task, &end, PIPE_CHUNK)? {
                    PipeRead::Data(d) => Some(d),
                    PipeRead::WouldBlock | PipeRead::EndOfFile => None,
                }
            };
            match chunk {
                Some(d) => Ok(Some((Bytes::from(d), false))),
                None => {
                    kernel.pipe_sync(&task, &end).await?;
                    Ok(None)
                }
            }
        }
    })
    .boxed()
}
