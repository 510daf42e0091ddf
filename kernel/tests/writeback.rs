//! Write-back (`files/writeback.rs`) on real sled and the local-disk store:
//! what a buffered write costs, when it becomes durable, and that it is
//! never seen wrong.

// Tests may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{count_chunks, CREATE};

use nexus_kernel::{Capabilities, ErrorCode, Kernel, KernelConfig, Principal, Task};
use nexus_kernel::{ZoneId, ZoneQuota, CHUNK_SIZE};
use rand::{Rng, SeedableRng};

fn me() -> Principal {
    Principal::parse("user:tester").unwrap()
}

/// A kernel on `dir` whose background write-out waits `interval`.
fn kernel(dir: &std::path::Path, interval: Duration) -> Kernel {
    let mut cfg = KernelConfig::embedded(dir);
    cfg.flush_interval = interval;
    Kernel::open(cfg).unwrap()
}

/// Zone z1 on a kernel that never writes out on its own in a test's time.
async fn zone(interval: Duration) -> (tempfile::TempDir, Kernel, Task) {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(dir.path(), interval);
    let z1 = ZoneId::new("z1").unwrap();
    k.create_zone(&me(), &z1).await.unwrap();
    let t = k.spawn_task(me(), &z1, Capabilities::ALL).unwrap();
    (dir, k, t)
}

const HOUR: Duration = Duration::from_secs(3600);

/// The names of the chunks stored under data directory `home`.
fn chunk_names(home: &std::path::Path) -> std::collections::BTreeSet<String> {
    walkdir(&home.join("content").join("chunks"))
}

fn walkdir(p: &std::path::Path) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(walkdir(&e.path()));
        } else {
            out.insert(e.file_name().to_string_lossy().into_owned());
        }
    }
    out
}

async fn applied(k: &Kernel, t: &Task) -> u64 {
    k.zone_status(t).await.unwrap().applied
}

#[tokio::test]
async fn appends_are_read_at_once_and_cost_one_commit_and_one_chunk_at_sync() {
    let (dir, k, t) = zone(HOUR).await;
    let f = k.open_path(&t, "/log", CREATE).await.unwrap();
    let before = applied(&k, &t).await;
    let mut expect = Vec::new();
    for i in 0..5000u32 {
        let line = format!("{i:08} the agent appended a line of sixty-two bytes here...\n");
        assert_eq!(line.len(), 62);
        assert_eq!(
            k.append(&t, &f, line.as_bytes()).await.unwrap(),
            expect.len() as u64
        );
        expect.extend_from_slice(line.as_bytes());
    }
    // Visible at once on this node, and nothing committed yet.
    assert_eq!(k.stat(&t, "/log").unwrap().size, 310_000);
    assert_eq!(&k.read(&t, &f, 0, 1 << 20).await.unwrap()[..], &expect[..]);
    assert_eq!(applied(&k, &t).await, before);
    assert_eq!(count_chunks(dir.path()), 0);
    // `sync`: one command, one chunk.
    k.sync(&t, &f).await.unwrap();
    assert_eq!(applied(&k, &t).await, before + 1);
    assert_eq!(count_chunks(dir.path()), 1);
    assert_eq!(&k.read(&t, &f, 0, 1 << 20).await.unwrap()[..], &expect[..]);
    // A sync with nothing buffered commits nothing.
    k.sync(&t, &f).await.unwrap();
    assert_eq!(applied(&k, &t).await, before + 1);
    assert!(k.check_zone(&t, true).await.unwrap().consistent());
}

