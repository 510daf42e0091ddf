//! The client API of a node (`nexus.node.v1.Node`), a thin adapter over
//! the operations layer: every call verifies its bearer token first, then
//! runs the operation on [`Local`] as the token's principal in the token's
//! zone (so the gate decides exactly as in embedded mode) and converts the
//! answer ([`wire`]); an error becomes a status carrying its fault, once,
//! in [`wire::status`]. The calls that coordinate several nodes live in
//! `api/group.rs`.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use nexus_kernel::Claims;
use nexus_kernel::Kernel;
use nexus_kernel::KernelError;
use nexus_kernel::Role;
use nexus_kernel::Task;
use nexus_kernel::{ReplicaId, ZoneId};
use nexus_proto::node as pb;
use nexus_proto::node::node_server::Node;
use tonic::{Request, Response, Status, Streaming};

use crate::ops::local::Local;
use crate::ops::run::{Hosts, RunPolicy};
use crate::ops::{
    wire, AgentSpec, ByteStream, CheckQuery, OpError, Ops, Output, Range, RunIo, RunSpec,
    TupleSpec, TRANSFER_CHUNK,
};
use crate::session::Acting;

use super::tls::NodeTls;

mod group;

/// A kernel error as a status (the one mapping is [`wire::status`]).
pub fn status(e: KernelError) -> Status {
    wire::status(&OpError::Kernel(e))
}

fn refused(e: OpError) -> Status {
    wire::status(&e)
}

type Reply<T> = Result<Response<T>, Status>;
type ReplyStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

pub struct NodeApi {
    kernel: Arc<Kernel>,
    /// This node's certificate and trust: calls to peers, and the check
    /// that a membership call comes from a certified node.
    tls: Arc<NodeTls>,
    /// Peer node id → address, for coordinating zone creation.
    peers: HashMap<ReplicaId, String>,
    hosts: Arc<Hosts>,
}

impl NodeApi {
    pub fn new(
        kernel: Arc<Kernel>,
        tls: Arc<NodeTls>,
        peers: &[(ReplicaId, String)],
        runs: RunPolicy,
    ) -> Self {
        NodeApi {
            hosts: Arc::new(Hosts::new(&kernel, runs)),
            kernel,
            tls,
            peers: peers.iter().cloned().collect(),
        }
    }

    /// The request's bearer token (not yet verified).
    pub(super) fn bearer<T>(req: &Request<T>) -> Result<String, Status> {
        req.metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned)
            .ok_or_else(|| Status::unauthenticated("a token is required (nexus --token …)"))
    }

    /// The request's token, as the server's interceptor verified it
    /// before the message was read (`server::authenticated`).
    fn verified<T>(&self, req: &Request<T>) -> Result<Claims, Status> {
        req.extensions()
            .get::<Claims>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("a token is required (nexus --token …)"))
    }

    /// The request's verified token, which must be for `zone`.
    fn claims<T>(&self, req: &Request<T>, zone: &str) -> Result<Claims, Status> {
        let claims = self.verified(req)?;
        let zone = ZoneId::new(zone).map_err(status)?;
        if claims.zone != zone {
            return Err(status(KernelError::Access(format!(
                "the token is for zone {}, not {zone}",
                claims.zone
            ))));
        }
        Ok(claims)
    }

    /// A task for the request's token in `zone`.
    fn task<T>(&self, req: &Request<T>, zone: &str) -> Result<Task, Status> {
        let claims = self.claims(req, zone)?;
        self.kernel.spawn_holder_task(&claims).map_err(status)
    }

    /// The operations as the request's token holder.
    fn ops<T>(&self, req: &Request<T>) -> Result<Local, Status> {
        let acting = Acting::holder(self.verified(req)?);
        Ok(Local::new(self.kernel.clone(), acting, self.hosts.clone()))
    }

    fn role(witness: bool) -> Role {
        if witness {
            Role::Witness
        } else {
            Role::Voter
        }
    }

    fn replicas(list: &[pb::Replica]) -> Vec<(ReplicaId, Role)> {
        list.iter()
            .map(|r| (r.node, Self::role(r.witness)))
            .collect()
    }
}

fn ok<T>(v: T) -> Reply<T> {
    Ok(Response::new(v))
}

/// Bytes as data chunks; the first says how many bytes the whole holds.
fn data_chunks(bytes: ByteStream, total: Option<u64>) -> ReplyStream<pb::DataChunk> {
    let mut total = total;
    bytes
        .map(move |b| {
            b.map(|b| pb::DataChunk {
                data: b,
                total: total.take(),
            })
            .map_err(refused)
        })
        .boxed()
}

