//! The hash table behind each of a slave's tables (`own`, `previous`): a key's whole state
//! in one heap block ([`Item`]), and an open-addressing table of those blocks that a walk
//! can cross in short steps while writes go on ([`KeyMap::scan`]).
//!
//! Why not `std::collections::HashMap<Box<[u8]>, _>`: that costs two heap blocks per
//! entry (key and value) and a 48-byte slot, and its iteration order is lost at every
//! resize, so a walk that must let writes in between its steps has to copy every key
//! first. Here:
//! - an [`Item`] is one boxed slice: a 20-byte header (version, flags, expiry, key length
//!   and a tombstone bit), the key, then the value (none for a tombstone);
//! - a slot is 20 bytes: the item (16) and a 32-bit *tag*, the top half of the key's
//!   hash (0 marks an empty slot), so a probe compares tags and touches an item only when
//!   the tag matches;
//! - linear probing from the key's *home* slot `tag * slots / 2^32`, which grows with the
//!   tag; deletion shifts the following entries back (no deleted markers), so between an
//!   entry's home and its slot there is never an empty slot;
//! - the table grows by half when it is 85% full: reinsertion reads only tags.
//!
//! A walk's position is a tag, not a slot: [`KeyMap::scan`] visits the entries whose tags
//! lie in a range, and ranges follow one another up to 2^32. That position means the same
//! whatever the table does between two steps (inserts, removals, a resize), so an entry
//! present for the whole walk is visited exactly once; one inserted or removed meanwhile
//! may or may not be.
//!
//! The hash is SipHash with random keys per table (std's `RandomState`): a client cannot
//! choose keys that pile up in one slot.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

/// Tags run over `1..2^32`; a walk's positions over `0..=2^32` (the end).
pub const TAG_END: u64 = 1 << 32;

/// Grow when the table would be fuller than `MAX_LOAD_NUM / MAX_LOAD_DEN`.
const MAX_LOAD_NUM: usize = 17;
const MAX_LOAD_DEN: usize = 20;

/// Slots of the first non-empty table.
const MIN_SLOTS: usize = 16;

/// Header bytes of an item: version (8), flags (4), expiry (4), key length and the
/// tombstone bit (4), all native-endian (items never leave the process).
const HEADER: usize = 20;

/// Set in the key-length word of a tombstone.
const TOMBSTONE: u32 = 1 << 31;

/// One key's state in one heap block: header, key, value. Never empty; the key inside
/// never changes (the table found its slot by it).
#[derive(Clone, PartialEq, Eq)]
pub struct Item(Box<[u8]>);

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Item")
            .field("key", &String::from_utf8_lossy(self.key()))
            .field("version", &self.version())
            .field("flags", &self.flags())
            .field("expires", &self.expires())
            .field("value_len", &self.value().map(<[u8]>::len))
            .finish()
    }
}

impl Item {
    /// The item for `key`: a value, or (with `None`) a tombstone.
    ///
    /// # Panics
    /// If the key is 2 GiB or longer (the wire's limits stop such keys long before).
    pub fn new(key: &[u8], version: u64, flags: u32, expires: u32, value: Option<&[u8]>) -> Item {
        let key_len = u32::try_from(key.len())
            .ok()
            .filter(|&len| len < TOMBSTONE)
            .expect("keys are far below 2 GiB (wire limits)");
        let len_word = if value.is_some() {
            key_len
        } else {
            key_len | TOMBSTONE
        };
        let value = value.unwrap_or_default();
        // Exact capacity: `into_boxed_slice` then keeps the block as it is.
        let mut bytes = Vec::with_capacity(HEADER + key.len() + value.len());
        bytes.extend_from_slice(&version.to_ne_bytes());
        bytes.extend_from_slice(&flags.to_ne_bytes());
        bytes.extend_from_slice(&expires.to_ne_bytes());
        bytes.extend_from_slice(&len_word.to_ne_bytes());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(value);
        Item(bytes.into_boxed_slice())
    }

