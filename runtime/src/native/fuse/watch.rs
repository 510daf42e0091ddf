//! Keeps Linux's caches of one mount true to the kernel: every change the
//! kernel reports (`nexus_kernel::Changed`) that this mount did not make
//! becomes FUSE invalidations of the entries, attributes and pages it
//! touches. Changes this mount made are skipped: Linux updated its caches
//! as it made the request (a created name, written pages, a directory's
//! attributes after a create).
//!
//! A name that changed elsewhere is also detached from its node, so the
//! next lookup makes a new node: a node id never comes to stand for
//! another inode whose pages Linux might still hold.
//!
//! Notifications are written to `/dev/fuse` from a thread of the watcher's
//! own: an entry's invalidation waits for the lookups in progress in its
//! directory (that is what makes it race-free with them), which FUSE's
//! threads answer, never this one.

use std::ffi::OsStr;

use fuser::{INodeNo, Notifier};
use nexus_kernel::{Change, Changed};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::oneshot;

use super::nodes::Nodes;
use super::{Inner, Watching};

/// What Linux is told to drop.
#[derive(Debug, PartialEq, Eq)]
enum Drop {
    /// An entry: the name in the directory node.
    Entry(u64, String),
    /// A node's attributes, and its pages too if `pages`.
    Inode { node: u64, pages: bool },
}

/// Runs while the mount lives; dropping it stops the thread.
pub struct Watcher {
    _stop: oneshot::Sender<()>,
}

impl Watching {
    /// Starts telling Linux, through `notifier`, what changed.
    pub fn start(self, notifier: Notifier) -> std::io::Result<Watcher> {
        let Watching { inner, mut changes } = self;
        let (stop, mut stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("nexus-fuse-watch".into())
            .spawn(move || loop {
                let next = inner.rt.block_on(async {
                    tokio::select! {
                        _ = &mut stopped => None,
                        batch = changes.recv() => Some(batch),
                    }
                });
                let drops = match next {
                    None | Some(Err(RecvError::Closed)) => return,
                    Some(Ok(batch)) => inner.drops(&batch),
                    // Changes were lost: anything may have changed.
                    Some(Err(RecvError::Lagged(_))) => inner.drop_all(),
                };
                for d in drops {
                    let sent = match &d {
                        Drop::Entry(dir, name) => {
                            notifier.inval_entry(INodeNo(*dir), OsStr::new(name))
                        }
                        Drop::Inode { node, pages } => {
                            let offset = if *pages { 0 } else { -1 };
                            notifier.inval_inode(INodeNo(*node), offset, 0)
                        }
                    };
                    if let Err(e) = sent {
                        tracing::debug!("FUSE invalidation {d:?}: {e}");
                    }
                }
            })?;
        Ok(Watcher { _stop: stop })
    }
}

impl Inner {
    fn drops(&self, batch: &[Change]) -> Vec<Drop> {
        drops(&mut self.nodes(), self.task.pid(), batch)
    }

    fn drop_all(&self) -> Vec<Drop> {
        drop_all(&self.nodes())
    }
}

/// What to drop for `batch`, skipping what mount `me` did; names changed
/// elsewhere are detached.
fn drops(nodes: &mut Nodes, me: u64, batch: &[Change]) -> Vec<Drop> {
    let mut drops = Vec::new();
    for c in batch.iter().filter(|c| c.by != Some(me)) {
        let inode = |ino| (c.zone.clone(), ino);
        match &c.what {
            Changed::Everything => return drop_all(nodes),
            Changed::Entry { dir, name } => {
                for d in nodes.showing(&inode(*dir)).to_vec() {
                    nodes.detach(d, name);
                    drops.push(Drop::Entry(d, name.clone()));
                }
            }
            Changed::Content(ino) | Changed::Attrs(ino) => {
                let pages = matches!(c.what, Changed::Content(_));
                let shown = nodes.showing(&inode(*ino));
                drops.extend(shown.iter().map(|&node| Drop::Inode { node, pages }));
            }
        }
    }
    drops
}

/// Everything a mount has shown: every entry and every node.
fn drop_all(nodes: &Nodes) -> Vec<Drop> {
    let mut drops = Vec::new();
    for (node, place) in nodes.all() {
        if let Some((dir, name)) = place {
            drops.push(Drop::Entry(dir, name.to_owned()));
        }
        drops.push(Drop::Inode { node, pages: true });
    }
    drops
}

#[cfg(test)]
mod tests {
    use super::super::nodes::ROOT;
    use super::*;
    use nexus_kernel::ZoneId;

