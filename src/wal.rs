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
//! Sync modes ([`Fsync`]): `always` acknowledges a write only after `fdatasync`, with
//! group commit (one writer syncs for everyone waiting); `everysec` syncs from the
//! `wal-sync` thread once a second; `never` leaves it to the OS. In every mode a record
//! is handed to the kernel (`write`) before the reply, so a process crash loses nothing.
//!
//! This module knows records and files; it never looks inside the tables (`store` does
//! that) and never holds its lock across an fsync.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

use byteorder::{ByteOrder, NetworkEndian};

use crate::config::Fsync;
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
    fn decode_body(body: &[u8]) -> Option<Record> {
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

/// What went wrong with the log.
#[derive(Debug)]
pub enum WalError {
    /// Another process holds the data dir.
    Locked {
        /// The lock file.
        path: PathBuf,
        /// What it says (the other process's pid).
        holder: String,
    },
    /// Opening, reading or writing a file failed.
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Syncing the log to disk failed: the write may not be durable.
    Sync {
        /// The log file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file is not a Piazza log.
    BadMagic {
        /// The file.
        path: PathBuf,
    },
    /// A bad record before the last one.
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the bad record starts.
        offset: u64,
        /// What is wrong.
        what: &'static str,
    },
    /// A previous sync failed: the log refuses further writes until restarted.
    Poisoned,
}

impl fmt::Display for WalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalError::Locked { path, holder } => write!(
                f,
                "data dir is in use by another process ({holder}; lock file {}): stop it or choose another --data-dir",
                path.display()
            ),
            WalError::Io { what, path, source } => {
                write!(f, "cannot {what} {}: {source}", path.display())?;
                if source.raw_os_error() == Some(28) {
                    write!(f, " (disk full: free space or move --data-dir)")?;
                }
                Ok(())
            }
            WalError::Sync { path, source } => write!(
                f,
                "cannot sync {} to disk: {source} (the write was not acknowledged)",
                path.display()
            ),
            WalError::BadMagic { path } => write!(
                f,
                "{} is not a piazza log (wrong first bytes): move it away or choose another --data-dir",
                path.display()
            ),
            WalError::Corrupt { path, offset, what } => write!(
                f,
                "log {} is corrupt at byte {offset} ({what}), before its last record: refusing to start; run with --salvage to cut the log there (losing what follows)",
                path.display()
            ),
            WalError::Poisoned => write!(f, "an earlier log sync failed; restart the slave"),
        }
    }
}

