//! Signed tokens for external clients (the CLI talking to a node, native
//! agents): ed25519 over (principal, zone, reach, capabilities, expiry,
//! unique id), signed by an issuer's key and verified against the public
//! keys a node trusts (`keys`): verify everywhere, sign in one place.
//!
//! The embedded default signs with the data directory's own issuer key
//! (created on first start, mode 0600): the operator's machine is the
//! node. A cluster node (`nexus node start`) holds no signing key; it
//! verifies with the public keys in its `issuers` file. Every token names
//! the key that signed it (its key id); a retired key's tokens are
//! refused; no token lives longer than [`MAX_TTL`].
//!
//! Verification is the hot path: a verified token is cached (by a hash of
//! its exact bytes) until it expires; expiry, the key's standing and
//! revocation are still checked on every use.
//!
//! Wire form: `nxt1.<base64url(payload)>.<base64url(signature)>`, where the
//! payload is postcard of (key id, claims) and the signature covers it.

pub mod keys;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier};
use serde::{Deserialize, Serialize};

use crate::access::identity::{Capabilities, Principal};
use crate::error::{KernelError, Result};
use crate::types::ZoneId;
use keys::{key_id, kid_hex, KeyId, Keyring, Standing};

const PREFIX: &str = "nxt2";
/// Verified tokens remembered at most.
const CACHE_MAX: usize = 100_000;
/// No token lives longer (issued or verified): 30 days.
pub const MAX_TTL: i64 = 30 * 24 * 3600;

/// What a token asserts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Unique id (128 random bits, hex), the handle for revocation.
    pub id: String,
    pub principal: Principal,
    /// The zone its holder acts in.
    pub zone: ZoneId,
    /// Other zones its holder may enter through mounts (still only with
    /// `enter` there); a mount to any zone not named is refused.
    pub reach: Vec<ZoneId>,
    pub caps: Capabilities,
    /// Unix seconds.
    pub issued: i64,
    pub expires: i64,
}

