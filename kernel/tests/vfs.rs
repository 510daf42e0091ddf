//! The zone VFS on real sled and a real object store (local disk or memory).

// Tests may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::{count_chunks, CREATE};
use nexus_kernel::{At, Capabilities, Principal, Task};
use nexus_kernel::{ErrorCode, KernelError};
use nexus_kernel::{FileKind, ZoneId};
use nexus_kernel::{Kernel, KernelConfig, ObjectStoreConfig};
use nexus_kernel::{CHUNK_SIZE, INLINE_MAX};

/// A kernel whose background write-out and collector never run in a
/// test's time: what they would do is asked for explicitly.
fn kernel(dir: &std::path::Path) -> Kernel {
    let mut cfg = KernelConfig::embedded(dir);
    cfg.flush_interval = std::time::Duration::from_secs(3600);
    Kernel::open(cfg).unwrap()
}

fn me() -> Principal {
    Principal::parse("user:tester").unwrap()
}

fn task(k: &Kernel, zone: &ZoneId) -> Task {
    k.spawn_task(me(), zone, Capabilities::ALL).unwrap()
}

/// A fresh data directory with zone z1 and a task of its owner.
async fn zone_z1() -> (tempfile::TempDir, Kernel, ZoneId, Task) {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(dir.path());
    let z1 = z("z1");
    k.create_zone(&me(), &z1).await.unwrap();
    let t1 = task(&k, &z1);
    (dir, k, z1, t1)
}

fn z(name: &str) -> ZoneId {
    ZoneId::new(name).unwrap()
}

fn code<T: std::fmt::Debug>(r: Result<T, KernelError>) -> ErrorCode {
    r.expect_err("expected an error").code()
}

#[tokio::test]
async fn files_directories_and_their_errors() {
    let (_dir, k, z1, t1) = zone_z1().await;
    assert_eq!(code(k.create_zone(&me(), &z1).await), ErrorCode::Exist);

    k.mkdir(&t1, "/docs").await.unwrap();
    let f = k.open_path(&t1, "/docs/a.txt", CREATE).await.unwrap();
    k.write(&t1, &f, 0, b"hello world").await.unwrap();
    assert_eq!(&k.read(&t1, &f, 6, 100).await.unwrap()[..], b"world");
    assert_eq!(k.append(&t1, &f, b"!").await.unwrap(), 11);
    assert_eq!(k.stat(&t1, "/docs/a.txt").unwrap().size, 12);

    // `..` at the root stays at the root; nothing escapes the zone.
    assert_eq!(k.stat(&t1, "/../../docs/../docs/a.txt").unwrap().ino, f.ino);
    assert_eq!(k.stat(&t1, "../../..").unwrap().kind, FileKind::Dir);
    assert_eq!(code(k.stat(&t1, "/etc/passwd")), ErrorCode::NoEntry);

    // Bad input gets typed errors and changes nothing.
    assert_eq!(code(k.stat(&t1, "")), ErrorCode::Invalid);
    assert_eq!(code(k.stat(&t1, "/docs/a\0b")), ErrorCode::Invalid);
    assert_eq!(
        code(k.mkdir(&t1, &format!("/{}", "x".repeat(256))).await),
        ErrorCode::NameTooLong
    );
    assert_eq!(
        code(k.stat(&t1, &"/a".repeat(3000))),
        ErrorCode::NameTooLong
    );
    assert_eq!(
        code(k.mkdir(&t1, "/docs/a.txt/sub").await),
        ErrorCode::NotDirectory
    );
    assert_eq!(
        code(k.open_path(&t1, "/docs/a.txt/x", CREATE).await),
        ErrorCode::NotDirectory
    );
    assert_eq!(code(k.mkdir(&t1, "/docs").await), ErrorCode::Exist);
    assert_eq!(code(k.mkdir(&t1, "/nope/x").await), ErrorCode::NoEntry);
    assert_eq!(code(k.rmdir(&t1, "/docs").await), ErrorCode::NotEmpty);
    assert_eq!(code(k.unlink(&t1, "/docs").await), ErrorCode::IsDirectory);
    assert_eq!(
        code(k.rmdir(&t1, "/docs/a.txt").await),
        ErrorCode::NotDirectory
    );
    assert_eq!(code(k.rmdir(&t1, "/").await), ErrorCode::Busy);
    assert_eq!(code(k.mkdir(&t1, "/docs/..").await), ErrorCode::Invalid);
    let d = k.resolve(&t1, "/docs", true).unwrap();
    assert_eq!(
        code(k.write(&t1, &d, 0, b"x").await),
        ErrorCode::IsDirectory
    );
    assert_eq!(
        code(k.rename(&t1, "/docs", "/docs/inner").await),
        ErrorCode::Invalid
    );
    assert_eq!(&k.read(&t1, &f, 0, 100).await.unwrap()[..], b"hello world!");

    // Rename replaces a file atomically; the replaced inode is gone.
    let g = k.open_path(&t1, "/b.txt", CREATE).await.unwrap();
    k.write(&t1, &g, 0, b"other").await.unwrap();
    k.rename(&t1, "/b.txt", "/docs/a.txt").await.unwrap();
    assert_eq!(k.stat(&t1, "/docs/a.txt").unwrap().ino, g.ino);
    assert_eq!(code(k.stat(&t1, "/b.txt")), ErrorCode::NoEntry);
    assert_eq!(code(k.read(&t1, &f, 0, 1).await), ErrorCode::NoEntry);

    k.unlink(&t1, "/docs/a.txt").await.unwrap();
    k.rmdir(&t1, "/docs").await.unwrap();
    assert!(k.readdir(&t1, "/", None, 10).unwrap().entries.is_empty());
    assert!(k.check_zone(&t1, true).await.unwrap().consistent());
}

