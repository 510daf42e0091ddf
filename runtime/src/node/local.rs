//! Several nodes in one process, each with its own data directory, talking
//! Raft over real gRPC and mutual TLS on loopback: what the cluster
//! benchmark and the in-process cluster tests run. The cluster's CA lives
//! in `dir/ca`; node ID's TLS directory is `dir/nodeID/tls`.

use std::path::Path;
use std::sync::Arc;

use nexus_kernel::{Kernel, KernelConfig};
use nexus_kernel::{KernelError, Result};

use super::server::{bind, serve};
use super::tls::authority::Authority;
use super::tls::{NodeTls, TlsError, CA_CERT, CA_KEY};
use super::transport::GrpcTransport;
use crate::ops::run::RunPolicy;

/// The cluster CA's certificate of the nodes started in `dir`, for clients.
pub fn ca_cert(dir: &Path) -> std::path::PathBuf {
    dir.join("ca").join(CA_CERT)
}

fn tls_error(e: TlsError) -> KernelError {
    KernelError::Invalid(format!("cluster TLS: {e}"))
}

pub struct LocalNode {
    pub kernel: Arc<Kernel>,
    /// Where it serves the transport and the client API.
    pub addr: std::net::SocketAddr,
    /// Its transport, for fault injection (`cut`, `heal`).
    pub net: Arc<GrpcTransport>,
    /// Its TLS directory and trust (reload after changing the files).
    pub tls: Arc<NodeTls>,
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
    let ca_dir = dir.join("ca");
    let ca = if ca_dir.join(CA_KEY).exists() {
        Authority::open(&ca_dir)
    } else {
        Authority::create(&ca_dir, 3650)
    }
    .map_err(tls_error)?;
    let mut nodes = Vec::new();
    for (i, (incoming, addr)) in listeners.into_iter().enumerate() {
        let id = i as u64 + 1;
        let home = dir.join(format!("node{id}"));
        let tls_dir = home.join("tls");
        ca.issue_node(id, &[], 365, &tls_dir).map_err(tls_error)?;
        let tls = NodeTls::load(&tls_dir, id).map_err(tls_error)?;
        let mut cfg = KernelConfig::embedded(home);
        cfg.replica_id = id;
        configure(&mut cfg);
        let net = GrpcTransport::start(tls.clone(), &peers);
        let kernel = Arc::new(Kernel::open_with_transport(cfg, net.clone())?);
        net.report_to(&kernel);
        let others: Vec<_> = peers.iter().filter(|p| p.0 != id).cloned().collect();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (k, t) = (kernel.clone(), tls.clone());
        tokio::spawn(async move {
            serve(k, t, &others, RunPolicy::node(), incoming, async {
                let _ = stopped.await;
            })
            .await
        });
        nodes.push(LocalNode {
            kernel,
            addr,
            net,
            tls,
            stop: Some(stop),
        });
    }
    Ok(nodes)
}
