//! [`Ops`] over a node's gRPC API (`--node ADDR --token T`), over TLS
//! checked against the cluster CA: each method is one call, authenticated
//! by the token; file and pipe bytes stream both
//! ways in chunks of at most [`TRANSFER_CHUNK`] bytes (gRPC flow control is
//! the backpressure); a failure comes back as the error the embedded
//! command gives ([`wire::op_error`]).

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use nexus_kernel::CheckReport;
use nexus_kernel::Claims;
use nexus_kernel::GcReport;
use nexus_kernel::KernelError;
use nexus_kernel::PipeStat;
use nexus_kernel::Stat;
use nexus_kernel::StoredRecord;
use nexus_kernel::ZoneQuota;
use nexus_kernel::ZoneStatus;
use nexus_proto::node as pb;
use nexus_proto::node::node_client::NodeClient;
use tonic::transport::Channel;
use tonic::{Request, Streaming};

use crate::node::tls;
use crate::node::transport::MAX_MESSAGE;

use super::wire::{self, op_error};
use super::{
    ByteStream, CheckQuery, Decision, Download, Entry, Issued, Membership, OpError, OpResult, Ops,
    Output, PipeEntry, Range, ReplicaSpec, RunIo, RunSpec, SecretEntry, TupleRow, TupleSpec,
    UsageReport, Written, ZoneRow,
};

pub struct Remote {
    client: NodeClient<Channel>,
    bearer: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
}

impl Remote {
    /// Connects to the node at `addr` over TLS, trusting the cluster CA in
    /// `tls`; every call carries `token`.
    pub async fn connect(
        addr: &str,
        token: &str,
        tls: std::sync::Arc<rustls::ClientConfig>,
    ) -> OpResult<Self> {
        let bearer = format!("Bearer {token}")
            .parse()
            .map_err(|_| OpError::Usage("the token has characters a header cannot carry".into()))?;
        let dialer = tls::Dialer::Client(tls);
        let channel = tls::channel(&dialer, addr, tls::ANY_NODE)
            .await
            .map_err(|e| KernelError::Unavailable(format!("node {addr}: {e}")))?;
        let client = NodeClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        Ok(Remote { client, bearer })
    }

    fn request<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.metadata_mut()
            .insert("authorization", self.bearer.clone());
        r
    }

    /// A fresh handle on the channel (calls take `&mut`).
    fn node(&self) -> NodeClient<Channel> {
        self.client.clone()
    }
}

fn path(zone: &str, path: &str, parents: bool, linearizable: bool) -> pb::PathRequest {
    pb::PathRequest {
        zone: zone.to_owned(),
        path: path.to_owned(),
        parents,
        linearizable,
    }
}

/// This process's stdin as chunks, read on a thread of its own (a read
/// of a terminal blocks; the thread must not hold up the exit).
pub(crate) fn process_stdin() -> ByteStream {
    use std::io::Read;
    let (tx, rx) = tokio::sync::mpsc::channel::<OpResult<Bytes>>(4);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let chunk = match stdin.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => Ok(Bytes::copy_from_slice(&buf[..n])),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(OpError::local("stdin", e)),
            };
            if tx.blocking_send(chunk).is_err() {
                return;
            }
        }
    });
    tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(rx).boxed()
}

/// Sends stdin's chunks after a run's start, until stdin ends (or fails:
/// the agent then reads end-of-file) or the call is over.
async fn forward_stdin(mut stdin: ByteStream, tx: tokio::sync::mpsc::Sender<pb::RunInput>) {
    while let Some(Ok(chunk)) = stdin.next().await {
        let input = Some(pb::run_input::Input::Stdin(chunk.to_vec()));
        if tx.send(pb::RunInput { input }).await.is_err() {
            return;
        }
    }
}

/// Stops a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type Chunks = tokio::sync::mpsc::Sender<pb::PutChunk>;

/// Sends `data` as `Put` messages; on a read error, returns it with the
/// sender still open (so the upload does not look complete).
async fn upload(mut data: ByteStream, tx: Chunks) -> Option<(OpError, Chunks)> {
    let mut bytes = 0u64;
    while let Some(piece) = data.next().await {
        match piece {
            Ok(b) => {
                bytes += b.len() as u64;
                let chunk = pb::PutChunk {
                    part: Some(pb::put_chunk::Part::Data(b)),
                };
                if tx.send(chunk).await.is_err() {
                    return None;
                }
            }
            Err(e) => return Some((e, tx)),
        }
    }
    // Only now is the upload complete.
    let end = pb::PutChunk {
        part: Some(pb::put_chunk::Part::End(pb::PutEnd { bytes })),
    };
    let _ = tx.send(end).await;
    None
}

