//! A slave's data: the `own` table (keys it is primary for) and the `previous` table (a
//! copy of its predecessor's `own`), each a hash table from key to versioned [`Entry`]
//! (`keymap`: one heap block per key, holding key, value and version together).
//!
//! Invariants:
//! - an older version never overwrites a newer one, in either table, whatever order writes
//!   arrive in; so two replicas that receive the same writes end in the same state;
//! - a delete leaves a versioned tombstone, so a late, older write cannot bring a key back;
//! - this module does no I/O and never sees bytes from a socket. [`Store`] holds both
//!   tables behind one `Mutex`, taken only inside its methods and never across I/O;
//! - an entry is *visible* (served by reads, counted as live) only while it has a value,
//!   has not expired (`expires`, absolute Unix seconds, 0 never) and is not older than a
//!   flush marker in effect ([`FlushMarker`]: `flush_all`). An invisible entry keeps its
//!   version, exactly like a tombstone, so nothing older can come back through it.
//!
//! Walks over a whole table (compaction's snapshot, transfers, purging, counting) go in
//! short steps ([`Store::scan`]), each under its own hold of the lock, so writes are never
//! held up for more than one step; see [`Cursor`] for what a walk sees of concurrent
//! writes.

pub mod keymap;

use std::sync::{Mutex, MutexGuard};

use keymap::{Item, KeyMap, TAG_END};

/// A write's version: assigned by the coordinator, strictly increasing across the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version(pub u64);

/// Which of the two tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// Keys this slave is primary for.
    Own,
    /// The copy of the predecessor's `own`.
    Previous,
}

impl Table {
    /// The table's name as the original design spelled it.
    pub fn name(self) -> &'static str {
        match self {
            Table::Own => "own",
            Table::Previous => "previous",
        }
    }
}

/// One key's state in a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The version of the write that produced this state.
    pub version: Version,
    /// memcached flags, stored with the value and returned as given.
    pub flags: u32,
    /// When the value expires, in Unix seconds; 0 never.
    pub expires: u64,
    /// The value, or `None` for a tombstone left by a delete.
    pub value: Option<Vec<u8>>,
}

impl Entry {
    /// A value that never expires.
    pub fn value(version: Version, flags: u32, value: Vec<u8>) -> Entry {
        Entry {
            version,
            flags,
            expires: 0,
            value: Some(value),
        }
    }

    /// A tombstone.
    pub fn tombstone(version: Version) -> Entry {
        Entry {
            version,
            flags: 0,
            expires: 0,
            value: None,
        }
    }
}

/// `flush_all`: every entry whose version is below `threshold` is gone once the wall
/// clock reaches `at` (Unix microseconds; 0 at once). Versions are issued from a clock
/// that follows wall-clock microseconds, so "stored before the flush" is "version below
/// the threshold".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlushMarker {
    /// Entries with a version below this are flushed.
    pub threshold: u64,
    /// From when (Unix microseconds; 0: from the start).
    pub at: u64,
}

/// Keeps of `markers` only what still matters at `now`: the one in effect with the highest
/// threshold (as an immediate one), and those waiting for their time with a higher one.
pub fn prune_markers(markers: &mut Vec<FlushMarker>, now: u64) {
    let floor = markers
        .iter()
        .filter(|m| m.at <= now)
        .map(|m| m.threshold)
        .max()
        .unwrap_or(0);
    markers.retain(|m| m.at > now && m.threshold > floor);
    if floor > 0 {
        markers.push(FlushMarker {
            threshold: floor,
            at: 0,
        });
    }
    markers.sort_by_key(|m| (m.at, m.threshold));
    markers.dedup();
}

/// The current Unix time in microseconds.
pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The write was newer and is now the key's state. `was_live` says whether a value
    /// (not a tombstone, not nothing) was there before.
    Applied {
        /// A live value was replaced or deleted.
        was_live: bool,
    },
    /// The table already held this version or a newer one; nothing changed.
    Stale {
        /// The version the table holds.
        current: Version,
    },
}

/// Counts of one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableCounts {
    /// Keys with a live value.
    pub live: u64,
    /// Keys with a tombstone.
    pub tombstones: u64,
}

/// What a collection dropped (see [`Store::collect`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Collected {
    /// Tombstones dropped.
    pub tombstones: u64,
    /// Values dropped: expired or flushed ones (collection), or any (forget).
    pub values: u64,
}

impl Collected {
    fn add(&mut self, other: Collected) {
        self.tombstones += other.tombstones;
        self.values += other.values;
    }

    /// Entries dropped in all.
    pub fn total(&self) -> u64 {
        self.tombstones + self.values
    }
}

/// A table's entry as an owned [`Entry`].
fn entry_of(item: &Item) -> Entry {
    Entry {
        version: Version(item.version()),
        flags: item.flags(),
        expires: u64::from(item.expires()),
        value: item.value().map(<[u8]>::to_vec),
    }
}

/// Expiry as the tables keep it: 32-bit Unix seconds (until 2106; later saturates).
fn expires_u32(expires: u64) -> u32 {
    u32::try_from(expires).unwrap_or(u32::MAX)
}

