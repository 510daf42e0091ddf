//! A pipe's replicated image and the checkpoints that move it forward,
//! applied deterministically by the state machine (the live ring is
//! `ipc::pipe`'s; see its durability contract).

use serde::{Deserialize, Serialize};

use crate::error::{KernelError, Result};

/// The persisted image of a pipe (zone state, key `s\x05` + ino).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipeRecord {
    /// Total bytes ever read (the position of `data[0]`).
    pub read_pos: u64,
    /// Total bytes ever written.
    pub write_pos: u64,
    /// A writer has attached at some point (so an empty pipe with no writer
    /// reads as end-of-file rather than waiting for one).
    pub had_writer: bool,
    /// The unread bytes, `write_pos - read_pos` of them.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

impl PipeRecord {
    /// Applies a checkpoint (deterministic: the state machine calls this).
    /// `base_write` must equal the recorded write position, so a stale or
    /// reordered checkpoint is refused rather than corrupting the image.
    pub fn apply(&mut self, cp: &Checkpoint, capacity: u64) -> Result<()> {
        let bad = |what: &str| Err(KernelError::Invalid(format!("pipe checkpoint: {what}")));
        if cp.base_write != self.write_pos {
            return Err(KernelError::Conflict(0));
        }
        if cp.read_pos < self.read_pos || cp.write_pos < cp.read_pos {
            return bad("positions go backwards");
        }
        if cp.write_pos < self.write_pos || cp.write_pos - cp.read_pos > capacity {
            return bad("more unread bytes than the capacity");
        }
        let appended_from = cp.read_pos.max(self.write_pos);
        if cp.appended.len() as u64 != cp.write_pos - appended_from {
            return bad("appended bytes do not match the positions");
        }
        let keep_from = (cp.read_pos.min(self.write_pos) - self.read_pos) as usize;
        let mut data = self.data.split_off(keep_from.min(self.data.len()));
        data.extend_from_slice(&cp.appended);
        self.data = data;
        self.read_pos = cp.read_pos;
        self.write_pos = cp.write_pos;
        self.had_writer |= cp.had_writer;
        Ok(())
    }
}

/// One checkpoint's worth of change, carried by `ZoneCommand::PipeCheckpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The write position of the checkpoint this one follows.
    pub base_write: u64,
    pub read_pos: u64,
    pub write_pos: u64,
    pub had_writer: bool,
    /// Bytes `[max(read_pos, base_write), write_pos)`: written since the
    /// last checkpoint and not yet read.
    #[serde(with = "serde_bytes")]
    pub appended: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(base: u64, read: u64, write: u64, appended: &[u8]) -> Checkpoint {
        Checkpoint {
            base_write: base,
            read_pos: read,
            write_pos: write,
            had_writer: true,
            appended: appended.to_vec(),
        }
    }

    #[test]
    fn checkpoints_compose() {
        let mut rec = PipeRecord::default();
        rec.apply(&cp(0, 0, 5, b"hello"), 16).unwrap();
        assert_eq!(rec.data, b"hello");
        // Two bytes read, three written.
        rec.apply(&cp(5, 2, 8, b"abc"), 16).unwrap();
        assert_eq!(rec.data, b"lloabc");
        // Everything read, including bytes written since the last checkpoint.
        rec.apply(&cp(8, 10, 12, b"yz"), 16).unwrap();
        assert_eq!(
            (rec.read_pos, rec.write_pos, &rec.data[..]),
            (10, 12, &b"yz"[..])
        );
    }

    #[test]
    fn stale_or_inconsistent_checkpoints_are_refused() {
        let mut rec = PipeRecord::default();
        rec.apply(&cp(0, 0, 3, b"abc"), 4).unwrap();
        let before = rec.clone();
        assert_eq!(
            rec.apply(&cp(0, 0, 3, b"abc"), 4),
            Err(KernelError::Conflict(0))
        );
        assert!(
            rec.apply(&cp(3, 0, 8, b"defgh"), 4).is_err(),
            "over capacity"
        );
        assert!(rec.apply(&cp(3, 0, 5, b"d"), 4).is_err(), "length mismatch");
        assert_eq!(rec, before);
    }
}
