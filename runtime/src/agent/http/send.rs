//! `outgoing-handler.handle`: a request leaves only through here. In
//! order: the request is checked (scheme, authority, method, path), the
//! run's limits (requests in flight, bytes spent), the gate (`fetch` on
//! the destination's `host:` object) and the destination's secrets are
//! added; then, on a task of its own, the body is awaited, the name
//! resolved by the node, every address checked (`address.rs`), a
//! connection made to a checked address (no second lookup), TLS for
//! `https`, and the request sent with hyper. Every request, refused or
//! not, is one audit row when it ends (`Exchange`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use nexus_kernel::{Destination, DestinationHost, Kernel, KernelError, Scheme, Task};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use wasmtime::component::Resource;
use wasmtime_wasi_io::poll::{subscribe, DynPollable, Pollable};

use super::address::restricted;
use super::body::{masked, BodyReader, IncomingBody, PendingBody};
use super::fields::Fields;
use super::redact::Redactor;
use super::types::{HttpError, OutgoingRequest, RequestOptions, W};
use super::{EgressLimits, Notices};
use crate::agent::bindings::wasi::http::{outgoing_handler, types};
use crate::agent::budget::HostMemory;
use crate::agent::state::AgentState;
use types::{ErrorCode, Method};

/// Headers that belong to a connection, not to a request: the guest's are
/// dropped, hyper writes its own.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// What one agent's requests share: the limits, what it has in flight,
/// and its run's traffic (shared with the run's other agents).
pub struct Budget {
    pub limits: EgressLimits,
    in_flight: AtomicUsize,
    traffic: Arc<Traffic>,
}

impl Budget {
    pub fn new(limits: EgressLimits, traffic: Arc<Traffic>) -> Arc<Self> {
        Arc::new(Budget {
            limits,
            in_flight: AtomicUsize::new(0),
            traffic,
        })
    }
}

/// Bytes a run's agents have sent and received over HTTP, together.
#[derive(Debug, Default)]
pub struct Traffic(AtomicU64);

fn spent_error(limit: u64) -> ErrorCode {
    ErrorCode::InternalError(Some(format!(
        "this run's HTTP traffic limit of {limit} bytes is spent"
    )))
}

/// One request, from its admission to the end of its response: one audit
/// row when dropped, whatever way it ends.
pub(super) struct Exchange {
    kernel: Arc<Kernel>,
    task: Task,
    budget: Arc<Budget>,
    /// `METHOD scheme://authority/path`, secrets masked.
    target: String,
    started: Instant,
    sent: u64,
    received: u64,
    status: Option<u16>,
    /// Why it failed, if it did.
    failure: Option<String>,
}

impl Exchange {
    pub(super) fn failed(&mut self, code: &ErrorCode) {
        self.failure.get_or_insert_with(|| describe(code));
    }

    pub(super) fn received(&mut self, n: u64) {
        self.received = n;
    }

    /// Counts `n` more bytes against the run's traffic limit.
    pub(super) fn spend(&self, n: u64) -> Result<(), ErrorCode> {
        let limit = self.budget.limits.run_bytes;
        let before = self.budget.traffic.0.fetch_add(n, Ordering::Relaxed);
        if before.saturating_add(n) > limit {
            return Err(spent_error(limit));
        }
        Ok(())
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.budget.in_flight.fetch_sub(1, Ordering::Relaxed);
        let took = self.started.elapsed().as_millis();
        let how = match (&self.failure, self.status) {
            (Some(f), _) => f.clone(),
            (None, Some(s)) => s.to_string(),
            (None, None) => "cancelled".to_owned(),
        };
        let result = format!(
            "{how}; {} B sent, {} B received, {took} ms",
            self.sent, self.received
        );
        self.kernel
            .audit_egress(&self.task, "http", &self.target, &result);
    }
}

