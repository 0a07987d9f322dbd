//! Collection (dropping tombstones and expired or flushed values older than a horizon,
//! in steps) and forget (dropping every entry older than it, at once).

use super::tables::visible;
use super::{Cursor, SCAN_STEP, Table, Tables, Version};

/// What a collection dropped (see [`Store::collect`](super::Store::collect)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Collected {
    /// Tombstones dropped.
    pub tombstones: u64,
    /// Values dropped: expired or flushed ones (collection), or any (forget).
    pub values: u64,
}

impl Collected {
    pub(super) fn add(&mut self, other: Collected) {
        self.tombstones += other.tombstones;
        self.values += other.values;
    }

    /// Entries dropped in all.
    pub fn total(&self) -> u64 {
        self.tombstones + self.values
    }
}

impl Tables {
    /// Collection, one step over `table` from `cursor`: drops every tombstone, and every
    /// value invisible at `now` (expired, flushed), whose version is below `horizon`.
    /// Returns what it dropped and where the next step starts (`None`: the table is done;
    /// the caller then lets the table shrink).
    pub(super) fn collect_step(
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
    /// too (see [`Store::forget_below`](super::Store::forget_below)).
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
