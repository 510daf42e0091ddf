//! The gate for egress: may a task send a request to a destination, and
//! which secret headers go with it. The runtime's `wasi:http` asks here
//! before it resolves a name; the secrets it gets back never reach the
//! agent.

use crate::access::host::Destination;
use crate::access::identity::{Permission, Task};
use crate::access::secret::{self, SecretHeader};
use crate::error::{KernelError, Result};
use crate::kernel::Kernel;
use crate::zone::command::ZoneCommand;

/// Destinations with secrets a zone may hold at most.
pub const MAX_SECRET_DESTINATIONS: usize = 1024;

/// A request the gate let through.
#[derive(Debug)]
pub struct EgressPass {
    /// From the granting tuple to the destination.
    pub proof: Vec<String>,
    /// The headers to set on the request (the most specific destination
    /// with secrets: the destination itself, else its nearest wildcard).
    pub secrets: Vec<SecretHeader>,
}

/// A destination with secrets (its object, `host:…`), as `nexus secret
/// list` shows it: the header names, never their values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRow {
    pub destination: String,
    pub headers: Vec<String>,
}

impl Kernel {
    /// Whether `task` may send a request to `dest` (`fetch` on its
    /// `host:` object or a wildcard above it, and the capability). A
    /// denial says why and the grant that would allow it; the caller
    /// audits the request either way.
    pub fn egress(&self, task: &Task, dest: &Destination) -> Result<EgressPass> {
        let zone = task.zone();
        let object = dest.object();
        let d = self.check(task, zone, &object, Permission::Fetch)?;
        if !d.allowed {
            let why = match d.proof.first() {
                Some(reason) => format!(" ({reason})"),
                None => String::new(),
            };
            return Err(KernelError::Access(format!(
                "{} may not fetch {object} in zone {zone}{why}; to allow it: \
                 nexus grant --zone {zone} {} fetch {object}",
                task.principal(),
                task.principal()
            )));
        }
        let state = self.zone_state(zone)?;
        let mut at = Some(dest.clone());
        let mut secrets = Vec::new();
        while let Some(d) = at {
            if let Some(found) = state.secret(&d.object())? {
                secrets = found;
                break;
            }
            at = d.wildcard_parent();
        }
        Ok(EgressPass {
            proof: d.proof,
            secrets,
        })
    }

    /// Binds `headers` to `dest` in the task's zone (none removes them).
    /// Needs `admin` on the zone. Returns the zone revision with it.
    pub async fn set_secret(
        &self,
        task: &Task,
        dest: &Destination,
        headers: Vec<SecretHeader>,
    ) -> Result<u64> {
        let zone = task.zone().clone();
        let destination = dest.object();
        secret::validate(&destination, &headers)?;
        self.require_on_zone(task, Permission::Admin, "set secrets of")?;
        let z = self.zone(&zone)?;
        if !headers.is_empty()
            && z.state.secret(&destination)?.is_none()
            && z.state.secrets().count() >= MAX_SECRET_DESTINATIONS
        {
            return Err(KernelError::NoSpace(format!(
                "zone {zone} already holds secrets for {MAX_SECRET_DESTINATIONS} destinations"
            )));
        }
        let op = if headers.is_empty() {
            "remove-secret"
        } else {
            "set-secret"
        };
        let cmd = ZoneCommand::SetSecret {
            destination: destination.clone(),
            headers,
        };
        let r = z.propose(&task.actor(), cmd).await;
        self.audited(task, &zone, op, &destination.to_string(), r)?;
        z.state.applied_index()
    }

    /// The destinations of the task's zone with secrets, and their header
    /// names. Needs `admin` on the zone.
    pub fn secrets(&self, task: &Task) -> Result<Vec<SecretRow>> {
        self.require_on_zone(task, Permission::Admin, "list secrets of")?;
        self.zone_state(task.zone())?
            .secrets()
            .map(|r| {
                let (destination, headers) = r?;
                Ok(SecretRow {
                    destination,
                    headers: headers.into_iter().map(|h| h.name).collect(),
                })
            })
            .collect()
    }

    /// Records a request an agent made (or was refused), with what the
    /// runtime measured.
    pub fn audit_egress(&self, task: &Task, op: &str, target: &str, result: &str) {
        self.audit(task, task.zone(), op, target, result);
    }
}
