//! DT_PIPE on a real kernel (sled, Raft driver): blocking, end-of-file,
//! broken pipe, atomicity under concurrent writers, the gate, checkpoints,
//! and a property test against a plain queue.

// Tests may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use nexus_kernel::ZoneId;
use nexus_kernel::{Capabilities, Principal, Task};
use nexus_kernel::{ErrorCode, KernelError};
use nexus_kernel::{Kernel, KernelConfig};
use nexus_kernel::{PipeMode, PipeRead, PIPE_BUF};
use nexus_kernel::{Relation, Subject, Tuple};

fn p(s: &str) -> Principal {
    Principal::parse(s).unwrap()
}

fn z1() -> ZoneId {
    ZoneId::new("z1").unwrap()
}

async fn setup(dir: &std::path::Path) -> (Arc<Kernel>, Task) {
    let k = Arc::new(Kernel::open(KernelConfig::embedded(dir)).unwrap());
    if k.zone_record(&z1()).is_err() {
        k.create_zone(&p("user:owner"), &z1()).await.unwrap();
    }
    let owner = k
        .spawn_task(p("user:owner"), &z1(), Capabilities::ALL)
        .unwrap();
    (k, owner)
}

fn code<T: std::fmt::Debug>(r: Result<T, KernelError>) -> ErrorCode {
    r.expect_err("expected an error").code()
}

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("timed out: a pipe operation hung")
}

#[tokio::test]
async fn bytes_flow_then_end_of_file_when_the_writer_closes() {
    let dir = tempfile::tempdir().unwrap();
    let (k, t) = setup(dir.path()).await;
    k.mkdir(&t, "/pipes").await.unwrap();
    k.mkpipe(&t, "/pipes/jobs", 16).await.unwrap();
    let r = k
        .pipe_open(&t, "/pipes/jobs", PipeMode::Read)
        .await
        .unwrap();
    // No writer has ever attached: an empty pipe waits, it is not at EOF.
    assert_eq!(k.pipe_try_read(&t, &r, 8).unwrap(), PipeRead::WouldBlock);

    let w = k
        .pipe_open(&t, "/pipes/jobs", PipeMode::Write)
        .await
        .unwrap();
    assert_eq!(k.pipe_try_write(&t, &w, b"0123456789").unwrap(), 10);
    // 10 more bytes do not fit whole in the 6 left: an atomic write waits.
    assert_eq!(k.pipe_try_write(&t, &w, b"abcdefghij").unwrap(), 0);
    let s = k.pipe_stat(&t, "/pipes/jobs").unwrap();
    assert_eq!(
        (s.capacity, s.occupancy, s.readers, s.writers),
        (16, 10, 1, 1)
    );

    // A blocked writer resumes once the reader makes room.
    let (k2, t2) = (k.clone(), t.clone());
    let writer = tokio::spawn(async move {
        k2.pipe_write_all(&t2, &w, b"abcdefghij").await.unwrap();
        drop(w);
    });
    let mut got = Vec::new();
    while let Some(chunk) = within(k.pipe_read(&t, &r, 7)).await.unwrap() {
        assert!(chunk.len() <= 7);
        got.extend(chunk);
    }
    writer.await.unwrap();
    assert_eq!(got, b"0123456789abcdefghij");
    let s = k.pipe_stat(&t, "/pipes/jobs").unwrap();
    assert_eq!((s.bytes_in, s.bytes_out, s.writers), (20, 20, 0));
}

