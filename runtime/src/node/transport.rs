//! `GrpcTransport`: the kernel's [`Transport`] over gRPC. Each peer node has
//! a bounded queue and a task that keeps one `Exchange` stream open to it
//! (reconnecting with backoff), draining whatever is queued, of every zone,
//! into one batch per send. `send` never waits: a full queue (a slow or dead
//! peer) drops, which Raft tolerates, so one peer never holds up another.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nexus_kernel::transport::Transport;
use nexus_kernel::types::{ReplicaId, ZoneId};
use nexus_proto::transport::raft_transport_client::RaftTransportClient;
use nexus_proto::transport::{Batch, Envelope};
use protobuf::Message as _;
use raft::prelude::Message;
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;

/// Messages queued for one peer at most; beyond that they are dropped.
pub const PEER_QUEUE: usize = 8192;
/// Envelopes in one batch at most.
pub const MAX_BATCH: usize = 1024;
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

struct Link {
    queue: mpsc::Sender<Envelope>,
    dropped: AtomicU64,
}

pub struct GrpcTransport {
    links: HashMap<ReplicaId, Link>,
    /// Fault injection: peers this node's messages do not reach.
    cut: std::sync::RwLock<std::collections::HashSet<ReplicaId>>,
}

impl GrpcTransport {
    /// Starts a link task per peer (`node id`, `host:port`) on the current
    /// tokio runtime.
    pub fn start(me: ReplicaId, peers: &[(ReplicaId, String)]) -> Arc<GrpcTransport> {
        let links = peers
            .iter()
            .filter(|(id, _)| *id != me)
            .map(|(id, addr)| {
                let (tx, rx) = mpsc::channel(PEER_QUEUE);
                tokio::spawn(run_link(me, *id, addr.clone(), rx));
                (
                    *id,
                    Link {
                        queue: tx,
                        dropped: AtomicU64::new(0),
                    },
                )
            })
            .collect();
        Arc::new(GrpcTransport {
            links,
            cut: Default::default(),
        })
    }

    /// Fault injection (tests, drills): from now on this node's messages to
    /// `peers` are dropped, as if the network between them were cut.
    pub fn cut(&self, peers: &[ReplicaId]) {
        self.cut
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .extend(peers);
    }

    /// Undoes every [`cut`](Self::cut).
    pub fn heal(&self) {
        self.cut.write().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Messages dropped so far because a peer's queue was full.
    pub fn dropped(&self, peer: ReplicaId) -> u64 {
        self.links
            .get(&peer)
            .map_or(0, |l| l.dropped.load(Ordering::Relaxed))
    }
}

impl Transport for GrpcTransport {
    fn send(&self, zone: &ZoneId, msgs: Vec<Message>) {
        let cut = self.cut.read().unwrap_or_else(|p| p.into_inner());
        for m in msgs {
            if cut.contains(&m.to) {
                continue;
            }
            let Some(link) = self.links.get(&m.to) else {
                tracing::warn!(%zone, to = m.to, "raft message for an unknown node dropped");
                continue;
            };
            let message = match m.write_to_bytes() {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(%zone, "cannot encode a raft message: {e}");
                    continue;
                }
            };
            let env = Envelope {
                zone: zone.to_string(),
                message,
            };
            if link.queue.try_send(env).is_err() {
                link.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Keeps one stream to `to` open and feeds it batches from `queue`.
async fn run_link(me: ReplicaId, to: ReplicaId, addr: String, mut queue: mpsc::Receiver<Envelope>) {
    let url = if addr.contains("://") {
        addr
    } else {
        format!("http://{addr}")
    };
    let mut backoff = FIRST_BACKOFF;
    loop {
        let mut client = match RaftTransportClient::connect(url.clone()).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(to, %url, "raft link: connect failed: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let (batches, outbound) = mpsc::channel::<Batch>(16);
        let acks = match client.exchange(ReceiverStream::new(outbound)).await {
            Ok(r) => r.into_inner(),
            Err(e) => {
                tracing::warn!(to, %url, "raft link refused: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = FIRST_BACKOFF;
        let watcher = tokio::spawn(watch_acks(to, acks));
        loop {
            let Some(first) = queue.recv().await else {
                return; // the transport is gone
            };
            let mut envelopes = vec![first];
            while envelopes.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(e) => envelopes.push(e),
                    Err(_) => break,
                }
            }
            let batch = Batch {
                from_node: me,
                to_node: to,
                envelopes,
            };
            if batches.send(batch).await.is_err() || watcher.is_finished() {
                break; // the stream broke: reconnect (this batch is lost)
            }
        }
        watcher.abort();
    }
}

/// Logs what the peer refused; ends when the stream does.
async fn watch_acks(
    to: ReplicaId,
    mut acks: tonic::codec::Streaming<nexus_proto::transport::BatchAck>,
) {
    loop {
        match acks.message().await {
            Ok(Some(ack)) => {
                for r in ack.refused {
                    tracing::warn!(to, zone = %r.zone, "peer refused a raft message: {}", r.reason);
                }
            }
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(to, "raft link closed: {e}");
                return;
            }
        }
    }
}
