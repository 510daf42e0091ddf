//! TLS on every connection a node makes or accepts: the Raft transport,
//! node-to-node calls and the client API. There is no plaintext mode.
//!
//! - The cluster has its own certificate authority ([`authority`], made by
//!   `nexus cluster ca`). A node's certificate carries its node id as the
//!   DNS name `node-ID.nexus` (what a peer dialing node ID checks) and the
//!   name [`ANY_NODE`] (what a client that knows only an address checks).
//! - Nodes authenticate each other both ways (mutual TLS). Clients need no
//!   certificate: they authenticate with a token, now sent only inside TLS.
//! - A connection's peer identity is read once, at the handshake
//!   ([`accept`]), and travels with every request on it ([`Peer`]); the
//!   services check it against the current [`Trust`] on every batch and
//!   call, so a certificate revoked or expired after the handshake is
//!   refused on connections already open too.
//! - A node's TLS directory is re-read on SIGHUP: rotation and revocation
//!   need no restart.

pub mod accept;
pub mod authority;
mod connect;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use nexus_kernel::ReplicaId;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

pub use accept::Peer;
pub use connect::{channel, Dialer};

/// The cluster CA's certificate (several, while a CA is being rotated).
pub const CA_CERT: &str = "ca.crt";
/// The cluster CA's signing key: only on the operator's machine.
pub const CA_KEY: &str = "ca.key";
/// The CA's revocation list.
pub const CRL: &str = "ca.crl";
/// A node's certificate and key.
pub const NODE_CERT: &str = "node.crt";
pub const NODE_KEY: &str = "node.key";

/// The name every node certificate carries.
pub const ANY_NODE: &str = "node.nexus";

/// The name node `id`'s certificate carries, and no other node's.
pub fn node_name(id: ReplicaId) -> String {
    format!("node-{id}.nexus")
}

/// The node id a certificate name stands for.
fn node_of_name(name: &str) -> Option<ReplicaId> {
    let id = name.strip_prefix("node-")?.strip_suffix(".nexus")?;
    // Canonical decimal only: "node-03" is not node 3.
    let n: ReplicaId = id.parse().ok()?;
    (n != 0 && n.to_string() == id).then_some(n)
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl TlsError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
        move |source| TlsError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, TlsError>;

/// What a certificate says about its holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// The node it names, if it is a node certificate.
    pub node: Option<ReplicaId>,
    /// Its serial number (DER content octets), as revocation lists name it.
    pub serial: Vec<u8>,
    /// Unix seconds after which it is no longer valid.
    pub not_after: i64,
}

impl CertInfo {
    pub fn read(der: &[u8]) -> Result<CertInfo> {
        let bad = |e: String| TlsError::Invalid(format!("unreadable certificate: {e}"));
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| bad(e.to_string()))?;
        let mut nodes = Vec::new();
        if let Some(san) = cert
            .subject_alternative_name()
            .map_err(|e| bad(e.to_string()))?
        {
            for name in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                    nodes.extend(node_of_name(dns));
                }
            }
        }
        nodes.dedup();
        // A certificate naming two nodes names none.
        let node = match nodes.as_slice() {
            [one] => Some(*one),
            _ => None,
        };
        Ok(CertInfo {
            node,
            serial: cert.raw_serial().to_vec(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = std::fs::read(path).map_err(TlsError::io(path))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError::Invalid(format!(
            "{}: no certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let bytes = std::fs::read(path).map_err(TlsError::io(path))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| TlsError::Invalid(format!("{}: {e}", path.display())))
}

/// The revocation lists in `path` (none if there is no such file).
fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TlsError::io(path)(e)),
    };
    CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid(format!("{}: {e}", path.display())))
}

