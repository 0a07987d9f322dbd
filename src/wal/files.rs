//! The data dir's other files: snapshots (written whole, synced and renamed into place;
//! loaded whole or refused), directory syncs, and the `LOCK` that keeps out a second
//! process.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::error::io_error;
use super::replay::replay_file;
use super::{Record, SNAPSHOT_MAGIC, WalError};

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
