//! Bodies. A request's body is buffered in host memory (charged, at most
//! the run's request-body limit) until the guest finishes it, then sent
//! whole; a response's body is read from the connection a frame at a time
//! as the guest reads (one frame held, charged), counted against the
//! response-body limit and the run's bytes, with secrets masked.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::sync::oneshot;
use tokio::time::Instant;
use wasmtime::component::Resource;
use wasmtime_wasi_io::poll::{subscribe, DynPollable, Pollable};
use wasmtime_wasi_io::streams::{
    DynInputStream, DynOutputStream, InputStream, OutputStream, StreamError, StreamResult,
};

use super::fields::{over_budget, Fields};
use super::redact::Redactor;
use super::send::Exchange;
use super::types::{HttpError, W};
use crate::agent::bindings::wasi::http::types::{self, ErrorCode};
use crate::agent::budget::{Charge, HostMemory};
use crate::agent::state::AgentState;

const REQUEST_BODY: &str = "HTTP request body";
const RESPONSE_BODY: &str = "HTTP response body";

/// Bytes a body stream accepts per write, at most.
const WRITE_GRANT: usize = 64 * 1024;

fn failed(code: ErrorCode) -> StreamError {
    StreamError::LastOperationFailed(wasmtime::Error::new(code))
}

/// What the guest has written so far.
struct Buffer {
    bytes: BytesMut,
    charge: Charge,
    limit: u64,
    /// Set once a write passed the limit: the request fails with it.
    over: bool,
}

/// The sending side's view of a request body: its bytes once finished.
pub struct PendingBody(oneshot::Receiver<Result<Bytes, ErrorCode>>);

impl PendingBody {
    /// The finished body, or why there is none (too big; dropped by the
    /// guest before it was finished).
    pub(super) async fn finished(self) -> Result<Bytes, ErrorCode> {
        self.0.await.unwrap_or_else(|_| {
            Err(ErrorCode::InternalError(Some(
                "the request body was dropped before it was finished".into(),
            )))
        })
    }
}

/// `outgoing-body`: the guest writes through its stream, then finishes it.
pub struct OutgoingBody {
    buffer: Arc<Mutex<Buffer>>,
    done: Option<oneshot::Sender<Result<Bytes, ErrorCode>>>,
    stream_taken: bool,
}

impl OutgoingBody {
    pub(super) fn new(memory: Arc<HostMemory>, limit: u64) -> (PendingBody, OutgoingBody) {
        let (tx, rx) = oneshot::channel();
        let body = OutgoingBody {
            buffer: Arc::new(Mutex::new(Buffer {
                bytes: BytesMut::new(),
                charge: memory.empty_charge(),
                limit,
                over: false,
            })),
            done: Some(tx),
            stream_taken: false,
        };
        (PendingBody(rx), body)
    }
}

/// The output stream of an outgoing body.
struct BodyWriter(Arc<Mutex<Buffer>>);

