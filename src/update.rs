//! Read-modify-write operations (`add replace append prepend cas incr decr touch`, and a
//! delete with a cas): what they are on the wire, and what one does to a key's entry.
//!
//! One sequencer per key: the coordinator holds a per-key lock for the whole operation
//! and asks the key's **primary** to decide ([`decide`]) and apply it at a version the
//! coordinator proposed, in one step under the slave's log lock; the coordinator then
//! writes the resulting entry, at that version, to the key's other places (the replica,
//! a joining slave), exactly like a `set`. The client is answered once all have it.
//!
//! A retry after a failure proposes the same version again: a slave that already holds
//! that version answers with the entry it holds ("already applied"), so an operation is
//! never applied twice. This module is pure: no I/O, no locks.

use byteorder::{ByteOrder, NetworkEndian};

use crate::request::{Create, Request, StoreMode};
use crate::store::{Entry, Version};
use crate::wire::byte_enum;

/// Bytes of the operation in front of the data in a `SlaveUpdate` frame's value.
pub const UPDATE_PREFIX: usize = 40;

byte_enum! {
    /// Which operation.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum Op {
        /// Store only if the key holds nothing.
        Add = 1,
        /// Store only if the key holds a value.
        Replace = 2,
        /// Add the data after the value (flags and expiry kept).
        Append = 3,
        /// Add the data before the value (flags and expiry kept).
        Prepend = 4,
        /// Store whatever is there (used with a cas).
        Set = 5,
        /// Add `delta` to a decimal value (wrapping at 2^64).
        Incr = 6,
        /// Subtract `delta` from a decimal value (stopping at 0).
        Decr = 7,
        /// Set a new expiry, keep the value.
        Touch = 8,
        /// Leave a tombstone (used with a cas).
        Delete = 9,
    }
}

/// Option bit: `Incr`/`Decr` create a missing key with `initial`.
const CREATE: u8 = 1;
/// Option bit: `Incr`/`Decr` also set the expiry of an existing key.
const SET_EXPIRES: u8 = 2;

/// One read-modify-write operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// What to do.
    pub op: Op,
    /// memcached flags of a value this operation creates (add, replace, set, created
    /// counters).
    pub flags: u32,
    /// Expiry (absolute Unix seconds, 0 never) of what this operation writes: the new
    /// value's, touch's, a created counter's, and with `set_expires` an existing counter's.
    pub expires: u64,
    /// Non-zero: the key's current version must be this one (memcached's cas unique).
    pub cas: u64,
    /// `Incr`/`Decr`: by how much.
    pub delta: u64,
    /// `Incr`/`Decr` with `create`: the value a missing key starts with.
    pub initial: u64,
    /// `Incr`/`Decr`: create a missing key with `initial`.
    pub create: bool,
    /// `Incr`/`Decr`: also set an existing key's expiry to `expires`.
    pub set_expires: bool,
    /// The value (add, replace, set) or the part to add (append, prepend).
    pub data: Vec<u8>,
}

impl Update {
    /// An operation with every field but `op` zero or empty.
    pub fn new(op: Op) -> Update {
        Update {
            op,
            flags: 0,
            expires: 0,
            cas: 0,
            delta: 0,
            initial: 0,
            create: false,
            set_expires: false,
            data: Vec::new(),
        }
    }