/// A stream of data chunks as bytes.
fn chunks(s: Streaming<pb::DataChunk>) -> ByteStream {
    s.map(|c| c.map(|c| c.data).map_err(op_error)).boxed()
}

#[tonic::async_trait]
impl Ops for Remote {
    async fn zone_create(&self, zone: &str, replicas: &[ReplicaSpec]) -> OpResult {
        let req = self.request(pb::CreateZoneRequest {
            zone: zone.to_owned(),
            replicas: replicas
                .iter()
                .map(|r| pb::Replica {
                    node: r.node,
                    witness: r.witness,
                })
                .collect(),
        });
        self.node().create_zone(req).await.map_err(op_error)?;
        Ok(())
    }

    async fn zone_list(&self) -> OpResult<Vec<ZoneRow>> {
        let list = self.node().zone_list(self.request(pb::Empty {})).await;
        let list = list.map_err(op_error)?.into_inner();
        Ok(list.zones.into_iter().map(wire::from_zone_row).collect())
    }

    async fn zone_status(&self, zone: &str) -> OpResult<ZoneStatus> {
        let req = self.request(pb::ZoneRef {
            zone: zone.to_owned(),
        });
        let s = self.node().zone_status(req).await.map_err(op_error)?;
        Ok(wire::from_zone_status(s.into_inner()))
    }

    async fn zone_quota(&self, zone: &str, set: Option<ZoneQuota>) -> OpResult<UsageReport> {
        let req = self.request(pb::ZoneQuotaRequest {
            zone: zone.to_owned(),
            set: set.map(wire::quota),
        });
        let u = self.node().zone_quota(req).await.map_err(op_error)?;
        Ok(wire::from_usage(u.into_inner()))
    }

    async fn zone_check(&self, zone: &str, deep: bool) -> OpResult<CheckReport> {
        let req = self.request(pb::ZoneCheckRequest {
            zone: zone.to_owned(),
            deep,
        });
        let r = self.node().zone_check(req).await.map_err(op_error)?;
        Ok(wire::from_check_report(r.into_inner()))
    }

    async fn zone_destroy(&self, zone: &str) -> OpResult {
        let req = self.request(pb::ZoneRef {
            zone: zone.to_owned(),
        });
        self.node().destroy_zone(req).await.map_err(op_error)?;
        Ok(())
    }

    async fn add_replica(&self, zone: &str, replica: ReplicaSpec) -> OpResult<Membership> {
        let req = self.request(pb::ReplicaChange {
            zone: zone.to_owned(),
            replica: Some(pb::Replica {
                node: replica.node,
                witness: replica.witness,
            }),
        });
        let m = self.node().add_replica(req).await.map_err(op_error)?;
        wire::from_membership(m.into_inner())
    }

    async fn remove_replica(&self, zone: &str, node: u64) -> OpResult<Membership> {
        let req = self.request(pb::ReplicaChange {
            zone: zone.to_owned(),
            replica: Some(pb::Replica {
                node,
                witness: false,
            }),
        });
        let m = self.node().remove_replica(req).await.map_err(op_error)?;
        wire::from_membership(m.into_inner())
    }

    async fn audit_tail(
        &self,
        zone: &str,
        after: Option<i64>,
        limit: i64,
    ) -> OpResult<Vec<StoredRecord>> {
        let req = self.request(pb::AuditTailRequest {
            zone: zone.to_owned(),
            after: after.unwrap_or(0),
            limit,
        });
        let r = self.node().audit_tail(req).await.map_err(op_error)?;
        Ok(r.into_inner()
            .records
            .into_iter()
            .map(wire::from_audit_record)
            .collect())
    }

    async fn gc(&self) -> OpResult<GcReport> {
        let r = self.node().gc(self.request(pb::Empty {})).await;
        Ok(wire::from_gc_report(r.map_err(op_error)?.into_inner()))
    }