/// Where a walk over a table stands: a position in the table's hash order (0 at the
/// start), which means the same whatever the table does between two steps (inserts,
/// removals, growing). A walk that goes to the end visits every entry present for the
/// whole walk exactly once, in the state it has at that step; an entry written or
/// removed while the walk goes on may or may not be seen. Callers rely on the write
/// itself reaching the walk's destination some other way (see `slave::data::compact`
/// and `slave::ops::transfer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Cursor(pub u64);

impl Cursor {
    /// The start of a walk.
    pub const START: Cursor = Cursor(0);

    /// The cursor past `position`, or `None` at the end of the table.
    fn after(position: u64) -> Option<Cursor> {
        (position < TAG_END).then_some(Cursor(position))
    }
}

/// Home slots one step of a walk covers: about 870 entries at most load (the table is at
/// most 85% full), so one hold of the lock stays in the tens to hundreds of microseconds.
pub const SCAN_STEP: usize = 1024;

type Map = KeyMap;

/// The two tables, unlocked. [`Store`] wraps them in a `Mutex`.
#[derive(Debug, Default)]
pub struct Tables {
    own: Map,
    previous: Map,
    /// Flush markers: the newest one in effect, and any still waiting for their time.
    flushes: Vec<FlushMarker>,
}

/// Whether a stored entry is served at `now` (Unix microseconds) under `floor` (the
/// highest flush threshold in effect).
fn visible(item: &Item, now: u64, floor: u64) -> bool {
    !item.is_tombstone()
        && (item.expires() == 0 || u64::from(item.expires()) * 1_000_000 > now)
        && item.version() >= floor
}

/// The newer of a key's entries in `own` and `previous`.
fn newer<'a>(own: Option<&'a Item>, previous: Option<&'a Item>) -> Option<&'a Item> {
    match (own, previous) {
        (Some(own), Some(previous)) if previous.version() > own.version() => Some(previous),
        (Some(own), _) => Some(own),
        (None, previous) => previous,
    }
}

/// How a write arrives: as the parts of an [`Entry`], or as a whole item moving from the
/// other table.
enum Incoming<'a> {
    Parts {
        flags: u32,
        expires: u32,
        value: Option<&'a [u8]>,
    },
    Whole(Item),
}

impl Tables {
    fn table(&self, table: Table) -> &Map {
        match table {
            Table::Own => &self.own,
            Table::Previous => &self.previous,
        }
    }

    fn table_mut(&mut self, table: Table) -> &mut Map {
        match table {
            Table::Own => &mut self.own,
            Table::Previous => &mut self.previous,
        }
    }

    /// The entry for `key`, tombstones included (a copy).
    pub fn get(&self, table: Table, key: &[u8]) -> Option<Entry> {
        self.table(table).get(key).map(entry_of)
    }

    /// The highest flush threshold in effect at `now` (Unix microseconds): entries below
    /// it are gone.
    pub fn flush_floor(&self, now: u64) -> u64 {
        self.flushes
            .iter()
            .filter(|m| m.at <= now)
            .map(|m| m.threshold)
            .max()
            .unwrap_or(0)
    }

    /// Records a flush marker (markers already superseded are forgotten).
    pub fn flush(&mut self, marker: FlushMarker) {
        self.flushes.push(marker);
        prune_markers(&mut self.flushes, now_micros());
    }

    /// The flush markers held (for snapshots and registration).
    pub fn flush_markers(&self) -> Vec<FlushMarker> {
        self.flushes.clone()
    }

    /// The key's entry as a read sees it at `now`: from `table`, or (with `None`) the
    /// newer of both tables; an expired or flushed value reads as a tombstone of its
    /// version.
    pub fn read(&self, table: Option<Table>, key: &[u8], now: u64) -> Option<Entry> {
        let item = match table {
            Some(table) => self.table(table).get(key),
            None => newer(self.own.get(key), self.previous.get(key)),
        }?;
        if visible(item, now, self.flush_floor(now)) {
            Some(entry_of(item))
        } else {
            Some(Entry::tombstone(Version(item.version())))
        }
    }

    /// Drops the values of expired and flushed entries, keeping their versions as
    /// tombstones (so nothing older can come back); returns how many.
    pub fn purge_invisible(&mut self, now: u64) -> usize {
        let mut purged = 0;
        for table in [Table::Own, Table::Previous] {
            let mut cursor = Some(Cursor::START);
            while let Some(at) = cursor {
                let (n, next) = self.purge_step(table, at, now);
                purged += n;
                cursor = next;
            }
        }
        purged
    }

    /// One step of [`Tables::purge_invisible`] over `table` from `cursor`: returns how
    /// many values it dropped and where the next step starts.
    pub fn purge_step(
        &mut self,
        table: Table,
        cursor: Cursor,
        now: u64,
    ) -> (usize, Option<Cursor>) {
        let floor = self.flush_floor(now);
        let mut purged = 0;
        let next = self.table_mut(table).scan_mut(cursor.0, SCAN_STEP, |item| {
            if !item.is_tombstone() && !visible(item, now, floor) {
                item.replace(item.version(), 0, 0, None);
                purged += 1;
            }
        });
        (purged, Cursor::after(next))
    }

