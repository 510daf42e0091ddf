//! The receiving side of the Raft transport: a peer's batches are checked
//! (a known peer, proved by its certificate to be the node it says it is,
//! addressed to this node) and each envelope is handed to its
//! zone through [`Kernel::deliver`], which refuses zones this node does not
//! serve and senders that are not replicas of the zone. Every refusal is
//! logged and reported back in the batch's ack; nothing refused reaches a
//! replica. Snapshots arrive on `InstallSnapshot` and reach their zone only
//! once complete and verified (`node::snapshot`). Writes a follower makes
//! arrive on `Forward` and are gated again by the kernel, as the task that
//! asked for them (`Kernel::take_forwarded`). Every call on this service
//! comes from a certified node: an interceptor refuses anything else
//! before its message is read.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use nexus_kernel::Kernel;
use nexus_kernel::KernelError;
use nexus_kernel::{ReplicaId, ZoneId};
use nexus_proto::transport::raft_transport_server::{RaftTransport, RaftTransportServer};
use nexus_proto::transport::{Batch, BatchAck, Refusal, SnapshotAck, SnapshotChunk};
use nexus_proto::transport::{ForwardOutcomes, ForwardedWrites};
use protobuf::Message as _;
use raft::prelude::Message;
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::forward::MAX_FORWARD_BATCH;
use super::snapshot::{header_of, Assembly, SnapshotError};
use super::tls::{NodeTls, Peer};
use super::transport::MAX_MESSAGE;
use crate::ops::run::RunPolicy;

/// The service; cheap to clone (each stream's task holds one).
#[derive(Clone)]
pub struct RaftService(Arc<Receiver>);

pub struct Receiver {
    kernel: Arc<Kernel>,
    tls: Arc<NodeTls>,
    peers: HashSet<ReplicaId>,
    /// Snapshots being received at once (each into a spool file).
    receiving: Arc<tokio::sync::Semaphore>,
}

/// Snapshots a node receives at once at most; a leader whose snapshot is
/// refused for this sends it again later (raft-rs retries).
pub const MAX_SNAPSHOT_RECEIVES: usize = 2;

impl RaftService {
    pub fn new(
        kernel: Arc<Kernel>,
        tls: Arc<NodeTls>,
        peers: impl IntoIterator<Item = ReplicaId>,
    ) -> Self {
        RaftService(Arc::new(Receiver {
            kernel,
            tls,
            peers: peers.into_iter().collect(),
            receiving: Arc::new(tokio::sync::Semaphore::new(MAX_SNAPSHOT_RECEIVES)),
        }))
    }
}

/// Why a snapshot stream was refused, as the sender hears it.
fn refusal(e: SnapshotError) -> Status {
    match e {
        SnapshotError::Spool(why) => Status::unavailable(why),
        damaged => Status::data_loss(damaged.to_string()),
    }
}

/// Runs a step of a snapshot's receive on the blocking threads.
async fn off_thread<T: Send + 'static>(
    step: impl FnOnce() -> Result<T, SnapshotError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(step)
        .await
        .map_err(|e| Status::internal(format!("snapshot receive: {e}")))?
        .map_err(refusal)
}

/// The node a connection's certificate proves its peer to be, if it is a
/// node's, valid now and not revoked.
pub fn certified_node(tls: &NodeTls, peer: Option<&Peer>) -> Result<ReplicaId, Status> {
    let peer = peer.ok_or_else(|| Status::unauthenticated("not a TLS connection"))?;
    tls.current()
        .node_of(peer)
        .map_err(|why| Status::unauthenticated(format!("{}: {why}", peer.remote)))
}

impl Receiver {
    /// The certified node behind a call, if it is a known peer.
    fn peer_node(&self, peer: Option<&Peer>) -> Result<ReplicaId, Status> {
        let node = certified_node(&self.tls, peer)?;
        if node == self.kernel.node_id() || !self.peers.contains(&node) {
            return Err(Status::permission_denied(format!(
                "node {node} is not a peer of node {}",
                self.kernel.node_id()
            )));
        }
        Ok(node)
    }

