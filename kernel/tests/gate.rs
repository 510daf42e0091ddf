//! The gate on every VFS operation: denied by default, allowed by tuples,
//! never a partial effect, revocation immediate.

// Tests may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use nexus_kernel::OpenOptions;
use nexus_kernel::ZoneId;
use nexus_kernel::{Capabilities, Permission, Principal, Task};
use nexus_kernel::{ErrorCode, KernelError};
use nexus_kernel::{Issuer, Kernel, KernelConfig};
use nexus_kernel::{ObjectRef, Relation, Subject, Tuple};

fn p(s: &str) -> Principal {
    Principal::parse(s).unwrap()
}

fn z(s: &str) -> ZoneId {
    ZoneId::new(s).unwrap()
}

const RW: OpenOptions = OpenOptions {
    read: true,
    write: true,
    create: false,
    exclusive: false,
    truncate: false,
    directory: false,
};
const CREATE: OpenOptions = OpenOptions { create: true, ..RW };

struct World {
    _dir: tempfile::TempDir,
    k: Kernel,
    owner: Task,
    bot: Task,
}

/// Zone z1 owned by user:owner, holding /work/a.txt and /secret/x.
async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let k = Kernel::open(KernelConfig::embedded(dir.path())).unwrap();
    k.create_zone(&p("user:owner"), &z("z1")).await.unwrap();
    let owner = k
        .spawn_task(p("user:owner"), &z("z1"), Capabilities::ALL)
        .unwrap();
    let bot = k
        .spawn_task(p("agent:bot"), &z("z1"), Capabilities::ALL)
        .unwrap();
    for d in ["/work", "/secret"] {
        k.mkdir(&owner, d).await.unwrap();
    }
    for (f, body) in [("/work/a.txt", "work"), ("/secret/x", "secret")] {
        let h = k.open_path(&owner, f, CREATE).await.unwrap();
        k.write(&owner, &h, 0, body.as_bytes()).await.unwrap();
    }
    World {
        _dir: dir,
        k,
        owner,
        bot,
    }
}

fn tuple(k: &Kernel, owner: &Task, subject: &str, rel: Relation, path: &str) -> Tuple {
    let object = if path == "zone" {
        ObjectRef::zone(owner.zone())
    } else {
        k.object_at(owner, path).unwrap().1
    };
    Tuple {
        object,
        relation: rel,
        subject: Subject::parse(subject).unwrap(),
    }
}

async fn grant(w: &World, subject: &str, rel: Relation, path: &str) -> u64 {
    let t = tuple(&w.k, &w.owner, subject, rel, path);
    w.k.write_tuples(&w.owner, vec![t], vec![]).await.unwrap()
}

async fn revoke(w: &World, subject: &str, rel: Relation, path: &str) {
    let t = tuple(&w.k, &w.owner, subject, rel, path);
    w.k.write_tuples(&w.owner, vec![], vec![t]).await.unwrap();
}

fn denied<T: std::fmt::Debug>(r: Result<T, KernelError>) {
    match r {
        Err(e) => assert_eq!(e.code(), ErrorCode::Access, "{e}"),
        Ok(v) => panic!("allowed: {v:?}"),
    }
}

/// Everything the zone holds, for "nothing changed" checks.
async fn snapshot(w: &World) -> Vec<String> {
    let mut out = Vec::new();
    for d in ["/", "/work", "/secret"] {
        for e in w.k.readdir(&w.owner, d, None, 100).unwrap().entries {
            let path = format!("{}/{}", d.trim_end_matches('/'), e.name);
            let s = w.k.lstat(&w.owner, &path).unwrap();
            out.push(format!("{path} {} {} {}", s.ino, s.size, s.version));
        }
    }
    out
}

