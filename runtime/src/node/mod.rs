//! A runtime node among others: the Raft transport between nodes over
//! gRPC (tonic). One long-lived stream per peer carries every shared zone's
//! messages in batches.

pub mod api;
pub mod local;
pub mod server;
pub mod snapshot;
pub mod transport;

/// A node's Raft tick: heartbeats every tick, an election after 10–20
/// ticks without a leader, so a new leader within about a second.
pub const NODE_TICK: std::time::Duration = std::time::Duration::from_millis(50);

/// A channel to a node at `url` (`http://HOST:PORT`): no Nagle delay (a
/// small frame, an ack or a window update, is never held back waiting for
/// the peer's delayed ACK) and an HTTP/2 window that grows with the
/// connection's bandwidth, for bulk transfers.
pub async fn channel(url: String) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    tonic::transport::Endpoint::from_shared(url)?
        .tcp_nodelay(true)
        .http2_adaptive_window(true)
        .connect()
        .await
}
