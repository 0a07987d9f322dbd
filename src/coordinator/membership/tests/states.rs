//! The state machine: registration, joins, deaths, leaves, rebalancing.

use std::sync::mpsc;

use super::{join, membership, state_of, uneven, write_ids};
use crate::coordinator::membership::{Event, Heard, RouteError, SlaveState};
use crate::ring::SlaveId;

#[test]
fn a_registered_slave_is_joining_and_its_join_is_queued() {
    let (membership, events) = membership();
    let registered = membership.register("127.0.0.1:1");
    assert!(!registered.returning);
    assert_eq!(
        state_of(&membership, registered.id),
        Some(SlaveState::Joining)
    );
    assert!(matches!(
        events.try_recv(),
        Ok(Event::Join { id, session }) if id == registered.id && session == registered.session
    ));
    assert!(events.try_recv().is_err(), "one event");
    assert_eq!(membership.len(), 0, "not routed to before it has its data");
    assert_eq!(membership.route(b"k").err(), Some(RouteError::NoSlaves));
    assert_eq!(
        membership.write_targets(b"k").err(),
        Some(RouteError::NoSlaves),
        "nor written to before its join starts"
    );
    assert_eq!(
        membership.heard(registered.id, registered.session),
        Heard::Known
    );
}

#[test]
fn a_join_makes_the_slave_alive_and_writes_reach_its_future_places_meanwhile() {
    let (membership, _events) = membership();
    let first = join(&membership, "127.0.0.1:1");
    let second = membership.register("127.0.0.1:2");
    assert!(
        membership
            .begin_join(second.id, second.session ^ 1)
            .is_none(),
        "a stale session does not join"
    );
    let before = membership.epoch();
    let (handle, future) = membership
        .begin_join(second.id, second.session)
        .expect("it joins");
    assert_eq!(handle.id, second.id);
    let during = membership.epoch();
    assert!(during > before, "writes go somewhere new: a new epoch");
    assert!(membership.joining());
    assert_eq!(state_of(&membership, second.id), Some(SlaveState::Joining));
    let ring = membership.ring();
    let mut reached_the_joiner = 0;
    for i in 0..100 {
        let key = format!("key{i}").into_bytes();
        let ids = write_ids(&membership, &key);
        for placement in [ring.placement_of_key(&key), future.placement_of_key(&key)] {
            let placement = placement.expect("placed");
            assert!(ids.contains(&placement.primary), "{key:?}");
            assert!(placement.replica.is_none_or(|r| ids.contains(&r)));
        }
        assert!(ids.contains(&first.id));
        reached_the_joiner += usize::from(ids.contains(&second.id));
    }
    assert_eq!(
        reached_the_joiner, 100,
        "with two slaves it holds every key"
    );
    assert!(membership.finish_join(second.id, second.session));
    assert!(membership.epoch() > during);
    assert!(!membership.joining());
    assert_eq!(state_of(&membership, second.id), Some(SlaveState::Alive));
    assert_eq!(membership.len(), 2);
    assert_eq!(membership.ring().tokens(), future.tokens());
}

#[test]
fn a_join_planned_before_the_ring_changed_is_queued_again() {
    let (membership, events) = membership();
    join(&membership, "127.0.0.1:1");
    let b = join(&membership, "127.0.0.1:2");
    let c = membership.register("127.0.0.1:3");
    let _ = events.try_iter().count();
    assert!(membership.begin_join(c.id, c.session).is_some());
    // B dies while C receives its data: C's future ring is stale.
    membership.suspect(b.id, "test");
    assert!(matches!(
        events.try_recv(),
        Ok(Event::Replicate { id, .. }) if id == b.id
    ));
    assert!(!membership.finish_join(c.id, c.session));
    assert!(matches!(
        events.try_recv(),
        Ok(Event::Join { id, session }) if id == c.id && session == c.session
    ));
    assert_eq!(state_of(&membership, c.id), Some(SlaveState::Joining));
    assert!(!membership.joining());
    assert_eq!(membership.len(), 1, "C is not on the ring");
    assert!(!write_ids(&membership, b"k").contains(&c.id));
}

#[test]
fn a_suspected_slave_is_replicated_then_dead() {
    let (membership, events) = membership();
    let a = join(&membership, "127.0.0.1:1");
    join(&membership, "127.0.0.1:2");
    let _ = events.try_iter().count();
    membership.suspect(a.id, "test");
    assert_eq!(state_of(&membership, a.id), Some(SlaveState::Suspected));
    assert!(matches!(
        events.try_recv(),
        Ok(Event::Replicate { id, reason, done: None }) if id == a.id && reason == "test"
    ));
    assert_eq!(membership.len(), 1);
    assert!(
        membership.collection_targets().is_none(),
        "its ranges are moving"
    );
    membership.finish_replicate(a.id);
    assert_eq!(state_of(&membership, a.id), Some(SlaveState::Dead));
    assert_eq!(
        membership.heard(a.id, a.session),
        Heard::Unknown,
        "a dead slave is told to register again"
    );
    assert!(membership.collection_targets().is_some());
}