/// A run's stdin: the messages after the first. Anything but a chunk of
/// at most a transfer chunk ends it (the agent reads end-of-file).
fn stdin_of(s: Streaming<pb::RunInput>) -> ByteStream {
    s.map(|m| match m.map(|m| m.input) {
        Ok(Some(pb::run_input::Input::Stdin(d))) if d.len() <= TRANSFER_CHUNK => Ok(d.into()),
        _ => Err(OpError::Usage("a run's stdin ended early".into())),
    })
    .boxed()
}

/// The bytes of a `Put` after its header, passed on by a task of their
/// own. A chunk larger than a transfer chunk is refused (it would be
/// buffered whole), and the upload is complete only at its end marker,
/// whose count must match: a stream that ends without it (a client that
/// broke off, whatever its transport made of that) ends the bytes with
/// an error, so a partial upload is never committed.
fn put_body(s: Streaming<pb::PutChunk>) -> ByteStream {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(pass_put_body(s, tx));
    tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(rx).boxed()
}

async fn pass_put_body(
    mut s: Streaming<pb::PutChunk>,
    tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, OpError>>,
) {
    use pb::put_chunk::Part;
    let mut received = 0u64;
    let refusal = loop {
        let part = match s.message().await {
            Ok(Some(m)) => m.part,
            Ok(None) => {
                break OpError::Failed(
                    "the upload broke off before its end: nothing was written".into(),
                )
            }
            Err(e) => break OpError::Failed(format!("the upload broke off: {}", e.message())),
        };
        match part {
            Some(Part::Data(d)) if d.len() <= TRANSFER_CHUNK => {
                received += d.len() as u64;
                if tx.send(Ok(d)).await.is_err() {
                    return;
                }
            }
            Some(Part::Data(d)) => {
                break OpError::Usage(format!(
                    "an upload chunk of {} bytes (at most {TRANSFER_CHUNK})",
                    d.len()
                ))
            }
            Some(Part::End(end)) if end.bytes == received => match s.message().await {
                // Complete: the bytes end here.
                Ok(None) => return,
                _ => break OpError::Usage("an upload went on after its end".into()),
            },
            Some(Part::End(end)) => {
                break OpError::Failed(format!(
                    "the upload says it held {} bytes, {received} arrived: nothing was written",
                    end.bytes
                ))
            }
            Some(Part::Header(_)) => break OpError::Usage("a put's header came twice".into()),
            None => break OpError::Usage("an upload message with nothing in it".into()),
        }
    };
    let _ = tx.send(Err(refusal)).await;
}

#[tonic::async_trait]
impl Node for NodeApi {
    async fn create_zone(&self, req: Request<pb::CreateZoneRequest>) -> Reply<pb::ZoneReply> {
        self.create_zone_across(req).await
    }

    async fn join_zone(&self, req: Request<pb::JoinZoneRequest>) -> Reply<pb::ZoneReply> {
        self.join_zone_for_peer(req).await
    }

    async fn destroy_zone(&self, req: Request<pb::ZoneRef>) -> Reply<pb::Empty> {
        self.destroy_zone_across(req).await
    }

    async fn add_replica(&self, req: Request<pb::ReplicaChange>) -> Reply<pb::Membership> {
        self.add_replica_across(req).await
    }

    async fn remove_replica(&self, req: Request<pb::ReplicaChange>) -> Reply<pb::Membership> {
        self.remove_replica_across(req).await
    }

    async fn leave_zone(&self, req: Request<pb::ZoneRef>) -> Reply<pb::Empty> {
        self.leave_zone_for_peer(req).await
    }

    async fn zone_status(&self, req: Request<pb::ZoneRef>) -> Reply<pb::ZoneStatus> {
        let s = self.ops(&req)?.zone_status(&req.get_ref().zone).await;
        ok(wire::zone_status(s.map_err(refused)?))
    }

    async fn zone_quota(&self, req: Request<pb::ZoneQuotaRequest>) -> Reply<pb::ZoneUsage> {
        let r = req.get_ref();
        let set = r.set.map(wire::from_quota);
        let u = self.ops(&req)?.zone_quota(&r.zone, set).await;
        ok(wire::usage(u.map_err(refused)?))
    }

    async fn zone_list(&self, req: Request<pb::Empty>) -> Reply<pb::ZoneList> {
        let rows = self.ops(&req)?.zone_list().await.map_err(refused)?;
        ok(pb::ZoneList {
            zones: rows.into_iter().map(wire::zone_row).collect(),
        })
    }

