//! The open log, [`Wal`]: appends under one lock in the order mutations are applied,
//! group commit for `--fsync always`, rotation to a new segment. Its lock is never held
//! across an fsync.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

use super::error::io_error;
use super::{MAGIC, WalError, sync_dir};
use crate::config::Fsync;

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

impl Writer {
    /// Writes encoded records at the end of the log, in one `write`.
    fn write(&mut self, bytes: &[u8]) -> Result<Lsn, WalError> {
        if let Err(source) = self.file.write_all(bytes) {
            // A partial write leaves a torn record: cut it so the next append starts clean.
            let length = self.written - self.base;
            let _ = self.file.set_len(length);
            return Err(WalError::Io {
                what: "append to the log",
                path: self.path.clone(),
                source,
            });
        }
        self.written += bytes.len() as u64;
        Ok(Lsn(self.written))
    }
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
    /// Opens (or creates) the log at `path` for appending, after [`replay`](super::replay).
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
        let lsn = writer.write(bytes)?;
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
        let lsn = writer.write(&bytes)?;
        apply(&decided);
        Ok((decided, lsn))
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
