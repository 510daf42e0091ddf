//! Issuer keys: the operator's signing key (`issuer.key`, in the data
//! directory of the machine that signs) and the public keys a node trusts
//! (`issuers`, one per line). Verifying needs only the public keys; a
//! cluster node holds no signing key at all.
//!
//! `issuers` lines: `nxk1.<base64url(public key)>` (trusted) or
//! `retired nxk1.<…>` (tokens it signed are refused); `#` starts a comment.
//! A key is named by its key id, the first 8 bytes of its BLAKE3 hash,
//! which every token carries.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::error::{KernelError, Result};

/// The operator's signing key in a data directory.
pub const SIGNING_KEY: &str = "issuer.key";
/// The public keys a data directory trusts.
pub const TRUSTED: &str = "issuers";
const KEY_PREFIX: &str = "nxk1.";
const RETIRED: &str = "retired ";

pub type KeyId = [u8; 8];

pub fn key_id(key: &VerifyingKey) -> KeyId {
    let h = blake3::hash(key.as_bytes());
    h.as_bytes()[..8].try_into().expect("8 bytes")
}

pub fn kid_hex(kid: &KeyId) -> String {
    kid.iter().map(|b| format!("{b:02x}")).collect()
}

/// A public key as text: `nxk1.<base64url>`.
pub fn key_text(key: &VerifyingKey) -> String {
    format!("{KEY_PREFIX}{}", B64.encode(key.as_bytes()))
}

pub fn parse_key(text: &str) -> Result<VerifyingKey> {
    let bad = || KernelError::Invalid(format!("{text:?} is not an issuer key (nxk1.…)"));
    let raw = text
        .trim()
        .strip_prefix(KEY_PREFIX)
        .and_then(|b| B64.decode(b).ok())
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .ok_or_else(bad)?;
    VerifyingKey::from_bytes(&raw).map_err(|_| bad())
}

/// Loads the signing key at `path`, or creates it (mode 0600) if there is
/// none. Refuses a key file that others can read.
pub fn load_or_create(path: &Path) -> Result<SigningKey> {
    let io =
        |e: std::io::Error| KernelError::Storage(format!("issuer key {}: {e}", path.display()));
    match std::fs::read(path) {
        Ok(bytes) => {
            let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(KernelError::Access(format!(
                    "issuer key {} is readable by others (mode {:o}); run chmod 600 on it",
                    path.display(),
                    mode & 0o777
                )));
            }
            let raw: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                KernelError::Corrupt(format!("issuer key {} is not 32 bytes", path.display()))
            })?;
            Ok(SigningKey::from_bytes(&raw))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path, false),
        Err(e) => Err(io(e)),
    }
}

/// Writes a new signing key to `path` (mode 0600). Without `replace`, an
/// existing file is refused (created exclusively); with it, the new key
/// is written beside and renamed over the old one, so a crash leaves one
/// whole key or the other.
pub fn create(path: &Path, replace: bool) -> Result<SigningKey> {
    let io =
        |e: std::io::Error| KernelError::Storage(format!("issuer key {}: {e}", path.display()));
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let target = if replace {
        path.with_extension("new")
    } else {
        path.to_owned()
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(!replace)
        .create(replace)
        .truncate(replace)
        .mode(0o600)
        .open(&target)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => KernelError::Exist(path.display().to_string()),
            _ => io(e),
        })?;
    f.write_all(key.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    if replace {
        std::fs::rename(&target, path).map_err(io)?;
    }
    Ok(key)
}

/// Whether a key may sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Trusted,
    Retired,
}

/// The public keys a data directory trusts, by key id.
#[derive(Debug, Default, Clone)]
pub struct Keyring {
    keys: HashMap<KeyId, (VerifyingKey, Standing)>,
}

impl Keyring {
    pub fn parse(text: &str) -> Result<Keyring> {
        let mut ring = Keyring::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let (standing, key) = match line.strip_prefix(RETIRED) {
                Some(k) => (Standing::Retired, k),
                None => (Standing::Trusted, line),
            };
            let key = parse_key(key)
                .map_err(|e| KernelError::Invalid(format!("{TRUSTED} line {}: {e}", n + 1)))?;
            ring.set(key, standing);
        }
        Ok(ring)
    }

    /// The keyring in `path` (empty if there is no such file).
    pub fn load(path: &Path) -> Result<Keyring> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Keyring::default()),
            Err(e) => Err(KernelError::Storage(format!("{}: {e}", path.display()))),
        }
    }

    pub fn set(&mut self, key: VerifyingKey, standing: Standing) {
        // Once retired, a key stays retired: a later line cannot revive it.
        let was = self.keys.get(&key_id(&key)).map(|k| k.1);
        let standing = if was == Some(Standing::Retired) {
            Standing::Retired
        } else {
            standing
        };
        self.keys.insert(key_id(&key), (key, standing));
    }

    pub fn get(&self, kid: &KeyId) -> Option<(VerifyingKey, Standing)> {
        self.keys.get(kid).copied()
    }

    pub fn find(&self, kid_hex_or_key: &str) -> Option<VerifyingKey> {
        if let Ok(key) = parse_key(kid_hex_or_key) {
            return Some(key);
        }
        self.keys
            .iter()
            .find(|(kid, _)| kid_hex(kid) == kid_hex_or_key.trim())
            .map(|(_, (k, _))| *k)
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut lines: Vec<String> = self
            .keys
            .values()
            .map(|(k, s)| match s {
                Standing::Trusted => key_text(k),
                Standing::Retired => format!("{RETIRED}{}", key_text(k)),
            })
            .collect();
        lines.sort();
        let mut out = String::from("# Public keys whose tokens this data directory accepts.\n");
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
        out
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, self.render())
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| KernelError::Storage(format!("{}: {e}", path.display())))
    }
}

