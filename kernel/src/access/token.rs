//! Signed tokens for external clients (the CLI talking to a node, native
//! agents): ed25519 over (principal, zone, capabilities, expiry, unique id).
//!
//! The node's signing key is created on first start in the data directory,
//! mode 0600, and never leaves the node. Verification is the hot path:
//! a verified token is cached (by a hash of its exact bytes) until it
//! expires; expiry and revocation are still checked on every use.
//!
//! Wire form: `nxt1.<base64url(payload)>.<base64url(signature)>`, where the
//! payload is postcard of (key id, claims) and the signature covers it.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Mutex;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::access::identity::{Capabilities, Principal};
use crate::error::{KernelError, Result};
use crate::types::ZoneId;

const PREFIX: &str = "nxt1";
/// Verified tokens remembered at most.
const CACHE_MAX: usize = 100_000;

/// What a token asserts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Unique id (128 random bits, hex), the handle for revocation.
    pub id: String,
    pub principal: Principal,
    pub zone: ZoneId,
    pub caps: Capabilities,
    /// Unix seconds.
    pub issued: i64,
    pub expires: i64,
}

#[derive(Serialize, Deserialize)]
struct Payload {
    kid: [u8; 8],
    claims: Claims,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token was signed by another node's key")]
    WrongKey,
    #[error("token signature does not match its contents (tampered)")]
    Tampered,
    #[error("token expired {0} s ago")]
    Expired(i64),
    #[error("token {0} has been revoked")]
    Revoked(String),
}

impl From<TokenError> for KernelError {
    fn from(e: TokenError) -> Self {
        KernelError::Access(e.to_string())
    }
}

/// A token id: 32 hex digits.
pub fn check_id(id: &str) -> Result<()> {
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(KernelError::Invalid(format!(
            "token id {id:?}: 32 hex digits"
        )));
    }
    Ok(())
}

fn key_id(key: &VerifyingKey) -> [u8; 8] {
    let h = blake3::hash(key.as_bytes());
    h.as_bytes()[..8].try_into().expect("8 bytes")
}

fn unix_now() -> i64 {
    crate::types::now() / 1_000_000_000
}

/// A node's token authority: its key, the verified-token cache and the
/// revocation list (kept in the node's sled tree `revoked`).
pub struct TokenAuthority {
    signing: SigningKey,
    verifying: VerifyingKey,
    kid: [u8; 8],
    revoked_tree: sled::Tree,
    revoked: Mutex<HashSet<String>>,
    cache: Mutex<HashMap<[u8; 32], Claims>>,
}

/// Loads the key at `path`, or creates it (mode 0600) if there is none.
/// Refuses a key file that others can read.
fn load_or_create_key(path: &Path) -> Result<SigningKey> {
    let io = |e: std::io::Error| KernelError::Storage(format!("node key {}: {e}", path.display()));
    match std::fs::read(path) {
        Ok(bytes) => {
            let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(KernelError::Access(format!(
                    "node key {} is readable by others (mode {:o}); run chmod 600 on it",
                    path.display(),
                    mode & 0o777
                )));
            }
            let raw: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                KernelError::Corrupt(format!("node key {} is not 32 bytes", path.display()))
            })?;
            Ok(SigningKey::from_bytes(&raw))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SigningKey::generate(&mut rand::rngs::OsRng);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io)?;
            f.write_all(key.as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
            Ok(key)
        }
        Err(e) => Err(io(e)),
    }
}

impl TokenAuthority {
    pub fn open(key_path: &Path, revoked_tree: sled::Tree) -> Result<Self> {
        let signing = load_or_create_key(key_path)?;
        let verifying = signing.verifying_key();
        let revoked = revoked_tree
            .iter()
            .keys()
            .map(|k| Ok(String::from_utf8_lossy(&k?).into_owned()))
            .collect::<Result<HashSet<_>>>()?;
        Ok(TokenAuthority {
            kid: key_id(&verifying),
            signing,
            verifying,
            revoked_tree,
            revoked: Mutex::new(revoked),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Signs a token valid for `ttl_secs` from now.
    pub fn issue(
        &self,
        principal: Principal,
        zone: ZoneId,
        caps: Capabilities,
        ttl_secs: i64,
    ) -> Result<(String, Claims)> {
        if ttl_secs <= 0 {
            return Err(KernelError::Invalid(
                "token lifetime must be positive".into(),
            ));
        }
        let now = unix_now();
        let claims = Claims {
            id: format!("{:032x}", rand::random::<u128>()),
            principal,
            zone,
            caps,
            issued: now,
            expires: now.saturating_add(ttl_secs),
        };
        let payload = postcard::to_allocvec(&Payload {
            kid: self.kid,
            claims: claims.clone(),
        })?;
        let sig = self.signing.sign(&payload);
        let token = format!(
            "{PREFIX}.{}.{}",
            B64.encode(&payload),
            B64.encode(sig.to_bytes())
        );
        Ok((token, claims))
    }

    /// Verifies a token: our key, intact, unexpired, unrevoked.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let digest = *blake3::hash(token.as_bytes()).as_bytes();
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&digest)
            .cloned();
        let claims = match cached {
            Some(c) => c,
            None => {
                let c = self.verify_signature(token)?;
                let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                if cache.len() >= CACHE_MAX {
                    let now = unix_now();
                    cache.retain(|_, c| c.expires > now);
                    if cache.len() >= CACHE_MAX {
                        cache.clear();
                    }
                }
                cache.insert(digest, c.clone());
                c
            }
        };
        let now = unix_now();
        if claims.expires <= now {
            return Err(TokenError::Expired(now - claims.expires));
        }
        if self
            .revoked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&claims.id)
        {
            return Err(TokenError::Revoked(claims.id));
        }
        Ok(claims)
    }