    /// Applies `entry` to `key` if it is newer than what the table holds.
    pub fn apply(&mut self, table: Table, key: &[u8], entry: Entry) -> Applied {
        let incoming = Incoming::Parts {
            flags: entry.flags,
            expires: expires_u32(entry.expires),
            value: entry.value.as_deref(),
        };
        self.apply_incoming(table, key, entry.version, incoming)
    }

    fn apply_incoming(
        &mut self,
        table: Table,
        key: &[u8],
        version: Version,
        incoming: Incoming<'_>,
    ) -> Applied {
        let now = now_micros();
        let floor = self.flush_floor(now);
        // For `own`, what the key held is the newer of both tables: while a range moves
        // into `own` (absorb), its keys may still sit in `previous`.
        let newer_in_previous = match table {
            Table::Own => self.previous.get(key).filter(|p| {
                self.own
                    .get(key)
                    .is_none_or(|own| p.version() > own.version())
            }),
            Table::Previous => None,
        };
        let previous_live = newer_in_previous
            .filter(|p| p.version() < version.0)
            .map(|p| visible(p, now, floor));
        let map = self.table_mut(table);
        match map.get_mut(key) {
            Some(current) if current.version() >= version.0 => Applied::Stale {
                current: Version(current.version()),
            },
            Some(current) => {
                let was_live = previous_live.unwrap_or_else(|| visible(current, now, floor));
                match incoming {
                    Incoming::Parts {
                        flags,
                        expires,
                        value,
                    } => current.replace(version.0, flags, expires, value),
                    Incoming::Whole(item) => *current = item,
                }
                Applied::Applied { was_live }
            }
            None => {
                map.insert_new(match incoming {
                    Incoming::Parts {
                        flags,
                        expires,
                        value,
                    } => Item::new(key, version.0, flags, expires, value),
                    Incoming::Whole(item) => item,
                });
                Applied::Applied {
                    was_live: previous_live.unwrap_or(false),
                }
            }
        }
    }

    /// Moves `item` into `table`, by version (as [`Tables::apply`]).
    fn apply_item(&mut self, table: Table, item: Item) -> Applied {
        let (key, version) = (item.key().to_vec(), Version(item.version()));
        self.apply_incoming(table, &key, version, Incoming::Whole(item))
    }

    /// Counts live (visible) keys and the rest (tombstones, expired, flushed) of a table.
    pub fn counts(&self, table: Table) -> TableCounts {
        let now = now_micros();
        let mut counts = TableCounts::default();
        let mut cursor = Some(Cursor::START);
        while let Some(at) = cursor {
            cursor = self.count_step(table, at, now, &mut counts);
        }
        counts
    }

    /// One step of [`Tables::counts`]: adds the entries from `cursor` on to `counts`;
    /// returns where the next step starts.
    pub fn count_step(
        &self,
        table: Table,
        cursor: Cursor,
        now: u64,
        counts: &mut TableCounts,
    ) -> Option<Cursor> {
        let floor = self.flush_floor(now);
        let next = self.table(table).scan(cursor.0, SCAN_STEP, |_, item| {
            if visible(item, now, floor) {
                counts.live += 1;
            } else {
                counts.tombstones += 1;
            }
        });
        Cursor::after(next)
    }

    /// One step of a walk over `table` from `cursor`: copies of the entries (tombstones
    /// included) whose keys pass `keep`, and where the next step starts (`None`: the
    /// walk is over). See [`Cursor`] for what a walk sees.
    pub fn scan(
        &self,
        table: Table,
        cursor: Cursor,
        keep: impl Fn(&[u8]) -> bool,
    ) -> (Vec<(Vec<u8>, Entry)>, Option<Cursor>) {
        let mut out = Vec::new();
        let next = self.table(table).scan(cursor.0, SCAN_STEP, |_, item| {
            if keep(item.key()) {
                out.push((item.key().to_vec(), entry_of(item)));
            }
        });
        (out, Cursor::after(next))
    }

    /// Entries of a table from `cursor`, until `max_bytes` of keys and values are
    /// gathered (at least one entry, when any is left). Returns the entries and the next
    /// cursor, `None` when the table is done. A cursor stays valid while the table
    /// changes (see [`Cursor`]).
    pub fn chunk(
        &self,
        table: Table,
        cursor: Cursor,
        max_bytes: usize,
    ) -> (Vec<(Vec<u8>, Entry)>, Option<Cursor>) {
        let map = self.table(table);
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut at = cursor.0;
        while at < TAG_END {
            let mut step = Vec::new();
            let next = map.scan(at, SCAN_STEP, |tag, item| step.push((tag, item)));
            // A chunk may end inside a step only where the tag changes: the next chunk
            // starts at a tag, and must find there every entry not yet sent.
            step.sort_by_key(|(tag, _)| *tag);
            let mut last_tag = None;
            for (tag, item) in step {
                let len = item.payload_len() + ENTRY_OVERHEAD;
                if !out.is_empty() && bytes + len > max_bytes && last_tag != Some(tag) {
                    return (out, Some(Cursor(u64::from(tag))));
                }
                bytes += len;
                last_tag = Some(tag);
                out.push((item.key().to_vec(), entry_of(item)));
            }
            at = next;
        }
        (out, None)
    }
}

