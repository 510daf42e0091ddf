//! `wasi:http` for agents that import it: present so they instantiate,
//! and every outgoing request denied (`HTTP-request-denied`); an agent's
//! only I/O is the kernel. Headers, requests, options and responses are
//! ordinary values a guest may build, charged to its host memory; bodies
//! written to them go nowhere.
//! Incoming requests, responses and bodies can never exist in a command,
//! so their resources are an uninhabited type.

use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::p2::pipe::SinkOutputStream;
use wasmtime_wasi_io::poll::DynPollable;
use wasmtime_wasi_io::streams::{DynInputStream, DynOutputStream};

use nexus_kernel::KernelError;

use super::bindings::wasi::http::{outgoing_handler, types};
use super::budget::Charge;
use super::state::AgentState;
use types::{ErrorCode, Method, Scheme, StatusCode};

pub type HttpError = wasmtime_wasi::TrappableError<ErrorCode>;
pub type HeaderError = wasmtime_wasi::TrappableError<types::HeaderError>;

type W<T> = wasmtime::Result<T>;

/// Header or trailer fields. Immutable once attached to a message. What
/// they hold is charged to the agent's host memory for as long as they
/// live.
pub struct Fields {
    entries: Vec<(String, Vec<u8>)>,
    immutable: bool,
    charge: Charge,
}

/// Host bytes an entry costs besides its name and value.
const ENTRY_OVERHEAD: u64 = 2 * std::mem::size_of::<Vec<u8>>() as u64;

fn entry_size((name, value): &(String, Vec<u8>)) -> u64 {
    (name.len() + value.len()) as u64 + ENTRY_OVERHEAD
}

fn size_of<'a>(entries: impl IntoIterator<Item = &'a (String, Vec<u8>)>) -> u64 {
    entries.into_iter().map(entry_size).sum()
}

/// Fields past the agent's host memory: the interface has no error for
/// it, so the agent traps with the reason.
fn over_budget(e: KernelError) -> wasmtime::Error {
    wasmtime::format_err!("{e}")
}

impl Fields {
    /// Replaces the entries named `name` (any case) with `values`, charging
    /// the difference first.
    fn replace(&mut self, name: &str, values: Vec<Vec<u8>>) -> W<()> {
        let gone = size_of(self.named(name));
        let added: u64 = values
            .iter()
            .map(|v| (name.len() + v.len()) as u64 + ENTRY_OVERHEAD)
            .sum();
        let now = size_of(&self.entries) - gone + added;
        self.charge.resize(now, FIELDS).map_err(over_budget)?;
        self.entries.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.entries
            .extend(values.into_iter().map(|v| (name.to_owned(), v)));
        Ok(())
    }

    fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a (String, Vec<u8>)> {
        self.entries
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
    }
}

const FIELDS: &str = "HTTP fields";

pub struct OutgoingRequest {
    method: Method,
    path_with_query: Option<String>,
    scheme: Option<Scheme>,
    authority: Option<String>,
    headers: Fields,
    body_taken: bool,
}

#[derive(Default)]
pub struct RequestOptions {
    connect: Option<u64>,
    first_byte: Option<u64>,
    between_bytes: Option<u64>,
}

pub struct OutgoingResponse {
    status: StatusCode,
    headers: Fields,
    body_taken: bool,
}

/// A body nothing will ever send.
pub struct OutgoingBody;

/// Stands in for every incoming-side resource. Never constructed.
pub enum NoHttp {}

fn none<T>(_: Resource<NoHttp>) -> W<T> {
    Err(wasmtime::format_err!(
        "no incoming HTTP message exists in a Nexus agent"
    ))
}

fn immutable() -> HeaderError {
    types::HeaderError::Immutable.into()
}

impl AgentState {
    fn fields(&mut self, r: &Resource<Fields>) -> W<&mut Fields> {
        Ok(self.table.get_mut(r)?)
    }

    /// New fields holding `entries`, charged before they are kept.
    fn new_fields(&mut self, entries: Vec<(String, Vec<u8>)>, immutable: bool) -> W<Fields> {
        let charge = self
            .host_memory
            .charge(size_of(&entries), FIELDS)
            .map_err(over_budget)?;
        Ok(Fields {
            entries,
            immutable,
            charge,
        })
    }