/// An error code as the audit log and notices name it: its WIT name
/// (`destination-ip-prohibited`), then any detail.
fn describe(code: &ErrorCode) -> String {
    match code {
        ErrorCode::InternalError(Some(why)) => format!("internal-error: {why}"),
        ErrorCode::HttpRequestDenied => "denied".to_owned(),
        other => {
            let debug = format!("{other:?}");
            let debug = debug.strip_prefix("ErrorCode::").unwrap_or(&debug);
            let cut = debug.find(['(', ' ', '{']).unwrap_or(debug.len());
            let (name, detail) = debug.split_at(cut);
            let mut kebab = String::new();
            for (i, c) in name.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    kebab.push('-');
                }
                kebab.push(c.to_ascii_lowercase());
            }
            format!("{kebab}{detail}")
        }
    }
}

/// A request admitted, ready to go on a task of its own.
struct Outgoing {
    dest: Destination,
    request: http::Request<()>,
    body: Option<PendingBody>,
    connect: Duration,
    first_byte: Duration,
    between_bytes: Duration,
    deadline: Instant,
    response_limit: u64,
    redactor: Redactor,
    memory: Arc<HostMemory>,
    notices: Notices,
    exchange: Exchange,
}

/// What the guest waits on: the response's head, then its body.
pub struct FutureResponse {
    state: Waiting,
}

enum Waiting {
    Running(JoinHandle<Result<IncomingResponse, ErrorCode>>),
    Done(Result<IncomingResponse, ErrorCode>),
    Taken,
}

