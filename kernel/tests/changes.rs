//! The change feed (`files/changes.rs`) as a caching front-end sees it: what
//! each call changed, in order, and whose mount's request made it; a
//! write-out's commit adds nothing (its bytes were published when
//! buffered).

// Tests may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use nexus_kernel::{from_mount, Capabilities, Change, Changed, Kernel, KernelConfig, OpenOptions};
use nexus_kernel::{ObjectRef, Principal, Relation, Subject, Tuple, ZoneId};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_says_what_changed_and_whose_request_changed_it() {
    let dir = tempfile::tempdir().unwrap();
    let k = Kernel::open(KernelConfig::embedded(dir.path())).unwrap();
    let z1 = ZoneId::new("z1").unwrap();
    let owner = Principal::parse("user:owner").unwrap();
    k.create_zone(&owner, &z1).await.unwrap();
    let t = k.spawn_task(owner, &z1, Capabilities::ALL).unwrap();
    let root = k.stat(&t, "/").unwrap().ino;
    let mut feed = k.changes().subscribe();

    // Through mount 7: a create, a write and its sync (the write-out).
    from_mount(7, async {
        let h = k.open_path(&t, "/a", OpenOptions::CREATE).await.unwrap();
        k.write(&t, &h, 0, b"hello").await.unwrap();
        k.sync(&t, &h).await.unwrap();
    })
    .await;
    let a = k.stat(&t, "/a").unwrap().ino;
    // Not through a mount: a rename, and a grant.
    k.rename(&t, "/a", "/b").await.unwrap();
    let grant = Tuple {
        object: ObjectRef::parse("zone:z1").unwrap(),
        relation: Relation::Viewer,
        subject: Subject::Principal(Principal::parse("agent:other").unwrap()),
    };
    k.write_tuples(&t, vec![grant], vec![]).await.unwrap();

    let mut got = Vec::new();
    while let Ok(batch) = feed.try_recv() {
        got.extend(batch.iter().cloned());
    }
    let change = |by, what| Change {
        zone: z1.clone(),
        by,
        what,
    };
    let entry = |name: &str| Changed::Entry {
        dir: root,
        name: name.into(),
    };
    assert_eq!(
        got,
        [
            change(Some(7), entry("a")),
            change(Some(7), Changed::Attrs(root)),
            change(Some(7), Changed::Content(a)),
            change(None, entry("a")),
            change(None, entry("b")),
            change(None, Changed::Attrs(root)),
            change(None, Changed::Attrs(root)),
            change(None, Changed::Everything),
        ]
    );
}
