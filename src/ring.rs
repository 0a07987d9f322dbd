//! The ring: slave tokens, key placement, and token assignment.
//!
//! Every live slave has a 64-bit [`Token`]; the tokens form a ring (the original design's
//! BST, here a `BTreeSet`). A key's primary is the first token at or after the key's
//! [`key_hash`], wrapping around; its replica is the primary's successor.
//!
//! Invariants: tokens never collide; a slave that registers again from the same address
//! gets its id and token back; ids are never reused for another address.
//!
//! `ring.rs` does no I/O and takes no lock: the coordinator keeps a `Ring` inside one
//! `Mutex` (see `coordinator::membership`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

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
    /// Its token.
    pub token: Token,
    /// The address it serves on.
    pub addr: String,
}

/// The ring of live slaves plus a memory of every address that ever registered.
#[derive(Debug, Default, Clone)]
pub struct Ring {
    /// Live tokens: the original design's BST.
    tokens: BTreeSet<Token>,
    /// Live token → slave.
    owners: BTreeMap<Token, SlaveId>,
    /// Every address ever registered → its id and token.
    known: HashMap<String, (SlaveId, Token)>,
    /// Every id ever handed out → its address and token.
    by_id: HashMap<SlaveId, (String, Token)>,
    next_id: u32,
    epoch: u64,
}

impl Ring {
    /// An empty ring.
    pub fn new() -> Ring {
        Ring::default()
    }

    /// Adds (or re-adds) the slave serving at `addr`: [`Ring::assign`] then
    /// [`Ring::insert`]. Re-adding a live member changes nothing.
    pub fn join(&mut self, addr: &str) -> (SlaveId, Token, bool) {
        let (id, token, returning) = self.assign(addr);
        self.insert(id);
        (id, token, returning)
    }

    /// The id and token for the slave serving at `addr`, without putting it on the ring:
    /// a known address gets its old id and token back (`true`), a new one a fresh id and
    /// a token that balances the ring.
    pub fn assign(&mut self, addr: &str) -> (SlaveId, Token, bool) {
        self.assign_beside(addr, &[])
    }

    /// [`Ring::assign`], counting `pending` (tokens of slaves assigned but not on the
    /// ring yet, such as joining ones) as taken places when balancing, so slaves that
    /// register together spread over the ring instead of crowding one gap.
    pub fn assign_beside(&mut self, addr: &str, pending: &[Token]) -> (SlaveId, Token, bool) {
        if let Some(&(id, token)) = self.known.get(addr) {
            return (id, token, true);
        }
        let token = self.fresh_token(addr, pending);
        self.next_id += 1;
        let id = SlaveId(self.next_id);
        self.known.insert(addr.to_string(), (id, token));
        self.by_id.insert(id, (addr.to_string(), token));
        (id, token, false)
    }

    /// Puts an assigned slave on the ring. Returns false if it was already there or is
    /// unknown.
    pub fn insert(&mut self, id: SlaveId) -> bool {
        let Some(token) = self.token_of(id) else {
            return false;
        };
        if self.owners.contains_key(&token) {
            return false;
        }
        self.tokens.insert(token);
        self.owners.insert(token, id);
        self.epoch += 1;
        true
    }

    /// The ring as it would be with `id` (assigned, not live) on it. Used to plan a join
    /// and to route writes to a joining slave.
    pub fn with(&self, id: SlaveId) -> Ring {
        let mut future = self.clone();
        future.insert(id);
        future
    }

    /// A token no address has ever held: the first slave hashes its address; later ones
    /// take the midpoint of the largest arc between live tokens.
    fn fresh_token(&self, addr: &str, pending: &[Token]) -> Token {
        let taken: BTreeSet<u64> = self.known.values().map(|&(_, t)| t.0).collect();
        let mut candidate = match self.largest_arc(pending) {
            None => key_hash(addr.as_bytes()),
            Some((start, length)) => start.0.wrapping_add(length / 2 + length % 2),
        };
        while taken.contains(&candidate) {
            candidate = candidate.wrapping_add(1);
        }
        Token(candidate)
    }