    async fn mkdir(&self, zone: &str, p: &str, parents: bool) -> OpResult {
        let req = self.request(path(zone, p, parents, false));
        self.node().mkdir(req).await.map_err(op_error)?;
        Ok(())
    }

    async fn put(&self, zone: &str, p: &str, data: ByteStream) -> OpResult<u64> {
        let header = pb::PutChunk {
            part: Some(pb::put_chunk::Part::Header(pb::PutHeader {
                zone: zone.to_owned(),
                path: p.to_owned(),
            })),
        };
        // The bytes go out through a bounded channel (backpressure), then
        // the end marker. A local read error must not end the upload as if
        // it were complete: the call is dropped (the node sees it cancelled,
        // or ending without its end marker, and leaves the file as it was).
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let _ = tx.send(header).await;
        let mut pump = tokio::spawn(upload(data, tx));
        let req = self.request(tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(
            rx,
        ));
        let mut node = self.node();
        let mut call = Box::pin(async move { node.put(req).await });
        let sent = tokio::select! {
            sent = &mut call => sent,
            pumped = &mut pump => match pumped {
                Ok(Some((e, tx))) => {
                    drop(call);
                    drop(tx);
                    return Err(e);
                }
                _ => call.await,
            },
        };
        pump.abort();
        Ok(sent.map_err(op_error)?.into_inner().bytes)
    }

    async fn write_file(&self, zone: &str, p: &str, data: Vec<u8>) -> OpResult {
        let req = self.request(pb::WriteFileRequest {
            zone: zone.to_owned(),
            path: p.to_owned(),
            data,
        });
        self.node().write_file(req).await.map_err(op_error)?;
        Ok(())
    }

    async fn get(
        &self,
        zone: &str,
        p: &str,
        range: Range,
        linearizable: bool,
    ) -> OpResult<Download> {
        let req = self.request(pb::GetRequest {
            zone: zone.to_owned(),
            path: p.to_owned(),
            offset: range.offset,
            length: range.length,
            linearizable,
        });
        let mut s = self.node().get(req).await.map_err(op_error)?.into_inner();
        // The first chunk says how much follows (and may carry bytes).
        let first = s
            .message()
            .await
            .map_err(op_error)?
            .ok_or_else(|| OpError::Failed("the node answered a read with nothing".into()))?;
        let total = first
            .total
            .ok_or_else(|| OpError::Failed("the node's answer did not say its size".into()))?;
        let head = futures::stream::iter([Ok(first.data)]);
        Ok(Download {
            total,
            bytes: head.chain(chunks(s)).boxed(),
        })
    }

    async fn stat(&self, zone: &str, p: &str, linearizable: bool) -> OpResult<Stat> {
        let req = self.request(path(zone, p, false, linearizable));
        let s = self.node().stat(req).await.map_err(op_error)?;
        wire::from_stat(s.into_inner())
    }

    async fn list(&self, zone: &str, p: &str, linearizable: bool) -> OpResult<Vec<Entry>> {
        let req = self.request(path(zone, p, false, linearizable));
        let l = self.node().list(req).await.map_err(op_error)?.into_inner();
        Ok(l.entries.into_iter().map(wire::from_entry).collect())
    }

    async fn remove(&self, zone: &str, p: &str, recursive: bool) -> OpResult {
        let req = self.request(path(zone, p, recursive, false));
        self.node().remove(req).await.map_err(op_error)?;
        Ok(())
    }

    async fn rename(&self, zone: &str, from: &str, to: &str) -> OpResult {
        let req = self.request(two_paths(zone, from, to));
        self.node().rename(req).await.map_err(op_error)?;
        Ok(())
    }

    async fn link(&self, zone: &str, from: &str, to: &str) -> OpResult {
        let req = self.request(two_paths(zone, from, to));
        self.node().link(req).await.map_err(op_error)?;
        Ok(())
    }

    async fn symlink(&self, zone: &str, target: &str, path: &str) -> OpResult {
        let req = self.request(pb::SymlinkRequest {
            zone: zone.to_owned(),
            target: target.to_owned(),
            path: path.to_owned(),
        });
        self.node().symlink(req).await.map_err(op_error)?;
        Ok(())
    }