impl std::error::Error for WalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WalError::Io { source, .. } | WalError::Sync { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_error<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> WalError + 'a {
    move |source| WalError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// What replaying found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// Records read.
    pub records: u64,
    /// Bytes of log kept.
    pub bytes: u64,
    /// Where a torn or cut tail started, and why, if one was cut.
    pub cut: Option<(u64, &'static str)>,
}

/// Reads every intact record of the log at `path` and hands it to `apply`, then cuts a
/// torn tail (or, with `salvage`, a corrupt middle). A missing file is an empty log.
///
/// # Errors
/// `Corrupt` for damage before the last record (without `salvage`), `BadMagic`, `Io`.
pub fn replay(path: &Path, salvage: bool, apply: impl FnMut(Record)) -> Result<Replayed, WalError> {
    replay_file(path, MAGIC, salvage, true, apply)
}

/// [`replay`] without changing the file: damage is reported in `cut` (or as `Corrupt`),
/// never cut off. For files that must be whole (older segments, snapshots).
///
/// # Errors
/// As [`replay`].
pub fn read_whole(path: &Path, apply: impl FnMut(Record)) -> Result<Replayed, WalError> {
    replay_file(path, MAGIC, false, false, apply)
}

/// [`replay`] for a file with the given magic; `cut_file` says whether a torn tail (or a
/// salvaged middle) is cut off the file or only reported.
fn replay_file(
    path: &Path,
    magic: &[u8; 8],
    salvage: bool,
    cut_file: bool,
    mut apply: impl FnMut(Record),
) -> Result<Replayed, WalError> {
    let mut data = Vec::new();
    match File::open(path) {
        Ok(mut file) => {
            file.read_to_end(&mut data)
                .map_err(io_error("read the log", path))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Replayed::default()),
        Err(e) => return Err(io_error("open the log", path)(e)),
    }
    if data.is_empty() {
        return Ok(Replayed::default());
    }
    if data.len() < magic.len() || &data[..magic.len()] != magic {
        if data.len() < magic.len() && magic.starts_with(&data) {
            // Crashed while writing the magic itself.
            if cut_file {
                truncate(path, 0)?;
            }
            return Ok(Replayed {
                cut: Some((0, "partial file header")),
                ..Replayed::default()
            });
        }
        return Err(WalError::BadMagic {
            path: path.to_path_buf(),
        });
    }
    let mut offset = magic.len();
    let mut replayed = Replayed::default();
    while offset < data.len() {
        let problem = match check_record(&data, offset) {
            Ok((record, next)) => {
                apply(record);
                replayed.records += 1;
                offset = next;
                continue;
            }
            Err(problem) => problem,
        };
        let (what, _) = problem;
        // A problem is a torn tail when no intact record follows it anywhere.
        let is_tail = !(offset + 1..data.len()).any(|at| check_record(&data, at).is_ok());
        if !is_tail && !salvage {
            return Err(WalError::Corrupt {
                path: path.to_path_buf(),
                offset: offset as u64,
                what,
            });
        }
        if cut_file {
            truncate(path, offset as u64)?;
        }
        replayed.cut = Some((offset as u64, what));
        break;
    }
    replayed.bytes = offset as u64;
    Ok(replayed)
}

/// Decodes the records of a log held in memory (after its magic), stopping at the first
/// damaged one: the records, and where and why it stopped (`None` if it reached the
/// end). Pure: used by the fuzzer and by tools.
pub fn decode_records(data: &[u8]) -> (Vec<Record>, Option<(usize, &'static str)>) {
    let mut records = Vec::new();
    let mut offset = 0;
    while offset < data.len() {
        match check_record(data, offset) {
            Ok((record, next)) => {
                records.push(record);
                offset = next;
            }
            Err((what, _)) => return (records, Some((offset, what))),
        }
    }
    (records, None)
}

/// Checks the record at `offset`: the record and where the next one starts, or what is
/// wrong and where this record would end (`None` if its length is unusable).
#[allow(clippy::type_complexity)] // a private helper's pair of outcomes
fn check_record(
    data: &[u8],
    offset: usize,
) -> Result<(Record, usize), (&'static str, Option<usize>)> {
    let Some(header) = data.get(offset..offset + RECORD_HEADER) else {
        return Err(("partial record header", None));
    };
    let len = NetworkEndian::read_u32(&header[0..]) as usize;
    let crc = NetworkEndian::read_u32(&header[4..]);
    if len == 0 || len > MAX_BODY {
        return Err(("impossible record length", None));
    }
    let end = offset + RECORD_HEADER + len;
    let Some(body) = data.get(offset + RECORD_HEADER..end) else {
        return Err(("partial record", Some(end)));
    };
    if crc32fast::hash(body) != crc {
        return Err(("crc mismatch", Some(end)));
    }
    match Record::decode_body(body) {
        Some(record) => Ok((record, end)),
        None => Err(("unreadable record", Some(end))),
    }
}

/// Loads a snapshot: every record goes to `apply`. A snapshot is renamed into place only
/// once complete and synced, so anything short of a full one with its end record is
/// corruption.
///
/// # Errors
/// `Corrupt` when the file is damaged or incomplete; `Io`, `BadMagic`.
pub fn load_snapshot(path: &Path, mut apply: impl FnMut(Record)) -> Result<u64, WalError> {
    let mut entries = 0u64;
    let mut end = None;
    let replayed = replay_file(path, SNAPSHOT_MAGIC, false, false, |record| match record {
        Record::End(count) => end = Some(count),
        other => {
            entries += 1;
            apply(other);
        }
    });
    let corrupt = |what| WalError::Corrupt {
        path: path.to_path_buf(),
        offset: 0,
        what,
    };
    match replayed {
        Ok(r) if r.cut.is_some() => Err(corrupt("damaged snapshot")),
        Ok(_) if end == Some(entries) => Ok(entries),
        Ok(_) => Err(corrupt("incomplete snapshot")),
        Err(e) => Err(e),
    }
}

/// Writes a snapshot to `path` (via a temporary file, synced, renamed, directory
/// synced) from the records `next` yields, then an end record. Returns its size.
///
/// # Errors
/// `Io` naming the file.
pub fn write_snapshot(
    path: &Path,
    mut next: impl FnMut(&mut Vec<u8>) -> Option<u64>,
) -> Result<u64, WalError> {
    let tmp = path.with_extension("tmp");
    let mut write = || -> io::Result<u64> {
        let mut file = io::BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        file.write_all(SNAPSHOT_MAGIC)?;
        let mut buf = Vec::with_capacity(1 << 20);
        let mut count = 0;
        let mut size = SNAPSHOT_MAGIC.len() as u64;
        while let Some(added) = next(&mut buf) {
            count += added;
            size += buf.len() as u64;
            file.write_all(&buf)?;
            buf.clear();
        }
        Record::End(count).encode_into(&mut buf);
        size += buf.len() as u64;
        file.write_all(&buf)?;
        let file = file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(size)
    };
    let size = write().map_err(io_error("write the snapshot", &tmp))?;
    fs::rename(&tmp, path).map_err(io_error("rename the snapshot into place", path))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(size)
}

fn truncate(path: &Path, len: u64) -> Result<(), WalError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_error("open the log to cut its tail", path))?;
    file.set_len(len)
        .and_then(|()| file.sync_all())
        .map_err(io_error("cut the log's tail", path))
}