#[tokio::test]
async fn a_writer_whose_readers_closed_gets_a_broken_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let (k, t) = setup(dir.path()).await;
    k.mkpipe(&t, "/p", 64).await.unwrap();
    let w = k.pipe_open(&t, "/p", PipeMode::Write).await.unwrap();
    // Before any reader: a queue, writes are accepted.
    assert_eq!(k.pipe_try_write(&t, &w, b"early").unwrap(), 5);
    let r = k.pipe_open(&t, "/p", PipeMode::Read).await.unwrap();
    drop(r);
    assert_eq!(code(k.pipe_try_write(&t, &w, b"late")), ErrorCode::Pipe);
    // A writer blocked on a full pipe is woken by the reader leaving.
    k.mkpipe(&t, "/q", 4).await.unwrap();
    let w = k.pipe_open(&t, "/q", PipeMode::Write).await.unwrap();
    let r = k.pipe_open(&t, "/q", PipeMode::Read).await.unwrap();
    k.pipe_try_write(&t, &w, b"full").unwrap();
    let (k2, t2) = (k.clone(), t.clone());
    let blocked = tokio::spawn(async move { k2.pipe_write_all(&t2, &w, b"more").await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!blocked.is_finished());
    drop(r);
    let e = within(blocked).await.unwrap().unwrap_err();
    assert_eq!(e.code(), ErrorCode::Pipe);
}

#[tokio::test]
async fn wrong_kind_wrong_end_and_bad_capacity_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (k, t) = setup(dir.path()).await;
    for bad in [0, 16 << 20 | 1] {
        assert_eq!(code(k.mkpipe(&t, "/p", bad).await), ErrorCode::Invalid);
    }
    assert_eq!(code(k.stat(&t, "/p")), ErrorCode::NoEntry);
    k.mkdir(&t, "/d").await.unwrap();
    assert_eq!(
        code(k.pipe_open(&t, "/d", PipeMode::Read).await),
        ErrorCode::Invalid
    );
    assert_eq!(
        code(k.pipe_open(&t, "/none", PipeMode::Read).await),
        ErrorCode::NoEntry
    );
    k.mkpipe(&t, "/p", 8).await.unwrap();
    assert_eq!(code(k.mkpipe(&t, "/p", 8).await), ErrorCode::Exist);
    let r = k.pipe_open(&t, "/p", PipeMode::Read).await.unwrap();
    assert_eq!(code(k.pipe_try_write(&t, &r, b"x")), ErrorCode::Invalid);
}

