//! What rides in a frame's value: arcs of the ring, [`SlaveCounts`], bulk chunks of
//! entries (transfers), and the packed keys and results of a multi-get.

use std::fmt;

use byteorder::{ByteOrder, NetworkEndian};

use super::WireLimits;

/// An arc of the ring, (start, end] clockwise, as carried in a frame's value: start u64,
/// end u64. `start == end` is the whole ring.
pub fn encode_arc(start: u64, end: u64) -> Vec<u8> {
    let mut bytes = vec![0u8; 16];
    NetworkEndian::write_u64(&mut bytes[0..], start);
    NetworkEndian::write_u64(&mut bytes[8..], end);
    bytes
}

/// Reads an arc from a frame's value: `Some(None)` when empty (no filter), `None` when
/// the length is wrong.
pub fn decode_arc(value: &[u8]) -> Option<Option<(u64, u64)>> {
    match value.len() {
        0 => Some(None),
        16 => Some(Some((
            NetworkEndian::read_u64(&value[0..]),
            NetworkEndian::read_u64(&value[8..]),
        ))),
        _ => None,
    }
}

/// A set of arcs, as carried in the value of `Absorb`, `Demote`, `DropArc` and
/// `Transfer`: count u32, then per arc start u64, end u64 (each (start, end] clockwise;
/// `start == end` is the whole ring).
pub fn encode_arcs(arcs: &[(u64, u64)]) -> Vec<u8> {
    let mut bytes = vec![0u8; 4 + 16 * arcs.len()];
    NetworkEndian::write_u32(&mut bytes[0..], arcs.len() as u32);
    for (i, &(start, end)) in arcs.iter().enumerate() {
        NetworkEndian::write_u64(&mut bytes[4 + 16 * i..], start);
        NetworkEndian::write_u64(&mut bytes[12 + 16 * i..], end);
    }
    bytes
}

/// Reads a set of arcs from a frame's value: `Some(None)` when empty (no filter), `None`
/// when the length does not match the count. A bare 16-byte arc is read as one arc.
pub fn decode_arcs(value: &[u8]) -> Option<Option<Vec<(u64, u64)>>> {
    if value.is_empty() {
        return Some(None);
    }
    if let Some(Some(arc)) = decode_arc(value) {
        return Some(Some(vec![arc]));
    }
    let count = NetworkEndian::read_u32(value.get(..4)?) as usize;
    if value.len() != 4 + count.checked_mul(16)? {
        return None;
    }
    let arcs = (0..count)
        .map(|i| {
            (
                NetworkEndian::read_u64(&value[4 + 16 * i..]),
                NetworkEndian::read_u64(&value[12 + 16 * i..]),
            )
        })
        .collect();
    Some(Some(arcs))
}

/// What SLAVE_STATS answers: key counts and what the slave's housekeeping did. The reply
/// value is the fields in this order, each a u64 (64 bytes; an older slave sends only
/// the first four).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlaveCounts {
    /// Live keys in `own`.
    pub own_live: u64,
    /// Tombstones (and invisible values) in `own`.
    pub own_tombstones: u64,
    /// Live keys in `previous`.
    pub previous_live: u64,
    /// Tombstones (and invisible values) in `previous`.
    pub previous_tombstones: u64,
    /// Expired or flushed values turned into tombstones since the slave started.
    pub purged: u64,
    /// Tombstones dropped by collection since the slave started.
    pub collected_tombstones: u64,
    /// Expired or flushed values dropped by collection since the slave started.
    pub collected_values: u64,
    /// When the log was last compacted (Unix seconds; 0: not since the slave started).
    pub last_compaction: u64,
}

impl SlaveCounts {
    /// The reply value.
    pub fn encode(&self) -> Vec<u8> {
        let fields = [
            self.own_live,
            self.own_tombstones,
            self.previous_live,
            self.previous_tombstones,
            self.purged,
            self.collected_tombstones,
            self.collected_values,
            self.last_compaction,
        ];
        fields.iter().flat_map(|f| f.to_be_bytes()).collect()
    }