    async fn readlink(&self, zone: &str, path: &str) -> OpResult<String> {
        let req = self.request(pb::PathRequest {
            zone: zone.to_owned(),
            path: path.to_owned(),
            ..Default::default()
        });
        let r = self.node().readlink(req).await.map_err(op_error)?;
        Ok(r.into_inner().target)
    }

    async fn mount(&self, zone: &str, p: &str, target: &str) -> OpResult<u64> {
        let req = self.request(pb::MountRequest {
            zone: zone.to_owned(),
            path: p.to_owned(),
            target: target.to_owned(),
        });
        Ok(self
            .node()
            .mount(req)
            .await
            .map_err(op_error)?
            .into_inner()
            .ino)
    }

    async fn pipe_create(&self, zone: &str, p: &str, capacity: u64) -> OpResult {
        let req = self.request(pb::PipeCreateRequest {
            zone: zone.to_owned(),
            path: p.to_owned(),
            capacity_bytes: capacity,
        });
        self.node().pipe_create(req).await.map_err(op_error)?;
        Ok(())
    }

    async fn pipe_stat(&self, zone: &str, p: &str) -> OpResult<PipeStat> {
        let req = self.request(path(zone, p, false, false));
        let s = self.node().pipe_stat(req).await.map_err(op_error)?;
        wire::from_pipe_stat(s.into_inner())
    }

    async fn pipe_list(&self, zone: &str, dir: &str) -> OpResult<Vec<PipeEntry>> {
        let req = self.request(path(zone, dir, false, false));
        let l = self.node().pipe_list(req).await.map_err(op_error)?;
        l.into_inner()
            .pipes
            .into_iter()
            .map(wire::from_pipe_entry)
            .collect()
    }

    async fn pipe_cat(&self, zone: &str, p: &str, follow: bool) -> OpResult<ByteStream> {
        let req = self.request(pb::PipeCatRequest {
            zone: zone.to_owned(),
            path: p.to_owned(),
            follow,
        });
        let s = self.node().pipe_cat(req).await.map_err(op_error)?;
        Ok(chunks(s.into_inner()))
    }

    async fn pipe_remove(&self, zone: &str, p: &str) -> OpResult {
        let req = self.request(path(zone, p, false, false));
        self.node().pipe_remove(req).await.map_err(op_error)?;
        Ok(())
    }

    async fn write_tuple(&self, zone: &str, t: TupleSpec, insert: bool) -> OpResult<Written> {
        let req = self.request(pb::TupleRequest {
            zone: zone.to_owned(),
            subject: t.subject,
            relation: t.relation,
            object: t.object,
            insert,
        });
        let w = self.node().write_tuple(req).await.map_err(op_error)?;
        Ok(wire::from_written(w.into_inner()))
    }

    async fn check(&self, zone: &str, q: CheckQuery) -> OpResult<Decision> {
        let req = self.request(pb::CheckRequest {
            zone: zone.to_owned(),
            subject: q.subject,
            permission: q.permission,
            object: q.object,
            at: q.at,
        });
        let d = self.node().check(req).await.map_err(op_error)?;
        Ok(wire::from_decision(d.into_inner()))
    }

    async fn secret_set(&self, zone: &str, destination: &str, headers: &[String]) -> OpResult<u64> {
        let req = self.request(pb::SecretSetRequest {
            zone: zone.to_owned(),
            destination: destination.to_owned(),
            headers: headers.to_vec(),
        });
        let r = self.node().secret_set(req).await.map_err(op_error)?;
        Ok(r.into_inner().revision)
    }

    async fn secret_list(&self, zone: &str) -> OpResult<Vec<SecretEntry>> {
        let req = self.request(pb::ZoneRef {
            zone: zone.to_owned(),
        });
        let l = self
            .node()
            .secret_list(req)
            .await
            .map_err(op_error)?
            .into_inner();
        Ok(l.rows
            .into_iter()
            .map(|r| SecretEntry {
                destination: r.destination,
                headers: r.headers,
            })
            .collect())
    }

    async fn tuples(&self, zone: &str) -> OpResult<Vec<TupleRow>> {
        let req = self.request(pb::ZoneRef {
            zone: zone.to_owned(),
        });
        let l = self
            .node()
            .tuples(req)
            .await
            .map_err(op_error)?
            .into_inner();
        Ok(l.tuples.into_iter().map(wire::from_tuple_row).collect())
    }

