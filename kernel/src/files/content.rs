//! The content store: immutable chunks addressed by their BLAKE3 hash, kept
//! in an object store (local disk by default, memory for tests, S3 by URL).
//!
//! Files are cut into fixed [`CHUNK_SIZE`] chunks so that a small write into a
//! large file rewrites one chunk, not the file; files up to [`INLINE_MAX`]
//! bytes live inline in their inode instead.
//!
//! Garbage collection is explicit and safe: writers hold a [`WriteGuard`] from
//! the moment they upload a chunk until the metadata naming it has committed,
//! and `gc` excludes them for its whole mark-and-sweep, so a chunk that is
//! referenced, or about to be, is never deleted.
//!
//! Nothing read from the store is trusted: the first time a process serves
//! bytes of a chunk, it reads the whole chunk and checks its hash (a
//! damaged or planted chunk is an error, never data), and a chunk already
//! present is reused only once it is checked (otherwise it is rewritten).
//! On local disk a chunk is made durable (file and directory fsync'd)
//! before `put` returns, so metadata naming it never outlives it.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio::sync::{RwLock, RwLockReadGuard};

use crate::error::{KernelError, Result};
use crate::types::ChunkRef;

/// Size of a content chunk.
pub const CHUNK_SIZE: u64 = 1 << 20;
/// Files this small are stored inline in metadata.
pub const INLINE_MAX: u64 = 4096;
/// The patches of one file at most: the bytes of its small write-outs,
/// kept in the zone's state over its chunks until a write-out that would
/// pass this folds them into the chunks (`ZoneCommand::SetContent`).
pub const PATCH_MAX: u64 = 64 << 10;
/// Chunks remembered as checked at most (then the memory starts over).
const VERIFIED_MAX: usize = 16 * 1024;

const PREFIX: &str = "chunks";
/// `writers/<id>`: one empty object per data directory that has stored
/// chunks here. A store with another writer's marker is shared: no single
/// node can tell which of its chunks are garbage.
const WRITERS: &str = "writers";

/// Held by a writer between uploading chunks and committing their references.
pub type WriteGuard<'a> = RwLockReadGuard<'a, ()>;

/// What a GC pass did.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct GcReport {
    pub scanned: u64,
    pub referenced: u64,
    pub deleted: u64,
    pub bytes_freed: u64,
}

pub struct ContentStore {
    store: Arc<dyn ObjectStore>,
    gc_lock: RwLock<()>,
    /// This data directory's id, marked in the store before its first chunk.
    writer: String,
    registered: tokio::sync::OnceCell<()>,
    /// Chunks whose stored bytes this process has checked against their hash.
    verified: Mutex<HashSet<[u8; 32]>>,
    /// For a store on local disk: its directory, whose chunks are fsync'd.
    durable_dir: Option<std::path::PathBuf>,
    /// Fan-out directories whose own name this process has made durable
    /// (their parent fsync'd since they existed): only the new chunk's
    /// directory needs an fsync then.
    durable_fanouts: Arc<Mutex<HashSet<String>>>,
    /// Human-readable location, for status output.
    pub location: String,
}

pub fn hash_hex(hash: &[u8; 32]) -> String {
    blake3::Hash::from_bytes(*hash).to_hex().to_string()
}

fn chunk_path(hash: &[u8; 32]) -> Path {
    let hex = hash_hex(hash);
    Path::from(format!("{PREFIX}/{}/{hex}", &hex[..2]))
}

fn hash_from_path(p: &Path) -> Option<[u8; 32]> {
    let name = p.filename()?;
    blake3::Hash::from_hex(name).ok().map(|h| *h.as_bytes())
}

impl ContentStore {
    /// A store written as data directory `writer`.
    pub fn new(store: Arc<dyn ObjectStore>, location: String, writer: &str) -> Self {
        ContentStore {
            store,
            gc_lock: RwLock::new(()),
            writer: writer.to_owned(),
            registered: tokio::sync::OnceCell::new(),
            verified: Mutex::default(),
            durable_dir: None,
            durable_fanouts: Arc::default(),
            location,
        }
    }

