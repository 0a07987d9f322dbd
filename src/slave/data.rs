//! A slave's data: the tables ([`Store`]) and the log ([`Wal`]) that makes them survive
//! a restart. Every mutation goes through here: its record is written to the log, then
//! applied to the tables, in one step under the log's lock (so the log's order is the
//! order of the tables' history); then, with `--fsync always`, it waits for the disk.
//! Reads go straight to the store.
//!
//! Files: `wal.<seq>.log` segments and, after a compaction, `snapshot.<seq>` (the tables
//! as of the start of segment `seq`); start-up loads the newest snapshot and replays the
//! segments from its number on.
//!
//! Thread: `wal-sync`, started by [`Data::start_syncer`] and joined by its owner; once a
//! second it syncs the log (with `--fsync everysec`) and compacts it when due.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::config::Fsync;
use crate::ring::{RangeSet, Token, in_arc, key_hash};
use crate::shutdown::Shutdown;
use crate::store::{Applied, Collected, Cursor, Entry, FlushMarker, Store, Table, Version};
use crate::update::{self, Decision, Update};
use crate::wal::{self, DirLock, RangeOp, Record, Wal, WalError};

/// How often the `wal-sync` thread drops the values of expired and flushed entries.
const PURGE_EVERY_SECS: u64 = 30;

/// What a read-modify-write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Updated {
    /// This entry is now the key's (written now, or already by an earlier attempt).
    Written(Entry),
    /// The operation's condition refused it; nothing was written.
    Refused(Decision),
    /// The key holds a newer version than the one proposed; nothing was written.
    Stale(Version),
}

/// Tables and log together.
pub struct Data {
    /// The tables. Read them freely; mutate only through [`Data`].
    pub store: Store,
    wal: Wal,
    dir: PathBuf,
    /// Number of the segment being appended to.
    segment: AtomicU64,
    /// Table operations logged so far (a compaction that overlaps one is discarded).
    moves: AtomicU64,
    /// Size of the last snapshot.
    snapshot_bytes: AtomicU64,
    compact_min: u64,
    /// No collection before this time: a collection that took T waits 10 T for the next,
    /// so collecting a big table never takes more than a tenth of a core.
    next_collection: std::sync::Mutex<Option<Instant>>,
    /// What housekeeping did since the start (SLAVE_STATS, `status`, `stats`).
    pub activity: Activity,
    _lock: DirLock,
}

/// What a slave's housekeeping did since it started.
#[derive(Debug, Default)]
pub struct Activity {
    /// Expired or flushed values turned into tombstones.
    pub purged: AtomicU64,
    /// Tombstones dropped by collection.
    pub collected_tombstones: AtomicU64,
    /// Expired or flushed values dropped by collection.
    pub collected_values: AtomicU64,
    /// When the log was last compacted (Unix seconds; 0 not yet).
    pub last_compaction: AtomicU64,
}

/// A collection is not repeated before this many times its own duration has passed.
const COLLECT_PACE: u32 = 10;

/// `wal.<seq>.log`: the log segment `seq`.
pub fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("wal.{seq:020}.log"))
}

/// `snapshot.<seq>`: the tables as of the start of segment `seq`.
pub fn snapshot_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("snapshot.{seq:020}"))
}

/// The snapshots and segments in a data dir, in order.
struct Files {
    snapshots: Vec<u64>,
    segments: Vec<u64>,
}

impl Files {
    fn scan(dir: &Path) -> Result<Files, WalError> {
        let mut files = Files {
            snapshots: Vec::new(),
            segments: Vec::new(),
        };
        let entries = std::fs::read_dir(dir).map_err(|source| WalError::Io {
            what: "list the data dir",
            path: dir.to_path_buf(),
            source,
        })?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(seq) = name
                .strip_prefix("wal.")
                .and_then(|rest| rest.strip_suffix(".log"))
                .and_then(|n| n.parse().ok())
            {
                files.segments.push(seq);
            } else if let Some(seq) = name.strip_prefix("snapshot.").and_then(|n| n.parse().ok()) {
                files.snapshots.push(seq);
            }
        }
        files.snapshots.sort_unstable();
        files.segments.sort_unstable();
        Ok(files)
    }
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
        Record::Ranges(op, ref arcs) => {
            let set = RangeSet::from_arcs(arcs);
            let inside = |key: &[u8]| set.contains_key(key);
            (match op {
                RangeOp::Absorb => store.absorb(inside),
                RangeOp::Demote => store.demote(inside),
                RangeOp::Drop(table) => store.drop_where(table, inside),
            }) as u64
        }
        Record::Clear => {
            store.clear();
            0
        }
        Record::Flush(marker) => {
            store.flush(marker);
            0
        }
        Record::Forget(horizon) => store.forget_below(Version(horizon)).total(),
        Record::Put { .. } | Record::Tombstone { .. } | Record::End(_) => 0,
    }
}

