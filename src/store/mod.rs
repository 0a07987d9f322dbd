//! A slave's data: the `own` table (keys it is primary for) and the `previous` table (a
//! copy of its predecessor's `own`), each a hash table from key to versioned [`Entry`]
//! (`keymap`: one heap block per key, holding key, value and version together).
//!
//! Invariants:
//! - an older version never overwrites a newer one, in either table, whatever order writes
//!   arrive in; so two replicas that receive the same writes end in the same state;
//! - a delete leaves a versioned tombstone, so a late, older write cannot bring a key back;
//! - this module does no I/O and never sees bytes from a socket. [`Store`] holds both
//!   tables behind one `RwLock` (reads share it), taken only inside its methods and
//!   never across I/O;
//! - an entry is *visible* (served by reads, counted as live) only while it has a value,
//!   has not expired (`expires`, absolute Unix seconds, 0 never) and is not older than a
//!   flush marker in effect ([`FlushMarker`]: `flush_all`). An invisible entry keeps its
//!   version, exactly like a tombstone, so nothing older can come back through it.
//!
//! Walks over a whole table (compaction's snapshot, transfers, purging, counting) go in
//! short steps ([`Store::scan`]), each under its own hold of the lock, so writes are never
//! held up for more than one step; see [`Cursor`] for what a walk sees of concurrent
//! writes.
//!
//! Files: `entry` ([`Entry`], [`Version`], [`Table`], flush markers, what a write did),
//! `tables` ([`Tables`], the two tables unlocked: reads and writes by version), `cursor`
//! (walks in steps: [`Cursor`], purging, counting, scans and chunks), `collect`
//! (collection and forget), `keymap` (the hash table under each); [`Store`], the tables
//! behind their lock, here; unit tests in `tests.rs`.

mod collect;
mod cursor;
mod entry;
pub mod keymap;
mod tables;
#[cfg(test)]
mod tests;

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use collect::Collected;
pub use cursor::{Cursor, SCAN_STEP};
pub use entry::{
    Applied, Entry, FlushMarker, Table, TableCounts, Version, now_micros, prune_markers,
};
use keymap::Item;
pub use tables::Tables;
use tables::{entry_of, newer, visible};

/// Both tables behind one lock, shared by reads (many direct reads on one slave do not
/// queue behind each other, nor behind a reader the scheduler paused). Every method
/// locks, delegates to [`Tables`], and unlocks;
/// none does I/O. Methods that walk a whole table ([`Store::counts`],
/// [`Store::purge_invisible`]) take the lock once per step of the walk.
#[derive(Debug, Default)]
pub struct Store {
    tables: RwLock<Tables>,
}

impl Store {
    /// An empty store.
    pub fn new() -> Store {
        Store::default()
    }

    /// The tables, to change. A panic while holding the lock leaves the maps consistent
    /// (every mutation is a single insert or assignment), so a poisoned lock is still
    /// safe to use.
    fn lock(&self) -> RwLockWriteGuard<'_, Tables> {
        crate::sync::write(&self.tables)
    }

    /// The tables, to read: reads do not wait for each other, only for a change.
    fn shared(&self) -> RwLockReadGuard<'_, Tables> {
        crate::sync::read(&self.tables)
    }

    /// The entry for `key` (tombstones included), cloned out of the lock.
    pub fn get(&self, table: Table, key: &[u8]) -> Option<Entry> {
        self.shared().get(table, key)
    }

    /// True if `table` holds a visible value for `key` (for `own`: the newer of both
    /// tables, as [`Tables::read`] with `None` sees it); nothing is copied.
    pub fn is_live(&self, table: Table, key: &[u8]) -> bool {
        let tables = self.shared();
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
        self.shared()
            .table(table)
            .get(key)
            .map(|item| Version(item.version()))
    }

    /// The newer of the key's entries in `own` and `previous`, read under one lock (so a
    /// concurrent move between the tables cannot hide it). Invisibility is not applied:
    /// see [`Store::read`].
    pub fn get_newest(&self, key: &[u8]) -> Option<Entry> {
        let tables = self.shared();
        newer(tables.own.get(key), tables.previous.get(key)).map(entry_of)
    }

    /// The key's entry as a read sees it now; see [`Tables::read`].
    pub fn read(&self, table: Option<Table>, key: &[u8]) -> Option<Entry> {
        self.shared().read(table, key, now_micros())
    }

    /// Runs `f` on the tables under the lock (for decisions that must see and change the
    /// tables in one step; `slave::data` calls it under the log's lock).
    pub fn with_tables<T>(&self, f: impl FnOnce(&mut Tables) -> T) -> T {
        f(&mut self.lock())
    }

    /// Runs `f` on the tables under the read lock: several reads that see one state.
    pub fn with_tables_shared<T>(&self, f: impl FnOnce(&Tables) -> T) -> T {
        f(&self.shared())
    }

    /// The highest flush threshold in effect now.
    pub fn flush_floor(&self) -> u64 {
        self.shared().flush_floor(now_micros())
    }

    /// Records a flush marker.
    pub fn flush(&self, marker: FlushMarker) {
        self.lock().flush(marker);
    }

    /// The flush markers held.
    pub fn flush_markers(&self) -> Vec<FlushMarker> {
        self.shared().flush_markers()
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
        self.move_between(Table::Previous, Table::Own, moves)
    }

    /// Merges every `own` entry for which `moves` holds into `previous` (by version) and
    /// removes it from `own`, under one lock: the slave became the replica of those keys.
    /// Returns how many entries moved.
    pub fn demote(&self, moves: impl Fn(&[u8]) -> bool) -> usize {
        self.move_between(Table::Own, Table::Previous, moves)
    }

    /// Merges every entry of `from` for which `moves` holds into `to` (by version) and
    /// removes it from `from`, under one lock; returns how many moved.
    fn move_between(&self, from: Table, to: Table, moves: impl Fn(&[u8]) -> bool) -> usize {
        let mut tables = self.lock();
        let mut moving = Vec::new();
        tables
            .table_mut(from)
            .remove_where(|item| moves(item.key()), |item| moving.push(item));
        let moved = moving.len();
        for item in moving {
            tables.apply_item(to, item);
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