#[test]
fn a_joining_slave_that_fails_is_dead_at_once_and_nothing_moves() {
    let (membership, events) = membership();
    join(&membership, "127.0.0.1:1");
    let before = membership.ring().tokens();
    let c = membership.register("127.0.0.1:2");
    let _ = events.try_iter().count();
    assert!(membership.begin_join(c.id, c.session).is_some());
    membership.suspect(c.id, "test");
    assert_eq!(state_of(&membership, c.id), Some(SlaveState::Dead));
    assert!(
        events.try_recv().is_err(),
        "no replication: it held nothing"
    );
    assert!(!membership.joining());
    assert!(!write_ids(&membership, b"k").contains(&c.id));
    assert!(!membership.finish_join(c.id, c.session));
    assert!(events.try_recv().is_err(), "nor a join again");
    assert_eq!(membership.ring().tokens(), before);
    assert!(
        membership.collection_targets().is_some(),
        "no move left under way"
    );
}

#[test]
fn a_leaving_slave_hands_off_and_is_told_when_done() {
    let (membership, events) = membership();
    let a = join(&membership, "127.0.0.1:1");
    join(&membership, "127.0.0.1:2");
    let _ = events.try_iter().count();
    let (done, told) = mpsc::sync_channel(1);
    assert!(
        !membership.leave(a.id, a.session ^ 1, done.clone()),
        "a stale session cannot leave"
    );
    assert_eq!(state_of(&membership, a.id), Some(SlaveState::Alive));
    assert!(membership.leave(a.id, a.session, done));
    assert_eq!(state_of(&membership, a.id), Some(SlaveState::Leaving));
    assert_eq!(membership.len(), 1);
    let Ok(Event::Replicate {
        id,
        done: Some(done),
        ..
    }) = events.try_recv()
    else {
        panic!("a leave queues a hand-off that tells when it is done");
    };
    assert_eq!(id, a.id);
    assert!(
        membership.is_source((a.id, a.session)),
        "it hands off its data"
    );
    done.send(()).unwrap();
    assert_eq!(told.try_recv(), Ok(()));
    membership.finish_replicate(a.id);
    assert_eq!(state_of(&membership, a.id), Some(SlaveState::Dead));
    assert!(!membership.is_source((a.id, a.session)));
    let (again, _) = mpsc::sync_channel(1);
    assert!(!membership.leave(a.id, a.session, again), "once");
}

#[test]
fn a_live_slave_that_registers_again_is_replaced_and_joins_again() {
    let (membership, events) = membership();
    let a = join(&membership, "127.0.0.1:1");
    join(&membership, "127.0.0.1:2");
    let _ = events.try_iter().count();
    let again = membership.register("127.0.0.1:1");
    assert_eq!(again.id, a.id);
    assert!(again.returning);
    assert_ne!(again.session, a.session);
    assert!(matches!(
        events.try_recv(),
        Ok(Event::Replicate { id, done: None, .. }) if id == a.id
    ));
    assert!(matches!(
        events.try_recv(),
        Ok(Event::Join { id, session }) if id == a.id && session == again.session
    ));
    assert_eq!(state_of(&membership, a.id), Some(SlaveState::Joining));
    assert_eq!(membership.len(), 1, "the old incarnation is off the ring");
    assert_eq!(membership.heard(a.id, a.session), Heard::Unknown);
    assert_eq!(membership.heard(a.id, again.session), Heard::Known);
    assert_eq!(membership.heard(SlaveId(99), again.session), Heard::Unknown);
    assert!(
        !membership.is_source((a.id, a.session)),
        "the old incarnation's data is gone"
    );
}

#[test]
fn a_rebalance_evens_the_shares_and_writes_reach_both_places_meanwhile() {
    let (membership, _events) = uneven();
    let before = membership.epoch();
    let ring = membership.ring();
    let future = membership.begin_rebalance().expect("uneven shares");
    assert!(future.is_balanced());
    assert!(membership.epoch() > before);
    assert!(membership.begin_rebalance().is_none(), "one at a time");
    assert!(membership.collection_targets().is_none(), "data moves");
    assert!(!membership.view().stable);
    for i in 0..100 {
        let key = format!("key{i}").into_bytes();
        let ids = write_ids(&membership, &key);
        for placement in [ring.placement_of_key(&key), future.placement_of_key(&key)] {
            assert!(ids.contains(&placement.expect("placed").primary));
        }
    }
    assert!(membership.finish_rebalance());
    assert_eq!(membership.ring().tokens(), future.tokens());
    assert!(
        membership.collection_targets().is_none(),
        "until the old places dropped what moved"
    );
    membership.end_move();
    assert!(membership.collection_targets().is_some());
    assert!(membership.view().stable);
    assert!(membership.begin_rebalance().is_none(), "even now");
}