#[tokio::test]
async fn a_small_write_into_a_large_file_stores_only_its_bytes() {
    let (dir, k, _z1, t1) = zone_z1().await;
    let f = k.open_path(&t1, "/big", CREATE).await.unwrap();
    let size = 8 * CHUNK_SIZE;
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    k.write(&t1, &f, 0, &data).await.unwrap();
    k.sync(&t1, &f).await.unwrap();
    let chunks_before = count_chunks(dir.path());
    assert_eq!(chunks_before, 8);
    let v = k.stat_handle(&t1, &f).unwrap().version;
    k.write(&t1, &f, 3 * CHUNK_SIZE + 100, &[0xAA; 4096])
        .await
        .unwrap();
    k.sync(&t1, &f).await.unwrap();
    assert_eq!(k.stat_handle(&t1, &f).unwrap().version, v + 1);
    // Carried by the command as a patch: no chunk rewritten.
    assert_eq!(
        count_chunks(dir.path()),
        chunks_before,
        "no chunk rewritten"
    );
    let back = k.read(&t1, &f, 3 * CHUNK_SIZE, 8192).await.unwrap();
    assert_eq!(
        &back[..100],
        &data[(3 * CHUNK_SIZE) as usize..(3 * CHUNK_SIZE + 100) as usize]
    );
    assert!(back[100..4196].iter().all(|&b| b == 0xAA));
    assert_eq!(back[4196], data[(3 * CHUNK_SIZE + 4196) as usize]);
    // A write that would pass the patches' bound folds them, with it,
    // into the one chunk they touch.
    let at = 3 * CHUNK_SIZE + 8192;
    k.write(&t1, &f, at, &[0xBB; 100_000]).await.unwrap();
    k.sync(&t1, &f).await.unwrap();
    assert_eq!(
        count_chunks(dir.path()),
        chunks_before + 1,
        "one chunk rewritten"
    );
    let back = k.read(&t1, &f, 3 * CHUNK_SIZE, 200_000).await.unwrap();
    assert!(back[100..4196].iter().all(|&b| b == 0xAA));
    assert!(back[8192..108_192].iter().all(|&b| b == 0xBB));
    assert_eq!(back[108_192], data[(3 * CHUNK_SIZE + 108_192) as usize]);

    // The collector deletes exactly the replaced chunk (and `gc` finds
    // nothing left); the file still reads back whole.
    let collected = k.collect_garbage().await.unwrap();
    assert_eq!((collected.deleted, collected.kept), (1, 0));
    assert_eq!(count_chunks(dir.path()), chunks_before);
    let report = k.gc(std::slice::from_ref(&t1)).await.unwrap();
    assert_eq!(report.deleted, 0);
    assert!(k.check_zone(&t1, true).await.unwrap().consistent());
    // Truncate into the middle of a chunk, then grow: the tail reads as zeros.
    k.truncate(&t1, &f, CHUNK_SIZE + 10).await.unwrap();
    k.truncate(&t1, &f, 2 * CHUNK_SIZE).await.unwrap();
    let tail = k.read(&t1, &f, CHUNK_SIZE, 20).await.unwrap();
    assert_eq!(
        &tail[..10],
        &data[CHUNK_SIZE as usize..CHUNK_SIZE as usize + 10]
    );
    assert!(tail[10..].iter().all(|&b| b == 0));
    // Small again: back to inline storage.
    k.truncate(&t1, &f, 5).await.unwrap();
    assert_eq!(&k.read(&t1, &f, 0, 100).await.unwrap()[..], &data[..5]);
    assert!(k.check_zone(&t1, true).await.unwrap().consistent());
}

