//! Dirty byte ranges of one file: what its writers wrote on this node and
//! the content store does not hold yet.
//!
//! Extents never overlap and never touch (a write next to or over an
//! extent merges with it), so an append grows the last extent in place
//! and costs what it writes, and a rewrite of buffered bytes costs nothing
//! more than the copy.

use std::collections::{BTreeMap, BTreeSet};

use crate::zone::command::Patch;

/// Non-overlapping, non-adjacent byte ranges by their start offset.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Extents {
    map: BTreeMap<u64, Vec<u8>>,
    bytes: u64,
}

impl Extents {
    /// Bytes held.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// One past the last byte held (0 when empty).
    pub(crate) fn end(&self) -> u64 {
        self.map
            .last_key_value()
            .map_or(0, |(start, bytes)| start + bytes.len() as u64)
    }

    /// Records `data` at `at`, over whatever was held there. The caller
    /// keeps `at + data.len()` within u64 (files end at 1 TiB).
    pub(crate) fn write(&mut self, at: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = at + data.len() as u64;
        // The extent starting at or before `at` that reaches it: written into.
        let host = self
            .map
            .range(..=at)
            .next_back()
            .filter(|(start, bytes)| *start + bytes.len() as u64 >= at)
            .map(|(start, _)| *start);
        let start = host.unwrap_or(at);
        let mut merged = match host {
            Some(s) => self.map.remove(&s).unwrap_or_default(),
            None => Vec::new(),
        };
        self.bytes -= merged.len() as u64;
        // Over the bytes it reaches, then past them (no zero-fill first:
        // an append of a MiB is one copy).
        let lo = (at - start) as usize;
        assert!(merged.len() >= lo, "the host extent reaches the write");
        let over = merged.len().clamp(lo, lo + data.len()) - lo;
        merged[lo..lo + over].copy_from_slice(&data[..over]);
        merged.extend_from_slice(&data[over..]);
        // Extents the write reaches or touches after `at` are absorbed; only
        // their bytes past the write survive.
        let absorbed: Vec<u64> = self.map.range(at..=end).map(|(s, _)| *s).collect();
        for s in absorbed {
            let bytes = self.map.remove(&s).unwrap_or_default();
            self.bytes -= bytes.len() as u64;
            let their_end = s + bytes.len() as u64;
            let merged_end = start + merged.len() as u64;
            if their_end > merged_end {
                merged.extend_from_slice(&bytes[(merged_end - s) as usize..]);
            }
        }
        self.bytes += merged.len() as u64;
        self.map.insert(start, merged);
    }

    /// Copies the held bytes that fall in `[offset, offset + out.len())`
    /// into `out` (which starts at `offset`).
    pub(crate) fn overlay(&self, offset: u64, out: &mut [u8]) {
        let end = offset + out.len() as u64;
        for (start, piece) in self.pieces(offset, end) {
            let at = (start - offset) as usize;
            out[at..at + piece.len()].copy_from_slice(piece);
        }
    }

    /// The held bytes within `[lo, hi)`, as (offset, bytes), in order.
    pub(crate) fn pieces(&self, lo: u64, hi: u64) -> impl Iterator<Item = (u64, &[u8])> {
        let first = self
            .map
            .range(..lo)
            .next_back()
            .filter(|(s, b)| *s + b.len() as u64 > lo)
            .map(|(s, _)| *s)
            .unwrap_or(lo);
        self.map
            .range(first..hi.max(first))
            .filter_map(move |(s, b)| {
                let from = lo.max(*s);
                let to = hi.min(s + b.len() as u64);
                (from < to).then(|| (from, &b[(from - s) as usize..(to - s) as usize]))
            })
    }

    /// A copy of the held bytes within `[lo, hi)`.
    pub(crate) fn clipped(&self, lo: u64, hi: u64) -> Extents {
        let mut out = Extents::default();
        for (at, piece) in self.pieces(lo, hi) {
            out.bytes += piece.len() as u64;
            out.map.insert(at, piece.to_vec());
        }
        out
    }

    /// Whether `[lo, hi)` is held entirely.
    pub(crate) fn covers(&self, lo: u64, hi: u64) -> bool {
        hi <= lo
            || self
                .map
                .range(..=lo)
                .next_back()
                .is_some_and(|(s, b)| s + b.len() as u64 >= hi)
    }

    /// Writes every range `over` holds over these.
    pub(crate) fn layer(&mut self, over: &Extents) {
        for (at, bytes) in &over.map {
            self.write(*at, bytes);
        }
    }