impl Tables {
    /// Collection, one step over `table` from `cursor`: drops every tombstone, and every
    /// value invisible at `now` (expired, flushed), whose version is below `horizon`.
    /// Returns what it dropped and where the next step starts (`None`: the table is done;
    /// the caller then lets the table shrink).
    fn collect_step(
        &mut self,
        table: Table,
        horizon: Version,
        cursor: Cursor,
        now: u64,
    ) -> (Collected, Option<Cursor>) {
        let floor = self.flush_floor(now);
        let mut collected = Collected::default();
        let next = self.table_mut(table).remove_step(
            cursor.0,
            SCAN_STEP,
            |item| item.version() < horizon.0 && !visible(item, now, floor),
            |item| {
                if item.is_tombstone() {
                    collected.tombstones += 1;
                } else {
                    collected.values += 1;
                }
            },
        );
        (collected, Cursor::after(next))
    }

    /// Forget: drops every entry of both tables whose version is below `horizon`, values
    /// too (see [`Store::forget_below`]).
    pub fn forget_below(&mut self, horizon: Version) -> Collected {
        let mut forgotten = Collected::default();
        for table in [Table::Own, Table::Previous] {
            self.table_mut(table).remove_where(
                |item| item.version() < horizon.0,
                |item| {
                    if item.is_tombstone() {
                        forgotten.tombstones += 1;
                    } else {
                        forgotten.values += 1;
                    }
                },
            );
        }
        forgotten
    }
}

/// Bytes a chunk counts per entry beyond key and value (version, flags, expiry, lengths).
const ENTRY_OVERHEAD: usize = 29;

/// Both tables behind one lock. Every method locks, delegates to [`Tables`], and unlocks;
/// none does I/O. Methods that walk a whole table ([`Store::counts`],
/// [`Store::purge_invisible`]) take the lock once per step of the walk.
#[derive(Debug, Default)]
pub struct Store {
    tables: Mutex<Tables>,
}

impl Store {
    /// An empty store.
    pub fn new() -> Store {
        Store::default()
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        // A panic while holding the lock leaves the maps consistent (every mutation is a
        // single insert or assignment), so a poisoned lock is still safe to use.
        crate::sync::lock(&self.tables)
    }

    /// The entry for `key` (tombstones included), cloned out of the lock.
    pub fn get(&self, table: Table, key: &[u8]) -> Option<Entry> {
        self.lock().get(table, key)
    }

    /// True if `table` holds a visible value for `key` (for `own`: the newer of both
    /// tables, as [`Tables::read`] with `None` sees it); nothing is copied.
    pub fn is_live(&self, table: Table, key: &[u8]) -> bool {
        let tables = self.lock();
        let now = now_micros();
        let floor = tables.flush_floor(now);
        let item = match table {
            Table::Own => newer(tables.own.get(key), tables.previous.get(key)),
            Table::Previous => tables.previous.get(key),
        };
        item.is_some_and(|item| visible(item, now, floor))
    }

    /// The version `table` holds for `key` (live or tombstone), without copying the value.
    pub fn version_of(&self, table: Table, key: &[u8]) -> Option<Version> {
        self.lock()
            .table(table)
            .get(key)
            .map(|item| Version(item.version()))
    }

    /// The newer of the key's entries in `own` and `previous`, read under one lock (so a
    /// concurrent move between the tables cannot hide it). Invisibility is not applied:
    /// see [`Store::read`].
    pub fn get_newest(&self, key: &[u8]) -> Option<Entry> {
        let tables = self.lock();
        newer(tables.own.get(key), tables.previous.get(key)).map(entry_of)
    }

    /// The key's entry as a read sees it now; see [`Tables::read`].
    pub fn read(&self, table: Option<Table>, key: &[u8]) -> Option<Entry> {
        self.lock().read(table, key, now_micros())
    }

    /// Runs `f` on the tables under the lock (for decisions that must see and change the
    /// tables in one step; `slave::data` calls it under the log's lock).
    pub fn with_tables<T>(&self, f: impl FnOnce(&mut Tables) -> T) -> T {
        f(&mut self.lock())
    }

    /// The highest flush threshold in effect now.
    pub fn flush_floor(&self) -> u64 {
        self.lock().flush_floor(now_micros())
    }

    /// Records a flush marker.
    pub fn flush(&self, marker: FlushMarker) {
        self.lock().flush(marker);
    }

    /// The flush markers held.
    pub fn flush_markers(&self) -> Vec<FlushMarker> {
        self.lock().flush_markers()
    }

    /// Drops the values of expired and flushed entries (they stay as tombstones); returns
    /// how many. Walks the tables in steps, locking once per step.
    pub fn purge_invisible(&self) -> usize {
        let mut purged = 0;
        for table in [Table::Own, Table::Previous] {
            let mut cursor = Some(Cursor::START);
            while let Some(at) = cursor {
                let (n, next) = self.lock().purge_step(table, at, now_micros());
                purged += n;
                cursor = next;
            }
        }
        purged
    }