#[test]
fn an_aborted_or_overtaken_rebalance_changes_nothing() {
    let (membership, events) = uneven();
    let ring = membership.ring();
    assert!(membership.begin_rebalance().is_some());
    let during = membership.epoch();
    membership.abort_rebalance();
    assert!(
        membership.epoch() > during,
        "writes stop going to the future"
    );
    assert_eq!(membership.ring().tokens(), ring.tokens());
    assert!(membership.collection_targets().is_some());
    // Planned again, then a slave dies before the switch.
    assert!(membership.begin_rebalance().is_some());
    membership.suspect(SlaveId(3), "test");
    assert!(matches!(
        events.try_recv(),
        Ok(Event::Replicate { id, .. }) if id == SlaveId(3)
    ));
    let after_the_death = membership.ring().tokens();
    assert!(!membership.finish_rebalance());
    assert_eq!(membership.ring().tokens(), after_the_death);
    membership.finish_replicate(SlaveId(3));
    assert!(membership.collection_targets().is_some(), "no move left");
    // Nor does one start while a slave joins.
    let joiner = membership.register("127.0.0.1:9");
    assert!(membership.begin_join(joiner.id, joiner.session).is_some());
    assert!(membership.begin_rebalance().is_none());
}

#[test]
fn a_slave_that_registers_while_another_joins_gets_its_share_at_its_own_join() {
    let (membership, _events) = membership();
    join(&membership, "127.0.0.1:1");
    let b = membership.register("127.0.0.1:2");
    assert!(membership.begin_join(b.id, b.session).is_some());
    // C registers while B receives its data.
    let c = membership.register("127.0.0.1:3");
    assert!(membership.finish_join(b.id, b.session));
    membership.end_move();
    let (_, future) = membership.begin_join(c.id, c.session).expect("C joins");
    assert!(future.slot_count(c.id) >= crate::ring::SLOTS / 3 - 1);
    assert!(membership.finish_join(c.id, c.session));
    let shares: Vec<usize> = membership
        .ring()
        .members()
        .iter()
        .map(|m| m.slots)
        .collect();
    assert_eq!(shares.len(), 3);
    assert!(
        shares.iter().all(|&n| (341..=342).contains(&n)),
        "{shares:?}"
    );
}

#[test]
fn a_join_moves_data_until_the_old_places_have_dropped_it() {
    let (membership, events) = membership();
    let first = join(&membership, "127.0.0.1:1").id;
    assert!(membership.view().stable);
    let registered = membership.register("127.0.0.1:2");
    assert!(matches!(
        events.try_iter().last(),
        Some(Event::Join { id, .. }) if id == registered.id
    ));
    assert!(!membership.view().stable, "a slave is joining");
    let (_, future) = membership
        .begin_join(registered.id, registered.session)
        .unwrap();
    assert_eq!(future.len(), 2);
    // While it joins, writes reach it and the old places: both tables of the first.
    let (targets, ticket) = membership.write_targets(b"k").unwrap();
    assert!(targets.iter().any(|(h, _)| h.id == registered.id));
    assert!(targets.iter().any(|(h, _)| h.id == first));
    drop(ticket);
    assert!(membership.finish_join(registered.id, registered.session));
    assert!(
        membership.route(b"k").unwrap().recovering,
        "on the ring, but the old places still hold what moved"
    );
    assert!(!membership.view().stable);
    membership.end_move();
    assert!(!membership.route(b"k").unwrap().recovering);
    assert!(membership.view().stable);
    assert_eq!(membership.len(), 2);
}

#[test]
fn a_suspected_slave_leaves_the_ring_once_and_its_ranges_move() {
    let (membership, events) = membership();
    let a = join(&membership, "127.0.0.1:1").id;
    let b = join(&membership, "127.0.0.1:2").id;
    let _ = events.try_iter().count();
    let epoch = membership.epoch();
    membership.suspect(a, "test");
    assert!(membership.epoch() > epoch, "a ring change is a new epoch");
    assert!(matches!(
        events.try_iter().last(),
        Some(Event::Replicate { id, .. }) if id == a
    ));
    let route = membership.route(b"k").unwrap();
    assert_eq!(route.primary.id, b);
    assert!(route.replica.is_none());
    assert!(route.recovering);
    membership.suspect(a, "again");
    assert_eq!(events.try_iter().count(), 0, "declared dead once");
    membership.finish_replicate(a);
    assert!(!membership.route(b"k").unwrap().recovering);
    // Its address registers again with its old id and token.
    let again = membership.register("127.0.0.1:1");
    assert_eq!(again.id, a);
}
