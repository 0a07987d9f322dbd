//! Walks over a whole table in short steps, each under its own hold of the lock: the
//! [`Cursor`] a walk keeps between steps, and the walks (purging, counting, scans,
//! chunks for transfers).

use super::keymap::TAG_END;
use super::tables::{entry_of, visible};
use super::{Entry, Table, TableCounts, Tables, now_micros};

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
    pub(super) fn after(position: u64) -> Option<Cursor> {
        (position < TAG_END).then_some(Cursor(position))
    }
}

/// Home slots one step of a walk covers: about 870 entries at most load (the table is at
/// most 85% full), so one hold of the lock stays in the tens to hundreds of microseconds.
pub const SCAN_STEP: usize = 1024;

/// Bytes a chunk counts per entry beyond key and value (version, flags, expiry, lengths).
const ENTRY_OVERHEAD: usize = 29;

impl Tables {
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
