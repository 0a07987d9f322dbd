//! The log's records: [`Record`], one per mutation, and its body's encoding (the grammar
//! in the `wal` module doc and protocol.md); the magics that open log and snapshot files.

use byteorder::{ByteOrder, NetworkEndian};

use crate::store::{Entry, FlushMarker, Table, Version};

/// First bytes of a log file.
pub const MAGIC: &[u8; 8] = b"PZWAL001";
/// First bytes of a snapshot file.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"PZSNAP01";
/// Bytes before a record's body: length and CRC.
pub const RECORD_HEADER: usize = 8;
/// Largest body a record may have (a key, a value and a few fields).
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// An arc of the ring, (start, end], as in the wire format.
pub type RingArc = (u64, u64);

/// One logged mutation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A value stored at a version.
    Put {
        /// Which table.
        table: Table,
        /// The key.
        key: Vec<u8>,
        /// The entry (value `Some`).
        version: u64,
        /// memcached flags.
        flags: u32,
        /// When the value expires (Unix seconds; 0 never).
        expires: u64,
        /// The value.
        value: Vec<u8>,
    },
    /// A tombstone at a version.
    Tombstone {
        /// Which table.
        table: Table,
        /// The key.
        key: Vec<u8>,
        /// The delete's version.
        version: u64,
    },
    /// `previous` entries outside the arc (all, with none) merged into `own`.
    Absorb(Option<RingArc>),
    /// `own` entries inside the arc moved to `previous`, which keeps only the arc.
    Split(RingArc),
    /// A table's entries inside the arc removed.
    DropArc(Table, RingArc),
    /// A table operation on a set of arcs (see [`RangeOp`]).
    Ranges(RangeOp, Vec<RingArc>),
    /// Both tables emptied.
    Clear,
    /// The last record of a snapshot: how many entries it holds.
    End(u64),
    /// `flush_all`: entries below the threshold are gone from a time on.
    Flush(FlushMarker),
    /// Forget: every entry of both tables whose version is below the horizon is dropped,
    /// values too (a slave about to be joined; see `store::Store::forget_below`).
    Forget(u64),
}

/// What a [`Record::Ranges`] does to the entries inside its arcs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeOp {
    /// `previous` entries merge into `own`.
    Absorb,
    /// `own` entries merge into `previous`.
    Demote,
    /// A table's entries are removed.
    Drop(Table),
}

impl RangeOp {
    fn byte(self) -> u8 {
        match self {
            RangeOp::Absorb => 1,
            RangeOp::Demote => 2,
            RangeOp::Drop(Table::Own) => 3,
            RangeOp::Drop(Table::Previous) => 4,
        }
    }

    fn of(byte: u8) -> Option<RangeOp> {
        Some(match byte {
            1 => RangeOp::Absorb,
            2 => RangeOp::Demote,
            3 => RangeOp::Drop(Table::Own),
            4 => RangeOp::Drop(Table::Previous),
            _ => return None,
        })
    }
}

fn table_byte(table: Table) -> u8 {
    match table {
        Table::Own => 1,
        Table::Previous => 2,
    }
}

fn table_of(byte: u8) -> Option<Table> {
    match byte {
        1 => Some(Table::Own),
        2 => Some(Table::Previous),
        _ => None,
    }
}

impl Record {
    /// The record for storing `entry` under `key`.
    pub fn from_entry(table: Table, key: &[u8], entry: &Entry) -> Record {
        match &entry.value {
            Some(value) => Record::Put {
                table,
                key: key.to_vec(),
                version: entry.version.0,
                flags: entry.flags,
                expires: entry.expires,
                value: value.clone(),
            },
            None => Record::Tombstone {
                table,
                key: key.to_vec(),
                version: entry.version.0,
            },
        }
    }