    /// Applies `entry` to `key` if it is newer than what the table holds.
    pub fn apply(&self, table: Table, key: &[u8], entry: Entry) -> Applied {
        self.lock().apply(table, key, entry)
    }

    /// Collection, in memory only: drops from both tables every tombstone, and every
    /// expired or flushed value, whose version is below `horizon`, a step at a time (the
    /// lock is let go between steps: see [`Cursor`] for what a walk sees). The coordinator sends a horizon only once every
    /// write older than it has landed everywhere it must (protocol.md, "Collection"), so
    /// nothing older can arrive that such a tombstone would have to stop.
    pub fn collect(&self, horizon: Version) -> Collected {
        let mut collected = Collected::default();
        for table in [Table::Own, Table::Previous] {
            let mut cursor = Some(Cursor::START);
            while let Some(at) = cursor {
                let (dropped, next) = self.lock().collect_step(table, horizon, at, now_micros());
                collected.add(dropped);
                cursor = next;
            }
            self.lock().table_mut(table).shrink_if_sparse();
        }
        collected
    }

    /// Forget: drops every entry of both tables whose version is below `horizon`, values
    /// too, under one lock (a slave about to be joined; `slave::data` logs it first).
    pub fn forget_below(&self, horizon: Version) -> Collected {
        self.lock().forget_below(horizon)
    }

    /// Stores a value at `version` unless the table holds that version or a newer one.
    pub fn put(
        &self,
        table: Table,
        key: &[u8],
        value: Vec<u8>,
        flags: u32,
        version: Version,
    ) -> Applied {
        self.lock()
            .apply(table, key, Entry::value(version, flags, value))
    }

    /// Leaves a tombstone at `version` unless the table holds that version or a newer one.
    pub fn delete(&self, table: Table, key: &[u8], version: Version) -> Applied {
        self.lock().apply(table, key, Entry::tombstone(version))
    }

    /// Applies many entries under one lock; returns how many were newer and applied.
    pub fn apply_all(&self, table: Table, entries: Vec<(Vec<u8>, Entry)>) -> usize {
        let mut tables = self.lock();
        entries
            .into_iter()
            .map(|(key, entry)| tables.apply(table, &key, entry))
            .filter(|applied| matches!(applied, Applied::Applied { .. }))
            .count()
    }

    /// Counts of both tables: (own, previous). Walks the tables in steps, locking once
    /// per step: with writes going on, the counts are those of no single moment.
    pub fn counts(&self) -> (TableCounts, TableCounts) {
        let mut both = [TableCounts::default(); 2];
        for (table, counts) in [Table::Own, Table::Previous].into_iter().zip(&mut both) {
            let mut cursor = Some(Cursor::START);
            while let Some(at) = cursor {
                cursor = self.lock().count_step(table, at, now_micros(), counts);
            }
        }
        (both[0], both[1])
    }

    /// Merges every `previous` entry for which `moves` holds into `own` (by version) and
    /// removes it from `previous`, under one lock. Returns how many entries moved.
    ///
    /// When a replica becomes the primary of slots (their primary died or left), it
    /// absorbs them: `moves` is "inside those slots".
    pub fn absorb(&self, moves: impl Fn(&[u8]) -> bool) -> usize {
        let mut tables = self.lock();
        let mut moving = Vec::new();
        tables
            .previous
            .remove_where(|item| moves(item.key()), |item| moving.push(item));
        let moved = moving.len();
        for item in moving {
            tables.apply_item(Table::Own, item);
        }
        moved
    }

    /// Merges every `own` entry for which `moves` holds into `previous` (by version) and
    /// removes it from `own`, under one lock: the slave became the replica of those keys.
    /// Returns how many entries moved.
    pub fn demote(&self, moves: impl Fn(&[u8]) -> bool) -> usize {
        let mut tables = self.lock();
        let mut moving = Vec::new();
        tables
            .own
            .remove_where(|item| moves(item.key()), |item| moving.push(item));
        let moved = moving.len();
        for item in moving {
            tables.apply_item(Table::Previous, item);
        }
        moved
    }

    /// Hands an arc over to a new predecessor: every `own` entry for which `inside` holds
    /// moves to `previous` (by version), and `previous` keeps only entries for which
    /// `inside` holds. Under one lock. Returns (moved, dropped).
    pub fn split(&self, inside: impl Fn(&[u8]) -> bool) -> (usize, usize) {
        let mut tables = self.lock();
        let before = tables.previous.len();
        tables.previous.retain(|item| inside(item.key()));
        let dropped = before - tables.previous.len();
        let mut moving = Vec::new();
        tables
            .own
            .remove_where(|item| inside(item.key()), |item| moving.push(item));
        let moved = moving.len();
        for item in moving {
            tables.apply_item(Table::Previous, item);
        }
        (moved, dropped)
    }

    /// Removes every entry of `table` for which `drop` holds; returns how many.
    pub fn drop_where(&self, table: Table, drop: impl Fn(&[u8]) -> bool) -> usize {
        let mut tables = self.lock();
        let map = tables.table_mut(table);
        let before = map.len();
        map.retain(|item| !drop(item.key()));
        before - map.len()
    }