#[tokio::test]
async fn inline_files_move_to_chunks_and_back() {
    let (dir, k, _z1, t1) = zone_z1().await;
    let f = k.open_path(&t1, "/f", CREATE).await.unwrap();
    k.write(&t1, &f, 0, &[1; INLINE_MAX as usize])
        .await
        .unwrap();
    assert_eq!(count_chunks(dir.path()), 0, "small files stay inline");
    k.write(&t1, &f, 2 * CHUNK_SIZE, b"far").await.unwrap();
    let all = k.read(&t1, &f, 0, 3 * CHUNK_SIZE).await.unwrap();
    assert_eq!(all.len() as u64, 2 * CHUNK_SIZE + 3);
    assert!(all[..INLINE_MAX as usize].iter().all(|&b| b == 1));
    assert!(all[INLINE_MAX as usize..2 * CHUNK_SIZE as usize]
        .iter()
        .all(|&b| b == 0));
    assert_eq!(&all[2 * CHUNK_SIZE as usize..], b"far");
    assert!(k.check_zone(&t1, false).await.unwrap().consistent());
}

#[tokio::test]
async fn concurrent_appenders_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let k = std::sync::Arc::new(kernel(dir.path()));
    let z1 = z("z1");
    k.create_zone(&me(), &z1).await.unwrap();
    let t1 = task(&k, &z1);
    let f = k.open_path(&t1, "/log", CREATE).await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..8u8 {
        let (k, f, t1) = (k.clone(), f.clone(), t1.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..40u8 {
                k.append(&t1, &f, &[b'a' + w, i, b'\n']).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let all = k.read(&t1, &f, 0, 1 << 20).await.unwrap();
    assert_eq!(all.len(), 8 * 40 * 3);
    for w in 0..8u8 {
        let mine: Vec<u8> = all
            .chunks(3)
            .filter(|r| r[0] == b'a' + w)
            .map(|r| r[1])
            .collect();
        assert_eq!(
            mine,
            (0..40).collect::<Vec<_>>(),
            "writer {w}: order or bytes lost"
        );
    }
}

#[tokio::test]
async fn readdir_pages_are_stable_under_concurrent_inserts() {
    let (_dir, k, _z1, t1) = zone_z1().await;
    for i in 0..50 {
        k.open_path(&t1, &format!("/e{i:03}"), CREATE)
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut extra = 0;
    loop {
        let page = k.readdir(&t1, "/", cursor.as_deref(), 7).unwrap();
        seen.extend(page.entries.iter().map(|e| e.name.clone()));
        // Inserts before and after the cursor while listing.
        k.open_path(&t1, &format!("/a-new{extra}"), CREATE)
            .await
            .unwrap();
        k.open_path(&t1, &format!("/z-new{extra}"), CREATE)
            .await
            .unwrap();
        extra += 1;
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    let originals: Vec<_> = seen
        .iter()
        .filter(|n| n.starts_with('e'))
        .cloned()
        .collect();
    assert_eq!(
        originals,
        (0..50).map(|i| format!("e{i:03}")).collect::<Vec<_>>()
    );
    let mut dedup = seen.clone();
    dedup.dedup();
    assert_eq!(dedup, seen, "an entry appeared twice");
}

#[tokio::test]
async fn mounts_link_zones_and_are_crossed_by_resolution() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(dir.path());
    let (z1, z2) = (z("z1"), z("z2"));
    k.create_zone(&me(), &z1).await.unwrap();
    let t1 = task(&k, &z1);
    k.create_zone(&me(), &z2).await.unwrap();
    let t2 = task(&k, &z2);
    k.mkdir(&t1, "/shared").await.unwrap();
    assert_eq!(code(k.mount(&t1, "/shared", &z2).await), ErrorCode::Exist);
    assert_eq!(
        code(k.mount(&t1, "/m", &z("nope")).await),
        ErrorCode::NoEntry
    );
    k.mount(&t1, "/m", &z2).await.unwrap();
    let f = k.open_path(&t1, "/m/x.txt", CREATE).await.unwrap();
    k.write(&t1, &f, 0, b"in z2").await.unwrap();
    assert_eq!(f.zone_id(), &z2);
    assert_eq!(k.stat(&t2, "/x.txt").unwrap().size, 5);
    assert_eq!(k.lstat(&t1, "/m").unwrap().kind, FileKind::Mount);
    assert_eq!(k.stat(&t1, "/m").unwrap().zone, z2);
    // `..` from the mounted root returns to z1, not above it.
    assert_eq!(k.stat(&t1, "/m/../shared").unwrap().zone, z1);
    assert_eq!(
        code(k.rename(&t1, "/m/x.txt", "/shared/x.txt").await),
        ErrorCode::CrossDevice
    );
    // A mounted zone cannot be destroyed; unlinking the mount allows it.
    assert_eq!(
        k.destroy_zone(&t2).map_err(|e| e.code()),
        Err(ErrorCode::Busy)
    );
    k.unlink(&t1, "/m").await.unwrap();
    assert_eq!(
        k.stat(&t2, "/x.txt").unwrap().size,
        5,
        "unlinking a mount keeps the zone"
    );
    k.destroy_zone(&t2).unwrap();
    assert_eq!(code(k.stat(&t2, "/")), ErrorCode::NoEntry);
}

#[tokio::test]
async fn symbolic_links_resolve_inside_their_zone() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(dir.path());
    let (z1, z2) = (z("z1"), z("z2"));
    k.create_zone(&me(), &z1).await.unwrap();
    let t1 = task(&k, &z1);
    k.create_zone(&me(), &z2).await.unwrap();
    let t2 = task(&k, &z2);
    k.mkdir_all(&t1, "/a/b").await.unwrap();
    let f = k.open_path(&t1, "/a/b/f.txt", CREATE).await.unwrap();
    k.write(&t1, &f, 0, b"target").await.unwrap();

    // Relative from the link's directory, `..` included; absolute from
    // the zone root; through a link to a directory.
    k.symlink(&t1, "b/f.txt", "/a/rel").await.unwrap();
    k.symlink(&t1, "../a/b", "/a/up").await.unwrap();
    k.symlink(&t1, "/a/b/f.txt", "/abs").await.unwrap();
    for p in ["/a/rel", "/a/up/f.txt", "/abs"] {
        let h = k
            .open_path(&t1, p, nexus_kernel::OpenOptions::default())
            .await
            .unwrap();
        assert_eq!(
            &k.read(&t1, &h, 0, 100).await.unwrap()[..],
            b"target",
            "{p}"
        );
    }
    assert_eq!(k.stat(&t1, "/a/rel").unwrap().kind, FileKind::Regular);
    let link = k.lstat(&t1, "/a/rel").unwrap();
    assert_eq!((link.kind, link.size), (FileKind::Symlink, 7));
    assert_eq!(k.readlink(&t1, "/a/rel").unwrap(), "b/f.txt");
    assert_eq!(code(k.readlink(&t1, "/a/b/f.txt")), ErrorCode::Invalid);
    // `..` after a link to a directory is that directory's parent.
    assert_eq!(
        k.stat(&t1, "/a/up/..").unwrap().ino,
        k.stat(&t1, "/a").unwrap().ino
    );

    // An absolute target means the root of the link's own zone, even
    // when the link is reached through a mount from another zone.
    k.mount(&t1, "/m", &z2).await.unwrap();
    k.mkdir(&t2, "/inner").await.unwrap();
    k.symlink(&t2, "/inner", "/to-inner").await.unwrap();
    assert_eq!(k.stat(&t1, "/m/to-inner").unwrap().zone, z2);
    assert_eq!(k.stat(&t2, "/to-inner").unwrap().kind, FileKind::Dir);
    // `..` never climbs above the zone root, through a link neither.
    k.symlink(&t1, "../../../../a", "/a/escape").await.unwrap();
    assert_eq!(
        k.stat(&t1, "/a/escape").unwrap().ino,
        k.stat(&t1, "/a").unwrap().ino
    );

    // Loops end; a dangling link is `no-entry`; a trailing `/` follows.
    k.symlink(&t1, "loop2", "/loop1").await.unwrap();
    k.symlink(&t1, "loop1", "/loop2").await.unwrap();
    assert_eq!(code(k.stat(&t1, "/loop1")), ErrorCode::Loop);
    assert_eq!(k.lstat(&t1, "/loop1").unwrap().kind, FileKind::Symlink);
    k.symlink(&t1, "nowhere", "/dangling").await.unwrap();
    assert_eq!(code(k.stat(&t1, "/dangling")), ErrorCode::NoEntry);
    assert_eq!(k.lstat(&t1, "/a/up/").unwrap().kind, FileKind::Dir);
    assert_eq!(code(k.lstat(&t1, "/a/rel/")), ErrorCode::NotDirectory);

    // Bad targets are refused; so is a name taken.
    assert_eq!(code(k.symlink(&t1, "", "/empty").await), ErrorCode::Invalid);
    assert_eq!(
        code(k.symlink(&t1, "x\0y", "/nul").await),
        ErrorCode::Invalid
    );
    assert_eq!(code(k.symlink(&t1, "b", "/a/rel").await), ErrorCode::Exist);

    // Unlink and rename act on the link, never its target.
    k.rename(&t1, "/a/rel", "/a/rel2").await.unwrap();
    assert_eq!(k.stat(&t1, "/a/rel2").unwrap().size, 6);
    k.unlink(&t1, "/a/up").await.unwrap();
    assert_eq!(k.stat(&t1, "/a/b").unwrap().kind, FileKind::Dir);
    assert_eq!(code(k.rmdir(&t1, "/a/rel2").await), ErrorCode::NotDirectory);

    // The gate: following a link needs the target's permission, not the
    // link's; reading a link needs `read` on the link.
    let bot = Principal::parse("agent:bot").unwrap();
    let grant = |obj: nexus_kernel::ObjectRef, rel| nexus_kernel::Tuple {
        object: obj,
        relation: rel,
        subject: nexus_kernel::Subject::Principal(bot.clone()),
    };
    let link_obj = k.object_at(&t1, "/abs").unwrap().1;
    k.write_tuples(
        &t1,
        vec![grant(link_obj, nexus_kernel::Relation::Viewer)],
        vec![],
    )
    .await
    .unwrap();
    let tb = k.spawn_task(bot, &z1, Capabilities::ALL).unwrap();
    assert_eq!(k.readlink(&tb, "/abs").unwrap(), "/a/b/f.txt");
    assert_eq!(code(k.stat(&tb, "/abs")), ErrorCode::Access);
    // fsck knows links.
    assert!(k.check_zone(&t1, true).await.unwrap().consistent());
}

#[tokio::test]
async fn everything_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let z1 = z("z1");
    {
        let k = kernel(dir.path());
        k.create_zone(&me(), &z1).await.unwrap();
        let t1 = task(&k, &z1);
        k.mkdir_all(&t1, "/a/b/c").await.unwrap();
        let f = k.open_path(&t1, "/a/b/c/data", CREATE).await.unwrap();
        k.write(&t1, &f, 0, &vec![7u8; 3 * CHUNK_SIZE as usize + 5])
            .await
            .unwrap();
        let t = k.set_times(&t1, &f, Some(42), Some(43)).await.unwrap();
        assert_eq!((t.atime, t.mtime), (42, 43));
    }
    let k = kernel(dir.path());
    let t1 = task(&k, &z1);
    let s = k.stat(&t1, "/a/b/c/data").unwrap();
    assert_eq!((s.size, s.atime, s.mtime), (3 * CHUNK_SIZE + 5, 42, 43));
    let f = k.resolve(&t1, "/a/b/c/data", true).unwrap();
    assert_eq!(k.read(&t1, &f, 3 * CHUNK_SIZE, 10).await.unwrap().len(), 5);
    k.open_path(&t1, "/after-restart", CREATE).await.unwrap();
    assert!(k.check_zone(&t1, true).await.unwrap().consistent());
}

#[tokio::test]
async fn the_in_memory_object_store_serves_tests() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = KernelConfig::embedded(dir.path());
    cfg.object_store = ObjectStoreConfig::parse("memory").unwrap();
    let k = Kernel::open(cfg).unwrap();
    let z1 = z("z1");
    k.create_zone(&me(), &z1).await.unwrap();
    let t1 = task(&k, &z1);
    let f = k.open_path(&t1, "/f", CREATE).await.unwrap();
    k.write(&t1, &f, 0, &vec![1u8; 2 * CHUNK_SIZE as usize])
        .await
        .unwrap();
    assert_eq!(count_chunks(dir.path()), 0);
    assert_eq!(
        k.read(&t1, &f, CHUNK_SIZE, 4).await.unwrap().as_ref(),
        &[1, 1, 1, 1]
    );
    assert!(ObjectStoreConfig::parse("ftp://x").is_err());
}