    fn word(&self, at: usize) -> u32 {
        let bytes = self.0[at..at + 4].try_into().expect("4 bytes of header");
        u32::from_ne_bytes(bytes)
    }

    fn len_word(&self) -> u32 {
        self.word(16)
    }

    /// The version of the write that produced this state.
    pub fn version(&self) -> u64 {
        u64::from_ne_bytes(self.0[..8].try_into().expect("8 bytes of header"))
    }

    /// memcached flags.
    pub fn flags(&self) -> u32 {
        self.word(8)
    }

    /// Expiry in Unix seconds, 0 never.
    pub fn expires(&self) -> u32 {
        self.word(12)
    }

    /// True for a tombstone (no value).
    pub fn is_tombstone(&self) -> bool {
        self.len_word() & TOMBSTONE != 0
    }

    /// The key.
    pub fn key(&self) -> &[u8] {
        let key_len = (self.len_word() & !TOMBSTONE) as usize;
        &self.0[HEADER..HEADER + key_len]
    }

    /// The value; `None` for a tombstone.
    pub fn value(&self) -> Option<&[u8]> {
        if self.is_tombstone() {
            return None;
        }
        let key_len = (self.len_word() & !TOMBSTONE) as usize;
        Some(&self.0[HEADER + key_len..])
    }

    /// Bytes of key and value.
    pub fn payload_len(&self) -> usize {
        self.0.len() - HEADER
    }

    /// Makes this the key's new state (same key). Reuses the heap block when the new
    /// value is as long as the old one.
    pub fn replace(&mut self, version: u64, flags: u32, expires: u32, value: Option<&[u8]>) {
        let same_size = match (self.value(), value) {
            (Some(old), Some(new)) => old.len() == new.len(),
            (None, None) => true,
            _ => false,
        };
        if same_size {
            self.0[..8].copy_from_slice(&version.to_ne_bytes());
            self.0[8..12].copy_from_slice(&flags.to_ne_bytes());
            self.0[12..16].copy_from_slice(&expires.to_ne_bytes());
            if let Some(new) = value {
                let start = self.0.len() - new.len();
                self.0[start..].copy_from_slice(new);
            }
        } else {
            *self = Item::new(self.key(), version, flags, expires, value);
        }
    }
}

/// An open-addressing table of [`Item`]s keyed by their keys; see the module doc.
#[derive(Debug, Default)]
pub struct KeyMap {
    /// Per slot: the tag of the entry there, 0 when the slot is empty.
    tags: Vec<u32>,
    /// Per slot: the entry, `None` exactly where the tag is 0.
    items: Vec<Option<Item>>,
    len: usize,
    hasher: RandomState,
}

