//! `wasi:filesystem` served by the kernel VFS (invariant 5: no guest I/O
//! touches a host path). A descriptor is a kernel handle; the single
//! preopen `/` is the task's zone root; every call runs as the task, so the
//! gate decides. Kernel errors map once, here, onto WASI error codes.

use std::collections::VecDeque;
use std::sync::Arc;

use nexus_kernel::Kernel;
use nexus_kernel::PipeMode;
use nexus_kernel::Task;
use nexus_kernel::{At, Handle, OpenFile, OpenOptions};
use nexus_kernel::{DirListing, FileKind, Stat};
use nexus_kernel::{ErrorCode as K, KernelError};
use wasmtime::component::Resource;
use wasmtime_wasi::p2::bindings::clocks::wall_clock::Datetime;
use wasmtime_wasi_io::streams::{DynInputStream, DynOutputStream};

use super::bindings::wasi::filesystem::types::{
    DescriptorFlags, DescriptorStat, DescriptorType, DirectoryEntry, ErrorCode, HostDescriptor,
    HostDirectoryEntryStream, NewTimestamp, OpenFlags, PathFlags,
};
use super::bindings::wasi::filesystem::{preopens, types};
use super::budget::Charge;
use super::pipe::{HeldEnd, PipeInputStream, PipeOutputStream};
use super::state::AgentState;
use super::streams::STREAM_CHUNK;
use super::streams::{FileRef, KernelInputStream, KernelOutputStream, Place, UnreadableStream};

pub type FsError = wasmtime_wasi::TrappableError<ErrorCode>;
type FsResult<T> = Result<T, FsError>;

/// Directory entries fetched per kernel call while listing.
const DIR_PAGE: usize = 256;

/// The one mapping from kernel errors to guest-visible codes.
pub fn code(e: &KernelError) -> ErrorCode {
    match e.code() {
        K::Access => ErrorCode::Access,
        K::Busy => ErrorCode::Busy,
        K::CrossDevice => ErrorCode::CrossDevice,
        K::Exist => ErrorCode::Exist,
        K::FileTooLarge => ErrorCode::FileTooLarge,
        K::Invalid => ErrorCode::Invalid,
        K::Io => ErrorCode::Io,
        K::IsDirectory => ErrorCode::IsDirectory,
        K::Loop => ErrorCode::Loop,
        K::NameTooLong => ErrorCode::NameTooLong,
        K::NoEntry => ErrorCode::NoEntry,
        K::InsufficientSpace => ErrorCode::InsufficientSpace,
        K::NotDirectory => ErrorCode::NotDirectory,
        K::NotEmpty => ErrorCode::NotEmpty,
        K::NotPermitted => ErrorCode::NotPermitted,
        K::Quota => ErrorCode::Quota,
        K::Unsupported => ErrorCode::Unsupported,
        K::WouldBlock => ErrorCode::WouldBlock,
        K::Pipe => ErrorCode::Pipe,
    }
}

fn fs_err(e: KernelError) -> FsError {
    code(&e).into()
}

/// An open file, directory or pipe of the agent's zone.
pub struct Descriptor {
    pub(super) handle: Handle,
    read: bool,
    write: bool,
    /// For a pipe: the ends this descriptor attached when it was opened
    /// (held here and by its streams; the last holder detaches).
    pipe_reader: Option<HeldEnd>,
    pipe_writer: Option<HeldEnd>,
    /// For a regular file: held open, so it outlives an unlink until the
    /// descriptor and its streams are gone (as POSIX).
    open: Option<Arc<OpenFile>>,
}

impl Descriptor {
    /// The zone root, the agent's single preopen.
    pub fn root(kernel: &Kernel, task: &Task) -> Result<Self, KernelError> {
        Ok(Descriptor {
            handle: kernel.resolve(task, "/", true)?,
            read: true,
            write: true,
            pipe_reader: None,
            pipe_writer: None,
            open: None,
        })
    }