    /// Reads a reply value: 64 bytes, or the first 32 (the rest then 0); `None` for any
    /// other length.
    pub fn decode(value: &[u8]) -> Option<SlaveCounts> {
        if value.len() != 32 && value.len() != 64 {
            return None;
        }
        let field = |i: usize| {
            value
                .get(i * 8..i * 8 + 8)
                .map_or(0, NetworkEndian::read_u64)
        };
        Some(SlaveCounts {
            own_live: field(0),
            own_tombstones: field(1),
            previous_live: field(2),
            previous_tombstones: field(3),
            purged: field(4),
            collected_tombstones: field(5),
            collected_values: field(6),
            last_compaction: field(7),
        })
    }
}

/// One entry of a bulk chunk (the value of `BulkPut` requests and `BulkGet` replies).
///
/// Packed as: key_len u32, value_len u32, flags u32, version u64, expires u64 (Unix
/// seconds, 0 never), kind u8 (1 value, 0 tombstone), key bytes, value bytes; big-endian.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkEntry {
    /// The key.
    pub key: Vec<u8>,
    /// The entry's version.
    pub version: u64,
    /// memcached flags.
    pub flags: u32,
    /// When the value expires (Unix seconds; 0 never).
    pub expires: u64,
    /// The value, or `None` for a tombstone.
    pub value: Option<Vec<u8>>,
}

/// Size of the fixed part of a packed bulk entry.
pub const BULK_ENTRY_HEADER: usize = 29;

impl BulkEntry {
    /// Bytes this entry takes when packed.
    pub fn packed_len(&self) -> usize {
        BULK_ENTRY_HEADER + self.key.len() + self.value.as_ref().map_or(0, Vec::len)
    }

    /// Appends the packed entry to `out`.
    pub fn pack_into(&self, out: &mut Vec<u8>) {
        let mut head = [0u8; BULK_ENTRY_HEADER];
        NetworkEndian::write_u32(&mut head[0..], self.key.len() as u32);
        let value = self.value.as_deref().unwrap_or(&[]);
        NetworkEndian::write_u32(&mut head[4..], value.len() as u32);
        NetworkEndian::write_u32(&mut head[8..], self.flags);
        NetworkEndian::write_u64(&mut head[12..], self.version);
        NetworkEndian::write_u64(&mut head[20..], self.expires);
        head[28] = u8::from(self.value.is_some());
        out.extend_from_slice(&head);
        out.extend_from_slice(&self.key);
        out.extend_from_slice(value);
    }
}

/// Unpacks a bulk chunk, checking every length against the chunk and the limits.
///
/// # Errors
/// `BulkError` naming the entry and what is wrong with it.
pub fn unpack_bulk(mut chunk: &[u8], limits: &WireLimits) -> Result<Vec<BulkEntry>, BulkError> {
    let mut entries = Vec::new();
    while !chunk.is_empty() {
        let index = entries.len();
        let Some(head) = chunk.get(..BULK_ENTRY_HEADER) else {
            return Err(BulkError::entry(index, "truncated entry header"));
        };
        let key_len = NetworkEndian::read_u32(&head[0..]) as usize;
        let value_len = NetworkEndian::read_u32(&head[4..]) as usize;
        let flags = NetworkEndian::read_u32(&head[8..]);
        let version = NetworkEndian::read_u64(&head[12..]);
        let expires = NetworkEndian::read_u64(&head[20..]);
        let kind = head[28];
        if key_len == 0 || key_len > limits.max_key {
            return Err(BulkError::entry(index, "key length out of range"));
        }
        if value_len > limits.max_value {
            return Err(BulkError::entry(index, "value over the limit"));
        }
        if kind > 1 || (kind == 0 && value_len != 0) {
            return Err(BulkError::entry(index, "bad entry kind"));
        }
        let end = BULK_ENTRY_HEADER + key_len + value_len;
        let Some(body) = chunk.get(BULK_ENTRY_HEADER..end) else {
            return Err(BulkError::entry(index, "entry runs past the chunk"));
        };
        let (key, value) = body.split_at(key_len);
        entries.push(BulkEntry {
            key: key.to_vec(),
            version,
            flags,
            expires,
            value: (kind == 1).then(|| value.to_vec()),
        });
        chunk = &chunk[end..];
    }
    Ok(entries)
}

/// Packs keys for a multi-get: per key, its length (u32) then its bytes.
pub fn pack_keys<K: AsRef<[u8]>>(keys: &[K]) -> Vec<u8> {
    let total: usize = keys.iter().map(|k| 4 + k.as_ref().len()).sum();
    let mut out = Vec::with_capacity(total);
    for key in keys {
        let key = key.as_ref();
        out.extend_from_slice(&(key.len() as u32).to_be_bytes());
        out.extend_from_slice(key);
    }
    out
}