#[tokio::test]
async fn pipe_inodes_are_reserved_with_their_capacity() {
    let (_dir, k, _z1, t1) = zone_z1().await;
    k.mkdir(&t1, "/pipes").await.unwrap();
    let p = k.mkpipe(&t1, "/pipes/jobs", 65536).await.unwrap();
    let s = k.stat(&t1, "/pipes/jobs").unwrap();
    assert_eq!((s.kind, s.pipe_capacity), (FileKind::Pipe, Some(65536)));
    assert_eq!(
        k.readdir(&t1, "/pipes", None, 10).unwrap().entries[0].kind,
        FileKind::Pipe
    );
    // Byte I/O on pipes arrives with the pipes issue; until then it is refused, typed.
    assert_eq!(code(k.read(&t1, &p, 0, 1).await), ErrorCode::Unsupported);
    assert_eq!(
        code(k.mkpipe(&t1, "/pipes/jobs", 1).await),
        ErrorCode::Exist
    );
    k.unlink(&t1, "/pipes/jobs").await.unwrap();
    assert!(k.check_zone(&t1, false).await.unwrap().consistent());
}

#[tokio::test]
async fn truncating_to_the_same_size_commits_nothing() {
    let (_dir, k, _z1, t1) = zone_z1().await;
    let f = k.open_path(&t1, "/f", CREATE).await.unwrap();
    k.write(&t1, &f, 0, b"abc").await.unwrap();
    k.sync(&t1, &f).await.unwrap();
    let before = k.stat_handle(&t1, &f).unwrap();
    k.truncate(&t1, &f, 3).await.unwrap();
    assert_eq!(k.stat_handle(&t1, &f).unwrap(), before);
    k.truncate(&t1, &f, 1).await.unwrap();
    assert_eq!(k.stat_handle(&t1, &f).unwrap().version, before.version + 1);
}