    /// The file behind this descriptor, for a stream.
    fn file_ref(&self) -> FileRef {
        (self.handle.clone(), self.open.clone())
    }

    fn pipe_end(&self, mode: PipeMode) -> FsResult<HeldEnd> {
        let end = match mode {
            PipeMode::Read => &self.pipe_reader,
            PipeMode::Write => &self.pipe_writer,
        };
        end.clone().ok_or_else(|| ErrorCode::BadDescriptor.into())
    }

    /// `rel` beneath this directory, which the kernel resolves from the
    /// directory's inode. As WASI requires (and stock answers,
    /// `not-permitted`), a path is confined to the directory it is
    /// resolved from: absolute paths are refused, and so is a `..` or a
    /// link that would leave it, at the preopen `/` too. (The kernel's own
    /// rule, `..` at the zone root stays there, is for its other callers;
    /// nothing leaves the zone either way, invariant 4.)
    fn join<'a>(&'a self, rel: &'a str) -> FsResult<At<'a>> {
        if self.handle.kind != FileKind::Dir {
            return Err(ErrorCode::NotDirectory.into());
        }
        if rel.starts_with('/') {
            return Err(ErrorCode::NotPermitted.into());
        }
        // An empty path names nothing (POSIX's ENOENT, as stock answers),
        // not the directory itself.
        if rel.is_empty() {
            return Err(ErrorCode::NoEntry.into());
        }
        Ok(At::under(&self.handle, rel))
    }
}

/// A directory listing, fetched page by page; the page it may hold is
/// charged to the agent's host memory while the stream lives.
pub struct DirStream {
    handle: Handle,
    cursor: Option<String>,
    buf: VecDeque<DirListing>,
    done: bool,
    _charge: Charge,
}

/// What a directory stream may hold: a page of the longest names.
const DIR_STREAM_BYTES: u64 = (DIR_PAGE * (255 + std::mem::size_of::<DirListing>())) as u64;

fn kind_type(kind: FileKind) -> DescriptorType {
    match kind {
        // Opening a mount entry crosses into the zone it links.
        FileKind::Dir | FileKind::Mount => DescriptorType::Directory,
        FileKind::Regular => DescriptorType::RegularFile,
        FileKind::Pipe => DescriptorType::Fifo,
        FileKind::Symlink => DescriptorType::SymbolicLink,
    }
}

fn datetime(ns: i64) -> Datetime {
    Datetime {
        seconds: ns.div_euclid(1_000_000_000).max(0) as u64,
        nanoseconds: ns.rem_euclid(1_000_000_000) as u32,
    }
}

fn to_stat(s: &Stat, link_count: u64) -> DescriptorStat {
    DescriptorStat {
        type_: kind_type(s.kind),
        link_count,
        size: s.size,
        data_access_timestamp: Some(datetime(s.atime)),
        data_modification_timestamp: Some(datetime(s.mtime)),
        status_change_timestamp: Some(datetime(s.ctime)),
    }
}

fn timestamp(t: NewTimestamp) -> FsResult<Option<i64>> {
    Ok(match t {
        NewTimestamp::NoChange => None,
        NewTimestamp::Now => Some(nexus_kernel::now()),
        NewTimestamp::Timestamp(d) => {
            let ns = i64::try_from(d.seconds)
                .ok()
                .and_then(|s| s.checked_mul(1_000_000_000))
                .and_then(|s| s.checked_add(i64::from(d.nanoseconds)))
                .ok_or(ErrorCode::Overflow)?;
            Some(ns)
        }
    })
}

async fn set_times_of(
    kernel: &Kernel,
    task: &Task,
    h: &Handle,
    atime: NewTimestamp,
    mtime: NewTimestamp,
) -> FsResult<()> {
    let (a, m) = (timestamp(atime)?, timestamp(mtime)?);
    kernel
        .set_times(task, h, a, m)
        .await
        .map(|_| ())
        .map_err(fs_err)
}

