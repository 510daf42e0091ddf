//! The audit log on SQLite: denials and mutations are recorded, in order,
//! and a clean shutdown loses none of them.

// Tests may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use nexus_kernel::OpenOptions;
use nexus_kernel::ZoneId;
use nexus_kernel::{AuditSink, RecordStore};
use nexus_kernel::{Capabilities, Principal};
use nexus_kernel::{Kernel, KernelConfig};

#[tokio::test(flavor = "multi_thread")]
async fn denials_and_mutations_are_recorded_and_survive_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("records.db");
    let k = Kernel::open(KernelConfig::embedded(dir.path().join("home"))).unwrap();
    k.attach_audit(AuditSink::spawn(RecordStore::sqlite(&db).await.unwrap()))
        .unwrap();
    let z1 = ZoneId::new("z1").unwrap();
    let owner = Principal::parse("user:owner").unwrap();
    k.create_zone(&owner, &z1).await.unwrap();
    let o = k.spawn_task(owner, &z1, Capabilities::ALL).unwrap();
    let bot = k
        .spawn_task(
            Principal::parse("agent:bot").unwrap(),
            &z1,
            Capabilities::ALL,
        )
        .unwrap();

    k.mkdir(&o, "/d").await.unwrap();
    let create = OpenOptions {
        write: true,
        create: true,
        ..OpenOptions::default()
    };
    let f = k.open_path(&o, "/d/f", create).await.unwrap();
    k.write(&o, &f, 0, b"x").await.unwrap();
    assert!(k.mkdir(&o, "/d").await.is_err()); // a failed mutation
    assert!(k.stat(&bot, "/d/f").is_err()); // a denied read
    assert!(k.unlink(&bot, "/d/f").await.is_err()); // a denied mutation
    k.stat(&o, "/d/f").unwrap(); // allowed reads are not recorded
                                 // A burst right before shutdown must all land.
    for i in 0..2000 {
        k.mkdir(&o, &format!("/d/burst{i}")).await.unwrap();
    }
    k.shutdown().await.unwrap();
    drop(k);

    let store = RecordStore::sqlite(&db).await.unwrap();
    let all = store.tail(None, Some(0), 10_000).await.unwrap();
    let head: Vec<_> = all
        .iter()
        .take(6)
        .map(|r| {
            format!(
                "{} {} {} {}",
                r.record.principal, r.record.op, r.record.path, r.record.result
            )
        })
        .collect();
    assert_eq!(
        head,
        [
            "user:owner mkdir /d ok",
            "user:owner create /d/f ok",
            "user:owner write /d/f ok",
            "user:owner mkdir /d exist",
            "agent:bot stat /d/f denied",
            "agent:bot unlink /d/f denied",
        ]
    );
    assert_eq!(all.len(), 6 + 2000, "records lost at shutdown");
    assert!(all
        .windows(2)
        .all(|w| w[0].id < w[1].id && w[0].record.time <= w[1].record.time));
    assert!(all
        .iter()
        .all(|r| r.record.zone == "z1" && r.record.pid > 0));
    assert_eq!(all[4].record.pid, bot.pid());
    // tail: newest N, oldest first; filtered by zone.
    let last = store.tail(Some("z1"), None, 2).await.unwrap();
    assert_eq!(
        last.iter()
            .map(|r| r.record.path.as_str())
            .collect::<Vec<_>>(),
        ["/d/burst1998", "/d/burst1999"]
    );
    assert!(store
        .tail(Some("other"), None, 10)
        .await
        .unwrap()
        .is_empty());
}
