//! The gate: every kernel entry point asks it before acting (invariant 3).
//!
//! Deny by default. A task may exercise a permission only if its capability
//! set includes it AND the zone's ReBAC tuples grant it to the task's
//! principal. Decisions are cached per (zone, principal, object,
//! permission) together with the zone's auth revision; a cached decision is
//! used only while that revision is unchanged, so it is never older than
//! the state the caller sees, and a revocation takes effect for the next
//! operation.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::access::audit::AuditRecord;
use crate::access::identity::{Capabilities, Permission, Principal, Task};
use crate::access::rebac::{
    parent_object, Decision, Evaluator, Name, Namespace, ObjectRef, Relation, Subject, Tuple,
    TupleSource,
};
use crate::error::{KernelError, Result};
use crate::kernel::Kernel;
use crate::types::ZoneId;
use crate::types::{now, ReplicaId};
use crate::zone::command::ZoneCommand;
use crate::zone::state::ZoneState;

/// Cached decisions at most, per node.
const CACHE_MAX: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey {
    zone: ZoneId,
    principal: Principal,
    object: ObjectRef,
    perm: Permission,
}

pub(crate) type PermCache = HashMap<CacheKey, (Arc<Decision>, u64)>;

/// The current path of inode `ino`, found by walking up its parents (for
/// display; `None` if it is gone).
fn path_of(state: &ZoneState, ino: crate::types::Ino) -> Result<Option<String>> {
    let mut names = Vec::new();
    let mut cur = ino;
    while cur != crate::types::ROOT_INO {
        let Some(inode) = state.inode(cur)? else {
            return Ok(None);
        };
        let mut cursor: Option<String> = None;
        let name = loop {
            let page = state.list(inode.parent, cursor.as_deref(), 1024)?;
            if let Some(e) = page.iter().find(|e| e.ino == cur) {
                break Some(e.name.clone());
            }
            match page.last() {
                Some(last) if page.len() == 1024 => cursor = Some(last.name.clone()),
                _ => break None,
            }
        };
        let Some(name) = name else {
            return Ok(None);
        };
        names.push(name);
        cur = inode.parent;
    }
    names.reverse();
    Ok(Some(format!("/{}", names.join("/"))))
}

/// A zone's tuples and tree, as the evaluator reads them, and (for cached
/// checks) the permission cache at the current auth revision.
struct ZoneTuples<'a> {
    zone: &'a ZoneId,
    state: &'a ZoneState,
    cache: Option<CacheView<'a>>,
}

struct CacheView<'a> {
    cache: &'a Mutex<PermCache>,
    principal: &'a Principal,
    revision: u64,
}

impl CacheView<'_> {
    fn key(&self, zone: &ZoneId, object: &ObjectRef, perm: Permission) -> CacheKey {
        CacheKey {
            zone: zone.clone(),
            principal: self.principal.clone(),
            object: object.clone(),
            perm,
        }
    }
}

impl TupleSource for ZoneTuples<'_> {
    fn has(&self, object: &ObjectRef, relation: Relation, who: &Principal) -> Result<bool> {
        self.state.has_tuple(object, relation, who)
    }

    fn usersets(&self, object: &ObjectRef, relation: Relation) -> Result<Vec<Subject>> {
        self.state.usersets(object, relation)
    }

    fn known(&self, object: &ObjectRef, perm: Permission) -> Option<Arc<Decision>> {
        let view = self.cache.as_ref()?;
        let cache = view.cache.lock().unwrap_or_else(|p| p.into_inner());
        match cache.get(&view.key(self.zone, object, perm)) {
            Some((d, rev)) if *rev == view.revision => Some(d.clone()),
            _ => None,
        }
    }

    fn learned(&self, object: &ObjectRef, perm: Permission, proof: &[String]) {
        if let Some(view) = &self.cache {
            let d = Arc::new(Decision {
                allowed: true,
                proof: proof.to_vec(),
            });
            let key = view.key(self.zone, object, perm);
            view.cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key, (d, view.revision));
        }
    }

    fn parent_of(&self, object: &ObjectRef) -> Result<Option<ObjectRef>> {
        let Some(ino) = object.ino() else {
            return Ok(crate::access::host::parent_object(object));
        };
        Ok(self
            .state
            .inode(ino)?
            .map(|inode| parent_object(self.zone, ino, inode.parent)))
    }
}