    /// Checks a batch's or snapshot's header: from the node the
    /// connection's certificate names, a known peer, to this node.
    fn admit(&self, peer: Option<&Peer>, from: ReplicaId, to: ReplicaId) -> Result<(), Status> {
        let me = self.kernel.node_id();
        let certified = certified_node(&self.tls, peer)?;
        if from != certified {
            return Err(Status::permission_denied(format!(
                "node {certified} sent a message as node {from}"
            )));
        }
        if from == me {
            return Err(Status::failed_precondition(format!(
                "node id clash: a peer claims to be node {me}, which is this node"
            )));
        }
        if !self.peers.contains(&from) {
            return Err(Status::permission_denied(format!(
                "node {from} is not a peer of node {me}"
            )));
        }
        if to != me {
            return Err(Status::failed_precondition(format!(
                "a message for node {to} reached node {me}"
            )));
        }
        Ok(())
    }

    /// Puts an incoming snapshot together, checks it and hands it to its
    /// zone; returns the bytes received.
    async fn install(
        &self,
        peer: Option<&Peer>,
        mut inbound: Streaming<SnapshotChunk>,
    ) -> Result<u64, Status> {
        // Authenticated before a byte of it is read.
        certified_node(&self.tls, peer)?;
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("an empty snapshot stream"))?;
        let header = header_of(&first).map_err(refusal)?;
        let (from, to) = (header.from_node, header.to_node);
        self.admit(peer, from, to)?;
        // Before the data: a zone served here, and a receive slot.
        let zone =
            ZoneId::new(&header.zone).map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.kernel
            .zone(&zone)
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let _receiving = self.receiving.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "already receiving {MAX_SNAPSHOT_RECEIVES} snapshots; the leader sends again later"
            ))
        })?;
        let spool = self
            .kernel
            .snapshot_spool(&zone)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        // The spool is a file: its writes run on the blocking threads.
        let mut assembly = off_thread(move || Assembly::start(first, spool)).await?;
        while let Some(chunk) = inbound.message().await? {
            assembly = off_thread(move || assembly.push(chunk).map(|()| assembly)).await?;
        }
        let bytes = assembly.received();
        let incarnation = assembly.header.incarnation;
        let (msg, spooled) = off_thread(move || assembly.finish()).await?;
        if msg.from != from {
            return Err(Status::invalid_argument(format!(
                "a snapshot from node {} sent by node {from}",
                msg.from
            )));
        }
        self.kernel
            .deliver_snapshot(&zone, msg, incarnation, spooled)
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        Ok(bytes)
    }

    fn deliver(&self, batch: Batch) -> BatchAck {
        let mut ack = BatchAck::default();
        for env in batch.envelopes {
            let outcome = ZoneId::new(&env.zone)
                .map_err(|e| (e.to_string(), false))
                .and_then(|zone| {
                    let msg = Message::parse_from_bytes(&env.message)
                        .map_err(|e| (format!("undecodable raft message: {e}"), false))?;
                    if msg.from != batch.from_node {
                        return Err((
                            format!(
                                "message from node {} in a batch from node {}",
                                msg.from, batch.from_node
                            ),
                            false,
                        ));
                    }
                    self.kernel
                        .deliver(&zone, msg, env.incarnation)
                        .map_err(|e| {
                            let transient = matches!(e, KernelError::Unavailable(_));
                            (e.to_string(), transient)
                        })
                });
            match outcome {
                Ok(()) => ack.delivered += 1,
                Err((reason, transient)) => {
                    if transient {
                        tracing::debug!(from = batch.from_node, zone = %env.zone, "raft message not taken: {reason}");
                    } else {
                        tracing::warn!(from = batch.from_node, zone = %env.zone, "refused a raft message: {reason}");
                    }
                    ack.refused.push(Refusal {
                        zone: env.zone,
                        reason,
                        transient,
                    });
                }
            }
        }
        ack
    }
}

#[tonic::async_trait]
impl RaftTransport for RaftService {
    type ExchangeStream = ReceiverStream<Result<BatchAck, Status>>;