/// POSIX: an unlinked file lives while it is open. Its name goes at once;
/// its content stays readable and writable through what holds it open,
/// and goes when the last holder closes (or, if the node stopped with it
/// open, at the node's next `gc`). The zone stays consistent throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlinked_file_lives_until_it_is_closed() {
    let (_dir, k, z1, t1) = zone_z1().await;
    let f = k.open_path(&t1, "/tmp.bin", CREATE).await.unwrap();
    let big = vec![5u8; CHUNK_SIZE as usize + 10];
    k.write(&t1, &f, 0, &big).await.unwrap();
    let held = k.hold_open(&f).unwrap();
    let again = k.hold_open(&f).unwrap();
    k.unlink(&t1, "/tmp.bin").await.unwrap();
    assert_eq!(code(k.stat(&t1, "/tmp.bin")), ErrorCode::NoEntry);
    assert!(k.readdir(&t1, "/", None, 10).unwrap().entries.is_empty());
    // The name is free; the open file is another file.
    k.open_path(&t1, "/tmp.bin", CREATE).await.unwrap();
    assert_eq!(k.read(&t1, &f, 0, 4).await.unwrap().as_ref(), &[5u8; 4]);
    k.write(&t1, &f, 2, b"xy").await.unwrap();
    assert_eq!(k.read(&t1, &f, 0, 4).await.unwrap().as_ref(), b"\x05\x05xy");
    assert_eq!(k.stat_handle(&t1, &f).unwrap().size, big.len() as u64);
    let report = k.check_zone(&t1, true).await.unwrap();
    assert!(report.consistent(), "{:?}", report.problems);
    let orphans = |k: &Kernel| k.zone_state(&z1).unwrap().orphans().count();
    assert_eq!(orphans(&k), 1);

    // One holder closes: still there. The last closes: reaped.
    drop(held);
    assert_eq!(k.read(&t1, &f, 0, 2).await.unwrap().len(), 2);
    drop(again);
    let mut waited = 0;
    while orphans(&k) > 0 {
        assert!(waited < 3000, "the orphan was never reaped");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        waited += 1;
    }
    assert_eq!(code(k.read(&t1, &f, 0, 2).await), ErrorCode::NoEntry);
    assert!(k.check_zone(&t1, true).await.unwrap().consistent());

    // A holder that closes where nothing can reap (as a node that stops
    // with the file open): `gc` reaps it, and the chunks go with it.
    let g = k.open_path(&t1, "/left.bin", CREATE).await.unwrap();
    k.write(&t1, &g, 0, &big).await.unwrap();
    let held = k.hold_open(&g).unwrap();
    k.unlink(&t1, "/left.bin").await.unwrap();
    std::thread::spawn(move || drop(held)).join().unwrap();
    assert_eq!(orphans(&k), 1);
    assert!(k.check_zone(&t1, false).await.unwrap().consistent());
    k.gc(std::slice::from_ref(&t1)).await.unwrap();
    assert_eq!(orphans(&k), 0);
    assert!(k.check_zone(&t1, true).await.unwrap().consistent());
}