impl Drop for FutureResponse {
    /// A request the guest gave up on stops.
    fn drop(&mut self) {
        if let Waiting::Running(h) = &self.state {
            h.abort();
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for FutureResponse {
    async fn ready(&mut self) {
        if let Waiting::Running(h) = &mut self.state {
            let r = h
                .await
                .unwrap_or_else(|e| Err(ErrorCode::InternalError(Some(e.to_string()))));
            self.state = Waiting::Done(r);
        }
    }
}

/// `incoming-response`.
pub struct IncomingResponse {
    status: u16,
    headers: Fields,
    body: Option<IncomingBody>,
}

fn nanos(ns: Option<u64>, cap: Duration) -> Duration {
    ns.map_or(cap, |n| Duration::from_nanos(n).min(cap))
}

impl AgentState {
    /// Checks a request and its run's limits, asks the gate and adds the
    /// destination's secrets. Every refusal is audited (the `Exchange`
    /// dropped), a denial also told on the agent's stderr.
    async fn admit(
        &mut self,
        req: OutgoingRequest,
        opts: RequestOptions,
    ) -> Result<Outgoing, ErrorCode> {
        let scheme = match req.scheme {
            None | Some(types::Scheme::Https) => Scheme::Https,
            Some(types::Scheme::Http) => Scheme::Http,
            Some(types::Scheme::Other(_)) => return Err(ErrorCode::HttpProtocolError),
        };
        let authority = req.authority.ok_or(ErrorCode::HttpRequestUriInvalid)?;
        let dest = Destination::of_request(scheme, &authority)
            .map_err(|_| ErrorCode::HttpRequestUriInvalid)?;
        let method = match &req.method {
            Method::Get => http::Method::GET,
            Method::Head => http::Method::HEAD,
            Method::Post => http::Method::POST,
            Method::Put => http::Method::PUT,
            Method::Delete => http::Method::DELETE,
            Method::Connect => return Err(ErrorCode::HttpRequestMethodInvalid),
            Method::Options => http::Method::OPTIONS,
            Method::Trace => http::Method::TRACE,
            Method::Patch => http::Method::PATCH,
            Method::Other(m) => http::Method::from_bytes(m.as_bytes())
                .map_err(|_| ErrorCode::HttpRequestMethodInvalid)?,
        };
        let path = req.path_with_query.unwrap_or_else(|| "/".to_owned());
        let host_header = authority_of(&dest);
        let budget = self.egress.budget.clone();
        budget.in_flight.fetch_add(1, Ordering::Relaxed);
        let mut exchange = Exchange {
            kernel: self.kernel.clone(),
            task: self.task.clone(),
            budget: budget.clone(),
            target: format!("{method} {}://{host_header}{path}", scheme.as_str()),
            started: Instant::now(),
            sent: 0,
            received: 0,
            status: None,
            failure: None,
        };
        let limits = &budget.limits;
        let refuse = |exchange: &mut Exchange, code: ErrorCode| {
            exchange.failed(&code);
            code
        };
        if budget.in_flight.load(Ordering::Relaxed) > limits.concurrent {
            return Err(refuse(&mut exchange, ErrorCode::ConnectionLimitReached));
        }
        if budget.traffic.0.load(Ordering::Relaxed) >= limits.run_bytes {
            let code = spent_error(limits.run_bytes);
            self.egress.notices.say(&describe(&code)).await;
            return Err(refuse(&mut exchange, code));
        }
        let pass = match self.kernel.egress(&self.task, &dest) {
            Ok(pass) => pass,
            Err(KernelError::Access(why)) => {
                let line = format!("{} refused: {why}", exchange.target);
                self.egress.notices.say(&line).await;
                return Err(refuse(&mut exchange, ErrorCode::HttpRequestDenied));
            }
            Err(e) => {
                let code = ErrorCode::InternalError(Some(e.to_string()));
                return Err(refuse(&mut exchange, code));
            }
        };
        let redactor = Redactor::new(&pass.secrets);
        exchange.target = redactor.mask_str(&exchange.target);
        let mut request = http::Request::builder()
            .method(method)
            .uri(path.as_str())
            .body(())
            .map_err(|_| refuse(&mut exchange, ErrorCode::HttpRequestUriInvalid))?;
        let headers = request.headers_mut();
        for (name, value) in &req.headers.entries {
            let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_bytes(value),
            ) else {
                return Err(refuse(
                    &mut exchange,
                    ErrorCode::HttpRequestHeaderSize(None),
                ));
            };
            if !HOP_BY_HOP.contains(&n.as_str()) {
                headers.append(n, v);
            }
        }
        for s in &pass.secrets {
            let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(s.name.as_bytes()),
                http::HeaderValue::from_str(&s.value),
            ) else {
                continue;
            };
            headers.insert(n, v);
        }
        if let Ok(v) = http::HeaderValue::from_str(&host_header) {
            headers.insert(http::header::HOST, v);
        }
        let total = limits.request_time;
        Ok(Outgoing {
            dest,
            request,
            body: req.body,
            connect: nanos(opts.connect, total),
            first_byte: nanos(opts.first_byte, total),
            between_bytes: nanos(opts.between_bytes, total),
            deadline: Instant::now() + total,
            response_limit: limits.response_body,
            redactor,
            memory: self.host_memory.clone(),
            notices: self.egress.notices.clone(),
            exchange,
        })
    }
}

/// `host[:port]` as the `Host` header carries it.
fn authority_of(dest: &Destination) -> String {
    let host = match &dest.host {
        DestinationHost::Ip(std::net::IpAddr::V6(a)) => format!("[{a}]"),
        _ => dest.host_name(),
    };
    if dest.port == dest.scheme.default_port() {
        host
    } else {
        format!("{host}:{}", dest.port)
    }
}

/// Addresses of one name tried at most.
const MAX_ADDRESSES: usize = 16;

impl Outgoing {
    fn left(&self, cap: Duration) -> Duration {
        cap.min(self.deadline.saturating_duration_since(Instant::now()))
    }

    /// Sends the request; the response's head, with its body to read.
    async fn send(mut self) -> Result<IncomingResponse, ErrorCode> {
        let response = match self.head().await {
            Ok(r) => r,
            Err(code) => {
                self.exchange.failed(&code);
                return Err(code);
            }
        };
        let (parts, body) = response.into_parts();
        let status = parts.status.as_u16();
        self.exchange.status = Some(status);
        let headers = masked(&self.redactor, &parts.headers);
        let headers = match Fields::charged(&self.memory, headers, true) {
            Ok(h) => h,
            Err(e) => {
                let code = ErrorCode::InternalError(Some(e.to_string()));
                self.exchange.failed(&code);
                return Err(code);
            }
        };
        let reader = BodyReader::new(
            body,
            &self.memory,
            self.redactor,
            self.response_limit,
            self.between_bytes,
            self.deadline,
            self.exchange,
        );
        Ok(IncomingResponse {
            status,
            headers,
            body: Some(IncomingBody::new(reader)),
        })
    }

