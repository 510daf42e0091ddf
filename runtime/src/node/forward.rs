//! The sending side of forwarded writes (`Forward` on the Raft transport
//! service): a follower's kernel hands a write for its zone's leader to
//! [`Forwarder::forward`], which calls the leader's node over mutual TLS on
//! a channel kept per peer. The receiving side is `server::RaftService`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use nexus_kernel::{KernelError, ReplicaId};
use nexus_proto::transport::raft_transport_client::RaftTransportClient;
use nexus_proto::transport::ForwardedWrite;
use tonic::transport::Channel;

use super::tls::{self, Dialer};
use super::transport::MAX_MESSAGE;

/// How long a forwarded write may take, answer included: past the leader's
/// own wait for the commit (10 s), so its answer normally comes first.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Forwarder {
    dialer: Dialer,
    addrs: HashMap<ReplicaId, String>,
    /// One channel per leader, dialed on first use and dropped on a
    /// transport error (the next write dials again).
    channels: Mutex<HashMap<ReplicaId, Channel>>,
}

impl Forwarder {
    pub fn new(dialer: Dialer, addrs: HashMap<ReplicaId, String>) -> Self {
        Forwarder {
            dialer,
            addrs,
            channels: Mutex::default(),
        }
    }

    /// Sends `write` (an encoded `Forwarded`) to node `leader`; its encoded
    /// answer. An error means the write's fate is unknown.
    pub async fn forward(&self, leader: ReplicaId, write: Vec<u8>) -> Result<Vec<u8>, KernelError> {
        let unknown = |why: String| {
            KernelError::Unavailable(format!(
                "forwarding a write to node {leader}: {why}; it may or may not have been applied"
            ))
        };
        let channel = self.channel(leader).await?;
        let mut client = RaftTransportClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let mut req = tonic::Request::new(ForwardedWrite { write });
        req.set_timeout(FORWARD_TIMEOUT);
        match client.forward(req).await {
            Ok(reply) => Ok(reply.into_inner().outcome),
            Err(s) => {
                self.lock().remove(&leader);
                Err(unknown(s.message().to_owned()))
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ReplicaId, Channel>> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn channel(&self, leader: ReplicaId) -> Result<Channel, KernelError> {
        if let Some(c) = self.lock().get(&leader) {
            return Ok(c.clone());
        }
        let addr = self.addrs.get(&leader).ok_or_else(|| {
            KernelError::Unavailable(format!("node {leader} leads but is not a known peer"))
        })?;
        let channel = tls::channel(&self.dialer, addr, &tls::node_name(leader))
            .await
            .map_err(|e| KernelError::Unavailable(format!("node {leader}: {e}")))?;
        self.lock().insert(leader, channel.clone());
        Ok(channel)
    }
}