/// Unpacks the keys of a multi-get, checking each length against the value and the limit;
/// the keys are borrowed from `packed`.
///
/// # Errors
/// `BulkError` naming the bad key.
pub fn unpack_keys(mut packed: &[u8], max_key: usize) -> Result<Vec<&[u8]>, BulkError> {
    let mut keys = Vec::new();
    while !packed.is_empty() {
        let index = keys.len();
        let Some((len, rest)) = packed.split_first_chunk::<4>() else {
            return Err(BulkError::key(index, "truncated length"));
        };
        let len = u32::from_be_bytes(*len) as usize;
        if len == 0 || len > max_key {
            return Err(BulkError::key(index, "length out of range"));
        }
        let Some((key, rest)) = rest.split_at_checked(len) else {
            return Err(BulkError::key(index, "runs past the value"));
        };
        keys.push(key);
        packed = rest;
    }
    Ok(keys)
}

/// One key's result in a multi-get reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiGetHit {
    /// The entry's version (the cas unique).
    pub version: u64,
    /// memcached flags.
    pub flags: u32,
    /// When it expires (Unix seconds, 0 never).
    pub expires: u64,
    /// The value.
    pub value: Vec<u8>,
}

/// Bytes of a hit before its value: kind, version, flags, expires, value length.
pub const MULTI_GET_HIT_HEADER: usize = 25;

/// Appends one result: a miss is the byte 0; a hit is 1, version u64, flags u32, expires
/// u64, value length u32, then the value.
pub fn pack_result(out: &mut Vec<u8>, result: Option<&MultiGetHit>) {
    match result {
        Some(hit) => pack_hit(out, hit.version, hit.flags, hit.expires, &hit.value),
        None => out.push(0),
    }
}

/// Appends a hit (as [`pack_result`]) from its parts, the value borrowed where it is.
pub fn pack_hit(out: &mut Vec<u8>, version: u64, flags: u32, expires: u64, value: &[u8]) {
    out.reserve(MULTI_GET_HIT_HEADER + value.len());
    out.push(1);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&expires.to_be_bytes());
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value);
}

/// Unpacks the results of a multi-get reply.
///
/// # Errors
/// `BulkError` naming the bad result.
pub fn unpack_results(mut packed: &[u8]) -> Result<Vec<Option<MultiGetHit>>, BulkError> {
    let mut results = Vec::new();
    while let Some((&kind, rest)) = packed.split_first() {
        let index = results.len();
        match kind {
            0 => {
                results.push(None);
                packed = rest;
            }
            1 => {
                let Some((head, rest)) = rest.split_first_chunk::<24>() else {
                    return Err(BulkError::result(index, "truncated"));
                };
                let len = NetworkEndian::read_u32(&head[20..]) as usize;
                let Some((value, rest)) = rest.split_at_checked(len) else {
                    return Err(BulkError::result(index, "value runs past the reply"));
                };
                results.push(Some(MultiGetHit {
                    version: NetworkEndian::read_u64(&head[..8]),
                    flags: NetworkEndian::read_u32(&head[8..]),
                    expires: NetworkEndian::read_u64(&head[12..]),
                    value: value.to_vec(),
                }));
                packed = rest;
            }
            _ => return Err(BulkError::result(index, "unknown kind (0 miss, 1 hit)")),
        }
    }
    Ok(results)
}

/// A malformed packed value: a bulk chunk, a multi-get's keys or its results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkError {
    /// What was being unpacked: "bulk chunk entry", "multi-get key", "multi-get result".
    pub of: &'static str,
    /// Index of the bad item.
    pub index: usize,
    /// What is wrong.
    pub what: &'static str,
}

impl BulkError {
    fn entry(index: usize, what: &'static str) -> BulkError {
        BulkError {
            of: "bulk chunk entry",
            index,
            what,
        }
    }

    fn key(index: usize, what: &'static str) -> BulkError {
        BulkError {
            of: "multi-get key",
            index,
            what,
        }
    }

    fn result(index: usize, what: &'static str) -> BulkError {
        BulkError {
            of: "multi-get result",
            index,
            what,
        }
    }
}

impl fmt::Display for BulkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad {} {}: {}", self.of, self.index, self.what)
    }
}

impl std::error::Error for BulkError {}
