//! The ring: slave tokens, key placement, and balanced token assignment.
//!
//! The hash space is cut into [`SLOTS`] equal slots; slot `i` holds the hashes whose top
//! ten bits are `i`, and its [`Token`] is its last hash. Every slot is owned by one live
//! slave, so each slave has many tokens on the ring (virtual nodes): the original
//! design's BST is here a `BTreeMap` from every token to its placement. A key's primary
//! is the owner of the first token at or after the key's [`key_hash`] (its slot's owner);
//! its replica is the owner of the next token owned by a *different* slave.
//!
//! Balance: a slave that joins takes `SLOTS / (N + 1)` slots, one at a time from the
//! slave that has the most, scattered in a fixed pseudo-random order; a slave that leaves or dies hands each
//! of its slots to that slot's replica (which already holds the data, so only the dead
//! slave's data is copied again); then [`Ring::rebalanced`] moves single slots from the
//! busiest slave to the idlest until the shares differ by at most one slot. So every
//! slave ends up owning ⌊SLOTS/N⌋ or ⌈SLOTS/N⌉ slots whatever order joins, leaves and
//! deaths came in.
//!
//! Invariants: a slave that registers again from the same address gets its id back; ids
//! are never reused for another address; every slot has an owner whenever one slave is
//! live.
//!
//! `ring` does no I/O and takes no lock: the coordinator keeps a `Ring` inside one
//! `Mutex` (see `coordinator::membership`). Unit tests in `tests.rs`.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

/// Slots of the hash space (a power of two: a slot is the top bits of a hash).
pub const SLOTS: usize = 1024;
const SLOT_SHIFT: u32 = 64 - SLOTS.trailing_zeros();

/// A position on the ring. The whole u64 range is used; it wraps around.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Token(pub u64);

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:016x}", self.0)
    }
}

/// A slave's id, handed out at registration, never reused for another address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlaveId(pub u32);

impl fmt::Display for SlaveId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The slot a hash falls in.
pub fn slot_of(hash: u64) -> usize {
    (hash >> SLOT_SHIFT) as usize
}

/// The token of slot `slot`: its last hash.
pub fn slot_token(slot: usize) -> Token {
    Token(((slot as u64 + 1) << SLOT_SHIFT).wrapping_sub(1))
}

/// The arc (start exclusive, end inclusive) of slots `first..=last`.
pub fn slots_arc(first: usize, last: usize) -> (u64, u64) {
    (
        ((first as u64) << SLOT_SHIFT).wrapping_sub(1),
        slot_token(last).0,
    )
}

/// The arcs covering a set of slots (given in any order), adjacent slots merged.
pub fn arcs_of_slots(slots: &[usize]) -> Vec<(u64, u64)> {
    let mut sorted: Vec<usize> = slots.iter().copied().filter(|&s| s < SLOTS).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut arcs = Vec::new();
    let mut run: Option<(usize, usize)> = None;
    for slot in sorted {
        run = match run {
            Some((first, last)) if last + 1 == slot => Some((first, slot)),
            Some((first, last)) => {
                arcs.push(slots_arc(first, last));
                Some((slot, slot))
            }
            None => Some((slot, slot)),
        };
    }
    if let Some((first, last)) = run {
        arcs.push(slots_arc(first, last));
    }
    arcs
}

/// A set of arcs a slave operation applies to, as sorted inclusive hash intervals (the
/// slave side of a range-by-range move: `contains` is a binary search).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    intervals: Vec<(u64, u64)>,
}

impl RangeSet {
    /// The hashes inside any of `arcs` ((start, end] clockwise, wrapping; start == end
    /// is the whole ring, as in [`in_arc`]).
    pub fn from_arcs(arcs: &[(u64, u64)]) -> RangeSet {
        let mut intervals = Vec::with_capacity(arcs.len() + 1);
        for &(start, end) in arcs {
            if start == end {
                intervals.push((0, u64::MAX));
            } else if start < end {
                intervals.push((start + 1, end));
            } else {
                if start < u64::MAX {
                    intervals.push((start + 1, u64::MAX));
                }
                intervals.push((0, end));
            }
        }
        intervals.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(intervals.len());
        for (lo, hi) in intervals {
            match merged.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        RangeSet { intervals: merged }
    }

    /// True if `hash` is in the set.
    pub fn contains(&self, hash: u64) -> bool {
        let i = self.intervals.partition_point(|&(lo, _)| lo <= hash);
        i > 0 && hash <= self.intervals[i - 1].1
    }

    /// True if `key`'s hash is in the set.
    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.contains(key_hash(key))
    }

