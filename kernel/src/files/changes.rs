//! The change feed: what changed in the zones this node serves, as it
//! becomes visible here, for front-ends that cache what they read (a FUSE
//! mount keeps entries, attributes and pages in Linux's caches, and drops
//! them when told).
//!
//! Sources: every command a local replica applies (whoever proposed it, on
//! whichever node), a snapshot it installs (everything), and the write-back
//! buffer's writes, which are visible before any command carries them. The
//! write-out of buffered bytes changes nothing visible on this node, so its
//! commit publishes nothing here (on the other nodes it does).
//!
//! Each change names the mount whose request made it, if one did and the
//! command was proposed on this node: that mount keeps its caches (Linux
//! updated them as it made the request). A change proposed through another
//! node (a follower forwarding to its leader) names no mount, so every
//! mount, its own included, drops what it cached.
//!
//! Delivery is asynchronous and bounded: a change is in the feed before the
//! call that made it returns, and a subscriber that falls behind by more
//! than [`FEED_DEPTH`] batches is told so (`Lagged`) and must treat
//! everything as changed.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::types::ZoneId;

/// Batches a subscriber may fall behind before it lags.
pub const FEED_DEPTH: usize = 4096;

pub use crate::zone::command::Changed;

/// One change, and the mount whose request made it (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub zone: ZoneId,
    pub by: Option<u64>,
    pub what: Changed,
}

/// Who a proposal is made for, as far as the feed cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Mount(u64),
    /// A write-out of the write-back buffer: nothing new to see here.
    WriteOut,
}

tokio::task_local! {
    static ORIGIN: Origin;
}

/// Runs `work` as requests of mount `mount` (an id of the caller's, unique
/// on the node: a FUSE mount uses its task's pid). The changes its kernel
/// calls make carry it.
pub async fn from_mount<F: Future>(mount: u64, work: F) -> F::Output {
    ORIGIN.scope(Origin::Mount(mount), work).await
}

/// Runs `work`, a write-out of buffered bytes.
pub(crate) async fn as_write_out<F: Future>(work: F) -> F::Output {
    ORIGIN.scope(Origin::WriteOut, work).await
}

/// The origin of the calling task's requests, if it set one.
pub(crate) fn origin() -> Option<Origin> {
    ORIGIN.try_with(|o| *o).ok()
}

/// The mount an origin names.
pub(crate) fn mount_of(origin: Option<Origin>) -> Option<u64> {
    match origin {
        Some(Origin::Mount(m)) => Some(m),
        _ => None,
    }
}

/// The mount the calling task's requests come from, if any.
pub(crate) fn calling_mount() -> Option<u64> {
    mount_of(origin())
}

/// The node's feed. Cheap to clone; publishing costs nothing while no one
/// subscribes.
#[derive(Clone)]
pub struct ChangeFeed {
    tx: broadcast::Sender<Arc<[Change]>>,
}

impl Default for ChangeFeed {
    fn default() -> Self {
        ChangeFeed {
            tx: broadcast::channel(FEED_DEPTH).0,
        }
    }
}

impl ChangeFeed {
    /// Changes from now on, in the order they became visible.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<[Change]>> {
        self.tx.subscribe()
    }

    /// Whether anyone listens (a publisher may skip building changes).
    pub(crate) fn wanted(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    pub(crate) fn publish(&self, changes: Vec<Change>) {
        if !changes.is_empty() {
            // No subscriber is not an error: nobody caches anything.
            let _ = self.tx.send(changes.into());
        }
    }

    /// Publishes one change of `zone`, made by mount `by` if one did.
    pub(crate) fn publish_one(&self, zone: &ZoneId, what: Changed, by: Option<u64>) {
        if self.wanted() {
            self.publish(vec![Change {
                zone: zone.clone(),
                by,
                what,
            }]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone() -> ZoneId {
        ZoneId::new("z1").unwrap()
    }

    #[tokio::test]
    async fn a_change_names_the_mount_whose_request_made_it() {
        let feed = ChangeFeed::default();
        let mut rx = feed.subscribe();
        let publish = |what| feed.publish_one(&zone(), what, calling_mount());
        from_mount(7, async { publish(Changed::Content(3)) }).await;
        publish(Changed::Attrs(4));
        as_write_out(async { publish(Changed::Content(5)) }).await;
        let got: Vec<_> = [rx.recv().await, rx.recv().await, rx.recv().await]
            .into_iter()
            .map(|b| b.unwrap()[0].clone())
            .collect();
        assert_eq!(got[0].by, Some(7));
        assert_eq!(got[0].what, Changed::Content(3));
        assert_eq!(got[1].by, None);
        assert_eq!(got[2].by, None);
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told() {
        let feed = ChangeFeed::default();
        let mut rx = feed.subscribe();
        for ino in 0..FEED_DEPTH as u64 + 10 {
            feed.publish_one(&zone(), Changed::Content(ino), None);
        }
        assert!(matches!(
            rx.recv().await,
            Err(broadcast::error::RecvError::Lagged(10))
        ));
        // It then goes on from the oldest change kept.
        assert_eq!(rx.recv().await.unwrap()[0].what, Changed::Content(10));
    }
}