    /// Drops every byte at or past `size`.
    pub(crate) fn truncate(&mut self, size: u64) {
        let cut: Vec<u64> = self
            .map
            .range(..)
            .rev()
            .take_while(|(s, b)| *s + b.len() as u64 > size)
            .map(|(s, _)| *s)
            .collect();
        for s in cut {
            let mut bytes = self.map.remove(&s).unwrap_or_default();
            self.bytes -= bytes.len() as u64;
            if s < size {
                bytes.truncate((size - s) as usize);
                self.bytes += bytes.len() as u64;
                self.map.insert(s, bytes);
            }
        }
    }

    /// The held ranges, in order.
    pub(crate) fn to_patches(&self) -> Vec<Patch> {
        self.map
            .iter()
            .map(|(at, bytes)| Patch {
                at: *at,
                bytes: bytes.clone(),
            })
            .collect()
    }

    /// Indices of the `chunk`-sized blocks that hold a dirty byte.
    pub(crate) fn blocks(&self, chunk: u64) -> BTreeSet<u64> {
        let mut out = BTreeSet::new();
        for (s, b) in &self.map {
            out.extend(s / chunk..=(s + b.len() as u64 - 1) / chunk);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The reference: a plain byte array with a "written" mark per byte.
    fn model(ops: &[(u64, Vec<u8>)], len: usize) -> (Vec<u8>, Vec<bool>) {
        let (mut bytes, mut set) = (vec![0u8; len], vec![false; len]);
        for (at, data) in ops {
            for (i, b) in data.iter().enumerate() {
                bytes[*at as usize + i] = *b;
                set[*at as usize + i] = true;
            }
        }
        (bytes, set)
    }

    proptest! {
        #[test]
        fn extents_match_a_byte_array(
            ops in prop::collection::vec((0u64..200, prop::collection::vec(any::<u8>(), 0..40)), 0..40),
            lo in 0u64..260,
            span in 0u64..260,
        ) {
            let mut ext = Extents::default();
            for (at, data) in &ops {
                ext.write(*at, data);
            }
            let (bytes, set) = model(&ops, 260);
            // Invariants: sorted, disjoint, not touching, bytes counted.
            let mut prev_end = None;
            let mut total = 0;
            for (s, b) in &ext.map {
                prop_assert!(!b.is_empty());
                if let Some(e) = prev_end { prop_assert!(*s > e); }
                prev_end = Some(s + b.len() as u64);
                total += b.len() as u64;
            }
            prop_assert_eq!(total, ext.bytes());
            prop_assert_eq!(set.iter().filter(|s| **s).count() as u64, ext.bytes());
            prop_assert_eq!(ext.end(), set.iter().rposition(|s| *s).map_or(0, |i| i as u64 + 1));
            // What an overlay shows is the model's bytes where written.
            let hi = (lo + span).min(260);
            let mut out = vec![0xAAu8; (hi - lo) as usize];
            ext.overlay(lo, &mut out);
            for (i, b) in out.iter().enumerate() {
                let at = lo as usize + i;
                prop_assert_eq!(*b, if set[at] { bytes[at] } else { 0xAA });
            }
            let clipped = ext.clipped(lo, hi);
            prop_assert!(clipped.pieces(0, u64::MAX).all(|(s, p)| s >= lo && s + p.len() as u64 <= hi));
            prop_assert_eq!(clipped.bytes(), set[lo as usize..hi as usize].iter().filter(|s| **s).count() as u64);
            prop_assert_eq!(ext.covers(lo, hi), set[lo as usize..hi as usize].iter().all(|s| *s));
            let mut copy = Extents::default();
            copy.layer(&ext);
            prop_assert_eq!(&copy, &ext);
            let mut cut = ext.clone();
            cut.truncate(lo);
            prop_assert!(cut.end() <= lo);
            prop_assert_eq!(cut.bytes(), set[..lo as usize].iter().filter(|s| **s).count() as u64);
            prop_assert_eq!(cut.clipped(0, lo), ext.clipped(0, lo));
            for blk in ext.blocks(16) {
                let r = (blk * 16) as usize..((blk + 1) * 16) as usize;
                prop_assert!(set[r].iter().any(|s| *s));
            }
        }
    }

    #[test]
    fn appends_grow_one_extent() {
        let mut ext = Extents::default();
        for i in 0..1000u64 {
            ext.write(i * 62, &[i as u8; 62]);
        }
        assert_eq!(ext.map.len(), 1);
        assert_eq!((ext.bytes(), ext.end()), (62_000, 62_000));
    }
}
