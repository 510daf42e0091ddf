//! `wasi:http` for agents: the kernel's egress driver. A request leaves
//! only if the gate grants the task `fetch` on its destination (a `host:`
//! object of the zone); the node resolves the name and connects only to
//! public addresses (an address the grant names itself excepted), adds
//! the destination's secrets, which the agent never sees, and bounds
//! every request and the run's traffic. Everything a guest builds
//! (fields, bodies, responses) is charged to its host memory.
//!
//! - `types.rs` — requests, options, outgoing responses; the server side
//!   (incoming requests, response outparams) is an uninhabited type.
//! - `fields.rs` — headers and trailers.
//! - `send.rs` — `handle`: admission (limits, gate, secrets), then
//!   resolution, address checks, connection, TLS and hyper on a task; the
//!   audit row of each request (`Exchange`).
//! - `body.rs` — request bodies (buffered, bounded) and response bodies
//!   (read as the guest reads, bounded, secrets masked); trailers.
//! - `address.rs`, `redact.rs`, `tls.rs` — which addresses are public,
//!   masking secret values, TLS with the system's roots.

mod address;
mod body;
mod fields;
mod redact;
mod send;
mod tls;
mod types;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};

pub use body::{FutureTrailers, IncomingBody, OutgoingBody};
pub use fields::Fields;
pub use send::{Budget, FutureResponse, IncomingResponse, Traffic};
pub use types::{
    HeaderError, HttpError, NoHttp, OutgoingRequest, OutgoingResponse, RequestOptions,
};

/// What an agent's HTTP requests may use.
#[derive(Debug, Clone)]
pub struct EgressLimits {
    /// Bytes of one request's body.
    pub request_body: u64,
    /// Bytes of one response's body.
    pub response_body: u64,
    /// From `handle` to the response's last byte.
    pub request_time: Duration,
    /// Requests in flight at once (a response being read is in flight).
    pub concurrent: usize,
    /// Bytes sent and received by the whole run (all its agents).
    pub run_bytes: u64,
}

impl Default for EgressLimits {
    fn default() -> Self {
        EgressLimits {
            request_body: 16 << 20,
            response_body: 64 << 20,
            request_time: Duration::from_secs(60),
            concurrent: 8,
            run_bytes: 256 << 20,
        }
    }
}

/// Where the kernel tells an agent's user why a request was refused: the
/// agent's own stderr (the process's, or the stream a client reads).
#[derive(Clone)]
pub struct Notices(Arc<tokio::sync::Mutex<Pin<Box<dyn AsyncWrite + Send + Sync>>>>);

impl Notices {
    pub fn new(stderr: Box<dyn AsyncWrite + Send + Sync>) -> Self {
        Notices(Arc::new(tokio::sync::Mutex::new(Box::into_pin(stderr))))
    }

    /// Writes `nexus: LINE` (best effort: a closed stderr loses it, the
    /// audit log still has the request).
    pub async fn say(&self, line: &str) {
        let mut w = self.0.lock().await;
        let text = format!("nexus: {}\n", crate::output::shown(line));
        let _ = w.write_all(text.as_bytes()).await;
        let _ = w.flush().await;
    }
}

/// One agent's egress: its limits and counters, and its notices.
pub struct Egress {
    pub limits: EgressLimits,
    pub budget: Arc<Budget>,
    pub notices: Notices,
}

impl Egress {
    pub fn new(limits: EgressLimits, traffic: Arc<Traffic>, notices: Notices) -> Self {
        Egress {
            budget: Budget::new(limits.clone(), traffic),
            limits,
            notices,
        }
    }
}