struct Writer {
    file: File,
    /// The current segment's path.
    path: PathBuf,
    /// Log bytes before the current segment (positions are global across segments).
    base: u64,
    /// Bytes written (handed to the kernel), counted from the first segment.
    written: u64,
    /// Bytes known to be on disk.
    synced: u64,
    /// A sync is under way (its leader releases the lock while it runs).
    syncing: bool,
    /// A sync failed: nothing more may be acknowledged.
    poisoned: bool,
}

/// The open log, shared by a slave's connection threads.
pub struct Wal {
    mode: Fsync,
    writer: Mutex<Writer>,
    synced: Condvar,
}

/// A position in the log, returned by [`Wal::append`], to wait on with [`Wal::sync_to`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lsn(u64);

impl Wal {
    /// Opens (or creates) the log at `path` for appending, after [`replay`].
    ///
    /// # Errors
    /// `Io` when the file cannot be opened or created.
    pub fn open(path: &Path, mode: Fsync) -> Result<Wal, WalError> {
        let (file, written) = open_segment(path)?;
        Ok(Wal {
            mode,
            writer: Mutex::new(Writer {
                file,
                path: path.to_path_buf(),
                base: 0,
                written,
                synced: written,
                syncing: false,
                poisoned: false,
            }),
            synced: Condvar::new(),
        })
    }

    /// Starts a new segment at `path`: every later record goes to it, and the current
    /// one is synced and closed. The new segment is created (and synced, with its
    /// directory) before the lock is taken, and the old one is synced after it is
    /// released, like a group commit: appends wait for neither.
    ///
    /// # Errors
    /// `Io`/`Sync` when the new segment cannot be created or the old one synced.
    pub fn rotate(&self, path: &Path) -> Result<(), WalError> {
        let (file, len) = open_segment(path)?;
        let mut writer = self.lock();
        while writer.syncing {
            writer = self.synced.wait(writer).unwrap_or_else(|p| p.into_inner());
        }
        if writer.poisoned {
            return Err(WalError::Poisoned);
        }
        let old = std::mem::replace(&mut writer.file, file);
        let old_path = std::mem::replace(&mut writer.path, path.to_path_buf());
        writer.base = writer.written;
        writer.written += len;
        // The new segment's header is on disk already: once the old segment is synced,
        // everything up to here is.
        let target = writer.written;
        writer.syncing = true;
        drop(writer);
        let result = old.sync_data();
        drop(old);
        let mut writer = self.lock();
        writer.syncing = false;
        let outcome = match result {
            Ok(()) => {
                writer.synced = writer.synced.max(target);
                Ok(())
            }
            Err(source) => {
                writer.poisoned = true;
                Err(WalError::Sync {
                    path: old_path,
                    source,
                })
            }
        };
        self.synced.notify_all();
        outcome
    }
}