    /// A copy of the fields `at` finds in the table, pushed to it and
    /// charged (before the copy is made) like any fields.
    fn push_copy(
        &mut self,
        at: impl Fn(&mut ResourceTable) -> W<&mut Fields>,
        immutable: bool,
    ) -> W<Resource<Fields>> {
        let entries = std::mem::take(&mut at(&mut self.table)?.entries);
        let copy = self
            .host_memory
            .charge(size_of(&entries), FIELDS)
            .map_err(over_budget)
            .and_then(|charge| {
                let copy = Fields {
                    entries: entries.clone(),
                    immutable,
                    charge,
                };
                Ok(self.table.push(copy)?)
            });
        at(&mut self.table)?.entries = entries;
        copy
    }
}

impl types::Host for AgentState {
    fn convert_error_code(&mut self, err: HttpError) -> W<ErrorCode> {
        err.downcast()
    }
    fn convert_header_error(&mut self, err: HeaderError) -> W<types::HeaderError> {
        err.downcast()
    }
    async fn http_error_code(&mut self, _: Resource<wasmtime::Error>) -> W<Option<ErrorCode>> {
        Ok(None)
    }
}

impl types::HostFields for AgentState {
    async fn new(&mut self) -> W<Resource<Fields>> {
        let f = self.new_fields(Vec::new(), false)?;
        Ok(self.table.push(f)?)
    }
    async fn from_list(
        &mut self,
        entries: Vec<(String, Vec<u8>)>,
    ) -> Result<Resource<Fields>, HeaderError> {
        let f = self.new_fields(entries, false).map_err(HeaderError::trap)?;
        self.table.push(f).map_err(HeaderError::trap)
    }
    async fn get(&mut self, f: Resource<Fields>, name: String) -> W<Vec<Vec<u8>>> {
        let f = self.fields(&f)?;
        Ok(f.named(&name).map(|(_, v)| v.clone()).collect())
    }
    async fn has(&mut self, f: Resource<Fields>, name: String) -> W<bool> {
        Ok(self.fields(&f)?.named(&name).next().is_some())
    }
    async fn set(
        &mut self,
        f: Resource<Fields>,
        name: String,
        values: Vec<Vec<u8>>,
    ) -> Result<(), HeaderError> {
        let f = self.fields(&f).map_err(HeaderError::trap)?;
        if f.immutable {
            return Err(immutable());
        }
        f.replace(&name, values).map_err(HeaderError::trap)
    }
    async fn delete(&mut self, f: Resource<Fields>, name: String) -> Result<(), HeaderError> {
        let f = self.fields(&f).map_err(HeaderError::trap)?;
        if f.immutable {
            return Err(immutable());
        }
        f.replace(&name, Vec::new()).map_err(HeaderError::trap)
    }
    async fn append(
        &mut self,
        f: Resource<Fields>,
        name: String,
        value: Vec<u8>,
    ) -> Result<(), HeaderError> {
        let f = self.fields(&f).map_err(HeaderError::trap)?;
        if f.immutable {
            return Err(immutable());
        }
        let entry = (name, value);
        let now = size_of(&f.entries) + entry_size(&entry);
        f.charge
            .resize(now, FIELDS)
            .map_err(|e| HeaderError::trap(over_budget(e)))?;
        f.entries.push(entry);
        Ok(())
    }
    async fn entries(&mut self, f: Resource<Fields>) -> W<Vec<(String, Vec<u8>)>> {
        Ok(self.fields(&f)?.entries.clone())
    }
    async fn clone(&mut self, f: Resource<Fields>) -> W<Resource<Fields>> {
        self.push_copy(|t| Ok(t.get_mut(&f)?), false)
    }
    async fn drop(&mut self, f: Resource<Fields>) -> W<()> {
        self.table.delete(f)?;
        Ok(())
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
            body_taken: false,
        };
        Ok(self.table.push(r)?)
    }
    async fn body(
        &mut self,
        r: Resource<OutgoingRequest>,
    ) -> W<Result<Resource<OutgoingBody>, ()>> {
        let req = self.table.get_mut(&r)?;
        if std::mem::replace(&mut req.body_taken, true) {
            return Ok(Err(()));
        }
        Ok(Ok(self.table.push(OutgoingBody)?))
    }
    async fn method(&mut self, r: Resource<OutgoingRequest>) -> W<Method> {
        Ok(self.table.get(&r)?.method.clone())
    }
    async fn set_method(&mut self, r: Resource<OutgoingRequest>, m: Method) -> W<Result<(), ()>> {
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
    async fn body(
        &mut self,
        r: Resource<OutgoingResponse>,
    ) -> W<Result<Resource<OutgoingBody>, ()>> {
        let resp = self.table.get_mut(&r)?;
        if std::mem::replace(&mut resp.body_taken, true) {
            return Ok(Err(()));
        }
        Ok(Ok(self.table.push(OutgoingBody)?))
    }
    async fn drop(&mut self, r: Resource<OutgoingResponse>) -> W<()> {
        self.table.delete(r)?;
        Ok(())
    }
}