/// A key as `nexus issuer` shows it: its text and its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub key: String,
    pub kid: String,
}

impl KeyInfo {
    fn of(key: &VerifyingKey) -> KeyInfo {
        KeyInfo {
            key: key_text(key),
            kid: kid_hex(&key_id(key)),
        }
    }
}

fn make_home(home: &Path) -> Result<()> {
    std::fs::create_dir_all(home)
        .map_err(|e| KernelError::Storage(format!("{}: {e}", home.display())))
}

/// The public half of data directory `home`'s signing key (created on
/// first use, as the embedded default does).
pub fn show(home: &Path) -> Result<KeyInfo> {
    make_home(home)?;
    Ok(KeyInfo::of(
        &load_or_create(&home.join(SIGNING_KEY))?.verifying_key(),
    ))
}

/// `home` trusts `key` (text form) from now on (a running node after
/// SIGHUP). A retired key cannot be trusted again.
pub fn trust(home: &Path, key: &str) -> Result<KeyInfo> {
    let key = parse_key(key)?;
    make_home(home)?;
    let path = home.join(TRUSTED);
    let mut ring = Keyring::load(&path)?;
    if ring.get(&key_id(&key)).map(|k| k.1) == Some(Standing::Retired) {
        return Err(KernelError::Access(format!(
            "key {} was retired: it cannot be trusted again; issue with a new key",
            kid_hex(&key_id(&key))
        )));
    }
    ring.set(key, Standing::Trusted);
    ring.save(&path)?;
    Ok(KeyInfo::of(&key))
}

/// `home` refuses tokens signed by the key named (its text, or the id of
/// a key it trusts or signs with) from now on.
pub fn retire(home: &Path, key_or_kid: &str) -> Result<KeyInfo> {
    let path = home.join(TRUSTED);
    let mut ring = Keyring::load(&path)?;
    let signing = home.join(SIGNING_KEY);
    let own = match signing.exists() {
        true => Some(load_or_create(&signing)?.verifying_key()),
        false => None,
    };
    let key = ring
        .find(key_or_kid)
        .or_else(|| own.filter(|k| kid_hex(&key_id(k)) == key_or_kid.trim()))
        .ok_or_else(|| KernelError::NotFound(format!("no key {key_or_kid} here")))?;
    ring.set(key, Standing::Retired);
    ring.save(&path)?;
    Ok(KeyInfo::of(&key))
}

/// Replaces `home`'s signing key with a new one; the old one stays
/// trusted (tokens it signed keep working until `retire`). Returns
/// (old, new).
pub fn rotate(home: &Path) -> Result<(KeyInfo, KeyInfo)> {
    let path = home.join(SIGNING_KEY);
    let old = load_or_create(&path)?.verifying_key();
    let trusted = home.join(TRUSTED);
    let mut ring = Keyring::load(&trusted)?;
    ring.set(old, Standing::Trusted);
    ring.save(&trusted)?;
    let new = create(&path, true)?.verifying_key();
    Ok((KeyInfo::of(&old), KeyInfo::of(&new)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyrings_parse_and_a_retired_key_stays_retired() {
        let a = SigningKey::from_bytes(&[1; 32]).verifying_key();
        let b = SigningKey::from_bytes(&[2; 32]).verifying_key();
        let text = format!(
            "# comment\n{}\n\nretired {}\n{}  # revived? no\n",
            key_text(&a),
            key_text(&b),
            key_text(&b)
        );
        let ring = Keyring::parse(&text).unwrap();
        assert_eq!(ring.get(&key_id(&a)).unwrap().1, Standing::Trusted);
        assert_eq!(ring.get(&key_id(&b)).unwrap().1, Standing::Retired);
        let again = Keyring::parse(&ring.render()).unwrap();
        assert_eq!(again.get(&key_id(&b)).unwrap().1, Standing::Retired);
        assert_eq!(ring.find(&kid_hex(&key_id(&a))), Some(a));
        assert!(Keyring::parse("nxk1.garbage").is_err());
        assert!(parse_key(&key_text(&a)).is_ok());
    }

    #[test]
    fn trust_retire_and_rotate_edit_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (op, node) = (dir.path().join("op"), dir.path().join("node"));
        std::fs::create_dir_all(&node).unwrap();
        let first = show(&op).unwrap();
        assert_eq!(show(&op).unwrap(), first, "stable");
        assert_eq!(trust(&node, &first.key).unwrap(), first);
        let (old, new) = rotate(&op).unwrap();
        assert_eq!(old, first);
        assert_ne!(new, first);
        trust(&node, &new.key).unwrap();
        assert_eq!(retire(&node, &first.kid).unwrap(), first);
        let ring = Keyring::load(&node.join(TRUSTED)).unwrap();
        let kid = |k: &KeyInfo| key_id(&parse_key(&k.key).unwrap());
        assert_eq!(ring.get(&kid(&first)).unwrap().1, Standing::Retired);
        assert_eq!(ring.get(&kid(&new)).unwrap().1, Standing::Trusted);
        assert!(trust(&node, &first.key).is_err(), "retired for good");
        assert!(retire(&node, "0123456789abcdef").is_err());
    }
}