    /// Empties both tables.
    pub fn clear(&self) {
        let mut tables = self.lock();
        tables.own.clear();
        tables.previous.clear();
    }

    /// The keys of `table` for which `keep` holds, as they are now (all copied under one
    /// hold of the lock: for a whole large table, walk it with [`Store::scan`]).
    pub fn keys_where(&self, table: Table, keep: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
        self.lock()
            .table(table)
            .iter()
            .map(Item::key)
            .filter(|key| keep(key))
            .map(<[u8]>::to_vec)
            .collect()
    }

    /// The entries for `keys` that are still in `table` (tombstones included).
    pub fn entries(&self, table: Table, keys: &[Vec<u8>]) -> Vec<(Vec<u8>, Entry)> {
        let tables = self.lock();
        let map = tables.table(table);
        keys.iter()
            .filter_map(|key| map.get(key).map(|item| (key.clone(), entry_of(item))))
            .collect()
    }

    /// One step of a walk over `table`, under one hold of the lock; see [`Tables::scan`].
    pub fn scan(
        &self,
        table: Table,
        cursor: Cursor,
        keep: impl Fn(&[u8]) -> bool,
    ) -> (Vec<(Vec<u8>, Entry)>, Option<Cursor>) {
        self.lock().scan(table, cursor, keep)
    }