    async fn head(&mut self) -> Result<http::Response<hyper::body::Incoming>, ErrorCode> {
        let body = match self.body.take() {
            None => Bytes::new(),
            Some(pending) => tokio::time::timeout_at(self.deadline, pending.finished())
                .await
                .map_err(|_| ErrorCode::ConnectionWriteTimeout)??,
        };
        self.exchange.sent = body.len() as u64;
        self.exchange.spend(body.len() as u64)?;
        let addrs = self.resolve().await?;
        let tcp = self.connect(&addrs).await?;
        let (parts, ()) = std::mem::take(&mut self.request).into_parts();
        let request = http::Request::from_parts(parts, Full::new(body));
        let wait = self.left(self.first_byte);
        match self.dest.scheme {
            Scheme::Http => over(tcp, request, wait).await,
            Scheme::Https => {
                let tls = tokio::time::timeout(
                    self.left(self.connect),
                    super::tls::connect(&self.dest.host_name(), tcp),
                )
                .await
                .map_err(|_| ErrorCode::ConnectionTimeout)??;
                over(tls, request, self.left(self.first_byte)).await
            }
        }
    }

    /// The addresses to try: an address literal as it is (its grant named
    /// it); a name resolved here, and refused whole if any address it
    /// resolves to is not public.
    async fn resolve(&self) -> Result<Vec<SocketAddr>, ErrorCode> {
        let port = self.dest.port;
        let name = match &self.dest.host {
            DestinationHost::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, port)]),
            DestinationHost::Name(n) => n.as_str(),
            DestinationHost::Wildcard(_) => return Err(ErrorCode::HttpRequestUriInvalid),
        };
        let found = tokio::time::timeout(
            self.left(self.connect),
            tokio::net::lookup_host((name, port)),
        )
        .await
        .map_err(|_| ErrorCode::DnsTimeout)?
        .map_err(|e| {
            ErrorCode::DnsError(types::DnsErrorPayload {
                rcode: Some(e.to_string()),
                info_code: None,
            })
        })?;
        let addrs: Vec<SocketAddr> = found.take(MAX_ADDRESSES).collect();
        if addrs.is_empty() {
            return Err(ErrorCode::DestinationNotFound);
        }
        for a in &addrs {
            if let Some(why) = restricted(a.ip()) {
                let literal = Destination {
                    host: DestinationHost::Ip(a.ip()),
                    ..self.dest.clone()
                };
                self.notices
                    .say(&format!(
                        "{} refused: {name} resolves to {}, a {why} address, which a name \
                         never leads to (grant the address itself, host:{}, to reach it)",
                        self.exchange.target,
                        a.ip(),
                        literal.id()
                    ))
                    .await;
                return Err(ErrorCode::DestinationIpProhibited);
            }
        }
        Ok(addrs)
    }

    /// A connection to the first checked address that answers.
    async fn connect(&self, addrs: &[SocketAddr]) -> Result<TcpStream, ErrorCode> {
        let mut last = ErrorCode::DestinationUnavailable;
        for a in addrs {
            match tokio::time::timeout(self.left(self.connect), TcpStream::connect(a)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    last = ErrorCode::ConnectionRefused;
                }
                Ok(Err(_)) => last = ErrorCode::DestinationUnavailable,
                Err(_) => last = ErrorCode::ConnectionTimeout,
            }
        }
        Err(last)
    }
}