/// Audit records one `audit_tail` returns at most.
pub const AUDIT_PAGE: i64 = 1000;

/// Who asks for a token to be signed.
pub struct Issuer {
    pub principal: Principal,
    pub caps: Capabilities,
    /// The zone a token-holding issuer is bound to; `None` for the node's
    /// operator (or someone acting with `--as` on the data directory).
    pub bound_to: Option<ZoneId>,
    /// The other zones a token-holding issuer's token names.
    pub reach: Vec<ZoneId>,
}

impl Kernel {
    /// Binds an identity to a new task in `zone`. The zone must exist.
    pub fn spawn_task(
        &self,
        principal: Principal,
        zone: &ZoneId,
        caps: Capabilities,
    ) -> Result<Task> {
        let record = self.zone_record(zone)?;
        let me = self.node_id();
        if record.role_of(me) == Some(crate::consensus::replica::Role::Witness) {
            // Nothing to read or check here: the state lives on the voters.
            return Err(KernelError::Unavailable(format!(
                "node {me} keeps only the log of zone {zone} (a witness); ask a voter"
            )));
        }
        let pid = self.next_pid.fetch_add(1, Ordering::Relaxed);
        Ok(Task::new(pid, principal, zone.clone(), caps, None, None))
    }

    /// A task for the holder of a verified token: its principal, zone and
    /// capabilities, bound to the zones the token names.
    pub fn spawn_holder_task(&self, claims: &crate::access::token::Claims) -> Result<Task> {
        let reach = claims.reach.clone();
        self.spawn_bound_task(claims.principal.clone(), &claims.zone, claims.caps, reach)
    }

    /// A task bound by a token to `zone` and the zones in `reach`: a mount
    /// into any other zone is refused to it (and to its children).
    pub fn spawn_bound_task(
        &self,
        principal: Principal,
        zone: &ZoneId,
        caps: Capabilities,
        reach: Vec<ZoneId>,
    ) -> Result<Task> {
        let task = self.spawn_task(principal, zone, caps)?;
        Ok(Task::new(
            task.pid(),
            task.principal().clone(),
            task.zone().clone(),
            task.caps(),
            None,
            Some(reach),
        ))
    }

    /// Verifies a token (this node's key, intact, unexpired, not revoked
    /// by the operator) and, where this node serves the token's zone, that
    /// the zone's admins have not revoked it (a revocation replicated with
    /// the zone, so every node serving it refuses the token).
    pub fn verify_token(&self, token: &str) -> Result<crate::access::token::Claims> {
        let claims = self.tokens().verify(token)?;
        // (A witness applies nothing, so its state holds no revocations;
        // it refuses every task anyway.)
        if let Ok(zone) = self.zone(&claims.zone) {
            if zone.state.token_revoked(&claims.id)? {
                return Err(KernelError::Access(format!(
                    "token {} has been revoked in zone {}",
                    claims.id, claims.zone
                )));
            }
        }
        Ok(claims)
    }

    /// Signs a token for `subject` (default: the issuer) in `zone`, also
    /// reaching the zones in `reach` through mounts. Only an admin of
    /// each named zone hands out identities in it, never with more
    /// capabilities than the issuer's own task holds there, and a token's
    /// holder never names a zone its own token does not. A zone this node
    /// does not serve yet (a cluster zone about to be created through a
    /// node) has no admin: the operator (an issuer not bound by a token)
    /// may issue for it.
    pub fn issue_token(
        &self,
        issuer: &Issuer,
        subject: Option<Principal>,
        zone: &ZoneId,
        reach: Vec<ZoneId>,
        caps: Capabilities,
        lifetime: Duration,
    ) -> Result<(String, crate::access::token::Claims)> {
        for named in std::iter::once(zone).chain(&reach) {
            self.may_issue_in(issuer, named, caps)?;
        }
        let subject = subject.unwrap_or_else(|| issuer.principal.clone());
        let secs = i64::try_from(lifetime.as_secs())
            .map_err(|_| KernelError::Invalid("token lifetime too long".into()))?;
        self.tokens()
            .issue(subject, zone.clone(), reach, caps, secs)
    }

