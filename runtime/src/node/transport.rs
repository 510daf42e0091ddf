//! `GrpcTransport`: the kernel's [`Transport`] over gRPC. Each peer node has
//! a bounded queue and a task that keeps one `Exchange` stream open to it
//! (reconnecting with backoff), draining whatever is queued, of every zone,
//! into one batch per send. `send` never waits: a full queue (a slow or dead
//! peer) drops, which Raft tolerates, so one peer never holds up another.
//! Snapshots leave the batch stream: each is streamed in checked chunks on
//! a call of its own (`node::snapshot`), at most one per peer and zone at a
//! time, and its fate is reported back to the zone's leader.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nexus_kernel::Transport;
use nexus_kernel::{ReplicaId, ZoneId};
use nexus_proto::transport::raft_transport_client::RaftTransportClient;
use nexus_proto::transport::{Batch, Envelope};
use protobuf::Message as _;
use raft::prelude::{Message, MessageType};
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;

use super::forward::Forwarder;
use super::snapshot::{self, Fault};
use super::tls::{self, Dialer, NodeTls};

/// Messages queued for one peer at most; beyond that they are dropped.
pub const PEER_QUEUE: usize = 8192;
/// Envelopes in one batch at most.
pub const MAX_BATCH: usize = 1024;
/// A batch stops growing past this many bytes (one envelope may exceed it).
pub const MAX_BATCH_BYTES: usize = 4 << 20;
/// Largest gRPC message a node sends or accepts (a batch holding one
/// maximal pipe checkpoint fits).
pub const MAX_MESSAGE: usize = 64 << 20;
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

struct Link {
    queue: mpsc::Sender<Queued>,
    dropped: AtomicU64,
}

/// A queued envelope, with the generation of its zone's local replica.
struct Queued {
    generation: u64,
    env: Envelope,
}

/// Generations of this node's replicas, by zone: bumped when a replica is
/// dropped, so that what it queued (say, for a peer that is unreachable)
/// is never sent on behalf of a later replica of the same zone here.
#[derive(Default)]
struct Generations(std::sync::RwLock<HashMap<String, u64>>);

impl Generations {
    fn current(&self, zone: &str) -> u64 {
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        map.get(zone).copied().unwrap_or(0)
    }

    fn bump(&self, zone: &str) {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        *map.entry(zone.to_owned()).or_default() += 1;
    }

    fn is_current(&self, q: &Queued) -> bool {
        self.current(&q.env.zone) == q.generation
    }
}

/// Called with (zone, peer, delivered) when a streamed snapshot lands or fails.
pub type SnapshotReporter = Box<dyn Fn(&ZoneId, ReplicaId, bool) + Send + Sync>;

/// Snapshots this node is streaming, and what became of them.
#[derive(Default)]
struct Snapshots {
    in_flight: Mutex<HashSet<(ReplicaId, ZoneId)>>,
    fault: Mutex<Option<Fault>>,
    reporter: OnceLock<SnapshotReporter>,
    delivered: AtomicU64,
    delivered_bytes: AtomicU64,
    failed: AtomicU64,
}

pub struct GrpcTransport {
    me: ReplicaId,
    dialer: Dialer,
    links: HashMap<ReplicaId, Link>,
    addrs: HashMap<ReplicaId, String>,
    /// Fault injection: peers this node's messages do not reach.
    cut: std::sync::RwLock<HashSet<ReplicaId>>,
    snapshots: Arc<Snapshots>,
    generations: Arc<Generations>,
    /// This node's replica of each zone (its incarnation), said in every
    /// message it sends.
    incarnations: std::sync::RwLock<HashMap<ZoneId, u64>>,
    /// Raft messages handed to the links so far.
    sent: AtomicU64,
    /// The runtime the links run on (`send` is called from zone threads).
    rt: tokio::runtime::Handle,
    /// Writes made here for zones another node leads.
    forwarder: Arc<Forwarder>,
}

