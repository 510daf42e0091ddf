//! The leader's gate for writes other nodes forward to it
//! (`consensus::forward`).
//!
//! The forwarding node gated the operation already, against its own state;
//! the leader checks the command again, as the task that asked for it,
//! against its state, which has every committed change (a grant revoked a
//! moment ago on any node counts here). Each command needs what the
//! operation that makes it needs (see `files::vfs` and `access::gate`),
//! but `enter` on a mount's target zone only if this node serves it (a
//! mount is gated again wherever it is crossed); a node on its own account may only found a zone's root and checkpoint a
//! pipe. A refusal is audited here and answered to the forwarding node, so
//! the caller hears why.

use crate::access::identity::{Permission, Task};
use crate::access::rebac::ObjectRef;
use crate::consensus::driver::Proposed;
use crate::consensus::forward::{Actor, Forwarded, Outcome, Proposal};
use crate::error::{KernelError, Result};
use crate::kernel::{Kernel, Zone};
use crate::types::{FileKind, Ino, ReplicaId};
use crate::zone::command::{NewInode, ZoneCommand};

impl Kernel {
    /// Takes a write node `from` (as its certificate proves) forwarded: an
    /// encoded [`Forwarded`], gated as its actor, proposed if this node
    /// leads. Returns the encoded [`Outcome`]; nothing a peer sends panics.
    pub async fn take_forwarded(&self, from: ReplicaId, write: &[u8]) -> Vec<u8> {
        let outcome = match self.forwarded(from, write).await {
            Ok(Proposed::Applied { index, applied }) => Outcome::Applied { index, applied },
            Ok(Proposed::NotLeader(leader)) => Outcome::NotLeader { leader },
            Err(e) => Outcome::failed(&e),
        };
        outcome.encode()
    }

    async fn forwarded(&self, from: ReplicaId, write: &[u8]) -> Result<Proposed> {
        let w = Forwarded::decode(write)?;
        let zone = self.zone(&w.zone)?;
        if from == self.node_id() || zone.members.info(from).is_none() {
            return Err(KernelError::Access(format!(
                "node {from} is not another member of zone {}",
                w.zone
            )));
        }
        self.authorize_forwarded(&zone, from, &w.actor, &w.proposal)?;
        zone.driver.propose_here(w.proposal).await
    }

    /// Whether node `from` may have `proposal` appended to `zone`'s log for
    /// `actor`.
    pub(crate) fn authorize_forwarded(
        &self,
        zone: &Zone,
        from: ReplicaId,
        actor: &Actor,
        proposal: &Proposal,
    ) -> Result<()> {
        match actor {
            Actor::Node => match proposal {
                // The root and owners of a zone being created; a no-op once
                // the root exists.
                Proposal::Command(ZoneCommand::Init { .. }) => Ok(()),
                // Bookkeeping of its collector: drops nothing a file names.
                Proposal::Command(ZoneCommand::Collected { .. }) => Ok(()),
                Proposal::Command(ZoneCommand::PipeCheckpoint { ino, .. }) => {
                    match zone.state.inode(*ino)? {
                        Some(i) if i.kind() != FileKind::Pipe => Err(KernelError::Access(format!(
                            "inode {ino} of zone {} is not a pipe",
                            zone.id
                        ))),
                        _ => Ok(()),
                    }
                }
                // Only the node holding an orphan open reaps it.
                Proposal::Command(ZoneCommand::Reap { ino }) => {
                    match zone.state.orphan_holder(*ino)? {
                        Some(holder) if holder != from => Err(KernelError::Access(format!(
                            "orphan {ino} of zone {} is held by node {holder}, not node {from}",
                            zone.id
                        ))),
                        _ => Ok(()),
                    }
                }
                _ => {
                    self.audit_node(from, &zone.id, "forwarded write", "denied");
                    Err(KernelError::Access(format!(
                        "node {from} may not write to zone {} on its own account",
                        zone.id
                    )))
                }
            },
            Actor::Task {
                principal,
                zone: home,
                caps,
                reach,
            } => {
                let task = Task::new(
                    0,
                    principal.clone(),
                    home.clone(),
                    *caps,
                    None,
                    reach.clone(),
                );
                if !task.may_reach(&zone.id) {
                    self.audit(&task, &zone.id, "forwarded write", "/", "denied");
                    return Err(KernelError::Access(format!(
                        "the token binding {principal} to zone {home} does not name zone {}",
                        zone.id
                    )));
                }
                self.authorize_task(&task, zone, from, proposal)
            }
        }
    }

