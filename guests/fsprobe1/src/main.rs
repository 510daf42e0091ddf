//! The probes of `guests/fsprobe`, through WASI preview 1: the calls a
//! program built for `wasm32-wasip1` makes (`path_open` with rights and
//! lookup flags, `fd_pread`, `path_link`, ...). Under `nexus run` the module
//! goes through the preview 1 adapter onto Nexus's `wasi:filesystem`; on
//! stock wasmtime-wasi it runs on wasmtime's own preview 1. The suite
//! compares the two line for line. The preopen `/` is descriptor 3.

use std::fmt::Display;
use std::fs;

use wasi::{Errno, Fd, Fdflags, Lookupflags, Oflags, Rights};

const ROOT: Fd = 3;
const READ: Rights = wasi::RIGHTS_FD_READ
    | wasi::RIGHTS_FD_SEEK
    | wasi::RIGHTS_FD_FILESTAT_GET
    | wasi::RIGHTS_FD_FILESTAT_SET_SIZE
    | wasi::RIGHTS_FD_FILESTAT_SET_TIMES
    | wasi::RIGHTS_FD_FDSTAT_SET_FLAGS;
const WRITE: Rights = wasi::RIGHTS_FD_WRITE | wasi::RIGHTS_FD_FILESTAT_GET;
const DIR: Rights = wasi::RIGHTS_PATH_OPEN
    | wasi::RIGHTS_PATH_CREATE_FILE
    | wasi::RIGHTS_PATH_CREATE_DIRECTORY
    | wasi::RIGHTS_PATH_UNLINK_FILE
    | wasi::RIGHTS_PATH_REMOVE_DIRECTORY
    | wasi::RIGHTS_PATH_RENAME_SOURCE
    | wasi::RIGHTS_PATH_RENAME_TARGET
    | wasi::RIGHTS_PATH_FILESTAT_GET
    | wasi::RIGHTS_PATH_LINK_SOURCE
    | wasi::RIGHTS_PATH_LINK_TARGET
    | wasi::RIGHTS_PATH_SYMLINK
    | wasi::RIGHTS_PATH_READLINK
    | wasi::RIGHTS_FD_READDIR;
const FOLLOW: Lookupflags = wasi::LOOKUPFLAGS_SYMLINK_FOLLOW;

fn show<T: Display>(r: Result<T, Errno>) -> String {
    match r {
        Ok(v) => v.to_string(),
        Err(e) => e.name().to_owned(),
    }
}

fn ok(r: Result<(), Errno>) -> String {
    show(r.map(|()| "ok"))
}

fn open(
    dir: Fd,
    path: &str,
    oflags: Oflags,
    rights: Rights,
    fdflags: Fdflags,
) -> Result<Fd, Errno> {
    open_with(dir, FOLLOW, path, oflags, rights, fdflags)
}

fn open_with(
    dir: Fd,
    lookup: Lookupflags,
    path: &str,
    oflags: Oflags,
    rights: Rights,
    fdflags: Fdflags,
) -> Result<Fd, Errno> {
    // SAFETY: the call reads `path` only; a bad descriptor is an errno.
    unsafe { wasi::path_open(dir, lookup, path, oflags, rights, rights | DIR, fdflags) }
}

fn opened(r: Result<Fd, Errno>) -> String {
    show(r.map(|fd| {
        close(fd);
        "ok"
    }))
}

fn close(fd: Fd) {
    // SAFETY: `fd` is one this probe opened and uses no more.
    let _ = unsafe { wasi::fd_close(fd) };
}

fn pread(fd: Fd, n: usize) -> Result<String, Errno> {
    let mut buf = vec![0u8; n];
    let iov = wasi::Iovec {
        buf: buf.as_mut_ptr(),
        buf_len: buf.len(),
    };
    // SAFETY: `iov` points into `buf`, alive across the call.
    let got = unsafe { wasi::fd_pread(fd, &[iov], 0)? };
    Ok(String::from_utf8_lossy(&buf[..got]).into_owned())
}

fn pwrite(fd: Fd, data: &[u8]) -> Result<usize, Errno> {
    let iov = wasi::Ciovec {
        buf: data.as_ptr(),
        buf_len: data.len(),
    };
    // SAFETY: `iov` points into `data`, alive across the call.
    unsafe { wasi::fd_pwrite(fd, &[iov], 0) }
}

fn stat_at(dir: Fd, lookup: Lookupflags, path: &str) -> Result<wasi::Filestat, Errno> {
    // SAFETY: reads `path` only.
    unsafe { wasi::path_filestat_get(dir, lookup, path) }
}

fn fstat(fd: Fd) -> Result<wasi::Filestat, Errno> {
    // SAFETY: a bad descriptor is an errno.
    unsafe { wasi::fd_filestat_get(fd) }
}

