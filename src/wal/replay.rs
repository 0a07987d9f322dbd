//! Reading a log back at start: [`replay`] hands every intact record to the caller and
//! cuts a torn tail (or, salvaging, a corrupt middle); [`read_whole`] and
//! [`decode_records`] read without changing anything.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::Path;

use byteorder::{ByteOrder, NetworkEndian};

use super::error::io_error;
use super::{MAGIC, MAX_BODY, RECORD_HEADER, Record, WalError};

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
pub(super) fn replay_file(
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

fn truncate(path: &Path, len: u64) -> Result<(), WalError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_error("open the log to cut its tail", path))?;
    file.set_len(len)
        .and_then(|()| file.sync_all())
        .map_err(io_error("cut the log's tail", path))
}