/// One HTTP/1.1 exchange over `io`; the connection is driven by a task of
/// its own until the response's body is done or dropped.
async fn over<S>(
    io: S,
    request: http::Request<Full<Bytes>>,
    wait: Duration,
) -> Result<http::Response<hyper::body::Incoming>, ErrorCode>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(hyper_error)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("HTTP connection: {e}");
        }
    });
    tokio::time::timeout(wait, sender.send_request(request))
        .await
        .map_err(|_| ErrorCode::HttpResponseTimeout)?
        .map_err(hyper_error)
}

fn hyper_error(e: hyper::Error) -> ErrorCode {
    tracing::debug!("HTTP: {e}");
    if e.is_parse_too_large() {
        ErrorCode::HttpResponseHeaderSectionSize(None)
    } else if e.is_parse() {
        ErrorCode::HttpProtocolError
    } else if e.is_incomplete_message() {
        ErrorCode::HttpResponseIncomplete
    } else if e.is_timeout() {
        ErrorCode::HttpResponseTimeout
    } else {
        ErrorCode::ConnectionTerminated
    }
}

impl outgoing_handler::Host for AgentState {
    async fn handle(
        &mut self,
        request: Resource<OutgoingRequest>,
        options: Option<Resource<RequestOptions>>,
    ) -> Result<Resource<FutureResponse>, HttpError> {
        let req = self.table.delete(request).map_err(HttpError::trap)?;
        let opts = match options {
            Some(o) => self.table.delete(o).map_err(HttpError::trap)?,
            None => RequestOptions::default(),
        };
        let outgoing = self.admit(req, opts).await?;
        let running = Waiting::Running(tokio::spawn(outgoing.send()));
        self.table
            .push(FutureResponse { state: running })
            .map_err(HttpError::trap)
    }
}

impl types::HostFutureIncomingResponse for AgentState {
    async fn subscribe(&mut self, f: Resource<FutureResponse>) -> W<Resource<DynPollable>> {
        subscribe(&mut self.table, f)
    }
    async fn get(
        &mut self,
        f: Resource<FutureResponse>,
    ) -> W<Option<Result<Result<Resource<IncomingResponse>, ErrorCode>, ()>>> {
        let fut = self.table.get_mut(&f)?;
        if let Waiting::Running(h) = &mut fut.state {
            if !h.is_finished() {
                return Ok(None);
            }
            let r = match futures::FutureExt::now_or_never(h) {
                Some(Ok(r)) => r,
                Some(Err(e)) => Err(ErrorCode::InternalError(Some(e.to_string()))),
                None => return Ok(None),
            };
            fut.state = Waiting::Done(r);
        }
        match std::mem::replace(&mut fut.state, Waiting::Taken) {
            Waiting::Done(Ok(resp)) => Ok(Some(Ok(Ok(self.table.push(resp)?)))),
            Waiting::Done(Err(code)) => Ok(Some(Ok(Err(code)))),
            Waiting::Taken | Waiting::Running(_) => Ok(Some(Err(()))),
        }
    }
    async fn drop(&mut self, f: Resource<FutureResponse>) -> W<()> {
        self.table.delete(f)?;
        Ok(())
    }
}

impl types::HostIncomingResponse for AgentState {
    async fn status(&mut self, r: Resource<IncomingResponse>) -> W<types::StatusCode> {
        Ok(self.table.get(&r)?.status)
    }
    async fn headers(&mut self, r: Resource<IncomingResponse>) -> W<Resource<Fields>> {
        self.push_copy(|t| Ok(&mut t.get_mut(&r)?.headers), true)
    }
    async fn consume(
        &mut self,
        r: Resource<IncomingResponse>,
    ) -> W<Result<Resource<IncomingBody>, ()>> {
        match self.table.get_mut(&r)?.body.take() {
            Some(body) => Ok(Ok(self.table.push(body)?)),
            None => Ok(Err(())),
        }
    }
    async fn drop(&mut self, r: Resource<IncomingResponse>) -> W<()> {
        self.table.delete(r)?;
        Ok(())
    }
}