#[tokio::test]
async fn every_operation_is_denied_by_default_with_no_effect() {
    let w = world().await;
    let (k, bot) = (&w.k, &w.bot);
    let before = snapshot(&w).await;
    let a = k.resolve(bot, "/work/a.txt", true).unwrap(); // resolution itself is not gated
    denied(k.stat(bot, "/work/a.txt"));
    denied(k.stat(bot, "/"));
    denied(k.readdir(bot, "/work", None, 10));
    denied(k.open_path(bot, "/work/a.txt", RW).await);
    denied(k.read(bot, &a, 0, 10).await);
    denied(k.write(bot, &a, 0, b"x").await);
    denied(k.append(bot, &a, b"x").await);
    denied(k.truncate(bot, &a, 0).await);
    denied(k.set_times(bot, &a, Some(1), Some(1)).await);
    denied(k.open_path(bot, "/work/new.txt", CREATE).await);
    denied(k.mkdir(bot, "/work/d").await);
    denied(k.mkpipe(bot, "/work/p", 1024).await);
    denied(k.rename(bot, "/work/a.txt", "/work/b.txt").await);
    denied(k.unlink(bot, "/work/a.txt").await);
    denied(k.rmdir(bot, "/secret").await);
    denied(k.check_zone(bot, false).await);
    denied(k.gc(std::slice::from_ref(bot)).await);
    denied(k.destroy_zone(bot));
    denied(k.tuples(bot));
    let t = tuple(k, &w.owner, "agent:bot", Relation::Owner, "zone");
    denied(k.write_tuples(bot, vec![t], vec![]).await);
    assert_eq!(
        snapshot(&w).await,
        before,
        "a denied operation changed the zone"
    );
    assert!(k.check_zone(&w.owner, true).await.unwrap().consistent());
}

#[tokio::test]
async fn viewers_read_editors_write_and_grants_inherit_downwards() {
    let w = world().await;
    let (k, bot) = (&w.k, &w.bot);
    grant(&w, "agent:bot", Relation::Viewer, "/work").await;
    let a = k
        .open_path(bot, "/work/a.txt", OpenOptions::default())
        .await
        .unwrap();
    assert_eq!(&k.read(bot, &a, 0, 10).await.unwrap()[..], b"work");
    assert_eq!(k.readdir(bot, "/work", None, 10).unwrap().entries.len(), 1);
    denied(k.write(bot, &a, 0, b"x").await);
    denied(k.open_path(bot, "/work/a.txt", RW).await);
    denied(k.stat(bot, "/secret/x"));

    grant(&w, "agent:bot", Relation::Editor, "/work").await;
    k.write(bot, &a, 0, b"WORK").await.unwrap();
    let n = k.open_path(bot, "/work/new.txt", CREATE).await.unwrap();
    k.append(bot, &n, b"hi").await.unwrap();
    k.mkdir(bot, "/work/sub").await.unwrap();
    k.open_path(bot, "/work/sub/deep.txt", CREATE)
        .await
        .unwrap();
    k.set_times(bot, &n, None, Some(7)).await.unwrap();
    k.truncate(bot, &n, 1).await.unwrap();
    k.rename(bot, "/work/new.txt", "/work/sub/moved.txt")
        .await
        .unwrap();
    k.unlink(bot, "/work/sub/moved.txt").await.unwrap();
    denied(k.mkdir(bot, "/secret/no").await);
    denied(k.mkdir(bot, "/top").await);
    // Editing does not make an admin.
    let t = tuple(k, &w.owner, "agent:other", Relation::Viewer, "/work");
    denied(k.write_tuples(bot, vec![t], vec![]).await);
}

#[tokio::test]
async fn renames_need_write_on_both_directories_and_both_entries() {
    let w = world().await;
    let (k, bot) = (&w.k, &w.bot);
    grant(&w, "agent:bot", Relation::Editor, "/work").await;
    denied(k.rename(bot, "/work/a.txt", "/secret/a.txt").await);
    denied(k.rename(bot, "/secret/x", "/work/x").await);
    // Replacing an entry needs write on it, even inside a writable dir.
    grant(&w, "agent:bot", Relation::Editor, "/secret").await;
    revoke(&w, "agent:bot", Relation::Editor, "/secret").await;
    grant(&w, "agent:bot", Relation::Viewer, "/secret").await;
    denied(k.rename(bot, "/work/a.txt", "/secret/x").await);
    assert_eq!(
        k.stat(&w.owner, "/work/a.txt").unwrap().size,
        4,
        "no partial effect"
    );
    assert_eq!(k.stat(&w.owner, "/secret/x").unwrap().size, 6);
    grant(&w, "agent:bot", Relation::Editor, "/secret").await;
    k.rename(bot, "/work/a.txt", "/secret/x").await.unwrap();
    assert_eq!(k.stat(bot, "/secret/x").unwrap().size, 4);
    // A grant follows its inode when the inode moves: /secret/x is the old
    // a.txt, whose own grants (none) came along; /work's do not apply there.
    revoke(&w, "agent:bot", Relation::Editor, "/secret").await;
    revoke(&w, "agent:bot", Relation::Viewer, "/secret").await;
    denied(k.stat(bot, "/secret/x"));
}