fn hash_of(s: &Stat) -> types::MetadataHashValue {
    let h = blake3::hash(format!("{}:{}:{}:{}", s.zone, s.ino, s.version, s.mtime).as_bytes());
    let b = h.as_bytes();
    types::MetadataHashValue {
        lower: u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
        upper: u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")),
    }
}

impl AgentState {
    fn desc(&self, fd: &Resource<Descriptor>) -> FsResult<&Descriptor> {
        self.table.get(fd).map_err(FsError::trap)
    }

    /// The kernel's stat of the descriptor itself.
    fn stat_fd(&self, fd: &Resource<Descriptor>) -> FsResult<Stat> {
        let h = &self.desc(fd)?.handle;
        self.kernel.stat_handle(&self.task, h).map_err(fs_err)
    }

    /// The kernel's stat of `path` relative to the descriptor, and its
    /// link count: the link itself unless `flags` say to follow it.
    fn stat_under(
        &self,
        fd: &Resource<Descriptor>,
        flags: PathFlags,
        path: &str,
    ) -> FsResult<(Stat, u64)> {
        let p = self.desc(fd)?.join(path)?;
        let follow = flags.contains(PathFlags::SYMLINK_FOLLOW);
        let h = self.kernel.resolve(&self.task, p, follow).map_err(fs_err)?;
        let stat = self.kernel.stat_handle(&self.task, &h).map_err(fs_err)?;
        Ok((stat, self.kernel.link_count(&h)))
    }

    fn file(&self, fd: &Resource<Descriptor>) -> FsResult<&Descriptor> {
        let d = self.desc(fd)?;
        match d.handle.kind {
            FileKind::Dir | FileKind::Mount => Err(ErrorCode::IsDirectory.into()),
            _ => Ok(d),
        }
    }

    /// A file open for reading: a write-only descriptor reads nothing
    /// (`bad-descriptor`, POSIX's EBADF), whatever the gate would allow.
    fn readable(&self, fd: &Resource<Descriptor>) -> FsResult<&Descriptor> {
        let d = self.file(fd)?;
        if !d.read {
            return Err(ErrorCode::BadDescriptor.into());
        }
        Ok(d)
    }
}

impl preopens::Host for AgentState {
    fn get_directories(&mut self) -> wasmtime::Result<Vec<(Resource<Descriptor>, String)>> {
        let root = Descriptor::root(&self.kernel, &self.task)
            .map_err(|e| wasmtime::format_err!("zone root of {}: {e}", self.task.zone()))?;
        let fd = self
            .push_descriptor(root)
            .map_err(|e| wasmtime::format_err!("{e:?}"))?;
        Ok(vec![(fd, "/".into())])
    }
}

impl types::Host for AgentState {
    fn convert_error_code(&mut self, err: FsError) -> wasmtime::Result<ErrorCode> {
        err.downcast()
    }

    fn filesystem_error_code(
        &mut self,
        err: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        let err = self.table.get(&err)?;
        let refused = || err.downcast_ref::<ErrorCode>().copied();
        Ok(err.downcast_ref::<KernelError>().map(code).or_else(refused))
    }
}

impl HostDescriptor for AgentState {
    async fn advise(
        &mut self,
        fd: Resource<Descriptor>,
        _: u64,
        _: u64,
        _: types::Advice,
    ) -> FsResult<()> {
        self.file(&fd)?;
        Ok(())
    }

    /// A file's buffered writes, or a pipe's bytes, become durable here
    /// (through the zone's log).
    async fn sync_data(&mut self, fd: Resource<Descriptor>) -> FsResult<()> {
        self.sync_descriptor(&fd).await
    }

    async fn sync(&mut self, fd: Resource<Descriptor>) -> FsResult<()> {
        self.sync_descriptor(&fd).await
    }

    async fn get_flags(&mut self, fd: Resource<Descriptor>) -> FsResult<DescriptorFlags> {
        let d = self.desc(&fd)?;
        let mut f = DescriptorFlags::empty();
        if d.read {
            f |= DescriptorFlags::READ;
        }
        // A directory is never open for writing its bytes, only for
        // changing its entries (as stock reports it).
        if d.write {
            f |= match d.handle.kind {
                FileKind::Dir => DescriptorFlags::MUTATE_DIRECTORY,
                _ => DescriptorFlags::WRITE,
            };
        }
        Ok(f)
    }