/// The atomic-save pattern: a file renamed over one that is open here
/// leaves the open one readable until it is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_replaced_while_open_lives_until_it_is_closed() {
    let (_dir, k, z1, t1) = zone_z1().await;
    let old = k.open_path(&t1, "/cfg", CREATE).await.unwrap();
    k.write(&t1, &old, 0, b"old").await.unwrap();
    let new = k.open_path(&t1, "/cfg.new", CREATE).await.unwrap();
    k.write(&t1, &new, 0, b"new").await.unwrap();
    let held = k.hold_open(&old).unwrap();
    k.rename(&t1, "/cfg.new", "/cfg").await.unwrap();
    assert_eq!(k.read(&t1, &old, 0, 10).await.unwrap().as_ref(), b"old");
    let by_name = k.resolve(&t1, "/cfg", true).unwrap();
    assert_eq!(k.read(&t1, &by_name, 0, 10).await.unwrap().as_ref(), b"new");
    assert!(k.check_zone(&t1, true).await.unwrap().consistent());
    drop(held);
    let orphans = || k.zone_state(&z1).unwrap().orphans().count();
    let mut waited = 0;
    while orphans() > 0 {
        assert!(waited < 3000, "the replaced file was never reaped");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        waited += 1;
    }
    assert!(k.check_zone(&t1, true).await.unwrap().consistent());
}

