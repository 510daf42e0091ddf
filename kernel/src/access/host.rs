//! Egress destinations: the `host:` objects of a zone's ReBAC namespace.
//!
//! A destination is a scheme, a host and a port. Its object id is written
//! the way a user would: `api.example.com` (HTTPS, port 443),
//! `api.example.com:8443`, `http://api.example.com` (plain HTTP, port 80),
//! `http://127.0.0.1:8080`, `[::1]:8443`; a name may be a wildcard,
//! `*.example.com` (every name under `example.com`, not `example.com`
//! itself) or `*` (every name). Every spelling of one destination parses to
//! the same canonical id, so a grant and a check always meet.
//!
//! Wildcards are ReBAC parents: `host:a.b.example.com` inherits `fetch`
//! from `host:*.b.example.com`, which inherits from `host:*.example.com`,
//! then `host:*.com`, then `host:*` (same scheme and port throughout). An
//! address literal has no parent: an address is reached only when a grant
//! names it.

use std::net::{IpAddr, Ipv6Addr};

use crate::access::rebac::{Namespace, ObjectRef};
use crate::error::{KernelError, Result};

/// Longest host name DNS allows.
const MAX_NAME: usize = 253;
const MAX_LABEL: usize = 63;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// Where a destination is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name, lower case, without a trailing dot.
    Name(String),
    /// Every name under this suffix (`*.suffix`); the empty suffix is `*`.
    Wildcard(String),
    /// An address literal.
    Ip(IpAddr),
}

/// A scheme, host and port: what a grant names and a request goes to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    pub scheme: Scheme,
    pub host: Host,
    pub port: u16,
}

fn bad(spec: &str, why: &str) -> KernelError {
    KernelError::Invalid(format!(
        "destination {spec:?}: {why} (use e.g. api.example.com, *.example.com, \
         http://10.0.0.5:8080 or [::1]:8443)"
    ))
}

/// Checks a DNS name (already lower case) label by label.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_LABEL
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl Destination {
    /// Parses `[scheme://]host[:port]` as written in a grant, a secret or
    /// `nexus check`. A wildcard is allowed here; a request's destination
    /// comes from [`Destination::of_request`].
    pub fn parse(spec: &str) -> Result<Self> {
        let (scheme, rest) = match spec.split_once("://") {
            Some(("https", rest)) => (Scheme::Https, rest),
            Some(("http", rest)) => (Scheme::Http, rest),
            Some((other, _)) => return Err(bad(spec, &format!("scheme {other:?} is not http(s)"))),
            None => (Scheme::Https, spec),
        };
        let (host, port) = split_port(spec, rest)?;
        let host = if let Some(suffix) = host.strip_prefix("*.") {
            let suffix = normal_name(spec, suffix)?;
            Host::Wildcard(suffix)
        } else if host == "*" {
            Host::Wildcard(String::new())
        } else {
            parse_host(spec, host)?
        };
        Ok(Destination {
            scheme,
            port: port.unwrap_or(scheme.default_port()),
            host,
        })
    }

    /// The destination of a request: its scheme, and its authority
    /// (`host[:port]`, no wildcard, no user info).
    pub fn of_request(scheme: Scheme, authority: &str) -> Result<Self> {
        if authority.contains('@') {
            return Err(bad(authority, "user information is not allowed"));
        }
        let (host, port) = split_port(authority, authority)?;
        Ok(Destination {
            scheme,
            host: parse_host(authority, host)?,
            port: port.unwrap_or(scheme.default_port()),
        })
    }

    /// The canonical object id (see the module's documentation).
    pub fn id(&self) -> String {
        let host = match &self.host {
            Host::Name(n) => n.clone(),
            Host::Wildcard(s) if s.is_empty() => "*".to_owned(),
            Host::Wildcard(s) => format!("*.{s}"),
            Host::Ip(IpAddr::V4(a)) => a.to_string(),
            Host::Ip(IpAddr::V6(a)) => format!("[{a}]"),
        };
        let scheme = match self.scheme {
            Scheme::Https => "",
            Scheme::Http => "http://",
        };
        if self.port == self.scheme.default_port() {
            format!("{scheme}{host}")
        } else {
            format!("{scheme}{host}:{}", self.port)
        }
    }

    pub fn object(&self) -> ObjectRef {
        ObjectRef {
            ns: Namespace::Host,
            id: self.id(),
        }
    }

    /// The name a connection asks for (TLS server name, `Host` header):
    /// the name, or the address without brackets.
    pub fn host_name(&self) -> String {
        match &self.host {
            Host::Name(n) => n.clone(),
            Host::Ip(a) => a.to_string(),
            Host::Wildcard(s) => format!("*.{s}"),
        }
    }

    /// The wildcard this destination inherits `fetch` from, if any.
    pub fn wildcard_parent(&self) -> Option<Destination> {
        let suffix = match &self.host {
            Host::Ip(_) => return None,
            Host::Name(n) => n.split_once('.').map_or("", |(_, rest)| rest),
            Host::Wildcard(s) if s.is_empty() => return None,
            Host::Wildcard(s) => s.split_once('.').map_or("", |(_, rest)| rest),
        };
        Some(Destination {
            host: Host::Wildcard(suffix.to_owned()),
            ..self.clone()
        })
    }
}

