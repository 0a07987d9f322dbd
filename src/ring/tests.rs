use super::*;
use crate::rng::Rng;

fn ring_of(n: usize) -> Ring {
    let mut ring = Ring::new();
    for i in 0..n {
        ring.join(&format!("127.0.0.1:{}", 7410 + i));
    }
    ring
}

/// Every live slave owns within one slot of SLOTS / N, and within ±10 %.
fn assert_balanced(ring: &Ring, what: &str) {
    let n = ring.len();
    if n == 0 {
        return;
    }
    let fair = SLOTS as f64 / n as f64;
    for member in ring.members() {
        let slots = member.slots as f64;
        assert!(
            (slots - fair).abs() <= 2.0 && (slots - fair).abs() <= fair * 0.10 + 1.0,
            "{what}: slave {} owns {} slots, fair share {fair:.1}: {:?}",
            member.id,
            member.slots,
            ring.members()
        );
    }
    let owned: usize = ring.members().iter().map(|m| m.slots).sum();
    assert_eq!(owned, SLOTS, "{what}: every slot has an owner");
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
fn slots_tokens_and_arcs_agree() {
    assert_eq!(slot_token(0), Token(0x003f_ffff_ffff_ffff));
    assert_eq!(slot_token(SLOTS - 1), Token(u64::MAX));
    for slot in [0, 1, 511, SLOTS - 1] {
        assert_eq!(slot_of(slot_token(slot).0), slot);
        let (start, end) = slots_arc(slot, slot);
        assert!(in_arc(slot_token(slot).0, Token(start), Token(end)));
        assert!(!in_arc(start, Token(start), Token(end)));
    }
    assert_eq!(
        arcs_of_slots(&[3, 1, 2, 7]),
        vec![slots_arc(1, 3), slots_arc(7, 7)]
    );
    let set = RangeSet::from_arcs(&arcs_of_slots(&[0, 5, 6, SLOTS - 1]));
    let mut rng = Rng::new(7, 0);
    for _ in 0..100_000 {
        let hash = rng.next();
        let slot = slot_of(hash);
        assert_eq!(set.contains(hash), [0, 5, 6, SLOTS - 1].contains(&slot));
    }
    assert!(RangeSet::from_arcs(&[(9, 9)]).contains(12345));
    let wrapping = RangeSet::from_arcs(&[(u64::MAX - 5, 10)]);
    assert!(wrapping.contains(u64::MAX) && wrapping.contains(0) && wrapping.contains(10));
    assert!(!wrapping.contains(11) && !wrapping.contains(u64::MAX - 5));
    assert!(RangeSet::from_arcs(&[]).is_empty());
}

#[test]
fn empty_ring_places_nothing() {
    let ring = Ring::new();
    assert_eq!(ring.placement(42), None);
    assert!(ring.is_empty());
}

#[test]
fn one_slave_takes_every_slot_with_no_replica() {
    let ring = ring_of(1);
    for hash in [0, 999, u64::MAX] {
        assert_eq!(
            ring.placement(hash),
            Some(Placement {
                primary: SlaveId(1),
                replica: None
            })
        );
    }
    assert_eq!(ring.slot_count(SlaveId(1)), SLOTS);
}

#[test]
fn two_slaves_split_evenly_and_replicate_each_other() {
    let ring = ring_of(2);
    assert_balanced(&ring, "two");
    for slot in 0..SLOTS {
        let p = ring.slot_placement(slot).unwrap();
        assert_eq!(p.replica, Some(SlaveId(3 - p.primary.0)));
    }
}

#[test]
fn the_replica_is_the_next_token_of_another_slave() {
    let ring = ring_of(5);
    let tokens = ring.tokens();
    for (i, &(token, owner)) in tokens.iter().enumerate() {
        let next = (1..tokens.len())
            .map(|k| tokens[(i + k) % tokens.len()].1)
            .find(|&o| o != owner);
        let placement = ring.placement(token.0).unwrap();
        assert_eq!(placement.primary, owner);
        assert_eq!(placement.replica, next);
        // A hash just past the previous token lands on this one.
        let before = tokens[(i + tokens.len() - 1) % tokens.len()].0;
        assert_eq!(
            ring.placement(before.0.wrapping_add(1)).unwrap().primary,
            owner
        );
    }
}

#[test]
fn shares_stay_balanced_and_moves_stay_small_in_any_order() {
    let mut rng = Rng::new(42, 0);
    for round in 0..60 {
        let mut ring = Ring::new();
        let mut next_addr = 0;
        for step in 0..80 {
            let n = ring.len();
            let grow = n == 0 || (n < 16 && rng.next() % 2 == 0);
            let before: Vec<Option<SlaveId>> = ring.slot_owners();
            if grow {
                // A new address, or one that left before (its id comes back).
                let addr = if next_addr > 0 && rng.next() % 3 == 0 {
                    format!("10.0.0.{}:1", rng.next() % next_addr)
                } else {
                    next_addr += 1;
                    format!("10.0.0.{}:1", next_addr - 1)
                };
                let (id, _) = ring.assign(&addr);
                if ring.is_live(id) {
                    continue;
                }
                ring = ring.with(id);
                let after = ring.slot_owners();
                let moved = (0..SLOTS).filter(|&s| before[s] != after[s]).count();
                assert!((0..SLOTS).all(|s| before[s] == after[s] || after[s] == Some(id)));
                assert!(moved <= SLOTS / (n + 1) + 1, "a join moved {moved} slots");
            } else {
                let members = ring.members();
                let gone = members[(rng.next() % members.len() as u64) as usize].id;
                assert!(ring.remove(gone));
                let after = ring.slot_owners();
                assert!(
                    (0..SLOTS).all(|s| before[s] == after[s] || before[s] == Some(gone)),
                    "a removal moved only the removed slave's slots"
                );
                let replicas: Vec<usize> =
                    (0..SLOTS).filter(|&s| before[s] == Some(gone)).collect();
                assert!(
                    replicas
                        .iter()
                        .all(|&s| after[s].is_some() || ring.is_empty())
                );
                let balanced = ring.rebalanced();
                let owners = balanced.slot_owners();
                let moved = (0..SLOTS).filter(|&s| after[s] != owners[s]).count();
                assert!(
                    moved <= replicas.len(),
                    "rebalancing moved {moved} slots after a removal of {}",
                    replicas.len()
                );
                ring = balanced;
            }
            assert_balanced(&ring, &format!("round {round} step {step}"));
        }
    }
}

#[test]
fn a_returning_address_gets_its_id_back() {
    let mut ring = Ring::new();
    let (a, returning) = ring.join("127.0.0.1:1");
    assert!(!returning);
    let (b, _) = ring.join("127.0.0.1:2");
    let epoch = ring.epoch();
    assert_eq!(ring.join("127.0.0.1:1"), (a, true));
    assert_eq!(ring.epoch(), epoch, "re-adding a live member is idempotent");
    assert!(ring.remove(a));
    assert!(!ring.remove(a));
    ring = ring.rebalanced();
    assert!(!ring.is_live(a));
    assert_eq!(ring.len(), 1);
    assert_eq!(ring.slot_count(b), SLOTS);
    let (c, _) = ring.join("127.0.0.1:3");
    assert_eq!(c, SlaveId(3));
    assert_eq!(ring.join("127.0.0.1:1"), (a, true));
    assert!(ring.epoch() > epoch);
    assert_eq!(ring.addr_of(a), Some("127.0.0.1:1"));
    assert_balanced(&ring, "three");
}

#[test]
fn a_restored_ring_gives_old_slaves_their_ids_and_slots() {
    let ring = ring_of(3);
    let mut restored = Ring::restore(&ring.assigned(), ring.next_id());
    assert!(restored.is_empty());
    assert_eq!(restored.assign("127.0.0.1:7411"), (SlaveId(2), true));
    for id in [SlaveId(2), SlaveId(1), SlaveId(3)] {
        assert!(restored.insert_saved(id));
        assert!(!restored.insert_saved(id));
    }
    assert_eq!(restored.tokens(), ring.tokens());
    assert_eq!(restored.placement(12345), ring.placement(12345));
    let (fresh, returning) = restored.assign("127.0.0.1:9");
    assert!(!returning);
    assert_eq!(fresh, SlaveId(4));
}

#[test]
fn a_slave_assigned_while_another_joins_is_kept_when_the_join_ends() {
    let mut ring = ring_of(1);
    let (b, _) = ring.assign("127.0.0.1:2");
    let future = ring.with(b);
    // A third slave registers while b receives its data.
    let (c, _) = ring.assign("127.0.0.1:3");
    ring.adopt(&future);
    assert!(ring.is_live(b));
    assert_eq!(ring.addr_of(c), Some("127.0.0.1:3"));
    let with_c = ring.with(c);
    assert_eq!(with_c.len(), 3);
    assert_balanced(&with_c, "after the third join");
    assert_eq!(ring.assign("127.0.0.1:9").0, SlaveId(4), "ids go on");
}

#[test]
fn a_removal_leaves_little_to_rebalance() {
    for n in [3, 4, 5, 8, 16] {
        let mut worst = 0;
        for gone in 0..n {
            let mut ring = ring_of(n);
            let before = ring.slot_owners();
            let id = ring.members()[gone].id;
            ring.remove(id);
            let after = ring.slot_owners();
            let balanced = ring.rebalanced().slot_owners();
            let moved = (0..SLOTS).filter(|&s| after[s] != balanced[s]).count();
            assert!((0..SLOTS).all(|s| before[s] == after[s] || before[s] == Some(id)));
            worst = worst.max(moved);
        }
        // The dead slave had SLOTS / n slots; evening out moves a small part of that.
        assert!(
            worst <= SLOTS / n / 4,
            "{n} slaves: rebalancing moved {worst} slots"
        );
    }
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