#[tokio::test]
async fn a_zone_quota_refuses_growth_and_never_shrinking() {
    use nexus_kernel::{ZoneQuota, ZoneUsage};
    let (_dir, k, z1, t1) = zone_z1().await;
    // Only an admin of the zone sets its quota.
    let reader = k
        .spawn_task(me(), &z1, Capabilities::parse("read").unwrap())
        .unwrap();
    let quota = ZoneQuota {
        bytes: Some(10_000),
        inodes: Some(4),
    };
    assert_eq!(
        code(k.set_zone_quota(&reader, quota).await),
        ErrorCode::Access
    );
    k.set_zone_quota(&t1, quota).await.unwrap();
    let usage = |k: &Kernel| k.zone_usage(&t1).unwrap();
    assert_eq!(
        usage(&k).0,
        ZoneUsage {
            bytes: 0,
            inodes: 1
        }
    );

    // Bytes: a write that would pass 10,000 is refused whole.
    k.mkdir(&t1, "/d").await.unwrap();
    let f = k.open_path(&t1, "/d/a", CREATE).await.unwrap();
    k.write(&t1, &f, 0, &[7u8; 6000]).await.unwrap();
    let refused = k.write(&t1, &f, 6000, &[7u8; 5000]).await;
    assert_eq!(code(refused), ErrorCode::InsufficientSpace);
    assert_eq!(k.stat(&t1, "/d/a").unwrap().size, 6000);
    // Overwriting in place does not grow the zone.
    k.write(&t1, &f, 0, &[8u8; 6000]).await.unwrap();
    k.sync(&t1, &f).await.unwrap();
    // Inodes: root, /d, /d/a, then one more; the fifth is refused.
    k.mkdir(&t1, "/e").await.unwrap();
    assert_eq!(code(k.mkdir(&t1, "/f").await), ErrorCode::InsufficientSpace);
    assert_eq!(
        code(k.mkpipe(&t1, "/p", 4096).await),
        ErrorCode::InsufficientSpace
    );
    assert_eq!(
        usage(&k).0,
        ZoneUsage {
            bytes: 6000,
            inodes: 4
        }
    );

    // A quota lowered below the usage refuses growth, never a shrink.
    let tight = ZoneQuota {
        bytes: Some(1000),
        inodes: Some(4),
    };
    k.set_zone_quota(&t1, tight).await.unwrap();
    assert_eq!(
        code(k.write(&t1, &f, 6000, b"x").await),
        ErrorCode::InsufficientSpace
    );
    k.truncate(&t1, &f, 3000).await.unwrap();
    k.unlink(&t1, "/d/a").await.unwrap();
    assert_eq!(
        usage(&k).0,
        ZoneUsage {
            bytes: 0,
            inodes: 3
        }
    );
    k.set_zone_quota(&t1, ZoneQuota::default()).await.unwrap();
    k.mkdir(&t1, "/f").await.unwrap();
    let report = k.check_zone(&t1, true).await.unwrap();
    assert!(report.consistent(), "{:?}", report.problems);

    // The usage survives a restart as the log left it.
    drop(f);
    k.shutdown().await.unwrap();
    drop(k);
    let k = kernel(_dir.path());
    let t1 = task(&k, &z1);
    assert_eq!(
        k.zone_usage(&t1).unwrap().0,
        ZoneUsage {
            bytes: 0,
            inodes: 4
        }
    );
}

/// A path beneath a directory handle (a WASI descriptor's) starts at the
/// directory's inode, wherever it now is, and may not leave it.
#[tokio::test]
async fn a_path_beneath_a_directory_follows_its_inode_and_stays_in_it() {
    let (_dir, k, _z1, t) = zone_z1().await;
    k.mkdir_all(&t, "/d/sub").await.unwrap();
    let d = k.resolve(&t, "/d", true).unwrap();
    k.rename(&t, "/d", "/e").await.unwrap();
    // After a rename, the handle still names the directory.
    let f = k
        .open_path(&t, At::under(&d, "f.txt"), CREATE)
        .await
        .unwrap();
    k.write(&t, &f, 0, b"here").await.unwrap();
    assert_eq!(k.stat(&t, "/e/f.txt").unwrap().size, 4);
    assert_eq!(
        k.resolve(&t, At::under(&d, "sub/../f.txt"), true)
            .unwrap()
            .ino,
        f.ino
    );
    // It may not be left: by `..`, an absolute path, or a link.
    let refused = |e: KernelError| assert_eq!(e.code(), ErrorCode::NotPermitted, "{e}");
    for p in ["..", "sub/../..", "/e/f.txt"] {
        refused(k.resolve(&t, At::under(&d, p), true).unwrap_err());
    }
    k.symlink(&t, "../e/f.txt", "/e/up").await.unwrap();
    k.symlink(&t, "/e/f.txt", "/e/abs").await.unwrap();
    for p in ["up", "abs"] {
        refused(k.resolve(&t, At::under(&d, p), true).unwrap_err());
        // From the zone root both lead to the file (the kernel's rule).
        let from_root = k.resolve(&t, format!("/e/{p}").as_str(), true).unwrap();
        assert_eq!(from_root.ino, f.ino);
    }
    // Gone: nothing is found or made through it, even when a directory
    // of the same name is made again.
    let sub = k.resolve(&t, "/e/sub", true).unwrap();
    k.rmdir(&t, "/e/sub").await.unwrap();
    k.mkdir(&t, "/e/sub").await.unwrap();
    let e = k
        .open_path(&t, At::under(&sub, "g.txt"), CREATE)
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NoEntry, "{e}");
    assert!(k.stat(&t, "/e/sub/g.txt").is_err());
    assert!(k
        .readdir_handle(&t, &sub, None, 10)
        .unwrap()
        .entries
        .is_empty());
}