    /// True when the set holds no hash.
    pub fn is_empty(&self) -> bool {
        self.intervals.is_empty()
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    })
}

/// murmur3's 64-bit finalizer: spreads FNV's weak high bits over the whole word.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b93f_e53e_c97b);
    h ^= h >> 33;
    h
}

/// The placement hash (protocol.md, "Placement"): FNV-1a 64 of the key bytes, then
/// murmur3's fmix64 finalizer.
pub fn key_hash(key: &[u8]) -> u64 {
    fmix64(fnv1a64(key))
}

/// True if `hash` lies in the arc (`start`, `end`] going clockwise, wrapping. When
/// `start == end` the arc is the whole ring.
pub fn in_arc(hash: u64, start: Token, end: Token) -> bool {
    if start == end {
        true
    } else if start < end {
        start.0 < hash && hash <= end.0
    } else {
        hash > start.0 || hash <= end.0
    }
}

/// Where a key lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Holds the key in `own`.
    pub primary: SlaveId,
    /// Holds the key in `previous`; `None` with one slave.
    pub replica: Option<SlaveId>,
}

/// One live member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its id.
    pub id: SlaveId,
    /// The address it serves on.
    pub addr: String,
    /// How many slots it owns (its share is this over [`SLOTS`]).
    pub slots: usize,
}

/// A slave the ring has ever assigned (see [`Ring::assigned`], [`Ring::restore`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Its id.
    pub id: SlaveId,
    /// The address it registered from.
    pub addr: String,
    /// The slots it owns, or, restored and not back yet, the slots it will get back.
    pub slots: Vec<usize>,
    /// True when it is on the ring.
    pub live: bool,
}

/// Owners of a ring's tokens, with each token's replica, as a client or a slave gets them
/// in a view: `(token, owner)` in token order. The replica of a token is the owner of the
/// next token (wrapping) owned by another slave.
pub fn placements(tokens: &[(Token, SlaveId)]) -> Vec<(Token, Placement)> {
    let n = tokens.len();
    let mut out = Vec::with_capacity(n);
    // The next token owned by someone else, found by walking back round the ring twice.
    let mut next_other: Vec<Option<SlaveId>> = vec![None; n];
    let mut following: Option<(SlaveId, Option<SlaveId>)> = None;
    for step in (0..2 * n).rev() {
        let i = step % n;
        let owner = tokens[i].1;
        following = match following {
            None => Some((owner, None)),
            Some((next_owner, next_replica)) => {
                let replica = if next_owner != owner {
                    Some(next_owner)
                } else {
                    next_replica
                };
                Some((owner, replica))
            }
        };
        if step < n
            && let Some((_, replica)) = following
        {
            next_other[i] = replica;
        }
    }
    for (i, &(token, primary)) in tokens.iter().enumerate() {
        out.push((
            token,
            Placement {
                primary,
                replica: next_other[i],
            },
        ));
    }
    out
}

/// The placement of `hash` in `placements` (sorted by token): the first token at or
/// after it, wrapping.
pub fn placement_in(placements: &[(Token, Placement)], hash: u64) -> Option<Placement> {
    let i = placements.partition_point(|(token, _)| token.0 < hash);
    placements
        .get(i)
        .or_else(|| placements.first())
        .map(|&(_, p)| p)
}

/// Slot indexes in a fixed pseudo-random order: the slots a joining slave takes are
/// scattered, so the slots that follow any slave's slots (whose owners are its replicas)
/// belong to every other slave about evenly, and a slave that leaves hands its slots to
/// all the others about evenly.
fn spread_order() -> impl Iterator<Item = usize> + Clone {
    let mut order: Vec<usize> = (0..SLOTS).collect();
    order.sort_by_key(|&slot| fmix64(slot as u64 ^ 0x9e37_79b9_7f4a_7c15));
    order.into_iter()
}