    /// Whether `issuer` may name `zone` in a token with `caps`.
    fn may_issue_in(&self, issuer: &Issuer, zone: &ZoneId, caps: Capabilities) -> Result<()> {
        let bootstrap = issuer.bound_to.is_none()
            && matches!(self.zone_record(zone), Err(KernelError::ZoneNotFound(_)));
        let held = if bootstrap {
            issuer.caps
        } else {
            if let Some(bound) = &issuer.bound_to {
                if bound != zone && !issuer.reach.contains(zone) {
                    return Err(KernelError::Access(format!(
                        "the token is for zone {bound}, not {zone}"
                    )));
                }
            }
            let task = self.spawn_task(issuer.principal.clone(), zone, issuer.caps)?;
            let admin = self.check(&task, zone, &ObjectRef::zone(zone), Permission::Admin)?;
            if !admin.allowed {
                return Err(KernelError::Access(format!(
                    "{} may not issue tokens for zone {zone} (needs admin on it)",
                    task.principal()
                )));
            }
            task.caps()
        };
        if !held.contains(caps) {
            return Err(KernelError::Access(format!(
                "cannot grant capabilities {caps} beyond your own"
            )));
        }
        Ok(())
    }

    /// The audit records of the task's zone in this node's record store
    /// (after record `after`, oldest first; or the newest), at most
    /// [`AUDIT_PAGE`]. Needs `admin` on the zone: the log shows what every
    /// principal did.
    pub async fn audit_tail(
        &self,
        task: &Task,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<crate::access::audit::StoredRecord>> {
        self.require_on_zone(task, Permission::Admin, "audit")?;
        let sink = self.audit.get().ok_or_else(|| {
            KernelError::Unavailable(format!("node {} keeps no audit log", self.node_id()))
        })?;
        let zone = task.zone().to_string();
        let limit = limit.clamp(0, AUDIT_PAGE);
        sink.store().tail(Some(&zone), after, limit).await
    }

    /// Revokes a token of the task's zone on every node serving the zone
    /// (through the zone's log). Needs `admin` on the zone.
    pub async fn revoke_token(&self, task: &Task, id: &str) -> Result<()> {
        crate::access::token::check_id(id)?;
        self.require_on_zone(task, Permission::Admin, "revoke-token")?;
        let id = id.to_owned();
        self.zone(task.zone())?
            .propose(
                &task.actor(),
                crate::zone::command::ZoneCommand::RevokeToken { id: id.clone() },
            )
            .await?;
        self.audit(task, task.zone(), "revoke-token", &id, "ok");
        Ok(())
    }

    /// A child of `parent`: same principal and zone, at most its capabilities.
    pub fn spawn_child(&self, parent: &Task, caps: Capabilities) -> Result<Task> {
        if !parent.caps().contains(caps) {
            return Err(KernelError::Access(format!(
                "a child task cannot widen its parent's capabilities ({} does not include {caps})",
                parent.caps()
            )));
        }
        let pid = self.next_pid.fetch_add(1, Ordering::Relaxed);
        Ok(Task::new(
            pid,
            parent.principal().clone(),
            parent.zone().clone(),
            caps,
            Some(parent.pid()),
            parent.reach().cloned(),
        ))
    }

    pub(crate) fn forget_zone_decisions(&self, zone: &ZoneId) {
        self.perm_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| &k.zone != zone);
    }

    /// Decides `perm` for `who` on `object` in `zone`, bypassing the cache.
    pub fn evaluate(
        &self,
        zone: &ZoneId,
        who: &Principal,
        object: &ObjectRef,
        perm: Permission,
    ) -> Result<Decision> {
        let state = self.zone_state(zone)?;
        let src = ZoneTuples {
            zone,
            state: &state,
            cache: None,
        };
        Evaluator::new(&src).check(object, Name::Perm(perm), who)
    }

