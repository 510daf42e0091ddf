//! Several nodes in one process, each with its own data directory, talking
//! Raft over real gRPC on loopback: what the cluster benchmark and the
//! in-process cluster tests run.

use std::path::Path;
use std::sync::Arc;

use nexus_kernel::Result;
use nexus_kernel::{Kernel, KernelConfig};

use super::server::{bind, serve};
use super::transport::GrpcTransport;

pub struct LocalNode {
    pub kernel: Arc<Kernel>,
    /// Where it serves the transport and the client API.
    pub addr: std::net::SocketAddr,
    /// Its transport, for fault injection (`cut`, `heal`).
    pub net: Arc<GrpcTransport>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl LocalNode {
    /// Takes the node off the network and stops its zones (a crash, as the
    /// other nodes see it).
    pub async fn kill(&mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.kernel.shutdown().await
    }

    pub fn is_alive(&self) -> bool {
        self.stop.is_some()
    }
}

/// Starts nodes 1..=`n` with data directories `dir/node{id}`; `configure`
/// adjusts each node's configuration (tick, object store, ...).
pub async fn start(
    dir: &Path,
    n: u64,
    configure: impl Fn(&mut KernelConfig),
) -> Result<Vec<LocalNode>> {
    let io = |e: std::io::Error| nexus_kernel::KernelError::Unavailable(format!("listen: {e}"));
    let mut listeners = Vec::new();
    for _ in 0..n {
        listeners.push(bind(([127, 0, 0, 1], 0).into()).map_err(io)?);
    }
    let peers: Vec<(u64, String)> = listeners
        .iter()
        .enumerate()
        .map(|(i, (_, addr))| (i as u64 + 1, addr.to_string()))
        .collect();
    let mut nodes = Vec::new();
    for (i, (incoming, addr)) in listeners.into_iter().enumerate() {
        let id = i as u64 + 1;
        let mut cfg = KernelConfig::embedded(dir.join(format!("node{id}")));
        cfg.replica_id = id;
        configure(&mut cfg);
        let net = GrpcTransport::start(id, &peers);
        let kernel = Arc::new(Kernel::open_with_transport(cfg, net.clone())?);
        net.report_to(&kernel);
        let others: Vec<_> = peers.iter().filter(|p| p.0 != id).cloned().collect();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let k = kernel.clone();
        tokio::spawn(async move {
            serve(k, &others, incoming, async {
                let _ = stopped.await;
            })
            .await
        });
        nodes.push(LocalNode {
            kernel,
            addr,
            net,
            stop: Some(stop),
        });
    }
    Ok(nodes)
}
