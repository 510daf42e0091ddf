//! The zone state machine: inodes, directory entries and chunk maps in the
//! zone's sled tree, under the `s` prefix. The Raft log shares the tree under
//! `r`, so installing a snapshot is one atomic batch together with the log reset.
//!
//! `apply` is deterministic: it reads no clock and no randomness, and its only
//! I/O is its own sled batch (invariant 2). A failed precondition is a typed
//! error returned to the proposer, with no partial effect: the batch holding
//! the mutation also holds the new applied index, and is applied whole.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::access::identity::Principal;
use crate::access::rebac::{ObjectRef, Relation, Subject, Tuple};
use crate::access::secret::SecretHeader;
use crate::error::{KernelError, Result};
use crate::files::content::PATCH_MAX;
use crate::files::extents::Extents;
use crate::types::{
    ChunkRef, Dentry, DirListing, FileKind, Ino, Inode, InodeBody, ReplicaId, ROOT_INO,
};
use crate::zone::command::{Applied, NewInode, Patch, Patches, ZoneCommand};
use crate::zone::pipe_record::PipeRecord;
use crate::zone::usage::{ZoneQuota, ZoneUsage};

/// Key layout of the state half of a zone tree.
pub(crate) mod keys {
    use crate::access::identity::Principal;
    use crate::access::rebac::{ObjectRef, Relation, Subject, Tuple};
    use crate::types::Ino;

    pub const STATE_PREFIX: &[u8] = b"s";
    pub const APPLIED: &[u8] = b"s\x00applied";
    pub const ALL_INODES: &[u8] = b"s\x01";
    pub const ALL_DENTRIES: &[u8] = b"s\x02";
    pub const ALL_CHUNKS: &[u8] = b"s\x03";
    pub const ALL_TUPLES: &[u8] = b"s\x04";
    pub const ALL_PIPES: &[u8] = b"s\x05";
    /// `s\x06` + token id: tokens of this zone revoked by its admins.
    pub const ALL_REVOKED: &[u8] = b"s\x06";
    /// `s\x07` + inode: a file unlinked while open, with the node holding it.
    pub const ALL_ORPHANS: &[u8] = b"s\x07";
    /// `s\x08` + chunk hash: how many chunk slots of the zone's files name
    /// it (absent: none).
    pub const ALL_REFS: &[u8] = b"s\x08";
    /// `s\x09` + chunk hash: a chunk no file of the zone names any more,
    /// until a node's collector has dealt with it (`Collected`).
    pub const ALL_UNREFERENCED: &[u8] = b"s\x09";
    /// `s\x0a` + destination object: its secret headers.
    pub const ALL_SECRETS: &[u8] = b"s\x0a";
    /// `s\x0b` + inode + directory + name: every name of an inode that has
    /// more than one (hard links); absent for an inode of one name.
    pub const ALL_NAMES: &[u8] = b"s\x0b";
    /// `s\x0c` + inode: the file's patches, (offset, bytes) pairs laid
    /// over its chunks (absent: none).
    pub const ALL_PATCHES: &[u8] = b"s\x0c";
    /// Present once the reference counts are kept (a zone from before
    /// them is counted at its first command that changes a chunk).
    pub const REFS_KEPT: &[u8] = b"s\x00refs";
    /// The zone's usage (`ZoneUsage`) and quota (`ZoneQuota`).
    pub const USAGE: &[u8] = b"s\x00usage";
    pub const QUOTA: &[u8] = b"s\x00quota";
    /// Applied index of the last command that could change a permission.
    pub const AUTH_REVISION: &[u8] = b"s\x00authrev";

    fn tagged(tag: &[u8], ino: Ino, extra: usize) -> Vec<u8> {
        let mut k = Vec::with_capacity(tag.len() + 8 + extra);
        k.extend_from_slice(tag);
        k.extend_from_slice(&ino.to_be_bytes());
        k
    }

    pub fn inode(ino: Ino) -> Vec<u8> {
        tagged(ALL_INODES, ino, 0)
    }

    pub fn pipe(ino: Ino) -> Vec<u8> {
        tagged(ALL_PIPES, ino, 0)
    }

    pub fn patches(ino: Ino) -> Vec<u8> {
        tagged(ALL_PATCHES, ino, 0)
    }

    pub fn orphan(ino: Ino) -> Vec<u8> {
        tagged(ALL_ORPHANS, ino, 0)
    }

    pub fn names_prefix(ino: Ino) -> Vec<u8> {
        tagged(ALL_NAMES, ino, 0)
    }

    pub fn name(ino: Ino, dir: Ino, name: &str) -> Vec<u8> {
        let mut k = tagged(ALL_NAMES, ino, 8 + name.len());
        k.extend_from_slice(&dir.to_be_bytes());
        k.extend_from_slice(name.as_bytes());
        k
    }

    pub fn refs(hash: &[u8; 32]) -> Vec<u8> {
        [ALL_REFS, hash].concat()
    }

    pub fn unreferenced(hash: &[u8; 32]) -> Vec<u8> {
        [ALL_UNREFERENCED, hash].concat()
    }

    pub fn secret(destination: &ObjectRef) -> Vec<u8> {
        [ALL_SECRETS, destination.to_string().as_bytes()].concat()
    }

    pub fn revoked(token_id: &str) -> Vec<u8> {
        [ALL_REVOKED, token_id.as_bytes()].concat()
    }

    pub fn dir_prefix(dir: Ino) -> Vec<u8> {
        tagged(ALL_DENTRIES, dir, 0)
    }

    pub fn dentry(dir: Ino, name: &str) -> Vec<u8> {
        let mut k = tagged(ALL_DENTRIES, dir, name.len());
        k.extend_from_slice(name.as_bytes());
        k
    }

    pub fn chunk_prefix(ino: Ino) -> Vec<u8> {
        tagged(ALL_CHUNKS, ino, 8)
    }

    pub fn chunk(ino: Ino, index: u64) -> Vec<u8> {
        let mut k = chunk_prefix(ino);
        k.extend_from_slice(&index.to_be_bytes());
        k
    }

    /// `s\x04` + object + NUL: every tuple of one object.
    pub fn tuple_prefix(object: &ObjectRef) -> Vec<u8> {
        let mut k = ALL_TUPLES.to_vec();
        k.extend_from_slice(object.to_string().as_bytes());
        k.push(0);
        k
    }

    /// `s\x04` + object + NUL + relation + NUL: then `p` + principal, or
    /// `u` + userset, so a principal's grant is one point lookup and the
    /// usersets of a relation are one short scan.
    pub fn relation_prefix(object: &ObjectRef, relation: Relation) -> Vec<u8> {
        let mut k = tuple_prefix(object);
        k.extend_from_slice(relation.as_str().as_bytes());
        k.push(0);
        k
    }

    pub fn principal_tuple(object: &ObjectRef, relation: Relation, who: &Principal) -> Vec<u8> {
        let mut k = relation_prefix(object, relation);
        k.push(b'p');
        k.extend_from_slice(who.to_string().as_bytes());
        k
    }

    pub fn usersets(object: &ObjectRef, relation: Relation) -> Vec<u8> {
        let mut k = relation_prefix(object, relation);
        k.push(b'u');
        k
    }

    pub fn tuple(t: &Tuple) -> Vec<u8> {
        match &t.subject {
            Subject::Principal(p) => principal_tuple(&t.object, t.relation, p),
            Subject::Userset { .. } => {
                let mut k = usersets(&t.object, t.relation);
                k.extend_from_slice(t.subject.to_string().as_bytes());
                k
            }
        }
    }
}