impl Data {
    /// Locks `dir`, loads its latest snapshot and replays the log segments after it into
    /// fresh tables, and opens the last segment for appending.
    ///
    /// # Errors
    /// Another process holds the dir, a snapshot or a segment before the last is corrupt
    /// (without `salvage`), or a file cannot be read or written.
    pub fn open(
        dir: &Path,
        fsync: Fsync,
        salvage: bool,
        compact_min: u64,
    ) -> Result<Data, WalError> {
        let lock = DirLock::acquire(dir)?;
        let store = Store::new();
        let started = Instant::now();
        let files = Files::scan(dir)?;
        let mut first = 1;
        let mut snapshot_bytes = 0;
        if let Some(seq) = files.snapshots.last().copied() {
            let path = snapshot_path(dir, seq);
            let entries = wal::load_snapshot(&path, |record| {
                apply(&store, &record);
            })?;
            snapshot_bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
            info!("loaded snapshot {} ({entries} entries)", path.display());
            first = seq;
        }
        let segments: Vec<u64> = files
            .segments
            .iter()
            .copied()
            .filter(|&s| s >= first)
            .collect();
        let (mut records, mut bytes) = (0, 0);
        for (index, &seq) in segments.iter().enumerate() {
            let path = segment_path(dir, seq);
            let last = index + 1 == segments.len();
            let apply_one = |record: Record| {
                apply(&store, &record);
            };
            let replayed = if last {
                wal::replay(&path, salvage, apply_one)?
            } else {
                // Older segments were complete when the next one started: any damage
                // in them is corruption, never a torn tail.
                let replayed = wal::read_whole(&path, apply_one)?;
                if let Some((offset, what)) = replayed.cut
                    && !salvage
                {
                    return Err(WalError::Corrupt { path, offset, what });
                }
                replayed
            };
            if let Some((offset, what)) = replayed.cut {
                warn!(
                    "log {}: cut at byte {offset} ({what}); {} earlier records kept",
                    path.display(),
                    replayed.records
                );
            }
            records += replayed.records;
            bytes += replayed.bytes;
        }
        let (own, previous) = store.counts();
        info!(
            "recovered {records} records ({bytes} bytes) from {} in {} ms: own {} keys, previous {} keys",
            dir.display(),
            started.elapsed().as_millis(),
            own.live,
            previous.live
        );
        let current = segments.last().copied().unwrap_or(first);
        let wal = Wal::open(&segment_path(dir, current), fsync)?;
        let data = Data {
            store,
            wal,
            dir: dir.to_path_buf(),
            segment: AtomicU64::new(current),
            moves: AtomicU64::new(0),
            snapshot_bytes: AtomicU64::new(snapshot_bytes),
            compact_min,
            next_collection: std::sync::Mutex::new(None),
            activity: Activity::default(),
            _lock: lock,
        };
        data.remove_older_than(first);
        Ok(data)
    }

    /// Removes snapshots and segments older than `seq` (what a compaction replaced).
    fn remove_older_than(&self, seq: u64) {
        let Ok(files) = Files::scan(&self.dir) else {
            return;
        };
        for old in files.segments.iter().filter(|&&s| s < seq) {
            let _ = std::fs::remove_file(segment_path(&self.dir, *old));
        }
        for old in files.snapshots.iter().filter(|&&s| s < seq) {
            let _ = std::fs::remove_file(snapshot_path(&self.dir, *old));
        }
    }

    /// Compacts when the current segment has grown past both `compact_min` and twice
    /// the last snapshot. Returns true if it compacted.
    ///
    /// # Errors
    /// When a file cannot be written (the log stays as it was: nothing is lost).
    pub fn maybe_compact(&self) -> Result<bool, WalError> {
        let threshold = self
            .compact_min
            .max(2 * self.snapshot_bytes.load(Ordering::Relaxed));
        if self.wal.len() <= threshold {
            return Ok(false);
        }
        self.compact()
    }