impl BodyWriter {
    fn buffer(&self) -> std::sync::MutexGuard<'_, Buffer> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl OutputStream for BodyWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let mut b = self.buffer();
        let now = (b.bytes.len() + bytes.len()) as u64;
        if b.over || now > b.limit {
            b.over = true;
            return Err(failed(ErrorCode::HttpRequestBodySize(Some(b.limit))));
        }
        b.charge
            .resize(now, REQUEST_BODY)
            .map_err(|e| StreamError::LastOperationFailed(over_budget(e)))?;
        b.bytes.extend_from_slice(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        let b = self.buffer();
        if b.over {
            return Err(failed(ErrorCode::HttpRequestBodySize(Some(b.limit))));
        }
        Ok(WRITE_GRANT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for BodyWriter {
    async fn ready(&mut self) {}
}

/// How a response body stands.
enum End {
    Open,
    Ended,
    /// Failed; `told` once its stream has reported it.
    Failed {
        code: ErrorCode,
        told: bool,
    },
}

/// A response body being read from its connection.
pub(super) struct BodyReader {
    body: hyper::body::Incoming,
    buf: Bytes,
    charge: Charge,
    trailers: Option<Vec<(String, Vec<u8>)>>,
    end: End,
    redactor: Redactor,
    received: u64,
    limit: u64,
    between_bytes: Duration,
    deadline: Instant,
    /// Audited when the body (and with it the request) is gone.
    exchange: Exchange,
}

impl BodyReader {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        body: hyper::body::Incoming,
        memory: &Arc<HostMemory>,
        redactor: Redactor,
        limit: u64,
        between_bytes: Duration,
        deadline: Instant,
        exchange: Exchange,
    ) -> Self {
        BodyReader {
            body,
            buf: Bytes::new(),
            charge: memory.empty_charge(),
            trailers: None,
            end: End::Open,
            redactor,
            received: 0,
            limit,
            between_bytes,
            deadline,
            exchange,
        }
    }

    fn fail(&mut self, code: ErrorCode) {
        self.exchange.failed(&code);
        self.end = End::Failed { code, told: false };
    }

    /// Waits until there are bytes to read or the body has ended.
    async fn fill(&mut self) {
        while self.buf.is_empty() && matches!(self.end, End::Open) {
            let left = self.deadline.saturating_duration_since(Instant::now());
            let wait = self.between_bytes.min(left);
            let frame = match tokio::time::timeout(wait, self.body.frame()).await {
                Err(_) => {
                    self.fail(ErrorCode::HttpResponseTimeout);
                    break;
                }
                Ok(None) => {
                    self.buf = self.redactor.finish();
                    self.end = End::Ended;
                    self.exchange.received(self.received);
                    break;
                }
                Ok(Some(Err(e))) => {
                    tracing::debug!("response body: {e}");
                    self.fail(ErrorCode::HttpResponseIncomplete);
                    break;
                }
                Ok(Some(Ok(frame))) => frame,
            };
            match frame.into_data() {
                Ok(data) => {
                    self.received += data.len() as u64;
                    if self.received > self.limit {
                        self.fail(ErrorCode::HttpResponseBodySize(Some(self.limit)));
                    } else if let Err(code) = self.exchange.spend(data.len() as u64) {
                        self.fail(code);
                    } else {
                        self.buf = self.redactor.feed(data);
                    }
                }
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        self.trailers = Some(masked(&self.redactor, &t));
                    }
                }
            }
        }
        if let Err(e) = self.charge.resize(self.buf.len() as u64, RESPONSE_BODY) {
            self.buf = Bytes::new();
            self.fail(ErrorCode::InternalError(Some(e.to_string())));
        }
    }

    fn take(&mut self, size: usize) -> StreamResult<Bytes> {
        if !self.buf.is_empty() {
            let out = self.buf.split_to(size.min(self.buf.len()));
            // Shrinking a charge cannot fail.
            let _ = self.charge.resize(self.buf.len() as u64, RESPONSE_BODY);
            return Ok(out);
        }
        match &mut self.end {
            End::Open => Ok(Bytes::new()),
            End::Ended | End::Failed { told: true, .. } => Err(StreamError::Closed),
            End::Failed { code, told } => {
                *told = true;
                Err(failed(code.clone()))
            }
        }
    }
}

/// Response header or trailer fields as the guest may see them: values
/// with every secret masked.
pub(super) fn masked(redactor: &Redactor, map: &http::HeaderMap) -> Vec<(String, Vec<u8>)> {
    map.iter()
        .map(|(k, v)| {
            let v = v.as_bytes();
            let v = if redactor.is_empty() {
                v.to_vec()
            } else {
                redactor.mask(v)
            };
            (k.as_str().to_owned(), v)
        })
        .collect()
}

type SharedReader = Arc<tokio::sync::Mutex<BodyReader>>;

/// `incoming-body`.
pub struct IncomingBody {
    reader: SharedReader,
    stream_taken: bool,
}

impl IncomingBody {
    pub(super) fn new(reader: BodyReader) -> Self {
        IncomingBody {
            reader: Arc::new(tokio::sync::Mutex::new(reader)),
            stream_taken: false,
        }
    }
}

/// The input stream of an incoming body.
struct BodyStream(SharedReader);

