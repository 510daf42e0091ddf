//! Who is calling: principals, capability sets, and the `Task` (the process
//! control block) that every kernel entry point takes (invariant 3).

use serde::{Deserialize, Serialize};

use crate::error::{KernelError, Result};
use crate::types::ZoneId;

/// A named actor: `user:NAME`, `agent:NAME` or `node:ID`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Principal {
    User(String),
    Agent(String),
    Node(String),
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

impl Principal {
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            KernelError::Invalid(format!(
                "principal {s:?}: use user:NAME, agent:NAME or node:ID (NAME from A-Z a-z 0-9 - _ . @)"
            ))
        };
        let (kind, name) = s.split_once(':').ok_or_else(bad)?;
        if !valid_name(name) {
            return Err(bad());
        }
        match kind {
            "user" => Ok(Principal::User(name.into())),
            "agent" => Ok(Principal::Agent(name.into())),
            "node" => Ok(Principal::Node(name.into())),
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::User(n) => write!(f, "user:{n}"),
            Principal::Agent(n) => write!(f, "agent:{n}"),
            Principal::Node(n) => write!(f, "node:{n}"),
        }
    }
}

/// The four permissions, also the capability bits of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Permission {
    Read,
    Write,
    Enter,
    Admin,
    /// Send requests to a `host:` destination (egress).
    Fetch,
}

impl Permission {
    pub const ALL: [Permission; 5] = [
        Permission::Read,
        Permission::Write,
        Permission::Enter,
        Permission::Admin,
        Permission::Fetch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Enter => "enter",
            Permission::Admin => "admin",
            Permission::Fetch => "fetch",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                KernelError::Invalid(format!(
                    "permission {s:?}: use read, write, enter, admin or fetch"
                ))
            })
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of permissions a task may exercise at most, whatever ReBAC grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Capabilities(u8);

impl Capabilities {
    pub const ALL: Capabilities = Capabilities(0b1_1111);
    pub const NONE: Capabilities = Capabilities(0);

    pub fn of(perms: &[Permission]) -> Self {
        Capabilities(perms.iter().fold(0, |acc, p| acc | p.bit()))
    }

    /// Parses `read,write` (or `all`).
    pub fn parse(s: &str) -> Result<Self> {
        if s == "all" {
            return Ok(Capabilities::ALL);
        }
        let perms = s
            .split(',')
            .filter(|p| !p.is_empty())
            .map(Permission::parse)
            .collect::<Result<Vec<_>>>()?;
        Ok(Capabilities::of(&perms))
    }

    pub fn allows(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }

    pub fn contains(self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::fmt::Display for Capabilities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = Permission::ALL
            .into_iter()
            .filter(|p| self.allows(*p))
            .map(|p| p.as_str())
            .collect();
        f.write_str(&names.join(","))
    }
}

/// Process id of a task, unique within a node's lifetime.
pub type Pid = u64;

/// The process control block: bound when the task is spawned, never changed.
/// Only the kernel constructs one (see `Kernel::spawn_task`), so holding a
/// `Task` means the kernel bound that identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pid: Pid,
    principal: Principal,
    zone: ZoneId,
    caps: Capabilities,
    parent: Option<Pid>,
    /// The zones a token bound its holder to (its own and those it names);
    /// `None`: not bound by a token (the data directory's operator, or an
    /// agent it runs), so the gate alone decides where mounts lead.
    reach: Option<Vec<ZoneId>>,
}

impl Task {
    pub(crate) fn new(
        pid: Pid,
        principal: Principal,
        zone: ZoneId,
        caps: Capabilities,
        parent: Option<Pid>,
        reach: Option<Vec<ZoneId>>,
    ) -> Self {
        Task {
            pid,
            principal,
            zone,
            caps,
            parent,
            reach,
        }
    }

    /// Whether a mount may lead this task into `zone` (the gate still
    /// decides, with `enter`): always, unless a token bound the task to
    /// zones that do not include it.
    pub fn may_reach(&self, zone: &ZoneId) -> bool {
        *zone == self.zone
            || self
                .reach
                .as_ref()
                .is_none_or(|reach| reach.iter().any(|z| z == zone))
    }

    /// The task as a write forwarded to a zone's leader names it.
    pub(crate) fn actor(&self) -> crate::consensus::forward::Actor {
        crate::consensus::forward::Actor::Task {
            principal: self.principal.clone(),
            zone: self.zone.clone(),
            caps: self.caps,
            reach: self.reach.clone(),
        }
    }

    pub(crate) fn reach(&self) -> Option<&Vec<ZoneId>> {
        self.reach.as_ref()
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    pub fn zone(&self) -> &ZoneId {
        &self.zone
    }

    pub fn caps(&self) -> Capabilities {
        self.caps
    }

    pub fn parent(&self) -> Option<Pid> {
        self.parent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_parse_and_print() {
        for s in [
            "user:alice",
            "agent:bot-1",
            "node:3",
            "user:a.b@example.org",
        ] {
            assert_eq!(Principal::parse(s).unwrap().to_string(), s);
        }
        for bad in ["alice", "group:eng", "user:", "user:a b", "agent:x#y"] {
            assert!(Principal::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn capabilities_parse_and_narrow() {
        let rw = Capabilities::parse("read,write").unwrap();
        assert!(rw.allows(Permission::Read) && !rw.allows(Permission::Admin));
        assert!(Capabilities::ALL.contains(rw) && !rw.contains(Capabilities::ALL));
        assert_eq!(rw.to_string(), "read,write");
        assert!(Capabilities::parse("read,fly").is_err());
    }
}