/// The ring of live slaves plus a memory of every address that ever registered.
#[derive(Debug, Default, Clone)]
pub struct Ring {
    /// Every owned slot's token → its primary and replica: the original design's BST.
    owners: BTreeMap<Token, Placement>,
    /// Slaves on the ring.
    live: BTreeSet<SlaveId>,
    /// Every address ever registered → its id.
    known: HashMap<String, SlaveId>,
    /// Every id ever handed out → its address.
    by_id: HashMap<SlaveId, String>,
    /// Slots a restored slave had when the coordinator stopped: it gets them back when it
    /// registers again (see [`Ring::insert_saved`]).
    saved: HashMap<SlaveId, Vec<usize>>,
    next_id: u32,
    epoch: u64,
}

impl Ring {
    /// An empty ring.
    pub fn new() -> Ring {
        Ring::default()
    }

    /// Adds (or re-adds) the slave serving at `addr`: [`Ring::assign`], then it joins
    /// with its share. Re-adding a live member changes nothing.
    pub fn join(&mut self, addr: &str) -> (SlaveId, bool) {
        let (id, returning) = self.assign(addr);
        if !self.is_live(id) {
            *self = self.with(id);
        }
        (id, returning)
    }

    /// The id for the slave serving at `addr`, without putting it on the ring: a known
    /// address gets its old id back (`true`), a new one a fresh id.
    pub fn assign(&mut self, addr: &str) -> (SlaveId, bool) {
        if let Some(&id) = self.known.get(addr) {
            return (id, true);
        }
        self.next_id += 1;
        let id = SlaveId(self.next_id);
        self.known.insert(addr.to_string(), id);
        self.by_id.insert(id, addr.to_string());
        (id, false)
    }

    /// The ring as it will be once `id` (assigned, not live) has joined: it owns
    /// `SLOTS / (N + 1)` slots (all of them if it is the first), taken one at a time from
    /// the slave with the most, scattered (a fixed pseudo-random order). The same ring for the same input.
    pub fn with(&self, id: SlaveId) -> Ring {
        let mut future = self.clone();
        if self.is_live(id) || !self.by_id.contains_key(&id) {
            return future;
        }
        let mut slots = self.slot_owners();
        if self.live.is_empty() {
            slots = vec![Some(id); SLOTS];
        } else {
            let want = (SLOTS / (self.live.len() + 1)).max(1);
            let mut counts = self.counts();
            let mut order = spread_order().cycle();
            for _ in 0..want {
                // The busiest slave (ties: the lowest id) gives up its next spread slot.
                let Some((&busiest, _)) = counts
                    .iter()
                    .max_by_key(|&(&sid, &count)| (count, std::cmp::Reverse(sid)))
                else {
                    break;
                };
                if counts.get(&busiest).copied().unwrap_or(0) <= 1 {
                    break;
                }
                let Some(slot) = order
                    .by_ref()
                    .take(SLOTS)
                    .find(|&slot| slots[slot] == Some(busiest))
                else {
                    break;
                };
                slots[slot] = Some(id);
                if let Some(count) = counts.get_mut(&busiest) {
                    *count -= 1;
                }
            }
        }
        future.live.insert(id);
        future.saved.remove(&id);
        future.set_slots(&slots);
        future
    }

    /// Puts in place the slots and members of `future` (a ring planned from this one by
    /// [`Ring::with`] or [`Ring::rebalanced`]), keeping what this ring learnt since: the
    /// addresses and ids assigned meanwhile.
    pub fn adopt(&mut self, future: &Ring) {
        self.owners = future.owners.clone();
        self.live = future.live.clone();
        let live = &self.live;
        self.saved.retain(|id, _| !live.contains(id));
        self.epoch = self.epoch.max(future.epoch) + 1;
    }

    /// Puts a restored slave back on the ring with the slots it had (a coordinator that
    /// restarted waits for its slaves). Returns false if it is live or has no saved slots.
    pub fn insert_saved(&mut self, id: SlaveId) -> bool {
        if self.is_live(id) {
            return false;
        }
        let Some(saved) = self.saved.remove(&id) else {
            return false;
        };
        let mut slots = self.slot_owners();
        for slot in saved {
            if slot < SLOTS && slots[slot].is_none() {
                slots[slot] = Some(id);
            }
        }
        self.live.insert(id);
        self.set_slots(&slots);
        true
    }

