//! Property test: random sequences of file operations against the real VFS
//! (sled, Raft driver, object store) and against a naive in-memory model of
//! a POSIX-like tree. Each operation must give the same result (the same
//! error code on failure), and the final trees must be identical.

// Tests may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use nexus_kernel::ErrorCode;
use nexus_kernel::OpenOptions;
use nexus_kernel::CHUNK_SIZE;
use nexus_kernel::{Capabilities, Principal, Task};
use nexus_kernel::{FileKind, ZoneId};
use nexus_kernel::{Kernel, KernelConfig, ObjectStoreConfig};
use proptest::prelude::*;

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Dir(BTreeMap<String, Node>),
    File(Vec<u8>),
}

#[derive(Debug, Clone)]
enum Op {
    Mkdir(&'static str),
    Create(&'static str),
    Write(&'static str, u64, usize, u8),
    Append(&'static str, usize, u8),
    Truncate(&'static str, u64),
    Rename(&'static str, &'static str),
    Unlink(&'static str),
    Rmdir(&'static str),
    Read(&'static str, u64, u64),
    /// `fsync`: writes the file's buffer out (as patches, or folded into
    /// chunks), which must change nothing a reader sees.
    Sync(&'static str),
}

const PATHS: &[&str] = &[
    "/a", "/b", "/a/c", "/f", "/a/g", "/b/h", "/a/c/i", "/a/f", "/f/x",
];
const OFFSETS: &[u64] = &[
    0,
    10,
    4090,
    4100,
    CHUNK_SIZE - 5,
    CHUNK_SIZE + 3,
    2 * CHUNK_SIZE + 1,
];
const LENS: &[usize] = &[1, 7, 100, 5000, 40_000];
const SIZES: &[u64] = &[0, 5, 4096, 4097, 3000, CHUNK_SIZE + 1];

fn op() -> impl Strategy<Value = Op> {
    let p = || proptest::sample::select(PATHS);
    prop_oneof![
        p().prop_map(Op::Mkdir),
        p().prop_map(Op::Create),
        (
            p(),
            proptest::sample::select(OFFSETS),
            proptest::sample::select(LENS),
            any::<u8>()
        )
            .prop_map(|(p, o, l, b)| Op::Write(p, o, l, b)),
        (p(), proptest::sample::select(LENS), any::<u8>())
            .prop_map(|(p, l, b)| Op::Append(p, l, b)),
        (p(), proptest::sample::select(SIZES)).prop_map(|(p, s)| Op::Truncate(p, s)),
        (p(), p()).prop_map(|(a, b)| Op::Rename(a, b)),
        p().prop_map(Op::Unlink),
        p().prop_map(Op::Rmdir),
        (
            p(),
            proptest::sample::select(OFFSETS),
            proptest::sample::select(LENS)
        )
            .prop_map(|(p, o, l)| Op::Read(p, o, l as u64)),
        p().prop_map(Op::Sync),
    ]
}

/// The model's answer: Ok with bytes read (if any), or an error code.
type Outcome = Result<Option<Vec<u8>>, ErrorCode>;

struct Model {
    root: Node,
}

fn split(p: &str) -> Vec<&str> {
    p.split('/').filter(|s| !s.is_empty()).collect()
}

impl Model {
    fn walk(&self, parts: &[&str]) -> Result<&Node, ErrorCode> {
        let mut cur = &self.root;
        for part in parts {
            match cur {
                Node::Dir(m) => cur = m.get(*part).ok_or(ErrorCode::NoEntry)?,
                Node::File(_) => return Err(ErrorCode::NotDirectory),
            }
        }
        Ok(cur)
    }

    fn walk_mut(&mut self, parts: &[&str]) -> Result<&mut Node, ErrorCode> {
        let mut cur = &mut self.root;
        for part in parts {
            match cur {
                Node::Dir(m) => cur = m.get_mut(*part).ok_or(ErrorCode::NoEntry)?,
                Node::File(_) => return Err(ErrorCode::NotDirectory),
            }
        }
        Ok(cur)
    }

    fn parent_mut(
        &mut self,
        p: &'static str,
    ) -> Result<(&mut BTreeMap<String, Node>, &'static str), ErrorCode> {
        let parts = split(p);
        let (name, dir) = parts.split_last().expect("non-root");
        match self.walk_mut(dir)? {
            Node::Dir(m) => Ok((m, name)),
            Node::File(_) => Err(ErrorCode::NotDirectory),
        }
    }

    fn file_mut(&mut self, p: &'static str) -> Result<&mut Vec<u8>, ErrorCode> {
        match self.walk_mut(&split(p))? {
            Node::File(b) => Ok(b),
            Node::Dir(_) => Err(ErrorCode::IsDirectory),
        }
    }

    fn apply(&mut self, op: &Op) -> Outcome {
        match *op {
            Op::Mkdir(p) => {
                let (m, name) = self.parent_mut(p)?;
                if m.contains_key(name) {
                    return Err(ErrorCode::Exist);
                }
                m.insert(name.into(), Node::Dir(BTreeMap::new()));
                Ok(None)
            }
            Op::Create(p) => {
                if self.walk(&split(p)).is_ok() {
                    return Ok(None);
                }
                let (m, name) = self.parent_mut(p)?;
                m.insert(name.into(), Node::File(Vec::new()));
                Ok(None)
            }
            Op::Write(p, off, len, b) => {
                let f = self.file_mut(p)?;
                let end = off as usize + len;
                if f.len() < end {
                    f.resize(end, 0);
                }
                f[off as usize..end].fill(b);
                Ok(None)
            }
            Op::Append(p, len, b) => {
                let f = self.file_mut(p)?;
                f.extend(std::iter::repeat_n(b, len));
                Ok(None)
            }
            Op::Truncate(p, size) => {
                self.file_mut(p)?.resize(size as usize, 0);
                Ok(None)
            }
            Op::Read(p, off, len) => {
                let f = self.file_mut(p)?;
                let lo = (off as usize).min(f.len());
                let hi = (off as usize + len as usize).min(f.len());
                Ok(Some(f[lo..hi].to_vec()))
            }
            Op::Unlink(p) => {
                let (m, name) = self.parent_mut(p)?;
                match m.get(name) {
                    None => Err(ErrorCode::NoEntry),
                    Some(Node::Dir(_)) => Err(ErrorCode::IsDirectory),
                    Some(Node::File(_)) => {
                        m.remove(name);
                        Ok(None)
                    }
                }
            }
            Op::Rmdir(p) => {
                let (m, name) = self.parent_mut(p)?;
                match m.get(name) {
                    None => Err(ErrorCode::NoEntry),
                    Some(Node::File(_)) => Err(ErrorCode::NotDirectory),
                    Some(Node::Dir(c)) if !c.is_empty() => Err(ErrorCode::NotEmpty),
                    Some(Node::Dir(_)) => {
                        m.remove(name);
                        Ok(None)
                    }
                }
            }
            Op::Sync(p) => self.walk(&split(p)).map(|_| None),
            Op::Rename(from, to) => self.rename(from, to),
        }
    }

    fn rename(&mut self, from: &'static str, to: &'static str) -> Outcome {
        // Same order of checks as the kernel: both parents, then the source,
        // then the subtree rule, then the target.
        self.parent_mut(from)?;
        self.parent_mut(to)?;
        let src = self.walk(&split(from))?.clone();
        if from == to {
            return Ok(None);
        }
        let is_dir = matches!(src, Node::Dir(_));
        if is_dir && to.starts_with(&format!("{from}/")) {
            return Err(ErrorCode::Invalid);
        }
        let (m, name) = self.parent_mut(to)?;
        match (m.get(name), is_dir) {
            (Some(Node::Dir(c)), true) if !c.is_empty() => return Err(ErrorCode::NotEmpty),
            (Some(Node::Dir(_)), false) => return Err(ErrorCode::IsDirectory),
            (Some(Node::File(_)), true) => return Err(ErrorCode::NotDirectory),
            _ => {}
        }
        let (m, name) = self.parent_mut(from)?;
        let node = m.remove(name).expect("checked");
        let (m, name) = self.parent_mut(to)?;
        m.insert(name.into(), node);
        Ok(None)
    }
}

async fn run_kernel(k: &Kernel, z: &Task, op: &Op) -> Outcome {
    let file = |p: &'static str| async move {
        k.open_path(
            z,
            p,
            OpenOptions {
                read: true,
                write: true,
                ..OpenOptions::default()
            },
        )
        .await
    };
    let r = match *op {
        Op::Mkdir(p) => k.mkdir(z, p).await.map(|_| None),
        Op::Create(p) => k
            .open_path(
                z,
                p,
                OpenOptions {
                    create: true,
                    ..OpenOptions::default()
                },
            )
            .await
            .map(|_| None),
        Op::Write(p, off, len, b) => match file(p).await {
            Ok(h) => k.write(z, &h, off, &vec![b; len]).await.map(|_| None),
            Err(e) => Err(e),
        },
        Op::Append(p, len, b) => match file(p).await {
            Ok(h) => k.append(z, &h, &vec![b; len]).await.map(|_| None),
            Err(e) => Err(e),
        },
        Op::Truncate(p, s) => match file(p).await {
            Ok(h) => k.truncate(z, &h, s).await.map(|_| None),
            Err(e) => Err(e),
        },
        Op::Read(p, off, len) => match file(p).await {
            Ok(h) => k.read(z, &h, off, len).await.map(|b| Some(b.to_vec())),
            Err(e) => Err(e),
        },
        Op::Sync(p) => match file(p).await {
            Ok(h) => k.sync(z, &h).await.map(|_| None),
            Err(e) => Err(e),
        },
        Op::Rename(a, b) => k.rename(z, a, b).await.map(|_| None),
        Op::Unlink(p) => k.unlink(z, p).await.map(|_| None),
        Op::Rmdir(p) => k.rmdir(z, p).await.map(|_| None),
    };
    r.map_err(|e| e.code())
}

/// Reads the kernel's whole tree into the model's shape.
async fn snapshot(k: &Kernel, z: &Task, path: String) -> Node {
    let mut out = BTreeMap::new();
    for e in k.readdir(z, &path, None, 4096).unwrap().entries {
        let child = format!("{}/{}", path.trim_end_matches('/'), e.name);
        let node = match e.kind {
            FileKind::Dir => Box::pin(snapshot(k, z, child)).await,
            _ => {
                let h = k.resolve(z, &child, true).unwrap();
                Node::File(k.read(z, &h, 0, 1 << 30).await.unwrap().to_vec())
            }
        };
        out.insert(e.name, node);
    }
    Node::Dir(out)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn the_vfs_behaves_like_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = KernelConfig::embedded(dir.path());
        cfg.object_store = ObjectStoreConfig::Memory;
        let k = Kernel::open(cfg).unwrap();
        let zone = ZoneId::new("z").unwrap();
        let me = Principal::parse("user:tester").unwrap();
        let mut model = Model { root: Node::Dir(BTreeMap::new()) };
        rt.block_on(async {
            k.create_zone(&me, &zone).await.unwrap();
            let z = k.spawn_task(me.clone(), &zone, Capabilities::ALL).unwrap();
            for (i, op) in ops.iter().enumerate() {
                let want = model.apply(op);
                let got = run_kernel(&k, &z, op).await;
                prop_assert_eq!(&got, &want, "step {}: {:?}", i, op);
            }
            let tree = snapshot(&k, &z, "/".into()).await;
            prop_assert_eq!(&tree, &model.root);
            let report = k.check_zone(&z, true).await.unwrap();
            prop_assert!(report.consistent(), "{:?}", report.problems);
            Ok(())
        })?;
    }
}