impl KeyMap {
    /// An empty table (no heap memory until the first insert).
    pub fn new() -> KeyMap {
        KeyMap::default()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slots allocated (for tests and memory accounting).
    pub fn slots(&self) -> usize {
        self.tags.len()
    }

    fn tag_of(&self, key: &[u8]) -> u32 {
        let tag = (self.hasher.hash_one(key) >> 32) as u32;
        tag.max(1)
    }

    /// The home slot of `tag` among `slots`: grows with the tag.
    fn home(tag: u64, slots: usize) -> usize {
        ((tag * slots as u64) >> 32) as usize
    }

    fn find(&self, key: &[u8]) -> Option<usize> {
        let slots = self.tags.len();
        if slots == 0 {
            return None;
        }
        let tag = self.tag_of(key);
        let mut at = KeyMap::home(u64::from(tag), slots);
        loop {
            match self.tags[at] {
                0 => return None,
                t if t == tag
                    && self.items[at]
                        .as_ref()
                        .is_some_and(|item| item.key() == key) =>
                {
                    return Some(at);
                }
                _ => at = if at + 1 == slots { 0 } else { at + 1 },
            }
        }
    }

    /// The entry for `key`.
    pub fn get(&self, key: &[u8]) -> Option<&Item> {
        self.find(key).and_then(|at| self.items[at].as_ref())
    }

    /// The entry for `key`, to change in place (with [`Item::replace`], which keeps the
    /// key: the table found the slot by it).
    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut Item> {
        self.find(key).and_then(|at| self.items[at].as_mut())
    }

    /// Adds `item`, whose key the table must not hold yet (look it up first).
    pub fn insert_new(&mut self, item: Item) {
        debug_assert!(self.find(item.key()).is_none(), "key inserted twice");
        if (self.len + 1) * MAX_LOAD_DEN > self.tags.len() * MAX_LOAD_NUM {
            let grown = (self.tags.len() + self.tags.len() / 2).max(MIN_SLOTS);
            self.resize(grown);
        }
        let tag = self.tag_of(item.key());
        self.place(tag, item);
        self.len += 1;
    }

    /// Puts `item` in the first free slot from its home.
    fn place(&mut self, tag: u32, item: Item) {
        let slots = self.tags.len();
        let mut at = KeyMap::home(u64::from(tag), slots);
        while self.tags[at] != 0 {
            at = if at + 1 == slots { 0 } else { at + 1 };
        }
        self.tags[at] = tag;
        self.items[at] = Some(item);
    }

    /// Moves every entry into a table of `slots` slots (more than the entries held).
    fn resize(&mut self, slots: usize) {
        let tags = std::mem::replace(&mut self.tags, vec![0; slots]);
        let mut items = std::mem::take(&mut self.items);
        self.items.resize_with(slots, || None);
        for (tag, item) in tags.into_iter().zip(items.drain(..)) {
            if let Some(item) = item {
                self.place(tag, item);
            }
        }
    }

    /// Removes and returns the entry for `key`.
    pub fn remove(&mut self, key: &[u8]) -> Option<Item> {
        let at = self.find(key)?;
        Some(self.remove_at(at))
    }

    /// Empties slot `hole` and shifts the entries after it back, so no entry has an
    /// empty slot between its home and its place.
    fn remove_at(&mut self, mut hole: usize) -> Item {
        let slots = self.tags.len();
        let removed = self.items[hole].take().expect("an occupied slot");
        self.tags[hole] = 0;
        self.len -= 1;
        let mut at = hole;
        loop {
            at = if at + 1 == slots { 0 } else { at + 1 };
            let tag = self.tags[at];
            if tag == 0 {
                break;
            }
            let home = KeyMap::home(u64::from(tag), slots);
            // Distances going forward, around the end: the entry may move to the hole if
            // the hole is no further from its slot than its home is.
            let from_home = (at + slots - home) % slots;
            let from_hole = (at + slots - hole) % slots;
            if from_home >= from_hole {
                self.tags[hole] = tag;
                self.items[hole] = self.items[at].take();
                self.tags[at] = 0;
                hole = at;
            }
        }
        removed
    }

    /// Keeps only the entries for which `keep` holds; shrinks the table when it ends up
    /// mostly empty.
    pub fn retain(&mut self, mut keep: impl FnMut(&Item) -> bool) {
        self.remove_where(|item| !keep(item), drop);
    }

    /// Removes the entries for which `remove` holds and hands each to `removed`; shrinks
    /// the table when it ends up mostly empty.
    pub fn remove_where(
        &mut self,
        mut remove: impl FnMut(&Item) -> bool,
        mut removed: impl FnMut(Item),
    ) {
        let before = self.len;
        for (tag, slot) in self.tags.iter_mut().zip(&mut self.items) {
            if let Some(item) = slot.take_if(|item| remove(item)) {
                *tag = 0;
                self.len -= 1;
                removed(item);
            }
        }
        if self.len < before {
            // Emptied slots may sit between entries and their homes: place every entry
            // again (from its tag alone, without touching the items), into fewer slots
            // if most are now free.
            let slots = if self.len == 0 {
                0
            } else if self.len * 5 < self.tags.len() && self.tags.len() > MIN_SLOTS {
                (self.len * MAX_LOAD_DEN / MAX_LOAD_NUM * 3 / 2).max(MIN_SLOTS)
            } else {
                self.tags.len()
            };
            self.resize(slots);
        }
    }

    /// One step of a walk that removes: the entries whose tags lie in the step's range
    /// (as [`KeyMap::scan`]) and for which `remove` holds are removed and handed to
    /// `removed`. Returns where the next step starts. The table does not shrink here: call
    /// [`KeyMap::shrink_if_sparse`] when the walk is over.
    pub fn remove_step(
        &mut self,
        from: u64,
        homes: usize,
        mut remove: impl FnMut(&Item) -> bool,
        mut removed: impl FnMut(Item),
    ) -> u64 {
        let slots = self.tags.len();
        if slots == 0 || from >= TAG_END {
            return TAG_END;
        }
        let (to, first, last) = self.bounds(from, homes);
        let mut index = first;
        while index < first + slots {
            let at = index % slots;
            let tag = u64::from(self.tags[at]);
            if tag == 0 {
                if index >= last {
                    break;
                }
            } else if (from..to).contains(&tag) && self.items[at].as_ref().is_some_and(&mut remove)
            {
                // The shift back fills `at` from later slots only (entries not looked at
                // yet): look at it again. The stop rule holds again after the shift.
                removed(self.remove_at(at));
                continue;
            }
            index += 1;
        }
        to
    }

    /// Gives memory back when at most a fifth of the slots are used.
    pub fn shrink_if_sparse(&mut self) {
        if self.len == 0 {
            self.clear();
        } else if self.len * 5 < self.tags.len() && self.tags.len() > MIN_SLOTS {
            self.resize((self.len * MAX_LOAD_DEN / MAX_LOAD_NUM * 3 / 2).max(MIN_SLOTS));
        }
    }

    /// Removes every entry and frees the slots.
    pub fn clear(&mut self) {
        self.tags = Vec::new();
        self.items = Vec::new();
        self.len = 0;
    }

    /// Every entry, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = &Item> {
        self.items.iter().flatten()
    }