    /// The frame value: `op u8, options u8, 0 u16, flags u32, expires u64, cas u64, delta
    /// u64, initial u64`, then the data (big-endian).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![0u8; UPDATE_PREFIX];
        out[0] = self.op as u8;
        out[1] =
            if self.create { CREATE } else { 0 } | if self.set_expires { SET_EXPIRES } else { 0 };
        NetworkEndian::write_u32(&mut out[4..], self.flags);
        NetworkEndian::write_u64(&mut out[8..], self.expires);
        NetworkEndian::write_u64(&mut out[16..], self.cas);
        NetworkEndian::write_u64(&mut out[24..], self.delta);
        NetworkEndian::write_u64(&mut out[32..], self.initial);
        out.extend_from_slice(&self.data);
        out
    }

    /// Decodes a frame value; `None` when it is too short or names no operation.
    pub fn decode(value: &[u8]) -> Option<Update> {
        let head = value.get(..UPDATE_PREFIX)?;
        let op = Op::from_u8(head[0])?;
        if head[1] & !(CREATE | SET_EXPIRES) != 0 || head[2..4] != [0, 0] {
            return None;
        }
        Some(Update {
            op,
            create: head[1] & CREATE != 0,
            set_expires: head[1] & SET_EXPIRES != 0,
            flags: NetworkEndian::read_u32(&head[4..]),
            expires: NetworkEndian::read_u64(&head[8..]),
            cas: NetworkEndian::read_u64(&head[16..]),
            delta: NetworkEndian::read_u64(&head[24..]),
            initial: NetworkEndian::read_u64(&head[32..]),
            data: value[UPDATE_PREFIX..].to_vec(),
        })
    }
}

impl Update {
    /// The client request this operation spells (Piazza's `UPDATE` opcode, where
    /// `expires` carries a memcached exptime, two's complement for negative ones).
    pub fn into_request(self, key: Vec<u8>) -> Request {
        let exptime = self.expires as i64;
        let mode = |mode| Request::Store {
            mode,
            key: key.clone(),
            value: self.data.clone(),
            flags: self.flags,
            exptime,
            cas: self.cas,
        };
        match self.op {
            Op::Set => mode(StoreMode::Set),
            Op::Add => mode(StoreMode::Add),
            Op::Replace => mode(StoreMode::Replace),
            Op::Append => mode(StoreMode::Append),
            Op::Prepend => mode(StoreMode::Prepend),
            Op::Incr | Op::Decr => Request::Arith {
                key,
                decr: self.op == Op::Decr,
                delta: self.delta,
                create: self.create.then_some(Create {
                    initial: self.initial,
                    exptime,
                    flags: self.flags,
                }),
                exptime: self.set_expires.then_some(exptime),
                cas: self.cas,
            },
            Op::Touch => Request::Touch { key, exptime },
            Op::Delete => Request::Delete { key, cas: self.cas },
        }
    }
}

/// What an operation does to a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Write this entry (at the proposed version).
    Write(Entry),
    /// The key holds nothing (replace-like operations with a cas, incr, touch, delete).
    NotFound,
    /// The condition did not hold (add of a present key; replace, append, prepend of a
    /// missing one).
    NotStored,
    /// The cas did not match.
    Exists,
    /// incr/decr of a value that is not a decimal number below 2^64.
    NonNumeric,
    /// The result would be over the value limit.
    TooLarge,
}