    /// The start and length of the largest arc between consecutive live tokens (the
    /// whole ring, 2^64 − 1 in length here, with one token).
    fn largest_arc(&self, pending: &[Token]) -> Option<(Token, u64)> {
        let mut places = self.tokens.clone();
        places.extend(pending.iter().copied());
        let first = *places.iter().next()?;
        let mut best = (first, u64::MAX);
        if places.len() == 1 {
            return Some(best);
        }
        best.1 = 0;
        let mut previous = first;
        for &token in places.iter().skip(1).chain(std::iter::once(&first)) {
            let length = token.0.wrapping_sub(previous.0);
            if length > best.1 {
                best = (previous, length);
            }
            previous = token;
        }
        Some(best)
    }

    /// Every slave ever assigned: id, address, token, and whether it is on the ring.
    pub fn assigned(&self) -> Vec<(SlaveId, String, Token, bool)> {
        let mut all: Vec<_> = self
            .by_id
            .iter()
            .map(|(&id, (addr, token))| (id, addr.clone(), *token, self.is_live(id)))
            .collect();
        all.sort_by_key(|entry| entry.0);
        all
    }

    /// The id the next new address will get.
    pub fn next_id(&self) -> u32 {
        self.next_id + 1
    }

    /// A ring that remembers `assigned` slaves (none on the ring yet) and continues ids
    /// from `next_id`. Used when a coordinator restarts.
    pub fn restore(assigned: &[(SlaveId, String, Token)], next_id: u32) -> Ring {
        let mut ring = Ring::new();
        for (id, addr, token) in assigned {
            ring.known.insert(addr.clone(), (*id, *token));
            ring.by_id.insert(*id, (addr.clone(), *token));
            ring.next_id = ring.next_id.max(id.0);
        }
        ring.next_id = ring.next_id.max(next_id.saturating_sub(1));
        ring
    }

    /// Takes a live slave off the ring (its id and token are remembered). Returns false if
    /// it was not live.
    pub fn remove(&mut self, id: SlaveId) -> bool {
        let Some(token) = self.token_of(id) else {
            return false;
        };
        if self.owners.get(&token) != Some(&id) {
            return false;
        }
        self.tokens.remove(&token);
        self.owners.remove(&token);
        self.epoch += 1;
        true
    }

    fn owner_at_or_after(&self, hash: u64) -> Option<Token> {
        self.tokens
            .range(Token(hash)..)
            .next()
            .or_else(|| self.tokens.iter().next())
            .copied()
    }

    fn next_token(&self, token: Token) -> Option<Token> {
        let next = match token.0.checked_add(1) {
            Some(after) => self.owner_at_or_after(after),
            None => self.tokens.iter().next().copied(),
        }?;
        (next != token).then_some(next)
    }

    fn previous_token(&self, token: Token) -> Option<Token> {
        let previous = self
            .tokens
            .range(..token)
            .next_back()
            .or_else(|| self.tokens.iter().next_back())
            .copied()?;
        (previous != token).then_some(previous)
    }

    /// The primary (first live token ≥ `hash`, wrapping) and replica (its successor) for a
    /// hash; `None` when the ring is empty.
    pub fn placement(&self, hash: u64) -> Option<Placement> {
        let token = self.owner_at_or_after(hash)?;
        let primary = *self.owners.get(&token)?;
        let replica = self
            .next_token(token)
            .and_then(|next| self.owners.get(&next).copied());
        Some(Placement { primary, replica })
    }

    /// [`Ring::placement`] of a key.
    pub fn placement_of_key(&self, key: &[u8]) -> Option<Placement> {
        self.placement(key_hash(key))
    }

    /// The next live slave after `id` on the ring; `None` if `id` is not live or alone.
    pub fn successor(&self, id: SlaveId) -> Option<SlaveId> {
        let token = self.live_token(id)?;
        self.next_token(token)
            .and_then(|t| self.owners.get(&t).copied())
    }

    /// The live slave before `id` on the ring; `None` if `id` is not live or alone.
    pub fn predecessor(&self, id: SlaveId) -> Option<SlaveId> {
        let token = self.live_token(id)?;
        self.previous_token(token)
            .and_then(|t| self.owners.get(&t).copied())
    }

    fn live_token(&self, id: SlaveId) -> Option<Token> {
        let token = self.token_of(id)?;
        (self.owners.get(&token) == Some(&id)).then_some(token)
    }

    /// The arc (start exclusive, end inclusive) a live slave is primary for; the whole
    /// ring as (token, token) when it is alone.
    pub fn arc_of(&self, id: SlaveId) -> Option<(Token, Token)> {
        let token = self.live_token(id)?;
        let start = self.previous_token(token).unwrap_or(token);
        Some((start, token))
    }