    /// Local disk under `dir` (created if missing).
    pub fn local(dir: &std::path::Path, writer: &str) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| KernelError::Content(format!("{}: {e}", dir.display())))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)?;
        let mut store = Self::new(Arc::new(fs), dir.display().to_string(), writer);
        store.durable_dir = Some(dir.to_owned());
        Ok(store)
    }

    /// In memory (tests).
    pub fn memory(writer: &str) -> Self {
        let store = Arc::new(object_store::memory::InMemory::new());
        Self::new(store, "memory".into(), writer)
    }

    /// `s3://bucket/prefix`, credentials and region from the usual AWS_* variables.
    pub fn s3(url: &str, writer: &str) -> Result<Self> {
        let s3 = object_store::aws::AmazonS3Builder::from_env()
            .with_url(url)
            .build()?;
        let prefixed = object_store::prefix::PrefixStore::new(s3, url_prefix(url));
        Ok(Self::new(Arc::new(prefixed), url.to_owned(), writer))
    }

    /// Marks this data directory as a writer of the store (once per
    /// process; before its first chunk, and by a node at start).
    pub async fn register(&self) -> Result<()> {
        self.registered
            .get_or_try_init(|| async {
                let marker = Path::from(format!("{WRITERS}/{}", self.writer));
                self.store.put(&marker, PutPayload::new()).await?;
                Ok::<_, KernelError>(())
            })
            .await?;
        Ok(())
    }

    /// The other data directories that have stored chunks here.
    async fn other_writers(&self) -> Result<Vec<String>> {
        let markers: Vec<_> = self
            .store
            .list(Some(&Path::from(WRITERS)))
            .try_collect()
            .await?;
        Ok(markers
            .iter()
            .filter_map(|m| m.location.filename().map(str::to_owned))
            .filter(|id| *id != self.writer)
            .collect())
    }

    /// Taken by writers; see the module docs.
    pub async fn write_guard(&self) -> WriteGuard<'_> {
        self.gc_lock.read().await
    }

    /// Excludes every writer (and reader): held while deciding what to
    /// delete and deleting it.
    pub(crate) async fn exclusive(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.gc_lock.write().await
    }

    /// Whether another data directory has stored chunks here.
    pub(crate) async fn is_shared(&self) -> Result<bool> {
        Ok(!self.other_writers().await?.is_empty())
    }

    /// Deletes the chunk named `hash`; its stored size, or `None` if it was
    /// not there. The caller holds [`Self::exclusive`].
    pub(crate) async fn delete(&self, hash: &[u8; 32]) -> Result<Option<u64>> {
        let Some(size) = self.stored_size(hash).await? else {
            return Ok(None);
        };
        match self.store.delete(&chunk_path(hash)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        self.verified().remove(hash);
        Ok(Some(size))
    }

    /// Stores `bytes` as a chunk and returns its reference. Content already
    /// present is not written again.
    pub async fn put(&self, bytes: Bytes) -> Result<ChunkRef> {
        let len = u32::try_from(bytes.len())
            .ok()
            .filter(|&l| l as u64 <= CHUNK_SIZE)
            .ok_or_else(|| KernelError::Invalid(format!("chunk of {} bytes", bytes.len())))?;
        self.register().await?;
        match &self.durable_dir {
            Some(dir) => self.put_local(dir, bytes, len).await,
            None => self.put_object(bytes, len).await,
        }
    }

    /// `put` through the object store.
    async fn put_object(&self, bytes: Bytes, len: u32) -> Result<ChunkRef> {
        let hash = *blake3::hash(&bytes).as_bytes();
        let chunk = ChunkRef { hash, len };
        let path = chunk_path(&hash);
        // What is stored under the name is reused only if it is the chunk.
        let present = match self.store.head(&path).await {
            Ok(meta) if meta.size == len as u64 => {
                self.is_verified(&hash) || self.verify(&chunk).await?
            }
            _ => false,
        };
        if !present {
            self.store.put(&path, PutPayload::from_bytes(bytes)).await?;
            self.remember(hash);
        }
        Ok(chunk)
    }

    /// `put` on local disk: hashed, written, fsync'd and named in one trip
    /// to the blocking pool (a write-out's chunks so hash and write in
    /// parallel, not one after another on an async worker). The file is
    /// durable before its name appears, and its name (the directory, and
    /// the first time in this process the fan-out directory's own name)
    /// before `put` returns, so metadata naming it never outlives it.
    async fn put_local(&self, dir: &std::path::Path, bytes: Bytes, len: u32) -> Result<ChunkRef> {
        let (dir, fanouts) = (dir.to_owned(), self.durable_fanouts.clone());
        let blocking = |bytes: Bytes, replace: bool| {
            let (dir, fanouts) = (dir.clone(), fanouts.clone());
            async move {
                tokio::task::spawn_blocking(move || store_chunk(&dir, &fanouts, &bytes, replace))
                    .await
                    .map_err(|e| KernelError::Content(format!("storing a chunk: {e}")))?
                    .map_err(|e| KernelError::Content(format!("storing a chunk: {e}")))
            }
        };
        let (hash, stored) = blocking(bytes.clone(), false).await?;
        let chunk = ChunkRef { hash, len };
        // What is stored under the name is reused only if it is the chunk.
        if stored == Stored::Present && !(self.is_verified(&hash) || self.verify(&chunk).await?) {
            blocking(bytes, true).await?;
        }
        self.remember(hash);
        Ok(chunk)
    }

    fn verified(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_verified(&self, hash: &[u8; 32]) -> bool {
        self.verified().contains(hash)
    }

    fn remember(&self, hash: [u8; 32]) {
        let mut verified = self.verified();
        if verified.len() >= VERIFIED_MAX {
            verified.clear();
        }
        verified.insert(hash);
    }

    /// Reads `range` of a chunk (bounded by its length). The first read of
    /// a chunk in this process fetches and checks all of it.
    pub async fn get_range(&self, chunk: &ChunkRef, range: Range<u64>) -> Result<Bytes> {
        let end = range.end.min(chunk.len as u64);
        if range.start >= end {
            return Ok(Bytes::new());
        }
        if !self.is_verified(&chunk.hash) {
            let whole = self.fetch_checked(chunk).await?;
            return Ok(whole.slice(range.start as usize..end as usize));
        }
        let bytes = self
            .store
            .get_range(&chunk_path(&chunk.hash), range.start..end)
            .await?;
        if bytes.len() as u64 != end - range.start {
            return Err(KernelError::Content(format!(
                "chunk {} is shorter than its reference",
                hash_hex(&chunk.hash)
            )));
        }
        Ok(bytes)
    }

    pub async fn get(&self, chunk: &ChunkRef) -> Result<Bytes> {
        self.get_range(chunk, 0..chunk.len as u64).await
    }

    /// The stored size of a chunk, or `None` if it is missing.
    pub async fn stored_size(&self, hash: &[u8; 32]) -> Result<Option<u64>> {
        match self.store.head(&chunk_path(hash)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the stored bytes of `chunk` still hash to its name.
    pub async fn verify(&self, chunk: &ChunkRef) -> Result<bool> {
        match self.fetch_checked(chunk).await {
            Ok(_) => Ok(true),
            Err(KernelError::Content(_)) if self.stored_size(&chunk.hash).await?.is_some() => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// The whole of `chunk`, checked against its length and hash (and
    /// remembered as checked).
    async fn fetch_checked(&self, chunk: &ChunkRef) -> Result<Bytes> {
        let bytes = self
            .store
            .get(&chunk_path(&chunk.hash))
            .await?
            .bytes()
            .await?;
        if bytes.len() != chunk.len as usize || *blake3::hash(&bytes).as_bytes() != chunk.hash {
            return Err(KernelError::Content(format!(
                "chunk {} does not match its hash (damaged or planted); its bytes are not served",
                hash_hex(&chunk.hash)
            )));
        }
        self.remember(chunk.hash);
        Ok(bytes)
    }

    /// Deletes every chunk not in the set `referenced()` returns. Writers are
    /// excluded for the whole pass, so the set cannot go stale meanwhile.
    /// Refused on a store another data directory has written to: its
    /// references are not in the set.
    pub async fn gc<F>(&self, referenced: F) -> Result<GcReport>
    where
        F: FnOnce() -> Result<HashSet<[u8; 32]>>,
    {
        let others = self.other_writers().await?;
        if !others.is_empty() {
            return Err(KernelError::Unsupported(format!(
                "the content store {} is shared with {} other data directories ({}), whose \
                 zones this node cannot see; garbage collection of a shared store is not \
                 supported yet",
                self.location,
                others.len(),
                others.join(", ")
            )));
        }
        let _exclusive = self.gc_lock.write().await;
        let live = referenced()?;
        let mut report = GcReport {
            referenced: live.len() as u64,
            ..GcReport::default()
        };
        let objects: Vec<_> = self
            .store
            .list(Some(&Path::from(PREFIX)))
            .try_collect()
            .await?;
        for meta in objects {
            report.scanned += 1;
            match hash_from_path(&meta.location) {
                Some(h) if live.contains(&h) => {}
                // Unreferenced chunks, and stray files in our prefix.
                _ => {
                    self.store.delete(&meta.location).await?;
                    report.deleted += 1;
                    report.bytes_freed += meta.size;
                }
            }
        }
        Ok(report)
    }
}

/// What [`store_chunk`] found.
#[derive(PartialEq, Eq)]
enum Stored {
    Written,
    /// A file of the chunk's length was already under its name (the
    /// caller checks it is the chunk).
    Present,
}

/// Hashes `bytes` and stores them under `dir` as the object store names
/// chunks, unless a file of their length is there already (or `replace`):
/// written to a new file beside the name, fsync'd, renamed over it, and
/// the directory fsync'd (and its parent, the first time this process
/// stores into it: the fan-out directory may be new).
fn store_chunk(
    dir: &std::path::Path,
    fanouts: &Mutex<HashSet<String>>,
    bytes: &[u8],
    replace: bool,
) -> std::io::Result<([u8; 32], Stored)> {
    use std::io::Write;
    let hash = *blake3::hash(bytes).as_bytes();
    let name = chunk_path(&hash);
    let file = dir.join(name.as_ref());
    let fanout = file.parent().unwrap_or(dir).to_owned();
    match std::fs::metadata(&file) {
        Ok(meta) if meta.len() == bytes.len() as u64 && !replace => {
            return Ok((hash, Stored::Present))
        }
        _ => {}
    }
    std::fs::create_dir_all(&fanout)?;
    let tmp = fanout.join(format!(
        "{}#{:016x}",
        hash_hex(&hash),
        rand::random::<u64>()
    ));
    let written = (|| {
        let mut f = std::fs::File::create_new(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &file)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let sync = |p: &std::path::Path| std::fs::File::open(p)?.sync_all();
    sync(&fanout)?;
    let fanout_name = fanout.to_string_lossy().into_owned();
    let known = fanouts
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(&fanout_name);
    if !known {
        if let Some(parent) = fanout.parent() {
            sync(parent)?;
        }
        fanouts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fanout_name);
    }
    Ok((hash, Stored::Written))
}

fn url_prefix(url: &str) -> String {
    url.trim_start_matches("s3://")
        .split_once('/')
        .map(|(_, p)| p.trim_matches('/').to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_is_content_addressed_and_gc_keeps_referenced_chunks() {
        let cs = ContentStore::memory("a");
        let a = cs.put(Bytes::from_static(b"alpha")).await.unwrap();
        let a2 = cs.put(Bytes::from_static(b"alpha")).await.unwrap();
        let b = cs.put(Bytes::from_static(b"beta")).await.unwrap();
        assert_eq!(a, a2);
        assert_eq!(&cs.get(&a).await.unwrap()[..], b"alpha");
        assert_eq!(&cs.get_range(&b, 1..3).await.unwrap()[..], b"et");
        let report = cs.gc(|| Ok([a.hash].into_iter().collect())).await.unwrap();
        assert_eq!((report.scanned, report.deleted), (2, 1));
        assert!(cs.stored_size(&b.hash).await.unwrap().is_none());
        assert!(cs.verify(&a).await.unwrap());
    }

    #[tokio::test]
    async fn a_store_another_data_directory_wrote_to_is_never_collected() {
        let shared: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let mine = ContentStore::new(shared.clone(), "shared".into(), "mine");
        let theirs = ContentStore::new(shared, "shared".into(), "theirs");
        let kept = theirs
            .put(Bytes::from_static(b"their chunk"))
            .await
            .unwrap();
        mine.put(Bytes::from_static(b"mine")).await.unwrap();
        let refused = mine.gc(|| Ok(HashSet::new())).await.unwrap_err();
        assert!(matches!(refused, KernelError::Unsupported(ref m) if m.contains("theirs")));
        assert!(mine.stored_size(&kept.hash).await.unwrap().is_some());
        // Alone in its store, a data directory collects.
        let alone = ContentStore::memory("alone");
        alone.put(Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(alone.gc(|| Ok(HashSet::new())).await.unwrap().deleted, 1);
    }

    #[tokio::test]
    async fn a_damaged_or_planted_chunk_is_never_served_and_is_replaced_on_put() {
        let shared: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let writer = ContentStore::new(shared.clone(), "shared".into(), "w");
        let data = Bytes::from(vec![7u8; 1000]);
        let chunk = writer.put(data.clone()).await.unwrap();
        // Same length, other bytes: what a flipped bit or a planted file is.
        let path = chunk_path(&chunk.hash);
        shared
            .put(&path, PutPayload::from(vec![8u8; 1000]))
            .await
            .unwrap();
        let reader = ContentStore::new(shared.clone(), "shared".into(), "r");
        let err = reader.get_range(&chunk, 10..20).await.unwrap_err();
        assert!(err.to_string().contains("does not match its hash"), "{err}");
        assert!(!reader.verify(&chunk).await.unwrap());
        // Storing the real bytes again repairs it instead of reusing it.
        reader.put(data.clone()).await.unwrap();
        assert_eq!(reader.get(&chunk).await.unwrap(), data);
        let fresh = ContentStore::new(shared, "shared".into(), "f");
        assert_eq!(&fresh.get_range(&chunk, 5..8).await.unwrap()[..], &[7u8; 3]);
    }

    #[tokio::test]
    async fn on_local_disk_a_chunk_is_stored_once_and_a_damaged_one_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::local(dir.path(), "w").unwrap();
        let data = Bytes::from(vec![5u8; 3000]);
        let chunk = cs.put(data.clone()).await.unwrap();
        assert_eq!(cs.put(data.clone()).await.unwrap(), chunk);
        let file = dir.path().join(chunk_path(&chunk.hash).as_ref());
        let fanout = file.parent().unwrap();
        // One file under the name, nothing left beside it.
        assert_eq!(std::fs::read_dir(fanout).unwrap().count(), 1);
        assert_eq!(std::fs::read(&file).unwrap(), data);
        // Planted bytes of the same length: a fresh process checks them
        // and writes the chunk again instead of naming them.
        std::fs::write(&file, vec![6u8; 3000]).unwrap();
        let fresh = ContentStore::local(dir.path(), "w").unwrap();
        assert_eq!(fresh.put(data.clone()).await.unwrap(), chunk);
        assert_eq!(fresh.get(&chunk).await.unwrap(), data);
        assert_eq!(std::fs::read_dir(fanout).unwrap().count(), 1);
    }

    #[test]
    fn s3_prefix_is_taken_from_the_url() {
        assert_eq!(url_prefix("s3://bucket/a/b/"), "a/b");
        assert_eq!(url_prefix("s3://bucket"), "");
    }
}