impl GrpcTransport {
    /// Starts a link task per peer (`node id`, `host:port`) on the current
    /// tokio runtime; links are mutual TLS with this node's certificate.
    pub fn start(tls: Arc<NodeTls>, peers: &[(ReplicaId, String)]) -> Arc<GrpcTransport> {
        let me = tls.current().node;
        let dialer = Dialer::Node(tls);
        let generations = Arc::new(Generations::default());
        let links = peers
            .iter()
            .filter(|(id, _)| *id != me)
            .map(|(id, addr)| {
                let (tx, rx) = mpsc::channel(PEER_QUEUE);
                let gens = generations.clone();
                let link = run_link(dialer.clone(), me, *id, addr.clone(), rx, gens);
                tokio::spawn(link);
                (
                    *id,
                    Link {
                        queue: tx,
                        dropped: AtomicU64::new(0),
                    },
                )
            })
            .collect();
        let addrs: HashMap<_, _> = peers.iter().map(|(id, a)| (*id, a.clone())).collect();
        Arc::new(GrpcTransport {
            me,
            forwarder: Arc::new(Forwarder::new(
                dialer.clone(),
                addrs.clone(),
                tokio::runtime::Handle::current(),
            )),
            dialer,
            links,
            addrs,
            cut: Default::default(),
            snapshots: Arc::default(),
            generations,
            incarnations: Default::default(),
            sent: AtomicU64::new(0),
            rt: tokio::runtime::Handle::current(),
        })
    }

    /// Reports the fate of each streamed snapshot to `kernel`'s zones
    /// (held weakly: the kernel owns this transport).
    pub fn report_to(&self, kernel: &Arc<nexus_kernel::Kernel>) {
        let kernel = Arc::downgrade(kernel);
        let report: SnapshotReporter = Box::new(move |zone, to, delivered| {
            if let Some(k) = kernel.upgrade() {
                k.report_snapshot(zone, to, delivered);
            }
        });
        let _ = self.snapshots.reporter.set(report);
    }

    /// Fault injection: damage the next snapshot this node streams.
    pub fn damage_next_snapshot(&self, fault: Fault) {
        *self
            .snapshots
            .fault
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(fault);
    }

    /// Bytes of snapshot data delivered so far.
    pub fn snapshot_bytes(&self) -> u64 {
        self.snapshots.delivered_bytes.load(Ordering::Relaxed)
    }

    /// Snapshots streamed so far: (delivered, failed or refused).
    pub fn snapshot_counts(&self) -> (u64, u64) {
        (
            self.snapshots.delivered.load(Ordering::Relaxed),
            self.snapshots.failed.load(Ordering::Relaxed),
        )
    }

    fn incarnation(&self, zone: &ZoneId) -> u64 {
        let map = self.incarnations.read().unwrap_or_else(|p| p.into_inner());
        map.get(zone).copied().unwrap_or(0)
    }

    /// Streams a MsgSnapshot to its recipient on a call of its own, unless
    /// one for the same zone is already on its way there.
    fn send_snapshot(&self, zone: &ZoneId, msg: Message) {
        let to = msg.to;
        let Some(addr) = self.addrs.get(&to).cloned() else {
            return;
        };
        let key = (to, zone.clone());
        if !self
            .snapshots
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone())
        {
            return;
        }
        let fault = self
            .snapshots
            .fault
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let snapshots = self.snapshots.clone();
        let me = (self.me, self.incarnation(zone));
        let zone = zone.clone();
        let dialer = self.dialer.clone();
        self.rt.spawn(async move {
            let outcome = stream_snapshot(&dialer, &addr, &zone, me, msg, fault).await;
            let delivered = match outcome {
                Ok(bytes) => {
                    snapshots.delivered.fetch_add(1, Ordering::Relaxed);
                    snapshots
                        .delivered_bytes
                        .fetch_add(bytes, Ordering::Relaxed);
                    true
                }
                Err(e) => {
                    tracing::warn!(%zone, to, "snapshot not delivered: {e}");
                    snapshots.failed.fetch_add(1, Ordering::Relaxed);
                    false
                }
            };
            snapshots
                .in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
            if let Some(report) = snapshots.reporter.get() {
                report(&zone, to, delivered);
            }
        });
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

    /// Raft messages this node has sent so far (all zones, all peers).
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
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
        let incarnation = self.incarnation(zone);
        for m in msgs {
            if cut.contains(&m.to) {
                continue;
            }
            let Some(link) = self.links.get(&m.to) else {
                tracing::warn!(%zone, to = m.to, "raft message for an unknown node dropped");
                continue;
            };
            if m.get_msg_type() == MessageType::MsgSnapshot {
                self.send_snapshot(zone, m);
                continue;
            }
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
                incarnation,
            };
            self.sent.fetch_add(1, Ordering::Relaxed);
            let generation = self.generations.current(zone.as_str());
            if link.queue.try_send(Queued { generation, env }).is_err() {
                link.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn forward(&self, leader: ReplicaId, write: Vec<u8>) -> nexus_kernel::ForwardReply {
        let cut = self
            .cut
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&leader);
        let forwarder = self.forwarder.clone();
        Box::pin(async move {
            if cut {
                return Err(nexus_kernel::KernelError::Unavailable(format!(
                    "node {leader} leads and the network to it is cut"
                )));
            }
            forwarder.forward(leader, write).await
        })
    }

