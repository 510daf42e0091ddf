//! TLS to destinations: rustls (aws-lc-rs) with the system's roots, read
//! once per process (`SSL_CERT_FILE` / `SSL_CERT_DIR` name others, as for
//! any OpenSSL-style client).

use std::sync::{Arc, OnceLock};

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::agent::bindings::wasi::http::types::ErrorCode;

fn config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!("system certificates: {e}");
            }
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err("no trusted root certificate was found on this system".into());
            }
            let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Arc::new(cfg))
        })
        .clone()
}

/// TLS over `tcp` to `name` (a DNS name or an address), its certificate
/// checked against the system's roots.
pub async fn connect(name: &str, tcp: TcpStream) -> Result<TlsStream<TcpStream>, ErrorCode> {
    let cfg = config().map_err(|e| ErrorCode::InternalError(Some(e)))?;
    let server = ServerName::try_from(name.to_owned()).map_err(|_| ErrorCode::TlsProtocolError)?;
    tokio_rustls::TlsConnector::from(cfg)
        .connect(server, tcp)
        .await
        .map_err(|e| {
            let cert = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .is_some_and(|r| {
                    matches!(
                        r,
                        rustls::Error::InvalidCertificate(_)
                            | rustls::Error::NoCertificatesPresented
                    )
                });
            tracing::debug!("TLS to {name}: {e}");
            if cert {
                ErrorCode::TlsCertificateError
            } else {
                ErrorCode::TlsProtocolError
            }
        })
}