#[tokio::test]
async fn random_small_writes_rewrite_each_touched_chunk_once() {
    let (dir, k, t) = zone(HOUR).await;
    let f = k.open_path(&t, "/db", CREATE).await.unwrap();
    let size = 8 * CHUNK_SIZE;
    let mut model: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    k.write(&t, &f, 0, &model).await.unwrap();
    k.sync(&t, &f).await.unwrap();
    assert_eq!(count_chunks(dir.path()), 8);
    let before = applied(&k, &t).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for i in 0..1000u32 {
        let at = rng.gen_range(0..size / 4096) * 4096;
        let page = [(i % 250) as u8 + 1; 4096];
        k.write(&t, &f, at, &page).await.unwrap();
        model[at as usize..at as usize + 4096].copy_from_slice(&page);
    }
    k.sync(&t, &f).await.unwrap();
    assert_eq!(applied(&k, &t).await, before + 1, "one write-out");
    assert!(
        count_chunks(dir.path()) <= 16,
        "each chunk rewritten at most once"
    );
    let back = k.read(&t, &f, 0, size).await.unwrap();
    assert!(back[..] == model[..], "the file reads back as written");
}

/// A seeded mix of writes, appends, truncates, syncs and reads, checked
/// against a byte vector after every step.
#[tokio::test]
async fn writes_truncates_and_syncs_match_a_byte_vector() {
    let (_dir, k, t) = zone(HOUR).await;
    let f = k.open_path(&t, "/f", CREATE).await.unwrap();
    let mut model: Vec<u8> = Vec::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    // Offsets around the inline limit and the chunk boundaries.
    let spots = [
        0,
        100,
        4000,
        4096,
        5000,
        CHUNK_SIZE - 10,
        CHUNK_SIZE,
        2 * CHUNK_SIZE + 7,
    ];
    for step in 0..300 {
        let at = spots[rng.gen_range(0..spots.len())] + rng.gen_range(0..64);
        let len = [1usize, 62, 4096, 70_000][rng.gen_range(0..4)];
        let byte = (step % 255) as u8 + 1;
        match rng.gen_range(0..10) {
            0..=4 => {
                k.write(&t, &f, at, &vec![byte; len]).await.unwrap();
                if model.len() < at as usize + len {
                    model.resize(at as usize + len, 0);
                }
                model[at as usize..at as usize + len].fill(byte);
            }
            5 => {
                k.append(&t, &f, &vec![byte; len]).await.unwrap();
                model.extend(std::iter::repeat_n(byte, len));
            }
            6 => {
                k.truncate(&t, &f, at).await.unwrap();
                model.resize(at as usize, 0);
            }
            7 => k.sync(&t, &f).await.unwrap(),
            _ => {
                let back = k.read(&t, &f, at, len as u64).await.unwrap();
                let lo = (at as usize).min(model.len());
                let hi = (at as usize + len).min(model.len());
                assert!(back[..] == model[lo..hi], "step {step}: read at {at}+{len}");
            }
        }
        assert_eq!(
            k.stat(&t, "/f").unwrap().size,
            model.len() as u64,
            "step {step}"
        );
    }
    let whole = k.read(&t, &f, 0, model.len() as u64).await.unwrap();
    assert!(whole[..] == model[..]);
    k.sync(&t, &f).await.unwrap();
    let whole = k.read(&t, &f, 0, model.len() as u64).await.unwrap();
    assert!(whole[..] == model[..]);
    assert!(k.check_zone(&t, true).await.unwrap().consistent());
}