    async fn audit_tail(&self, req: Request<pb::AuditTailRequest>) -> Reply<pb::AuditRecords> {
        let r = req.get_ref();
        let after = (r.after > 0).then_some(r.after);
        let records = self.ops(&req)?.audit_tail(&r.zone, after, r.limit).await;
        ok(pb::AuditRecords {
            records: records
                .map_err(refused)?
                .into_iter()
                .map(wire::audit_record)
                .collect(),
        })
    }

    async fn gc(&self, req: Request<pb::Empty>) -> Reply<pb::GcReport> {
        let r = self.ops(&req)?.gc().await.map_err(refused)?;
        ok(wire::gc_report(r))
    }

    async fn zone_check(&self, req: Request<pb::ZoneCheckRequest>) -> Reply<pb::CheckReport> {
        let r = req.get_ref();
        let report = self.ops(&req)?.zone_check(&r.zone, r.deep).await;
        ok(wire::check_report(report.map_err(refused)?))
    }

    async fn mkdir(&self, req: Request<pb::PathRequest>) -> Reply<pb::Empty> {
        let r = req.get_ref();
        let made = self.ops(&req)?.mkdir(&r.zone, &r.path, r.parents).await;
        made.map_err(refused)?;
        ok(pb::Empty {})
    }

    async fn put(&self, req: Request<Streaming<pb::PutChunk>>) -> Reply<pb::PutReply> {
        // The token is checked before the first message is read.
        let ops = self.ops(&req)?;
        let mut s = req.into_inner();
        let header = match s.message().await? {
            Some(pb::PutChunk {
                part: Some(pb::put_chunk::Part::Header(h)),
            }) => h,
            _ => {
                let e = OpError::Usage("a put starts with its header".into());
                return Err(refused(e));
            }
        };
        // On its own task: a client that goes away mid-upload must not
        // cancel the operation before it removes its temporary file (it
        // sees the stream fail instead, and aborts).
        let put =
            tokio::spawn(async move { ops.put(&header.zone, &header.path, put_body(s)).await });
        let bytes = put
            .await
            .map_err(|e| refused(OpError::Failed(format!("the upload stopped: {e}"))))?
            .map_err(refused)?;
        ok(pb::PutReply { bytes })
    }

    async fn write_file(&self, req: Request<pb::WriteFileRequest>) -> Reply<pb::Empty> {
        let ops = self.ops(&req)?;
        let r = req.into_inner();
        ops.write_file(&r.zone, &r.path, r.data)
            .await
            .map_err(refused)?;
        ok(pb::Empty {})
    }

    type GetStream = ReplyStream<pb::DataChunk>;

    async fn get(&self, req: Request<pb::GetRequest>) -> Reply<Self::GetStream> {
        let r = req.get_ref();
        let range = Range {
            offset: r.offset,
            length: r.length,
        };
        let ops = self.ops(&req)?;
        let download = ops.get(&r.zone, &r.path, range, r.linearizable).await;
        let download = download.map_err(refused)?;
        // An empty answer still sends one chunk: it carries the size.
        let first = futures::stream::iter([Ok(bytes::Bytes::new())]);
        let bytes = first.chain(download.bytes).boxed();
        ok(data_chunks(bytes, Some(download.total)))
    }

    async fn stat(&self, req: Request<pb::PathRequest>) -> Reply<pb::Stat> {
        let r = req.get_ref();
        let s = self.ops(&req)?.stat(&r.zone, &r.path, r.linearizable).await;
        ok(wire::stat(s.map_err(refused)?))
    }

    async fn list(&self, req: Request<pb::PathRequest>) -> Reply<pb::Listing> {
        let r = req.get_ref();
        let rows = self.ops(&req)?.list(&r.zone, &r.path, r.linearizable).await;
        ok(pb::Listing {
            entries: rows
                .map_err(refused)?
                .into_iter()
                .map(wire::entry)
                .collect(),
        })
    }

    async fn remove(&self, req: Request<pb::PathRequest>) -> Reply<pb::Empty> {
        let r = req.get_ref();
        let done = self.ops(&req)?.remove(&r.zone, &r.path, r.parents).await;
        done.map_err(refused)?;
        ok(pb::Empty {})
    }

    async fn rename(&self, req: Request<pb::RenameRequest>) -> Reply<pb::Empty> {
        let r = req.get_ref();
        let done = self.ops(&req)?.rename(&r.zone, &r.from, &r.to).await;
        done.map_err(refused)?;
        ok(pb::Empty {})
    }

    async fn link(&self, req: Request<pb::RenameRequest>) -> Reply<pb::Empty> {
        let r = req.get_ref();
        let done = self.ops(&req)?.link(&r.zone, &r.from, &r.to).await;
        done.map_err(refused)?;
        ok(pb::Empty {})
    }

