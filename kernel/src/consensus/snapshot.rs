//! A snapshot's payload, read and written as a stream, and the spool an
//! incoming one is received into.
//!
//! The payload is the zone's state as key/value records after the
//! members' roster:
//!
//! ```text
//! MAGIC  u32le roster-length  roster (postcard)
//! { u32le key-length (≥ 1)  u32le value-length  key  value }*
//! u32le 0                     end, and nothing after it
//! ```
//!
//! Every length is bounded before anything is allocated, so a hostile
//! payload costs at most one record's bounds in memory however large it
//! is. A leader builds its payload in memory (raft-rs hands snapshots
//! around as bytes); a node receiving one over the network writes it to a
//! file in its spool directory instead, and the replica installs it from
//! there (`raftstore`), so neither receiving nor installing holds a
//! snapshot in memory. The raft message then carries only a marker naming
//! the spool file, which only `Kernel::deliver_snapshot` can set.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::consensus::raftstore::Roster;
use crate::error::{KernelError, Result};
use crate::zone::state::keys::STATE_PREFIX;

const MAGIC: &[u8] = b"nexus-snapshot-2\n";
/// What a spooled snapshot's raft message carries instead of its payload.
const SPOOLED: &[u8] = b"\0nexus-spooled\0";
/// Bounds on one record, checked before it is read.
pub const MAX_KEY: u32 = 64 << 10;
pub const MAX_VALUE: u32 = 16 << 20;
const MAX_ROSTER: u32 = 1 << 20;

fn corrupt(why: impl std::fmt::Display) -> KernelError {
    KernelError::Corrupt(format!("snapshot: {why}"))
}

/// Writes a payload: the roster, then [`SnapshotWriter::pair`] for each
/// record, then [`SnapshotWriter::finish`].
pub struct SnapshotWriter<W: Write> {
    out: W,
}

impl<W: Write> SnapshotWriter<W> {
    pub fn new(mut out: W, roster: &Roster) -> Result<Self> {
        let roster = postcard::to_allocvec(roster)?;
        out.write_all(MAGIC)?;
        out.write_all(&(roster.len() as u32).to_le_bytes())?;
        out.write_all(&roster)?;
        Ok(SnapshotWriter { out })
    }

    pub fn pair(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        if key.is_empty() || key.len() > MAX_KEY as usize || value.len() > MAX_VALUE as usize {
            return Err(corrupt(format!(
                "a record of {} + {} bytes is out of bounds",
                key.len(),
                value.len()
            )));
        }
        self.out.write_all(&(key.len() as u32).to_le_bytes())?;
        self.out.write_all(&(value.len() as u32).to_le_bytes())?;
        self.out.write_all(key)?;
        self.out.write_all(value)?;
        Ok(())
    }

    pub fn finish(mut self) -> Result<W> {
        self.out.write_all(&0u32.to_le_bytes())?;
        Ok(self.out)
    }
}

/// Reads a payload record by record; refuses one that is malformed, out
/// of bounds, has a key outside the state, or goes on past its end.
pub struct SnapshotReader<R: Read> {
    input: R,
    done: bool,
}

fn read_u32(r: &mut impl Read) -> Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b).map_err(corrupt)?;
    Ok(u32::from_le_bytes(b))
}

fn read_exactly(r: &mut impl Read, len: u32) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    let got = r.take(len as u64).read_to_end(&mut v)?;
    if got != len as usize {
        return Err(corrupt("it ends inside a record"));
    }
    Ok(v)
}

impl<R: Read> SnapshotReader<R> {
    /// Reads the header; returns the roster and the reader of the records.
    pub fn open(mut input: R) -> Result<(Roster, Self)> {
        let mut magic = [0u8; MAGIC.len()];
        input
            .read_exact(&mut magic)
            .map_err(|_| corrupt("not a snapshot"))?;
        if magic != MAGIC {
            return Err(corrupt("not a snapshot"));
        }
        let len = read_u32(&mut input)?;
        if len > MAX_ROSTER {
            return Err(corrupt(format!("a roster of {len} bytes")));
        }
        let roster = postcard::from_bytes(&read_exactly(&mut input, len)?)?;
        Ok((roster, SnapshotReader { input, done: false }))
    }

    /// The next record, or `None` after the last.
    pub fn pair(&mut self) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        if self.done {
            return Ok(None);
        }
        let klen = read_u32(&mut self.input)?;
        if klen == 0 {
            self.done = true;
            let mut past = [0u8; 1];
            return match self.input.read(&mut past)? {
                0 => Ok(None),
                _ => Err(corrupt("bytes after its end")),
            };
        }
        let vlen = read_u32(&mut self.input)?;
        if klen > MAX_KEY || vlen > MAX_VALUE {
            return Err(corrupt(format!("a record of {klen} + {vlen} bytes")));
        }
        let key = read_exactly(&mut self.input, klen)?;
        if !key.starts_with(STATE_PREFIX) {
            return Err(corrupt("a key outside the state"));
        }
        let value = read_exactly(&mut self.input, vlen)?;
        Ok(Some((key, value)))
    }

    /// Reads to the end, checking every record.
    pub fn check_all(mut self) -> Result<()> {
        while self.pair()?.is_some() {}
        Ok(())
    }
}

