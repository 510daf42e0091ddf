//! The dialing side: every channel to a node is TLS, checked against the
//! cluster CA and against the name the node must hold (its own node name
//! when the caller knows which node it dials).

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};

use super::NodeTls;

/// A TCP connection and TLS handshake not done by then fail.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Who dials, with what credentials.
#[derive(Clone)]
pub enum Dialer {
    /// A node: presents its certificate, trusts the cluster CA (as last
    /// loaded: a reload applies to the next connection).
    Node(Arc<NodeTls>),
    /// A client: trusts the cluster CA; a token authenticates it.
    Client(Arc<ClientConfig>),
}

impl Dialer {
    fn config(&self) -> Arc<ClientConfig> {
        match self {
            Dialer::Node(tls) => tls.current().client.clone(),
            Dialer::Client(cfg) => cfg.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("{0}: not a valid server name")]
    Name(String),
    #[error("{}", chain(.0))]
    Transport(#[from] tonic::transport::Error),
}

/// An error and its causes, on one line (tonic's own message is only
/// "transport error").
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// A channel to the node at `addr` (`HOST:PORT`) whose certificate must
/// carry the name `expect`; with no Nagle delay (a small frame, an ack or
/// a window update, is never held back) and an HTTP/2 window that grows
/// with the connection's bandwidth, for bulk transfers.
pub async fn channel(dialer: &Dialer, addr: &str, expect: &str) -> Result<Channel, DialError> {
    let authority = addr.split_once("://").map_or(addr, |(_, a)| a);
    let name =
        ServerName::try_from(expect.to_owned()).map_err(|_| DialError::Name(expect.into()))?;
    let dialer = dialer.clone();
    let connector = tower::service_fn(move |uri: Uri| {
        let config = dialer.config();
        let name = name.clone();
        async move {
            let dial = async {
                let authority =
                    uri.authority()
                        .map(|a| a.as_str().to_owned())
                        .ok_or_else(|| {
                            std::io::Error::new(std::io::ErrorKind::InvalidInput, "no host:port")
                        })?;
                let tcp = TcpStream::connect(authority).await?;
                tcp.set_nodelay(true)?;
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            };
            tokio::time::timeout(CONNECT_TIMEOUT, dial)
                .await
                .unwrap_or_else(|_| {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connect and TLS handshake timed out",
                    ))
                })
        }
    });
    Ok(Endpoint::from_shared(format!("http://{authority}"))?
        .http2_adaptive_window(true)
        .connect_with_connector(connector)
        .await?)
}
