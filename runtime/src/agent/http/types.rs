//! The `wasi:http` values a guest builds before it sends: requests, their
//! options, and (never sent by a command, but constructible) responses.
//! The incoming side of a server (incoming request, response outparam)
//! can never exist in a command: an uninhabited type.

use wasmtime::component::Resource;

use super::body::{OutgoingBody, PendingBody};
use super::fields::Fields;
use crate::agent::bindings::wasi::http::types;
use crate::agent::state::AgentState;
use types::{ErrorCode, Method, Scheme, StatusCode};

pub type HttpError = wasmtime_wasi::TrappableError<ErrorCode>;
pub type HeaderError = wasmtime_wasi::TrappableError<types::HeaderError>;

pub(super) type W<T> = wasmtime::Result<T>;

pub struct OutgoingRequest {
    pub(super) method: Method,
    pub(super) path_with_query: Option<String>,
    pub(super) scheme: Option<Scheme>,
    pub(super) authority: Option<String>,
    pub(super) headers: Fields,
    /// `None` until the guest takes the body; then what it will finish.
    pub(super) body: Option<PendingBody>,
}

/// Timeouts a guest asks for, in nanoseconds (capped by the run's own).
#[derive(Default)]
pub struct RequestOptions {
    pub(super) connect: Option<u64>,
    pub(super) first_byte: Option<u64>,
    pub(super) between_bytes: Option<u64>,
}

pub struct OutgoingResponse {
    status: StatusCode,
    headers: Fields,
    body_taken: bool,
}

/// Stands in for the server side's resources. Never constructed.
pub enum NoHttp {}

fn none<T>(_: Resource<NoHttp>) -> W<T> {
    Err(wasmtime::format_err!(
        "no incoming HTTP request exists in a Nexus agent"
    ))
}

impl types::Host for AgentState {
    fn convert_error_code(&mut self, err: HttpError) -> W<ErrorCode> {
        err.downcast()
    }
    fn convert_header_error(&mut self, err: HeaderError) -> W<types::HeaderError> {
        err.downcast()
    }
    /// The HTTP error behind a stream's error (a body past its limit, a
    /// response that stopped coming).
    async fn http_error_code(&mut self, e: Resource<wasmtime::Error>) -> W<Option<ErrorCode>> {
        Ok(self.table.get(&e)?.downcast_ref::<ErrorCode>().cloned())
    }
}

impl types::HostOutgoingRequest for AgentState {
    async fn new(&mut self, headers: Resource<Fields>) -> W<Resource<OutgoingRequest>> {
        let headers = self.table.delete(headers)?;
        let r = OutgoingRequest {
            method: Method::Get,
            path_with_query: None,
            scheme: None,
            authority: None,
            headers,
            body: None,
        };
        Ok(self.table.push(r)?)
    }
    async fn body(
        &mut self,
        r: Resource<OutgoingRequest>,
    ) -> W<Result<Resource<OutgoingBody>, ()>> {
        if self.table.get(&r)?.body.is_some() {
            return Ok(Err(()));
        }
        let (pending, body) =
            OutgoingBody::new(self.host_memory.clone(), self.egress.limits.request_body);
        self.table.get_mut(&r)?.body = Some(pending);
        Ok(Ok(self.table.push(body)?))
    }
    async fn method(&mut self, r: Resource<OutgoingRequest>) -> W<Method> {
        Ok(self.table.get(&r)?.method.clone())
    }
    async fn set_method(&mut self, r: Resource<OutgoingRequest>, m: Method) -> W<Result<(), ()>> {
        if let Method::Other(s) = &m {
            if http::Method::from_bytes(s.as_bytes()).is_err() {
                return Ok(Err(()));
            }
        }
        self.table.get_mut(&r)?.method = m;
        Ok(Ok(()))
    }
    async fn path_with_query(&mut self, r: Resource<OutgoingRequest>) -> W<Option<String>> {
        Ok(self.table.get(&r)?.path_with_query.clone())
    }
    async fn set_path_with_query(
        &mut self,
        r: Resource<OutgoingRequest>,
        p: Option<String>,
    ) -> W<Result<(), ()>> {
        if let Some(p) = &p {
            if http::uri::PathAndQuery::try_from(p.as_str()).is_err() {
                return Ok(Err(()));
            }
        }
        self.table.get_mut(&r)?.path_with_query = p;
        Ok(Ok(()))
    }
    async fn scheme(&mut self, r: Resource<OutgoingRequest>) -> W<Option<Scheme>> {
        Ok(self.table.get(&r)?.scheme.clone())
    }
    async fn set_scheme(
        &mut self,
        r: Resource<OutgoingRequest>,
        s: Option<Scheme>,
    ) -> W<Result<(), ()>> {
        if let Some(Scheme::Other(_)) = &s {
            return Ok(Err(()));
        }
        self.table.get_mut(&r)?.scheme = s;
        Ok(Ok(()))
    }
    async fn authority(&mut self, r: Resource<OutgoingRequest>) -> W<Option<String>> {
        Ok(self.table.get(&r)?.authority.clone())
    }
    async fn set_authority(
        &mut self,
        r: Resource<OutgoingRequest>,
        a: Option<String>,
    ) -> W<Result<(), ()>> {
        if let Some(a) = &a {
            if http::uri::Authority::try_from(a.as_str()).is_err() {
                return Ok(Err(()));
            }
        }
        self.table.get_mut(&r)?.authority = a;
        Ok(Ok(()))
    }
    async fn headers(&mut self, r: Resource<OutgoingRequest>) -> W<Resource<Fields>> {
        self.push_copy(|t| Ok(&mut t.get_mut(&r)?.headers), true)
    }
    async fn drop(&mut self, r: Resource<OutgoingRequest>) -> W<()> {
        self.table.delete(r)?;
        Ok(())
    }
}

