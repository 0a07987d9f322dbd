//! A slave's data: the tables ([`Store`]) and the log ([`Wal`]) that makes them survive
//! a restart. Every mutation goes through here: its record is written to the log, then
//! applied to the tables, in one step under the log's lock (so the log's order is the
//! order of the tables' history); then, with `--fsync always`, it waits for the disk.
//! Reads go straight to the store.
//!
//! Thread: `wal-sync` (with `--fsync everysec`), started by [`Data::start_syncer`] and
//! joined by its owner; it syncs the log once a second.

use std::path::Path;
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::config::Fsync;
use crate::ring::{Token, in_arc, key_hash};
use crate::shutdown::Shutdown;
use crate::store::{Applied, Entry, Store, Table};
use crate::wal::{self, DirLock, Record, Wal, WalError};

/// Tables and log together.
pub struct Data {
    /// The tables. Read them freely; mutate only through [`Data`].
    pub store: Store,
    wal: Wal,
    _lock: DirLock,
}

fn inside(arc: (u64, u64)) -> impl Fn(&[u8]) -> bool {
    move |key| in_arc(key_hash(key), Token(arc.0), Token(arc.1))
}

/// Applies one record to the tables: at replay, and for every live mutation.
fn apply(store: &Store, record: &Record) -> u64 {
    if let Some((table, key, entry)) = wal::entry_of(record) {
        return u64::from(matches!(
            store.apply(table, key, entry),
            Applied::Applied { .. }
        ));
    }
    match *record {
        Record::Absorb(arc) => store.absorb(|key| !arc.is_some_and(|arc| inside(arc)(key))) as u64,
        Record::Split(arc) => store.split(inside(arc)).0 as u64,
        Record::DropArc(table, arc) => store.drop_where(table, inside(arc)) as u64,
        Record::Clear => {
            store.clear();
            0
        }
        Record::Put { .. } | Record::Tombstone { .. } => 0,
    }
}

impl Data {
    /// Locks `dir`, replays its log into fresh tables, and opens the log for appending.
    ///
    /// # Errors
    /// Another process holds the dir, the log is corrupt before its last record (without
    /// `salvage`), or a file cannot be read or written.
    pub fn open(dir: &Path, fsync: Fsync, salvage: bool) -> Result<Data, WalError> {
        let lock = DirLock::acquire(dir)?;
        let path = dir.join("wal.log");
        let store = Store::new();
        let started = Instant::now();
        let replayed = wal::replay(&path, salvage, |record| {
            apply(&store, &record);
        })?;
        if let Some((offset, what)) = replayed.cut {
            warn!(
                "log {}: cut at byte {offset} ({what}); {} earlier records kept",
                path.display(),
                replayed.records
            );
        }
        let (own, previous) = store.counts();
        info!(
            "recovered {} records ({} bytes) from {} in {} ms: own {} keys, previous {} keys",
            replayed.records,
            replayed.bytes,
            path.display(),
            started.elapsed().as_millis(),
            own.live,
            previous.live
        );
        let wal = Wal::open(&path, fsync)?;
        Ok(Data {
            store,
            wal,
            _lock: lock,
        })
    }

    /// Logs `records`, applies them, and makes them durable as the mode asks. Returns
    /// what applying the last one returned (entries applied, keys moved...).
    fn commit(&self, records: &[Record]) -> Result<u64, WalError> {
        let mut bytes = Vec::new();
        for record in records {
            record.encode_into(&mut bytes);
        }
        let (result, lsn) = self.wal.append(&bytes, || {
            records.iter().map(|r| apply(&self.store, r)).sum::<u64>()
        })?;
        self.wal.sync_to(lsn)?;
        Ok(result)
    }

    /// Stores an entry (a value or a tombstone) unless the table holds that version or
    /// newer.
    ///
    /// # Errors
    /// When the log cannot be written or synced: then nothing was applied, or (a failed
    /// sync) the write must not be acknowledged.
    pub fn write(&self, table: Table, key: &[u8], entry: Entry) -> Result<Applied, WalError> {
        let mut bytes = Vec::new();
        Record::from_entry(table, key, &entry).encode_into(&mut bytes);
        let (applied, lsn) = self
            .wal
            .append(&bytes, || self.store.apply(table, key, entry))?;
        self.wal.sync_to(lsn)?;
        Ok(applied)
    }

    /// Applies many entries; returns how many were newer.
    pub fn apply_all(&self, table: Table, entries: &[(Vec<u8>, Entry)]) -> Result<u64, WalError> {
        let records: Vec<Record> = entries
            .iter()
            .map(|(key, entry)| Record::from_entry(table, key, entry))
            .collect();
        self.commit(&records)
    }

    /// `previous` entries outside `arc` (all, with none) merge into `own`.
    pub fn absorb(&self, arc: Option<(u64, u64)>) -> Result<u64, WalError> {
        self.commit(&[Record::Absorb(arc)])
    }

    /// `own` entries inside `arc` move to `previous`, which keeps only `arc`.
    pub fn split(&self, arc: (u64, u64)) -> Result<u64, WalError> {
        self.commit(&[Record::Split(arc)])
    }

    /// A table's entries inside `arc` are removed.
    pub fn drop_arc(&self, table: Table, arc: (u64, u64)) -> Result<u64, WalError> {
        self.commit(&[Record::DropArc(table, arc)])
    }

    /// Both tables are emptied.
    pub fn clear(&self) -> Result<u64, WalError> {
        self.commit(&[Record::Clear])
    }

    /// Syncs the log now (shutdown, and the `everysec` thread).
    ///
    /// # Errors
    /// When the sync fails.
    pub fn sync(&self) -> Result<(), WalError> {
        self.wal.sync_now()
    }

    /// With `everysec`, starts the `wal-sync` thread, which syncs once a second until
    /// `shutdown`; the caller owns and joins it.
    ///
    /// # Errors
    /// When the thread cannot start.
    pub fn start_syncer(
        data: &std::sync::Arc<Data>,
        shutdown: &Shutdown,
    ) -> std::io::Result<Option<std::thread::JoinHandle<()>>> {
        if data.wal.mode() != Fsync::EverySec {
            return Ok(None);
        }
        let (data, shutdown) = (std::sync::Arc::clone(data), shutdown.clone());
        std::thread::Builder::new()
            .name("wal-sync".into())
            .spawn(move || {
                while !shutdown.wait_timeout(Duration::from_secs(1)) {
                    if let Err(e) = data.sync() {
                        log::error!("{e}");
                    }
                }
            })
            .map(Some)
    }
}
