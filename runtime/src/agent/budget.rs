//! Host memory an agent makes the node hold outside its own linear
//! memory (invariant 7): pipe rings it has ends of, `wasi:http` fields it
//! built, directory listings it reads. Each is charged before it is kept,
//! against the agent's budget (its `--memory`, the same figure that bounds
//! what it holds inside) and the node's (every agent's together), and
//! given back when the resource goes. Over either budget is an error the
//! guest sees (or a trap, where its interface has no such error), never
//! host growth.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nexus_kernel::KernelError;

/// Host memory all agents of a node may hold at once by default.
pub const NODE_HOST_MEMORY: u64 = 4 << 30;

/// A limit and what is charged against it.
#[derive(Debug)]
struct Account {
    limit: u64,
    used: AtomicU64,
}

impl Account {
    fn new(limit: u64) -> Self {
        Account {
            limit,
            used: AtomicU64::new(0),
        }
    }

    /// Adds `bytes` if they fit; what was used before, or `Err` with it.
    fn take(&self, bytes: u64) -> Result<u64, u64> {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(bytes).filter(|n| *n <= self.limit)
            })
    }

    fn give(&self, bytes: u64) {
        let before = self.used.fetch_sub(bytes, Ordering::SeqCst);
        debug_assert!(before >= bytes, "gave back more than was taken");
    }
}

/// The host memory every agent of a node holds, together.
#[derive(Debug)]
pub struct NodeMemory(Account);

impl NodeMemory {
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(NodeMemory(Account::new(limit)))
    }

    pub fn used(&self) -> u64 {
        self.0.used.load(Ordering::SeqCst)
    }
}

/// One agent's host memory, inside its node's.
#[derive(Debug)]
pub struct HostMemory {
    agent: Account,
    node: Arc<NodeMemory>,
}

impl HostMemory {
    pub fn new(limit: u64, node: Arc<NodeMemory>) -> Arc<Self> {
        Arc::new(HostMemory {
            agent: Account::new(limit),
            node,
        })
    }

    /// Charges `bytes` for `what` (named in the refusal) until the charge
    /// is dropped.
    pub fn charge(self: &Arc<Self>, bytes: u64, what: &str) -> Result<Charge, KernelError> {
        self.take(bytes, what)?;
        Ok(Charge {
            memory: self.clone(),
            bytes,
        })
    }

    /// A charge of nothing yet, to be resized as what it covers grows.
    pub fn empty_charge(self: &Arc<Self>) -> Charge {
        Charge {
            memory: self.clone(),
            bytes: 0,
        }
    }

    fn take(&self, bytes: u64, what: &str) -> Result<(), KernelError> {
        if let Err(used) = self.agent.take(bytes) {
            return Err(KernelError::Quota(format!(
                "{what} of {bytes} bytes would pass this agent's host memory: {used} of {} bytes \
                 (its memory limit) are held",
                self.agent.limit
            )));
        }
        if let Err(used) = self.node.0.take(bytes) {
            self.agent.give(bytes);
            return Err(KernelError::Quota(format!(
                "{what} of {bytes} bytes would pass the node's host memory for agents: {used} of \
                 {} bytes are held",
                self.node.0.limit
            )));
        }
        Ok(())
    }

    fn give(&self, bytes: u64) {
        self.agent.give(bytes);
        self.node.0.give(bytes);
    }
}

/// Bytes held for an agent; given back on drop.
#[derive(Debug)]
pub struct Charge {
    memory: Arc<HostMemory>,
    bytes: u64,
}

impl Charge {
    /// The same budget charged `bytes` more.
    pub fn another(&self, bytes: u64, what: &str) -> Result<Charge, KernelError> {
        self.memory.charge(bytes, what)
    }

    /// Holds `bytes` from now on instead: a growth is charged (or refused,
    /// leaving the charge as it was), a shrink given back.
    pub fn resize(&mut self, bytes: u64, what: &str) -> Result<(), KernelError> {
        if bytes > self.bytes {
            self.memory.take(bytes - self.bytes, what)?;
        } else {
            self.memory.give(self.bytes - bytes);
        }
        self.bytes = bytes;
        Ok(())
    }
}

impl Charge {
    /// Gives back all but `bytes` (never more than is held).
    pub fn shrink(&mut self, bytes: u64) {
        let bytes = bytes.min(self.bytes);
        self.memory.give(self.bytes - bytes);
        self.bytes = bytes;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.memory.give(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_count_against_the_agent_and_the_node_until_dropped() {
        let node = NodeMemory::new(100);
        let a = HostMemory::new(60, node.clone());
        let b = HostMemory::new(60, node.clone());
        let ca = a.charge(50, "a pipe").unwrap();
        let err = a.charge(20, "a pipe").unwrap_err().to_string();
        assert!(err.contains("this agent's host memory: 50 of 60"), "{err}");
        let mut cb = b.charge(40, "fields").unwrap();
        let err = b.charge(20, "fields").unwrap_err().to_string();
        assert!(
            err.contains("the node's host memory for agents: 90 of 100"),
            "{err}"
        );
        // A refusal by the node takes nothing from the agent either.
        assert!(b.charge(10, "fields").is_ok());
        assert!(cb.resize(70, "fields").is_err());
        assert_eq!(node.used(), 90);
        cb.resize(5, "fields").unwrap();
        assert_eq!(node.used(), 55);
        drop(ca);
        drop(cb);
        assert_eq!(node.used(), 0);
        let again = a.charge(60, "a pipe").unwrap();
        assert_eq!(node.used(), 60);
        drop(again);
    }
}