/// `host:ID` objects are parsed here, so every spelling is one object.
pub(crate) fn object_id(id: &str) -> Result<String> {
    Ok(Destination::parse(id)?.id())
}

/// The parent of a `host:` object (`None` for any other object).
pub(crate) fn parent_object(object: &ObjectRef) -> Option<ObjectRef> {
    if object.ns != Namespace::Host {
        return None;
    }
    Some(
        Destination::parse(&object.id)
            .ok()?
            .wildcard_parent()?
            .object(),
    )
}

/// Splits `host[:port]` (a bracketed IPv6 address keeps its colons).
fn split_port<'a>(spec: &str, s: &'a str) -> Result<(&'a str, Option<u16>)> {
    if s.contains('/') || s.contains('?') || s.contains('#') {
        return Err(bad(spec, "a destination has no path"));
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (addr, after) = rest
            .split_once(']')
            .ok_or_else(|| bad(spec, "unclosed '['"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| bad(spec, "junk after ']'"))?,
            ),
        };
        (&s[..addr.len() + 2], port)
    } else {
        match s.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                return Err(bad(spec, "write an IPv6 address in brackets"))
            }
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && !p.starts_with('+') => Some(n),
            _ => return Err(bad(spec, "the port is not a number from 1 to 65535")),
        },
    };
    Ok((host, port))
}

fn normal_name(spec: &str, name: &str) -> Result<String> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if !name.is_ascii() {
        return Err(bad(spec, "write an international name in its xn-- form"));
    }
    if !valid_name(&name) {
        return Err(bad(spec, "not a host name"));
    }
    Ok(name)
}

fn parse_host(spec: &str, host: &str) -> Result<Host> {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner
            .parse::<Ipv6Addr>()
            .map(|a| Host::Ip(IpAddr::V6(a)))
            .map_err(|_| bad(spec, "not an IPv6 address"));
    }
    if let Ok(a) = host.parse::<IpAddr>() {
        return Ok(Host::Ip(a));
    }
    let name = normal_name(spec, host)?;
    // A name whose last label is numeric would be read as an address by
    // some resolvers (`127.1`, `0x7f.1`): refuse it rather than guess.
    if name
        .rsplit('.')
        .next()
        .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()) || last.starts_with("0x"))
    {
        return Err(bad(spec, "not a host name or a canonical address"));
    }
    Ok(Host::Name(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> String {
        Destination::parse(s).unwrap().id()
    }

    #[test]
    fn spellings_meet_in_one_id() {
        assert_eq!(id("API.Example.com."), "api.example.com");
        assert_eq!(id("https://api.example.com:443"), "api.example.com");
        assert_eq!(id("api.example.com:8443"), "api.example.com:8443");
        assert_eq!(id("http://api.example.com:80"), "http://api.example.com");
        assert_eq!(id("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(id("[::1]:8443"), "[::1]:8443");
        assert_eq!(id("[0:0::1]"), "[::1]");
        assert_eq!(id("*.Example.com"), "*.example.com");
        assert_eq!(id("*"), "*");
        assert_eq!(id("http://*:8080"), "http://*:8080");
    }

    #[test]
    fn nonsense_is_refused() {
        for s in [
            "",
            "ftp://x.com",
            "x.com/path",
            "x.com:0",
            "x.com:70000",
            "x.com:+80",
            "-x.com",
            "a..b",
            "*.",
            "a.*.com",
            "ex ample.com",
            "exämple.com",
            "127.1",
            "0x7f.1",
            "[::1",
            "[::1]x",
            "[nope]",
            "::1",
            &"a".repeat(64),
        ] {
            assert!(Destination::parse(s).is_err(), "{s:?}");
        }
        assert!(Destination::of_request(Scheme::Https, "user@x.com").is_err());
        assert!(Destination::of_request(Scheme::Https, "*.x.com").is_err());
    }

    #[test]
    fn wildcards_are_parents() {
        let mut d = Destination::parse("http://a.b.example.com:8080").unwrap();
        let mut chain = vec![];
        while let Some(p) = d.wildcard_parent() {
            chain.push(p.id());
            d = p;
        }
        assert_eq!(
            chain,
            [
                "http://*.b.example.com:8080",
                "http://*.example.com:8080",
                "http://*.com:8080",
                "http://*:8080"
            ]
        );
        assert!(Destination::parse("10.0.0.1")
            .unwrap()
            .wildcard_parent()
            .is_none());
    }
}
