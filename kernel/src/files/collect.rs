//! The collector: deletes from the content store, in the background, the
//! chunks no file names any more, so a store stays close to its live data
//! without a manual `nexus gc`.
//!
//! Every zone's state machine counts, per chunk hash, the chunk slots of
//! its files that name it, and lists the chunks whose count fell to zero
//! (`zone/state.rs`, deterministic like everything it keeps). Each round,
//! this node's collector takes the unreferenced chunks of the zones it
//! runs and, under the content store's exclusive lock (no upload is then
//! between its `put` and the commit naming it), deletes each one that no
//! zone of this node names; then it proposes `Collected`, which takes them
//! off the zone's list. A chunk another zone still names stays; that
//! zone's own list will bring it back when its count falls to zero too.
//!
//! A store that another data directory writes to (a cluster's shared
//! bucket or directory) is never collected: the zones of the other nodes
//! are not visible here (the same rule as `nexus gc`).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::Duration;

use crate::consensus::forward::Actor;
use crate::error::Result;
use crate::files::content::ContentStore;
use crate::kernel::{tree_name, Zone, ZoneRecord};
use crate::types::ZoneId;
use crate::zone::command::ZoneCommand;
use crate::zone::state::ZoneState;

/// Unreferenced chunks taken from one zone per step.
const BATCH: usize = 256;

/// Zones running on this node.
pub(crate) type RunningZones = Arc<RwLock<HashMap<ZoneId, Arc<Zone>>>>;

/// What a round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Collected {
    /// Chunks deleted from the store.
    pub deleted: u64,
    pub bytes_freed: u64,
    /// Unreferenced in one zone but still named by another: kept.
    pub kept: u64,
}

pub(crate) struct Collector {
    content: Arc<ContentStore>,
    zones: RunningZones,
    db: sled::Db,
    catalog: sled::Tree,
    /// The configuration says the store is shared (never collected).
    shared: bool,
    started: OnceLock<()>,
    rt: Option<tokio::runtime::Handle>,
    interval: Duration,
    /// One round at a time.
    round: tokio::sync::Mutex<()>,
}

impl Collector {
    pub(crate) fn new(
        content: Arc<ContentStore>,
        zones: RunningZones,
        db: sled::Db,
        catalog: sled::Tree,
        shared: bool,
        interval: Duration,
    ) -> Self {
        Collector {
            content,
            zones,
            db,
            catalog,
            shared,
            started: OnceLock::new(),
            rt: tokio::runtime::Handle::try_current().ok(),
            interval,
            round: tokio::sync::Mutex::default(),
        }
    }

    /// The state of every zone of this node, running or not.
    fn all_states(&self) -> Result<Vec<ZoneState>> {
        self.catalog
            .iter()
            .map(|kv| {
                let record = ZoneRecord::decode(&kv?.1)?;
                Ok(ZoneState::new(self.db.open_tree(tree_name(&record.id))?))
            })
            .collect()
    }

    /// One round over every running zone with unreferenced chunks.
    pub(crate) async fn collect(&self) -> Result<Collected> {
        let _round = self.round.lock().await;
        let mut report = Collected::default();
        let zones: Vec<Arc<Zone>> = self
            .zones
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let mut due = Vec::new();
        for zone in zones {
            if !zone.state.unreferenced(1)?.is_empty() {
                due.push(zone);
            }
        }
        if due.is_empty() || self.shared || self.content.is_shared().await? {
            return Ok(report);
        }
        for zone in due {
            loop {
                let batch = zone.state.unreferenced(BATCH)?;
                if batch.is_empty() {
                    break;
                }
                let mut dealt = Vec::with_capacity(batch.len());
                {
                    let _exclusive = self.content.exclusive().await;
                    // The commands that left these chunks unreferenced may
                    // not be flushed yet (invariant 25): after a crash the
                    // zone must not come back naming a deleted chunk. Under
                    // the lock no command can name one again.
                    crate::kernel::flush(&self.db).await?;
                    // Read under the lock: a zone created meanwhile counts.
                    let states = self.all_states()?;
                    for hash in &batch {
                        if zone.state.chunk_refs(hash)? > 0 {
                            // Named again since it was listed: off the list
                            // already, and not ours to decide.
                            continue;
                        }
                        let mut named_elsewhere = false;
                        for s in &states {
                            if s.chunk_refs(hash)? > 0 {
                                named_elsewhere = true;
                                break;
                            }
                        }
                        if named_elsewhere {
                            report.kept += 1;
                        } else if let Some(bytes) = self.content.delete(hash).await? {
                            report.deleted += 1;
                            report.bytes_freed += bytes;
                        }
                        dealt.push(*hash);
                    }
                }
                let full = batch.len() == BATCH;
                if !dealt.is_empty() {
                    let cmd = ZoneCommand::Collected { hashes: dealt };
                    zone.propose(&Actor::Node, cmd).await?;
                }
                if !full {
                    break;
                }
            }
        }
        Ok(report)
    }

    /// Starts the background rounds (once), on the kernel's runtime.
    pub(crate) fn start(self: &Arc<Self>) {
        self.started.get_or_init(|| {
            let me: Weak<Collector> = Arc::downgrade(self);
            let interval = self.interval;
            let rounds = async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(collector) = me.upgrade() else {
                        return;
                    };
                    if let Err(e) = collector.collect().await {
                        tracing::warn!("collecting unreferenced chunks: {e}");
                    }
                }
            };
            // Without a runtime, rounds run at shutdown (and `collect`) only.
            if let Some(rt) = self
                .rt
                .clone()
                .or_else(|| tokio::runtime::Handle::try_current().ok())
            {
                rt.spawn(rounds);
            }
        });
    }
}