#[derive(Serialize, Deserialize)]
struct Payload {
    kid: KeyId,
    claims: Claims,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token was signed by key {0}, which this node does not trust")]
    UnknownKey(String),
    #[error("token was signed by key {0}, which has been retired")]
    RetiredKey(String),
    #[error("token signature does not match its contents (tampered)")]
    Tampered,
    #[error("token lives longer than the maximum of {MAX_TTL} s")]
    TooLong,
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

fn unix_now() -> i64 {
    crate::types::now() / 1_000_000_000
}

/// A node's token authority: the keys it trusts (and, on the embedded
/// default, the key it signs with), the verified-token cache and the
/// revocation list (kept in the node's sled tree `revoked`).
pub struct TokenAuthority {
    signer: Option<(SigningKey, KeyId)>,
    keyring: RwLock<Keyring>,
    keyring_path: PathBuf,
    revoked_tree: sled::Tree,
    revoked: Mutex<HashSet<String>>,
    cache: Mutex<HashMap<[u8; 32], (KeyId, Claims)>>,
}

impl TokenAuthority {
    /// Opens the authority of data directory `home`. With `signs`, its
    /// issuer key is loaded or created and trusted; without (a cluster
    /// node), a signing key in `home` is refused: nodes hold public keys
    /// only.
    pub fn open(home: &Path, revoked_tree: sled::Tree, signs: bool) -> Result<Self> {
        let key_path = home.join(keys::SIGNING_KEY);
        let keyring_path = home.join(keys::TRUSTED);
        let mut keyring = Keyring::load(&keyring_path)?;
        let signer = if signs {
            let key = keys::load_or_create(&key_path)?;
            keyring.set(key.verifying_key(), Standing::Trusted);
            let kid = key_id(&key.verifying_key());
            Some((key, kid))
        } else {
            if key_path.exists() {
                return Err(KernelError::Access(format!(
                    "{} is a token signing key: a node holds issuers' public keys only \
                     (keep the key on the operator's machine; trust its public key with \
                     `nexus issuer trust`)",
                    key_path.display()
                )));
            }
            None
        };
        let revoked = revoked_tree
            .iter()
            .keys()
            .map(|k| Ok(String::from_utf8_lossy(&k?).into_owned()))
            .collect::<Result<HashSet<_>>>()?;
        Ok(TokenAuthority {
            signer,
            keyring: RwLock::new(keyring),
            keyring_path,
            revoked_tree,
            revoked: Mutex::new(revoked),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Re-reads the trusted keys (`issuers`); on an error the keys in use stay.
    pub fn reload_keys(&self) -> Result<()> {
        let mut ring = Keyring::load(&self.keyring_path)?;
        if let Some((key, _)) = &self.signer {
            ring.set(key.verifying_key(), Standing::Trusted);
        }
        *self.keyring.write().unwrap_or_else(|p| p.into_inner()) = ring;
        Ok(())
    }

    /// Signs a token valid for `ttl_secs` from now (at most [`MAX_TTL`]).
    pub fn issue(
        &self,
        principal: Principal,
        zone: ZoneId,
        reach: Vec<ZoneId>,
        caps: Capabilities,
        ttl_secs: i64,
    ) -> Result<(String, Claims)> {
        let Some((signing, kid)) = &self.signer else {
            return Err(KernelError::Access(
                "this node holds no signing key: tokens are signed on the operator's \
                 machine (`nexus token issue` there)"
                    .into(),
            ));
        };
        if ttl_secs <= 0 || ttl_secs > MAX_TTL {
            return Err(KernelError::Invalid(format!(
                "a token lives more than 0 and at most {MAX_TTL} s (30 days)"
            )));
        }
        if self.standing(kid) != Some(Standing::Trusted) {
            return Err(TokenError::RetiredKey(kid_hex(kid)).into());
        }
        let now = unix_now();
        let claims = Claims {
            id: format!("{:032x}", rand::random::<u128>()),
            principal,
            zone,
            reach,
            caps,
            issued: now,
            expires: now.saturating_add(ttl_secs),
        };
        let payload = postcard::to_allocvec(&Payload {
            kid: *kid,
            claims: claims.clone(),
        })?;
        let sig = signing.sign(&payload);
        let token = format!(
            "{PREFIX}.{}.{}",
            B64.encode(&payload),
            B64.encode(sig.to_bytes())
        );
        Ok((token, claims))
    }

    fn standing(&self, kid: &KeyId) -> Option<Standing> {
        let ring = self.keyring.read().unwrap_or_else(|p| p.into_inner());
        ring.get(kid).map(|k| k.1)
    }

    /// Verifies a token: a trusted key's, intact, unexpired, unrevoked.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let digest = *blake3::hash(token.as_bytes()).as_bytes();
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&digest)
            .cloned();
        let (kid, claims) = match cached {
            Some(c) => c,
            None => {
                let c = self.verify_signature(token)?;
                let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                if cache.len() >= CACHE_MAX {
                    let now = unix_now();
                    cache.retain(|_, c| c.1.expires > now);
                    if cache.len() >= CACHE_MAX {
                        cache.clear();
                    }
                }
                cache.insert(digest, c.clone());
                c
            }
        };
        // The key may have been retired since the token was cached.
        if self.standing(&kid) != Some(Standing::Trusted) {
            return Err(TokenError::RetiredKey(kid_hex(&kid)));
        }
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

    /// The uncached part of [`verify`]: decoding, the key and the signature.
    pub fn verify_signature(&self, token: &str) -> Result<(KeyId, Claims), TokenError> {
        let malformed = |why: &str| TokenError::Malformed(why.to_owned());
        let mut parts = token.trim().split('.');
        if parts.next() != Some(PREFIX) {
            return Err(malformed("it does not start with nxt2."));
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
        let kid = decoded.kid;
        let key = {
            let ring = self.keyring.read().unwrap_or_else(|p| p.into_inner());
            match ring.get(&kid) {
                Some((key, Standing::Trusted)) => key,
                Some((_, Standing::Retired)) => return Err(TokenError::RetiredKey(kid_hex(&kid))),
                None => return Err(TokenError::UnknownKey(kid_hex(&kid))),
            }
        };
        key.verify(&payload, &sig)
            .map_err(|_| TokenError::Tampered)?;
        let c = &decoded.claims;
        if c.expires.saturating_sub(c.issued) > MAX_TTL {
            return Err(TokenError::TooLong);
        }
        Ok((kid, decoded.claims))
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

    use std::os::unix::fs::PermissionsExt;

    fn open(home: &Path, signs: bool) -> Result<TokenAuthority> {
        let db = sled::Config::new().temporary(true).open().unwrap();
        TokenAuthority::open(home, db.open_tree("revoked").unwrap(), signs)
    }

    fn authority(dir: &Path, name: &str) -> TokenAuthority {
        let home = dir.join(name);
        std::fs::create_dir_all(&home).unwrap();
        open(&home, true).unwrap()
    }

    fn issue(a: &TokenAuthority, ttl: i64) -> (String, Claims) {
        a.issue(
            Principal::parse("agent:bot").unwrap(),
            ZoneId::new("z1").unwrap(),
            Vec::new(),
            Capabilities::ALL,
            ttl,
        )
        .unwrap()
    }

    #[test]
    fn the_key_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let a = authority(dir.path(), "op");
        let key = dir.path().join("op").join(keys::SIGNING_KEY);
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (t, _) = issue(&a, 60);
        let again = authority(dir.path(), "op");
        assert!(
            again.verify(&t).is_ok(),
            "a restarted node accepts its tokens"
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(open(&dir.path().join("op"), true).is_err());
    }

    #[test]
    fn a_node_verifies_with_public_keys_only() {
        let dir = tempfile::tempdir().unwrap();
        let op = authority(dir.path(), "op");
        let (t, claims) = issue(&op, 60);
        let node = dir.path().join("node");
        std::fs::create_dir_all(&node).unwrap();
        // A node that does not trust the operator's key refuses its tokens.
        let n = open(&node, false).unwrap();
        assert!(matches!(n.verify(&t), Err(TokenError::UnknownKey(_))));
        // Trusted: accepted; the node cannot sign.
        let public = op.signer.as_ref().unwrap().0.verifying_key();
        let mut ring = Keyring::default();
        ring.set(public, Standing::Trusted);
        ring.save(&node.join(keys::TRUSTED)).unwrap();
        n.reload_keys().unwrap();
        assert_eq!(n.verify(&t).unwrap(), claims);
        assert!(n
            .issue(
                claims.principal.clone(),
                claims.zone.clone(),
                Vec::new(),
                Capabilities::ALL,
                60
            )
            .is_err());
        // Retired: refused, even though it was verified (and cached) before.
        ring.set(public, Standing::Retired);
        ring.save(&node.join(keys::TRUSTED)).unwrap();
        n.reload_keys().unwrap();
        assert!(matches!(n.verify(&t), Err(TokenError::RetiredKey(_))));
        // A signing key in a node's data directory: the node refuses to open.
        std::fs::copy(
            dir.path().join("op").join(keys::SIGNING_KEY),
            node.join(keys::SIGNING_KEY),
        )
        .unwrap();
        assert!(open(&node, false).is_err());
    }

    #[test]
    fn every_refusal_has_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let a = authority(dir.path(), "a");
        let other = authority(dir.path(), "b");
        let (t, claims) = issue(&a, 60);
        assert_eq!(a.verify(&t).unwrap(), claims);
        assert_eq!(a.verify(&t).unwrap(), claims, "cached path");

        assert!(matches!(other.verify(&t), Err(TokenError::UnknownKey(_))));

        // Flip one byte of the payload: same key id, broken signature.
        let mut parts: Vec<String> = t.split('.').map(String::from).collect();
        let mut payload = B64.decode(&parts[1]).unwrap();
        let last = payload.len() - 1;
        payload[last] ^= 1;
        parts[1] = B64.encode(payload);
        assert_eq!(a.verify(&parts.join(".")), Err(TokenError::Tampered));

        assert!(matches!(a.verify("nxt2.zz"), Err(TokenError::Malformed(_))));
        assert!(matches!(a.verify("hello"), Err(TokenError::Malformed(_))));

        let (expired, _) = issue(&a, 1);
        let (kid, mut c) = a.verify_signature(&expired).unwrap();
        c.expires = unix_now() - 5;
        // A token whose expiry passed is refused even if it was cached.
        a.cache
            .lock()
            .unwrap()
            .insert(*blake3::hash(expired.as_bytes()).as_bytes(), (kid, c));
        assert!(matches!(a.verify(&expired), Err(TokenError::Expired(_))));

        a.revoke(&claims.id).unwrap();
        assert_eq!(a.verify(&t), Err(TokenError::Revoked(claims.id.clone())));
        assert!(a.revoke("not-an-id").is_err());
        let (p, z) = (claims.principal.clone(), claims.zone.clone());
        for ttl in [0, MAX_TTL + 1] {
            assert!(a
                .issue(p.clone(), z.clone(), Vec::new(), Capabilities::ALL, ttl)
                .is_err());
        }
    }

    #[test]
    fn a_token_signed_for_longer_than_the_maximum_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = authority(dir.path(), "a");
        let (signing, kid) = a.signer.as_ref().unwrap();
        let (_, mut claims) = issue(&a, 60);
        claims.expires = claims.issued + MAX_TTL + 1;
        let payload = postcard::to_allocvec(&Payload { kid: *kid, claims }).unwrap();
        let sig = signing.sign(&payload);
        let forged = format!(
            "{PREFIX}.{}.{}",
            B64.encode(&payload),
            B64.encode(sig.to_bytes())
        );
        assert_eq!(a.verify(&forged), Err(TokenError::TooLong));
    }
}