    /// Writes a snapshot of the tables and drops the log before it:
    /// 1. a new segment starts (under the log's lock, for one sync);
    /// 2. the tables are walked in steps ([`Store::scan`], one short hold of the store's
    ///    lock each) into `snapshot.N.tmp`, so writes go on meanwhile;
    /// 3. if a table operation (absorb, demote, drop, forget...) was logged meanwhile, the copy may not
    ///    compose with the segment: it is thrown away (the log stays complete);
    /// 4. otherwise it is synced and renamed to `snapshot.N`, and older files removed.
    ///
    /// Why the walk may run while puts and tombstones land: start-up replays segment N
    /// over the snapshot, merging by version. Every entry that was in the tables when
    /// segment N started and is still there at its step is copied (a walk sees each entry
    /// present throughout exactly once, see [`crate::store::Cursor`]), as it is then or
    /// newer; every write after the start is in segment N. Replaying segment N over the
    /// copy therefore ends in the same state as the live tables, whether the walk saw a
    /// write (its record then changes nothing) or not (its record brings it). Entries
    /// leave a table through table operations, which step 3 guards against, and through
    /// collection, which is not logged: a collected tombstone or expired value may or may
    /// not be in the copy, and older segments (with the writes it covered) are removed
    /// either way; that is safe because nothing older than the collection horizon can
    /// arrive any more (protocol.md, section 6.4).
    ///
    /// # Errors
    /// When a file cannot be written.
    pub fn compact(&self) -> Result<bool, WalError> {
        let started = Instant::now();
        let before = self.wal.len();
        let seq = self.segment.load(Ordering::SeqCst) + 1;
        self.wal.rotate(&segment_path(&self.dir, seq))?;
        self.segment.store(seq, Ordering::SeqCst);
        let moves = self.moves.load(Ordering::SeqCst);
        let path = snapshot_path(&self.dir, seq);
        let mut tables = [Table::Own, Table::Previous].into_iter();
        let mut walk: Option<(Table, Cursor)> = None;
        let mut markers = Some(self.store.flush_markers());
        let size = wal::write_snapshot(&path, |buf| {
            if let Some(markers) = markers.take() {
                for marker in &markers {
                    Record::Flush(*marker).encode_into(buf);
                }
                return Some(markers.len() as u64);
            }
            let (table, cursor) = match walk {
                Some(at) => at,
                None => (tables.next()?, Cursor::START),
            };
            let (entries, next) = self.store.scan(table, cursor, |_| true);
            walk = next.map(|next| (table, next));
            for (key, entry) in &entries {
                Record::from_entry(table, key, entry).encode_into(buf);
            }
            Some(entries.len() as u64)
        })?;
        if self.moves.load(Ordering::SeqCst) != moves {
            let _ = std::fs::remove_file(&path);
            info!("compaction skipped: data moved while the snapshot was written");
            return Ok(false);
        }
        self.snapshot_bytes.store(size, Ordering::Relaxed);
        self.activity
            .last_compaction
            .store(crate::request::unix_now(), Ordering::Relaxed);
        self.remove_older_than(seq);
        info!(
            "compacted the log: {before} bytes -> snapshot of {size} bytes in {} ms",
            started.elapsed().as_millis()
        );
        Ok(true)
    }