/// What SQLite does at each autocommit: a journal of a few pages is
/// created, written, synced and unlinked, and a few pages of a larger
/// database are rewritten and synced. Each sync is one commit with the
/// bytes in it (patches) and stores no chunk, until the file's patches
/// would pass `PATCH_MAX`: then they are folded into its chunks.
#[tokio::test]
async fn small_syncs_are_kept_as_patches_and_folded_past_their_bound() {
    let (dir, k, t) = zone(HOUR).await;
    let db = k.open_path(&t, "/db", CREATE).await.unwrap();
    let size = 2 * CHUNK_SIZE;
    let mut model: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    k.write(&t, &db, 0, &model).await.unwrap();
    k.sync(&t, &db).await.unwrap();
    assert_eq!(count_chunks(dir.path()), 2);
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut patched = std::collections::BTreeSet::new();
    let mut folds = 0;
    for round in 0..40u32 {
        let stored = chunk_names(dir.path());
        let journal = k.open_path(&t, "/db-journal", CREATE).await.unwrap();
        k.write(&t, &journal, 0, &[round as u8; 9000])
            .await
            .unwrap();
        let before = applied(&k, &t).await;
        k.sync(&t, &journal).await.unwrap();
        assert_eq!(
            applied(&k, &t).await,
            before + 1,
            "round {round}: one commit"
        );
        let mut pages = std::collections::BTreeSet::new();
        for _ in 0..3 {
            let at = rng.gen_range(0..size / 4096) * 4096;
            let page = [round as u8 + 1; 4096];
            k.write(&t, &db, at, &page).await.unwrap();
            model[at as usize..at as usize + 4096].copy_from_slice(&page);
            pages.insert(at);
        }
        k.sync(&t, &db).await.unwrap();
        let new = chunk_names(dir.path()).difference(&stored).count();
        if (patched.len() + pages.len()) * 4096 <= 64 << 10 {
            assert_eq!(new, 0, "round {round}: no chunk stored");
            patched.extend(pages);
        } else {
            // Folded: each chunk the patches touched is rewritten, once.
            assert!((1..=2).contains(&new), "round {round}: {new} chunks");
            folds += 1;
            patched.clear();
        }
        k.unlink(&t, "/db-journal").await.unwrap();
        let back = k.read(&t, &db, 0, size).await.unwrap();
        assert!(
            back[..] == model[..],
            "round {round}: the database reads back"
        );
    }
    assert!(folds > 0);
    assert!(k.check_zone(&t, true).await.unwrap().consistent());
    // What was synced, patches and all, survives a restart.
    drop(db);
    k.shutdown().await.unwrap();
    drop(k);
    let k = kernel(dir.path(), HOUR);
    let t = k
        .spawn_task(me(), &ZoneId::new("z1").unwrap(), Capabilities::ALL)
        .unwrap();
    let db = k.resolve(&t, "/db", true).unwrap();
    let back = k.read(&t, &db, 0, size).await.unwrap();
    assert!(back[..] == model[..]);
}

#[tokio::test]
async fn what_was_synced_survives_a_crash_and_shutdown_writes_out_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let z1 = ZoneId::new("z1").unwrap();
    {
        let k = kernel(dir.path(), HOUR);
        k.create_zone(&me(), &z1).await.unwrap();
        let t = k.spawn_task(me(), &z1, Capabilities::ALL).unwrap();
        let f = k.open_path(&t, "/kept", CREATE).await.unwrap();
        k.write(&t, &f, 0, b"synced").await.unwrap();
        k.sync(&t, &f).await.unwrap();
        k.write(&t, &f, 6, b" and lost").await.unwrap();
        // Dropped without shutdown: what a SIGKILL leaves.
    }
    {
        let k = kernel(dir.path(), HOUR);
        let t = k.spawn_task(me(), &z1, Capabilities::ALL).unwrap();
        let f = k.resolve(&t, "/kept", true).unwrap();
        assert_eq!(&k.read(&t, &f, 0, 100).await.unwrap()[..], b"synced");
        assert!(k.check_zone(&t, true).await.unwrap().consistent());
        k.write(&t, &f, 6, b" then shut down").await.unwrap();
        k.shutdown().await.unwrap();
    }
    let k = kernel(dir.path(), HOUR);
    let t = k.spawn_task(me(), &z1, Capabilities::ALL).unwrap();
    let f = k.resolve(&t, "/kept", true).unwrap();
    assert_eq!(
        &k.read(&t, &f, 0, 100).await.unwrap()[..],
        b"synced then shut down"
    );
}