    /// Takes a live slave off the ring and keeps its slots for [`Ring::insert_saved`]
    /// (a restored slave that failed before the warm-up ended). Returns false if it was
    /// not live.
    pub fn put_back_saved(&mut self, id: SlaveId) -> bool {
        if !self.live.remove(&id) {
            return false;
        }
        let mut slots = self.slot_owners();
        let mut kept = Vec::new();
        for (slot, owner) in slots.iter_mut().enumerate() {
            if *owner == Some(id) {
                *owner = None;
                kept.push(slot);
            }
        }
        self.saved.insert(id, kept);
        self.set_slots(&slots);
        true
    }

    /// Every slave ever assigned, in id order, with its slots (or, for a restored slave
    /// not back yet, the slots it will get back) and whether it is on the ring.
    pub fn assigned(&self) -> Vec<Assignment> {
        let owners = self.slot_owners();
        let mut all: Vec<Assignment> = self
            .by_id
            .iter()
            .map(|(&id, addr)| {
                let live = self.is_live(id);
                let slots = if live {
                    (0..SLOTS).filter(|&s| owners[s] == Some(id)).collect()
                } else {
                    self.saved.get(&id).cloned().unwrap_or_default()
                };
                Assignment {
                    id,
                    addr: addr.clone(),
                    slots,
                    live,
                }
            })
            .collect();
        all.sort_by_key(|assignment| assignment.id);
        all
    }

    /// The id the next new address will get.
    pub fn next_id(&self) -> u32 {
        self.next_id + 1
    }

    /// A ring that remembers `assigned` slaves (none on the ring yet, whatever their
    /// `live` says: each gets its slots back with [`Ring::insert_saved`]) and continues
    /// ids from `next_id`. Used when a coordinator restarts.
    pub fn restore(assigned: &[Assignment], next_id: u32) -> Ring {
        let mut ring = Ring::new();
        for Assignment {
            id, addr, slots, ..
        } in assigned
        {
            ring.known.insert(addr.clone(), *id);
            ring.by_id.insert(*id, addr.clone());
            if !slots.is_empty() {
                ring.saved.insert(*id, slots.clone());
            }
            ring.next_id = ring.next_id.max(id.0);
        }
        ring.next_id = ring.next_id.max(next_id.saturating_sub(1));
        ring
    }

    /// Takes a live slave off the ring. Each of its slots goes to the slot's replica, which
    /// holds a copy of it, so only the slave's own data has to be copied again (to the
    /// slots' new replicas). Returns false if it was not live. The shares that leaves
    /// may be uneven: [`Ring::rebalanced`] evens them out.
    pub fn remove(&mut self, id: SlaveId) -> bool {
        if !self.live.remove(&id) {
            return false;
        }
        self.saved.remove(&id);
        let mut slots = self.slot_owners();
        if self.live.is_empty() {
            self.set_slots(&[]);
            return true;
        }
        for (slot, owner) in slots.iter_mut().enumerate() {
            if *owner == Some(id) {
                *owner = self.slot_placement(slot).and_then(|p| p.replica);
            }
        }
        self.set_slots(&slots);
        true
    }

    /// True when every live slave owns ⌊SLOTS/N⌋ or ⌈SLOTS/N⌉ slots.
    pub fn is_balanced(&self) -> bool {
        let counts = self.counts();
        let (Some(min), Some(max)) = (counts.values().min(), counts.values().max()) else {
            return true;
        };
        max - min <= 1
    }