/// The decimal number a value holds, as memcached reads it for incr/decr (its
/// `safe_strtoull`): optional leading white space, an optional `+` (or a `-` before
/// zero), digits below 2^64, then the end of the value, white space or a NUL, after which
/// anything may follow.
pub fn parse_number(value: &[u8]) -> Option<u64> {
    let space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    let start = value.iter().position(|b| !space(b))?;
    let mut rest = &value[start..];
    let negative = match rest.first() {
        Some(b'+') => {
            rest = &rest[1..];
            false
        }
        Some(b'-') => {
            rest = &rest[1..];
            true
        }
        _ => false,
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in &rest[..digits] {
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    if negative && n != 0 {
        return None;
    }
    match rest.get(digits) {
        None | Some(0) => Some(n),
        Some(b) if space(b) => Some(n),
        Some(_) => None,
    }
}

/// What `update` does to a key whose visible entry is `current` (`None`: nothing, or a
/// tombstone, an expired or a flushed value), writing at `version`.
pub fn decide(
    update: &Update,
    current: Option<&Entry>,
    version: Version,
    max_value: usize,
) -> Decision {
    let live = current.and_then(|c| c.value.as_ref().map(|v| (c, v)));
    let cas_mismatch = |entry: &Entry| update.cas != 0 && entry.version.0 != update.cas;
    let fresh = |value: Vec<u8>, flags: u32, expires: u64| {
        if value.len() > max_value {
            return Decision::TooLarge;
        }
        Decision::Write(Entry {
            version,
            flags,
            expires,
            value: Some(value),
        })
    };
    match (update.op, live) {
        (Op::Add, Some(_)) => Decision::NotStored,
        (Op::Add, None) => fresh(update.data.clone(), update.flags, update.expires),
        (Op::Replace | Op::Append | Op::Prepend, None) => Decision::NotStored,
        (Op::Touch | Op::Delete, None) => Decision::NotFound,
        (Op::Set, None) if update.cas != 0 => Decision::NotFound,
        (Op::Set, None) => fresh(update.data.clone(), update.flags, update.expires),
        (Op::Incr | Op::Decr, None) if update.create => fresh(
            update.initial.to_string().into_bytes(),
            update.flags,
            update.expires,
        ),
        (Op::Incr | Op::Decr, None) => Decision::NotFound,
        (_, Some((entry, _))) if cas_mismatch(entry) => Decision::Exists,
        (Op::Replace | Op::Set, Some(_)) => {
            fresh(update.data.clone(), update.flags, update.expires)
        }
        (Op::Append | Op::Prepend, Some((entry, old))) => {
            let mut value = Vec::with_capacity(old.len() + update.data.len());
            if update.op == Op::Append {
                value.extend_from_slice(old);
                value.extend_from_slice(&update.data);
            } else {
                value.extend_from_slice(&update.data);
                value.extend_from_slice(old);
            }
            fresh(value, entry.flags, entry.expires)
        }
        (Op::Touch, Some((entry, old))) => fresh(old.clone(), entry.flags, update.expires),
        (Op::Delete, Some(_)) => Decision::Write(Entry::tombstone(version)),
        (Op::Incr | Op::Decr, Some((entry, old))) => {
            let Some(number) = parse_number(old) else {
                return Decision::NonNumeric;
            };
            let number = if update.op == Op::Incr {
                number.wrapping_add(update.delta)
            } else {
                number.saturating_sub(update.delta)
            };
            let mut value = number.to_string().into_bytes();
            // memcached rewrites a shorter number in place, padded with spaces.
            if value.len() < old.len() {
                value.resize(old.len(), b' ');
            }
            let expires = if update.set_expires {
                update.expires
            } else {
                entry.expires
            };
            fresh(value, entry.flags, expires)
        }
    }
}

/// An entry as a `SlaveUpdate` reply carries it: `kind u8 (1 value, 0 tombstone),
/// expires u64`, then the value; the version and flags ride in the header.
pub fn encode_entry(entry: &Entry) -> Vec<u8> {
    let value = entry.value.as_deref().unwrap_or_default();
    let mut out = Vec::with_capacity(9 + value.len());
    out.push(u8::from(entry.value.is_some()));
    out.extend_from_slice(&entry.expires.to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// The entry of a `SlaveUpdate` reply; `None` when the value is malformed.
pub fn decode_entry(version: u64, flags: u32, value: &[u8]) -> Option<Entry> {
    let (&kind, rest) = value.split_first()?;
    let (expires, data) = rest.split_first_chunk::<8>()?;
    match kind {
        1 => Some(Entry {
            version: Version(version),
            flags,
            expires: u64::from_be_bytes(*expires),
            value: Some(data.to_vec()),
        }),
        0 if data.is_empty() => Some(Entry::tombstone(Version(version))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: Version = Version(100);

    fn live(value: &[u8]) -> Entry {
        Entry {
            version: Version(50),
            flags: 7,
            expires: 1_900_000_000,
            value: Some(value.to_vec()),
        }
    }

    fn op(op: Op, data: &[u8]) -> Update {
        Update {
            data: data.to_vec(),
            flags: 3,
            expires: 1_800_000_000,
            ..Update::new(op)
        }
    }

    fn written(decision: Decision) -> Entry {
        match decision {
            Decision::Write(entry) => entry,
            other => panic!("expected a write, got {other:?}"),
        }
    }

    #[test]
    fn add_and_replace_depend_on_presence() {
        let old = live(b"old");
        assert_eq!(
            decide(&op(Op::Add, b"x"), Some(&old), V, 100),
            Decision::NotStored
        );
        let added = written(decide(&op(Op::Add, b"x"), None, V, 100));
        assert_eq!(
            (added.value, added.flags, added.expires, added.version),
            (Some(b"x".to_vec()), 3, 1_800_000_000, V)
        );
        assert_eq!(
            decide(&op(Op::Replace, b"x"), None, V, 100),
            Decision::NotStored
        );
        assert_eq!(
            written(decide(&op(Op::Replace, b"x"), Some(&old), V, 100)).value,
            Some(b"x".to_vec())
        );
        // A tombstone counts as nothing.
        let gone = Entry::tombstone(Version(9));
        assert!(matches!(
            decide(&op(Op::Add, b"x"), Some(&gone), V, 100),
            Decision::Write(_)
        ));
    }

    #[test]
    fn append_and_prepend_keep_flags_and_expiry() {
        let old = live(b"mid");
        let appended = written(decide(&op(Op::Append, b"+"), Some(&old), V, 100));
        assert_eq!(appended.value, Some(b"mid+".to_vec()));
        assert_eq!((appended.flags, appended.expires), (7, 1_900_000_000));
        let prepended = written(decide(&op(Op::Prepend, b"-"), Some(&old), V, 100));
        assert_eq!(prepended.value, Some(b"-mid".to_vec()));
        assert_eq!(
            decide(&op(Op::Append, b"x"), None, V, 100),
            Decision::NotStored
        );
        assert_eq!(
            decide(&op(Op::Append, b"toolong"), Some(&old), V, 5),
            Decision::TooLarge
        );
    }

    #[test]
    fn cas_matches_the_version() {
        let old = live(b"v");
        let mut set = op(Op::Set, b"new");
        set.cas = 50;
        assert!(matches!(
            decide(&set, Some(&old), V, 100),
            Decision::Write(_)
        ));
        set.cas = 49;
        assert_eq!(decide(&set, Some(&old), V, 100), Decision::Exists);
        assert_eq!(decide(&set, None, V, 100), Decision::NotFound);
        let mut delete = Update::new(Op::Delete);
        delete.cas = 49;
        assert_eq!(decide(&delete, Some(&old), V, 100), Decision::Exists);
        delete.cas = 50;
        assert_eq!(
            decide(&delete, Some(&old), V, 100),
            Decision::Write(Entry::tombstone(V))
        );
        assert_eq!(decide(&delete, None, V, 100), Decision::NotFound);
    }

    #[test]
    fn incr_wraps_decr_stops_at_zero_and_pads_like_memcached() {
        let mut incr = Update::new(Op::Incr);
        incr.delta = 1;
        let max = live(u64::MAX.to_string().as_bytes());
        assert_eq!(
            written(decide(&incr, Some(&max), V, 100)).value,
            Some(b"0                   ".to_vec())
        );
        let mut decr = Update::new(Op::Decr);
        decr.delta = 5;
        assert_eq!(
            written(decide(&decr, Some(&live(b"3")), V, 100)).value,
            Some(b"0".to_vec())
        );
        decr.delta = 1;
        let ten = written(decide(&decr, Some(&live(b"10")), V, 100));
        assert_eq!(ten.value, Some(b"9 ".to_vec()));
        assert_eq!(parse_number(b"9 "), Some(9));
        // memcached's safe_strtoull: what follows white space or a NUL is ignored.
        assert_eq!(parse_number(b"7 x"), Some(7));
        assert_eq!(parse_number(b"12\r\nabc"), Some(12));
        assert_eq!(parse_number(b"1\0"), Some(1));
        assert_eq!(parse_number(b" +5"), Some(5));
        assert_eq!(parse_number(b"-0"), Some(0));
        assert_eq!(parse_number(b"-5"), None);
        assert_eq!(parse_number(b"5x"), None);
        assert_eq!(parse_number(b""), None);
        assert_eq!(parse_number(b"  "), None);
        assert_eq!(
            decide(&incr, Some(&live(b"x1")), V, 100),
            Decision::NonNumeric
        );
        assert_eq!(
            decide(&incr, Some(&live(b"18446744073709551616")), V, 100),
            Decision::NonNumeric
        );
        assert_eq!(decide(&incr, None, V, 100), Decision::NotFound);
        incr.create = true;
        incr.initial = 42;
        assert_eq!(
            written(decide(&incr, None, V, 100)).value,
            Some(b"42".to_vec())
        );
    }

    #[test]
    fn touch_changes_only_the_expiry() {
        let old = live(b"v");
        let touched = written(decide(&op(Op::Touch, b""), Some(&old), V, 100));
        assert_eq!(
            (touched.value, touched.flags, touched.expires),
            (Some(b"v".to_vec()), 7, 1_800_000_000)
        );
        assert_eq!(
            decide(&op(Op::Touch, b""), None, V, 100),
            Decision::NotFound
        );
    }

    /// protocol.md, section 3: an UPDATE that adds 5 to key `n`, and one that sets `k` to
    /// `hi` for 300 seconds; FLUSH at once.
    #[test]
    fn protocol_examples_are_these_bytes() {
        use crate::wire::{Frame, Opcode};
        let hex = |bytes: Vec<u8>| -> String { bytes.iter().map(|b| format!("{b:02x}")).collect() };
        let incr = Update {
            delta: 5,
            ..Update::new(Op::Incr)
        };
        let frame = Frame::request(Opcode::Update, 1, b"n".to_vec(), incr.encode());
        assert_eq!(
            hex(frame.encode()),
            "a701080000000001000000000000000000000000000000000000000100000028a866efae6e06000000000000000000000000000000000000000000000000000000000000050000000000000000"
        );
        let set = Update {
            expires: 300,
            data: b"hi".to_vec(),
            ..Update::new(Op::Set)
        };
        let frame = Frame::request(Opcode::Update, 2, b"k".to_vec(), set.encode());
        assert_eq!(
            hex(frame.encode()),
            "a70108000000000200000000000000000000000000000000000000010000002af46a2ef96b0500000000000000000000000000012c0000000000000000000000000000000000000000000000006869"
        );
        let flush = Frame::request(Opcode::Flush, 3, Vec::new(), Vec::new());
        assert_eq!(
            hex(flush.encode()),
            "a7010900000000030000000000000000000000000000000000000000000000004efa4e29"
        );
        let keys = crate::wire::pack_keys(&[b"a", b"b"]);
        let multi = Frame::request(Opcode::MultiGet, 4, Vec::new(), keys);
        assert_eq!(
            hex(multi.encode()),
            "a7010a000000000400000000000000000000000000000000000000000000000a282ffd9600000001610000000162"
        );
    }

    #[test]
    fn operations_and_entries_round_trip() {
        let mut update = op(Op::Incr, b"data");
        update.cas = 9;
        update.delta = 10;
        update.initial = 11;
        update.create = true;
        assert_eq!(Update::decode(&update.encode()), Some(update));
        assert_eq!(Update::decode(&[0u8; 39]), None);
        assert_eq!(Update::decode(&[0u8; 40]), None);
        let entry = live(b"v");
        assert_eq!(decode_entry(50, 7, &encode_entry(&entry)), Some(entry));
        let tomb = Entry::tombstone(Version(5));
        assert_eq!(decode_entry(5, 0, &encode_entry(&tomb)), Some(tomb));
        assert_eq!(decode_entry(5, 0, &[2]), None);
    }
}
