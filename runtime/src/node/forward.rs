//! The sending side of forwarded writes (`Forward` on the Raft transport
//! service): a follower's kernel hands a write for its zone's leader to
//! [`Forwarder::forward`]. Each leader has a queue and a task that sends
//! what is queued in one call, with at most [`CALLS_IN_FLIGHT`] calls
//! open: a lone write goes at once, and writes that arrive while calls are
//! in flight travel together and share the leader's next log batch (group
//! commit across nodes). The receiving side is `server::RaftService`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nexus_kernel::{KernelError, ReplicaId};
use nexus_proto::transport::raft_transport_client::RaftTransportClient;
use nexus_proto::transport::ForwardedWrites;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tonic::transport::Channel;

use super::tls::{self, Dialer};
use super::transport::MAX_MESSAGE;

/// How long a forwarded call may take, answers included: past the leader's
/// own wait for the commit (10 s), so its answer normally comes first.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(20);
/// Writes in one call at most (the receiver refuses more).
pub const MAX_FORWARD_BATCH: usize = 256;
/// A call stops growing past this many bytes (one write may exceed it).
const MAX_FORWARD_BYTES: usize = 4 << 20;
/// Calls open to one leader at once.
const CALLS_IN_FLIGHT: usize = 4;
/// Writes waiting for one leader at most; beyond that a write waits.
const QUEUE: usize = 4096;

type Answer = Result<Vec<u8>, KernelError>;

struct Queued {
    write: Vec<u8>,
    answer: oneshot::Sender<Answer>,
}

pub struct Forwarder {
    dialer: Dialer,
    /// The node's runtime: the sending tasks run there whoever forwards
    /// (an agent's write arrives from the agents' threads).
    rt: tokio::runtime::Handle,
    addrs: HashMap<ReplicaId, String>,
    /// One queue per leader, its sending task started on first use.
    queues: Mutex<HashMap<ReplicaId, mpsc::Sender<Queued>>>,
}

/// The error a write whose fate is unknown gets.
fn unknown(leader: ReplicaId, why: impl std::fmt::Display) -> KernelError {
    KernelError::Unavailable(format!(
        "forwarding a write to node {leader}: {why}; it may or may not have been applied"
    ))
}

impl Forwarder {
    pub fn new(
        dialer: Dialer,
        addrs: HashMap<ReplicaId, String>,
        rt: tokio::runtime::Handle,
    ) -> Self {
        Forwarder {
            dialer,
            rt,
            addrs,
            queues: Mutex::default(),
        }
    }

    /// Sends `write` (an encoded `Forwarded`) to node `leader`; its encoded
    /// answer. An error means the write's fate is unknown.
    pub async fn forward(&self, leader: ReplicaId, write: Vec<u8>) -> Answer {
        let queue = self.queue(leader)?;
        let (answer, rx) = oneshot::channel();
        queue
            .send(Queued { write, answer })
            .await
            .map_err(|_| unknown(leader, "the link stopped"))?;
        rx.await
            .unwrap_or_else(|_| Err(unknown(leader, "the link stopped")))
    }

    fn queue(&self, leader: ReplicaId) -> Result<mpsc::Sender<Queued>, KernelError> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(q) = queues.get(&leader) {
            return Ok(q.clone());
        }
        let addr = self.addrs.get(&leader).ok_or_else(|| {
            KernelError::Unavailable(format!("node {leader} leads but is not a known peer"))
        })?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let sending = send_queued(self.dialer.clone(), leader, addr.clone(), rx);
        self.rt.spawn(sending);
        queues.insert(leader, tx.clone());
        Ok(tx)
    }
}

/// Drains `rx` into calls to node `leader`, for as long as the forwarder
/// lives.
async fn send_queued(
    dialer: Dialer,
    leader: ReplicaId,
    addr: String,
    mut rx: mpsc::Receiver<Queued>,
) {
    let calls = Arc::new(Semaphore::new(CALLS_IN_FLIGHT));
    let mut channel: Option<Channel> = None;
    while let Some(first) = rx.recv().await {
        let Ok(permit) = calls.clone().acquire_owned().await else {
            return;
        };
        // Whatever queued while waiting for a call goes in this one.
        let mut bytes = first.write.len();
        let mut batch = vec![first];
        while batch.len() < MAX_FORWARD_BATCH && bytes < MAX_FORWARD_BYTES {
            match rx.try_recv() {
                Ok(q) => {
                    bytes += q.write.len();
                    batch.push(q);
                }
                Err(_) => break,
            }
        }
        let ch = match &channel {
            Some(c) => c.clone(),
            None => match tls::channel(&dialer, &addr, &tls::node_name(leader)).await {
                Ok(c) => channel.insert(c).clone(),
                Err(e) => {
                    // Not sent: the writes are not applied; the next batch
                    // dials again.
                    let refused = KernelError::Unavailable(format!("node {leader}: {e}"));
                    for q in batch {
                        let _ = q.answer.send(Err(refused.clone()));
                    }
                    continue;
                }
            },
        };
        tokio::spawn(async move {
            let _permit = permit;
            call(ch, leader, batch).await;
        });
    }
}

/// One call with `batch`; answers each write.
async fn call(channel: Channel, leader: ReplicaId, batch: Vec<Queued>) {
    let mut client = RaftTransportClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let (writes, answers): (Vec<_>, Vec<_>) =
        batch.into_iter().map(|q| (q.write, q.answer)).unzip();
    let n = writes.len();
    let mut req = tonic::Request::new(ForwardedWrites { writes });
    req.set_timeout(FORWARD_TIMEOUT);
    match client.forward(req).await {
        Ok(reply) if reply.get_ref().outcomes.len() == n => {
            for (answer, outcome) in answers.into_iter().zip(reply.into_inner().outcomes) {
                let _ = answer.send(Ok(outcome));
            }
        }
        Ok(reply) => {
            let got = reply.get_ref().outcomes.len();
            let why = format!("{got} answers to {n} writes");
            for answer in answers {
                let _ = answer.send(Err(unknown(leader, &why)));
            }
        }
        Err(s) => {
            for answer in answers {
                let _ = answer.send(Err(unknown(leader, s.message())));
            }
        }
    }
}