/// Hard links: one inode under several names; its content is read and
/// written through any, goes with the last name, and its grants follow
/// the inode (the directory of one of its names), not the name used.
#[tokio::test]
async fn hard_links_share_one_inode_and_its_grants() {
    let (_dir, k, z1, t) = zone_z1().await;
    let code = |e: KernelError| e.code();
    k.mkdir_all(&t, "/secret").await.unwrap();
    k.mkdir_all(&t, "/pub").await.unwrap();
    let f = k.open_path(&t, "/secret/f", CREATE).await.unwrap();
    let body = vec![7u8; (CHUNK_SIZE + 10) as usize];
    k.write(&t, &f, 0, &body).await.unwrap();
    k.sync(&t, &f).await.unwrap();
    k.link(&t, "/secret/f", "/pub/g").await.unwrap();
    let g = k.resolve(&t, "/pub/g", true).unwrap();
    assert_eq!((g.ino, k.link_count(&g)), (f.ino, 2));
    assert!(k.check_zone(&t, true).await.unwrap().consistent());
    // Written through one name, read through the other.
    k.write(&t, &g, 0, b"new").await.unwrap();
    assert_eq!(&k.read(&t, &f, 0, 3).await.unwrap()[..], b"new");
    // Refused: a directory, a name taken, a name that is a directory.
    assert_eq!(
        code(k.link(&t, "/pub", "/p2").await.unwrap_err()),
        ErrorCode::NotPermitted
    );
    assert_eq!(
        code(k.link(&t, "/secret/f", "/pub/g").await.unwrap_err()),
        ErrorCode::Exist
    );
    // The grants follow the inode: a viewer of /pub reads what /pub holds
    // of its own, not a file linked there from /secret.
    let bot = Principal::parse("agent:bot").unwrap();
    let pub_dir = k.object_at(&t, "/pub").unwrap().1;
    let viewer = nexus_kernel::Tuple {
        object: pub_dir,
        relation: nexus_kernel::Relation::Viewer,
        subject: nexus_kernel::Subject::Principal(bot.clone()),
    };
    k.write_tuples(&t, vec![viewer], vec![]).await.unwrap();
    let own = k.open_path(&t, "/pub/own", CREATE).await.unwrap();
    k.write(&t, &own, 0, b"mine").await.unwrap();
    let tb = k.spawn_task(bot, &z1, Capabilities::ALL).unwrap();
    assert!(k.stat(&tb, "/pub/own").is_ok());
    assert_eq!(code(k.stat(&tb, "/pub/g").unwrap_err()), ErrorCode::Access);
    // Renaming one name over the other does nothing (as POSIX); moving a
    // name keeps the inode whole.
    k.rename(&t, "/pub/g", "/secret/f").await.unwrap();
    assert_eq!(k.link_count(&g), 2);
    k.rename(&t, "/pub/g", "/pub/h").await.unwrap();
    assert!(k.check_zone(&t, true).await.unwrap().consistent());
    // The first name goes: the file lives on by the other, whose
    // directory it now inherits from.
    k.unlink(&t, "/secret/f").await.unwrap();
    assert_eq!(k.link_count(&g), 1);
    // (Its buffered write, not yet written out, stays with the inode.)
    assert_eq!(&k.read(&t, &g, 0, 3).await.unwrap()[..], b"new");
    assert!(k.stat(&tb, "/pub/h").is_ok());
    assert!(k.check_zone(&t, true).await.unwrap().consistent());
    // A file renamed over a name of a linked inode leaves its other name.
    k.link(&t, "/pub/h", "/secret/again").await.unwrap();
    k.rename(&t, "/pub/own", "/pub/h").await.unwrap();
    assert_eq!(k.stat(&t, "/secret/again").unwrap().size, CHUNK_SIZE + 10);
    assert!(k.check_zone(&t, true).await.unwrap().consistent());
    // The last name goes, and the content with it.
    k.unlink(&t, "/secret/again").await.unwrap();
    let report = k.check_zone(&t, true).await.unwrap();
    assert!(report.consistent(), "{:?}", report.problems);
    assert_eq!(report.chunks, 0);
}
