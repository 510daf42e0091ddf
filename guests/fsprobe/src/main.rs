//! Probes the filesystem semantics a WASI program relies on and prints one
//! line per probe: `PROBE: ANSWER`. The same binary runs under `nexus run`
//! and under stock wasmtime-wasi on a host directory; the suite compares
//! the two line for line. It imports nothing but `wasi:cli` and
//! `wasi:filesystem`, so stock can run it as it is.

use nexus_guest::raw::wasi::clocks::wall_clock::Datetime;
use nexus_guest::raw::wasi::filesystem::preopens;
use nexus_guest::raw::wasi::filesystem::types::{
    filesystem_error_code, Descriptor, DescriptorFlags as D, ErrorCode, NewTimestamp,
    OpenFlags as O, PathFlags,
};
use nexus_guest::raw::wasi::io::streams::StreamError;
use std::fs;

fn show<T: std::fmt::Display>(r: Result<T, ErrorCode>) -> String {
    match r {
        Ok(v) => v.to_string(),
        Err(e) => format!("{e:?}"),
    }
}

fn ok(r: Result<(), ErrorCode>) -> String {
    show(r.map(|()| "ok"))
}

fn open(dir: &Descriptor, name: &str, o: O, d: D) -> Result<Descriptor, ErrorCode> {
    dir.open_at(PathFlags::empty(), name, o, d)
}

/// Access modes: a descriptor does what it was opened for.
fn modes(root: &Descriptor) {
    fs::write("/m.txt", b"hello").expect("a writable directory");
    let ro = open(root, "m.txt", O::empty(), D::READ).expect("open read-only");
    println!("set-size read-only: {}", ok(ro.set_size(0)));
    let now = NewTimestamp::Now;
    println!(
        "set-times read-only: {}",
        ok(ro.set_times(NewTimestamp::NoChange, now))
    );
    println!("write read-only: {}", show(ro.write(b"x", 0)));
    let size = fs::metadata("/m.txt").map(|m| m.len());
    println!(
        "size after: {}",
        size.map_or("gone".into(), |s| s.to_string())
    );
    let wo = open(root, "m.txt", O::empty(), D::WRITE).expect("open write-only");
    println!(
        "read write-only: {}",
        show(wo.read(5, 0).map(|(b, _)| b.len()))
    );
    let streamed = wo.read_via_stream(0).map(|s| match s.blocking_read(5) {
        Ok(b) => b.len().to_string(),
        Err(StreamError::LastOperationFailed(e)) => format!("{:?}", filesystem_error_code(&e)),
        Err(StreamError::Closed) => "closed".into(),
    });
    println!("stream write-only: {}", show(streamed));
    let neither = open(root, "m.txt", O::empty(), D::empty()).expect("open, no flags");
    println!(
        "read no flags: {}",
        show(neither.read(5, 0).map(|(b, _)| b.len()))
    );
    let created = open(root, "c.txt", O::CREATE, D::READ).expect("create read-only");
    println!("write after create: {}", show(created.write(b"abc", 0)));
    // 10^10 s is in 2286: past 2^63 ns, where Nexus's times end.
    let far = NewTimestamp::Timestamp(Datetime {
        seconds: 10_000_000_000,
        nanoseconds: 0,
    });
    println!(
        "set-times in 2286: {}",
        ok(root.set_times_at(PathFlags::empty(), "c.txt", NewTimestamp::NoChange, far))
    );
}

/// Paths are exact: a trailing `/` names a directory.
fn slashes(root: &Descriptor) {
    fs::write("/m.txt", b"hello").expect("a writable directory");
    let opened = |name: &str, o: O| show(open(root, name, o, D::READ).map(|_| "ok"));
    println!("open m.txt/: {}", opened("m.txt/", O::empty()));
    println!("open m.txt/.: {}", opened("m.txt/.", O::empty()));
    println!("create new.txt/: {}", opened("new.txt/", O::CREATE));
    println!("unlink m.txt/: {}", ok(root.unlink_file_at("m.txt/")));
    println!(
        "rename m.txt/: {}",
        ok(root.rename_at("m.txt/", root, "n.txt"))
    );
    println!(
        "rename to n.txt/: {}",
        ok(root.rename_at("m.txt", root, "n.txt/"))
    );
    println!("rmdir m.txt/: {}", ok(root.remove_directory_at("m.txt/")));
    println!("mkdir d/: {}", ok(root.create_directory_at("d/")));
    println!("rmdir d/: {}", ok(root.remove_directory_at("d/")));
    let kept = fs::read("/m.txt").map(|b| String::from_utf8_lossy(&b).into_owned());
    println!(
        "m.txt: {}",
        kept.unwrap_or_else(|e| format!("{:?}", e.kind()))
    );
}