    fn reports_snapshots(&self) -> bool {
        self.snapshots.reporter.get().is_some()
    }

    fn forget_zone(&self, zone: &ZoneId) {
        self.generations.bump(zone.as_str());
    }

    fn register_zone(&self, zone: &ZoneId, incarnation: u64) {
        self.incarnations
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(zone.clone(), incarnation);
    }
}

/// A client of peer `to` at `addr` that sends and accepts messages up to
/// [`MAX_MESSAGE`].
async fn connect(
    dialer: &Dialer,
    to: ReplicaId,
    addr: &str,
) -> Result<RaftTransportClient<tonic::transport::Channel>, String> {
    tls::channel(dialer, addr, &tls::node_name(to))
        .await
        .map(|c| {
            RaftTransportClient::new(c)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE)
        })
        .map_err(|e| e.to_string())
}

/// Streams one snapshot, logging progress; Ok (its size) once the peer has
/// verified it and handed it to its replica.
async fn stream_snapshot(
    dialer: &Dialer,
    addr: &str,
    zone: &ZoneId,
    me: (ReplicaId, u64),
    msg: Message,
    fault: Option<Fault>,
) -> Result<u64, String> {
    let to = msg.to;
    let chunks = snapshot::split(zone.as_str(), me, to, msg, fault).map_err(|e| e.to_string())?;
    let (size, count) = (chunks.size(), chunks.len());
    tracing::info!(%zone, to, "sending a snapshot: {size} bytes in {count} chunks");
    let started = Instant::now();
    let mut client = connect(dialer, to, addr).await?;
    let zone_name = zone.to_string();
    let stream = futures::stream::iter(chunks.enumerate().map(move |(i, c)| {
        if count >= 10 && (i + 1) % (count / 10) == 0 {
            tracing::info!(zone = %zone_name, to, "snapshot: chunk {} of {count}", i + 1);
        }
        c
    }));
    let ack = client
        .install_snapshot(stream)
        .await
        .map_err(|s| format!("node {to} refused it: {}", s.message()))?;
    let bytes = ack.into_inner().bytes;
    tracing::info!(%zone, to, "snapshot delivered: {bytes} bytes in {:?}", started.elapsed());
    Ok(bytes)
}

/// Keeps one stream to `to` open and feeds it batches from `queue`.
async fn run_link(
    dialer: Dialer,
    me: ReplicaId,
    to: ReplicaId,
    addr: String,
    mut queue: mpsc::Receiver<Queued>,
    generations: Arc<Generations>,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let mut client = match connect(&dialer, to, &addr).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(to, %addr, "raft link: connect failed: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let (batches, outbound) = mpsc::channel::<Batch>(16);
        let acks = match client.exchange(ReceiverStream::new(outbound)).await {
            Ok(r) => r.into_inner(),
            Err(e) => {
                tracing::warn!(to, %addr, "raft link refused: {e}");
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
            let mut bytes = 0;
            let mut envelopes = Vec::new();
            let mut next = Some(first);
            while let Some(q) = next {
                if generations.is_current(&q) {
                    bytes += q.env.message.len();
                    envelopes.push(q.env);
                }
                if envelopes.len() >= MAX_BATCH || bytes >= MAX_BATCH_BYTES {
                    break;
                }
                next = queue.try_recv().ok();
            }
            if envelopes.is_empty() {
                continue;
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
                    if r.transient {
                        tracing::debug!(to, zone = %r.zone, "peer did not take a raft message: {}", r.reason);
                    } else {
                        tracing::warn!(to, zone = %r.zone, "peer refused a raft message: {}", r.reason);
                    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_dropped_replica_queued_is_not_sent() {
        let gens = Generations::default();
        let queued = |zone: &str| Queued {
            generation: gens.current(zone),
            env: Envelope {
                zone: zone.to_owned(),
                message: Vec::new(),
                incarnation: 0,
            },
        };
        let (old, other) = (queued("z1"), queued("z2"));
        gens.bump("z1");
        assert!(!gens.is_current(&old));
        assert!(gens.is_current(&other));
        assert!(gens.is_current(&queued("z1")));
    }
}