/// Opens a segment for appending, writing its magic if it is new; returns it and its
/// length.
fn open_segment(path: &Path) -> Result<(File, u64), WalError> {
    {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .map_err(io_error("open the log", path))?;
        let mut written = file
            .seek(SeekFrom::End(0))
            .map_err(io_error("open the log", path))?;
        if written == 0 {
            file.write_all(MAGIC)
                .and_then(|()| file.sync_all())
                .map_err(io_error("write the log header", path))?;
            written = MAGIC.len() as u64;
            if let Some(dir) = path.parent() {
                sync_dir(dir)?;
            }
        }
        Ok((file, written))
    }
}

impl Wal {
    fn lock(&self) -> MutexGuard<'_, Writer> {
        // The writer's fields are updated after each successful call; a panic cannot
        // leave them claiming more than was written.
        crate::sync::lock(&self.writer)
    }

    /// The sync mode.
    pub fn mode(&self) -> Fsync {
        self.mode
    }

    /// Bytes in the current segment.
    pub fn len(&self) -> u64 {
        let writer = self.lock();
        writer.written - writer.base
    }

    /// True when the log holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() <= MAGIC.len() as u64
    }

    /// Appends encoded records in one `write` while `apply` runs under the same lock, so
    /// the log's order is the order mutations were applied in. The bytes are written
    /// before `apply` runs: if the write fails, nothing is applied.
    ///
    /// # Errors
    /// `Io` when the write fails (disk full...); `Poisoned` after a failed sync.
    pub fn append<T>(&self, bytes: &[u8], apply: impl FnOnce() -> T) -> Result<(T, Lsn), WalError> {
        let mut writer = self.lock();
        if writer.poisoned {
            return Err(WalError::Poisoned);
        }
        if let Err(source) = writer.file.write_all(bytes) {
            // A partial write leaves a torn record: cut it so the next append starts clean.
            let length = writer.written - writer.base;
            let _ = writer.file.set_len(length);
            return Err(WalError::Io {
                what: "append to the log",
                path: writer.path.clone(),
                source,
            });
        }
        writer.written += bytes.len() as u64;
        let lsn = Lsn(writer.written);
        Ok((apply(), lsn))
    }

    /// Like [`Wal::append`], for a mutation that must be decided and applied in one step
    /// with nothing logged in between (read-modify-write): under the log's lock, `decide`
    /// returns the record bytes (empty: nothing to log) and its result; the bytes are
    /// written, then `apply` runs with the result.
    ///
    /// # Errors
    /// As [`Wal::append`]; then nothing was applied.
    pub fn append_with<T>(
        &self,
        decide: impl FnOnce() -> (Vec<u8>, T),
        apply: impl FnOnce(&T),
    ) -> Result<(T, Lsn), WalError> {
        let mut writer = self.lock();
        if writer.poisoned {
            return Err(WalError::Poisoned);
        }
        let (bytes, decided) = decide();
        if bytes.is_empty() {
            return Ok((decided, Lsn(writer.written)));
        }
        if let Err(source) = writer.file.write_all(&bytes) {
            let length = writer.written - writer.base;
            let _ = writer.file.set_len(length);
            return Err(WalError::Io {
                what: "append to the log",
                path: writer.path.clone(),
                source,
            });
        }
        writer.written += bytes.len() as u64;
        apply(&decided);
        Ok((decided, Lsn(writer.written)))
    }

    /// Waits until the log is on disk up to `lsn` when the mode is `always` (group
    /// commit: the first waiter syncs for all); returns at once otherwise.
    ///
    /// # Errors
    /// `Sync` when the sync fails (the log then refuses all further writes).
    pub fn sync_to(&self, lsn: Lsn) -> Result<(), WalError> {
        if self.mode != Fsync::Always {
            return Ok(());
        }
        let mut writer = self.lock();
        loop {
            if writer.poisoned {
                return Err(WalError::Poisoned);
            }
            if writer.synced >= lsn.0 {
                return Ok(());
            }
            if writer.syncing {
                writer = self.synced.wait(writer).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            writer = self.lead_sync(writer)?;
        }
    }

    /// Syncs everything written so far, releasing the lock while the disk works.
    fn lead_sync<'a>(
        &'a self,
        mut writer: MutexGuard<'a, Writer>,
    ) -> Result<MutexGuard<'a, Writer>, WalError> {
        writer.syncing = true;
        let target = writer.written;
        let path = writer.path.clone();
        let file = writer.file.try_clone();
        drop(writer);
        let result = file.and_then(|file| file.sync_data());
        let mut writer = self.lock();
        writer.syncing = false;
        match result {
            Ok(()) => writer.synced = writer.synced.max(target),
            Err(source) => {
                writer.poisoned = true;
                self.synced.notify_all();
                return Err(WalError::Sync { path, source });
            }
        }
        self.synced.notify_all();
        Ok(writer)
    }

    /// Syncs whatever was written and not yet synced (the `everysec` thread, shutdown).
    ///
    /// # Errors
    /// `Sync` when the sync fails.
    pub fn sync_now(&self) -> Result<(), WalError> {
        let writer = self.lock();
        if writer.synced >= writer.written || writer.syncing {
            return Ok(());
        }
        self.lead_sync(writer).map(drop)
    }
}

