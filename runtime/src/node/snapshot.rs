//! Raft snapshots between nodes, streamed in chunks (`InstallSnapshot`).
//!
//! A zone's snapshot is its whole state: it can be far larger than a gRPC
//! message should be and would hold up every other zone's messages on the
//! shared `Exchange` stream. So the transport lifts the data out of the
//! MsgSnapshot and streams it on a call of its own: a header (the message
//! without its data, the data's length and BLAKE3 hash), then chunks each
//! checked by CRC-32 and placed by offset, cut from the data as they are
//! sent. The receiver writes each chunk to a file in the kernel's spool
//! as it arrives (memory per receive: one chunk), and refuses a chunk that
//! is corrupt, out of place or past the announced end, and a stream that
//! ends short, whose whole does not hash right or does not decode; only a
//! complete, verified snapshot reaches the replica, which installs it from
//! the file. Progress is logged both ends.

use std::time::Instant;

use bytes::Bytes;
use nexus_kernel::{ReplicaId, SpoolWriter, Spooled};
use nexus_proto::transport::{SnapshotChunk, SnapshotHeader};
use protobuf::Message as _;
use raft::prelude::Message;

/// Bytes of snapshot data per chunk.
pub const CHUNK: usize = 256 * 1024;
/// Largest snapshot a node accepts.
pub const MAX_SNAPSHOT: u64 = 16 << 30;

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Why an incoming snapshot was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("the snapshot stream did not start with a header")]
    NoHeader,
    #[error("a second header in the middle of a snapshot")]
    SecondHeader,
    #[error("snapshot of {0} bytes is larger than the {MAX_SNAPSHOT}-byte limit")]
    TooLarge(u64),
    #[error("chunk at offset {got}: expected offset {expected} (a chunk is missing or repeated)")]
    OutOfPlace { expected: u64, got: u64 },
    #[error("chunk at offset {0} is corrupt (CRC-32 mismatch)")]
    Corrupt(u64),
    #[error("chunk at offset {offset} runs past the announced {size} bytes")]
    Overflow { offset: u64, size: u64 },
    #[error("truncated snapshot: {got} of {size} bytes arrived")]
    Truncated { got: u64, size: u64 },
    #[error("the snapshot's BLAKE3 hash does not match its header")]
    HashMismatch,
    #[error("undecodable raft message in the snapshot header: {0}")]
    BadMessage(String),
    #[error("the header's message is not a snapshot")]
    NotASnapshot,
    /// Writing or checking the spool file failed (a payload that does not
    /// decode is refused here too).
    #[error("spooling the snapshot: {0}")]
    Spool(String),
}

/// `msg` (a MsgSnapshot) as a header and the chunks of its data, each cut
/// when it is taken. `fault` damages the stream on purpose (tests and
/// drills).
pub fn split(
    zone: &str,
    from: (ReplicaId, u64),
    to: ReplicaId,
    mut msg: Message,
    fault: Option<Fault>,
) -> Result<Chunks, protobuf::ProtobufError> {
    let (from, incarnation) = from;
    let data = std::mem::take(&mut msg.mut_snapshot().data);
    let header = SnapshotHeader {
        zone: zone.to_owned(),
        from_node: from,
        to_node: to,
        message: msg.write_to_bytes()?,
        size: data.len() as u64,
        blake3: blake3::hash(&data).as_bytes().to_vec(),
        incarnation,
    };
    let count = data.len().div_ceil(CHUNK).max(1);
    Ok(Chunks {
        header: Some(header),
        data,
        next: 0,
        count,
        fault,
    })
}

/// The chunks of one snapshot, in order; see [`split`].
pub struct Chunks {
    header: Option<SnapshotHeader>,
    data: Bytes,
    next: usize,
    count: usize,
    fault: Option<Fault>,
}

impl Chunks {
    /// Bytes of snapshot data.
    pub fn size(&self) -> u64 {
        self.data.len() as u64
    }

