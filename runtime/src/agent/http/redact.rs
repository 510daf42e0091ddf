//! Secret values never reach the agent: a destination that echoes a
//! request's headers back (in a response header or its body) has every
//! occurrence of a secret replaced before the agent sees it. A server
//! that transforms a secret (encodes, splits, hashes it) defeats this;
//! the kernel can only stop the bytes it knows.

use bytes::{Bytes, BytesMut};

use nexus_kernel::SecretHeader;

/// What a secret's occurrence becomes.
pub const MASK: &[u8] = b"[secret]";

/// Shortest part of a value searched for on its own (the credential after
/// a scheme such as `Bearer `).
const MIN_PART: usize = 8;

/// Finds and masks the secret values of one response.
#[derive(Debug, Default)]
pub struct Redactor {
    needles: Vec<Vec<u8>>,
    /// Bytes held back: they may begin a secret the next chunk finishes.
    carry: BytesMut,
}

impl Redactor {
    pub fn new(secrets: &[SecretHeader]) -> Self {
        let mut needles: Vec<Vec<u8>> = Vec::new();
        for s in secrets {
            needles.push(s.value.as_bytes().to_vec());
            if let Some((_, credential)) = s.value.split_once(' ') {
                if credential.len() >= MIN_PART {
                    needles.push(credential.as_bytes().to_vec());
                }
            }
        }
        // Longest first, so a value is masked whole before its part.
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        needles.dedup();
        Redactor {
            needles,
            carry: BytesMut::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// Masks a whole value (a header, an audit line).
    pub fn mask(&self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match self.needles.iter().find(|n| bytes[i..].starts_with(n)) {
                Some(n) => {
                    out.extend_from_slice(MASK);
                    i += n.len();
                }
                None => {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
        }
        out
    }

    pub fn mask_str(&self, s: &str) -> String {
        if self.is_empty() {
            return s.to_owned();
        }
        String::from_utf8_lossy(&self.mask(s.as_bytes())).into_owned()
    }

    /// Masks the next chunk of a stream; the last `longest - 1` bytes wait
    /// for the next chunk (or `finish`).
    pub fn feed(&mut self, chunk: Bytes) -> Bytes {
        if self.is_empty() {
            return chunk;
        }
        self.carry.extend_from_slice(&chunk);
        let hold = self.needles[0].len() - 1;
        let mut out = Vec::new();
        let mut i = 0;
        let data = &self.carry[..];
        while i + hold < data.len() {
            match self.needles.iter().find(|n| data[i..].starts_with(n)) {
                Some(n) => {
                    out.extend_from_slice(MASK);
                    i += n.len();
                }
                None => {
                    out.push(data[i]);
                    i += 1;
                }
            }
        }
        let _ = self.carry.split_to(i.min(self.carry.len()));
        Bytes::from(out)
    }

    /// What is still held back, masked: the stream has ended.
    pub fn finish(&mut self) -> Bytes {
        let rest = self.carry.split();
        Bytes::from(self.mask(&rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(v: &str) -> SecretHeader {
        SecretHeader::parse(&format!("authorization: {v}")).unwrap()
    }

    #[test]
    fn secrets_split_across_chunks_are_masked() {
        let text = b"echo: Bearer sk-live-0123456789 and again sk-live-0123456789!";
        for cut in 0..text.len() {
            let mut r = Redactor::new(&[secret("Bearer sk-live-0123456789")]);
            let mut out = Vec::new();
            out.extend_from_slice(&r.feed(Bytes::copy_from_slice(&text[..cut])));
            out.extend_from_slice(&r.feed(Bytes::copy_from_slice(&text[cut..])));
            out.extend_from_slice(&r.finish());
            assert_eq!(
                String::from_utf8(out).unwrap(),
                "echo: [secret] and again [secret]!",
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn no_secret_passes_everything() {
        let mut r = Redactor::new(&[]);
        assert_eq!(r.feed(Bytes::from_static(b"abc")), "abc");
        assert!(r.finish().is_empty());
        assert_eq!(r.mask_str("x"), "x");
    }
}