/// Whether a payload carried in a raft message decodes whole: one that
/// does not is refused before raft-rs takes it (its installation could
/// only fail). A spool marker is not a payload.
pub fn decodes(data: &[u8]) -> bool {
    SnapshotReader::open(data)
        .and_then(|(_, r)| r.check_all())
        .is_ok()
}

/// The snapshot data that names spool file `name`.
pub fn marker_of(name: &str) -> Vec<u8> {
    [SPOOLED, name.as_bytes()].concat()
}

/// The spool file a raft message's snapshot data names, if it is a marker.
pub fn spooled_name(data: &[u8]) -> Option<&str> {
    let name = std::str::from_utf8(data.strip_prefix(SPOOLED)?).ok()?;
    valid_name(name).then_some(name)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name.ends_with(".snap")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
        && !name.starts_with('.')
}

/// The directory incoming snapshots are received into
/// (`<home>/snapshots`). Cheap to clone.
#[derive(Clone, Debug)]
pub struct SpoolDir {
    dir: PathBuf,
}

static NEXT_SPOOL: AtomicU64 = AtomicU64::new(0);

impl SpoolDir {
    /// Opens (or creates) the spool, removing receives a crash cut short.
    /// Complete spool files stay: an install interrupted by the crash is
    /// redone from one when its zone opens (which removes the others).
    pub fn open(home: &Path) -> Result<Self> {
        let dir = home.join("snapshots");
        std::fs::create_dir_all(&dir)
            .map_err(|e| KernelError::Storage(format!("{}: {e}", dir.display())))?;
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "part") {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(SpoolDir { dir })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Starts receiving a snapshot of zone `zone` (an id: letters, digits,
    /// `-`, `_`, `.`).
    pub fn create(&self, zone: &str) -> Result<SpoolWriter> {
        let n = NEXT_SPOOL.fetch_add(1, Ordering::Relaxed);
        let stem = format!("{zone}~{}-{n}", std::process::id());
        let part = self.dir.join(format!("{stem}.part"));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&part)?;
        Ok(SpoolWriter {
            file: Some(file),
            renamed: false,
            part,
            name: format!("{stem}.snap"),
            spool: self.clone(),
        })
    }

    /// A complete spool file of this directory, by the name a marker gave.
    pub fn reader(&self, name: &str) -> Result<(u64, BufReader<File>)> {
        if !valid_name(name) {
            return Err(corrupt(format!("no spool file may be named {name:?}")));
        }
        let file = File::open(self.dir.join(name))
            .map_err(|e| KernelError::Storage(format!("snapshot spool {name}: {e}")))?;
        let len = file.metadata()?.len();
        Ok((len, BufReader::with_capacity(1 << 20, file)))
    }

    /// Removes the spool file `name` (an install finished with it).
    pub fn remove(&self, name: &str) -> Result<()> {
        if !valid_name(name) {
            return Err(corrupt(format!("no spool file may be named {name:?}")));
        }
        match std::fs::remove_file(self.dir.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Removes `zone`'s spool files but `keep`.
    pub fn sweep(&self, zone: &str, keep: Option<&str>) -> Result<()> {
        let prefix = format!("{zone}~");
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&prefix) && name.ends_with(".snap") && Some(&*name) != keep {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }
}

/// A snapshot being received into the spool; removed if dropped unfinished.
pub struct SpoolWriter {
    file: Option<File>,
    /// Finished: the part file is the spool file now.
    renamed: bool,
    part: PathBuf,
    name: String,
    spool: SpoolDir,
}

impl SpoolWriter {
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        match &mut self.file {
            Some(f) => Ok(f.write_all(bytes)?),
            None => Err(KernelError::Invalid("the spool file is closed".into())),
        }
    }

    /// Makes the received payload durable and checks it whole; then it
    /// can be installed.
    pub fn finish(mut self) -> Result<Spooled> {
        let file = self
            .file
            .take()
            .ok_or_else(|| KernelError::Invalid("the spool file is closed".into()))?;
        file.sync_all()?;
        drop(file);
        let reader = BufReader::with_capacity(1 << 20, File::open(&self.part)?);
        SnapshotReader::open(reader)?.1.check_all()?;
        let path = self.spool.dir.join(&self.name);
        std::fs::rename(&self.part, &path)?;
        self.renamed = true;
        File::open(&self.spool.dir)?.sync_all()?;
        Ok(Spooled {
            name: std::mem::take(&mut self.name),
            path,
        })
    }
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = std::fs::remove_file(&self.part);
        }
    }
}

/// A complete, checked snapshot in the spool. The file goes when this
/// does, unless an install still needs it (then the zone's next open
/// finishes that install and removes it).
#[derive(Debug)]
pub struct Spooled {
    name: String,
    path: PathBuf,
}

impl Spooled {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the raft message's snapshot data becomes.
    pub fn marker(&self) -> Vec<u8> {
        marker_of(&self.name)
    }

    pub fn size(&self) -> Result<u64> {
        Ok(std::fs::metadata(&self.path)?.len())
    }

