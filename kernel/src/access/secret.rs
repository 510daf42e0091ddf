//! Egress secrets: headers bound to a `host:` destination, kept in the
//! zone's replicated state (`ZoneCommand::SetSecret`), which the kernel
//! adds to that destination's requests. No agent can read them: they are
//! not files, no agent interface returns them, and `nexus secret list`
//! shows header names only.

use serde::{Deserialize, Serialize};

use crate::access::rebac::{Namespace, ObjectRef};
use crate::error::{KernelError, Result};

/// Headers one destination may carry at most.
pub const MAX_HEADERS: usize = 16;
/// Longest header name.
pub const MAX_NAME: usize = 256;
/// Longest header value.
pub const MAX_VALUE: usize = 8 * 1024;

/// One header a destination's requests carry.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretHeader {
    /// Lower case.
    pub name: String,
    pub value: String,
}

/// Never prints the value (logs, panics, `{:?}` of a command).
impl std::fmt::Debug for SecretHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: <{} bytes>", self.name, self.value.len())
    }
}

impl SecretHeader {
    /// Parses `Name: value` as `--header` takes it.
    pub fn parse(s: &str) -> Result<Self> {
        let (name, value) = s.split_once(':').ok_or_else(|| {
            KernelError::Invalid("a header is NAME: VALUE (e.g. 'Authorization: Bearer …')".into())
        })?;
        let h = SecretHeader {
            name: name.trim().to_ascii_lowercase(),
            value: value.trim().to_owned(),
        };
        h.validate()?;
        Ok(h)
    }

    fn validate(&self) -> Result<()> {
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if self.name.is_empty() || self.name.len() > MAX_NAME || !self.name.bytes().all(token) {
            return Err(KernelError::Invalid(format!(
                "header name {:?}: letters, digits and !#$%&'*+-.^_`|~, at most {MAX_NAME}",
                self.name
            )));
        }
        if self.name.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(KernelError::Invalid(
                "header names are kept in lower case".into(),
            ));
        }
        // Hop-by-hop and framing headers are the connection's, not a
        // credential's.
        if matches!(
            self.name.as_str(),
            "host" | "connection" | "content-length" | "transfer-encoding" | "upgrade" | "te"
        ) {
            return Err(KernelError::Invalid(format!(
                "header {:?} cannot be a secret",
                self.name
            )));
        }
        if self.value.is_empty()
            || self.value.len() > MAX_VALUE
            || self.value.bytes().any(|b| b.is_ascii_control())
        {
            return Err(KernelError::Invalid(format!(
                "the value of header {:?} must be 1 to {MAX_VALUE} bytes, no control characters",
                self.name
            )));
        }
        Ok(())
    }
}

/// Checks a `SetSecret` (wherever it is proposed or applied): a `host:`
/// object, a bounded number of valid, distinct headers.
pub fn validate(destination: &ObjectRef, headers: &[SecretHeader]) -> Result<()> {
    if destination.ns != Namespace::Host {
        return Err(KernelError::Invalid(format!(
            "{destination} is not a destination (host:…)"
        )));
    }
    if headers.len() > MAX_HEADERS {
        return Err(KernelError::Invalid(format!(
            "at most {MAX_HEADERS} secret headers per destination"
        )));
    }
    for (i, h) in headers.iter().enumerate() {
        h.validate()?;
        if headers[..i].iter().any(|o| o.name == h.name) {
            return Err(KernelError::Invalid(format!(
                "header {:?} given twice",
                h.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_and_hide() {
        let h = SecretHeader::parse("Authorization:  Bearer sk-123 ").unwrap();
        assert_eq!(
            (h.name.as_str(), h.value.as_str()),
            ("authorization", "Bearer sk-123")
        );
        assert!(!format!("{h:?}").contains("sk-123"));
        for bad in ["nocolon", ": v", "a b: v", "x:", "host: h", "x: a\nb"] {
            assert!(SecretHeader::parse(bad).is_err(), "{bad:?}");
        }
        let host = ObjectRef::parse("host:api.example.com").unwrap();
        assert!(validate(&host, &[h.clone(), h.clone()]).is_err());
        assert!(validate(&ObjectRef::parse("zone:z").unwrap(), &[h]).is_err());
    }
}