impl types::HostOutgoingBody for AgentState {
    async fn write(
        &mut self,
        b: Resource<OutgoingBody>,
    ) -> W<Result<Resource<DynOutputStream>, ()>> {
        self.table.get(&b)?;
        let sink: DynOutputStream = Box::new(SinkOutputStream);
        Ok(Ok(self.table.push(sink)?))
    }
    async fn finish(
        &mut self,
        b: Resource<OutgoingBody>,
        trailers: Option<Resource<Fields>>,
    ) -> Result<(), HttpError> {
        self.table.delete(b).map_err(HttpError::trap)?;
        if let Some(t) = trailers {
            self.table.delete(t).map_err(HttpError::trap)?;
        }
        Ok(())
    }
    async fn drop(&mut self, b: Resource<OutgoingBody>) -> W<()> {
        self.table.delete(b)?;
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
    async fn consume(&mut self, r: Resource<NoHttp>) -> W<Result<Resource<NoHttp>, ()>> {
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

impl types::HostIncomingResponse for AgentState {
    async fn status(&mut self, r: Resource<NoHttp>) -> W<StatusCode> {
        none(r)
    }
    async fn headers(&mut self, r: Resource<NoHttp>) -> W<Resource<Fields>> {
        none(r)
    }
    async fn consume(&mut self, r: Resource<NoHttp>) -> W<Result<Resource<NoHttp>, ()>> {
        none(r)
    }
    async fn drop(&mut self, r: Resource<NoHttp>) -> W<()> {
        none(r)
    }
}

impl types::HostIncomingBody for AgentState {
    async fn stream(&mut self, r: Resource<NoHttp>) -> W<Result<Resource<DynInputStream>, ()>> {
        none(r)
    }
    async fn finish(&mut self, r: Resource<NoHttp>) -> W<Resource<NoHttp>> {
        none(r)
    }
    async fn drop(&mut self, r: Resource<NoHttp>) -> W<()> {
        none(r)
    }
}

impl types::HostFutureTrailers for AgentState {
    async fn subscribe(&mut self, r: Resource<NoHttp>) -> W<Resource<DynPollable>> {
        none(r)
    }
    async fn get(
        &mut self,
        r: Resource<NoHttp>,
    ) -> W<Option<Result<Result<Option<Resource<Fields>>, ErrorCode>, ()>>> {
        none(r)
    }
    async fn drop(&mut self, r: Resource<NoHttp>) -> W<()> {
        none(r)
    }
}

impl types::HostFutureIncomingResponse for AgentState {
    async fn subscribe(&mut self, r: Resource<NoHttp>) -> W<Resource<DynPollable>> {
        none(r)
    }
    async fn get(
        &mut self,
        r: Resource<NoHttp>,
    ) -> W<Option<Result<Result<Resource<NoHttp>, ErrorCode>, ()>>> {
        none(r)
    }
    async fn drop(&mut self, r: Resource<NoHttp>) -> W<()> {
        none(r)
    }
}

impl outgoing_handler::Host for AgentState {
    /// Every request is refused; the request and its options are consumed.
    async fn handle(
        &mut self,
        request: Resource<OutgoingRequest>,
        options: Option<Resource<RequestOptions>>,
    ) -> Result<Resource<NoHttp>, HttpError> {
        self.table.delete(request).map_err(HttpError::trap)?;
        if let Some(o) = options {
            self.table.delete(o).map_err(HttpError::trap)?;
        }
        Err(ErrorCode::HttpRequestDenied.into())
    }
}