#[wasmtime_wasi::async_trait]
impl InputStream for BodyStream {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        // A pollable's wait holds the lock only while the guest waits on
        // it, never across a read.
        self.0
            .try_lock()
            .map_err(|_| StreamError::trap("the body is being read elsewhere"))?
            .take(size)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for BodyStream {
    async fn ready(&mut self) {
        self.0.lock().await.fill().await;
    }
}

/// `future-trailers`: the body read to its end (what the guest did not
/// read is dropped), then its trailers.
pub struct FutureTrailers {
    reader: SharedReader,
    taken: bool,
}

#[wasmtime_wasi::async_trait]
impl Pollable for FutureTrailers {
    async fn ready(&mut self) {
        let mut r = self.reader.lock().await;
        loop {
            r.buf = Bytes::new();
            r.fill().await;
            if r.buf.is_empty() {
                break;
            }
        }
    }
}

impl types::HostOutgoingBody for AgentState {
    async fn write(
        &mut self,
        b: Resource<OutgoingBody>,
    ) -> W<Result<Resource<DynOutputStream>, ()>> {
        let body = self.table.get_mut(&b)?;
        if std::mem::replace(&mut body.stream_taken, true) {
            return Ok(Err(()));
        }
        let stream: DynOutputStream = Box::new(BodyWriter(body.buffer.clone()));
        Ok(Ok(self.table.push_child(stream, &b)?))
    }
    /// Trailers are dropped: a request is sent whole, with its length.
    async fn finish(
        &mut self,
        b: Resource<OutgoingBody>,
        trailers: Option<Resource<Fields>>,
    ) -> Result<(), HttpError> {
        let mut body = self.table.delete(b).map_err(HttpError::trap)?;
        if let Some(t) = trailers {
            self.table.delete(t).map_err(HttpError::trap)?;
        }
        let outcome = {
            let mut b = body.buffer.lock().unwrap_or_else(|p| p.into_inner());
            if b.over {
                Err(ErrorCode::HttpRequestBodySize(Some(b.limit)))
            } else {
                Ok(b.bytes.split().freeze())
            }
        };
        if let Some(done) = body.done.take() {
            let _ = done.send(outcome.clone());
        }
        outcome.map(|_| ()).map_err(HttpError::from)
    }
    async fn drop(&mut self, b: Resource<OutgoingBody>) -> W<()> {
        self.table.delete(b)?;
        Ok(())
    }
}

impl types::HostIncomingBody for AgentState {
    async fn stream(
        &mut self,
        b: Resource<IncomingBody>,
    ) -> W<Result<Resource<DynInputStream>, ()>> {
        let body = self.table.get_mut(&b)?;
        if std::mem::replace(&mut body.stream_taken, true) {
            return Ok(Err(()));
        }
        let stream: DynInputStream = Box::new(BodyStream(body.reader.clone()));
        Ok(Ok(self.table.push_child(stream, &b)?))
    }
    async fn finish(&mut self, b: Resource<IncomingBody>) -> W<Resource<FutureTrailers>> {
        let body = self.table.delete(b)?;
        Ok(self.table.push(FutureTrailers {
            reader: body.reader,
            taken: false,
        })?)
    }
    async fn drop(&mut self, b: Resource<IncomingBody>) -> W<()> {
        self.table.delete(b)?;
        Ok(())
    }
}

impl types::HostFutureTrailers for AgentState {
    async fn subscribe(&mut self, t: Resource<FutureTrailers>) -> W<Resource<DynPollable>> {
        subscribe(&mut self.table, t)
    }
    async fn get(
        &mut self,
        t: Resource<FutureTrailers>,
    ) -> W<Option<Result<Result<Option<Resource<Fields>>, ErrorCode>, ()>>> {
        let f = self.table.get_mut(&t)?;
        if f.taken {
            return Ok(Some(Err(())));
        }
        let Ok(mut r) = f.reader.try_lock() else {
            return Ok(None);
        };
        let outcome = match &r.end {
            End::Open => return Ok(None),
            End::Failed { code, .. } => Err(code.clone()),
            End::Ended => Ok(r.trailers.take()),
        };
        drop(r);
        self.table.get_mut(&t)?.taken = true;
        let trailers = match outcome {
            Ok(t) => t,
            Err(code) => return Ok(Some(Ok(Err(code)))),
        };
        let Some(entries) = trailers else {
            return Ok(Some(Ok(Ok(None))));
        };
        let fields = Fields::charged(&self.host_memory, entries, true).map_err(over_budget)?;
        Ok(Some(Ok(Ok(Some(self.table.push(fields)?)))))
    }
    async fn drop(&mut self, t: Resource<FutureTrailers>) -> W<()> {
        self.table.delete(t)?;
        Ok(())
    }
}