    /// The ring with even shares: slots move one at a time from the slave with the most
    /// to the slave with the fewest (scattered) until they differ by at most
    /// one. Only the slots that move change owner.
    pub fn rebalanced(&self) -> Ring {
        let mut future = self.clone();
        if self.is_balanced() {
            return future;
        }
        let mut slots = self.slot_owners();
        let mut counts = self.counts();
        let mut order = spread_order().cycle();
        loop {
            let busiest = counts
                .iter()
                .max_by_key(|&(&id, &count)| (count, std::cmp::Reverse(id)))
                .map(|(&id, &count)| (id, count));
            let idlest = counts
                .iter()
                .min_by_key(|&(&id, &count)| (count, id))
                .map(|(&id, &count)| (id, count));
            let (Some((from, most)), Some((to, fewest))) = (busiest, idlest) else {
                break;
            };
            if most <= fewest + 1 {
                break;
            }
            // Best a slot `to` already holds as its replica (it folds it into `own`
            // instead of receiving a copy), else the busiest's next spread slot.
            let held = (0..SLOTS).find(|&slot| {
                slots[slot] == Some(from)
                    && self.slot_placement(slot).and_then(|p| p.replica) == Some(to)
                    && self.slot_placement(slot).map(|p| p.primary) == Some(from)
            });
            let Some(slot) = held.or_else(|| {
                order
                    .by_ref()
                    .take(SLOTS)
                    .find(|&slot| slots[slot] == Some(from))
            }) else {
                break;
            };
            slots[slot] = Some(to);
            *counts.entry(from).or_insert(1) -= 1;
            *counts.entry(to).or_insert(0) += 1;
        }
        future.set_slots(&slots);
        future
    }

    /// The owner of every slot (`None` where no live slave owns it).
    fn slot_owners(&self) -> Vec<Option<SlaveId>> {
        let mut slots = vec![None; SLOTS];
        for (token, placement) in &self.owners {
            slots[slot_of(token.0)] = Some(placement.primary);
        }
        slots
    }

    /// Live slaves → slots owned.
    fn counts(&self) -> BTreeMap<SlaveId, usize> {
        let mut counts: BTreeMap<SlaveId, usize> = self.live.iter().map(|&id| (id, 0)).collect();
        for placement in self.owners.values() {
            *counts.entry(placement.primary).or_insert(0) += 1;
        }
        counts
    }

    /// Replaces the owners (an empty slice: none) and recomputes every replica.
    fn set_slots(&mut self, slots: &[Option<SlaveId>]) {
        let tokens: Vec<(Token, SlaveId)> = slots
            .iter()
            .enumerate()
            .filter_map(|(slot, owner)| owner.map(|id| (slot_token(slot), id)))
            .collect();
        self.owners = placements(&tokens).into_iter().collect();
        self.epoch += 1;
    }

    /// The primary (owner of the first token ≥ `hash`, wrapping) and replica for a hash;
    /// `None` when the ring is empty.
    pub fn placement(&self, hash: u64) -> Option<Placement> {
        self.owners
            .range(Token(hash)..)
            .next()
            .or_else(|| self.owners.iter().next())
            .map(|(_, &p)| p)
    }

    /// [`Ring::placement`] of a key.
    pub fn placement_of_key(&self, key: &[u8]) -> Option<Placement> {
        self.placement(key_hash(key))
    }

    /// The placement of every key in slot `slot`.
    pub fn slot_placement(&self, slot: usize) -> Option<Placement> {
        self.owners.get(&slot_token(slot)).copied()
    }

    /// Every token with its owner, in token order (what a view carries).
    pub fn tokens(&self) -> Vec<(Token, SlaveId)> {
        self.owners
            .iter()
            .map(|(&token, p)| (token, p.primary))
            .collect()
    }

    /// Live members in id order, with their slot counts.
    pub fn members(&self) -> Vec<Member> {
        let counts = self.counts();
        self.live
            .iter()
            .map(|&id| Member {
                id,
                addr: self.addr_of(id).unwrap_or_default().to_string(),
                slots: counts.get(&id).copied().unwrap_or(0),
            })
            .collect()
    }

    /// The lowest token `id` owns (`None` if it owns none).
    pub fn first_token(&self, id: SlaveId) -> Option<Token> {
        self.owners
            .iter()
            .find(|(_, p)| p.primary == id)
            .map(|(&token, _)| token)
    }

    /// Slots `id` owns now.
    pub fn slot_count(&self, id: SlaveId) -> usize {
        self.owners.values().filter(|p| p.primary == id).count()
    }

    /// Number of live slaves.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// True when no slave is live.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// The address a slave registered with.
    pub fn addr_of(&self, id: SlaveId) -> Option<&str> {
        self.by_id.get(&id).map(String::as_str)
    }

    /// True when the slave is on the ring.
    pub fn is_live(&self, id: SlaveId) -> bool {
        self.live.contains(&id)
    }

    /// Grows at every membership change.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}