#[tokio::test]
async fn buffered_writes_reach_the_log_on_their_own() {
    let (_dir, k, t) = zone(Duration::from_millis(20)).await;
    let f = k.open_path(&t, "/f", CREATE).await.unwrap();
    let before = applied(&k, &t).await;
    k.write(&t, &f, 0, b"eventually").await.unwrap();
    // Eventual arrival, no deadline: the test's own timeout bounds it.
    while applied(&k, &t).await == before {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    k.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_write_out_the_quota_refuses_is_reported_at_sync_and_drops_the_bytes() {
    let (_dir, k, t) = zone(HOUR).await;
    let quota = ZoneQuota {
        bytes: Some(10_000),
        inodes: None,
    };
    k.set_zone_quota(&t, quota).await.unwrap();
    let a = k.open_path(&t, "/a", CREATE).await.unwrap();
    let b = k.open_path(&t, "/b", CREATE).await.unwrap();
    // Each fits alone; together they do not.
    k.write(&t, &a, 0, &[1; 6000]).await.unwrap();
    k.write(&t, &b, 0, &[2; 6000]).await.unwrap();
    k.sync(&t, &a).await.unwrap();
    let refused = k.sync(&t, &b).await.unwrap_err();
    assert_eq!(refused.code(), ErrorCode::InsufficientSpace);
    assert_eq!(k.stat(&t, "/b").unwrap().size, 0);
    assert_eq!(k.stat(&t, "/a").unwrap().size, 6000);
    // Reported once; the file works again within the quota.
    k.write(&t, &b, 0, b"small").await.unwrap();
    k.sync(&t, &b).await.unwrap();
    assert_eq!(k.stat(&t, "/b").unwrap().size, 5);
}

#[tokio::test]
async fn an_unlinked_buffered_file_is_dropped_and_an_open_one_kept() {
    let (_dir, k, t) = zone(HOUR).await;
    let gone = k.open_path(&t, "/tmp-gone", CREATE).await.unwrap();
    k.write(&t, &gone, 0, &[9; 10_000]).await.unwrap();
    k.unlink(&t, "/tmp-gone").await.unwrap();
    assert_eq!(
        k.sync(&t, &gone).await.unwrap_err().code(),
        ErrorCode::NoEntry
    );
    // Held open: the orphan keeps its buffered bytes and writes them out.
    let kept = k.open_path(&t, "/tmp-kept", CREATE).await.unwrap();
    let guard = k.hold_open(&kept);
    k.write(&t, &kept, 0, &[7; 10_000]).await.unwrap();
    k.unlink(&t, "/tmp-kept").await.unwrap();
    k.sync(&t, &kept).await.unwrap();
    assert_eq!(&k.read(&t, &kept, 9_990, 100).await.unwrap()[..], &[7; 10]);
    drop(guard);
    k.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_collector_deletes_exactly_the_chunks_no_file_names() {
    let (dir, k, t) = zone(HOUR).await;
    let f = k.open_path(&t, "/big", CREATE).await.unwrap();
    let data: Vec<u8> = (0..4 * CHUNK_SIZE).map(|i| (i % 253) as u8).collect();
    k.write(&t, &f, 0, &data).await.unwrap();
    k.sync(&t, &f).await.unwrap();
    // Each round more than patches may hold: both chunks rewritten.
    for round in 0..3u8 {
        k.write(&t, &f, CHUNK_SIZE + 10, &[round; 40_000])
            .await
            .unwrap();
        k.write(&t, &f, 3 * CHUNK_SIZE + 10, &[round; 40_000])
            .await
            .unwrap();
        k.sync(&t, &f).await.unwrap();
    }
    // 4 live chunks, 2 replaced three times.
    assert_eq!(count_chunks(dir.path()), 10);
    let c = k.collect_garbage().await.unwrap();
    assert_eq!((c.deleted, c.kept), (6, 0));
    assert_eq!(count_chunks(dir.path()), 4);
    assert!(k.check_zone(&t, true).await.unwrap().consistent());
    let back = k.read(&t, &f, CHUNK_SIZE, 200).await.unwrap();
    assert_eq!(
        &back[..10],
        &data[CHUNK_SIZE as usize..CHUNK_SIZE as usize + 10]
    );
    assert_eq!(&back[10..110], &[2u8; 100]);
    // Nothing left to do; then the file goes and so do its chunks.
    assert_eq!(k.collect_garbage().await.unwrap().deleted, 0);
    k.unlink(&t, "/big").await.unwrap();
    assert_eq!(k.collect_garbage().await.unwrap().deleted, 4);
    assert_eq!(count_chunks(dir.path()), 0);
    // A manual gc finds nothing the collector missed.
    assert_eq!(k.gc(std::slice::from_ref(&t)).await.unwrap().deleted, 0);
}

#[tokio::test]
async fn a_chunk_another_zone_still_names_is_kept() {
    let (dir, k, t1) = zone(HOUR).await;
    let z2 = ZoneId::new("z2").unwrap();
    k.create_zone(&me(), &z2).await.unwrap();
    let t2 = k.spawn_task(me(), &z2, Capabilities::ALL).unwrap();
    let same = vec![5u8; 100_000];
    for t in [&t1, &t2] {
        let f = k.open_path(t, "/same", CREATE).await.unwrap();
        k.write(t, &f, 0, &same).await.unwrap();
        k.sync(t, &f).await.unwrap();
    }
    assert_eq!(count_chunks(dir.path()), 1, "stored once for both zones");
    k.unlink(&t1, "/same").await.unwrap();
    let c = k.collect_garbage().await.unwrap();
    assert_eq!((c.deleted, c.kept), (0, 1));
    let f2 = k.resolve(&t2, "/same", true).unwrap();
    assert_eq!(k.read(&t2, &f2, 0, 200_000).await.unwrap().len(), 100_000);
    k.unlink(&t2, "/same").await.unwrap();
    assert_eq!(k.collect_garbage().await.unwrap().deleted, 1);
    assert_eq!(count_chunks(dir.path()), 0);
}

#[tokio::test]
async fn a_store_shared_with_other_nodes_is_never_collected() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared-store");
    let mut cfg = KernelConfig::embedded(dir.path().join("home"));
    cfg.flush_interval = HOUR;
    cfg.object_store = nexus_kernel::ObjectStoreConfig::Shared(shared.clone());
    let k = Kernel::open(cfg).unwrap();
    let z1 = ZoneId::new("z1").unwrap();
    k.create_zone(&me(), &z1).await.unwrap();
    let t = k.spawn_task(me(), &z1, Capabilities::ALL).unwrap();
    let f = k.open_path(&t, "/f", CREATE).await.unwrap();
    k.write(&t, &f, 0, &[1; 100_000]).await.unwrap();
    k.sync(&t, &f).await.unwrap();
    k.unlink(&t, "/f").await.unwrap();
    assert_eq!(k.collect_garbage().await.unwrap().deleted, 0);
    let stored = |p: &std::path::Path| std::fs::read_dir(p.join("chunks")).map_or(0, |d| d.count());
    assert_eq!(stored(&shared), 1, "another node may name it");
}

#[tokio::test]
async fn a_large_write_is_buffered_in_bounded_pieces() {
    let (_dir, k, t) = zone(HOUR).await;
    let f = k.open_path(&t, "/large", CREATE).await.unwrap();
    let before = applied(&k, &t).await;
    let data: Vec<u8> = (0..20 * CHUNK_SIZE).map(|i| (i % 249) as u8).collect();
    k.write(&t, &f, 0, &data).await.unwrap();
    // 8 MiB per file at most: written out behind the writer at 8 and 16
    // MiB (the second may still be committing), 4 MiB held.
    let meanwhile = applied(&k, &t).await;
    assert!(
        (before + 1..=before + 2).contains(&meanwhile),
        "{} write-outs committed",
        meanwhile - before
    );
    k.sync(&t, &f).await.unwrap();
    assert_eq!(applied(&k, &t).await, before + 3);
    assert!(k.read(&t, &f, 0, 20 * CHUNK_SIZE).await.unwrap()[..] == data[..16 << 20]);
}

/// One writer holds at most 64 MiB of the node's write-back buffers
/// (`WRITER_DIRTY_MAX`): past it, its next write writes its files out
/// first. 20 files of 6 MiB each would otherwise hold 120 MiB (the node
/// allows 256).
#[tokio::test]
async fn one_writer_holds_a_bounded_share_of_the_buffers() {
    let (_dir, k, t) = zone(HOUR).await;
    let data: Vec<u8> = (0..6 * CHUNK_SIZE).map(|i| (i % 251) as u8).collect();
    let mut files = Vec::new();
    for i in 0..20 {
        let f = k.open_path(&t, &format!("/f{i}"), CREATE).await.unwrap();
        k.write(&t, &f, 0, &data).await.unwrap();
        files.push(f);
    }
    // What is not committed is what the buffers hold.
    let mut buffered = 0;
    for f in &files {
        let committed = k
            .read_linearized(&t, f, 0, data.len() as u64)
            .await
            .unwrap();
        buffered += data.len() - committed.len();
    }
    assert!(
        buffered <= (64 + 8) << 20,
        "one writer holds {} MiB of buffers",
        buffered >> 20
    );
    assert!(buffered > 0, "nothing was buffered at all");
    for f in &files {
        assert!(k.read(&t, f, 0, data.len() as u64).await.unwrap()[..] == data[..]);
    }
}

/// Readers racing appends and write-outs (background every 5 ms, and
/// syncs) never see less than was written before they began, nor a wrong
/// byte. (The window where a reader could read the committed state before
/// a write-out and the buffer after it is microseconds wide; the VFS reads
/// the buffer first so it cannot happen, which this test alone would
/// rarely catch.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_miss_a_write_a_write_out_is_committing() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let (_dir, k, t) = zone(Duration::from_millis(5)).await;
    let k = Arc::new(k);
    let f = k.open_path(&t, "/race", CREATE).await.unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let block = |i: u64| vec![(i % 251) as u8; 100];
    let writer = {
        let (k, t, f, written) = (k.clone(), t.clone(), f.clone(), written.clone());
        tokio::spawn(async move {
            for i in 0..3000u64 {
                k.append(&t, &f, &block(i)).await.unwrap();
                written.store((i + 1) * 100, Ordering::SeqCst);
                if i % 97 == 0 {
                    k.sync(&t, &f).await.unwrap();
                }
            }
        })
    };
    while !writer.is_finished() {
        let before = written.load(Ordering::SeqCst);
        let size = k.stat(&t, "/race").unwrap().size;
        assert!(
            size >= before,
            "stat saw {size} bytes after {before} were written"
        );
        let bytes = k.read(&t, &f, 0, size).await.unwrap();
        assert!(
            bytes.len() as u64 >= before,
            "read {} after {before}",
            bytes.len()
        );
        for (i, chunk) in bytes.chunks(100).enumerate() {
            assert!(
                chunk.iter().all(|b| *b == (i as u64 % 251) as u8),
                "block {i}"
            );
        }
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();
    k.shutdown().await.unwrap();
}

/// A file's buffer past 8 MiB is written out behind its writer while it
/// fills the next: readers racing large appends, write-outs behind the
/// writer and syncs never see a short file or a wrong byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_miss_a_write_a_write_out_behind_the_writer_holds() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    const BLOCK: u64 = 512 << 10;
    let (_dir, k, t) = zone(HOUR).await;
    let k = Arc::new(k);
    let f = k.open_path(&t, "/large", CREATE).await.unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let block = |i: u64| vec![(i % 251) as u8 + 1; BLOCK as usize];
    let writer = {
        let (k, t, f, written) = (k.clone(), t.clone(), f.clone(), written.clone());
        tokio::spawn(async move {
            for i in 0..60u64 {
                k.append(&t, &f, &block(i)).await.unwrap();
                written.store((i + 1) * BLOCK, Ordering::SeqCst);
                if i % 23 == 22 {
                    k.sync(&t, &f).await.unwrap();
                }
            }
        })
    };
    let mut checks = 0u64;
    while !writer.is_finished() {
        let before = written.load(Ordering::SeqCst);
        let size = k.stat(&t, "/large").unwrap().size;
        assert!(
            size >= before,
            "stat saw {size} after {before} were written"
        );
        // The last block written, and one further back (buffered, being
        // written out or committed, whichever it is now).
        for i in [before / BLOCK, before / BLOCK / 2]
            .into_iter()
            .filter(|i| *i > 0)
        {
            let got = k.read(&t, &f, (i - 1) * BLOCK, BLOCK).await.unwrap();
            assert!(
                got[..] == block(i - 1)[..],
                "block {} after {before} bytes",
                i - 1
            );
        }
        checks += 1;
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();
    assert!(checks > 0);
    k.sync(&t, &f).await.unwrap();
    for i in 0..60 {
        let got = k.read_linearized(&t, &f, i * BLOCK, BLOCK).await.unwrap();
        assert!(got[..] == block(i)[..], "block {i} once synced");
    }
    k.shutdown().await.unwrap();
}

/// A write-out behind the writer that the quota refuses is reported at the
/// file's sync, like one written out at sync: two files buffered by two
/// writers, each within the quota but not both; whichever commits second
/// fails, at its sync, and loses its buffered bytes, not the other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_out_behind_the_writer_the_quota_refuses_is_reported_at_sync() {
    let (_dir, k, t) = zone(HOUR).await;
    let quota = ZoneQuota {
        bytes: Some(12 << 20),
        inodes: None,
    };
    k.set_zone_quota(&t, quota).await.unwrap();
    let a = k.open_path(&t, "/a", CREATE).await.unwrap();
    let b = k.open_path(&t, "/b", CREATE).await.unwrap();
    k.write(&t, &a, 0, &vec![1; 7 << 20]).await.unwrap();
    // Past 8 MiB: b's first 8 MiB are written out behind this write.
    k.write(&t, &b, 0, &vec![2; 9 << 20]).await.unwrap();
    let (synced_a, synced_b) = (k.sync(&t, &a).await, k.sync(&t, &b).await);
    let refused = match (&synced_a, &synced_b) {
        (Err(e), Ok(())) | (Ok(()), Err(e)) => e.code(),
        _ => panic!("a: {synced_a:?}, b: {synced_b:?}"),
    };
    assert_eq!(refused, ErrorCode::InsufficientSpace);
    let (size_a, size_b) = (
        k.stat(&t, "/a").unwrap().size,
        k.stat(&t, "/b").unwrap().size,
    );
    match synced_a {
        Err(_) => assert_eq!((size_a, size_b), (0, 9 << 20)),
        Ok(()) => assert_eq!((size_a, size_b), (7 << 20, 0)),
    }
    // Reported once; each file works again within the quota.
    for f in [&a, &b] {
        k.write(&t, f, 0, b"small").await.unwrap();
        k.sync(&t, f).await.unwrap();
    }
}

/// A sync dropped part way through its write-out (a guest killed, a
/// caller timing out) loses nothing and jams nothing: the bytes it was
/// writing out are written out again by the next sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_out_abandoned_part_way_is_done_again_by_the_next_sync() {
    let (_dir, k, t) = zone(HOUR).await;
    let f = k.open_path(&t, "/f", CREATE).await.unwrap();
    let mut model = vec![0u8; 3 * CHUNK_SIZE as usize];
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for round in 0..40u64 {
        let at = rng.gen_range(0..2 * CHUNK_SIZE) as usize;
        let data = vec![(round % 250) as u8 + 1; rng.gen_range(1..200_000)];
        model[at..at + data.len()].copy_from_slice(&data);
        k.write(&t, &f, at as u64, &data).await.unwrap();
        // Cut off after a varying share of its work (or none of it).
        let _ = tokio::time::timeout(Duration::from_micros(round * 150), k.sync(&t, &f)).await;
    }
    k.sync(&t, &f).await.unwrap();
    let size = k.stat(&t, "/f").unwrap().size as usize;
    let got = k.read_linearized(&t, &f, 0, size as u64).await.unwrap();
    assert!(
        got[..] == model[..size],
        "the file differs from what was written"
    );
    k.shutdown().await.unwrap();
}