    async fn token_issue(
        &self,
        zone: &str,
        principal: Option<&str>,
        ttl: Duration,
        caps: &str,
        reach: &[String],
    ) -> OpResult<Issued> {
        let req = self.request(pb::IssueRequest {
            zone: zone.to_owned(),
            principal: principal.unwrap_or_default().to_owned(),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            caps: caps.to_owned(),
            reach: reach.to_vec(),
        });
        let i = self.node().issue_token(req).await.map_err(op_error)?;
        wire::from_issued(i.into_inner())
    }

    async fn token_verify(&self, token: &str) -> OpResult<Claims> {
        let req = self.request(pb::VerifyRequest {
            token: token.to_owned(),
        });
        let c = self.node().verify_token(req).await.map_err(op_error)?;
        wire::from_claims(c.into_inner())
    }

    async fn token_revoke(&self, zone: Option<&str>, id: &str) -> OpResult<Option<String>> {
        let req = self.request(pb::TokenRef {
            zone: zone.unwrap_or_default().to_owned(),
            id: id.to_owned(),
        });
        let z = self.node().revoke_token(req).await.map_err(op_error)?;
        Ok(Some(z.into_inner().zone))
    }

    async fn run(&self, spec: RunSpec, io: RunIo) -> OpResult<Option<i32>> {
        use pb::run_event::Event;
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let mut agents = spec.agents.into_iter();
        let native = spec.native.map(|n| {
            let (image, cpus, host) = match n.isolation {
                crate::native::Isolation::Container { image, cpus } => (image, cpus, false),
                crate::native::Isolation::Host => (String::new(), None, true),
            };
            pb::NativeRun {
                image,
                command: n.command,
                cpus,
                host,
            }
        });
        let main = match (agents.next(), &native) {
            (Some(main), _) => main,
            (None, Some(_)) => crate::ops::AgentSpec {
                name: String::new(),
                code: Vec::new(),
                args: Vec::new(),
            },
            (None, None) => return Err(OpError::Usage("nothing to run".into())),
        };
        let start = pb::run_input::Input::Start(pb::RunRequest {
            native,
            zone: spec.zone,
            agent: main.code,
            name: main.name,
            args: main.args,
            env: spec.env,
            timeout_ms: spec.timeout.map(ms),
            memory_bytes: spec.memory,
            fuel: spec.fuel,
            with: agents
                .map(|a| pb::Companion {
                    agent: a.code,
                    name: a.name,
                    args: a.args,
                })
                .collect(),
        });
        let (output, stdin) = match io {
            RunIo::Inherit => (None, process_stdin()),
            RunIo::Stream { output, stdin } => (
                Some(output),
                stdin.unwrap_or_else(|| futures::stream::empty().boxed()),
            ),
        };
        // The start, then stdin as it comes (a bounded channel: what the
        // node has not taken yet is not read).
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let _ = tx.send(pb::RunInput { input: Some(start) }).await;
        let forward = tokio::spawn(forward_stdin(stdin, tx));
        let req = self.request(tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(
            rx,
        ));
        let events = self.node().run(req).await;
        let mut events = events.map_err(op_error)?.into_inner();
        let _stop_forwarding = AbortOnDrop(forward);
        while let Some(event) = events.message().await.map_err(op_error)? {
            let out = match event.event {
                Some(Event::Stdout(b)) => Output::Stdout(b),
                Some(Event::Stderr(b)) => Output::Stderr(b),
                Some(Event::Exit(exit)) => {
                    if !exit.error.is_empty() {
                        eprintln!("error: {}", exit.error);
                    }
                    if !exit.hint.is_empty() {
                        eprintln!("hint: {}", exit.hint);
                    }
                    return Ok(Some(exit.code));
                }
                None => continue,
            };
            if !super::run::deliver(output.as_ref(), out).await {
                return Ok(None);
            }
        }
        Err(
            KernelError::Unavailable("the node ended the run without its exit status".into())
                .into(),
        )
    }
}

/// A request naming two paths of a zone (a rename's, a link's).
fn two_paths(zone: &str, from: &str, to: &str) -> pb::RenameRequest {
    pb::RenameRequest {
        zone: zone.to_owned(),
        from: from.to_owned(),
        to: to.to_owned(),
    }
}