    /// Decides `perm` for `task` on `object` in `zone` (cached).
    pub fn check(
        &self,
        task: &Task,
        zone: &ZoneId,
        object: &ObjectRef,
        perm: Permission,
    ) -> Result<Decision> {
        Ok(self.decide(task, zone, object, perm)?.as_ref().clone())
    }

    /// The cached decision, shared: a cache hit copies no proof.
    fn decide(
        &self,
        task: &Task,
        zone: &ZoneId,
        object: &ObjectRef,
        perm: Permission,
    ) -> Result<Arc<Decision>> {
        if !task.caps().allows(perm) {
            return Ok(Arc::new(Decision {
                allowed: false,
                proof: vec![format!(
                    "task {} lacks the {} capability",
                    task.pid(),
                    perm.as_str()
                )],
            }));
        }
        let zone_state = self.zone(zone)?.state.clone();
        let revision = zone_state.auth_revision()?;
        let key = CacheKey {
            zone: zone.clone(),
            principal: task.principal().clone(),
            object: object.clone(),
            perm,
        };
        if let Some((d, rev)) = self
            .perm_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            if *rev == revision {
                return Ok(d.clone());
            }
        }
        let src = ZoneTuples {
            zone,
            state: &zone_state,
            cache: Some(CacheView {
                cache: &self.perm_cache,
                principal: task.principal(),
                revision,
            }),
        };
        let decision =
            Arc::new(Evaluator::new(&src).check(object, Name::Perm(perm), task.principal())?);
        let mut cache = self.perm_cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, (decision.clone(), revision));
        Ok(decision)
    }

    /// Like [`Kernel::check`], but first waits until the zone has applied at
    /// least `revision` (a consistency token from an earlier write).
    pub async fn check_at(
        &self,
        task: &Task,
        zone: &ZoneId,
        object: &ObjectRef,
        perm: Permission,
        revision: u64,
    ) -> Result<Decision> {
        self.zone(zone)?
            .driver
            .wait_applied(revision, Duration::from_secs(10))
            .await?;
        self.check(task, zone, object, perm)
    }

    /// Refuses with `access` (and an audit record) unless `task` may `perm`.
    pub(crate) fn require(
        &self,
        task: &Task,
        zone: &ZoneId,
        object: &ObjectRef,
        perm: Permission,
        op: &str,
        path: &str,
    ) -> Result<()> {
        if self.decide(task, zone, object, perm)?.allowed {
            return Ok(());
        }
        self.audit(task, zone, op, path, "denied");
        Err(KernelError::Access(format!(
            "{} may not {} {path} in zone {zone} (needs {} on {object})",
            task.principal(),
            op,
            perm.as_str()
        )))
    }

    /// Refuses unless `task` may `perm` its own zone as a whole.
    pub(crate) fn require_on_zone(&self, task: &Task, perm: Permission, op: &str) -> Result<()> {
        let zone = task.zone();
        self.require(task, zone, &ObjectRef::zone(zone), perm, op, "/")
    }

    /// Records an event if an audit log is attached.
    pub(crate) fn audit(&self, task: &Task, zone: &ZoneId, op: &str, path: &str, result: &str) {
        let principal = task.principal().to_string();
        self.record(task.pid(), principal, zone, op, path, result);
    }

    /// Records what another node asked of this one (a membership call
    /// between nodes, authenticated by the caller's certificate): the
    /// principal is `node:ID`, with no task.
    pub fn audit_node(&self, by: ReplicaId, zone: &ZoneId, op: &str, result: &str) {
        self.record(0, format!("node:{by}"), zone, op, "/", result);
    }

    fn record(
        &self,
        pid: u64,
        principal: String,
        zone: &ZoneId,
        op: &str,
        path: &str,
        result: &str,
    ) {
        if let Some(sink) = self.audit.get() {
            sink.record(AuditRecord {
                time: now(),
                zone: zone.to_string(),
                pid,
                principal,
                op: op.to_owned(),
                path: path.to_owned(),
                result: result.to_owned(),
            });
        }
    }

    /// Records a mutation's outcome and passes it through.
    pub(crate) fn audited<T>(
        &self,
        task: &Task,
        zone: &ZoneId,
        op: &str,
        path: &str,
        r: Result<T>,
    ) -> Result<T> {
        let result = match &r {
            Ok(_) => "ok",
            // Denials were recorded where they were decided.
            Err(KernelError::Access(_)) => return r,
            Err(e) => e.code().as_str(),
        };
        self.audit(task, zone, op, path, result);
        r
    }

    /// The object whose `admin` a change of tuple `t` in `zone` needs
    /// (the zone, for groups); refuses a malformed tuple or another zone.
    pub(crate) fn tuple_guard(&self, zone: &ZoneId, t: &Tuple) -> Result<ObjectRef> {
        t.validate()?;
        match t.object.ns {
            Namespace::Group | Namespace::Host => Ok(ObjectRef::zone(zone)),
            Namespace::Zone if t.object != ObjectRef::zone(zone) => Err(KernelError::Invalid(
                format!("{} is not this task's zone {zone}", t.object),
            )),
            _ => Ok(t.object.clone()),
        }
    }

    /// Adds and removes tuples in the task's zone, atomically through its
    /// Raft log. Needs `admin` on each object (on the zone, for groups).
    /// Returns the zone revision that includes the change.
    pub async fn write_tuples(
        &self,
        task: &Task,
        insert: Vec<Tuple>,
        delete: Vec<Tuple>,
    ) -> Result<u64> {
        let zone = task.zone().clone();
        let mut described = Vec::new();
        for t in insert.iter().chain(&delete) {
            let guarded = self.tuple_guard(&zone, t)?;
            self.require(
                task,
                &zone,
                &guarded,
                Permission::Admin,
                "change tuples of",
                &t.object.to_string(),
            )?;
            described.push(t.to_string());
        }
        let z = self.zone(&zone)?;
        let r = z
            .propose(&task.actor(), ZoneCommand::WriteTuples { insert, delete })
            .await;
        let r = self.audited(task, &zone, "write-tuples", &described.join(" "), r);
        r?;
        z.state.applied_index()
    }

    /// Every tuple of the task's zone, with the current path of each inode
    /// object. Needs `read` on the zone.
    pub fn tuples(&self, task: &Task) -> Result<Vec<(Tuple, Option<String>)>> {
        let zone = task.zone();
        self.require_on_zone(task, Permission::Read, "list tuples of")?;
        let state = self.zone_state(zone)?;
        state
            .all_tuples()
            .map(|t| {
                let t = t?;
                let path = match t.object.ino() {
                    Some(ino) => path_of(&state, ino)?,
                    None => None,
                };
                Ok((t, path))
            })
            .collect()
    }

    /// Whether `who` has `perm` on `object` in the asker's zone, and why,
    /// evaluated afresh once the zone has applied `at_least` (if given).
    /// Asking about anyone but yourself needs `admin` on the zone.
    pub async fn explain(
        &self,
        asker: &Task,
        who: &Principal,
        object: &ObjectRef,
        perm: Permission,
        at_least: Option<u64>,
    ) -> Result<Decision> {
        let zone = asker.zone();
        if who != asker.principal() {
            self.require_on_zone(asker, Permission::Admin, "inspect access in")?;
        }
        if let Some(rev) = at_least {
            self.zone(zone)?
                .driver
                .wait_applied(rev, Duration::from_secs(10))
                .await?;
        }
        self.evaluate(zone, who, object, perm)
    }

    /// The object a path names, for grants: resolved as `task`.
    pub fn object_at(&self, task: &Task, path: &str) -> Result<(ZoneId, ObjectRef)> {
        let h = self.resolve(task, path, false)?;
        Ok((h.zone_id().clone(), ObjectRef::inode(h.kind, h.ino)))
    }
}