    async fn symlink(&self, req: Request<pb::SymlinkRequest>) -> Reply<pb::Empty> {
        let r = req.get_ref();
        let done = self.ops(&req)?.symlink(&r.zone, &r.target, &r.path).await;
        done.map_err(refused)?;
        ok(pb::Empty {})
    }

    async fn readlink(&self, req: Request<pb::PathRequest>) -> Reply<pb::LinkTarget> {
        let r = req.get_ref();
        let target = self.ops(&req)?.readlink(&r.zone, &r.path).await;
        ok(pb::LinkTarget {
            target: target.map_err(refused)?,
        })
    }

    async fn mount(&self, req: Request<pb::MountRequest>) -> Reply<pb::MountReply> {
        let r = req.get_ref();
        let ino = self.ops(&req)?.mount(&r.zone, &r.path, &r.target).await;
        ok(pb::MountReply {
            ino: ino.map_err(refused)?,
        })
    }

    async fn write_tuple(&self, req: Request<pb::TupleRequest>) -> Reply<pb::Written> {
        let ops = self.ops(&req)?;
        let r = req.into_inner();
        let tuple = TupleSpec {
            subject: r.subject,
            relation: r.relation,
            object: r.object,
        };
        let w = ops.write_tuple(&r.zone, tuple, r.insert).await;
        ok(wire::written(w.map_err(refused)?))
    }

    async fn check(&self, req: Request<pb::CheckRequest>) -> Reply<pb::Decision> {
        let ops = self.ops(&req)?;
        let r = req.into_inner();
        let query = CheckQuery {
            subject: r.subject,
            permission: r.permission,
            object: r.object,
            at: r.at,
        };
        let d = ops.check(&r.zone, query).await.map_err(refused)?;
        ok(wire::decision(d))
    }

    async fn secret_set(&self, req: Request<pb::SecretSetRequest>) -> Reply<pb::Revision> {
        let r = req.get_ref();
        let revision = self
            .ops(&req)?
            .secret_set(&r.zone, &r.destination, &r.headers)
            .await;
        ok(pb::Revision {
            revision: revision.map_err(refused)?,
        })
    }

    async fn secret_list(&self, req: Request<pb::ZoneRef>) -> Reply<pb::SecretList> {
        let rows = self.ops(&req)?.secret_list(&req.get_ref().zone).await;
        ok(pb::SecretList {
            rows: rows
                .map_err(refused)?
                .into_iter()
                .map(|e| pb::SecretRow {
                    destination: e.destination,
                    headers: e.headers,
                })
                .collect(),
        })
    }

    async fn tuples(&self, req: Request<pb::ZoneRef>) -> Reply<pb::TupleList> {
        let rows = self.ops(&req)?.tuples(&req.get_ref().zone).await;
        ok(pb::TupleList {
            tuples: rows
                .map_err(refused)?
                .into_iter()
                .map(wire::tuple_row)
                .collect(),
        })
    }

    async fn revoke_token(&self, req: Request<pb::TokenRef>) -> Reply<pb::ZoneRef> {
        let r = req.get_ref();
        // No zone named: the caller's token's zone.
        let zone = (!r.zone.is_empty()).then_some(r.zone.as_str());
        let done = self.ops(&req)?.token_revoke(zone, &r.id).await;
        ok(pb::ZoneRef {
            zone: done.map_err(refused)?.unwrap_or_default(),
        })
    }

    async fn issue_token(&self, req: Request<pb::IssueRequest>) -> Reply<pb::Issued> {
        let r = req.get_ref();
        let principal = (!r.principal.is_empty()).then_some(r.principal.as_str());
        let ttl = std::time::Duration::from_millis(r.ttl_ms);
        let ops = self.ops(&req)?;
        let issued = ops
            .token_issue(&r.zone, principal, ttl, &r.caps, &r.reach)
            .await;
        ok(wire::issued(issued.map_err(refused)?))
    }

    async fn verify_token(&self, req: Request<pb::VerifyRequest>) -> Reply<pb::Claims> {
        // Any valid token may ask.
        let claims = self.ops(&req)?.token_verify(&req.get_ref().token).await;
        ok(wire::claims(claims.map_err(refused)?))
    }

    async fn pipe_create(&self, req: Request<pb::PipeCreateRequest>) -> Reply<pb::Empty> {
        let r = req.get_ref();
        let ops = self.ops(&req)?;
        let made = ops.pipe_create(&r.zone, &r.path, r.capacity_bytes).await;
        made.map_err(refused)?;
        ok(pb::Empty {})
    }