fn enc<T: serde::Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).expect("state values always serialize")
}

fn dec<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    Ok(postcard::from_bytes(bytes)?)
}

/// A file's patches from their stored value (`None`: no patches).
fn decode_patches(value: Option<&[u8]>) -> Result<Extents> {
    let mut out = Extents::default();
    if let Some(v) = value {
        for Patch { at, bytes } in dec::<Vec<Patch>>(v)? {
            at.checked_add(bytes.len() as u64)
                .ok_or_else(|| KernelError::Corrupt(format!("a patch at {at}")))?;
            out.write(at, &bytes);
        }
    }
    Ok(out)
}

/// Read access to a zone's applied state, plus `apply` for the driver.
#[derive(Clone)]
pub struct ZoneState {
    tree: sled::Tree,
}

impl ZoneState {
    pub fn new(tree: sled::Tree) -> Self {
        ZoneState { tree }
    }

    fn read_u64(&self, key: &[u8], what: &str) -> Result<u64> {
        match self.tree.get(key)? {
            Some(v) => Ok(u64::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| KernelError::Corrupt(what.to_owned()))?,
            )),
            None => Ok(0),
        }
    }

    /// What the zone may hold.
    pub fn quota(&self) -> Result<ZoneQuota> {
        match self.tree.get(keys::QUOTA)? {
            Some(v) => dec(&v),
            None => Ok(ZoneQuota::default()),
        }
    }

    /// What the zone holds (counted from its inodes if no command has
    /// kept it yet) and what it may hold.
    pub fn usage(&self) -> Result<(ZoneUsage, ZoneQuota)> {
        let usage = match self.tree.get(keys::USAGE)? {
            Some(v) => dec(&v)?,
            None => {
                let mut u = ZoneUsage::default();
                for inode in self.all_inodes() {
                    u.change(None, Some(&inode?));
                }
                u
            }
        };
        Ok((usage, self.quota()?))
    }

    pub fn applied_index(&self) -> Result<u64> {
        self.read_u64(keys::APPLIED, "applied index")
    }

    pub fn inode(&self, ino: Ino) -> Result<Option<Inode>> {
        self.tree
            .get(keys::inode(ino))?
            .map(|v| dec(&v))
            .transpose()
    }

    /// A pipe's last checkpoint, if it has one.
    pub fn pipe_record(&self, ino: Ino) -> Result<Option<PipeRecord>> {
        self.tree.get(keys::pipe(ino))?.map(|v| dec(&v)).transpose()
    }

    pub fn dentry(&self, dir: Ino, name: &str) -> Result<Option<Dentry>> {
        self.tree
            .get(keys::dentry(dir, name))?
            .map(|v| dec(&v))
            .transpose()
    }

    /// One page of a directory, in name order, strictly after `after`.
    /// Names are the sort key, so an entry present for the whole listing is
    /// returned exactly once whatever is inserted or removed meanwhile.
    pub fn list(&self, dir: Ino, after: Option<&str>, limit: usize) -> Result<Vec<DirListing>> {
        let prefix = keys::dir_prefix(dir);
        let start = match after {
            Some(name) => Bound::Excluded(keys::dentry(dir, name)),
            None => Bound::Included(prefix.clone()),
        };
        let mut out = Vec::new();
        for kv in self.tree.range::<Vec<u8>, _>((start, Bound::Unbounded)) {
            let (k, v) = kv?;
            if !k.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            let d: Dentry = dec(&v)?;
            let name = String::from_utf8(k[prefix.len()..].to_vec())
                .map_err(|_| KernelError::Corrupt("non-UTF-8 name".into()))?;
            out.push(DirListing {
                name,
                ino: d.ino,
                kind: d.kind,
            });
        }
        Ok(out)
    }

    /// The chunks of `ino` with index in `[from, to)`.
    pub fn chunks(&self, ino: Ino, from: u64, to: u64) -> Result<Vec<(u64, ChunkRef)>> {
        let mut out = Vec::new();
        for kv in self
            .tree
            .range(keys::chunk(ino, from)..keys::chunk(ino, to))
        {
            let (k, v) = kv?;
            let idx = u64::from_be_bytes(k[k.len() - 8..].try_into().expect("8-byte suffix"));
            out.push((idx, dec(&v)?));
        }
        Ok(out)
    }

    /// The patches of `ino`: bytes laid over its chunks.
    pub(crate) fn patches(&self, ino: Ino) -> Result<Extents> {
        decode_patches(self.tree.get(keys::patches(ino))?.as_deref())
    }

    /// How many chunk slots of the zone's files name chunk `hash`.
    pub fn chunk_refs(&self, hash: &[u8; 32]) -> Result<u64> {
        if self.tree.contains_key(keys::REFS_KEPT)? {
            return self.read_u64(&keys::refs(hash), "chunk reference count");
        }
        let mut n = 0;
        for c in self.all_chunks() {
            n += u64::from(c?.2.hash == *hash);
        }
        Ok(n)
    }

    /// Up to `limit` chunks no file of the zone names any more, not yet
    /// dealt with by a collector.
    pub fn unreferenced(&self, limit: usize) -> Result<Vec<[u8; 32]>> {
        self.tree
            .scan_prefix(keys::ALL_UNREFERENCED)
            .take(limit)
            .map(|kv| {
                kv?.0[keys::ALL_UNREFERENCED.len()..]
                    .try_into()
                    .map_err(|_| KernelError::Corrupt("unreferenced chunk key".into()))
            })
            .collect()
    }

    /// Whether `object#relation@who` is stored.
    pub fn has_tuple(
        &self,
        object: &ObjectRef,
        relation: Relation,
        who: &Principal,
    ) -> Result<bool> {
        Ok(self
            .tree
            .contains_key(keys::principal_tuple(object, relation, who))?)
    }

    /// The usersets stored as subjects of `object#relation`.
    pub fn usersets(&self, object: &ObjectRef, relation: Relation) -> Result<Vec<Subject>> {
        self.tree
            .scan_prefix(keys::usersets(object, relation))
            .map(|kv| Ok(dec::<Tuple>(&kv?.1)?.subject))
            .collect()
    }

    /// The secret headers bound to `destination`, if any.
    pub fn secret(&self, destination: &ObjectRef) -> Result<Option<Vec<SecretHeader>>> {
        self.tree
            .get(keys::secret(destination))?
            .map(|v| dec(&v))
            .transpose()
    }

    /// Every destination with secrets, and its headers.
    pub fn secrets(&self) -> impl Iterator<Item = Result<(String, Vec<SecretHeader>)>> + '_ {
        self.tree.scan_prefix(keys::ALL_SECRETS).map(|kv| {
            let (k, v) = kv?;
            let dest = String::from_utf8(k[keys::ALL_SECRETS.len()..].to_vec())
                .map_err(|_| KernelError::Corrupt("secret key".into()))?;
            Ok((dest, dec(&v)?))
        })
    }

    /// Every tuple in the zone, in key order.
    pub fn all_tuples(&self) -> impl Iterator<Item = Result<Tuple>> + '_ {
        self.tree
            .scan_prefix(keys::ALL_TUPLES)
            .map(|kv| dec(&kv?.1))
    }

    /// The node holding inode `ino` open, if it is an orphan (unlinked
    /// while open).
    /// Every name of `ino` if it has more than one (none otherwise).
    pub fn names(&self, ino: Ino) -> Result<Vec<(Ino, String)>> {
        let prefix = keys::names_prefix(ino);
        self.tree
            .scan_prefix(&prefix)
            .map(|kv| name_of_key(&kv?.0, prefix.len()))
            .collect()
    }

    /// How many names `ino` has (its link count, an orphan aside).
    pub fn name_count(&self, ino: Ino) -> Result<u64> {
        Ok(self.names(ino)?.len().max(1) as u64)
    }

    pub fn orphan_holder(&self, ino: Ino) -> Result<Option<ReplicaId>> {
        self.tree
            .get(keys::orphan(ino))?
            .map(|v| dec(&v))
            .transpose()
    }

    /// Every orphan: (inode, the node holding it).
    pub fn orphans(&self) -> impl Iterator<Item = Result<(Ino, ReplicaId)>> + '_ {
        self.tree.scan_prefix(keys::ALL_ORPHANS).map(|kv| {
            let (k, v) = kv?;
            let ino = k[keys::ALL_ORPHANS.len()..]
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| KernelError::Corrupt("orphan key".into()))?;
            Ok((ino, dec(&v)?))
        })
    }

    /// Whether the zone's admins revoked the token with this id.
    pub fn token_revoked(&self, token_id: &str) -> Result<bool> {
        Ok(self.tree.contains_key(keys::revoked(token_id))?)
    }

    /// The applied index of the last command that could change a
    /// permission: tuple writes, renames and removals. Cached decisions are
    /// valid exactly while it stays the same.
    pub fn auth_revision(&self) -> Result<u64> {
        self.read_u64(keys::AUTH_REVISION, "auth revision")
    }

    /// Every inode in the zone (for fsck).
    pub fn all_inodes(&self) -> impl Iterator<Item = Result<Inode>> + '_ {
        self.tree
            .scan_prefix(keys::ALL_INODES)
            .map(|kv| dec(&kv?.1))
    }

    /// Every (directory, name, entry) in the zone (for fsck).
    pub fn all_dentries(&self) -> impl Iterator<Item = Result<(Ino, String, Dentry)>> + '_ {
        self.tree.scan_prefix(keys::ALL_DENTRIES).map(|kv| {
            let (k, v) = kv?;
            let dir = u64::from_be_bytes(k[2..10].try_into().expect("8 bytes"));
            let name = String::from_utf8(k[10..].to_vec())
                .map_err(|_| KernelError::Corrupt("non-UTF-8 name".into()))?;
            Ok((dir, name, dec(&v)?))
        })
    }

    /// Every chunk reference in the zone: (inode, index, chunk).
    pub fn all_chunks(&self) -> impl Iterator<Item = Result<(Ino, u64, ChunkRef)>> + '_ {
        self.tree.scan_prefix(keys::ALL_CHUNKS).map(|kv| {
            let (k, v) = kv?;
            let ino = u64::from_be_bytes(k[2..10].try_into().expect("8 bytes"));
            let idx = u64::from_be_bytes(k[10..18].try_into().expect("8 bytes"));
            Ok((ino, idx, dec(&v)?))
        })
    }

    /// Every key/value pair of the state.
    pub fn pairs(&self) -> impl Iterator<Item = Result<(sled::IVec, sled::IVec)>> + '_ {
        self.tree.scan_prefix(keys::STATE_PREFIX).map(|kv| Ok(kv?))
    }

    /// The whole state as key/value pairs (to compare replicas).
    pub fn dump(&self) -> Result<StateDump> {
        self.pairs()
            .map(|kv| {
                let (k, v) = kv?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }

    /// Starts applying a run of committed entries; see [`Applier`].
    pub fn applier(&self) -> Applier<'_> {
        Applier {
            state: self,
            staged: Staged::new(),
            applied: None,
        }
    }

    /// Applies one committed entry on its own (tests and tools).
    pub fn apply(&self, index: u64, cmd: &ZoneCommand) -> Result<Result<Applied>> {
        let mut applier = self.applier();
        let outcome = applier.apply(index, cmd);
        applier.commit()?;
        Ok(outcome)
    }
}