    async fn get_type(&mut self, fd: Resource<Descriptor>) -> FsResult<DescriptorType> {
        Ok(kind_type(self.desc(&fd)?.handle.kind))
    }

    /// As POSIX `ftruncate`: `invalid` on a descriptor not open for
    /// writing (stock answers the same), whatever the gate would allow.
    async fn set_size(&mut self, fd: Resource<Descriptor>, size: u64) -> FsResult<()> {
        let d = self.file(&fd)?;
        if !d.write {
            return Err(ErrorCode::Invalid.into());
        }
        let h = d.handle.clone();
        self.kernel
            .truncate(&self.task, &h, size)
            .await
            .map_err(fs_err)
    }

    async fn set_times(
        &mut self,
        fd: Resource<Descriptor>,
        atime: NewTimestamp,
        mtime: NewTimestamp,
    ) -> FsResult<()> {
        let h = self.desc(&fd)?.handle.clone();
        set_times_of(&self.kernel, &self.task, &h, atime, mtime).await
    }

    async fn read(
        &mut self,
        fd: Resource<Descriptor>,
        len: u64,
        offset: u64,
    ) -> FsResult<(Vec<u8>, bool)> {
        let d = self.readable(&fd)?;
        if d.handle.kind == FileKind::Pipe {
            let end = d.pipe_end(PipeMode::Read)?;
            let len = usize::try_from(len).unwrap_or(usize::MAX).min(STREAM_CHUNK);
            return match self.kernel.pipe_read(&self.task, &end, len).await {
                Ok(Some(d)) => Ok((d, false)),
                Ok(None) => Ok((Vec::new(), len > 0)),
                Err(e) => Err(fs_err(e)),
            };
        }
        let h = d.handle.clone();
        let bytes = self
            .kernel
            .read(&self.task, &h, offset, len)
            .await
            .map_err(fs_err)?;
        let eof = bytes.is_empty() && len > 0;
        Ok((bytes.to_vec(), eof))
    }

    async fn write(
        &mut self,
        fd: Resource<Descriptor>,
        buf: Vec<u8>,
        offset: u64,
    ) -> FsResult<u64> {
        let d = self.file(&fd)?;
        if !d.write {
            return Err(ErrorCode::BadDescriptor.into());
        }
        if d.handle.kind == FileKind::Pipe {
            let end = d.pipe_end(PipeMode::Write)?;
            return self
                .kernel
                .pipe_write_all(&self.task, &end, &buf)
                .await
                .map(|()| buf.len() as u64)
                .map_err(fs_err);
        }
        let h = d.handle.clone();
        self.kernel
            .write(&self.task, &h, offset, &buf)
            .await
            .map_err(fs_err)
    }

    async fn read_directory(&mut self, fd: Resource<Descriptor>) -> FsResult<Resource<DirStream>> {
        let d = self.desc(&fd)?;
        if d.handle.kind != FileKind::Dir {
            return Err(ErrorCode::NotDirectory.into());
        }
        // Listing needs `read`; checking now reports a denial at the call.
        self.kernel
            .readdir_handle(&self.task, &d.handle, None, 1)
            .map_err(fs_err)?;
        let charge = self
            .host_memory
            .charge(DIR_STREAM_BYTES, "a directory stream")
            .map_err(fs_err)?;
        let stream = DirStream {
            handle: d.handle.clone(),
            cursor: None,
            buf: VecDeque::new(),
            done: false,
            _charge: charge,
        };
        self.table.push(stream).map_err(FsError::trap)
    }

    async fn create_directory_at(
        &mut self,
        fd: Resource<Descriptor>,
        path: String,
    ) -> FsResult<()> {
        let p = self.desc(&fd)?.join(&path)?;
        self.kernel
            .mkdir(&self.task, p)
            .await
            .map(|_| ())
            .map_err(fs_err)
    }