    fn authorize_task(
        &self,
        task: &Task,
        zone: &Zone,
        from: ReplicaId,
        proposal: &Proposal,
    ) -> Result<()> {
        let on_zone =
            |perm, op| self.require(task, &zone.id, &ObjectRef::zone(&zone.id), perm, op, "/");
        let cmd = match proposal {
            Proposal::Membership { .. } => return on_zone(Permission::Admin, "change members of"),
            Proposal::Command(cmd) => cmd,
        };
        let write = |ino| self.require_on_inode(task, zone, ino, Permission::Write);
        let holds_for = |holder: ReplicaId| {
            if holder == from {
                return Ok(());
            }
            Err(KernelError::Access(format!(
                "node {from} may not keep a file open for node {holder}"
            )))
        };
        let write_child = |parent, name: &str| match zone.state.dentry(parent, name)? {
            Some(d) => write(d.ino),
            None => Ok(()),
        };
        // As the VFS: `write` on the directory and on the entry removed,
        // or on both directories and both entries of a rename.
        let unlink = |parent, name: &str| write(parent).and_then(|()| write_child(parent, name));
        let rename = |sp, sn: &str, dp, dn: &str| {
            write(sp)?;
            write(dp)?;
            write_child(sp, sn)?;
            write_child(dp, dn)
        };
        match cmd {
            ZoneCommand::Init { .. }
            | ZoneCommand::PipeCheckpoint { .. }
            | ZoneCommand::Reap { .. }
            | ZoneCommand::Collected { .. } => {
                self.audit(task, &zone.id, "forwarded write", "/", "denied");
                Err(KernelError::Access(format!(
                    "only a node makes this change to zone {}, not {}",
                    zone.id,
                    task.principal()
                )))
            }
            ZoneCommand::WriteTuples { insert, delete } => {
                for t in insert.iter().chain(delete) {
                    let guarded = self.tuple_guard(&zone.id, t)?;
                    let what = t.object.to_string();
                    self.require(
                        task,
                        &zone.id,
                        &guarded,
                        Permission::Admin,
                        "change tuples of",
                        &what,
                    )?;
                }
                Ok(())
            }
            ZoneCommand::RevokeToken { .. } => on_zone(Permission::Admin, "revoke-token"),
            ZoneCommand::SetQuota { .. } => on_zone(Permission::Admin, "set-quota"),
            ZoneCommand::SetSecret { .. } => on_zone(Permission::Admin, "set-secret"),
            ZoneCommand::Create { parent, new, .. } => {
                write(*parent)?;
                match new {
                    // Crossing a mount is gated on the zone it leads to,
                    // wherever it is crossed: a leader that does not serve
                    // that zone checks the token binding alone.
                    NewInode::Mount { target } if self.zone(target).is_ok() => {
                        self.may_mount(task, target, "(forwarded)")
                    }
                    NewInode::Mount { target } => {
                        self.must_reach(task, target, "mount", "(forwarded)")
                    }
                    _ => Ok(()),
                }
            }
            ZoneCommand::SetContent { ino, .. } | ZoneCommand::SetTimes { ino, .. } => write(*ino),
            ZoneCommand::Rename {
                src_parent,
                src_name,
                dst_parent,
                dst_name,
                ..
            } => rename(*src_parent, src_name, *dst_parent, dst_name),
            ZoneCommand::Remove { parent, name, .. } => unlink(*parent, name),
            // As the VFS: `write` on the directory gaining the name and on
            // the entry linked.
            ZoneCommand::Link {
                src_parent,
                src_name,
                dst_parent,
                ..
            } => write(*dst_parent).and_then(|()| write_child(*src_parent, src_name)),
            // The file stays open on the node that forwards the change.
            ZoneCommand::Orphan {
                parent,
                name,
                holder,
                ..
            } => holds_for(*holder).and_then(|()| unlink(*parent, name)),
            ZoneCommand::Replace {
                src_parent,
                src_name,
                dst_parent,
                dst_name,
                holder,
                ..
            } => holds_for(*holder)
                .and_then(|()| rename(*src_parent, src_name, *dst_parent, dst_name)),
        }
    }

    /// Refuses unless `task` may `perm` inode `ino` of `zone` (which must
    /// exist).
    fn require_on_inode(&self, task: &Task, zone: &Zone, ino: Ino, perm: Permission) -> Result<()> {
        let inode = zone
            .state
            .inode(ino)?
            .ok_or_else(|| KernelError::NotFound(format!("inode {ino} of zone {}", zone.id)))?;
        let object = ObjectRef::inode(inode.kind(), ino);
        self.require(
            task,
            &zone.id,
            &object,
            perm,
            "write",
            &format!("inode {ino}"),
        )
    }
}
