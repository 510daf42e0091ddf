//! Changing a zone's group: `nexus zone add-replica` and `remove-replica`,
//! one node at a time, by Raft conf change.
//!
//! A new member first joins as a learner (it receives the log, or a
//! snapshot, but does not count toward a quorum), and is promoted to voter
//! only once it has caught up, so adding a slow or empty node never costs
//! the group its availability. A leader is never removed while it leads:
//! leadership moves to another voter first (raft-rs's leader transfer).

use std::time::{Duration, Instant};

use crate::access::identity::{Permission, Task};
use crate::consensus::driver::ZoneStatus;
use crate::consensus::forward::{MemberChange, Proposal};
use crate::consensus::replica::{MemberInfo, Role};
use crate::error::{KernelError, Result};
use crate::kernel::Kernel;
use crate::types::{ReplicaId, ZoneId};

/// How long a new member may take to catch up before it is promoted.
const CATCH_UP: Duration = Duration::from_secs(120);
/// A learner this close to the leader's commit index is caught up.
const CAUGHT_UP_LAG: u64 = 64;
/// How long to wait for leadership to move off a replica being removed.
const HANDOVER: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(20);

impl Kernel {
    /// Proposes a membership change for `task` (through the leader's node
    /// when this replica follows) and waits until it is applied here.
    async fn change_members(
        &self,
        task: &Task,
        change: MemberChange,
        node: ReplicaId,
        info: MemberInfo,
    ) -> Result<()> {
        let proposal = Proposal::Membership { change, node, info };
        let zone = self.zone(task.zone())?;
        zone.driver.propose_for(&task.actor(), proposal).await?;
        Ok(())
    }

    /// Whether the task may add or remove replicas of its zone (`admin`):
    /// a coordinator asks before it involves another node.
    pub fn may_change_membership(&self, task: &Task) -> Result<()> {
        self.require_on_zone(task, Permission::Admin, "add-replica")
    }

    /// Adds `node`'s replica `info` (its role, and the incarnation its
    /// [`Kernel::join_running_zone`] reported) to the task's zone: as a
    /// learner, then, once it has caught up, as a voter. Must run on the
    /// zone's leader (which sees each replica's progress). Needs `admin`.
    pub async fn add_replica(&self, task: &Task, node: ReplicaId, info: MemberInfo) -> Result<()> {
        self.require_on_zone(task, Permission::Admin, "add-replica")?;
        let status = self.leader_status(task).await?;
        if status.voters.contains(&node) {
            return Err(KernelError::Exist(format!(
                "node {node} is already a voter of zone {}",
                task.zone()
            )));
        }
        if !status.learners.contains(&node) {
            self.change_members(task, MemberChange::AddLearner, node, info)
                .await?;
        }
        let deadline = Instant::now() + CATCH_UP;
        loop {
            let s = self.leader_status(task).await?;
            let matched = s.progress.iter().find(|p| p.replica == node);
            if matched.is_some_and(|p| p.matched > 0 && p.lag <= CAUGHT_UP_LAG) {
                break;
            }
            if Instant::now() > deadline {
                return Err(KernelError::Unavailable(format!(
                    "node {node} has not caught up with zone {} within {CATCH_UP:?}; it stays a \
                     learner (run add-replica again to promote it once it has)",
                    task.zone()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
        self.change_members(task, MemberChange::AddVoter, node, info)
            .await?;
        self.audit(task, task.zone(), "add-replica", &node.to_string(), "ok");
        Ok(())
    }

    /// Removes `node` from the task's zone. Refused for the last voter
    /// with a state machine, and on `node` itself (it might never learn
    /// that its removal committed): ask another member. If `node` leads,
    /// leadership is handed to another voter first. Needs `admin`.
    pub async fn remove_replica(&self, task: &Task, node: ReplicaId) -> Result<()> {
        self.require_on_zone(task, Permission::Admin, "remove-replica")?;
        let id = task.zone();
        if node == self.node_id() {
            return Err(KernelError::Invalid(format!(
                "node {node} cannot remove itself from zone {id}; ask another member"
            )));
        }
        let zone = self.zone(id)?;
        let status = zone.driver.status().await?;
        if !status.voters.contains(&node) && !status.learners.contains(&node) {
            return Err(KernelError::NotFound(format!(
                "node {node} is not a member of zone {id}"
            )));
        }
        let heir = status
            .voters
            .iter()
            .copied()
            .find(|v| *v != node && zone.members.role(*v) == Some(Role::Voter))
            .ok_or_else(|| {
                KernelError::Invalid(format!(
                    "node {node} holds the last copy of zone {id}'s state; add another \
                     replica first"
                ))
            })?;
        let deadline = Instant::now() + HANDOVER;
        while zone.driver.status().await?.leader == node {
            if Instant::now() > deadline {
                return Err(KernelError::Unavailable(format!(
                    "zone {id}: leadership did not move off node {node} within {HANDOVER:?}; retry"
                )));
            }
            zone.driver.transfer_leader(heir).await?;
            tokio::time::sleep(POLL * 5).await;
        }
        let info = MemberInfo::first(Role::Voter);
        self.change_members(task, MemberChange::Remove, node, info)
            .await?;
        self.audit(task, id, "remove-replica", &node.to_string(), "ok");
        Ok(())
    }

    /// Deletes this node's replica of `id` at the request of node `by`:
    /// the member that committed this node's removal tells it to go (a
    /// removed replica may never learn of its removal through the log).
    /// Only between nodes: `by` is the node its certificate proves, and it
    /// must be another member of the group as this replica knows it.
    pub fn leave_zone_for(&self, id: &ZoneId, by: ReplicaId) -> Result<()> {
        let zone = self.zone(id)?;
        if by == self.node_id() || zone.members.info(by).is_none() {
            self.audit_node(by, id, "leave-zone", "denied");
            return Err(KernelError::Access(format!(
                "node {by} is not another member of zone {id}: it cannot remove node {}'s replica",
                self.node_id()
            )));
        }
        self.drop_local_replica(id)?;
        self.audit_node(by, id, "leave-zone", "ok");
        Ok(())
    }

    /// The zone's status as seen by its leader, which this node must be.
    async fn leader_status(&self, task: &Task) -> Result<ZoneStatus> {
        let s = self.zone(task.zone())?.driver.status().await?;
        if s.role != "leader" {
            return Err(KernelError::Unavailable(format!(
                "node {} does not lead zone {} (leader: {}); ask the leader",
                self.node_id(),
                task.zone(),
                s.leader
            )));
        }
        Ok(s)
    }
}