/// A directory descriptor confines the paths resolved from it.
fn confine(root: &Descriptor) {
    fs::create_dir_all("/a/b/c").expect("a writable directory");
    let b = open(root, "a/b", O::DIRECTORY, D::READ | D::MUTATE_DIRECTORY).expect("open a/b");
    let create = |name: &str| show(open(&b, name, O::CREATE, D::WRITE).map(|_| "ok"));
    println!("create ../x under a/b: {}", create("../x"));
    println!("create c/../../x under a/b: {}", create("c/../../x"));
    println!("create c/../x under a/b: {}", create("c/../x"));
    println!(
        "mkdir ../escaped under a/b: {}",
        ok(b.create_directory_at("../escaped"))
    );
    println!("escaped exists: {}", fs::metadata("/a/escaped").is_ok());
    let at_root = show(open(root, "../x", O::empty(), D::READ).map(|_| "ok"));
    println!("open ../x at the root: {at_root}");
}

/// An unlinked file lives while it is open, as on POSIX.
fn unlinked(root: &Descriptor) {
    use std::io::{Read, Seek, Write};
    let text = |r: Result<(Vec<u8>, bool), ErrorCode>| {
        show(r.map(|(b, _)| String::from_utf8_lossy(&b).into_owned()))
    };
    fs::write("/t.txt", b"temporary").expect("a writable directory");
    let d = open(root, "t.txt", O::empty(), D::READ | D::WRITE).expect("open t.txt");
    println!("unlink while open: {}", ok(root.unlink_file_at("t.txt")));
    let by_name = root.stat_at(PathFlags::empty(), "t.txt");
    println!("stat by name after unlink: {}", show(by_name.map(|_| "ok")));
    println!("read after unlink: {}", text(d.read(100, 0)));
    println!("write after unlink: {}", show(d.write(b"T", 0)));
    println!("read again: {}", text(d.read(100, 0)));
    println!("size after unlink: {}", show(d.stat().map(|s| s.size)));
    println!(
        "links after unlink: {}",
        show(d.stat().map(|s| s.link_count))
    );
    let stream = d.read_via_stream(0).expect("a stream");
    drop(d);
    let streamed = match stream.blocking_read(100) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => format!("{e:?}"),
    };
    println!("stream after the descriptor closed: {streamed}");
    drop(stream);
    fs::write("/t.txt", b"new").expect("the name is free");
    let again = fs::read("/t.txt").map(|b| String::from_utf8_lossy(&b).into_owned());
    println!("new file by the name: {}", again.unwrap_or_default());
    // The temporary-file pattern through std.
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open("/std.txt")
        .expect("open std.txt");
    println!("std remove: {:?}", fs::remove_file("/std.txt").is_ok());
    f.write_all(b"kept by the descriptor").expect("write");
    f.seek(std::io::SeekFrom::Start(0)).expect("seek");
    let mut back = String::new();
    let read = f.read_to_string(&mut back).map(|_| back);
    println!(
        "std read back: {}",
        read.unwrap_or_else(|e| format!("{:?}", e.kind()))
    );
    println!("std name gone: {}", fs::metadata("/std.txt").is_err());
    // The atomic-save pattern: a reader of the old file keeps it.
    fs::write("/cfg.txt", b"old").expect("a writable directory");
    fs::write("/cfg.new", b"new").expect("a writable directory");
    let reader = open(root, "cfg.txt", O::empty(), D::READ).expect("open cfg.txt");
    println!(
        "rename over an open file: {}",
        ok(root.rename_at("cfg.new", root, "cfg.txt"))
    );
    println!("the reader still reads: {}", text(reader.read(100, 0)));
    let by_name = fs::read("/cfg.txt").map(|b| String::from_utf8_lossy(&b).into_owned());
    println!(
        "by name: {}",
        by_name.unwrap_or_else(|e| format!("{:?}", e.kind()))
    );
}

