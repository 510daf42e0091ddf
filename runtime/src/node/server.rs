//! The receiving side of the Raft transport: a peer's batches are checked
//! (a known peer, addressed to this node) and each envelope is handed to its
//! zone through [`Kernel::deliver`], which refuses zones this node does not
//! serve and senders that are not replicas of the zone. Every refusal is
//! logged and reported back in the batch's ack; nothing refused reaches a
//! replica.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use nexus_kernel::kernel::Kernel;
use nexus_kernel::types::{ReplicaId, ZoneId};
use nexus_proto::transport::raft_transport_server::{RaftTransport, RaftTransportServer};
use nexus_proto::transport::{Batch, BatchAck, Refusal};
use protobuf::Message as _;
use raft::prelude::Message;
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// The service; cheap to clone (each stream's task holds one).
#[derive(Clone)]
pub struct RaftService(Arc<Receiver>);

pub struct Receiver {
    kernel: Arc<Kernel>,
    peers: HashSet<ReplicaId>,
}

impl RaftService {
    pub fn new(kernel: Arc<Kernel>, peers: impl IntoIterator<Item = ReplicaId>) -> Self {
        RaftService(Arc::new(Receiver {
            kernel,
            peers: peers.into_iter().collect(),
        }))
    }
}

impl Receiver {
    /// Checks a batch's header: from a known peer, to this node.
    fn admit(&self, batch: &Batch) -> Result<(), Status> {
        let me = self.kernel.node_id();
        if batch.from_node == me {
            return Err(Status::failed_precondition(format!(
                "node id clash: a peer claims to be node {me}, which is this node"
            )));
        }
        if !self.peers.contains(&batch.from_node) {
            return Err(Status::permission_denied(format!(
                "node {} is not a peer of node {me}",
                batch.from_node
            )));
        }
        if batch.to_node != me {
            return Err(Status::failed_precondition(format!(
                "a batch for node {} reached node {me}",
                batch.to_node
            )));
        }
        Ok(())
    }

    fn deliver(&self, batch: Batch) -> BatchAck {
        let mut ack = BatchAck::default();
        for env in batch.envelopes {
            let outcome = ZoneId::new(&env.zone)
                .map_err(|e| e.to_string())
                .and_then(|zone| {
                    let msg = Message::parse_from_bytes(&env.message)
                        .map_err(|e| format!("undecodable raft message: {e}"))?;
                    if msg.from != batch.from_node {
                        return Err(format!(
                            "message from node {} in a batch from node {}",
                            msg.from, batch.from_node
                        ));
                    }
                    self.kernel.deliver(&zone, msg).map_err(|e| e.to_string())
                });
            match outcome {
                Ok(()) => ack.delivered += 1,
                Err(reason) => {
                    tracing::warn!(from = batch.from_node, zone = %env.zone, "refused a raft message: {reason}");
                    ack.refused.push(Refusal {
                        zone: env.zone,
                        reason,
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
                if let Err(refused) = svc.admit(&batch) {
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
}

/// Serves the Raft transport and the client API on `listener` until
/// `shutdown` resolves. `peers` are the other nodes (id, address).
pub async fn serve(
    kernel: Arc<Kernel>,
    peers: &[(ReplicaId, String)],
    listener: tonic::transport::server::TcpIncoming,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let raft = RaftService::new(kernel.clone(), peers.iter().map(|(id, _)| *id));
    let api = super::api::NodeApi::new(kernel, peers);
    tonic::transport::Server::builder()
        .add_service(RaftTransportServer::new(raft))
        .add_service(nexus_proto::node::node_server::NodeServer::new(api))
        .serve_with_incoming_shutdown(listener, shutdown)
        .await
}

/// Binds `addr` (port 0 picks a free one); returns the listener and its address.
pub fn bind(
    addr: SocketAddr,
) -> std::io::Result<(tonic::transport::server::TcpIncoming, SocketAddr)> {
    let incoming = tonic::transport::server::TcpIncoming::bind(addr)?;
    let local = incoming.local_addr()?;
    Ok((incoming, local))
}