    async fn stat(&mut self, fd: Resource<Descriptor>) -> FsResult<DescriptorStat> {
        let links = self.kernel.link_count(&self.desc(&fd)?.handle);
        Ok(to_stat(&self.stat_fd(&fd)?, links))
    }

    async fn stat_at(
        &mut self,
        fd: Resource<Descriptor>,
        flags: PathFlags,
        path: String,
    ) -> FsResult<DescriptorStat> {
        let (stat, links) = self.stat_under(&fd, flags, &path)?;
        Ok(to_stat(&stat, links))
    }

    async fn set_times_at(
        &mut self,
        fd: Resource<Descriptor>,
        flags: PathFlags,
        path: String,
        atime: NewTimestamp,
        mtime: NewTimestamp,
    ) -> FsResult<()> {
        let p = self.desc(&fd)?.join(&path)?;
        let follow = flags.contains(PathFlags::SYMLINK_FOLLOW);
        let h = self.kernel.resolve(&self.task, p, follow).map_err(fs_err)?;
        set_times_of(&self.kernel, &self.task, &h, atime, mtime).await
    }

    /// A hard link: the entry named, never what a final link points to
    /// (as stock: `linkat` without `AT_SYMLINK_FOLLOW`).
    async fn link_at(
        &mut self,
        fd: Resource<Descriptor>,
        _: PathFlags,
        old: String,
        new_fd: Resource<Descriptor>,
        new: String,
    ) -> FsResult<()> {
        let from = self.desc(&fd)?.join(&old)?;
        let to = self.desc(&new_fd)?.join(&new)?;
        self.kernel.link(&self.task, from, to).await.map_err(fs_err)
    }

