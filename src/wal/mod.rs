//! A slave's write-ahead log: every mutation of its tables, appended as a checksummed
//! record before the mutation is acknowledged, and replayed at start.
//!
//! Files: log segments `wal.<seq>.log` in the data dir (`slave::data` rotates them and
//! writes snapshots), each the 8-byte magic `PZWAL001`, then records:
//!
//! ```text
//! u32 body length | u32 CRC-32/IEEE of the body | body: u8 kind, fields (big-endian)
//! ```
//!
//! Kinds: 1 put (table, version, flags, key, value), 2 tombstone (table, version, key),
//! 3 absorb (optional arc), 4 split (arc), 5 drop-arc (table, arc), 6 clear, 7 a
//! snapshot's end (count), 8 put with an expiry (table, version, flags, expires, key,
//! value), 9 flush marker (threshold, at), 10 forget (horizon: every entry of both
//! tables with a version below it is dropped). Replaying the
//! records in order rebuilds the tables exactly (puts merge by version, so a repeat is
//! harmless).
//!
//! Recovery: a partial record or a CRC mismatch in the *last* record is a torn write from
//! a crash: it is cut off with a warning naming the offset. Anything wrong before the
//! last record is corruption: start-up stops with an error naming the offset, unless the
//! caller asked to salvage (then the log is cut there, and what followed is lost).
//!
//! Sync modes ([`Fsync`](crate::config::Fsync)): `always` acknowledges a write only after
//! `fdatasync`, with group commit (one writer syncs for everyone waiting); `everysec`
//! syncs from the `wal-sync` thread once a second; `never` leaves it to the OS. In every
//! mode a record is handed to the kernel (`write`) before the reply, so a process crash
//! loses nothing.
//!
//! This module knows records and files; it never looks inside the tables (`store` does
//! that) and never holds its lock across an fsync.
//!
//! Files: `record` ([`Record`], its encoding, the magics and limits), `writer` ([`Wal`]:
//! appends, group commit, rotation), `replay` (reading a log back, the torn-tail cut,
//! salvage), `files` (snapshots, directory syncs, the data dir's `LOCK`), `error`
//! ([`WalError`]); unit tests in `tests.rs`.

mod error;
mod files;
mod record;
mod replay;
#[cfg(test)]
mod tests;
mod writer;

pub use error::WalError;
pub use files::{DirLock, load_snapshot, sync_dir, write_snapshot};
pub use record::{
    MAGIC, MAX_BODY, RECORD_HEADER, RangeOp, Record, RingArc, SNAPSHOT_MAGIC, entry_of,
};
pub use replay::{Replayed, decode_records, read_whole, replay};
pub use writer::{Lsn, Wal};
