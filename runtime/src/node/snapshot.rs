//! Raft snapshots between nodes, streamed in chunks (`InstallSnapshot`).
//!
//! A zone's snapshot is its whole state: it can be far larger than a gRPC
//! message should be and would hold up every other zone's messages on the
//! shared `Exchange` stream. So the transport lifts the data out of the
//! MsgSnapshot and streams it on a call of its own: a header (the message
//! without its data, the data's length and BLAKE3 hash), then chunks each
//! checked by CRC-32 and placed by offset. The receiver refuses a chunk
//! that is corrupt, out of place or past the announced end, and a stream
//! that ends short or whose whole does not hash right; only a complete,
//! verified snapshot reaches the replica. Progress is logged both ends.

use std::time::Instant;

use nexus_kernel::ReplicaId;
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
}

/// `msg` (a MsgSnapshot) as a header and the chunks of its data. `fault`
/// damages the stream on purpose (tests and drills).
pub fn split(
    zone: &str,
    from: (ReplicaId, u64),
    to: ReplicaId,
    mut msg: Message,
    fault: Option<Fault>,
) -> Result<Vec<SnapshotChunk>, protobuf::ProtobufError> {
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
    let mut chunks: Vec<SnapshotChunk> = data
        .chunks(CHUNK)
        .enumerate()
        .map(|(i, part)| SnapshotChunk {
            header: None,
            offset: (i * CHUNK) as u64,
            data: part.to_vec(),
            crc32: crc32fast::hash(part),
        })
        .collect();
    if chunks.is_empty() {
        chunks.push(SnapshotChunk::default());
    }
    chunks[0].header = Some(header);
    match fault {
        Some(Fault::Corrupt) => {
            let last = chunks.last_mut().expect("at least one chunk");
            match last.data.last_mut() {
                Some(b) => *b ^= 0xff,
                None => last.crc32 ^= 1,
            }
        }
        Some(Fault::Truncate) if chunks.len() > 1 => {
            chunks.pop();
        }
        Some(Fault::Truncate) => {
            let last = &mut chunks[0];
            last.data.pop();
            last.crc32 = crc32fast::hash(&last.data);
        }
        None => {}
    }
    Ok(chunks)
}

/// Damage to inflict on the next snapshot sent (fault injection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Flip a byte of the last chunk after its CRC was computed.
    Corrupt,
    /// Leave out the last chunk.
    Truncate,
}

/// An incoming snapshot being put together.
pub struct Assembly {
    pub header: SnapshotHeader,
    data: Vec<u8>,
    started: Instant,
    next_report: u64,
}

impl Assembly {
    /// Starts from the stream's first chunk.
    pub fn start(first: SnapshotChunk) -> Result<Self, SnapshotError> {
        let header = first.header.clone().ok_or(SnapshotError::NoHeader)?;
        if header.size > MAX_SNAPSHOT {
            return Err(SnapshotError::TooLarge(header.size));
        }
        // Grow as chunks arrive rather than trusting the announced size.
        let capacity = header.size.min(64 << 20) as usize;
        let mut a = Assembly {
            header,
            data: Vec::with_capacity(capacity),
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
        let expected = self.data.len() as u64;
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
        self.data.extend_from_slice(&chunk.data);
        let got = self.data.len() as u64;
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
        self.data.len() as u64
    }

    /// The complete, verified MsgSnapshot.
    pub fn finish(self) -> Result<Message, SnapshotError> {
        let size = self.header.size;
        let got = self.data.len() as u64;
        if got != size {
            return Err(SnapshotError::Truncated { got, size });
        }
        if blake3::hash(&self.data).as_bytes()[..] != self.header.blake3[..] {
            return Err(SnapshotError::HashMismatch);
        }
        let mut msg = Message::parse_from_bytes(&self.header.message)
            .map_err(|e| SnapshotError::BadMessage(e.to_string()))?;
        if msg.get_msg_type() != raft::prelude::MessageType::MsgSnapshot {
            return Err(SnapshotError::NotASnapshot);
        }
        tracing::info!(
            zone = %self.header.zone,
            from = self.header.from_node,
            "received snapshot: {} in {:?}",
            mib(size),
            self.started.elapsed()
        );
        msg.mut_snapshot().data = self.data.into();
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::prelude::{MessageType, Snapshot};

    fn snapshot(len: usize) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgSnapshot);
        m.from = 1;
        m.to = 2;
        let mut s = Snapshot {
            data: (0..len)
                .map(|i| (i * 7 % 251) as u8)
                .collect::<Vec<_>>()
                .into(),
            ..Snapshot::default()
        };
        s.mut_metadata().index = 42;
        m.set_snapshot(s);
        m
    }

    fn assemble(chunks: Vec<SnapshotChunk>) -> Result<Message, SnapshotError> {
        let mut it = chunks.into_iter();
        let mut a = Assembly::start(it.next().expect("a chunk"))?;
        for c in it {
            a.push(c)?;
        }
        a.finish()
    }

    #[test]
    fn a_snapshot_survives_the_round_trip_at_every_size() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17] {
            let m = snapshot(len);
            let chunks = split("z1", (1, 7), 2, m.clone(), None).unwrap();
            assert_eq!(chunks.len(), len.div_ceil(CHUNK).max(1));
            assert_eq!(assemble(chunks).unwrap(), m, "length {len}");
        }
    }

    #[test]
    fn damaged_streams_are_refused() {
        let m = snapshot(3 * CHUNK + 5);
        let corrupt = split("z1", (1, 7), 2, m.clone(), Some(Fault::Corrupt)).unwrap();
        assert_eq!(
            assemble(corrupt),
            Err(SnapshotError::Corrupt(3 * CHUNK as u64))
        );
        let short = split("z1", (1, 7), 2, m.clone(), Some(Fault::Truncate)).unwrap();
        assert_eq!(
            assemble(short),
            Err(SnapshotError::Truncated {
                got: 3 * CHUNK as u64,
                size: 3 * CHUNK as u64 + 5
            })
        );
        let mut swapped = split("z1", (1, 7), 2, m.clone(), None).unwrap();
        swapped.swap(1, 2);
        assert!(matches!(
            assemble(swapped),
            Err(SnapshotError::OutOfPlace { .. })
        ));
        // A chunk whose CRC matches its (altered) bytes still fails the hash.
        let mut forged = split("z1", (1, 7), 2, m.clone(), None).unwrap();
        forged[1].data[0] ^= 1;
        forged[1].crc32 = crc32fast::hash(&forged[1].data);
        assert_eq!(assemble(forged), Err(SnapshotError::HashMismatch));
        let mut long = split("z1", (1, 7), 2, m.clone(), None).unwrap();
        long.push(SnapshotChunk {
            header: None,
            offset: 3 * CHUNK as u64 + 5,
            data: vec![1],
            crc32: crc32fast::hash(&[1]),
        });
        assert!(matches!(
            assemble(long),
            Err(SnapshotError::Overflow { .. })
        ));
        let mut headless = split("z1", (1, 7), 2, m, None).unwrap();
        headless[0].header = None;
        assert!(matches!(assemble(headless), Err(SnapshotError::NoHeader)));
    }
}