fn unlink(dir: Fd, path: &str) -> Result<(), Errno> {
    // SAFETY: reads `path` only.
    unsafe { wasi::path_unlink_file(dir, path) }
}

fn rmdir(dir: Fd, path: &str) -> Result<(), Errno> {
    // SAFETY: reads `path` only.
    unsafe { wasi::path_remove_directory(dir, path) }
}

fn mkdir(dir: Fd, path: &str) -> Result<(), Errno> {
    // SAFETY: reads `path` only.
    unsafe { wasi::path_create_directory(dir, path) }
}

fn rename(dir: Fd, from: &str, to_dir: Fd, to: &str) -> Result<(), Errno> {
    // SAFETY: reads the paths only.
    unsafe { wasi::path_rename(dir, from, to_dir, to) }
}

fn link(from: &str, to: &str) -> Result<(), Errno> {
    // SAFETY: reads the paths only.
    unsafe { wasi::path_link(ROOT, 0, from, ROOT, to) }
}

fn symlink(target: &str, dir: Fd, name: &str) -> Result<(), Errno> {
    // SAFETY: reads the paths only.
    unsafe { wasi::path_symlink(target, dir, name) }
}

fn readlink(dir: Fd, path: &str) -> Result<String, Errno> {
    let mut buf = vec![0u8; 256];
    // SAFETY: the call writes at most `buf.len()` bytes into `buf`.
    let n = unsafe { wasi::path_readlink(dir, path, buf.as_mut_ptr(), buf.len())? };
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn text(r: std::io::Result<String>) -> String {
    r.unwrap_or_else(|e| format!("{:?}", e.kind()))
}

/// Access modes: a descriptor does what its rights and flags say.
fn modes() {
    fs::write("/m.txt", b"hello").expect("a writable directory");
    let ro = open(ROOT, "m.txt", 0, READ, 0).expect("open read-only");
    // SAFETY (the block): `ro` is open; the calls take plain values.
    unsafe {
        println!(
            "set-size read-only: {}",
            ok(wasi::fd_filestat_set_size(ro, 0))
        );
        let now = wasi::FSTFLAGS_MTIM_NOW;
        println!(
            "set-times read-only: {}",
            ok(wasi::fd_filestat_set_times(ro, 0, 0, now))
        );
    }
    println!("write read-only: {}", show(pwrite(ro, b"x")));
    println!("size after: {}", show(fstat(ro).map(|s| s.size)));
    let wo = open(ROOT, "m.txt", 0, WRITE, 0).expect("open write-only");
    println!("read write-only: {}", show(pread(wo, 5)));
    let trunc = open(
        ROOT,
        "m.txt",
        wasi::OFLAGS_TRUNC,
        READ & !wasi::RIGHTS_FD_FILESTAT_SET_SIZE,
        0,
    );
    println!("truncate without write: {}", opened(trunc));
    println!("size then: {}", show(fstat(ro).map(|s| s.size)));
    let created = open(ROOT, "c.txt", wasi::OFLAGS_CREAT, READ, 0).expect("create read-only");
    println!("write after create: {}", show(pwrite(created, b"abc")));
    let synced = open(ROOT, "m.txt", 0, READ | WRITE, wasi::FDFLAGS_SYNC);
    println!("open with sync: {}", opened(synced));
    let appending = open(ROOT, "m.txt", 0, READ | WRITE, wasi::FDFLAGS_APPEND).expect("append");
    // SAFETY: `appending` is open.
    let flags = unsafe { wasi::fd_fdstat_get(appending) }.map(|s| s.fs_flags);
    println!("append flags: {}", show(flags));
    let dir = open(ROOT, ".", wasi::OFLAGS_DIRECTORY, READ | DIR, 0).expect("open the root");
    println!(
        "directory type: {}",
        show(fstat(dir).map(|s| s.filetype.name()))
    );
    for fd in [ro, wo, created, appending, dir] {
        close(fd);
    }
}

/// Paths are exact: a trailing `/` names a directory.
fn slashes() {
    fs::write("/m.txt", b"hello").expect("a writable directory");
    let at = |name: &str, o| opened(open(ROOT, name, o, READ, 0));
    println!("open m.txt/: {}", at("m.txt/", 0));
    println!("open m.txt/.: {}", at("m.txt/.", 0));
    println!("create new.txt/: {}", at("new.txt/", wasi::OFLAGS_CREAT));
    println!("open the empty path: {}", at("", 0));
    println!("unlink m.txt/: {}", ok(unlink(ROOT, "m.txt/")));
    println!(
        "rename m.txt/: {}",
        ok(rename(ROOT, "m.txt/", ROOT, "n.txt"))
    );
    println!(
        "rename to n.txt/: {}",
        ok(rename(ROOT, "m.txt", ROOT, "n.txt/"))
    );
    println!("rmdir m.txt/: {}", ok(rmdir(ROOT, "m.txt/")));
    println!("mkdir d/: {}", ok(mkdir(ROOT, "d/")));
    println!("rmdir d/: {}", ok(rmdir(ROOT, "d/")));
    println!("m.txt: {}", text(fs::read_to_string("/m.txt")));
}

/// A directory descriptor confines the paths resolved from it.
fn confine() {
    fs::create_dir_all("/a/b/c").expect("a writable directory");
    let b = open(ROOT, "a/b", wasi::OFLAGS_DIRECTORY, READ | DIR, 0).expect("open a/b");
    let create = |name: &str| opened(open(b, name, wasi::OFLAGS_CREAT, WRITE, 0));
    println!("create ../x under a/b: {}", create("../x"));
    println!("create c/../../x under a/b: {}", create("c/../../x"));
    println!("create c/../x under a/b: {}", create("c/../x"));
    println!("mkdir ../escaped under a/b: {}", ok(mkdir(b, "../escaped")));
    println!("escaped exists: {}", fs::metadata("/a/escaped").is_ok());
    println!(
        "open ../x at the root: {}",
        opened(open(ROOT, "../x", 0, READ, 0))
    );
    println!(
        "open /a at the root: {}",
        opened(open(ROOT, "/a", 0, READ, 0))
    );
    close(b);
}

/// An unlinked file lives while it is open, as on POSIX.
fn unlinked() {
    fs::write("/t.txt", b"temporary").expect("a writable directory");
    let d = open(ROOT, "t.txt", 0, READ | WRITE, 0).expect("open t.txt");
    println!("unlink while open: {}", ok(unlink(ROOT, "t.txt")));
    let by_name = stat_at(ROOT, 0, "t.txt").map(|_| "ok");
    println!("stat by name after unlink: {}", show(by_name));
    println!("read after unlink: {}", show(pread(d, 100)));
    println!("write after unlink: {}", show(pwrite(d, b"T")));
    println!("read again: {}", show(pread(d, 100)));
    println!("size after unlink: {}", show(fstat(d).map(|s| s.size)));
    println!("links after unlink: {}", show(fstat(d).map(|s| s.nlink)));
    close(d);
    fs::write("/t.txt", b"new").expect("the name is free");
    println!(
        "new file by the name: {}",
        text(fs::read_to_string("/t.txt"))
    );
    fs::write("/cfg.txt", b"old").expect("a writable directory");
    fs::write("/cfg.new", b"new").expect("a writable directory");
    let reader = open(ROOT, "cfg.txt", 0, READ, 0).expect("open cfg.txt");
    let over = rename(ROOT, "cfg.new", ROOT, "cfg.txt");
    println!("rename over an open file: {}", ok(over));
    println!("the reader still reads: {}", show(pread(reader, 100)));
    println!("by name: {}", text(fs::read_to_string("/cfg.txt")));
    close(reader);
}

/// Symbolic links: made, read, followed or not, looping, dangling,
/// renamed and removed.
fn links() {
    fs::create_dir_all("/l/dir").expect("a writable directory");
    fs::write("/l/dir/f.txt", b"through the link").expect("a writable directory");
    let l = open(ROOT, "l", wasi::OFLAGS_DIRECTORY, READ | DIR, 0).expect("open l");
    for (target, name) in [
        ("dir/f.txt", "to-file"),
        ("dir", "to-dir"),
        ("nowhere", "dangling"),
        ("loop-b", "loop-a"),
        ("loop-a", "loop-b"),
        ("../l/dir/./f.txt", "roundabout"),
    ] {
        println!("symlink {name}: {}", ok(symlink(target, l, name)));
    }
    println!("symlink over a name: {}", ok(symlink("dir", l, "to-file")));
    println!("symlink absolute: {}", ok(symlink("/l/dir", l, "abs")));
    println!("readlink: {}", show(readlink(l, "to-file")));
    println!("readlink of a file: {}", show(readlink(l, "dir/f.txt")));
    println!("readlink missing: {}", show(readlink(l, "nope")));
    let read = |lookup, name: &str| {
        show(open_with(l, lookup, name, 0, READ, 0).and_then(|fd| {
            let got = pread(fd, 100);
            close(fd);
            got
        }))
    };
    println!("open following: {}", read(FOLLOW, "to-file"));
    println!("open not following: {}", read(0, "to-file"));
    println!("open roundabout: {}", read(FOLLOW, "roundabout"));
    println!("open a loop: {}", read(FOLLOW, "loop-a"));
    println!("open dangling: {}", read(FOLLOW, "dangling"));
    println!("open through a dir link: {}", read(0, "to-dir/f.txt"));
    let kind = |lookup, name: &str| show(stat_at(l, lookup, name).map(|s| s.filetype.name()));
    println!("stat following: {}", kind(FOLLOW, "to-file"));
    println!("stat not following: {}", kind(0, "to-file"));
    println!(
        "link size: {}",
        show(stat_at(l, 0, "to-file").map(|s| s.size))
    );
    println!("stat dangling: {}", kind(0, "dangling"));
    println!("std read_link: {:?}", fs::read_link("/l/to-dir").ok());
    println!(
        "std read through: {:?}",
        fs::read_to_string("/l/to-dir/f.txt").ok()
    );
    println!("rename a link: {}", ok(rename(l, "to-file", l, "renamed")));
    println!("renamed reads: {}", read(FOLLOW, "renamed"));
    println!("unlink a dir link: {}", ok(unlink(l, "to-dir")));
    println!("its target stays: {}", fs::metadata("/l/dir/f.txt").is_ok());
    println!("rmdir a link: {}", ok(rmdir(l, "renamed")));
    close(l);
}

/// A directory descriptor names its directory, not the path it was
/// opened by.
fn dirfd() {
    let dir = |name: &str| {
        fs::create_dir(format!("/{name}")).expect("a writable directory");
        open(ROOT, name, wasi::OFLAGS_DIRECTORY, READ | DIR, 0).expect("open the directory")
    };
    let create = |d: Fd, name: &str| {
        let made = open(d, name, wasi::OFLAGS_CREAT, READ | WRITE, 0);
        ok(made.and_then(|f| {
            let wrote = pwrite(f, b"made").map(drop);
            close(f);
            wrote
        }))
    };
    let moved = dir("before");
    println!(
        "rename the directory: {}",
        ok(rename(ROOT, "before", ROOT, "after"))
    );
    println!("create through it: {}", create(moved, "f.txt"));
    println!(
        "found under the new name: {}",
        text(fs::read_to_string("/after/f.txt"))
    );
    println!(
        "stat through it: {}",
        show(stat_at(moved, 0, "f.txt").map(|s| s.size))
    );
    let gone = dir("gone");
    println!("remove the directory: {}", ok(rmdir(ROOT, "gone")));
    fs::create_dir("/gone").expect("a new directory by the name");
    println!("create through the removed one: {}", create(gone, "g.txt"));
    println!("in the new one: {}", fs::metadata("/gone/g.txt").is_ok());
    close(moved);
    close(gone);
}

/// Hard links: one file under two names.
fn hardlinks() {
    fs::write("/h.txt", b"one").expect("a writable directory");
    fs::create_dir("/hd").expect("a writable directory");
    let count = |name: &str| show(stat_at(ROOT, 0, name).map(|s| s.nlink));
    println!("link: {}", ok(link("h.txt", "hd/h2.txt")));
    println!("count: {}", count("h.txt"));
    fs::write("/hd/h2.txt", b"two").expect("write through the second name");
    println!("read the first: {}", text(fs::read_to_string("/h.txt")));
    let ino = |name: &str| stat_at(ROOT, 0, name).map(|s| s.ino);
    println!("same inode: {}", ino("h.txt") == ino("hd/h2.txt"));
    println!("link over a name: {}", ok(link("h.txt", "hd/h2.txt")));
    println!("link a missing name: {}", ok(link("nope", "x")));
    println!("link a directory: {}", ok(link("hd", "hd2")));
    println!("link into a file: {}", ok(link("h.txt", "h.txt/x")));
    println!("unlink the first: {}", ok(unlink(ROOT, "h.txt")));
    println!("count after: {}", count("hd/h2.txt"));
    println!(
        "read the second: {}",
        text(fs::read_to_string("/hd/h2.txt"))
    );
    println!("relink: {}", ok(link("hd/h2.txt", "h3.txt")));
    println!(
        "rename over itself: {}",
        ok(rename(ROOT, "h3.txt", ROOT, "hd/h2.txt"))
    );
    println!(
        "both still there: {} {}",
        count("h3.txt"),
        count("hd/h2.txt")
    );
    fs::create_dir("/hd/sub").expect("a writable directory");
    println!("a directory's count: {}", count("hd"));
}

fn main() {
    match std::env::args().nth(1).unwrap_or_default().as_str() {
        "modes" => modes(),
        "slashes" => slashes(),
        "confine" => confine(),
        "unlinked" => unlinked(),
        "links" => links(),
        "dirfd" => dirfd(),
        "hardlinks" => hardlinks(),
        other => {
            eprintln!("unknown probe {other:?}: modes, slashes, confine, unlinked, links, dirfd or hardlinks");
            std::process::exit(64);
        }
    }
}