/// The serials a revocation list names.
fn revoked_serials(crl: &[u8]) -> Result<Vec<Vec<u8>>> {
    let (_, crl) = x509_parser::parse_x509_crl(crl)
        .map_err(|e| TlsError::Invalid(format!("unreadable revocation list: {e}")))?;
    Ok(crl
        .iter_revoked_certificates()
        .map(|r| r.raw_serial().to_vec())
        .collect())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn roots(cas: &[CertificateDer<'static>], path: &Path) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots
            .add(ca.clone())
            .map_err(|e| TlsError::Invalid(format!("{}: {e}", path.display())))?;
    }
    Ok(Arc::new(roots))
}

const ALPN_H2: &[u8] = b"h2";

fn invalid(e: impl std::fmt::Display) -> TlsError {
    TlsError::Invalid(e.to_string())
}

/// A TLS 1.3 client configuration, still to be told whom it trusts.
fn tls13_client() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>> {
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(invalid)
}

/// `cfg` speaking HTTP/2, shared.
fn h2_client(mut cfg: ClientConfig) -> Arc<ClientConfig> {
    cfg.alpn_protocols = vec![ALPN_H2.to_vec()];
    Arc::new(cfg)
}

/// The configuration of a client that trusts the cluster CA in `ca_path`
/// and has no certificate of its own (a CLI user; a token authenticates it).
pub fn client_config(ca_path: &Path) -> Result<Arc<ClientConfig>> {
    let cas = read_certs(ca_path)?;
    let cfg = tls13_client()?
        .with_root_certificates(roots(&cas, ca_path)?)
        .with_no_client_auth();
    Ok(h2_client(cfg))
}

/// A node's TLS material as last loaded: its identity, the CAs it trusts,
/// what they revoked.
pub struct Trust {
    pub node: ReplicaId,
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
    revoked: HashSet<Vec<u8>>,
}

impl Trust {
    /// Loads a node's TLS directory (`ca.crt`, `node.crt`, `node.key`,
    /// optionally `ca.crl`).
    pub fn load(dir: &Path) -> Result<Trust> {
        let ca_path = dir.join(CA_CERT);
        let cas = read_certs(&ca_path)?;
        let chain = read_certs(&dir.join(NODE_CERT))?;
        let key = read_key(&dir.join(NODE_KEY))?;
        let crls = read_crls(&dir.join(CRL))?;
        let mut revoked = HashSet::new();
        for crl in &crls {
            revoked.extend(revoked_serials(crl)?);
        }
        let own = CertInfo::read(&chain[0])?;
        let node = own.node.ok_or_else(|| {
            TlsError::Invalid(format!(
                "{}: not a node certificate (it names no node-ID.nexus)",
                dir.join(NODE_CERT).display()
            ))
        })?;
        if revoked.contains(&own.serial) {
            return Err(TlsError::Invalid(format!(
                "{}: this node's certificate is revoked by {}",
                dir.join(NODE_CERT).display(),
                dir.join(CRL).display()
            )));
        }
        let roots = roots(&cas, &ca_path)?;
        // Clients may come without a certificate (they bring a token); one
        // that presents a certificate must chain to the cluster CA and not
        // be revoked.
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .with_crls(crls.clone())
            .allow_unauthenticated()
            .build()
            .map_err(invalid)?;
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(invalid)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(invalid)?;
        server.alpn_protocols = vec![ALPN_H2.to_vec()];
        let peers = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
            .with_crls(crls)
            .build()
            .map_err(invalid)?;
        let client = tls13_client()?
            .with_webpki_verifier(peers)
            .with_client_auth_cert(chain, key)
            .map_err(invalid)?;
        Ok(Trust {
            node,
            server: Arc::new(server),
            client: h2_client(client),
            revoked,
        })
    }

    /// The node a connection's peer is, if its certificate is a node's,
    /// still valid and not revoked; otherwise why not.
    pub fn node_of(&self, peer: &Peer) -> std::result::Result<ReplicaId, String> {
        let cert = peer
            .cert
            .as_ref()
            .ok_or("the peer presented no certificate")?;
        let node = cert.node.ok_or("the peer's certificate is not a node's")?;
        if self.revoked.contains(&cert.serial) {
            return Err(format!("node {node}'s certificate is revoked"));
        }
        if cert.not_after < time::OffsetDateTime::now_utc().unix_timestamp() {
            return Err(format!("node {node}'s certificate has expired"));
        }
        Ok(node)
    }
}

/// A node's TLS directory and what was last loaded from it.
pub struct NodeTls {
    dir: PathBuf,
    current: RwLock<Arc<Trust>>,
}

impl NodeTls {
    /// Loads `dir`; the node's certificate must be for node `id`.
    pub fn load(dir: &Path, id: ReplicaId) -> Result<Arc<NodeTls>> {
        let trust = Trust::load(dir)?;
        Self::check_id(&trust, dir, id)?;
        Ok(Arc::new(NodeTls {
            dir: dir.to_owned(),
            current: RwLock::new(Arc::new(trust)),
        }))
    }

    fn check_id(trust: &Trust, dir: &Path, id: ReplicaId) -> Result<()> {
        if trust.node != id {
            return Err(TlsError::Invalid(format!(
                "{} is node {}'s certificate, but this is node {id}",
                dir.join(NODE_CERT).display(),
                trust.node
            )));
        }
        Ok(())
    }

    pub fn current(&self) -> Arc<Trust> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Re-reads the directory (a new certificate, key, CA bundle or
    /// revocation list). On an error the material in use stays.
    pub fn reload(&self) -> Result<()> {
        let trust = Trust::load(&self.dir)?;
        Self::check_id(&trust, &self.dir, self.current().node)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(trust);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_canonical() {
        assert_eq!(node_of_name(&node_name(3)), Some(3));
        assert_eq!(node_of_name("node-03.nexus"), None);
        assert_eq!(node_of_name("node-0.nexus"), None);
        assert_eq!(node_of_name("node-+3.nexus"), None);
        assert_eq!(node_of_name("node-3.nexus.evil"), None);
        assert_eq!(node_of_name(ANY_NODE), None);
        assert_eq!(node_of_name("node-18446744073709551616.nexus"), None);
    }
}