/// Symbolic links: made, read, followed or not, looping, dangling,
/// renamed and removed.
fn links(root: &Descriptor) {
    let text = |r: Result<(Vec<u8>, bool), ErrorCode>| {
        show(r.map(|(b, _)| String::from_utf8_lossy(&b).into_owned()))
    };
    fs::create_dir_all("/l/dir").expect("a writable directory");
    fs::write("/l/dir/f.txt", b"through the link").expect("a writable directory");
    let l = open(root, "l", O::DIRECTORY, D::READ | D::MUTATE_DIRECTORY).expect("open l");
    for (target, name) in [
        ("dir/f.txt", "to-file"),
        ("dir", "to-dir"),
        ("nowhere", "dangling"),
        ("loop-b", "loop-a"),
        ("loop-a", "loop-b"),
        ("../l/dir/./f.txt", "roundabout"),
    ] {
        println!("symlink {name}: {}", ok(l.symlink_at(target, name)));
    }
    println!(
        "symlink over a name: {}",
        ok(l.symlink_at("dir", "to-file"))
    );
    println!("symlink absolute: {}", ok(l.symlink_at("/l/dir", "abs")));
    println!("readlink: {}", show(l.readlink_at("to-file")));
    println!("readlink of a file: {}", show(l.readlink_at("dir/f.txt")));
    println!("readlink missing: {}", show(l.readlink_at("nope")));
    let follow = PathFlags::SYMLINK_FOLLOW;
    let read = |flags, name: &str| {
        text(
            l.open_at(flags, name, O::empty(), D::READ)
                .and_then(|d| d.read(100, 0)),
        )
    };
    println!("open following: {}", read(follow, "to-file"));
    println!(
        "open not following: {}",
        read(PathFlags::empty(), "to-file")
    );
    println!("open roundabout: {}", read(follow, "roundabout"));
    println!("open a loop: {}", read(follow, "loop-a"));
    println!("open dangling: {}", read(follow, "dangling"));
    println!(
        "open through a dir link: {}",
        read(PathFlags::empty(), "to-dir/f.txt")
    );
    let kind = |flags, name: &str| show(l.stat_at(flags, name).map(|s| format!("{:?}", s.type_)));
    println!("stat following: {}", kind(follow, "to-file"));
    println!(
        "stat not following: {}",
        kind(PathFlags::empty(), "to-file")
    );
    println!(
        "link size: {}",
        show(l.stat_at(PathFlags::empty(), "to-file").map(|s| s.size))
    );
    println!("stat dangling: {}", kind(PathFlags::empty(), "dangling"));
    let listed = fs::read_dir("/l").map(|d| {
        let mut names: Vec<String> = d
            .filter_map(|e| e.ok())
            .map(|e| {
                format!(
                    "{}:{}",
                    e.file_name().to_string_lossy(),
                    e.file_type().map(|t| t.is_symlink()).unwrap_or(false)
                )
            })
            .collect();
        names.sort();
        names.join(" ")
    });
    println!(
        "listing: {}",
        listed.unwrap_or_else(|e| format!("{:?}", e.kind()))
    );
    println!("std read_link: {:?}", fs::read_link("/l/to-dir").ok());
    println!(
        "std read through: {:?}",
        fs::read_to_string("/l/to-dir/f.txt").ok()
    );
    println!(
        "rename a link: {}",
        ok(l.rename_at("to-file", &l, "renamed"))
    );
    println!("renamed reads: {}", read(follow, "renamed"));
    println!("unlink a dir link: {}", ok(l.unlink_file_at("to-dir")));
    println!("its target stays: {}", fs::metadata("/l/dir/f.txt").is_ok());
    println!("rmdir a link: {}", ok(l.remove_directory_at("renamed")));
}