    /// Chunks to send.
    pub fn len(&self) -> usize {
        match self.fault {
            Some(Fault::Truncate) if self.count > 1 => self.count - 1,
            _ => self.count,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Iterator for Chunks {
    type Item = SnapshotChunk;

    fn next(&mut self) -> Option<SnapshotChunk> {
        let i = self.next;
        if i >= self.len() {
            return None;
        }
        self.next += 1;
        let part = self
            .data
            .slice((i * CHUNK).min(self.data.len())..((i + 1) * CHUNK).min(self.data.len()));
        let mut chunk = SnapshotChunk {
            header: self.header.take(),
            offset: (i * CHUNK) as u64,
            crc32: crc32fast::hash(&part),
            data: part.to_vec(),
        };
        let last = i + 1 == self.count;
        match self.fault {
            Some(Fault::Corrupt) if last => match chunk.data.last_mut() {
                Some(b) => *b ^= 0xff,
                None => chunk.crc32 ^= 1,
            },
            Some(Fault::Truncate) if last => {
                chunk.data.pop();
                chunk.crc32 = crc32fast::hash(&chunk.data);
            }
            _ => {}
        }
        Some(chunk)
    }
}

/// Damage to inflict on the next snapshot sent (fault injection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Flip a byte of the last chunk after its CRC was computed.
    Corrupt,
    /// Leave out the last chunk (or the last byte of a lone chunk).
    Truncate,
}

/// An incoming snapshot being written to the spool. Its calls block on
/// the file: run them off the async threads.
pub struct Assembly {
    pub header: SnapshotHeader,
    spool: SpoolWriter,
    hasher: blake3::Hasher,
    received: u64,
    started: Instant,
    next_report: u64,
}

/// The header a stream's first chunk carries, checked before anything of
/// the stream is stored.
pub fn header_of(first: &SnapshotChunk) -> Result<&SnapshotHeader, SnapshotError> {
    let header = first.header.as_ref().ok_or(SnapshotError::NoHeader)?;
    if header.size > MAX_SNAPSHOT {
        return Err(SnapshotError::TooLarge(header.size));
    }
    Ok(header)
}

impl Assembly {
    /// Starts from the stream's first chunk, writing into `spool`.
    pub fn start(first: SnapshotChunk, spool: SpoolWriter) -> Result<Self, SnapshotError> {
        let header = header_of(&first)?.clone();
        let mut a = Assembly {
            header,
            spool,
            hasher: blake3::Hasher::new(),
            received: 0,
            started: Instant::now(),
            next_report: 0,
        };
        a.push_data(first)?;
        Ok(a)
    }

    pub fn push(&mut self, chunk: SnapshotChunk) -> Result<(), SnapshotError> {
        if chunk.header.is_some() {
            return Err(SnapshotError::SecondHeader);
        }
        self.push_data(chunk)
    }

    fn push_data(&mut self, chunk: SnapshotChunk) -> Result<(), SnapshotError> {
        let size = self.header.size;
        let expected = self.received;
        if chunk.offset != expected {
            return Err(SnapshotError::OutOfPlace {
                expected,
                got: chunk.offset,
            });
        }
        if chunk.offset + chunk.data.len() as u64 > size {
            return Err(SnapshotError::Overflow {
                offset: chunk.offset,
                size,
            });
        }
        if crc32fast::hash(&chunk.data) != chunk.crc32 {
            return Err(SnapshotError::Corrupt(chunk.offset));
        }
        self.spool
            .write(&chunk.data)
            .map_err(|e| SnapshotError::Spool(e.to_string()))?;
        self.hasher.update(&chunk.data);
        self.received += chunk.data.len() as u64;
        let got = self.received;
        if got >= self.next_report && size >= 4 * CHUNK as u64 {
            tracing::info!(
                zone = %self.header.zone,
                from = self.header.from_node,
                "receiving snapshot: {} of {} ({}%)",
                mib(got),
                mib(size),
                got * 100 / size.max(1)
            );
            self.next_report = got + size / 10;
        }
        Ok(())
    }

    pub fn received(&self) -> u64 {
        self.received
    }

    /// The MsgSnapshot (without its data) and its complete, verified,
    /// durable payload in the spool.
    pub fn finish(self) -> Result<(Message, Spooled), SnapshotError> {
        let size = self.header.size;
        let got = self.received;
        if got != size {
            return Err(SnapshotError::Truncated { got, size });
        }
        if self.hasher.finalize().as_bytes()[..] != self.header.blake3[..] {
            return Err(SnapshotError::HashMismatch);
        }
        let msg = Message::parse_from_bytes(&self.header.message)
            .map_err(|e| SnapshotError::BadMessage(e.to_string()))?;
        if msg.get_msg_type() != raft::prelude::MessageType::MsgSnapshot {
            return Err(SnapshotError::NotASnapshot);
        }
        let spooled = self
            .spool
            .finish()
            .map_err(|e| SnapshotError::Spool(e.to_string()))?;
        tracing::info!(
            zone = %self.header.zone,
            from = self.header.from_node,
            "received snapshot: {} in {:?}",
            mib(size),
            self.started.elapsed()
        );
        Ok((msg, spooled))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_kernel::SnapshotWriter;
    use raft::prelude::{MessageType, Snapshot};

    /// A valid payload of about `len` bytes.
    fn payload(len: usize) -> Vec<u8> {
        let mut w = SnapshotWriter::new(Vec::new(), &Default::default()).unwrap();
        let value: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        w.pair(b"s\x01k", &value).unwrap();
        w.finish().unwrap()
    }

    fn snapshot(data: Vec<u8>) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgSnapshot);
        m.from = 1;
        m.to = 2;
        let mut s = Snapshot {
            data: data.into(),
            ..Snapshot::default()
        };
        s.mut_metadata().index = 42;
        m.set_snapshot(s);
        m
    }

    /// Receives `chunks` into a spool; the message and the spooled size.
    fn assemble(
        chunks: impl IntoIterator<Item = SnapshotChunk>,
    ) -> Result<(Message, u64), SnapshotError> {
        let home = tempfile::tempdir().unwrap();
        let spool = nexus_kernel::SpoolDir::open(home.path()).unwrap();
        let mut it = chunks.into_iter();
        let mut a = Assembly::start(it.next().expect("a chunk"), spool.create("z1").unwrap())?;
        for c in it {
            a.push(c)?;
        }
        let (msg, spooled) = a.finish()?;
        Ok((msg, spooled.size().unwrap()))
    }

    #[test]
    fn a_snapshot_survives_the_round_trip_at_every_size() {
        for len in [0, 1, CHUNK - 40, CHUNK, CHUNK + 1, 3 * CHUNK + 17] {
            let data = payload(len);
            let size = data.len();
            let m = snapshot(data);
            let chunks = split("z1", (1, 7), 2, m.clone(), None).unwrap();
            assert_eq!(chunks.len(), size.div_ceil(CHUNK).max(1));
            let (got, spooled) = assemble(chunks).unwrap();
            let mut bare = m;
            bare.mut_snapshot().data = Default::default();
            assert_eq!((got, spooled), (bare, size as u64), "length {len}");
        }
    }

    #[test]
    fn damaged_streams_are_refused() {
        let data = payload(3 * CHUNK);
        let size = data.len() as u64;
        let m = snapshot(data);
        let all = || {
            split("z1", (1, 7), 2, m.clone(), None)
                .unwrap()
                .collect::<Vec<_>>()
        };
        let last = (size - 1) / CHUNK as u64 * CHUNK as u64;
        let corrupt = split("z1", (1, 7), 2, m.clone(), Some(Fault::Corrupt)).unwrap();
        assert_eq!(assemble(corrupt).unwrap_err(), SnapshotError::Corrupt(last));
        let short = split("z1", (1, 7), 2, m.clone(), Some(Fault::Truncate)).unwrap();
        assert_eq!(
            assemble(short).unwrap_err(),
            SnapshotError::Truncated { got: last, size }
        );
        let mut swapped = all();
        swapped.swap(1, 2);
        assert!(matches!(
            assemble(swapped),
            Err(SnapshotError::OutOfPlace { .. })
        ));
        // A chunk whose CRC matches its (altered) bytes still fails the hash.
        let mut forged = all();
        forged[1].data[0] ^= 1;
        forged[1].crc32 = crc32fast::hash(&forged[1].data);
        assert_eq!(assemble(forged).unwrap_err(), SnapshotError::HashMismatch);
        let mut long = all();
        long.push(SnapshotChunk {
            header: None,
            offset: size,
            data: vec![1],
            crc32: crc32fast::hash(&[1]),
        });
        assert!(matches!(
            assemble(long),
            Err(SnapshotError::Overflow { .. })
        ));
        let mut headless = all();
        headless[0].header = None;
        assert!(matches!(
            headless.first().map(header_of),
            Some(Err(SnapshotError::NoHeader))
        ));
        // Whole and hashing right, but not a payload: refused at the spool.
        let garbage = snapshot(vec![7; CHUNK + 3]);
        let chunks = split("z1", (1, 7), 2, garbage, None).unwrap();
        assert!(matches!(assemble(chunks), Err(SnapshotError::Spool(_))));
    }
}
