//! Regular files open on this node, so that a file unlinked while open
//! outlives its name, as on POSIX (a program writes a temporary file,
//! unlinks it, and goes on reading it). Before it removes a regular file,
//! the VFS asks [`OpenFiles::is_open`]; if the file is open here it is
//! orphaned instead (`ZoneCommand::Orphan`: its name goes, the inode and
//! its content stay, recorded with this node as holder), and the last
//! [`OpenFile`] to close reaps it (`ZoneCommand::Reap`). An orphan left by
//! a node that stopped with it open is reaped by that node's `gc`.
//!
//! Open counts are this node's alone: a file open on one node and unlinked
//! through another loses its content at the unlink.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::consensus::forward::Actor;
use crate::files::vfs::Handle;
use crate::kernel::{Kernel, Zone};
use crate::types::{FileKind, Ino, ZoneId};
use crate::zone::command::ZoneCommand;

type Counts = HashMap<(ZoneId, Ino), usize>;

/// How many times each regular file is held open on this node.
#[derive(Default)]
pub(crate) struct OpenFiles(Mutex<Counts>);

impl OpenFiles {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn is_open(&self, zone: &ZoneId, ino: Ino) -> bool {
        self.counts().contains_key(&(zone.clone(), ino))
    }
}

/// A regular file held open (by a descriptor and the streams made from
/// it); dropping the last one of an orphan reaps it.
pub struct OpenFile {
    files: Arc<OpenFiles>,
    zone: Arc<Zone>,
    ino: Ino,
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        let key = (self.zone.id.clone(), self.ino);
        let last = {
            let mut counts = self.files.counts();
            match counts.get_mut(&key) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                _ => {
                    counts.remove(&key);
                    true
                }
            }
        };
        if last {
            reap_if_orphan(self.zone.clone(), self.ino);
        }
    }
}

/// Reaps inode `ino` of `zone` if it is an orphan, in the background (a
/// descriptor closes in a synchronous drop). Without a runtime to run on,
/// the orphan waits for `gc`.
pub(crate) fn reap_if_orphan(zone: Arc<Zone>, ino: Ino) {
    if !matches!(zone.state.orphan_holder(ino), Ok(Some(_))) {
        return;
    }
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn(async move {
        if let Err(e) = zone.propose(&Actor::Node, ZoneCommand::Reap { ino }).await {
            tracing::warn!(zone = %zone.id, ino, "orphan not reaped (gc will): {e}");
        }
    });
}

impl Kernel {
    /// How many names the inode behind `h` has: 0 once it is an orphan
    /// (unlinked while open), else 1 (there are no hard links).
    pub fn link_count(&self, h: &Handle) -> u64 {
        match h.zone().state.orphan_holder(h.ino) {
            Ok(Some(_)) => 0,
            _ => h.zone().state.name_count(h.ino).unwrap_or(1),
        }
    }

    /// Holds the regular file behind `h` open until the returned guard (and
    /// every clone of it) is dropped; `None` for anything but a regular file.
    pub fn hold_open(&self, h: &Handle) -> Option<Arc<OpenFile>> {
        if h.kind != FileKind::Regular {
            return None;
        }
        *self
            .open_files
            .counts()
            .entry((h.zone_id().clone(), h.ino))
            .or_default() += 1;
        Some(Arc::new(OpenFile {
            files: self.open_files.clone(),
            zone: h.zone().clone(),
            ino: h.ino,
        }))
    }
}