#[tokio::test]
async fn crossing_a_mount_needs_enter_on_the_target_zone() {
    let w = world().await;
    let (k, bot) = (&w.k, &w.bot);
    k.create_zone(&p("user:owner"), &z("z2")).await.unwrap();
    let owner2 = k
        .spawn_task(p("user:owner"), &z("z2"), Capabilities::ALL)
        .unwrap();
    let f = k.open_path(&owner2, "/inside.txt", CREATE).await.unwrap();
    k.write(&owner2, &f, 0, b"z2").await.unwrap();
    k.mount(&w.owner, "/m", &z("z2")).await.unwrap();
    grant(&w, "agent:bot", Relation::Editor, "zone").await; // all of z1
                                                            // The mount entry is visible in z1; entering it is not allowed.
    assert_eq!(k.lstat(bot, "/m").unwrap().mount_target, Some(z("z2")));
    denied(k.stat(bot, "/m/inside.txt"));
    denied(k.readdir(bot, "/m", None, 10));
    // A viewer of zone z2 may enter (and read) it, not write.
    let enter = Tuple {
        object: ObjectRef::zone(&z("z2")),
        relation: Relation::Viewer,
        subject: Subject::Principal(p("agent:bot")),
    };
    k.write_tuples(&owner2, vec![enter], vec![]).await.unwrap();
    assert_eq!(k.stat(bot, "/m/inside.txt").unwrap().size, 2);
    let h = k.resolve(bot, "/m/inside.txt", true).unwrap();
    denied(k.write(bot, &h, 0, b"no").await);
    // Mounting a zone needs enter on it: the bot cannot mount z1's owner-only z3.
    k.create_zone(&p("user:owner"), &z("z3")).await.unwrap();
    denied(k.mount(bot, "/m3", &z("z3")).await);
}

/// Issue 12's attack: the admin of zone b alone mints a token for
/// `user:alice` in b, and with it mounts alice's zone a into b, or crosses
/// a mount of a that is there, to read alice's files. A token binds its
/// holder to the zones it names: both are refused.
#[tokio::test]
async fn a_token_binds_its_holder_to_the_zones_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let k = Kernel::open(KernelConfig::embedded(dir.path())).unwrap();
    let (alice, bob) = (p("user:alice"), p("user:bob"));
    k.create_zone(&alice, &z("a")).await.unwrap();
    k.create_zone(&bob, &z("b")).await.unwrap();
    let alice_a = k
        .spawn_task(alice.clone(), &z("a"), Capabilities::ALL)
        .unwrap();
    let f = k.open_path(&alice_a, "/diary", CREATE).await.unwrap();
    k.write(&alice_a, &f, 0, b"dear diary").await.unwrap();

    // Bob, holding a token for b, mints one for alice in b.
    let bob_in_b = Issuer {
        principal: bob.clone(),
        caps: Capabilities::ALL,
        bound_to: Some(z("b")),
        reach: Vec::new(),
    };
    let hour = std::time::Duration::from_secs(3600);
    let (token, _) = k
        .issue_token(
            &bob_in_b,
            Some(alice.clone()),
            &z("b"),
            Vec::new(),
            Capabilities::ALL,
            hour,
        )
        .unwrap();
    let posing = k
        .spawn_holder_task(&k.verify_token(&token).unwrap())
        .unwrap();
    // Mounting a into b with it: refused.
    denied(k.mount(&posing, "/a", &z("a")).await);
    // A mount of a in b made by someone entitled to (alice herself, not
    // bound by a token, once bob lets her write in b): not crossed either.
    let write_b = Tuple {
        object: ObjectRef::zone(&z("b")),
        relation: Relation::Editor,
        subject: Subject::Principal(alice.clone()),
    };
    let bob_b = k
        .spawn_task(bob.clone(), &z("b"), Capabilities::ALL)
        .unwrap();
    k.write_tuples(&bob_b, vec![write_b], vec![]).await.unwrap();
    let alice_b = k
        .spawn_task(alice.clone(), &z("b"), Capabilities::ALL)
        .unwrap();
    k.mount(&alice_b, "/a", &z("a")).await.unwrap();
    assert_eq!(k.stat(&alice_b, "/a/diary").unwrap().size, 10);
    denied(k.stat(&posing, "/a/diary"));
    denied(k.readdir(&posing, "/a", None, 10));
    // Nor can bob name zone a in a token: he is no admin there.
    denied(k.issue_token(
        &bob_in_b,
        Some(alice.clone()),
        &z("b"),
        vec![z("a")],
        Capabilities::ALL,
        hour,
    ));
    // A token that names a, from an issuer who administers both zones,
    // does lead through the mount (the gate still checks `enter`).
    let owner_b = Tuple {
        object: ObjectRef::zone(&z("b")),
        relation: Relation::Owner,
        subject: Subject::Principal(alice.clone()),
    };
    k.write_tuples(&bob_b, vec![owner_b], vec![]).await.unwrap();
    let alice_operator = Issuer {
        principal: alice.clone(),
        caps: Capabilities::ALL,
        bound_to: None,
        reach: Vec::new(),
    };
    let (both, _) = k
        .issue_token(
            &alice_operator,
            None,
            &z("b"),
            vec![z("a")],
            Capabilities::ALL,
            hour,
        )
        .unwrap();
    let holder = k
        .spawn_holder_task(&k.verify_token(&both).unwrap())
        .unwrap();
    assert_eq!(k.stat(&holder, "/a/diary").unwrap().size, 10);
}