    /// Appends the record (header and body) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0u8; RECORD_HEADER]);
        let mut u32b = [0u8; 4];
        let mut u64b = [0u8; 8];
        let mut put_u32 = |out: &mut Vec<u8>, v: u32| {
            NetworkEndian::write_u32(&mut u32b, v);
            out.extend_from_slice(&u32b);
        };
        let mut put_u64 = |out: &mut Vec<u8>, v: u64| {
            NetworkEndian::write_u64(&mut u64b, v);
            out.extend_from_slice(&u64b);
        };
        match self {
            Record::Put {
                table,
                key,
                version,
                flags,
                expires,
                value,
            } => {
                out.push(if *expires == 0 { 1 } else { 8 });
                out.push(table_byte(*table));
                put_u64(out, *version);
                put_u32(out, *flags);
                if *expires != 0 {
                    put_u64(out, *expires);
                }
                put_u32(out, key.len() as u32);
                out.extend_from_slice(key);
                out.extend_from_slice(value);
            }
            Record::Tombstone {
                table,
                key,
                version,
            } => {
                out.push(2);
                out.push(table_byte(*table));
                put_u64(out, *version);
                put_u32(out, key.len() as u32);
                out.extend_from_slice(key);
            }
            Record::Absorb(arc) => {
                out.push(3);
                out.push(u8::from(arc.is_some()));
                let (start, end) = arc.unwrap_or((0, 0));
                put_u64(out, start);
                put_u64(out, end);
            }
            Record::Split((start, end)) => {
                out.push(4);
                put_u64(out, *start);
                put_u64(out, *end);
            }
            Record::DropArc(table, (start, end)) => {
                out.push(5);
                out.push(table_byte(*table));
                put_u64(out, *start);
                put_u64(out, *end);
            }
            Record::Ranges(op, arcs) => {
                out.push(11);
                out.push(op.byte());
                put_u32(out, arcs.len() as u32);
                for &(start, end) in arcs {
                    put_u64(out, start);
                    put_u64(out, end);
                }
            }
            Record::Clear => out.push(6),
            Record::End(count) => {
                out.push(7);
                put_u64(out, *count);
            }
            Record::Flush(marker) => {
                out.push(9);
                put_u64(out, marker.threshold);
                put_u64(out, marker.at);
            }
            Record::Forget(horizon) => {
                out.push(10);
                put_u64(out, *horizon);
            }
        }
        let body_len = out.len() - start - RECORD_HEADER;
        let crc = crc32fast::hash(&out[start + RECORD_HEADER..]);
        NetworkEndian::write_u32(&mut out[start..], body_len as u32);
        NetworkEndian::write_u32(&mut out[start + 4..], crc);
    }

    /// Decodes a body whose CRC already matched.
    pub(super) fn decode_body(body: &[u8]) -> Option<Record> {
        let (&kind, rest) = body.split_first()?;
        let u64_at = |at: usize| rest.get(at..at + 8).map(NetworkEndian::read_u64);
        let u32_at = |at: usize| rest.get(at..at + 4).map(NetworkEndian::read_u32);
        Some(match kind {
            // A put, kind 8 with an expiry after the flags: the same fields otherwise.
            1 | 8 => {
                let table = table_of(*rest.first()?)?;
                let version = u64_at(1)?;
                let flags = u32_at(9)?;
                let (expires, at) = if kind == 8 {
                    (u64_at(13)?, 21)
                } else {
                    (0, 13)
                };
                let key_len = u32_at(at)? as usize;
                let start = at + 4;
                let key = rest.get(start..start.checked_add(key_len)?)?.to_vec();
                let value = rest.get(start + key_len..)?.to_vec();
                Record::Put {
                    table,
                    key,
                    version,
                    flags,
                    expires,
                    value,
                }
            }
            9 if rest.len() == 16 => Record::Flush(FlushMarker {
                threshold: u64_at(0)?,
                at: u64_at(8)?,
            }),
            2 => {
                let table = table_of(*rest.first()?)?;
                let version = u64_at(1)?;
                let key_len = u32_at(9)? as usize;
                let key = rest.get(13..13usize.checked_add(key_len)?)?;
                if rest.len() != 13 + key_len {
                    return None;
                }
                Record::Tombstone {
                    table,
                    key: key.to_vec(),
                    version,
                }
            }
            3 if rest.len() == 17 => {
                let arc = (u64_at(1)?, u64_at(9)?);
                Record::Absorb((rest[0] == 1).then_some(arc))
            }
            4 if rest.len() == 16 => Record::Split((u64_at(0)?, u64_at(8)?)),
            5 if rest.len() == 17 => Record::DropArc(table_of(rest[0])?, (u64_at(1)?, u64_at(9)?)),
            11 => {
                let op = RangeOp::of(*rest.first()?)?;
                let count = u32_at(1)? as usize;
                if rest.len() != 5 + count.checked_mul(16)? {
                    return None;
                }
                let arcs = (0..count)
                    .map(|i| Some((u64_at(5 + 16 * i)?, u64_at(13 + 16 * i)?)))
                    .collect::<Option<Vec<_>>>()?;
                Record::Ranges(op, arcs)
            }
            6 if rest.is_empty() => Record::Clear,
            7 if rest.len() == 8 => Record::End(u64_at(0)?),
            10 if rest.len() == 8 => Record::Forget(u64_at(0)?),
            _ => return None,
        })
    }
}

/// Turns a record back into the entry it stores (`None` for table operations).
pub fn entry_of(record: &Record) -> Option<(Table, &[u8], Entry)> {
    match record {
        Record::Put {
            table,
            key,
            version,
            flags,
            expires,
            value,
        } => Some((
            *table,
            key,
            Entry {
                version: Version(*version),
                flags: *flags,
                expires: *expires,
                value: Some(value.clone()),
            },
        )),
        Record::Tombstone {
            table,
            key,
            version,
        } => Some((*table, key, Entry::tombstone(Version(*version)))),
        _ => None,
    }
}