/// Staged writes: `None` is a removal.
type Staged = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Applies the committed entries of one Ready and writes them, with the new
/// applied index, in ONE sled batch: a crash keeps all of them or none, and
/// the per-entry cost is reads and encoding, not a batch each. Later entries
/// read what earlier ones staged. A refused command's writes are discarded.
pub struct Applier<'a> {
    state: &'a ZoneState,
    staged: Staged,
    applied: Option<u64>,
}

impl Applier<'_> {
    pub fn apply(&mut self, index: u64, cmd: &ZoneCommand) -> Result<Applied> {
        let mut tx = Tx {
            tree: &self.state.tree,
            staged: &self.staged,
            writes: Staged::new(),
            index,
            usage: None,
        };
        let outcome = tx.run(cmd).and_then(|applied| {
            tx.settle_usage()?;
            Ok(applied)
        });
        let writes = tx.writes;
        if outcome.is_ok() {
            self.staged.extend(writes);
        }
        self.applied = Some(index);
        outcome
    }

    /// Advances the applied index without touching state (witness replicas,
    /// empty entries and conf changes).
    pub fn mark_applied(&mut self, index: u64) {
        self.applied = Some(index);
    }

    /// Writes everything staged, and the applied index, atomically.
    pub fn commit(self) -> Result<()> {
        let Some(index) = self.applied else {
            return Ok(());
        };
        let mut batch = sled::Batch::default();
        for (k, v) in self.staged {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        batch.insert(keys::APPLIED, &index.to_be_bytes());
        self.state.tree.apply_batch(batch)?;
        Ok(())
    }
}

/// Whether `target` may be removed (or replaced) by an operation that works
/// on directories iff `dir`: rmdir and directory renames need an empty
/// directory; unlink and file renames need a non-directory.
fn check_replaceable(target: &Inode, dir: bool, name: &str) -> Result<()> {
    match (&target.body, dir) {
        (InodeBody::Dir { entries }, true) if *entries > 0 => {
            Err(KernelError::NotEmpty(name.to_owned()))
        }
        (InodeBody::Dir { .. }, false) => Err(KernelError::IsDirectory(name.to_owned())),
        (InodeBody::Dir { .. }, true) => Ok(()),
        (_, true) => Err(KernelError::NotDirectory(name.to_owned())),
        (_, false) => Ok(()),
    }
}

/// The (directory, name) a key of `keys::ALL_NAMES` holds after its
/// `prefix` bytes (tag and inode).
fn name_of_key(key: &[u8], prefix: usize) -> Result<(Ino, String)> {
    let bad = || KernelError::Corrupt("a name key".into());
    let dir = key.get(prefix..prefix + 8).ok_or_else(bad)?;
    let dir = u64::from_be_bytes(dir.try_into().map_err(|_| bad())?);
    let name = std::str::from_utf8(&key[prefix + 8..]).map_err(|_| bad())?;
    Ok((dir, name.to_owned()))
}

/// Names one inode may have at most.
pub const MAX_NAMES: usize = 1024;

/// A zone's state as key/value pairs.
pub type StateDump = Vec<(Vec<u8>, Vec<u8>)>;

/// One command's mutation. Reads see this command's own writes, then what
/// earlier entries of the same Ready staged, then the tree.
struct Tx<'a> {
    tree: &'a sled::Tree,
    staged: &'a Staged,
    writes: Staged,
    /// The entry being applied.
    index: u64,
    /// The zone's usage before this command and as it leaves it, once a
    /// change to an inode needed it.
    usage: Option<(ZoneUsage, ZoneUsage)>,
}