    /// Keeps the file after this handle is gone (an interrupted install's).
    pub fn keep(mut self) {
        self.path = PathBuf::new();
    }
}

impl Drop for Spooled {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::replica::{MemberInfo, Role};

    fn roster() -> Roster {
        [
            (1, MemberInfo::first(Role::Voter)),
            (2, MemberInfo::first(Role::Witness)),
        ]
        .into()
    }

    fn payload(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut w = SnapshotWriter::new(Vec::new(), &roster()).unwrap();
        for (k, v) in pairs {
            w.pair(k, v).unwrap();
        }
        w.finish().unwrap()
    }

    fn read(data: &[u8]) -> Result<(Roster, crate::zone::state::StateDump)> {
        let (roster, mut r) = SnapshotReader::open(data)?;
        let mut pairs = Vec::new();
        while let Some(p) = r.pair()? {
            pairs.push(p);
        }
        Ok((roster, pairs))
    }

    #[test]
    fn a_payload_reads_back_as_written() {
        let data = payload(&[(b"s\x00applied", &7u64.to_be_bytes()), (b"s\x01k", b"")]);
        let (r, pairs) = read(&data).unwrap();
        assert_eq!(r, roster());
        assert_eq!(
            pairs,
            vec![
                (b"s\x00applied".to_vec(), 7u64.to_be_bytes().to_vec()),
                (b"s\x01k".to_vec(), vec![])
            ]
        );
        assert!(decodes(&data));
        assert!(decodes(&payload(&[])));
    }

    #[test]
    fn malformed_payloads_are_refused_without_allocating_their_claims() {
        let good = payload(&[(b"s\x01k", b"value")]);
        // Cut anywhere: refused.
        for cut in 0..good.len() {
            assert!(!decodes(&good[..cut]), "cut at {cut}");
        }
        // Trailing bytes, a key outside the state, a huge claimed length.
        assert!(!decodes(&[good.clone(), vec![0]].concat()));
        assert!(!decodes(&payload(&[(b"r\x00hs", b"x")])));
        let mut huge = payload(&[]);
        huge.truncate(huge.len() - 4);
        huge.extend_from_slice(&16u32.to_le_bytes());
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(!decodes(&huge));
        assert!(!decodes(b"garbage"));
        let marker = [SPOOLED, b"z1~1-1.snap"].concat();
        assert!(!decodes(&marker));
        assert_eq!(spooled_name(&marker), Some("z1~1-1.snap"));
        for bad in ["../x.snap", "a/b.snap", "z1.part", ".snap", ""] {
            assert_eq!(
                spooled_name(&[SPOOLED, bad.as_bytes()].concat()),
                None,
                "{bad}"
            );
        }
        let mut w = SnapshotWriter::new(Vec::new(), &roster()).unwrap();
        assert!(w.pair(b"", b"x").is_err());
        assert!(w.pair(b"s", &vec![0; MAX_VALUE as usize + 1]).is_err());
    }

    #[test]
    fn the_spool_keeps_only_what_is_complete_and_wanted() {
        let home = tempfile::tempdir().unwrap();
        let spool = SpoolDir::open(home.path()).unwrap();
        let files = || {
            let mut v: Vec<String> = std::fs::read_dir(spool.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        // Dropped half-way: gone.
        let mut w = spool.create("z1").unwrap();
        w.write(&payload(&[])[..5]).unwrap();
        drop(w);
        assert!(files().is_empty());
        // Malformed: refused at finish, and gone.
        let mut w = spool.create("z1").unwrap();
        w.write(b"not a snapshot").unwrap();
        assert!(w.finish().is_err());
        assert!(files().is_empty());
        // Complete: kept while held, readable by name, gone when dropped.
        let data = payload(&[(b"s\x01k", b"v")]);
        let mut w = spool.create("z1").unwrap();
        w.write(&data).unwrap();
        let s = w.finish().unwrap();
        assert_eq!(spooled_name(&s.marker()), Some(s.name()));
        assert_eq!(s.size().unwrap(), data.len() as u64);
        let (len, r) = spool.reader(s.name()).unwrap();
        assert_eq!(len, data.len() as u64);
        SnapshotReader::open(r).unwrap().1.check_all().unwrap();
        drop(s);
        assert!(files().is_empty());
        // A kept one survives until its zone sweeps; a part file until reopen.
        let mut w = spool.create("z1").unwrap();
        w.write(&data).unwrap();
        let kept = w.finish().unwrap();
        let name = kept.name().to_owned();
        kept.keep();
        std::fs::write(spool.path().join("z2~0-0.part"), b"x").unwrap();
        let spool = SpoolDir::open(home.path()).unwrap();
        assert_eq!(files(), vec![name.clone()]);
        spool.sweep("z2", None).unwrap();
        assert_eq!(files(), vec![name.clone()]);
        spool.sweep("z1", Some(&name)).unwrap();
        assert_eq!(files(), vec![name]);
        spool.sweep("z1", None).unwrap();
        assert!(files().is_empty());
        assert!(spool.reader("../../etc/passwd").is_err());
    }
}