    async fn open_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: PathFlags,
        path: String,
        oflags: OpenFlags,
        flags: DescriptorFlags,
    ) -> FsResult<Resource<Descriptor>> {
        // As stock wasmtime-wasi: the sync flags are refused, not silently
        // dropped (durability is `sync`/`sync-data`), and `open-at` does
        // not create, exclusively open or truncate a directory.
        let sync = DescriptorFlags::FILE_INTEGRITY_SYNC
            | DescriptorFlags::DATA_INTEGRITY_SYNC
            | DescriptorFlags::REQUESTED_WRITE_SYNC;
        if flags.intersects(sync) {
            return Err(ErrorCode::Unsupported.into());
        }
        let shaping = OpenFlags::CREATE | OpenFlags::EXCLUSIVE | OpenFlags::TRUNCATE;
        if oflags.contains(OpenFlags::DIRECTORY) && oflags.intersects(shaping) {
            return Err(ErrorCode::Invalid.into());
        }
        let p = self.desc(&fd)?.join(&path)?;
        // Without `symlink-follow`, a final link is not opened (POSIX
        // `O_NOFOLLOW`: `loop`).
        if !path_flags.contains(PathFlags::SYMLINK_FOLLOW) {
            if let Ok(h) = self.kernel.resolve(&self.task, p, false) {
                if h.kind == FileKind::Symlink {
                    return Err(ErrorCode::Loop.into());
                }
            }
        }
        // The access mode, as stock opens it: creating or truncating opens
        // for writing, and a descriptor not asked to write reads.
        let write = flags.intersects(DescriptorFlags::WRITE | DescriptorFlags::MUTATE_DIRECTORY)
            || oflags.intersects(OpenFlags::CREATE | OpenFlags::TRUNCATE);
        let read = flags.contains(DescriptorFlags::READ) || !flags.contains(DescriptorFlags::WRITE);
        let opts = OpenOptions {
            read,
            write,
            create: oflags.contains(OpenFlags::CREATE),
            exclusive: oflags.contains(OpenFlags::EXCLUSIVE),
            truncate: oflags.contains(OpenFlags::TRUNCATE),
            directory: oflags.contains(OpenFlags::DIRECTORY),
        };
        let handle = self
            .kernel
            .open_path(&self.task, p, opts)
            .await
            .map_err(fs_err)?;
        if handle.kind == FileKind::Dir && flags.contains(DescriptorFlags::WRITE) {
            return Err(ErrorCode::IsDirectory.into());
        }
        // Opening a pipe attaches to it, as a reader unless only writing.
        let attach = |mode| -> FsResult<Option<HeldEnd>> {
            let end = self
                .kernel
                .pipe_attach(&self.task, &handle, mode)
                .map_err(fs_err)?;
            Ok(Some(self.hold_end(end).map_err(fs_err)?))
        };
        let is_pipe = handle.kind == FileKind::Pipe;
        let pipe_reader = if is_pipe && opts.read {
            attach(PipeMode::Read)?
        } else {
            None
        };
        let pipe_writer = if is_pipe && write {
            attach(PipeMode::Write)?
        } else {
            None
        };
        let d = Descriptor {
            open: self.kernel.hold_open(&handle),
            handle,
            read: opts.read,
            write,
            pipe_reader,
            pipe_writer,
        };
        self.push_descriptor(d)
    }

    fn drop(&mut self, fd: Resource<Descriptor>) -> wasmtime::Result<()> {
        self.table.delete(fd)?;
        self.open_descriptors = self.open_descriptors.saturating_sub(1);
        Ok(())
    }

    async fn readlink_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<String> {
        let p = self.desc(&fd)?.join(&path)?;
        self.kernel.readlink(&self.task, p).map_err(fs_err)
    }

    async fn remove_directory_at(
        &mut self,
        fd: Resource<Descriptor>,
        path: String,
    ) -> FsResult<()> {
        let p = self.desc(&fd)?.join(&path)?;
        self.kernel.rmdir(&self.task, p).await.map_err(fs_err)
    }

    async fn rename_at(
        &mut self,
        fd: Resource<Descriptor>,
        old: String,
        new_fd: Resource<Descriptor>,
        new: String,
    ) -> FsResult<()> {
        let from = self.desc(&fd)?.join(&old)?;
        let to = self.desc(&new_fd)?.join(&new)?;
        self.kernel
            .rename(&self.task, from, to)
            .await
            .map_err(fs_err)
    }

    /// As stock, an absolute target is refused (`not-permitted`): a guest's
    /// paths are relative to a descriptor. The kernel itself takes one as
    /// from the zone root (`nexus fs ln`, a native agent's `ln -s /x`).
    async fn symlink_at(
        &mut self,
        fd: Resource<Descriptor>,
        target: String,
        path: String,
    ) -> FsResult<()> {
        let p = self.desc(&fd)?.join(&path)?;
        if target.starts_with('/') {
            return Err(ErrorCode::NotPermitted.into());
        }
        self.kernel
            .symlink(&self.task, &target, p)
            .await
            .map(drop)
            .map_err(fs_err)
    }

    async fn unlink_file_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<()> {
        let p = self.desc(&fd)?.join(&path)?;
        self.kernel.unlink(&self.task, p).await.map_err(fs_err)
    }

    fn read_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
        offset: u64,
    ) -> FsResult<Resource<DynInputStream>> {
        let d = self.file(&fd)?;
        let (k, t) = (self.kernel.clone(), self.task.clone());
        let s: DynInputStream = if !d.read {
            // As stock: the stream is made; its reads fail.
            Box::new(UnreadableStream)
        } else if d.handle.kind == FileKind::Pipe {
            Box::new(PipeInputStream::new(k, t, d.pipe_end(PipeMode::Read)?))
        } else {
            let held = self.host_memory.empty_charge();
            Box::new(KernelInputStream::new(k, t, d.file_ref(), offset, held))
        };
        self.table.push(s).map_err(FsError::trap)
    }

    fn write_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
        offset: u64,
    ) -> FsResult<Resource<DynOutputStream>> {
        self.output_stream(fd, Place::At(offset))
    }

    fn append_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<Resource<DynOutputStream>> {
        self.output_stream(fd, Place::Append)
    }

    async fn is_same_object(
        &mut self,
        a: Resource<Descriptor>,
        b: Resource<Descriptor>,
    ) -> wasmtime::Result<bool> {
        let (a, b) = (&self.table.get(&a)?.handle, &self.table.get(&b)?.handle);
        Ok(a.zone_id() == b.zone_id() && a.ino == b.ino)
    }

    async fn metadata_hash(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<types::MetadataHashValue> {
        Ok(hash_of(&self.stat_fd(&fd)?))
    }

    async fn metadata_hash_at(
        &mut self,
        fd: Resource<Descriptor>,
        flags: PathFlags,
        path: String,
    ) -> FsResult<types::MetadataHashValue> {
        Ok(hash_of(&self.stat_under(&fd, flags, &path)?.0))
    }
}

