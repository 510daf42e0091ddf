//! `nexus node start`: this data directory as a node of a cluster, serving
//! the Raft transport and the client API on one address until SIGINT or
//! SIGTERM, then shutting down cleanly; like the embedded default it keeps
//! an audit log (`records.db`, or `--record-store`). Everything it serves
//! and dials is TLS (`--tls`, re-read on SIGHUP).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use nexus_kernel::ReplicaId;
use nexus_kernel::{AuditSink, Kernel, KernelConfig, RecordStore};

use super::args::{NodeCmd, RunLimitArgs};
use crate::agent::host::POOLED_AGENTS;
use crate::node::server::{bind, serve};
use crate::node::tls::NodeTls;
use crate::node::transport::GrpcTransport;
use crate::node::NODE_TICK;
use crate::ops::run::RunPolicy;
use crate::ops::{OpError, OpResult};
use crate::units;

/// How long calls in flight may finish after SIGINT/SIGTERM.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// `ID@HOST:PORT` → (id, address).
pub fn parse_peer(spec: &str) -> OpResult<(ReplicaId, String)> {
    let bad = || {
        OpError::Usage(format!(
            "peer {spec:?}: use ID@HOST:PORT, e.g. 2@10.0.0.2:2126"
        ))
    };
    let (id, addr) = spec.split_once('@').ok_or_else(bad)?;
    let id: ReplicaId = id.parse().map_err(|_| bad())?;
    if id == 0 || addr.is_empty() {
        return Err(bad());
    }
    Ok((id, addr.to_owned()))
}

/// The node's limits on runs, checked against what one host can run.
fn run_policy(args: &RunLimitArgs) -> OpResult<RunPolicy> {
    let pool = POOLED_AGENTS as usize;
    if args.max_agents == 0 || args.max_agents > pool {
        return Err(OpError::Usage(format!("--max-agents: from 1 to {pool}")));
    }
    if args.max_agents_per_principal == 0 || args.max_agents_per_principal > args.max_agents {
        return Err(OpError::Usage(
            "--max-agents-per-principal: from 1 to --max-agents".into(),
        ));
    }
    Ok(RunPolicy {
        run_timeout: Some(units::duration(&args.run_timeout)?),
        max_agents: args.max_agents,
        max_agents_per_principal: args.max_agents_per_principal,
        host_memory: units::size(&args.agents_host_memory)? as u64,
        ..RunPolicy::node()
    })
}

pub async fn run(
    home: &Path,
    cfg_base: KernelConfig,
    record_store: Option<&str>,
    cmd: NodeCmd,
) -> OpResult<i32> {
    let NodeCmd::Start {
        id,
        listen,
        peers,
        witness,
        tls,
        runs,
    } = cmd;
    let runs = run_policy(&runs)?;
    if id == 0 {
        return Err(OpError::Usage("--id must be 1 or more".into()));
    }
    let peers = peers
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| parse_peer(p))
        .collect::<OpResult<Vec<_>>>()?;
    if let Some((clash, _)) = peers.iter().find(|(p, _)| *p == id) {
        return Err(OpError::Usage(format!(
            "--peers names node {clash}, which is this node's own --id"
        )));
    }
    let addr: SocketAddr = listen
        .parse()
        .map_err(|_| OpError::Usage(format!("--listen {listen:?}: use HOST:PORT")))?;
    let tls = NodeTls::load(&tls.unwrap_or_else(|| home.join("tls")), id)?;
    let (incoming, local) = bind(addr).map_err(|e| OpError::local(&listen, e))?;
    let mut cfg = cfg_base;
    cfg.replica_id = id;
    cfg.driver.tick = NODE_TICK;
    cfg.witness_only = witness;
    // Verify everywhere, sign in one place: a node holds public keys only.
    cfg.signs_tokens = false;
    let transport = GrpcTransport::start(tls.clone(), &peers);
    // A node keeps an audit log like the embedded default: every gated
    // operation and mutation it serves.
    let records = RecordStore::open(record_store, &home.join(super::audit::RECORDS)).await?;
    let kernel = Arc::new(Kernel::open_with_transport(cfg, transport.clone())?);
    kernel.attach_audit(AuditSink::spawn(records))?;
    transport.report_to(&kernel);
    eprintln!(
        "{} {id} serving {} on {local} over TLS (peers: {})",
        if witness { "witness node" } else { "node" },
        home.display(),
        peers
            .iter()
            .map(|(p, a)| format!("{p}@{a}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // Peers keep their Raft streams open for good, so a graceful stop
    // would wait forever: stop accepting at the signal, give calls in
    // flight a moment, then stop serving.
    let (signalled, mut stopping) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async {
                match term.as_mut() {
                    Some(t) => { t.recv().await; }
                    None => std::future::pending().await,
                }
            } => {}
        }
        let _ = signalled.send(true);
    });
    reload_on_hangup(tls.clone(), kernel.clone());
    let mut graceful = stopping.clone();
    let server = serve(kernel.clone(), tls, &peers, runs, incoming, async move {
        let _ = graceful.wait_for(|s| *s).await;
    });
    let served = tokio::select! {
        r = server => r,
        _ = async {
            let _ = stopping.wait_for(|s| *s).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => Ok(()),
    };
    kernel.shutdown().await?;
    served.map_err(|e| OpError::Failed(format!("node server: {e}")))?;
    Ok(0)
}

/// Re-reads the TLS directory and the trusted issuer keys at each SIGHUP
/// (a rotated certificate, a new revocation list, a key trusted or
/// retired); what does not load leaves what is in use as it was.
fn reload_on_hangup(tls: Arc<NodeTls>, kernel: Arc<Kernel>) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        tracing::warn!("SIGHUP cannot be caught: the TLS directory is read at start only");
        return;
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match tls.reload() {
                Ok(()) => eprintln!("reloaded TLS material from {}", tls.dir().display()),
                Err(e) => eprintln!("TLS reload refused, the material in use stays: {e}"),
            }
            match kernel.tokens().reload_keys() {
                Ok(()) => eprintln!("reloaded the trusted issuer keys"),
                Err(e) => eprintln!("issuer keys reload refused, the keys in use stay: {e}"),
            }
        }
    });
}