/// A directory descriptor names its directory, not the path it was
/// opened by: it follows a rename, and one whose directory was removed
/// finds nothing (not a new directory of the same name).
fn dirfd(root: &Descriptor) {
    let dir = |name: &str| {
        fs::create_dir(format!("/{name}")).expect("a writable directory");
        open(root, name, O::DIRECTORY, D::READ | D::MUTATE_DIRECTORY).expect("open the directory")
    };
    let create = |d: &Descriptor, name: &str| {
        let made = open(d, name, O::CREATE, D::READ | D::WRITE);
        ok(made.and_then(|f| f.write(b"made", 0).map(drop)))
    };
    let moved = dir("before");
    println!(
        "rename the directory: {}",
        ok(root.rename_at("before", root, "after"))
    );
    println!("create through it: {}", create(&moved, "f.txt"));
    println!(
        "found under the new name: {}",
        fs::read_to_string("/after/f.txt").unwrap_or_else(|e| format!("{:?}", e.kind()))
    );
    println!(
        "stat through it: {}",
        show(moved.stat_at(PathFlags::empty(), "f.txt").map(|s| s.size))
    );
    let gone = dir("gone");
    println!(
        "remove the directory: {}",
        ok(root.remove_directory_at("gone"))
    );
    fs::create_dir("/gone").expect("a new directory by the name");
    println!("create through the removed one: {}", create(&gone, "g.txt"));
    println!("in the new one: {}", fs::metadata("/gone/g.txt").is_ok());
    println!(
        "list the removed one: {}",
        show(
            gone.read_directory()
                .map(|s| s.read_directory_entry().map_or(0, |e| e.map_or(0, |_| 1)))
        )
    );
}

/// Hard links: one file under two names.
fn hardlinks(root: &Descriptor) {
    fs::write("/h.txt", b"one").expect("a writable directory");
    fs::create_dir("/hd").expect("a writable directory");
    let link = |from: &str, to: &str| ok(root.link_at(PathFlags::empty(), from, root, to));
    let count = |name: &str| show(root.stat_at(PathFlags::empty(), name).map(|s| s.link_count));
    println!("link: {}", link("h.txt", "hd/h2.txt"));
    println!("count: {}", count("h.txt"));
    fs::write("/hd/h2.txt", b"two").expect("write through the second name");
    println!(
        "read the first: {}",
        fs::read_to_string("/h.txt").unwrap_or_default()
    );
    println!("same file: {}", {
        let a = open(root, "h.txt", O::empty(), D::READ).expect("open h.txt");
        let b = open(root, "hd/h2.txt", O::empty(), D::READ).expect("open hd/h2.txt");
        show(
            a.is_same_object(&b)
                .then_some("yes")
                .ok_or(ErrorCode::Invalid),
        )
    });
    println!("link over a name: {}", link("h.txt", "hd/h2.txt"));
    println!("link a missing name: {}", link("nope", "x"));
    println!("link a directory: {}", link("hd", "hd2"));
    println!("link into a file: {}", link("h.txt", "h.txt/x"));
    println!("unlink the first: {}", ok(root.unlink_file_at("h.txt")));
    println!("count after: {}", count("hd/h2.txt"));
    println!(
        "read the second: {}",
        fs::read_to_string("/hd/h2.txt").unwrap_or_default()
    );
    println!("rename over itself: {}", {
        println!("relink: {}", link("hd/h2.txt", "h3.txt"));
        ok(root.rename_at("h3.txt", root, "hd/h2.txt"))
    });
    println!(
        "both still there: {} {}",
        count("h3.txt"),
        count("hd/h2.txt")
    );
    fs::create_dir("/hd/sub").expect("a writable directory");
    println!("a directory's count: {}", count("hd"));
}

fn main() {
    let (root, _) = preopens::get_directories()
        .into_iter()
        .next()
        .expect("a preopen");
    match std::env::args().nth(1).unwrap_or_default().as_str() {
        "modes" => modes(&root),
        "slashes" => slashes(&root),
        "confine" => confine(&root),
        "unlinked" => unlinked(&root),
        "links" => links(&root),
        "dirfd" => dirfd(&root),
        "hardlinks" => hardlinks(&root),
        other => {
            eprintln!("unknown probe {other:?}: modes, slashes, confine, unlinked, links, dirfd or hardlinks");
            std::process::exit(64);
        }
    }
}
