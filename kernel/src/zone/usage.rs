//! What a zone holds, against what it may hold: bytes (regular files'
//! sizes and pipes' capacities, which bound their durable images) and
//! inodes. The state machine keeps the usage as it applies each command
//! and refuses (`no-space`) a command that would grow either past the
//! zone's quota, on every replica alike; a command that shrinks the zone
//! always applies, even over a quota lowered below the usage.

use serde::{Deserialize, Serialize};

use crate::error::{KernelError, Result};
use crate::types::{Inode, InodeBody};

/// What a zone holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneUsage {
    pub bytes: u64,
    pub inodes: u64,
}

/// What a zone may hold; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneQuota {
    pub bytes: Option<u64>,
    pub inodes: Option<u64>,
}

/// The bytes `inode` counts for.
pub fn bytes_of(inode: &Inode) -> u64 {
    match &inode.body {
        InodeBody::Regular { .. } => inode.size,
        InodeBody::Pipe { capacity } => *capacity,
        // A link's target is counted: an agent could otherwise fill a
        // zone past its quota with links of 4 KiB targets.
        InodeBody::Symlink { target } => target.len() as u64,
        InodeBody::Dir { .. } | InodeBody::Mount { .. } => 0,
    }
}

impl ZoneUsage {
    /// `inode` added (`Some`), removed (`None` after), or replaced.
    pub fn change(&mut self, before: Option<&Inode>, after: Option<&Inode>) {
        let (b0, b1) = (before.map_or(0, bytes_of), after.map_or(0, bytes_of));
        self.bytes = self.bytes.saturating_sub(b0).saturating_add(b1);
        match (before.is_some(), after.is_some()) {
            (false, true) => self.inodes += 1,
            (true, false) => self.inodes = self.inodes.saturating_sub(1),
            _ => {}
        }
    }

    /// Refuses `self` (the usage after a command) if the command grew the
    /// zone past `quota` from `before`.
    pub fn check(&self, before: &ZoneUsage, quota: &ZoneQuota) -> Result<()> {
        let over = |now: u64, was: u64, limit: Option<u64>| limit.filter(|l| now > was && now > *l);
        if let Some(limit) = over(self.bytes, before.bytes, quota.bytes) {
            return Err(KernelError::NoSpace(format!(
                "the zone would hold {} bytes; its quota is {limit} (see `nexus zone quota`)",
                self.bytes
            )));
        }
        if let Some(limit) = over(self.inodes, before.inodes, quota.inodes) {
            return Err(KernelError::NoSpace(format!(
                "the zone would hold {} files, directories and pipes; its quota is {limit} \
                 (see `nexus zone quota`)",
                self.inodes
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(ino: u64, size: u64) -> Inode {
        Inode {
            ino,
            parent: 1,
            size,
            version: 0,
            atime: 0,
            mtime: 0,
            ctime: 0,
            body: InodeBody::Regular { inline: None },
        }
    }

    #[test]
    fn growth_past_the_quota_is_refused_and_shrinking_never_is() {
        let quota = ZoneQuota {
            bytes: Some(100),
            inodes: Some(2),
        };
        let before = ZoneUsage::default();
        let mut u = before;
        u.change(None, Some(&file(2, 60)));
        u.check(&before, &quota).unwrap();
        let mid = u;
        u.change(Some(&file(2, 60)), Some(&file(2, 120)));
        assert!(matches!(
            u.check(&mid, &quota),
            Err(KernelError::NoSpace(_))
        ));
        // Over the quota (lowered after the fact), a shrink still applies.
        let over = ZoneUsage {
            bytes: 500,
            inodes: 9,
        };
        let mut u = over;
        u.change(Some(&file(2, 300)), Some(&file(2, 200)));
        u.check(&over, &quota).unwrap();
        u.change(Some(&file(3, 0)), None);
        u.check(&over, &quota).unwrap();
        assert_eq!(
            u,
            ZoneUsage {
                bytes: 400,
                inodes: 8
            }
        );
        // A third inode passes the inode quota.
        let two = ZoneUsage {
            bytes: 0,
            inodes: 2,
        };
        let mut u = two;
        u.change(None, Some(&file(4, 0)));
        let err = u.check(&two, &quota).unwrap_err().to_string();
        assert!(err.contains("its quota is 2"), "{err}");
    }
}