    /// The uncached part of [`verify`]: decoding and the signature.
    pub fn verify_signature(&self, token: &str) -> Result<Claims, TokenError> {
        let malformed = |why: &str| TokenError::Malformed(why.to_owned());
        let mut parts = token.trim().split('.');
        if parts.next() != Some(PREFIX) {
            return Err(malformed("it does not start with nxt1."));
        }
        let payload = parts
            .next()
            .and_then(|p| B64.decode(p).ok())
            .ok_or_else(|| malformed("bad payload encoding"))?;
        let sig = parts
            .next()
            .and_then(|p| B64.decode(p).ok())
            .and_then(|s| <[u8; 64]>::try_from(s.as_slice()).ok())
            .map(|s| Signature::from_bytes(&s))
            .ok_or_else(|| malformed("bad signature encoding"))?;
        if parts.next().is_some() {
            return Err(malformed("trailing data"));
        }
        let decoded: Payload =
            postcard::from_bytes(&payload).map_err(|_| malformed("bad payload"))?;
        if decoded.kid != self.kid {
            return Err(TokenError::WrongKey);
        }
        self.verifying
            .verify(&payload, &sig)
            .map_err(|_| TokenError::Tampered)?;
        Ok(decoded.claims)
    }

    /// Revokes a token by id, durably; takes effect for the next use.
    pub fn revoke(&self, id: &str) -> Result<()> {
        check_id(id)?;
        self.revoked_tree.insert(id.as_bytes(), &[])?;
        self.revoked_tree.flush()?;
        self.revoked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authority(dir: &Path, name: &str) -> TokenAuthority {
        let db = sled::Config::new().temporary(true).open().unwrap();
        TokenAuthority::open(&dir.join(name), db.open_tree("revoked").unwrap()).unwrap()
    }

    fn issue(a: &TokenAuthority, ttl: i64) -> (String, Claims) {
        a.issue(
            Principal::parse("agent:bot").unwrap(),
            ZoneId::new("z1").unwrap(),
            Capabilities::ALL,
            ttl,
        )
        .unwrap()
    }

    #[test]
    fn the_key_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let a = authority(dir.path(), "node.key");
        let mode = std::fs::metadata(dir.path().join("node.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (t, _) = issue(&a, 60);
        let again = authority(dir.path(), "node.key");
        assert!(
            again.verify(&t).is_ok(),
            "a restarted node accepts its tokens"
        );
        std::fs::set_permissions(
            dir.path().join("node.key"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let db = sled::Config::new().temporary(true).open().unwrap();
        assert!(
            TokenAuthority::open(&dir.path().join("node.key"), db.open_tree("r").unwrap()).is_err()
        );
    }

    #[test]
    fn every_refusal_has_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let a = authority(dir.path(), "a.key");
        let other = authority(dir.path(), "b.key");
        let (t, claims) = issue(&a, 60);
        assert_eq!(a.verify(&t).unwrap(), claims);
        assert_eq!(a.verify(&t).unwrap(), claims, "cached path");

        assert_eq!(other.verify(&t), Err(TokenError::WrongKey));

        // Flip one byte of the payload: same key id, broken signature.
        let mut parts: Vec<String> = t.split('.').map(String::from).collect();
        let mut payload = B64.decode(&parts[1]).unwrap();
        let last = payload.len() - 1;
        payload[last] ^= 1;
        parts[1] = B64.encode(payload);
        assert_eq!(a.verify(&parts.join(".")), Err(TokenError::Tampered));

        assert!(matches!(a.verify("nxt1.zz"), Err(TokenError::Malformed(_))));
        assert!(matches!(a.verify("hello"), Err(TokenError::Malformed(_))));

        let (expired, _) = issue(&a, 1);
        let mut c = a.verify_signature(&expired).unwrap();
        c.expires = unix_now() - 5;
        // A token whose expiry passed is refused even if it was cached.
        a.cache
            .lock()
            .unwrap()
            .insert(*blake3::hash(expired.as_bytes()).as_bytes(), c);
        assert!(matches!(a.verify(&expired), Err(TokenError::Expired(_))));

        a.revoke(&claims.id).unwrap();
        assert_eq!(a.verify(&t), Err(TokenError::Revoked(claims.id.clone())));
        assert!(a.revoke("not-an-id").is_err());
        assert!(a
            .issue(
                claims.principal.clone(),
                claims.zone.clone(),
                Capabilities::ALL,
                0
            )
            .is_err());
    }
}