    /// Logs `records`, applies them, and makes them durable as the mode asks. Returns
    /// what applying the last one returned (entries applied, keys moved...).
    fn commit(&self, records: &[Record]) -> Result<u64, WalError> {
        if records.iter().any(|r| {
            !matches!(
                r,
                Record::Put { .. } | Record::Tombstone { .. } | Record::Flush(_)
            )
        }) {
            self.moves.fetch_add(1, Ordering::SeqCst);
        }
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

    /// Stores many entries with one log append (and one sync with `--fsync always`),
    /// each applied as [`Data::write`] would; returns what each did, in order.
    ///
    /// # Errors
    /// As [`Data::write`]: then none was applied, or (a failed sync) none may be
    /// acknowledged.
    pub fn write_many(&self, writes: Vec<(Table, &[u8], Entry)>) -> Result<Vec<Applied>, WalError> {
        let mut bytes = Vec::new();
        for (table, key, entry) in &writes {
            Record::from_entry(*table, key, entry).encode_into(&mut bytes);
        }
        let (applied, lsn) = self.wal.append(&bytes, || {
            writes
                .into_iter()
                .map(|(table, key, entry)| self.store.apply(table, key, entry))
                .collect::<Vec<_>>()
        })?;
        self.wal.sync_to(lsn)?;
        Ok(applied)
    }

    /// A read-modify-write: decides `update` against the key's visible entry (the newer of
    /// both tables) and, if it writes, logs and applies the result to `table` at
    /// `version`, all under the log's lock, so no other mutation comes in between.
    ///
    /// # Errors
    /// As [`Data::write`].
    pub fn update(
        &self,
        table: Table,
        key: &[u8],
        version: Version,
        update: &Update,
        max_value: usize,
    ) -> Result<Updated, WalError> {
        let decide = || {
            let current = self.store.read(None, key);
            let held = current.as_ref().map_or(Version(0), |e| e.version);
            if held == version {
                // Proposed again after a failure: it is already here.
                let entry = current.unwrap_or_else(|| Entry::tombstone(version));
                return (Vec::new(), Updated::Written(entry));
            }
            if held > version {
                return (Vec::new(), Updated::Stale(held));
            }
            let visible = current.filter(|e| e.value.is_some());
            match update::decide(update, visible.as_ref(), version, max_value) {
                Decision::Write(entry) => {
                    let mut bytes = Vec::new();
                    Record::from_entry(table, key, &entry).encode_into(&mut bytes);
                    (bytes, Updated::Written(entry))
                }
                refused => (Vec::new(), Updated::Refused(refused)),
            }
        };
        let apply = |updated: &Updated| {
            if let Updated::Written(entry) = updated {
                self.store.apply(table, key, entry.clone());
            }
        };
        let (updated, lsn) = self.wal.append_with(decide, apply)?;
        self.wal.sync_to(lsn)?;
        Ok(updated)
    }

    /// Records a flush marker (`flush_all`), logged like a write.
    ///
    /// # Errors
    /// As [`Data::write`].
    pub fn flush(&self, marker: FlushMarker) -> Result<(), WalError> {
        self.commit(&[Record::Flush(marker)]).map(|_| ())
    }

    /// Collection (SLAVE_COLLECT): drops from memory every tombstone, and every expired
    /// or flushed value, older than `horizon`. Nothing is logged, and that is safe: the
    /// log still holds those records, so a restart replays them, but a replayed
    /// tombstone is still a tombstone and a replayed expired value still invisible (and
    /// every value a collected tombstone had replaced comes before it in the log, so it
    /// is replaced again). They are collected again once the coordinator sends the
    /// horizon, which it does in its REGISTER reply. A compaction that overlaps a
    /// collection copies some of the dropped entries or none: either way the same.
    ///
    /// Paced: a call that comes sooner than ten times the last one's duration after it
    /// collects nothing (the next one will).
    pub fn collect(&self, horizon: Version) -> Collected {
        let started = Instant::now();
        if crate::sync::lock(&self.next_collection).is_some_and(|next| started < next) {
            log::debug!("collection skipped: the last one was recent and slow");
            return Collected::default();
        }
        let collected = self.store.collect(horizon);
        self.activity
            .collected_tombstones
            .fetch_add(collected.tombstones, Ordering::Relaxed);
        self.activity
            .collected_values
            .fetch_add(collected.values, Ordering::Relaxed);
        *crate::sync::lock(&self.next_collection) =
            Some(Instant::now() + started.elapsed() * COLLECT_PACE);
        collected
    }

    /// Forget (SLAVE_COLLECT with the forget flag): logs, then applies, the drop of every
    /// entry of both tables whose version is below `horizon`, values too. The
    /// coordinator sends it to a slave that is about to be joined: what it held from
    /// before its absence may include values whose deletes it missed and whose
    /// tombstones are collected everywhere else, and what is older than `horizon` and
    /// still live is on the current owners and comes back with the join's transfers.
    /// Logged, so a restart cannot bring back what was forgotten before the transfers
    /// that follow it in the log.
    ///
    /// # Errors
    /// As [`Data::write`].
    pub fn forget(&self, horizon: Version) -> Result<Collected, WalError> {
        let mut bytes = Vec::new();
        Record::Forget(horizon.0).encode_into(&mut bytes);
        // A table operation: a compaction that overlaps it is thrown away.
        self.moves.fetch_add(1, Ordering::SeqCst);
        let (forgotten, lsn) = self
            .wal
            .append(&bytes, || self.store.forget_below(horizon))?;
        self.wal.sync_to(lsn)?;
        Ok(forgotten)
    }

    /// Applies many entries; returns how many were newer.
    pub fn apply_all(&self, table: Table, entries: &[(Vec<u8>, Entry)]) -> Result<u64, WalError> {
        let records: Vec<Record> = entries
            .iter()
            .map(|(key, entry)| Record::from_entry(table, key, entry))
            .collect();
        self.commit(&records)
    }

    /// Applies a table operation to the entries inside `arcs`: `previous` merges into
    /// `own` (absorb), `own` into `previous` (demote), or a table's entries are removed.
    pub fn ranges(&self, op: RangeOp, arcs: Vec<(u64, u64)>) -> Result<u64, WalError> {
        self.commit(&[Record::Ranges(op, arcs)])
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

    /// Starts the `wal-sync` thread, which once a second syncs the log (with `everysec`)
    /// and compacts it when it has grown enough, until `shutdown`; the caller owns and
    /// joins it.
    ///
    /// # Errors
    /// When the thread cannot start.
    pub fn start_syncer(
        data: &std::sync::Arc<Data>,
        shutdown: &Shutdown,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let (data, shutdown) = (std::sync::Arc::clone(data), shutdown.clone());
        std::thread::Builder::new()
            .name("wal-sync".into())
            .spawn(move || {
                let mut rounds = 0u64;
                while !shutdown.wait_timeout(Duration::from_secs(1)) {
                    rounds += 1;
                    if data.wal.mode() == Fsync::EverySec
                        && let Err(e) = data.sync()
                    {
                        log::error!("{e}");
                    }
                    let purged = if rounds % PURGE_EVERY_SECS == 0 {
                        data.store.purge_invisible()
                    } else {
                        0
                    };
                    if purged > 0 {
                        data.activity
                            .purged
                            .fetch_add(purged as u64, Ordering::Relaxed);
                        log::debug!("purged {purged} expired or flushed values");
                    }
                    if let Err(e) = data.maybe_compact() {
                        log::error!("compaction failed (the log is intact): {e}");
                    }
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("piazza-data-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn value(data: &Data, table: Table, key: &[u8]) -> Option<Vec<u8>> {
        data.store.get(table, key).and_then(|e| e.value)
    }

    #[test]
    fn a_collection_is_not_logged_and_a_restart_replays_nothing_it_must_not() {
        let dir = temp_dir("collect");
        {
            let data = Data::open(&dir, Fsync::Never, false, u64::MAX).unwrap();
            data.write(
                Table::Own,
                b"k",
                Entry::value(Version(5), 0, b"old".to_vec()),
            )
            .unwrap();
            data.write(Table::Own, b"k", Entry::tombstone(Version(6)))
                .unwrap();
            data.write(
                Table::Own,
                b"kept",
                Entry::value(Version(7), 0, b"v".to_vec()),
            )
            .unwrap();
            let collected = data.collect(Version(100));
            assert_eq!((collected.tombstones, collected.values), (1, 0));
            assert_eq!(data.store.get(Table::Own, b"k"), None);
        }
        // The log still has both records of `k`: the restart brings back its tombstone,
        // never its value.
        let data = Data::open(&dir, Fsync::Never, false, u64::MAX).unwrap();
        assert_eq!(
            data.store.get(Table::Own, b"k"),
            Some(Entry::tombstone(Version(6)))
        );
        assert_eq!(value(&data, Table::Own, b"kept"), Some(b"v".to_vec()));
        assert_eq!(data.collect(Version(100)).tombstones, 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_forget_is_logged_and_replayed_in_order() {
        let dir = temp_dir("forget");
        {
            let data = Data::open(&dir, Fsync::Never, false, u64::MAX).unwrap();
            data.write(
                Table::Own,
                b"stale",
                Entry::value(Version(5), 0, b"s".to_vec()),
            )
            .unwrap();
            data.write(
                Table::Previous,
                b"stale-too",
                Entry::value(Version(6), 0, b"s".to_vec()),
            )
            .unwrap();
            data.write(
                Table::Own,
                b"new",
                Entry::value(Version(60), 0, b"n".to_vec()),
            )
            .unwrap();
            let forgotten = data.forget(Version(50)).unwrap();
            assert_eq!((forgotten.tombstones, forgotten.values), (0, 2));
            // What a join's transfer brings after the forget stays.
            data.apply_all(
                Table::Own,
                &[(
                    b"moved".to_vec(),
                    Entry::value(Version(8), 0, b"m".to_vec()),
                )],
            )
            .unwrap();
        }
        let data = Data::open(&dir, Fsync::Never, false, u64::MAX).unwrap();
        assert_eq!(data.store.get(Table::Own, b"stale"), None);
        assert_eq!(data.store.get(Table::Previous, b"stale-too"), None);
        assert_eq!(value(&data, Table::Own, b"new"), Some(b"n".to_vec()));
        assert_eq!(value(&data, Table::Own, b"moved"), Some(b"m".to_vec()));
        // And a compaction keeps it so.
        assert!(data.compact().unwrap());
        drop(data);
        let data = Data::open(&dir, Fsync::Never, false, u64::MAX).unwrap();
        assert_eq!(data.store.get(Table::Own, b"stale"), None);
        assert_eq!(value(&data, Table::Own, b"moved"), Some(b"m".to_vec()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