impl HostDirectoryEntryStream for AgentState {
    async fn read_directory_entry(
        &mut self,
        stream: Resource<DirStream>,
    ) -> FsResult<Option<DirectoryEntry>> {
        let (kernel, task) = (self.kernel.clone(), self.task.clone());
        let s = self.table.get_mut(&stream).map_err(FsError::trap)?;
        if s.buf.is_empty() && !s.done {
            let page = kernel
                .readdir_handle(&task, &s.handle, s.cursor.as_deref(), DIR_PAGE)
                .map_err(fs_err)?;
            s.done = page.next.is_none();
            s.cursor = page.next;
            s.buf.extend(page.entries);
        }
        Ok(s.buf.pop_front().map(|e| DirectoryEntry {
            type_: kind_type(e.kind),
            name: e.name,
        }))
    }

    fn drop(&mut self, stream: Resource<DirStream>) -> wasmtime::Result<()> {
        self.table.delete(stream)?;
        Ok(())
    }
}

impl AgentState {
    /// A stream writing to the file behind `fd`, which must be writable;
    /// for a pipe, into its ring (offsets mean nothing to a pipe).
    fn output_stream(
        &mut self,
        fd: Resource<Descriptor>,
        place: Place,
    ) -> FsResult<Resource<DynOutputStream>> {
        let d = self.file(&fd)?;
        if !d.write {
            return Err(ErrorCode::BadDescriptor.into());
        }
        let (k, t) = (self.kernel.clone(), self.task.clone());
        let s: DynOutputStream = if d.handle.kind == FileKind::Pipe {
            Box::new(PipeOutputStream::new(k, t, d.pipe_end(PipeMode::Write)?))
        } else {
            let held = self.host_memory.empty_charge();
            Box::new(KernelOutputStream::new(k, t, d.file_ref(), place, held))
        };
        self.table.push(s).map_err(FsError::trap)
    }

    /// Writes out the file behind `fd`, or checkpoints its pipe.
    async fn sync_descriptor(&mut self, fd: &Resource<Descriptor>) -> FsResult<()> {
        let d = self.desc(fd)?;
        let synced = match d.pipe_writer.clone().or_else(|| d.pipe_reader.clone()) {
            Some(end) => self.kernel.pipe_sync(&self.task, &end).await,
            None => self.kernel.sync(&self.task, &d.handle.clone()).await,
        };
        synced.map_err(fs_err)
    }

    /// Adds a descriptor, within the task's descriptor limit (invariant 7).
    fn push_descriptor(&mut self, d: Descriptor) -> FsResult<Resource<Descriptor>> {
        if self.open_descriptors >= self.limits.max_descriptors {
            return Err(ErrorCode::InsufficientMemory.into());
        }
        let fd = self.table.push(d).map_err(FsError::trap)?;
        self.open_descriptors += 1;
        Ok(fd)
    }
}

/// Shared by the streams: a kernel call's failure as a stream error the
/// guest can inspect with `filesystem-error-code`.
pub fn stream_failure(e: KernelError) -> wasmtime_wasi_io::streams::StreamError {
    wasmtime_wasi_io::streams::StreamError::LastOperationFailed(wasmtime::Error::new(e))
}
