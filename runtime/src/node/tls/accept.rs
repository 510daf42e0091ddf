//! The accepting side: TCP connections become TLS streams before the gRPC
//! server sees a byte of them. Handshakes run on tasks of their own, at
//! most [`MAX_HANDSHAKES`] at a time and each within [`HANDSHAKE_TIMEOUT`],
//! so a peer that connects and stalls holds up nobody; at most
//! [`MAX_CONNECTIONS`] are open at once (a connection beyond is closed at
//! accept). A plaintext client,
//! a certificate from another CA, an expired or revoked one: the handshake
//! fails and the connection is closed.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use super::{CertInfo, NodeTls};

/// TLS handshakes in progress at most; connections beyond are closed.
pub const MAX_HANDSHAKES: usize = 256;
/// A handshake not done by then is abandoned.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections open at once at most, handshaking or served.
pub const MAX_CONNECTIONS: usize = 4096;

/// Who is at the other end of a connection, as its handshake showed;
/// every request on the connection carries it (`Request::extensions`).
#[derive(Clone, Debug)]
pub struct Peer {
    pub remote: SocketAddr,
    /// Its certificate, if it presented one (nodes do, clients need not).
    pub cert: Option<Arc<CertInfo>>,
}

impl Peer {
    /// The peer of the connection `req` came on.
    pub fn of<T>(req: &tonic::Request<T>) -> Option<&Peer> {
        req.extensions().get::<Peer>()
    }
}

/// An accepted connection after its handshake; it holds its place among
/// the [`MAX_CONNECTIONS`] until dropped.
pub struct PeerStream {
    tls: TlsStream<TcpStream>,
    peer: Peer,
    _open: OwnedSemaphorePermit,
}

impl Connected for PeerStream {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tls.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tls).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tls).poll_shutdown(cx)
    }
}

/// The stream of authenticated connections on `listener`, for tonic's
/// `serve_with_incoming`; accepting stops when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<NodeTls>,
) -> ReceiverStream<Result<PeerStream, std::io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let open = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = tx.closed() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: back off, go on.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = open.clone().try_acquire_owned() else {
                tracing::warn!(%remote, "{MAX_CONNECTIONS} connections open: connection closed");
                continue;
            };
            let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                tracing::warn!(%remote, "too many TLS handshakes in progress: connection closed");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.current().server.clone());
            let tx = tx.clone();
            tokio::spawn(async move {
                let shaken = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                drop(permit);
                let stream = match shaken {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::warn!(%remote, "TLS handshake refused: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(%remote, "TLS handshake timed out");
                        return;
                    }
                };
                let cert = match stream.get_ref().1.peer_certificates() {
                    Some([leaf, ..]) => match CertInfo::read(leaf) {
                        Ok(info) => Some(Arc::new(info)),
                        Err(e) => {
                            tracing::warn!(%remote, "peer certificate: {e}");
                            return;
                        }
                    },
                    _ => None,
                };
                let peer = Peer { remote, cert };
                let stream = PeerStream {
                    tls: stream,
                    peer,
                    _open: slot,
                };
                let _ = tx.send(Ok(stream)).await;
            });
        }
    });
    ReceiverStream::new(rx)
}