#[tokio::test]
async fn revocation_takes_effect_for_the_next_operation() {
    let w = world().await;
    let (k, bot) = (&w.k, &w.bot);
    grant(&w, "agent:bot", Relation::Viewer, "/work").await;
    let a = k.resolve(bot, "/work/a.txt", true).unwrap();
    for _ in 0..3 {
        k.read(bot, &a, 0, 4).await.unwrap(); // now cached
    }
    revoke(&w, "agent:bot", Relation::Viewer, "/work").await;
    denied(k.read(bot, &a, 0, 4).await);
    // Moving a file out from under a grant also takes effect at once.
    grant(&w, "agent:bot", Relation::Viewer, "/work").await;
    k.stat(bot, "/work/a.txt").unwrap();
    k.rename(&w.owner, "/work/a.txt", "/secret/a.txt")
        .await
        .unwrap();
    denied(k.stat(bot, "/secret/a.txt"));
}

#[tokio::test]
async fn capabilities_cap_what_tuples_grant() {
    let w = world().await;
    let k = &w.k;
    grant(&w, "agent:bot", Relation::Editor, "/work").await;
    let reader = k
        .spawn_task(
            p("agent:bot"),
            &z("z1"),
            Capabilities::parse("read").unwrap(),
        )
        .unwrap();
    let a = k.resolve(&reader, "/work/a.txt", true).unwrap();
    k.read(&reader, &a, 0, 4).await.unwrap();
    denied(k.write(&reader, &a, 0, b"x").await);
    let d = k
        .check(&reader, &z("z1"), &a.object(), Permission::Write)
        .unwrap();
    assert!(
        d.proof[0].contains("lacks the write capability"),
        "{:?}",
        d.proof
    );
    // A child may narrow, never widen.
    let child = k
        .spawn_child(&w.bot, Capabilities::parse("read").unwrap())
        .unwrap();
    assert_eq!(child.parent(), Some(w.bot.pid()));
    assert_eq!(child.principal(), w.bot.principal());
    assert!(k.spawn_child(&reader, Capabilities::ALL).is_err());
}

#[tokio::test]
async fn groups_nest_and_checks_pin_to_a_revision() {
    let w = world().await;
    let k = &w.k;
    let member = |group: &str, subject: &str| Tuple {
        object: ObjectRef::group(group).unwrap(),
        relation: Relation::Member,
        subject: Subject::parse(subject).unwrap(),
    };
    k.write_tuples(
        &w.owner,
        vec![
            member("eng", "group:core#member"),
            member("core", "agent:bot"),
            member("core", "group:eng#member"),
        ],
        vec![],
    )
    .await
    .unwrap();
    let rev = grant(&w, "group:eng#member", Relation::Editor, "/secret").await;
    let x = k.object_at(&w.owner, "/secret/x").unwrap().1;
    let d = k
        .check_at(&w.bot, &z("z1"), &x, Permission::Write, rev)
        .await
        .unwrap();
    assert!(d.allowed);
    assert_eq!(d.proof[0], "group:core#member@agent:bot");
    // A revision the zone has not reached yet times out, never answers early.
    let far = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        k.check_at(&w.bot, &z("z1"), &x, Permission::Write, rev + 1_000),
    )
    .await;
    assert!(far.is_err(), "a check pinned to a future revision answered");
    // Explaining someone else's access needs admin.
    denied(
        k.explain(&w.bot, &p("user:owner"), &x, Permission::Read, None)
            .await,
    );
    assert!(
        k.explain(&w.owner, &p("agent:bot"), &x, Permission::Write, None)
            .await
            .unwrap()
            .allowed
    );
}