/// Syncs a directory, so a file created or renamed in it survives a crash.
///
/// # Errors
/// `Io` naming the directory.
pub fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("sync the directory", dir))
}

/// One process per data dir: a `LOCK` file holding the owner's pid, removed on drop. A
/// lock left by a process that no longer runs is taken over.
pub struct DirLock {
    path: PathBuf,
}

impl DirLock {
    /// Takes the lock of `dir`.
    ///
    /// # Errors
    /// `Locked` when a running process holds it; `Io` when it cannot be written.
    pub fn acquire(dir: &Path) -> Result<DirLock, WalError> {
        let path = dir.join("LOCK");
        for _ in 0..2 {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    file.write_all(format!("{}\n", std::process::id()).as_bytes())
                        .and_then(|()| file.sync_all())
                        .map_err(io_error("write the lock file", &path))?;
                    return Ok(DirLock { path });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let holder = fs::read_to_string(&path).unwrap_or_default();
                    let pid = holder.trim();
                    let alive = !pid.is_empty()
                        && pid.parse::<u32>().is_ok()
                        && pid != std::process::id().to_string()
                        && Path::new("/proc").join(pid).exists();
                    if alive {
                        return Err(WalError::Locked {
                            path,
                            holder: format!("pid {pid}"),
                        });
                    }
                    // Stale: its owner is gone.
                    fs::remove_file(&path).map_err(io_error("remove a stale lock file", &path))?;
                }
                Err(e) => return Err(io_error("create the lock file", &path)(e)),
            }
        }
        Err(WalError::Locked {
            path,
            holder: "another process took it meanwhile".into(),
        })
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("piazza-wal-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn samples() -> Vec<Record> {
        vec![
            Record::Put {
                table: Table::Own,
                key: b"k1".to_vec(),
                version: 7,
                flags: 3,
                expires: 0,
                value: b"v\r\n\0".to_vec(),
            },
            Record::Put {
                table: Table::Own,
                key: b"k-ttl".to_vec(),
                version: 8,
                flags: 4,
                expires: 1_900_000_000,
                value: b"expiring".to_vec(),
            },
            Record::Flush(FlushMarker {
                threshold: 99,
                at: 1_800_000_000_000_000,
            }),
            Record::Tombstone {
                table: Table::Previous,
                key: b"k2".to_vec(),
                version: 9,
            },
            Record::Absorb(Some((1, 2))),
            Record::Absorb(None),
            Record::Split((5, 6)),
            Record::DropArc(Table::Previous, (7, 8)),
            Record::Ranges(RangeOp::Absorb, vec![(1, 2), (3, 4)]),
            Record::Ranges(RangeOp::Demote, vec![]),
            Record::Ranges(RangeOp::Drop(Table::Own), vec![(u64::MAX, 0)]),
            Record::Ranges(RangeOp::Drop(Table::Previous), vec![(5, 5)]),
            Record::Clear,
            Record::Forget(0x0102_0304_0506_0708),
            Record::Put {
                table: Table::Previous,
                key: b"last".to_vec(),
                version: 10,
                flags: 0,
                expires: 0,
                value: Vec::new(),
            },
        ]
    }

    fn write_log(path: &Path, records: &[Record]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        for record in records {
            record.encode_into(&mut bytes);
        }
        fs::write(path, &bytes).unwrap();
        bytes
    }

    fn read_back(path: &Path, salvage: bool) -> Result<(Vec<Record>, Replayed), WalError> {
        let mut records = Vec::new();
        let replayed = replay(path, salvage, |r| records.push(r))?;
        Ok((records, replayed))
    }

    #[test]
    fn records_round_trip() {
        let dir = temp_dir("round");
        let path = dir.join("wal.log");
        let wal = Wal::open(&path, Fsync::Always).unwrap();
        for record in samples() {
            let mut bytes = Vec::new();
            record.encode_into(&mut bytes);
            let (_, lsn) = wal.append(&bytes, || ()).unwrap();
            wal.sync_to(lsn).unwrap();
        }
        drop(wal);
        let (records, replayed) = read_back(&path, false).unwrap();
        assert_eq!(records, samples());
        assert_eq!(replayed.cut, None);
        // Reopening appends after what is there.
        let wal = Wal::open(&path, Fsync::Never).unwrap();
        let mut bytes = Vec::new();
        Record::Clear.encode_into(&mut bytes);
        wal.append(&bytes, || ()).unwrap();
        drop(wal);
        assert_eq!(
            read_back(&path, false).unwrap().0.len(),
            samples().len() + 1
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_cut_at_every_byte_of_the_last_record_keeps_every_earlier_one() {
        let dir = temp_dir("torn");
        let path = dir.join("wal.log");
        let records = samples();
        let full = write_log(&path, &records);
        let mut last_start = MAGIC.len();
        for record in &records[..records.len() - 1] {
            let mut bytes = Vec::new();
            record.encode_into(&mut bytes);
            last_start += bytes.len();
        }
        for cut in last_start..full.len() {
            fs::write(&path, &full[..cut]).unwrap();
            let (got, replayed) = read_back(&path, false).unwrap();
            assert_eq!(got, records[..records.len() - 1], "cut at {cut}");
            if cut > last_start {
                assert_eq!(replayed.cut.map(|c| c.0), Some(last_start as u64));
            }
            assert_eq!(
                fs::metadata(&path).unwrap().len(),
                last_start as u64,
                "tail cut off"
            );
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_flipped_bit_in_the_last_record_is_cut_and_in_the_middle_stops_the_start() {
        let dir = temp_dir("flip");
        let path = dir.join("wal.log");
        let records = samples();
        let full = write_log(&path, &records);
        // Last record: its last byte.
        let mut bad = full.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x01;
        fs::write(&path, &bad).unwrap();
        let (got, replayed) = read_back(&path, false).unwrap();
        assert_eq!(got, records[..records.len() - 1]);
        assert_eq!(replayed.cut.map(|c| c.1), Some("crc mismatch"));
        // Middle: a byte of the first record's body.
        let mut bad = full.clone();
        bad[MAGIC.len() + RECORD_HEADER + 3] ^= 0x10;
        fs::write(&path, &bad).unwrap();
        let err = read_back(&path, false).unwrap_err();
        assert!(matches!(err, WalError::Corrupt { offset: 8, .. }), "{err}");
        assert!(err.to_string().contains("--salvage"), "{err}");
        assert_eq!(
            fs::read(&path).unwrap(),
            bad,
            "nothing is cut without --salvage"
        );
        // Salvage cuts there.
        let (got, replayed) = read_back(&path, true).unwrap();
        assert!(got.is_empty());
        assert_eq!(replayed.cut.map(|c| c.0), Some(8));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn snapshots_round_trip_and_an_incomplete_one_is_refused() {
        let dir = temp_dir("snap");
        let path = dir.join("snapshot.1");
        let records = samples();
        let mut left = records.clone();
        left.reverse();
        write_snapshot(&path, |buf| {
            let record = left.pop()?;
            record.encode_into(buf);
            Some(1)
        })
        .unwrap();
        let mut got = Vec::new();
        assert_eq!(
            load_snapshot(&path, |r| got.push(r)).unwrap(),
            records.len() as u64
        );
        assert_eq!(got, records);
        // Without its end record (or cut anywhere), it is refused, and left as it is.
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert!(matches!(
            load_snapshot(&path, |_| ()),
            Err(WalError::Corrupt { .. })
        ));
        assert_eq!(fs::read(&path).unwrap().len(), bytes.len() - 3);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rotation_moves_appends_to_a_new_segment() {
        let dir = temp_dir("rotate");
        let wal = Wal::open(&dir.join("a.log"), Fsync::Always).unwrap();
        let mut bytes = Vec::new();
        Record::Clear.encode_into(&mut bytes);
        let (_, first) = wal.append(&bytes, || ()).unwrap();
        wal.rotate(&dir.join("b.log")).unwrap();
        assert_eq!(wal.len(), MAGIC.len() as u64);
        let (_, second) = wal.append(&bytes, || ()).unwrap();
        assert!(second > first);
        wal.sync_to(second).unwrap();
        assert_eq!(
            read_back(&dir.join("a.log"), false).unwrap().0,
            vec![Record::Clear]
        );
        assert_eq!(
            read_back(&dir.join("b.log"), false).unwrap().0,
            vec![Record::Clear]
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_foreign_file_is_refused() {
        let dir = temp_dir("magic");
        let path = dir.join("wal.log");
        fs::write(&path, b"hello world, not a log").unwrap();
        assert!(matches!(
            read_back(&path, false),
            Err(WalError::BadMagic { .. })
        ));
        fs::write(&path, b"PZW").unwrap();
        assert_eq!(read_back(&path, false).unwrap().0, Vec::new());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn group_commit_serves_many_writers() {
        let dir = temp_dir("group");
        let path = dir.join("wal.log");
        let wal = std::sync::Arc::new(Wal::open(&path, Fsync::Always).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let wal = std::sync::Arc::clone(&wal);
                std::thread::spawn(move || {
                    for i in 0..50u64 {
                        let mut bytes = Vec::new();
                        Record::Tombstone {
                            table: Table::Own,
                            key: format!("{t}-{i}").into_bytes(),
                            version: i,
                        }
                        .encode_into(&mut bytes);
                        let (_, lsn) = wal.append(&bytes, || ()).unwrap();
                        wal.sync_to(lsn).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        drop(wal);
        assert_eq!(read_back(&path, false).unwrap().0.len(), 400);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_data_dir_lock_keeps_out_a_second_owner() {
        let dir = temp_dir("lock");
        let lock = DirLock::acquire(&dir).unwrap();
        // Our own pid in the file: a second acquire in this process is refused as well,
        // since the pid check treats "us" as a stale owner only when it is not us.
        fs::write(dir.join("LOCK"), "1\n").unwrap(); // pid 1 always runs
        assert!(matches!(
            DirLock::acquire(&dir),
            Err(WalError::Locked { .. })
        ));
        // A lock left by a process that is gone is taken over.
        fs::write(dir.join("LOCK"), "4000000000\n").unwrap();
        let again = DirLock::acquire(&dir).unwrap();
        drop(again);
        assert!(!dir.join("LOCK").exists());
        drop(lock);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn random_bytes_never_panic_the_reader() {
        let dir = temp_dir("fuzz");
        let path = dir.join("wal.log");
        let full = {
            let mut bytes = MAGIC.to_vec();
            for record in samples() {
                record.encode_into(&mut bytes);
            }
            bytes
        };
        let mut x = 0x1234_5678u64;
        for _ in 0..2000 {
            let mut bytes = full.clone();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x as usize) % bytes.len();
                bytes[i] = (x >> 32) as u8;
            }
            fs::write(&path, &bytes).unwrap();
            let _ = read_back(&path, x % 2 == 0);
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