    fn zone(name: &str) -> ZoneId {
        ZoneId::new(name).unwrap()
    }

    fn change(by: Option<u64>, what: Changed) -> Change {
        Change {
            zone: zone("z1"),
            by,
            what,
        }
    }

    /// `/d` (inode 2) holding `f` (inode 3), which `/g` hard-links.
    fn tree() -> (Nodes, u64, u64, u64) {
        let z = zone("z1");
        let mut nodes = Nodes::default();
        nodes.show(ROOT, Some((z.clone(), 1)));
        let d = nodes.remember(ROOT, "d", Some((z.clone(), 2))).unwrap();
        let f = nodes.remember(d, "f", Some((z.clone(), 3))).unwrap();
        let g = nodes.remember(ROOT, "g", Some((z, 3))).unwrap();
        (nodes, d, f, g)
    }

    #[test]
    fn a_change_drops_what_shows_it_and_nothing_else() {
        let (mut nodes, d, f, g) = tree();
        let content = drops(&mut nodes, 9, &[change(None, Changed::Content(3))]);
        assert_eq!(
            content,
            [
                Drop::Inode {
                    node: f,
                    pages: true
                },
                Drop::Inode {
                    node: g,
                    pages: true
                }
            ]
        );
        let attrs = drops(&mut nodes, 9, &[change(Some(4), Changed::Attrs(2))]);
        assert_eq!(
            attrs,
            [Drop::Inode {
                node: d,
                pages: false
            }]
        );
        // Another zone's inode 3 is another file.
        let other = Change {
            zone: zone("z2"),
            by: None,
            what: Changed::Content(3),
        };
        assert!(drops(&mut nodes, 9, &[other]).is_empty());
    }

    #[test]
    fn a_name_changed_elsewhere_is_dropped_and_detached() {
        let (mut nodes, d, f, _) = tree();
        let renamed = Changed::Entry {
            dir: 2,
            name: "f".into(),
        };
        assert_eq!(
            drops(&mut nodes, 9, &[change(None, renamed)]),
            [Drop::Entry(d, "f".into())]
        );
        // The old node keeps no path; the name's next lookup is a new node.
        assert_eq!(nodes.path(f), None);
        let again = nodes.remember(d, "f", Some((zone("z1"), 7))).unwrap();
        assert_ne!(again, f);
    }

    #[test]
    fn what_this_mount_did_is_kept() {
        let (mut nodes, _, f, _) = tree();
        let mine = [
            change(Some(9), Changed::Content(3)),
            change(
                Some(9),
                Changed::Entry {
                    dir: 2,
                    name: "f".into(),
                },
            ),
            change(Some(9), Changed::Everything),
        ];
        assert!(drops(&mut nodes, 9, &mine).is_empty());
        assert_eq!(nodes.path(f).as_deref(), Some("/d/f"));
    }

    #[test]
    fn everything_drops_every_entry_and_node() {
        let (mut nodes, d, f, g) = tree();
        let mut all = drops(&mut nodes, 9, &[change(None, Changed::Everything)]);
        all.sort_by_key(|d| format!("{d:?}"));
        let mut want = vec![
            Drop::Entry(ROOT, "d".into()),
            Drop::Entry(d, "f".into()),
            Drop::Entry(ROOT, "g".into()),
            Drop::Inode {
                node: ROOT,
                pages: true,
            },
            Drop::Inode {
                node: d,
                pages: true,
            },
            Drop::Inode {
                node: f,
                pages: true,
            },
            Drop::Inode {
                node: g,
                pages: true,
            },
        ];
        want.sort_by_key(|d| format!("{d:?}"));
        assert_eq!(all, want);
        // Nothing is detached: the names may well be the same files.
        assert_eq!(nodes.path(f).as_deref(), Some("/d/f"));
    }
}