    /// Live members in token order.
    pub fn members(&self) -> Vec<Member> {
        self.owners
            .iter()
            .map(|(&token, &id)| Member {
                id,
                token,
                addr: self.addr_of(id).unwrap_or_default().to_string(),
            })
            .collect()
    }

    /// Number of live slaves.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// True when no slave is live.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The address a slave registered with.
    pub fn addr_of(&self, id: SlaveId) -> Option<&str> {
        self.by_id.get(&id).map(|(addr, _)| addr.as_str())
    }

    /// The token a slave holds (or held, if it is not live).
    pub fn token_of(&self, id: SlaveId) -> Option<Token> {
        self.by_id.get(&id).map(|&(_, token)| token)
    }

    /// True when the slave is on the ring.
    pub fn is_live(&self, id: SlaveId) -> bool {
        self.live_token(id).is_some()
    }

    /// Grows at every membership change.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring_with(tokens: &[u64]) -> Ring {
        let mut ring = Ring::new();
        for (i, &token) in tokens.iter().enumerate() {
            let id = SlaveId(i as u32 + 1);
            let addr = format!("127.0.0.1:{}", 7410 + i);
            ring.known.insert(addr.clone(), (id, Token(token)));
            ring.by_id.insert(id, (addr, Token(token)));
            ring.tokens.insert(Token(token));
            ring.owners.insert(Token(token), id);
        }
        ring.next_id = tokens.len() as u32;
        ring
    }

    #[test]
    fn hash_check_values_match_protocol_md() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(key_hash(b""), 0x21f6_0eac_f9c6_5a30);
        assert_eq!(key_hash(b"a"), 0x029c_34c2_5e2b_759e);
        assert_eq!(key_hash(b"hello"), 0x0fb8_c3b9_a3b8_16d8);
        assert_eq!(key_hash(b"key:1"), 0x7b0e_e639_f923_bfb9);
    }

    #[test]
    fn empty_ring_places_nothing() {
        let ring = Ring::new();
        assert_eq!(ring.placement(42), None);
        assert!(ring.is_empty());
    }

    #[test]
    fn one_slave_takes_every_key_with_no_replica() {
        let ring = ring_with(&[1000]);
        for hash in [0, 999, 1000, 1001, u64::MAX] {
            assert_eq!(
                ring.placement(hash),
                Some(Placement {
                    primary: SlaveId(1),
                    replica: None
                })
            );
        }
        assert_eq!(ring.successor(SlaveId(1)), None);
        assert_eq!(ring.arc_of(SlaveId(1)), Some((Token(1000), Token(1000))));
    }

    #[test]
    fn two_slaves_replicate_each_other() {
        let ring = ring_with(&[100, 200]);
        assert_eq!(
            ring.placement(150),
            Some(Placement {
                primary: SlaveId(2),
                replica: Some(SlaveId(1))
            })
        );
        assert_eq!(
            ring.placement(50),
            Some(Placement {
                primary: SlaveId(1),
                replica: Some(SlaveId(2))
            })
        );
    }

    #[test]
    fn three_slaves_place_by_first_token_at_or_after_the_hash_and_wrap() {
        let ring = ring_with(&[100, 200, 300]);
        let primary = |hash| ring.placement(hash).unwrap().primary;
        let replica = |hash| ring.placement(hash).unwrap().replica;
        assert_eq!(primary(100), SlaveId(1)); // exactly on a token
        assert_eq!(primary(101), SlaveId(2));
        assert_eq!(primary(300), SlaveId(3));
        assert_eq!(replica(300), Some(SlaveId(1))); // successor wraps
        assert_eq!(primary(301), SlaveId(1)); // past the largest token wraps
        assert_eq!(primary(u64::MAX), SlaveId(1));
        assert_eq!(ring.successor(SlaveId(3)), Some(SlaveId(1)));
        assert_eq!(ring.predecessor(SlaveId(1)), Some(SlaveId(3)));
        assert_eq!(ring.arc_of(SlaveId(1)), Some((Token(300), Token(100))));
    }

    #[test]
    fn slaves_registering_together_spread_over_the_ring() {
        let mut ring = Ring::new();
        let (a, _, _) = ring.join("127.0.0.1:1");
        // Two more register before either is on the ring (both joining).
        let (_, t2, _) = ring.assign_beside("127.0.0.1:2", &[]);
        let (_, t3, _) = ring.assign_beside("127.0.0.1:3", &[t2]);
        let t1 = ring.token_of(a).unwrap();
        let mut tokens = [t1.0, t2.0, t3.0];
        tokens.sort();
        let gaps = [
            tokens[1] - tokens[0],
            tokens[2] - tokens[1],
            tokens[0].wrapping_sub(tokens[2]),
        ];
        for gap in gaps {
            assert!(gap >= u64::MAX / 5, "gaps {gaps:x?}");
        }
    }

    #[test]
    fn a_returning_address_gets_its_id_and_token_back() {
        let mut ring = Ring::new();
        let (a, token_a, returning) = ring.join("127.0.0.1:1");
        assert!(!returning);
        let (b, _, _) = ring.join("127.0.0.1:2");
        let epoch = ring.epoch();
        assert_eq!(ring.join("127.0.0.1:1"), (a, token_a, true));
        assert_eq!(ring.epoch(), epoch, "re-adding a live member is idempotent");
        assert!(ring.remove(a));
        assert!(!ring.remove(a));
        assert!(!ring.is_live(a));
        assert_eq!(ring.len(), 1);
        assert_eq!(ring.placement(token_a.0).unwrap().primary, b);
        let (c, _, _) = ring.join("127.0.0.1:3");
        assert_ne!(
            ring.token_of(c),
            Some(token_a),
            "a removed token is not handed out"
        );
        assert_eq!(ring.join("127.0.0.1:1"), (a, token_a, true));
        assert!(ring.epoch() > epoch);
        assert_eq!(ring.addr_of(a), Some("127.0.0.1:1"));
    }

    #[test]
    fn tokens_never_collide_and_arcs_stay_balanced() {
        let mut ring = Ring::new();
        for i in 0..8 {
            ring.join(&format!("10.0.0.{i}:7410"));
        }
        let tokens: Vec<u64> = ring.members().iter().map(|m| m.token.0).collect();
        let mut arcs: Vec<u64> = tokens
            .iter()
            .zip(tokens.iter().cycle().skip(1))
            .map(|(a, b)| b.wrapping_sub(*a))
            .collect();
        arcs.sort();
        assert!(arcs[7] <= arcs[0] * 2 + 2, "unbalanced arcs {arcs:?}");
        for i in 8..1000 {
            ring.join(&format!("10.0.{}.{}:7410", i / 256, i % 256));
        }
        assert_eq!(ring.len(), 1000);
        let unique: BTreeSet<Token> = ring.members().iter().map(|m| m.token).collect();
        assert_eq!(unique.len(), 1000);
    }

    #[test]
    fn a_restored_ring_gives_old_addresses_their_ids_and_tokens() {
        let mut ring = Ring::new();
        let (a, token_a, _) = ring.join("127.0.0.1:1");
        ring.join("127.0.0.1:2");
        let assigned: Vec<_> = ring
            .assigned()
            .into_iter()
            .map(|(id, addr, token, _)| (id, addr, token))
            .collect();
        let mut restored = Ring::restore(&assigned, ring.next_id());
        assert!(restored.is_empty());
        assert_eq!(restored.assign("127.0.0.1:1"), (a, token_a, true));
        let (fresh, _, returning) = restored.assign("127.0.0.1:3");
        assert!(!returning);
        assert_eq!(fresh, SlaveId(3));
    }

    #[test]
    fn in_arc_handles_normal_wrapping_and_whole_arcs() {
        assert!(in_arc(150, Token(100), Token(200)));
        assert!(in_arc(200, Token(100), Token(200)));
        assert!(!in_arc(100, Token(100), Token(200)));
        assert!(in_arc(5, Token(300), Token(100)));
        assert!(in_arc(u64::MAX, Token(300), Token(100)));
        assert!(!in_arc(200, Token(300), Token(100)));
        assert!(in_arc(7, Token(9), Token(9)));
    }

    #[test]
    fn arc_of_agrees_with_placement() {
        let mut ring = Ring::new();
        for i in 0..5 {
            ring.join(&format!("127.0.0.1:{i}"));
        }
        let mut x = 0x1234_5678_9abc_def0u64;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let primary = ring.placement(x).unwrap().primary;
            let (start, end) = ring.arc_of(primary).unwrap();
            assert!(in_arc(x, start, end));
        }
    }
}
