//! HTTP requests through the kernel (`wasi:http`). A request leaves only
//! for a destination the agent's principal was granted, e.g.
//! `nexus grant --zone z1 agent:bot fetch host:api.example.com`; the node
//! resolves the name, refuses private addresses reached by name, adds the
//! destination's secrets (which the agent never sees) and bounds every
//! request.
//!
//! ```no_run
//! let r = nexus_guest::http::get("https://api.example.com/v1/models")?;
//! println!("{} {}", r.status, r.text());
//! # Ok::<(), nexus_guest::http::Error>(())
//! ```

use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    self, ErrorCode, Fields, IncomingBody, OutgoingBody, OutgoingRequest, Scheme,
};
use crate::bindings::wasi::io::streams::StreamError;

/// An HTTP method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
}

/// Why a request failed.
#[derive(Debug)]
pub enum Error {
    /// The URL is not `http(s)://host[:port][/path]`.
    Url(String),
    /// The kernel refused the request: no grant for its destination. The
    /// agent's stderr says which grant would allow it.
    Denied,
    /// The request failed (a limit, the network, the destination).
    Http(ErrorCode),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Url(why) => write!(f, "bad URL: {why}"),
            Error::Denied => write!(f, "request denied by the kernel (no grant)"),
            Error::Http(code) => write!(f, "HTTP request failed: {code:?}"),
        }
    }
}

impl std::error::Error for Error {}

fn failed(code: ErrorCode) -> Error {
    match code {
        ErrorCode::HttpRequestDenied => Error::Denied,
        other => Error::Http(other),
    }
}

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A request to build and send.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

/// `GET url`.
pub fn get(url: &str) -> Result<Response, Error> {
    Request::new(Method::Get, url).send()
}

/// `POST url` with `body`.
pub fn post(url: &str, body: impl Into<Vec<u8>>) -> Result<Response, Error> {
    Request::new(Method::Post, url).body(body).send()
}

/// `http(s)://authority/path?query` split into its parts.
fn split(url: &str) -> Result<(Scheme, &str, &str), Error> {
    let (scheme, rest) = if let Some(r) = url.strip_prefix("https://") {
        (Scheme::Https, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (Scheme::Http, r)
    } else {
        return Err(Error::Url(format!("{url:?} is not http:// or https://")));
    };
    let cut = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(cut);
    if authority.is_empty() {
        return Err(Error::Url(format!("{url:?} names no host")));
    }
    Ok((scheme, authority, if path.is_empty() { "/" } else { path }))
}

impl Request {
    pub fn new(method: Method, url: &str) -> Self {
        Request {
            method,
            url: url.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sends the request and reads the whole response.
    pub fn send(self) -> Result<Response, Error> {
        self.start()?.wait()
    }

    /// Sends the request; [`Pending::wait`] reads its response. Several
    /// requests may be in flight at once (the run's limit says how many).
    pub fn start(self) -> Result<Pending, Error> {
        let (scheme, authority, path) = split(&self.url)?;
        let fields = Fields::from_list(&self.headers)
            .map_err(|e| Error::Url(format!("bad header: {e:?}")))?;
        let req = OutgoingRequest::new(fields);
        let method = match self.method {
            Method::Get => types::Method::Get,
            Method::Head => types::Method::Head,
            Method::Post => types::Method::Post,
            Method::Put => types::Method::Put,
            Method::Patch => types::Method::Patch,
            Method::Delete => types::Method::Delete,
            Method::Options => types::Method::Options,
        };
        let bad = |what: &str| Error::Url(format!("{what} of {:?}", self.url));
        req.set_method(&method).map_err(|()| bad("method"))?;
        req.set_scheme(Some(&scheme)).map_err(|()| bad("scheme"))?;
        req.set_authority(Some(authority))
            .map_err(|()| bad("authority"))?;
        req.set_path_with_query(Some(path))
            .map_err(|()| bad("path"))?;
        let body = req.body().map_err(|()| bad("body"))?;
        {
            let out = body.write().map_err(|()| bad("body"))?;
            for chunk in self.body.chunks(4096) {
                out.blocking_write_and_flush(chunk).map_err(stream_error)?;
            }
        }
        OutgoingBody::finish(body, None).map_err(failed)?;
        let future = outgoing_handler::handle(req, None).map_err(failed)?;
        Ok(Pending { future })
    }
}

/// A request sent, its response not yet read.
pub struct Pending {
    future: types::FutureIncomingResponse,
}

impl Pending {
    /// Waits for the response and reads it whole.
    pub fn wait(self) -> Result<Response, Error> {
        let future = self.future;
        let bad = |what: &str| Error::Http(ErrorCode::InternalError(Some(what.to_owned())));
        let response = loop {
            match future.get() {
                Some(Ok(r)) => break r.map_err(failed)?,
                Some(Err(())) => return Err(Error::Http(ErrorCode::InternalError(None))),
                None => future.subscribe().block(),
            }
        };
        let status = response.status();
        let headers = response.headers().entries();
        let incoming = response
            .consume()
            .map_err(|()| bad("response body taken"))?;
        let mut body = Vec::new();
        {
            let stream = incoming
                .stream()
                .map_err(|()| bad("response stream taken"))?;
            loop {
                match stream.blocking_read(64 * 1024) {
                    Ok(bytes) => body.extend_from_slice(&bytes),
                    Err(StreamError::Closed) => break,
                    Err(e) => return Err(stream_error(e)),
                }
            }
        }
        drop(IncomingBody::finish(incoming));
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// The HTTP error behind a body stream's error.
fn stream_error(e: StreamError) -> Error {
    match e {
        StreamError::Closed => Error::Http(ErrorCode::HttpResponseIncomplete),
        StreamError::LastOperationFailed(err) => Error::Http(
            types::http_error_code(&err)
                .unwrap_or_else(|| ErrorCode::InternalError(Some(err.to_debug_string()))),
        ),
    }
}