impl Tx<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self.writes.get(key).or_else(|| self.staged.get(key)) {
            return Ok(v.clone());
        }
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    fn inode(&self, ino: Ino) -> Result<Option<Inode>> {
        self.get(&keys::inode(ino))?.map(|v| dec(&v)).transpose()
    }

    fn dentry(&self, dir: Ino, name: &str) -> Result<Option<Dentry>> {
        self.get(&keys::dentry(dir, name))?
            .map(|v| dec(&v))
            .transpose()
    }

    fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }

    fn remove(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }

    /// Live keys in `[lo, hi)` as this command sees them.
    fn keys_in(&self, lo: Vec<u8>, hi: Vec<u8>) -> Result<Vec<Vec<u8>>> {
        let mut live = std::collections::BTreeSet::new();
        for kv in self.tree.range(lo.clone()..hi.clone()) {
            live.insert(kv?.0.to_vec());
        }
        for layer in [self.staged, &self.writes] {
            for (k, v) in layer.range(lo.clone()..hi.clone()) {
                match v {
                    Some(_) => live.insert(k.clone()),
                    None => live.remove(k),
                };
            }
        }
        Ok(live.into_iter().collect())
    }

    fn patches(&self, ino: Ino) -> Result<Extents> {
        decode_patches(self.get(&keys::patches(ino))?.as_deref())
    }

    fn put_patches(&mut self, ino: Ino, patches: &Extents) {
        match patches.bytes() {
            0 => self.remove(keys::patches(ino)),
            _ => self.insert(keys::patches(ino), enc(&patches.to_patches())),
        }
    }

    fn get_inode(&self, ino: Ino) -> Result<Inode> {
        self.inode(ino)?
            .ok_or_else(|| KernelError::NotFound(format!("inode {ino}")))
    }

    fn get_dir(&self, ino: Ino) -> Result<Inode> {
        let inode = self.get_inode(ino)?;
        match inode.body {
            InodeBody::Dir { .. } => Ok(inode),
            _ => Err(KernelError::NotDirectory(format!("inode {ino}"))),
        }
    }

    /// Writes `inode`, counting the change in the zone's usage.
    fn put_inode(&mut self, inode: &Inode) -> Result<()> {
        let before = self.inode(inode.ino)?;
        self.usage()?.change(before.as_ref(), Some(inode));
        self.insert(keys::inode(inode.ino), enc(inode));
        Ok(())
    }

    /// The zone's usage as this command leaves it so far, read (or, for a
    /// zone from before usage was kept, counted) on first use.
    fn usage(&mut self) -> Result<&mut ZoneUsage> {
        if self.usage.is_none() {
            let now = match self.get(keys::USAGE)? {
                Some(v) => dec(&v)?,
                None => self.count_usage()?,
            };
            self.usage = Some((now, now));
        }
        match &mut self.usage {
            Some((_, now)) => Ok(now),
            None => Err(KernelError::Corrupt("zone usage".into())),
        }
    }

    /// Every inode counted, as this command sees them.
    fn count_usage(&self) -> Result<ZoneUsage> {
        let mut usage = ZoneUsage::default();
        let mut end = keys::ALL_INODES.to_vec();
        *end.last_mut().expect("non-empty") += 1;
        for key in self.keys_in(keys::ALL_INODES.to_vec(), end)? {
            if let Some(v) = self.get(&key)? {
                usage.change(None, Some(&dec::<Inode>(&v)?));
            }
        }
        Ok(usage)
    }

    /// Keeps the usage this command changed, or refuses the command if it
    /// grew the zone past its quota.
    fn settle_usage(&mut self) -> Result<()> {
        let Some((before, now)) = self.usage else {
            return Ok(());
        };
        if now != before {
            let quota: ZoneQuota = match self.get(keys::QUOTA)? {
                Some(v) => dec(&v)?,
                None => ZoneQuota::default(),
            };
            now.check(&before, &quota)?;
        }
        if self.get(keys::USAGE)?.is_none() || now != before {
            self.insert(keys::USAGE.to_vec(), enc(&now));
        }
        Ok(())
    }

    /// Removes an inode with its chunks and every tuple about it.
    fn drop_inode(&mut self, inode: &Inode) -> Result<()> {
        let before = self.inode(inode.ino)?;
        self.usage()?.change(before.as_ref(), None);
        self.remove(keys::inode(inode.ino));
        self.remove(keys::pipe(inode.ino));
        self.remove(keys::patches(inode.ino));
        for (dir, name) in self.names(inode.ino)? {
            self.remove(keys::name(inode.ino, dir, &name));
        }
        self.drop_chunks_from(inode.ino, 0)?;
        let prefix = keys::tuple_prefix(&ObjectRef::inode(inode.kind(), inode.ino));
        let mut end = prefix.clone();
        *end.last_mut().expect("non-empty") = 1;
        for key in self.keys_in(prefix, end)? {
            self.remove(key);
        }
        self.touch_auth();
        Ok(())
    }

    /// Every name of `ino` if it has more than one, as this command sees
    /// them.
    fn names(&self, ino: Ino) -> Result<Vec<(Ino, String)>> {
        let lo = keys::names_prefix(ino);
        // Names are UTF-8 (no 0xff byte): nothing of this inode sorts
        // after the prefix, 0xff for the directory and one more.
        let hi = [lo.as_slice(), &[0xff; 9]].concat();
        self.keys_in(lo.clone(), hi)?
            .iter()
            .map(|k| name_of_key(k, lo.len()))
            .collect()
    }

    /// `dir`/`name`, one name of `inode`, goes: whether the inode keeps
    /// another (it then lives on, its parent the directory of one of its
    /// names: what it inherits grants from).
    fn unname(&mut self, inode: &mut Inode, dir: Ino, name: &str) -> Result<bool> {
        let names = self.names(inode.ino)?;
        if names.is_empty() {
            return Ok(false);
        }
        let rest: Vec<(Ino, String)> = names
            .into_iter()
            .filter(|(d, n)| !(*d == dir && n == name))
            .collect();
        self.remove(keys::name(inode.ino, dir, name));
        if rest.len() == 1 {
            self.remove(keys::name(inode.ino, rest[0].0, &rest[0].1));
        }
        if !rest.iter().any(|(d, _)| *d == inode.parent) {
            if let Some((d, _)) = rest.first() {
                inode.parent = *d;
                self.touch_auth();
            }
        }
        Ok(!rest.is_empty())
    }

    /// Gives the inode `src_name` names another name, `dst_name` in
    /// `dst_parent`.
    fn link(
        &mut self,
        src_parent: Ino,
        src_name: &str,
        dst_parent: Ino,
        dst_name: &str,
        now: i64,
    ) -> Result<Applied> {
        crate::files::path::check_new_name(dst_name)?;
        let (_, mut inode) = self.named(src_parent, src_name)?;
        if !matches!(inode.kind(), FileKind::Regular | FileKind::Symlink) {
            return Err(KernelError::NotPermitted(format!(
                "{src_name:?} is a {}: only files and symbolic links take another name",
                inode.kind().as_str()
            )));
        }
        let mut dst_dir = self.get_dir(dst_parent)?;
        if self.dentry(dst_parent, dst_name)?.is_some() {
            return Err(KernelError::Exist(dst_name.to_owned()));
        }
        let names = self.names(inode.ino)?;
        if names.len() >= MAX_NAMES {
            return Err(KernelError::Quota(format!(
                "{src_name:?} has {MAX_NAMES} names already"
            )));
        }
        if names.is_empty() {
            self.insert(keys::name(inode.ino, src_parent, src_name), Vec::new());
        }
        self.insert(keys::name(inode.ino, dst_parent, dst_name), Vec::new());
        let entry = Dentry {
            ino: inode.ino,
            kind: inode.kind(),
        };
        self.insert(keys::dentry(dst_parent, dst_name), enc(&entry));
        Self::adjust_entries(&mut dst_dir, 1, now);
        self.put_inode(&dst_dir)?;
        inode.ctime = now;
        self.put_inode(&inode)?;
        Ok(Applied::Inode(inode))
    }

    /// Marks this entry as one that may change permissions.
    fn touch_auth(&mut self) {
        self.insert(
            keys::AUTH_REVISION.to_vec(),
            self.index.to_be_bytes().to_vec(),
        );
    }

    fn write_tuples(&mut self, insert: &[Tuple], delete: &[Tuple]) -> Result<()> {
        for t in insert.iter().chain(delete) {
            t.validate()?;
        }
        for t in insert {
            if let Some(ino) = t.object.ino() {
                let inode = self.get_inode(ino)?;
                if crate::access::rebac::Namespace::of_kind(inode.kind()) != t.object.ns {
                    return Err(KernelError::Invalid(format!(
                        "{} is a {}, not a {}",
                        t.object,
                        inode.kind().as_str(),
                        t.object.ns.as_str()
                    )));
                }
            }
            self.insert(keys::tuple(t), enc(t));
        }
        for t in delete {
            self.remove(keys::tuple(t));
        }
        self.touch_auth();
        Ok(())
    }

    /// The patches of file `ino` once a `SetContent` to `size` bytes has
    /// applied `change` (an inline file has none), refused past
    /// [`PATCH_MAX`] or past the file's end.
    fn patched(&self, ino: Ino, size: u64, inline: bool, change: &Patches) -> Result<Extents> {
        let mut patches = match (inline, change) {
            (true, Patches::Add(_)) => {
                return Err(KernelError::Invalid("patches over an inline file".into()))
            }
            (true, _) | (false, Patches::Clear) => Extents::default(),
            (false, _) => self.patches(ino)?,
        };
        patches.truncate(size);
        if let Patches::Add(pieces) = change {
            let adding: u64 = pieces.iter().map(|p| p.bytes.len() as u64).sum();
            if adding > PATCH_MAX {
                return Err(KernelError::Invalid(format!(
                    "{adding} bytes of patches in one command (at most {PATCH_MAX})"
                )));
            }
            for Patch { at, bytes } in pieces {
                if at
                    .checked_add(bytes.len() as u64)
                    .is_none_or(|end| end > size)
                {
                    return Err(KernelError::Invalid(format!(
                        "a patch at {at} of {} bytes past the file's {size}",
                        bytes.len()
                    )));
                }
                patches.write(*at, bytes);
            }
        }
        if patches.bytes() > PATCH_MAX {
            return Err(KernelError::Invalid(format!(
                "{} bytes of patches for one file (at most {PATCH_MAX})",
                patches.bytes()
            )));
        }
        Ok(patches)
    }

    fn drop_chunks_from(&mut self, ino: Ino, from: u64) -> Result<()> {
        for key in self.keys_in(keys::chunk(ino, from), keys::chunk_prefix(ino + 1))? {
            if let Some(v) = self.get(&key)? {
                self.count_ref(&dec::<ChunkRef>(&v)?.hash, -1)?;
            }
            self.remove(key);
        }
        Ok(())
    }

    /// Points slot `idx` of file `ino` at `chunk`, keeping the counts.
    fn set_chunk(&mut self, ino: Ino, idx: u64, chunk: &ChunkRef) -> Result<()> {
        let key = keys::chunk(ino, idx);
        if let Some(v) = self.get(&key)? {
            let old: ChunkRef = dec(&v)?;
            if old.hash == chunk.hash {
                return Ok(());
            }
            self.count_ref(&old.hash, -1)?;
        }
        self.count_ref(&chunk.hash, 1)?;
        self.insert(key, enc(chunk));
        Ok(())
    }

    /// Adds `delta` (±1) to the count of chunk `hash`. At zero the chunk is
    /// recorded as unreferenced; named again, it no longer is.
    fn count_ref(&mut self, hash: &[u8; 32], delta: i64) -> Result<()> {
        self.keep_refs()?;
        let key = keys::refs(hash);
        let n = match self.get(&key)? {
            Some(v) => u64::from_be_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| KernelError::Corrupt("chunk reference count".into()))?,
            ),
            None => 0,
        };
        let n = n.checked_add_signed(delta).ok_or_else(|| {
            KernelError::Corrupt(format!(
                "chunk {} counted below zero",
                crate::files::content::hash_hex(hash)
            ))
        })?;
        if n == 0 {
            self.remove(key);
            self.insert(keys::unreferenced(hash), Vec::new());
        } else {
            if n == 1 && delta > 0 {
                self.remove(keys::unreferenced(hash));
            }
            self.insert(key, n.to_be_bytes().to_vec());
        }
        Ok(())
    }

    /// Counts every chunk slot once, for a zone from before the counts
    /// were kept (deterministically: from the state every replica has).
    fn keep_refs(&mut self) -> Result<()> {
        if self.get(keys::REFS_KEPT)?.is_some() {
            return Ok(());
        }
        let mut counts: BTreeMap<[u8; 32], u64> = BTreeMap::new();
        let mut end = keys::ALL_CHUNKS.to_vec();
        *end.last_mut().expect("non-empty") += 1;
        for key in self.keys_in(keys::ALL_CHUNKS.to_vec(), end)? {
            if let Some(v) = self.get(&key)? {
                *counts.entry(dec::<ChunkRef>(&v)?.hash).or_default() += 1;
            }
        }
        for (hash, n) in counts {
            self.insert(keys::refs(&hash), n.to_be_bytes().to_vec());
        }
        self.insert(keys::REFS_KEPT.to_vec(), Vec::new());
        Ok(())
    }

    fn adjust_entries(dir: &mut Inode, delta: i64, now: i64) {
        if let InodeBody::Dir { entries } = &mut dir.body {
            *entries = entries.saturating_add_signed(delta);
        }
        dir.mtime = now;
        dir.ctime = now;
        dir.version += 1;
    }

    fn run(&mut self, cmd: &ZoneCommand) -> Result<Applied> {
        match cmd {
            ZoneCommand::Init { now, owners } => {
                if self.inode(ROOT_INO)?.is_none() {
                    self.write_tuples(owners, &[])?;
                    self.put_inode(&Inode {
                        ino: ROOT_INO,
                        parent: ROOT_INO,
                        size: 0,
                        version: 0,
                        atime: *now,
                        mtime: *now,
                        ctime: *now,
                        body: InodeBody::Dir { entries: 0 },
                    })?;
                }
                Ok(Applied::Done)
            }
            ZoneCommand::WriteTuples { insert, delete } => {
                self.write_tuples(insert, delete)?;
                Ok(Applied::Done)
            }
            ZoneCommand::Create {
                parent,
                name,
                ino,
                new,
                now,
            } => self.create(*parent, name, *ino, new, *now),
            ZoneCommand::SetContent {
                ino,
                expect_version,
                size,
                inline,
                chunks,
                drop_from,
                patches,
                now,
            } => {
                let mut inode = self.get_inode(*ino)?;
                match inode.body {
                    InodeBody::Regular { .. } => {}
                    InodeBody::Dir { .. } => {
                        return Err(KernelError::IsDirectory(format!("inode {ino}")))
                    }
                    _ => {
                        return Err(KernelError::Invalid(format!(
                            "inode {ino} is not a regular file"
                        )))
                    }
                }
                if inode.version != *expect_version {
                    return Err(KernelError::Conflict(*ino));
                }
                let patched = self.patched(*ino, *size, inline.is_some(), patches)?;
                self.put_patches(*ino, &patched);
                if inline.is_some() {
                    self.drop_chunks_from(*ino, 0)?;
                } else if let Some(from) = drop_from {
                    self.drop_chunks_from(*ino, *from)?;
                }
                for (idx, chunk) in chunks {
                    self.set_chunk(*ino, *idx, chunk)?;
                }
                inode.body = InodeBody::Regular {
                    inline: inline.clone(),
                };
                inode.size = *size;
                inode.version += 1;
                inode.mtime = *now;
                inode.ctime = *now;
                self.put_inode(&inode)?;
                Ok(Applied::Inode(inode))
            }
            ZoneCommand::PipeCheckpoint { ino, checkpoint } => {
                let InodeBody::Pipe { capacity } = self.get_inode(*ino)?.body else {
                    return Err(KernelError::Invalid(format!("inode {ino} is not a pipe")));
                };
                let mut record: PipeRecord = match self.get(&keys::pipe(*ino))? {
                    Some(v) => dec(&v)?,
                    None => PipeRecord::default(),
                };
                record.apply(checkpoint, capacity)?;
                self.insert(keys::pipe(*ino), enc(&record));
                Ok(Applied::Done)
            }
            ZoneCommand::Rename {
                src_parent,
                src_name,
                dst_parent,
                dst_name,
                now,
            } => self.rename(*src_parent, src_name, *dst_parent, dst_name, None, *now),
            ZoneCommand::Remove {
                parent,
                name,
                dir,
                now,
            } => {
                let (parent_inode, mut target) = self.named(*parent, name)?;
                check_replaceable(&target, *dir, name)?;
                if self.unname(&mut target, *parent, name)? {
                    target.ctime = *now;
                    self.put_inode(&target)?;
                } else {
                    self.drop_inode(&target)?;
                }
                self.drop_name(parent_inode, name, *now)?;
                Ok(Applied::Done)
            }
            ZoneCommand::SetTimes {
                ino,
                atime,
                mtime,
                now,
            } => {
                let mut inode = self.get_inode(*ino)?;
                if let Some(a) = atime {
                    inode.atime = *a;
                }
                if let Some(m) = mtime {
                    inode.mtime = *m;
                }
                inode.ctime = *now;
                self.put_inode(&inode)?;
                Ok(Applied::Inode(inode))
            }
            ZoneCommand::SetQuota { quota } => {
                self.insert(keys::QUOTA.to_vec(), enc(quota));
                Ok(Applied::Done)
            }
            ZoneCommand::SetSecret {
                destination,
                headers,
            } => {
                crate::access::secret::validate(destination, headers)?;
                if headers.is_empty() {
                    self.remove(keys::secret(destination));
                } else {
                    self.insert(keys::secret(destination), enc(headers));
                }
                Ok(Applied::Done)
            }
            ZoneCommand::RevokeToken { id } => {
                crate::access::token::check_id(id)?;
                self.insert(keys::revoked(id), Vec::new());
                Ok(Applied::Done)
            }
            ZoneCommand::Orphan {
                parent,
                name,
                holder,
                now,
            } => {
                let (parent_inode, mut target) = self.named(*parent, name)?;
                if target.kind() != FileKind::Regular {
                    return Err(KernelError::Invalid(format!(
                        "{name:?} is not a regular file: only files outlive their name"
                    )));
                }
                // With another name left, the file lives on by it.
                if !self.unname(&mut target, *parent, name)? {
                    self.insert(keys::orphan(target.ino), enc(holder));
                }
                target.ctime = *now;
                self.put_inode(&target)?;
                self.drop_name(parent_inode, name, *now)?;
                Ok(Applied::Done)
            }
            ZoneCommand::Replace {
                src_parent,
                src_name,
                dst_parent,
                dst_name,
                holder,
                now,
            } => self.rename(
                *src_parent,
                src_name,
                *dst_parent,
                dst_name,
                Some(*holder),
                *now,
            ),
            ZoneCommand::Collected { hashes } => {
                for hash in hashes {
                    self.remove(keys::unreferenced(hash));
                }
                Ok(Applied::Done)
            }
            ZoneCommand::Link {
                src_parent,
                src_name,
                dst_parent,
                dst_name,
                now,
            } => self.link(*src_parent, src_name, *dst_parent, dst_name, *now),
            ZoneCommand::Reap { ino } => {
                if self.get(&keys::orphan(*ino))?.is_some() {
                    let inode = self.get_inode(*ino)?;
                    self.remove(keys::orphan(*ino));
                    self.drop_inode(&inode)?;
                }
                Ok(Applied::Done)
            }
        }
    }

    /// Directory `parent` and the inode it names `name`.
    fn named(&self, parent: Ino, name: &str) -> Result<(Inode, Inode)> {
        let dir = self.get_dir(parent)?;
        let entry = self
            .dentry(parent, name)?
            .ok_or_else(|| KernelError::NotFound(name.to_owned()))?;
        Ok((dir, self.get_inode(entry.ino)?))
    }

    /// Removes `name` from directory `dir` (the inode it named is the
    /// caller's to keep or drop).
    fn drop_name(&mut self, mut dir: Inode, name: &str, now: i64) -> Result<()> {
        self.remove(keys::dentry(dir.ino, name));
        Self::adjust_entries(&mut dir, -1, now);
        self.put_inode(&dir)
    }

    fn create(
        &mut self,
        parent: Ino,
        name: &str,
        ino: Ino,
        new: &NewInode,
        now: i64,
    ) -> Result<Applied> {
        crate::files::path::check_new_name(name)?;
        let mut parent_inode = self.get_dir(parent)?;
        if self.dentry(parent, name)?.is_some() {
            return Err(KernelError::Exist(name.to_owned()));
        }
        if ino == 0 || self.inode(ino)?.is_some() {
            // The proposer picked a taken number; it retries with another.
            return Err(KernelError::Conflict(ino));
        }
        let body = match new {
            NewInode::Dir => InodeBody::Dir { entries: 0 },
            NewInode::Regular => InodeBody::Regular {
                inline: Some(Vec::new()),
            },
            NewInode::Mount { target } => InodeBody::Mount {
                target: target.clone(),
            },
            NewInode::Pipe { capacity } => InodeBody::Pipe {
                capacity: *capacity,
            },
            NewInode::Symlink { target } => {
                crate::files::path::check_link_target(target)?;
                InodeBody::Symlink {
                    target: target.clone(),
                }
            }
        };
        // A link's size is its target's length, as POSIX `lstat` says.
        let size = match new {
            NewInode::Symlink { target } => target.len() as u64,
            _ => 0,
        };
        let inode = Inode {
            ino,
            parent,
            size,
            version: 0,
            atime: now,
            mtime: now,
            ctime: now,
            body,
        };
        self.put_inode(&inode)?;
        self.insert(
            keys::dentry(parent, name),
            enc(&Dentry {
                ino,
                kind: inode.kind(),
            }),
        );
        Self::adjust_entries(&mut parent_inode, 1, now);
        self.put_inode(&parent_inode)?;
        Ok(Applied::Inode(inode))
    }

    /// Moves an entry, replacing a compatible one at the destination: the
    /// replaced inode is deleted, or, if it is a regular file and `keep_for`
    /// names the node holding it open, kept as that node's orphan.
    fn rename(
        &mut self,
        src_parent: Ino,
        src_name: &str,
        dst_parent: Ino,
        dst_name: &str,
        keep_for: Option<ReplicaId>,
        now: i64,
    ) -> Result<Applied> {
        crate::files::path::check_new_name(dst_name)?;
        let src_dir = self.get_dir(src_parent)?;
        let dst_dir = self.get_dir(dst_parent)?;
        let entry = self
            .dentry(src_parent, src_name)?
            .ok_or_else(|| KernelError::NotFound(src_name.to_owned()))?;
        if src_parent == dst_parent && src_name == dst_name {
            return Ok(Applied::Done);
        }
        if entry.kind == FileKind::Dir {
            // Refuse moving a directory into its own subtree.
            let mut cur = dst_parent;
            loop {
                if cur == entry.ino {
                    return Err(KernelError::Invalid(format!(
                        "cannot move directory {src_name:?} into its own subtree"
                    )));
                }
                if cur == ROOT_INO {
                    break;
                }
                cur = self.get_inode(cur)?.parent;
            }
        }
        let replaced = self.dentry(dst_parent, dst_name)?;
        if let Some(old) = replaced {
            if old.ino == entry.ino {
                return Ok(Applied::Done);
            }
            let mut old_inode = self.get_inode(old.ino)?;
            check_replaceable(&old_inode, entry.kind == FileKind::Dir, dst_name)?;
            if self.unname(&mut old_inode, dst_parent, dst_name)? {
                old_inode.ctime = now;
                self.put_inode(&old_inode)?;
            } else {
                match keep_for {
                    Some(holder) if old_inode.kind() == FileKind::Regular => {
                        self.insert(keys::orphan(old_inode.ino), enc(&holder));
                    }
                    _ => self.drop_inode(&old_inode)?,
                }
            }
        }
        // Moving changes what the inode inherits from.
        self.touch_auth();
        let mut moved = self.get_inode(entry.ino)?;
        if !self.names(moved.ino)?.is_empty() {
            self.remove(keys::name(moved.ino, src_parent, src_name));
            self.insert(keys::name(moved.ino, dst_parent, dst_name), Vec::new());
        }
        moved.parent = dst_parent;
        moved.ctime = now;
        self.put_inode(&moved)?;
        self.remove(keys::dentry(src_parent, src_name));
        self.insert(keys::dentry(dst_parent, dst_name), enc(&entry));
        // The target gains a name unless it replaced one.
        let grew = if replaced.is_some() { 0 } else { 1 };
        if src_parent == dst_parent {
            let mut dir = src_dir;
            Self::adjust_entries(&mut dir, grew - 1, now);
            self.put_inode(&dir)?;
        } else {
            let (mut s, mut d) = (src_dir, dst_dir);
            Self::adjust_entries(&mut s, -1, now);
            Self::adjust_entries(&mut d, grew, now);
            self.put_inode(&s)?;
            self.put_inode(&d)?;
        }
        Ok(Applied::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> ZoneState {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let s = ZoneState::new(db.open_tree("z").unwrap());
        s.apply(
            1,
            &ZoneCommand::Init {
                now: 1,
                owners: vec![],
            },
        )
        .unwrap()
        .unwrap();
        s
    }

    fn create(
        s: &ZoneState,
        idx: u64,
        parent: Ino,
        name: &str,
        ino: Ino,
        new: NewInode,
    ) -> Result<Applied> {
        s.apply(
            idx,
            &ZoneCommand::Create {
                parent,
                name: name.into(),
                ino,
                new,
                now: idx as i64,
            },
        )
        .unwrap()
    }

    fn chunk(n: u8) -> ChunkRef {
        ChunkRef {
            hash: [n; 32],
            len: 10,
        }
    }

    fn set(s: &ZoneState, idx: u64, ino: Ino, version: u64, slots: &[(u64, u8)]) {
        s.apply(
            idx,
            &ZoneCommand::SetContent {
                ino,
                expect_version: version,
                size: 3 * 1024 * 1024,
                inline: None,
                chunks: slots.iter().map(|(i, n)| (*i, chunk(*n))).collect(),
                drop_from: None,
                patches: Patches::Keep,
                now: 1,
            },
        )
        .unwrap()
        .unwrap();
    }

    /// Reference counts follow every slot change, a chunk named twice is
    /// counted twice, and a zone from before the counts is counted once
    /// at its first change, from its chunk map.
    #[test]
    fn chunk_references_are_counted_and_unreferenced_chunks_listed() {
        let s = state();
        create(&s, 2, ROOT_INO, "a", 10, NewInode::Regular).unwrap();
        create(&s, 3, ROOT_INO, "b", 11, NewInode::Regular).unwrap();
        set(&s, 4, 10, 0, &[(0, 1), (1, 2)]);
        set(&s, 5, 11, 0, &[(0, 1)]);
        assert_eq!(
            (
                s.chunk_refs(&[1; 32]).unwrap(),
                s.chunk_refs(&[2; 32]).unwrap()
            ),
            (2, 1)
        );
        // Slot 1 of `a` now names chunk 3: chunk 2 is unreferenced.
        set(&s, 6, 10, 1, &[(1, 3)]);
        assert_eq!(s.unreferenced(10).unwrap(), vec![[2; 32]]);
        // Named again before any collector came: off the list.
        set(&s, 7, 11, 1, &[(1, 2)]);
        assert!(s.unreferenced(10).unwrap().is_empty());
        // Removing `a` drops its slots: chunk 3 goes, chunk 1 stays (b).
        s.apply(
            8,
            &ZoneCommand::Remove {
                parent: ROOT_INO,
                name: "a".into(),
                dir: false,
                now: 8,
            },
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.unreferenced(10).unwrap(), vec![[3; 32]]);
        assert_eq!(s.chunk_refs(&[1; 32]).unwrap(), 1);
        s.apply(
            9,
            &ZoneCommand::Collected {
                hashes: vec![[3; 32]],
            },
        )
        .unwrap()
        .unwrap();
        assert!(s.unreferenced(10).unwrap().is_empty());

        // A zone from before the counts: forget them, then change a slot.
        for key in [
            keys::REFS_KEPT.to_vec(),
            keys::refs(&[1; 32]),
            keys::refs(&[2; 32]),
        ] {
            s.tree.remove(key).unwrap();
        }
        assert_eq!(s.chunk_refs(&[1; 32]).unwrap(), 1, "counted from the map");
        set(&s, 10, 11, 2, &[(0, 4)]);
        assert_eq!(s.chunk_refs(&[1; 32]).unwrap(), 0);
        assert_eq!(s.chunk_refs(&[2; 32]).unwrap(), 1);
        assert_eq!(s.chunk_refs(&[4; 32]).unwrap(), 1);
        assert_eq!(s.unreferenced(10).unwrap(), vec![[1; 32]]);
    }

    #[test]
    fn refused_commands_change_nothing_but_the_applied_index() {
        let s = state();
        create(&s, 2, ROOT_INO, "a", 10, NewInode::Dir).unwrap();
        let before = s.dump().unwrap();
        let err = create(&s, 3, ROOT_INO, "a", 11, NewInode::Regular).unwrap_err();
        assert!(matches!(err, KernelError::Exist(_)));
        let after = s.dump().unwrap();
        assert_eq!(s.applied_index().unwrap(), 3);
        let strip = |v: StateDump| {
            v.into_iter()
                .filter(|(k, _)| k != keys::APPLIED)
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(before), strip(after));
    }

    #[test]
    fn rename_into_own_subtree_is_refused() {
        let s = state();
        create(&s, 2, ROOT_INO, "a", 10, NewInode::Dir).unwrap();
        create(&s, 3, 10, "b", 11, NewInode::Dir).unwrap();
        let r = s
            .apply(
                4,
                &ZoneCommand::Rename {
                    src_parent: ROOT_INO,
                    src_name: "a".into(),
                    dst_parent: 11,
                    dst_name: "x".into(),
                    now: 4,
                },
            )
            .unwrap();
        assert!(matches!(r, Err(KernelError::Invalid(_))));
    }

    #[test]
    fn rename_replaces_and_keeps_entry_counts() {
        let s = state();
        create(&s, 2, ROOT_INO, "d", 10, NewInode::Dir).unwrap();
        create(&s, 3, ROOT_INO, "f", 11, NewInode::Regular).unwrap();
        create(&s, 4, 10, "g", 12, NewInode::Regular).unwrap();
        s.apply(
            5,
            &ZoneCommand::Rename {
                src_parent: ROOT_INO,
                src_name: "f".into(),
                dst_parent: 10,
                dst_name: "g".into(),
                now: 5,
            },
        )
        .unwrap()
        .unwrap();
        assert!(s.inode(12).unwrap().is_none(), "replaced inode is gone");
        assert_eq!(s.dentry(10, "g").unwrap().unwrap().ino, 11);
        let entries = |ino| match s.inode(ino).unwrap().unwrap().body {
            InodeBody::Dir { entries } => entries,
            _ => unreachable!(),
        };
        assert_eq!(entries(ROOT_INO), 1);
        assert_eq!(entries(10), 1);
    }

    #[test]
    fn rename_over_a_sibling_drops_one_entry() {
        let s = state();
        create(&s, 2, ROOT_INO, "a", 10, NewInode::Regular).unwrap();
        create(&s, 3, ROOT_INO, "b", 11, NewInode::Regular).unwrap();
        s.apply(
            4,
            &ZoneCommand::Rename {
                src_parent: ROOT_INO,
                src_name: "a".into(),
                dst_parent: ROOT_INO,
                dst_name: "b".into(),
                now: 4,
            },
        )
        .unwrap()
        .unwrap();
        assert!(matches!(
            s.inode(ROOT_INO).unwrap().unwrap().body,
            InodeBody::Dir { entries: 1 }
        ));
    }

    #[test]
    fn one_batch_applies_dependent_entries_and_drops_refused_ones() {
        let s = state();
        let mut a = s.applier();
        let mk = |parent, name: &str, ino, new| ZoneCommand::Create {
            parent,
            name: name.into(),
            ino,
            new,
            now: 2,
        };
        a.apply(2, &mk(ROOT_INO, "d", 10, NewInode::Dir)).unwrap();
        // Sees the directory staged by the previous entry.
        a.apply(3, &mk(10, "f", 11, NewInode::Regular)).unwrap();
        // Refused (name taken): its writes, including inode 12, are dropped.
        assert!(matches!(
            a.apply(4, &mk(10, "f", 12, NewInode::Regular)),
            Err(KernelError::Exist(_))
        ));
        assert!(
            s.inode(10).unwrap().is_none(),
            "nothing is visible before commit"
        );
        a.commit().unwrap();
        assert_eq!(s.applied_index().unwrap(), 4);
        assert_eq!(s.dentry(10, "f").unwrap().unwrap().ino, 11);
        assert!(s.inode(12).unwrap().is_none());
        assert!(matches!(
            s.inode(10).unwrap().unwrap().body,
            InodeBody::Dir { entries: 1 }
        ));
    }

    fn patch(at: u64, bytes: Vec<u8>) -> Patch {
        Patch { at, bytes }
    }

    /// Patches lie within the file, are bounded, belong to chunked files
    /// only, are cut by a truncation and go with the file.
    #[test]
    fn patches_are_bounded_cut_by_truncation_and_dropped_with_the_file() {
        let s = state();
        create(&s, 2, ROOT_INO, "f", 11, NewInode::Regular).unwrap();
        let mut idx = 2;
        let mut apply = |s: &ZoneState, size: u64, inline: Option<Vec<u8>>, patches: Patches| {
            idx += 1;
            let version = s.inode(11).unwrap().map_or(0, |i| i.version);
            s.apply(
                idx,
                &ZoneCommand::SetContent {
                    ino: 11,
                    expect_version: version,
                    size,
                    inline,
                    chunks: vec![],
                    drop_from: None,
                    patches,
                    now: idx as i64,
                },
            )
            .unwrap()
        };
        let invalid = |r: Result<Applied>| matches!(r, Err(KernelError::Invalid(_)));
        // Past the file's end, past the bound, over an inline file: refused.
        assert!(invalid(apply(
            &s,
            10_000,
            None,
            Patches::Add(vec![patch(9_999, vec![1; 2])])
        )));
        assert!(invalid(apply(
            &s,
            10_000,
            None,
            Patches::Add(vec![patch(u64::MAX, vec![1])])
        )));
        let big = PATCH_MAX as usize / 2 + 1;
        assert!(invalid(apply(
            &s,
            1 << 20,
            None,
            Patches::Add(vec![patch(0, vec![1; big]), patch(1 << 19, vec![2; big])])
        )));
        assert!(invalid(apply(
            &s,
            10,
            Some(vec![0; 10]),
            Patches::Add(vec![patch(0, vec![1])])
        )));
        assert_eq!(s.patches(11).unwrap().bytes(), 0);
        // Laid over each other, newest on top; what passes the bound with
        // the older ones is refused.
        apply(
            &s,
            10_000,
            None,
            Patches::Add(vec![patch(0, vec![1; 6000])]),
        )
        .unwrap();
        apply(
            &s,
            10_000,
            None,
            Patches::Add(vec![patch(5000, vec![2; 5000])]),
        )
        .unwrap();
        let p = s.patches(11).unwrap();
        assert_eq!((p.bytes(), p.end()), (10_000, 10_000));
        let mut out = vec![0; 10_000];
        p.overlay(0, &mut out);
        assert!(out[..5000].iter().all(|b| *b == 1) && out[5000..].iter().all(|b| *b == 2));
        assert!(invalid(apply(
            &s,
            1 << 20,
            None,
            Patches::Add(vec![patch(20_000, vec![3; PATCH_MAX as usize - 5000])])
        )));
        // A truncation cuts them; inline content and `Clear` drop them.
        apply(&s, 7000, None, Patches::Keep).unwrap();
        assert_eq!(s.patches(11).unwrap().end(), 7000);
        apply(&s, 3, Some(vec![1, 2, 3]), Patches::Keep).unwrap();
        assert_eq!(s.patches(11).unwrap().bytes(), 0);
        let tail = || Patches::Add(vec![patch(8000, vec![4; 1000])]);
        apply(&s, 9000, None, tail()).unwrap();
        apply(&s, 9000, None, Patches::Clear).unwrap();
        assert_eq!(s.patches(11).unwrap().bytes(), 0);
        apply(&s, 9000, None, tail()).unwrap();
        s.apply(
            99,
            &ZoneCommand::Remove {
                parent: ROOT_INO,
                name: "f".into(),
                dir: false,
                now: 99,
            },
        )
        .unwrap()
        .unwrap();
        assert!(!s.tree.contains_key(keys::patches(11)).unwrap());
    }

    #[test]
    fn stale_version_is_a_conflict() {
        let s = state();
        create(&s, 2, ROOT_INO, "f", 11, NewInode::Regular).unwrap();
        let set = |idx, v| ZoneCommand::SetContent {
            ino: 11,
            expect_version: v,
            size: 1,
            inline: Some(vec![1]),
            chunks: vec![],
            drop_from: None,
            patches: Patches::Keep,
            now: idx,
        };
        s.apply(3, &set(3, 0)).unwrap().unwrap();
        assert_eq!(
            s.apply(4, &set(4, 0)).unwrap(),
            Err(KernelError::Conflict(11))
        );
    }
}