    /// One step of a walk: visits (with their tags) the entries whose tags lie in
    /// `from..to`, where `to` is chosen so the range spans about `homes` home slots.
    /// Returns `to`, where the next step starts; the walk is over at [`TAG_END`].
    pub fn scan<'a>(
        &'a self,
        from: u64,
        homes: usize,
        mut visit: impl FnMut(u32, &'a Item),
    ) -> u64 {
        let (to, slots) = self.window(from, homes);
        for at in slots {
            let tag = self.tags[at];
            if (from..to).contains(&u64::from(tag))
                && let Some(item) = &self.items[at]
            {
                visit(tag, item);
            }
        }
        to
    }

    /// As [`KeyMap::scan`], with each entry to change in place (with [`Item::replace`]).
    pub fn scan_mut(&mut self, from: u64, homes: usize, mut visit: impl FnMut(&mut Item)) -> u64 {
        let (to, slots) = self.window(from, homes);
        for at in slots {
            if (from..to).contains(&u64::from(self.tags[at]))
                && let Some(item) = &mut self.items[at]
            {
                visit(item);
            }
        }
        to
    }

    /// The end of the range a step from `from` covers, and the slots to look at for it.
    fn window(&self, from: u64, homes: usize) -> (u64, Vec<usize>) {
        let slots = self.tags.len();
        if slots == 0 || from >= TAG_END {
            return (TAG_END, Vec::new());
        }
        let (to, first, last) = self.bounds(from, homes);
        let mut occupied = Vec::new();
        // Each slot once: an entry sits in one slot, whatever its distance from home.
        for index in first..first + slots {
            let at = index % slots;
            if self.tags[at] != 0 {
                occupied.push(at);
            } else if index >= last {
                break;
            }
        }
        (to, occupied)
    }