    async fn pipe_stat(&self, req: Request<pb::PathRequest>) -> Reply<pb::PipeStat> {
        let r = req.get_ref();
        let s = self.ops(&req)?.pipe_stat(&r.zone, &r.path).await;
        ok(wire::pipe_stat(s.map_err(refused)?))
    }

    async fn pipe_list(&self, req: Request<pb::PathRequest>) -> Reply<pb::PipeList> {
        let r = req.get_ref();
        let pipes = self.ops(&req)?.pipe_list(&r.zone, &r.path).await;
        ok(pb::PipeList {
            pipes: pipes
                .map_err(refused)?
                .into_iter()
                .map(wire::pipe_entry)
                .collect(),
        })
    }

    type PipeCatStream = ReplyStream<pb::DataChunk>;

    async fn pipe_cat(&self, req: Request<pb::PipeCatRequest>) -> Reply<Self::PipeCatStream> {
        let r = req.get_ref();
        let bytes = self.ops(&req)?.pipe_cat(&r.zone, &r.path, r.follow).await;
        ok(data_chunks(bytes.map_err(refused)?, None))
    }

    async fn pipe_remove(&self, req: Request<pb::PathRequest>) -> Reply<pb::Empty> {
        let r = req.get_ref();
        let done = self.ops(&req)?.pipe_remove(&r.zone, &r.path).await;
        done.map_err(refused)?;
        ok(pb::Empty {})
    }

    type RunStream = ReplyStream<pb::RunEvent>;

    /// The agents run on their own task; the first message starts them,
    /// the rest feed the first agent's stdin; their output streams back as
    /// it is written, then one exit event with the code, error and hint
    /// `nexus run` would end with. A client that goes away stops them.
    async fn run(&self, req: Request<Streaming<pb::RunInput>>) -> Reply<Self::RunStream> {
        use pb::run_event::Event;
        // The token is checked before the first message is read.
        let ops = self.ops(&req)?;
        let mut input = req.into_inner();
        let r = match input.message().await? {
            Some(pb::RunInput {
                input: Some(pb::run_input::Input::Start(r)),
            }) => r,
            _ => {
                let e = OpError::Usage("a run starts with what to run".into());
                return Err(refused(e));
            }
        };
        let native = r.native.map(|n| crate::native::NativeSpec {
            isolation: if n.host {
                crate::native::Isolation::Host
            } else {
                crate::native::Isolation::Container {
                    image: n.image,
                    cpus: n.cpus,
                }
            },
            command: n.command,
        });
        let main = pb::Companion {
            agent: r.agent,
            name: r.name,
            args: r.args,
        };
        let agents = std::iter::once(main)
            .filter(|_| native.is_none())
            .chain(r.with)
            .map(|a| AgentSpec {
                name: if a.name.is_empty() {
                    "agent.wasm".into()
                } else {
                    a.name
                },
                code: a.agent,
                args: a.args,
            })
            .collect();
        let spec = RunSpec {
            zone: r.zone,
            agents,
            native,
            env: r.env,
            timeout: r.timeout_ms.map(std::time::Duration::from_millis),
            memory: r.memory_bytes,
            fuel: r.fuel,
        };
        let (out_tx, out_rx) = tokio::sync::mpsc::channel::<Output>(64);
        let (exit_tx, exit_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let io = RunIo::Stream {
                output: out_tx,
                stdin: Some(stdin_of(input)),
            };
            let ended = ops.run(spec, io).await;
            let exit = match ended {
                // The client left; nobody to tell.
                Ok(None) => return,
                Ok(Some(code)) => pb::Exit {
                    code,
                    error: String::new(),
                    hint: String::new(),
                },
                Err(e) => pb::Exit {
                    code: i32::from(e.exit_code()),
                    error: e.to_string(),
                    hint: e.hint().unwrap_or_default().to_owned(),
                },
            };
            let _ = exit_tx.send(exit);
        });
        let output = tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(out_rx).map(|o| {
            let event = match o {
                Output::Stdout(b) => Event::Stdout(b),
                Output::Stderr(b) => Event::Stderr(b),
            };
            Ok(pb::RunEvent { event: Some(event) })
        });
        // The output channel closes when the run is over (every sender
        // gone); then the exit follows.
        let exit = futures::stream::once(exit_rx).filter_map(|e| async move {
            e.ok().map(|exit| {
                Ok(pb::RunEvent {
                    event: Some(Event::Exit(exit)),
                })
            })
        });
        ok(output.chain(exit).boxed())
    }
}