    /// One chunk of a table; see [`Tables::chunk`].
    pub fn chunk(
        &self,
        table: Table,
        cursor: Cursor,
        max_bytes: usize,
    ) -> (Vec<(Vec<u8>, Entry)>, Option<Cursor>) {
        self.lock().chunk(table, cursor, max_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(store: &Store, table: Table, key: &[u8]) -> Option<Vec<u8>> {
        store.get(table, key).and_then(|e| e.value)
    }

    #[test]
    fn newer_write_wins_whatever_the_arrival_order() {
        let a = Store::new();
        let b = Store::new();
        a.put(Table::Own, b"k", b"one".to_vec(), 0, Version(1));
        a.put(Table::Own, b"k", b"two".to_vec(), 0, Version(2));
        b.put(Table::Own, b"k", b"two".to_vec(), 0, Version(2));
        let late = b.put(Table::Own, b"k", b"one".to_vec(), 0, Version(1));
        assert_eq!(
            late,
            Applied::Stale {
                current: Version(2)
            }
        );
        assert_eq!(value(&a, Table::Own, b"k"), Some(b"two".to_vec()));
        assert_eq!(a.get(Table::Own, b"k"), b.get(Table::Own, b"k"));
    }

    #[test]
    fn tombstone_stops_an_older_write_from_bringing_the_key_back() {
        let store = Store::new();
        store.put(Table::Own, b"k", b"v".to_vec(), 7, Version(5));
        assert_eq!(
            store.delete(Table::Own, b"k", Version(6)),
            Applied::Applied { was_live: true }
        );
        store.put(Table::Own, b"k", b"old".to_vec(), 0, Version(4));
        assert_eq!(value(&store, Table::Own, b"k"), None);
        assert_eq!(
            store.get(Table::Own, b"k").map(|e| e.version),
            Some(Version(6))
        );
        // A newer write after the delete does bring it back.
        store.put(Table::Own, b"k", b"new".to_vec(), 1, Version(7));
        assert_eq!(value(&store, Table::Own, b"k"), Some(b"new".to_vec()));
    }

    #[test]
    fn same_version_is_stale() {
        let store = Store::new();
        store.put(Table::Own, b"k", b"a".to_vec(), 0, Version(3));
        assert_eq!(
            store.put(Table::Own, b"k", b"b".to_vec(), 0, Version(3)),
            Applied::Stale {
                current: Version(3)
            }
        );
    }

    #[test]
    fn delete_of_a_missing_key_leaves_a_tombstone() {
        let store = Store::new();
        assert_eq!(
            store.delete(Table::Previous, b"k", Version(2)),
            Applied::Applied { was_live: false }
        );
        let (own, previous) = store.counts();
        assert_eq!(own, TableCounts::default());
        assert_eq!(
            previous,
            TableCounts {
                live: 0,
                tombstones: 1
            }
        );
    }

    #[test]
    fn tables_are_separate() {
        let store = Store::new();
        store.put(Table::Own, b"k", b"own".to_vec(), 1, Version(1));
        assert_eq!(store.get(Table::Previous, b"k"), None);
        store.put(Table::Previous, b"k", b"prev".to_vec(), 2, Version(1));
        assert_eq!(value(&store, Table::Own, b"k"), Some(b"own".to_vec()));
        assert_eq!(store.get(Table::Previous, b"k").map(|e| e.flags), Some(2));
    }

    #[test]
    fn chunks_cover_the_table_once_within_their_size() {
        let store = Store::new();
        for i in 0..1000u32 {
            store.put(
                Table::Own,
                &i.to_be_bytes(),
                vec![0; 50],
                0,
                Version(u64::from(i) + 1),
            );
        }
        let mut seen = std::collections::HashSet::new();
        let mut cursor = Some(Cursor::START);
        while let Some(at) = cursor {
            let (entries, next) = store.chunk(Table::Own, at, 4096);
            assert!(!entries.is_empty());
            let bytes: usize = entries.iter().map(|(k, _)| k.len() + 50 + 29).sum();
            assert!(bytes <= 4096 || entries.len() == 1, "{bytes} bytes");
            for (key, _) in entries {
                assert!(seen.insert(key));
            }
            cursor = next;
        }
        assert_eq!(seen.len(), 1000);
    }

    #[test]
    fn a_walk_sends_every_entry_present_throughout_while_writes_go_on() {
        let store = Store::new();
        for i in 0..10_000u32 {
            store.put(
                Table::Own,
                format!("old{i}").as_bytes(),
                vec![1; 10],
                0,
                Version(1),
            );
        }
        let mut seen = std::collections::HashMap::new();
        let mut cursor = Some(Cursor::START);
        let mut written = 0u32;
        while let Some(at) = cursor {
            let (entries, next) = store.scan(Table::Own, at, |key| !key.ends_with(b"7"));
            for (key, entry) in entries {
                *seen.entry(key).or_insert(0) += 1;
                assert!(entry.value.is_some());
            }
            cursor = next;
            // Writes between steps: new keys (enough to grow the table several times)
            // and new versions of old ones.
            for _ in 0..2000 {
                store.put(
                    Table::Own,
                    format!("new{written}").as_bytes(),
                    vec![2; 10],
                    0,
                    Version(2),
                );
                let old = format!("old{}", written % 10_000);
                store.put(Table::Own, old.as_bytes(), vec![3; 10], 0, Version(2));
                written += 1;
            }
        }
        assert!(written > 20_000, "the walk took {written} writes");
        for i in (0..10_000u32).filter(|i| i % 10 != 7) {
            assert_eq!(seen.get(format!("old{i}").as_bytes()), Some(&1), "old{i}");
        }
        assert!(
            seen.keys().all(|key| !key.ends_with(b"7")),
            "the filter holds"
        );
        assert!(seen.values().all(|&n| n == 1));
    }

    #[test]
    fn absorb_merges_previous_into_own_by_version() {
        let store = Store::new();
        store.put(Table::Own, b"a", b"own-new".to_vec(), 0, Version(9));
        store.put(Table::Previous, b"a", b"prev-old".to_vec(), 0, Version(3));
        store.put(Table::Previous, b"b", b"prev".to_vec(), 0, Version(4));
        store.put(Table::Previous, b"keep", b"k".to_vec(), 0, Version(5));
        assert_eq!(store.absorb(|key| key != b"keep"), 2);
        assert_eq!(value(&store, Table::Own, b"a"), Some(b"own-new".to_vec()));
        assert_eq!(value(&store, Table::Own, b"b"), Some(b"prev".to_vec()));
        assert_eq!(store.get(Table::Previous, b"a"), None);
        assert_eq!(value(&store, Table::Previous, b"keep"), Some(b"k".to_vec()));
    }

    #[test]
    fn split_moves_an_arc_from_own_to_previous_and_drops_the_rest_of_previous() {
        let store = Store::new();
        store.put(Table::Own, b"x1", b"1".to_vec(), 0, Version(1));
        store.put(Table::Own, b"y1", b"2".to_vec(), 0, Version(2));
        store.put(Table::Previous, b"x2", b"3".to_vec(), 0, Version(3));
        store.put(Table::Previous, b"z", b"4".to_vec(), 0, Version(4));
        let (moved, dropped) = store.split(|key| key.starts_with(b"x"));
        assert_eq!((moved, dropped), (1, 1));
        assert_eq!(value(&store, Table::Previous, b"x1"), Some(b"1".to_vec()));
        assert_eq!(value(&store, Table::Previous, b"x2"), Some(b"3".to_vec()));
        assert_eq!(store.get(Table::Previous, b"z"), None);
        assert_eq!(store.get(Table::Own, b"x1"), None);
        assert_eq!(value(&store, Table::Own, b"y1"), Some(b"2".to_vec()));
        assert_eq!(store.drop_where(Table::Own, |_| true), 1);
        store.clear();
        assert_eq!(store.counts(), Default::default());
    }

    #[test]
    fn entries_skip_keys_that_went_away() {
        let store = Store::new();
        store.put(Table::Own, b"a", b"1".to_vec(), 0, Version(1));
        store.delete(Table::Own, b"b", Version(2));
        let keys = store.keys_where(Table::Own, |_| true);
        assert_eq!(keys.len(), 2);
        let entries = store.entries(Table::Own, &[b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(entries.len(), 2);
        assert!(entries.iter().any(|(k, e)| k == b"b" && e.value.is_none()));
    }

    #[test]
    fn expired_and_flushed_entries_read_as_tombstones_and_keep_their_versions() {
        let store = Store::new();
        let now_secs = now_micros() / 1_000_000;
        let mut entry = Entry::value(Version(10), 5, b"v".to_vec());
        entry.expires = now_secs + 100;
        store.apply(Table::Own, b"later", entry.clone());
        entry.expires = now_secs - 1;
        store.apply(Table::Own, b"gone", entry);
        assert!(store.is_live(Table::Own, b"later"));
        assert!(!store.is_live(Table::Own, b"gone"));
        let gone = store.read(Some(Table::Own), b"gone").expect("an entry");
        assert_eq!((gone.version, gone.value), (Version(10), None));
        // An older write cannot bring an expired key back.
        assert!(matches!(
            store.put(Table::Own, b"gone", b"old".to_vec(), 0, Version(9)),
            Applied::Stale { .. }
        ));
        // A flush hides everything below its threshold, at once or from a later time.
        store.put(Table::Own, b"new", b"n".to_vec(), 0, Version(30));
        store.flush(FlushMarker {
            threshold: 20,
            at: 0,
        });
        assert!(!store.is_live(Table::Own, b"later"));
        assert!(store.is_live(Table::Own, b"new"));
        store.flush(FlushMarker {
            threshold: 40,
            at: now_micros() + 60_000_000,
        });
        assert!(store.is_live(Table::Own, b"new"), "a delayed flush waits");
        assert_eq!(store.flush_floor(), 20);
        assert_eq!(store.flush_markers().len(), 2);
        assert_eq!(store.purge_invisible(), 2);
        assert_eq!(store.counts().0.live, 1);
    }

    #[test]
    fn collection_drops_old_tombstones_and_expired_values_and_nothing_else() {
        let store = Store::new();
        let now_secs = now_micros() / 1_000_000;
        // Enough entries for several slices in `own`.
        let n = 3 * 64 * 1024_u64 + 17;
        for i in 0..n {
            let key = i.to_be_bytes();
            match i % 4 {
                0 => store.delete(Table::Own, &key, Version(10 + i)),
                1 => store.put(Table::Own, &key, b"live".to_vec(), 0, Version(10 + i)),
                2 => store.apply(Table::Own, &key, {
                    let mut entry = Entry::value(Version(10 + i), 0, b"gone".to_vec());
                    entry.expires = now_secs - 1;
                    entry
                }),
                // Newer than the horizon: kept, tombstone or not.
                _ => store.delete(Table::Own, &key, Version(1_000_000_000 + i)),
            };
        }
        store.delete(Table::Previous, b"old", Version(5));
        store.delete(Table::Previous, b"new", Version(2_000_000_000));
        let collected = store.collect(Version(1_000_000_000));
        let quarter = n / 4;
        assert_eq!(
            collected,
            Collected {
                tombstones: quarter + 1 + 1, // i % 4 == 0 (one more of them), and "old"
                values: quarter,
            }
        );
        let (own, previous) = store.counts();
        assert_eq!(own.live, quarter);
        assert_eq!(own.tombstones, quarter);
        assert_eq!(previous.tombstones, 1);
        assert_eq!(store.get(Table::Own, &0u64.to_be_bytes()), None);
        assert!(store.is_live(Table::Own, &1u64.to_be_bytes()));
        assert_eq!(store.get(Table::Own, &2u64.to_be_bytes()), None);
        assert!(store.get(Table::Own, &3u64.to_be_bytes()).is_some());
        // Nothing left to collect below that horizon.
        assert_eq!(store.collect(Version(1_000_000_000)), Collected::default());
    }

    #[test]
    fn forget_drops_every_entry_below_the_horizon_in_both_tables() {
        let store = Store::new();
        store.put(Table::Own, b"old", b"v".to_vec(), 0, Version(5));
        store.delete(Table::Own, b"old-tombstone", Version(6));
        store.put(
            Table::Previous,
            b"old-previous",
            b"v".to_vec(),
            0,
            Version(7),
        );
        store.put(Table::Own, b"new", b"v".to_vec(), 0, Version(50));
        store.delete(Table::Previous, b"new-tombstone", Version(51));
        assert_eq!(
            store.forget_below(Version(50)),
            Collected {
                tombstones: 1,
                values: 2
            }
        );
        assert_eq!(store.get(Table::Own, b"old"), None);
        assert_eq!(store.get(Table::Previous, b"old-previous"), None);
        assert!(store.is_live(Table::Own, b"new"));
        assert!(store.get(Table::Previous, b"new-tombstone").is_some());
        // What was forgotten can be written again, at any version.
        store.put(Table::Own, b"old", b"again".to_vec(), 0, Version(1));
        assert_eq!(value(&store, Table::Own, b"old"), Some(b"again".to_vec()));
    }

    #[test]
    fn apply_all_merges_by_version() {
        let store = Store::new();
        store.put(Table::Previous, b"a", b"new".to_vec(), 0, Version(10));
        let incoming = vec![
            (b"a".to_vec(), Entry::value(Version(9), 0, b"old".to_vec())),
            (b"b".to_vec(), Entry::value(Version(1), 0, b"b".to_vec())),
        ];
        assert_eq!(store.apply_all(Table::Previous, incoming), 1);
        assert_eq!(value(&store, Table::Previous, b"a"), Some(b"new".to_vec()));
        assert_eq!(value(&store, Table::Previous, b"b"), Some(b"b".to_vec()));
    }
}