#[tokio::test]
async fn concurrent_writers_and_readers_lose_duplicate_and_tear_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (k, t) = setup(dir.path()).await;
    // Small enough that writers block often.
    k.mkpipe(&t, "/p", 3 * 1000).await.unwrap();
    const WRITERS: u32 = 4;
    const RECORDS: u32 = 500;
    // Records of different sizes up to the atomic size, each one byte value.
    let record = |w: u32, i: u32| vec![(w * RECORDS + i) as u8; 1 + ((w * 7 + i) % 977) as usize];
    // Every end attaches before any runs, so no reader sees a gap between
    // writers as end-of-file.
    let mut ends = Vec::new();
    for mode in [PipeMode::Read; 3]
        .into_iter()
        .chain([PipeMode::Write; WRITERS as usize])
    {
        ends.push(k.pipe_open(&t, "/p", mode).await.unwrap());
    }
    let writer_ends = ends.split_off(3);
    let readers: Vec<_> = ends
        .into_iter()
        .map(|r| {
            let (k, t) = (k.clone(), t.clone());
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(chunk) = k.pipe_read(&t, &r, 1 << 16).await.unwrap() {
                    got.push(chunk);
                }
                got
            })
        })
        .collect();
    let writers: Vec<_> = (0..WRITERS)
        .zip(writer_ends)
        .map(|(w, end)| {
            let (k, t) = (k.clone(), t.clone());
            tokio::spawn(async move {
                for i in 0..RECORDS {
                    k.pipe_write_all(&t, &end, &record(w, i)).await.unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        within(w).await.unwrap();
    }
    let mut bytes = Vec::new();
    for r in readers {
        for chunk in within(r).await.unwrap() {
            bytes.extend(chunk);
        }
    }
    // Each reader's stream is a run of whole records; reassemble per value.
    let total: usize = (0..WRITERS)
        .flat_map(|w| (0..RECORDS).map(move |i| record(w, i).len()))
        .sum();
    assert_eq!(bytes.len(), total, "bytes lost or duplicated");
    let s = k.pipe_stat(&t, "/p").unwrap();
    assert_eq!(s.bytes_in as usize, total);
    assert_eq!(s.bytes_out as usize, total);
}

#[tokio::test]
async fn atomic_writes_are_never_interleaved() {
    let dir = tempfile::tempdir().unwrap();
    let (k, t) = setup(dir.path()).await;
    k.mkpipe(&t, "/p", 10_000).await.unwrap();
    let r = k.pipe_open(&t, "/p", PipeMode::Read).await.unwrap();
    let mut ends = Vec::new();
    for _ in 0..4 {
        ends.push(k.pipe_open(&t, "/p", PipeMode::Write).await.unwrap());
    }
    let writers: Vec<_> = (0..4u8)
        .zip(ends)
        .map(|(w, end)| {
            let (k, t) = (k.clone(), t.clone());
            tokio::spawn(async move {
                for _ in 0..200 {
                    k.pipe_write_all(&t, &end, &[w; PIPE_BUF]).await.unwrap();
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    while let Some(chunk) = within(k.pipe_read(&t, &r, 3333)).await.unwrap() {
        all.extend(chunk);
    }
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(all.len(), 4 * 200 * PIPE_BUF);
    for (i, record) in all.chunks(PIPE_BUF).enumerate() {
        assert!(record.iter().all(|b| *b == record[0]), "record {i} is torn");
    }
}

#[tokio::test]
async fn the_gate_decides_who_reads_and_writes_and_revocation_is_immediate() {
    let dir = tempfile::tempdir().unwrap();
    let (k, owner) = setup(dir.path()).await;
    k.mkpipe(&owner, "/p", 64).await.unwrap();
    let bot = k
        .spawn_task(p("agent:bot"), &z1(), Capabilities::ALL)
        .unwrap();
    assert_eq!(
        code(k.pipe_open(&bot, "/p", PipeMode::Read).await),
        ErrorCode::Access
    );
    assert_eq!(code(k.pipe_stat(&bot, "/p")), ErrorCode::Access);
    let object = k.object_at(&owner, "/p").unwrap().1;
    assert_eq!(object.to_string().split(':').next(), Some("pipe"));
    let viewer = Tuple {
        object: object.clone(),
        relation: Relation::Viewer,
        subject: Subject::Principal(p("agent:bot")),
    };
    k.write_tuples(&owner, vec![viewer.clone()], vec![])
        .await
        .unwrap();
    let r = k.pipe_open(&bot, "/p", PipeMode::Read).await.unwrap();
    assert_eq!(
        code(k.pipe_open(&bot, "/p", PipeMode::Write).await),
        ErrorCode::Access
    );
    let w = k.pipe_open(&owner, "/p", PipeMode::Write).await.unwrap();
    k.pipe_try_write(&owner, &w, b"hi").unwrap();
    assert_eq!(
        k.pipe_try_read(&bot, &r, 1).unwrap(),
        PipeRead::Data(b"h".to_vec())
    );
    k.write_tuples(&owner, vec![], vec![viewer]).await.unwrap();
    assert_eq!(code(k.pipe_try_read(&bot, &r, 1)), ErrorCode::Access);
    // The denial took nothing out of the pipe.
    assert_eq!(
        k.pipe_try_read(&owner, &r, 8).unwrap(),
        PipeRead::Data(b"i".to_vec())
    );
}

#[tokio::test]
async fn synced_bytes_are_in_the_zone_state_and_a_clean_restart_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (k, t) = setup(dir.path()).await;
        k.mkpipe(&t, "/p", 1024).await.unwrap();
        let w = k.pipe_open(&t, "/p", PipeMode::Write).await.unwrap();
        let r = k.pipe_open(&t, "/p", PipeMode::Read).await.unwrap();
        k.pipe_write_all(&t, &w, b"first,").await.unwrap();
        assert_eq!(k.pipe_read(&t, &r, 3).await.unwrap().unwrap(), b"fir");
        k.pipe_sync(&t, &w).await.unwrap();
        let rec = k
            .zone_state(&z1())
            .unwrap()
            .pipe_record(k.stat(&t, "/p").unwrap().ino);
        let rec = rec.unwrap().expect("a checkpoint after sync");
        assert_eq!(
            (rec.read_pos, rec.write_pos, &rec.data[..]),
            (3, 6, &b"st,"[..])
        );
        assert_eq!(k.pipe_stat(&t, "/p").unwrap().unsynced, 0);
        k.pipe_write_all(&t, &w, b"second").await.unwrap();
        drop((w, r));
        k.shutdown().await.unwrap();
    }
    let (k, t) = setup(dir.path()).await;
    let s = k.pipe_stat(&t, "/p").unwrap();
    assert_eq!((s.bytes_in, s.bytes_out, s.occupancy), (12, 3, 9));
    let r = k.pipe_open(&t, "/p", PipeMode::Read).await.unwrap();
    let mut got = Vec::new();
    // The writer attached and left before the restart: EOF after the data.
    while let Some(c) = within(k.pipe_read(&t, &r, 100)).await.unwrap() {
        got.extend(c);
    }
    assert_eq!(got, b"st,second");
    assert!(k.check_zone(&t, false).await.unwrap().problems.is_empty());
}

#[tokio::test]
async fn removing_a_pipe_wakes_its_ends_and_frees_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let (k, t) = setup(dir.path()).await;
    k.mkpipe(&t, "/p", 4).await.unwrap();
    let w = k.pipe_open(&t, "/p", PipeMode::Write).await.unwrap();
    let r = k.pipe_open(&t, "/p", PipeMode::Read).await.unwrap();
    k.pipe_try_write(&t, &w, b"full").unwrap();
    // One reader blocked on an empty pipe, one writer blocked on a full one.
    k.mkpipe(&t, "/e", 4).await.unwrap();
    let er = k.pipe_open(&t, "/e", PipeMode::Read).await.unwrap();
    let (k2, t2) = (k.clone(), t.clone());
    let blocked_writer = tokio::spawn(async move { k2.pipe_write_all(&t2, &w, b"more").await });
    let (k2, t2) = (k.clone(), t.clone());
    let blocked_reader = tokio::spawn(async move { k2.pipe_read(&t2, &er, 4).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    k.unlink(&t, "/p").await.unwrap();
    k.rename(&t, "/e", "/renamed").await.unwrap();
    k.mkpipe(&t, "/x", 4).await.unwrap();
    // Replacing a pipe by rename removes it too.
    k.rename(&t, "/x", "/renamed").await.unwrap();
    let e = within(blocked_writer).await.unwrap().unwrap_err();
    assert_eq!(e.code(), ErrorCode::NoEntry, "{e}");
    let e = within(blocked_reader).await.unwrap().unwrap_err();
    assert_eq!(e.code(), ErrorCode::NoEntry, "{e}");
    assert_eq!(code(k.pipe_try_read(&t, &r, 4)), ErrorCode::NoEntry);
    assert_eq!(
        code(k.pipe_open(&t, "/p", PipeMode::Read).await),
        ErrorCode::NoEntry
    );
    // A new pipe at the same name is a different ring.
    k.mkpipe(&t, "/p", 64).await.unwrap();
    let s = k.pipe_stat(&t, "/p").unwrap();
    assert_eq!((s.bytes_in, s.readers, s.writers), (0, 0, 0));
    assert!(k.check_zone(&t, false).await.unwrap().problems.is_empty());
}

#[tokio::test]
async fn pipe_list_shows_every_pipe_the_task_may_read() {
    let dir = tempfile::tempdir().unwrap();
    let (k, t) = setup(dir.path()).await;
    k.mkdir(&t, "/pipes").await.unwrap();
    k.mkdir(&t, "/pipes/deep").await.unwrap();
    k.mkpipe(&t, "/pipes/a", 10).await.unwrap();
    k.mkpipe(&t, "/pipes/deep/b", 20).await.unwrap();
    k.mkpipe(&t, "/c", 30).await.unwrap();
    let all: Vec<_> = k
        .pipe_list(&t, "/")
        .unwrap()
        .into_iter()
        .map(|(p, s)| (p, s.capacity))
        .collect();
    assert_eq!(
        all,
        [
            ("/c".to_owned(), 30),
            ("/pipes/a".to_owned(), 10),
            ("/pipes/deep/b".to_owned(), 20)
        ]
    );
    assert_eq!(k.pipe_list(&t, "/pipes/deep").unwrap().len(), 1);
}

mod model {
    //! A pipe against a plain queue with the same capacity and atomicity
    //! rule, across checkpoints and clean restarts.
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    #[derive(Debug, Clone)]
    enum Op {
        Write(usize),
        Read(usize),
        Sync,
        Restart,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0usize..300).prop_map(Op::Write),
            4 => (0usize..300).prop_map(Op::Read),
            1 => Just(Op::Sync),
            1 => Just(Op::Restart),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn pipe_matches_a_bounded_queue(cap in 1u64..600, ops in proptest::collection::vec(op(), 1..40)) {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let (mut k, mut t) = setup(dir.path()).await;
                k.mkpipe(&t, "/p", cap).await.unwrap();
                let mut ends = Some((
                    k.pipe_open(&t, "/p", PipeMode::Write).await.unwrap(),
                    k.pipe_open(&t, "/p", PipeMode::Read).await.unwrap(),
                ));
                let mut model: VecDeque<u8> = VecDeque::new();
                let atomic = PIPE_BUF.min(cap as usize);
                let mut next = 0u8;
                for op in ops {
                    let (w, r) = ends.as_ref().unwrap();
                    match op {
                        Op::Write(n) => {
                            let data: Vec<u8> = (0..n).map(|i| next.wrapping_add(i as u8)).collect();
                            let took = k.pipe_try_write(&t, w, &data).unwrap();
                            let free = cap as usize - model.len();
                            let want = if n <= atomic { if free >= n { n } else { 0 } } else { free.min(n) };
                            prop_assert_eq!(took, want);
                            model.extend(&data[..took]);
                            next = next.wrapping_add(took as u8);
                        }
                        Op::Read(n) => {
                            let got = k.pipe_try_read(&t, r, n).unwrap();
                            let want: Vec<u8> = model.drain(..n.min(model.len())).collect();
                            match got {
                                PipeRead::Data(d) => prop_assert_eq!(d, want),
                                PipeRead::WouldBlock => prop_assert!(want.is_empty() && n > 0),
                                PipeRead::EndOfFile => prop_assert!(false, "EOF with a writer attached"),
                            }
                        }
                        Op::Sync => k.pipe_sync(&t, w).await.unwrap(),
                        Op::Restart => {
                            drop(ends.take());
                            k.shutdown().await.unwrap();
                            drop(k);
                            (k, t) = setup(dir.path()).await;
                            ends = Some((
                                k.pipe_open(&t, "/p", PipeMode::Write).await.unwrap(),
                                k.pipe_open(&t, "/p", PipeMode::Read).await.unwrap(),
                            ));
                        }
                    }
                    let s = k.pipe_stat(&t, "/p").unwrap();
                    prop_assert_eq!(s.occupancy as usize, model.len());
                    prop_assert!(s.occupancy <= cap);
                }
                Ok(())
            })?;
        }
    }
}