    async fn exchange(
        &self,
        request: Request<Streaming<Batch>>,
    ) -> Result<Response<Self::ExchangeStream>, Status> {
        let peer = Peer::of(&request).cloned();
        // Authenticated before a byte of it is read.
        if let Err(refused) = certified_node(&self.0.tls, peer.as_ref()) {
            tracing::warn!("refused a raft stream: {}", refused.message());
            return Err(refused);
        }
        let mut inbound = request.into_inner();
        let (acks, stream) = mpsc::channel(16);
        let svc = self.0.clone();
        tokio::spawn(async move {
            loop {
                let batch = match inbound.message().await {
                    Ok(Some(b)) => b,
                    Ok(None) => return,
                    Err(e) => {
                        tracing::debug!("raft stream ended: {e}");
                        return;
                    }
                };
                // Every batch: a certificate revoked or expired since the
                // handshake stops the stream.
                if let Err(refused) = svc.admit(peer.as_ref(), batch.from_node, batch.to_node) {
                    tracing::warn!(
                        from = batch.from_node,
                        "refused a raft stream: {}",
                        refused.message()
                    );
                    let _ = acks.send(Err(refused)).await;
                    return;
                }
                if acks.send(Ok(svc.deliver(batch))).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(stream)))
    }

    /// The writes are taken together, so they share the next log batch.
    async fn forward(
        &self,
        request: Request<ForwardedWrites>,
    ) -> Result<Response<ForwardOutcomes>, Status> {
        let from = self.0.peer_node(Peer::of(&request))?;
        let writes = request.into_inner().writes;
        if writes.len() > MAX_FORWARD_BATCH {
            return Err(Status::invalid_argument(format!(
                "{} writes in one call (at most {MAX_FORWARD_BATCH})",
                writes.len()
            )));
        }
        let kernel = &self.0.kernel;
        let taken = writes.iter().map(|w| kernel.take_forwarded(from, w));
        let outcomes = futures::future::join_all(taken).await;
        Ok(Response::new(ForwardOutcomes { outcomes }))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<SnapshotAck>, Status> {
        let peer = Peer::of(&request).cloned();
        match self.0.install(peer.as_ref(), request.into_inner()).await {
            Ok(bytes) => Ok(Response::new(SnapshotAck { bytes })),
            Err(refused) => {
                tracing::warn!("refused a snapshot: {}", refused.message());
                Err(refused)
            }
        }
    }
}

/// Serves the Raft transport and the client API over TLS on `listener`
/// until `shutdown` resolves. `peers` are the other nodes (id, address);
/// `runs` limits the agents clients run here.
pub async fn serve(
    kernel: Arc<Kernel>,
    tls: Arc<NodeTls>,
    peers: &[(ReplicaId, String)],
    runs: RunPolicy,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let raft = RaftService::new(kernel.clone(), tls.clone(), peers.iter().map(|(id, _)| *id));
    let api = super::api::NodeApi::new(kernel.clone(), tls.clone(), peers, runs);
    let api = nexus_proto::node::node_server::NodeServer::new(api)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let (k, t) = (kernel, tls.clone());
    let api = tonic::service::interceptor::InterceptedService::new(api, move |req| {
        authenticated(&k, &t, req)
    });
    let raft = RaftTransportServer::new(raft)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let t = tls.clone();
    let raft = tonic::service::interceptor::InterceptedService::new(raft, move |req| {
        certified_node(&t, Peer::of(&req)).map(|_| req)
    });
    tonic::transport::Server::builder()
        .http2_adaptive_window(Some(true))
        .add_service(raft)
        .add_service(api)
        .serve_with_incoming_shutdown(super::tls::accept::incoming(listener, tls), shutdown)
        .await
}

/// Every client API call is authenticated before its message is read: a
/// token that verifies, or a connection certified as a node's (the calls
/// between nodes carry no token). Each call then checks what it needs.
fn authenticated(
    kernel: &Kernel,
    tls: &NodeTls,
    mut req: Request<()>,
) -> Result<Request<()>, Status> {
    match super::api::NodeApi::bearer(&req) {
        // A caller's token (also on a call a node forwards for it): the
        // handler takes the claims from here, one verification per call.
        Ok(token) => {
            let claims = kernel.verify_token(&token).map_err(super::api::status)?;
            req.extensions_mut().insert(claims);
            Ok(req)
        }
        // No token: only a node's own calls (JoinZone, LeaveZone).
        Err(_) if certified_node(tls, Peer::of(&req)).is_ok() => Ok(req),
        Err(no_token) => Err(no_token),
    }
}

/// Binds `addr` (port 0 picks a free one); returns the listener and its address.
pub fn bind(addr: SocketAddr) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}