impl types::HostRequestOptions for AgentState {
    async fn new(&mut self) -> W<Resource<RequestOptions>> {
        Ok(self.table.push(RequestOptions::default())?)
    }
    async fn connect_timeout(&mut self, o: Resource<RequestOptions>) -> W<Option<u64>> {
        Ok(self.table.get(&o)?.connect)
    }
    async fn set_connect_timeout(
        &mut self,
        o: Resource<RequestOptions>,
        d: Option<u64>,
    ) -> W<Result<(), ()>> {
        self.table.get_mut(&o)?.connect = d;
        Ok(Ok(()))
    }
    async fn first_byte_timeout(&mut self, o: Resource<RequestOptions>) -> W<Option<u64>> {
        Ok(self.table.get(&o)?.first_byte)
    }
    async fn set_first_byte_timeout(
        &mut self,
        o: Resource<RequestOptions>,
        d: Option<u64>,
    ) -> W<Result<(), ()>> {
        self.table.get_mut(&o)?.first_byte = d;
        Ok(Ok(()))
    }
    async fn between_bytes_timeout(&mut self, o: Resource<RequestOptions>) -> W<Option<u64>> {
        Ok(self.table.get(&o)?.between_bytes)
    }
    async fn set_between_bytes_timeout(
        &mut self,
        o: Resource<RequestOptions>,
        d: Option<u64>,
    ) -> W<Result<(), ()>> {
        self.table.get_mut(&o)?.between_bytes = d;
        Ok(Ok(()))
    }
    async fn drop(&mut self, o: Resource<RequestOptions>) -> W<()> {
        self.table.delete(o)?;
        Ok(())
    }
}

impl types::HostOutgoingResponse for AgentState {
    async fn new(&mut self, headers: Resource<Fields>) -> W<Resource<OutgoingResponse>> {
        let headers = self.table.delete(headers)?;
        let r = OutgoingResponse {
            status: 200,
            headers,
            body_taken: false,
        };
        Ok(self.table.push(r)?)
    }
    async fn status_code(&mut self, r: Resource<OutgoingResponse>) -> W<StatusCode> {
        Ok(self.table.get(&r)?.status)
    }
    async fn set_status_code(
        &mut self,
        r: Resource<OutgoingResponse>,
        s: StatusCode,
    ) -> W<Result<(), ()>> {
        if !(100..=599).contains(&s) {
            return Ok(Err(()));
        }
        self.table.get_mut(&r)?.status = s;
        Ok(Ok(()))
    }
    async fn headers(&mut self, r: Resource<OutgoingResponse>) -> W<Resource<Fields>> {
        self.push_copy(|t| Ok(&mut t.get_mut(&r)?.headers), true)
    }
    /// A command's response goes nowhere: its body is a sink, bounded like
    /// a request's.
    async fn body(
        &mut self,
        r: Resource<OutgoingResponse>,
    ) -> W<Result<Resource<OutgoingBody>, ()>> {
        let resp = self.table.get_mut(&r)?;
        if std::mem::replace(&mut resp.body_taken, true) {
            return Ok(Err(()));
        }
        let (_, body) =
            OutgoingBody::new(self.host_memory.clone(), self.egress.limits.request_body);
        Ok(Ok(self.table.push(body)?))
    }
    async fn drop(&mut self, r: Resource<OutgoingResponse>) -> W<()> {
        self.table.delete(r)?;
        Ok(())
    }
}

impl types::HostIncomingRequest for AgentState {
    async fn method(&mut self, r: Resource<NoHttp>) -> W<Method> {
        none(r)
    }
    async fn path_with_query(&mut self, r: Resource<NoHttp>) -> W<Option<String>> {
        none(r)
    }
    async fn scheme(&mut self, r: Resource<NoHttp>) -> W<Option<Scheme>> {
        none(r)
    }
    async fn authority(&mut self, r: Resource<NoHttp>) -> W<Option<String>> {
        none(r)
    }
    async fn headers(&mut self, r: Resource<NoHttp>) -> W<Resource<Fields>> {
        none(r)
    }
    async fn consume(
        &mut self,
        r: Resource<NoHttp>,
    ) -> W<Result<Resource<super::body::IncomingBody>, ()>> {
        none(r)
    }
    async fn drop(&mut self, r: Resource<NoHttp>) -> W<()> {
        none(r)
    }
}

impl types::HostResponseOutparam for AgentState {
    async fn send_informational(
        &mut self,
        r: Resource<NoHttp>,
        _: u16,
        _: Resource<Fields>,
    ) -> Result<(), HttpError> {
        none(r).map_err(HttpError::trap)
    }
    async fn set(
        &mut self,
        r: Resource<NoHttp>,
        _: Result<Resource<OutgoingResponse>, ErrorCode>,
    ) -> W<()> {
        none(r)
    }
    async fn drop(&mut self, r: Resource<NoHttp>) -> W<()> {
        none(r)
    }
}