    /// For a step from `from` over about `homes` home slots of a non-empty table: the end
    /// of its tag range, and the first and last home slot of the tags in the range.
    ///
    /// Entries with tags in from..to have homes in first..=last, and sit at or after their
    /// home with no empty slot in between (going around the end). So from `first` on,
    /// they are all met before the first empty slot at or past `last`.
    fn bounds(&self, from: u64, homes: usize) -> (u64, usize, usize) {
        let slots = self.tags.len();
        let span = ((homes.max(1) as u64) << 32).div_ceil(slots as u64);
        let to = (from + span).min(TAG_END);
        (to, KeyMap::home(from, slots), KeyMap::home(to - 1, slots))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use std::collections::HashMap;

    fn item(key: &[u8], version: u64) -> Item {
        Item::new(key, version, 7, 0, Some(b"value"))
    }

    #[test]
    fn an_item_holds_header_key_and_value_in_one_block() {
        let mut value = Item::new(b"key", 9, 5, 1234, Some(b"hello"));
        assert_eq!(
            (value.version(), value.flags(), value.expires()),
            (9, 5, 1234)
        );
        assert_eq!(
            (value.key(), value.value()),
            (&b"key"[..], Some(&b"hello"[..]))
        );
        assert_eq!(value.payload_len(), 8);
        assert_eq!(value.0.len(), HEADER + 8);
        value.replace(10, 6, 0, Some(b"world"));
        assert_eq!(value.value(), Some(&b"world"[..]));
        assert_eq!((value.version(), value.flags()), (10, 6));
        value.replace(11, 0, 0, None);
        assert!(value.is_tombstone());
        assert_eq!((value.key(), value.value()), (&b"key"[..], None));
        assert_eq!(
            value.0.len(),
            HEADER + 3,
            "a tombstone keeps no value bytes"
        );
        value.replace(12, 0, 0, Some(b""));
        assert_eq!(
            value.value(),
            Some(&b""[..]),
            "an empty value is not a tombstone"
        );
    }

    #[test]
    fn inserts_lookups_and_removals_agree_with_a_hashmap() {
        let mut map = KeyMap::new();
        let mut model: HashMap<Vec<u8>, u64> = HashMap::new();
        let mut rng = Rng::new(1, 0);
        for step in 0..50_000u64 {
            let key = format!("k{}", rng.below(3000)).into_bytes();
            match rng.below(3) {
                0 | 1 => match map.get_mut(&key) {
                    Some(found) => {
                        found.replace(step, 0, 0, Some(b"v"));
                        model.insert(key, step);
                    }
                    None => {
                        map.insert_new(item(&key, step));
                        model.insert(key, step);
                    }
                },
                _ => {
                    assert_eq!(
                        map.remove(&key).map(|i| i.version()),
                        model.remove(&key),
                        "remove"
                    );
                }
            }
            assert_eq!(map.len(), model.len());
        }
        for (key, version) in &model {
            assert_eq!(map.get(key).map(Item::version), Some(*version));
        }
        assert_eq!(map.iter().count(), model.len());
        map.retain(|item| item.version() % 2 == 0);
        model.retain(|_, version| *version % 2 == 0);
        assert_eq!(map.len(), model.len());
        for key in model.keys() {
            assert!(map.get(key).is_some());
        }
        map.retain(|_| false);
        assert_eq!((map.len(), map.slots()), (0, 0));
    }

    #[test]
    fn a_mostly_emptied_table_shrinks() {
        let mut map = KeyMap::new();
        for i in 0..10_000u32 {
            map.insert_new(item(&i.to_be_bytes(), 1));
        }
        let big = map.slots();
        map.retain(|item| item.key()[3] == 0);
        assert!(map.slots() < big / 4, "{} slots of {big}", map.slots());
        for i in (0..10_000u32).filter(|i| i % 256 == 0) {
            assert!(map.get(&i.to_be_bytes()).is_some());
        }
    }

    /// Walks the table in steps of `homes`, applying `between` between steps, and
    /// returns how often each key was visited.
    fn walk(
        map: &mut KeyMap,
        homes: usize,
        mut between: impl FnMut(&mut KeyMap),
    ) -> HashMap<Vec<u8>, usize> {
        let mut seen = HashMap::new();
        let mut at = 0;
        while at < TAG_END {
            let mut last_tag = 0;
            at = map.scan(at, homes, |tag, item| {
                last_tag = last_tag.max(tag);
                *seen.entry(item.key().to_vec()).or_insert(0) += 1;
            });
            assert!(u64::from(last_tag) < at);
            between(map);
        }
        seen
    }

    #[test]
    fn a_walk_visits_each_entry_once() {
        let mut map = KeyMap::new();
        for i in 0..20_000u32 {
            map.insert_new(item(&i.to_be_bytes(), 1));
        }
        for homes in [1, 7, 100, 4096, 1 << 20] {
            let seen = walk(&mut map, homes, |_| {});
            assert_eq!(seen.len(), 20_000, "homes {homes}");
            assert!(seen.values().all(|&n| n == 1), "homes {homes}");
        }
        assert!(walk(&mut KeyMap::new(), 10, |_| {}).is_empty());
    }

    #[test]
    fn a_walk_visits_entries_present_throughout_once_while_the_table_changes() {
        let mut map = KeyMap::new();
        for i in 0..5_000u32 {
            map.insert_new(item(format!("stay{i}").as_bytes(), 1));
        }
        let mut rng = Rng::new(2, 0);
        let mut next = 0u32;
        // Between steps: inserts (enough for several resizes) and removals of others.
        let seen = walk(&mut map, 64, |map| {
            for _ in 0..200 {
                if rng.below(4) == 0 && next > 0 {
                    let key = format!("churn{}", rng.below(u64::from(next)));
                    map.remove(key.as_bytes());
                } else {
                    map.insert_new(item(format!("churn{next}").as_bytes(), 2));
                    next += 1;
                }
            }
        });
        assert!(map.len() > 20_000, "the table grew: {}", map.len());
        for i in 0..5_000u32 {
            assert_eq!(seen.get(format!("stay{i}").as_bytes()), Some(&1), "stay{i}");
        }
        assert!(seen.values().all(|&n| n == 1));
    }

    #[test]
    fn a_removing_walk_removes_what_it_should_and_keeps_the_rest_findable() {
        let mut map = KeyMap::new();
        for i in 0..20_000u32 {
            map.insert_new(item(&i.to_be_bytes(), u64::from(i % 3)));
        }
        let mut removed = 0;
        let mut at = 0;
        while at < TAG_END {
            at = map.remove_step(at, 37, |item| item.version() == 0, |_| removed += 1);
            // Writes between steps.
            map.insert_new(item(format!("new{at}").as_bytes(), 5));
        }
        assert_eq!(removed, (0..20_000).filter(|i| i % 3 == 0).count());
        for i in 0..20_000u32 {
            let found = map.get(&i.to_be_bytes()).map(Item::version);
            assert_eq!(found, (i % 3 != 0).then_some(u64::from(i % 3)), "{i}");
        }
        map.retain(|item| item.version() != 0);
        map.shrink_if_sparse();
        assert_eq!(map.len(), map.iter().count());
    }

    #[test]
    fn scan_mut_changes_entries_in_place() {
        let mut map = KeyMap::new();
        for i in 0..1000u32 {
            map.insert_new(item(&i.to_be_bytes(), 1));
        }
        let mut at = 0;
        while at < TAG_END {
            at = map.scan_mut(at, 50, |item| item.replace(2, 0, 0, None));
        }
        assert!(
            map.iter()
                .all(|item| item.is_tombstone() && item.version() == 2)
        );
    }
}
