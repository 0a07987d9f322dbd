//! [`Tables`]: the two tables, unlocked, and the rules every write obeys (an older
//! version never overwrites a newer one; expired and flushed values read as tombstones).

use super::keymap::{Item, KeyMap};
use super::{Applied, Entry, FlushMarker, Table, Version, now_micros, prune_markers};

/// A table's entry as an owned [`Entry`].
pub(super) fn entry_of(item: &Item) -> Entry {
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

type Map = KeyMap;

/// The two tables, unlocked. [`Store`](super::Store) wraps them in a `Mutex`.
#[derive(Debug, Default)]
pub struct Tables {
    pub(super) own: Map,
    pub(super) previous: Map,
    /// Flush markers: the newest one in effect, and any still waiting for their time.
    flushes: Vec<FlushMarker>,
}

/// Whether a stored entry is served at `now` (Unix microseconds) under `floor` (the
/// highest flush threshold in effect).
pub(super) fn visible(item: &Item, now: u64, floor: u64) -> bool {
    !item.is_tombstone()
        && (item.expires() == 0 || u64::from(item.expires()) * 1_000_000 > now)
        && item.version() >= floor
}

/// The newer of a key's entries in `own` and `previous`.
pub(super) fn newer<'a>(own: Option<&'a Item>, previous: Option<&'a Item>) -> Option<&'a Item> {
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
    pub(super) fn table(&self, table: Table) -> &Map {
        match table {
            Table::Own => &self.own,
            Table::Previous => &self.previous,
        }
    }

    pub(super) fn table_mut(&mut self, table: Table) -> &mut Map {
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

    /// The key's item if a read sees a value in it now (as [`Tables::read`], without
    /// copying the value out); `None` for a miss, a tombstone or an expired value.
    pub fn read_visible(&self, table: Option<Table>, key: &[u8], now: u64) -> Option<&Item> {
        let item = match table {
            Some(table) => self.table(table).get(key),
            None => newer(self.own.get(key), self.previous.get(key)),
        }?;
        visible(item, now, self.flush_floor(now)).then_some(item)
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
    pub(super) fn apply_item(&mut self, table: Table, item: Item) -> Applied {
        let (key, version) = (item.key().to_vec(), Version(item.version()));
        self.apply_incoming(table, &key, version, Incoming::Whole(item))
    }
}
