//! After a restart: the warm-up, and what the `ring` file gets; flush markers and the
//! collection horizon.

use std::time::Duration;

use super::{join, membership, restarted, saved_with_two_on_the_ring, state_of};
use crate::coordinator::membership::{Event, RouteError, SlaveState};
use crate::coordinator::persist::SavedHolders;
use crate::ring::{SLOTS, SlaveId};
use crate::store::FlushMarker;

#[test]
fn after_a_restart_nothing_is_served_until_the_ring_slaves_are_back() {
    let saved = saved_with_two_on_the_ring();
    let (membership, events) = restarted(&saved, Duration::from_secs(3600));
    let waiting = Some(RouteError::Restarting { waiting: 2 });
    assert_eq!(membership.warming(), waiting);
    assert_eq!(membership.route(b"k").err(), waiting);
    assert_eq!(membership.write_targets(b"k").err(), waiting);
    assert!(!membership.view().stable);
    assert!(membership.collection_targets().is_none());
    // Slave 1 comes back: straight onto the ring with its old slots, no join.
    let one = membership.register("127.0.0.1:1");
    assert_eq!(one.id, SlaveId(1));
    assert!(one.returning);
    assert_eq!(state_of(&membership, one.id), Some(SlaveState::Alive));
    assert!(events.try_recv().is_err(), "no join, no replication");
    assert_eq!(
        membership.warming(),
        Some(RouteError::Restarting { waiting: 1 })
    );
    // A newcomer registers meanwhile: its join must wait for the warm-up.
    let newcomer = membership.register("127.0.0.1:9");
    assert_eq!(newcomer.id, SlaveId(4), "ids continue from the saved ones");
    assert!(matches!(
        events.try_recv(),
        Ok(Event::Join { id, .. }) if id == newcomer.id
    ));
    assert!(membership.begin_rebalance().is_none());
    membership.requeue_join(newcomer.id, newcomer.session);
    assert!(matches!(
        events.try_recv(),
        Ok(Event::Join { id, session }) if id == newcomer.id && session == newcomer.session
    ));
    membership.requeue_join(newcomer.id, newcomer.session ^ 1);
    assert!(events.try_recv().is_err(), "a stale join is not requeued");
    // Slave 2 comes back: serving, on the saved ring.
    let two = membership.register("127.0.0.1:2");
    assert_eq!(two.id, SlaveId(2));
    assert_eq!(membership.warming(), None);
    assert!(membership.route(b"k").is_ok());
    let ring = membership.ring();
    for slave in &saved.slaves {
        if slave.on_ring {
            assert_eq!(ring.slot_count(slave.id), slave.slots.len());
        }
    }
    let sessions = [(one.id, one.session), (two.id, two.session)];
    for (slot, holders) in membership.applied().iter().enumerate() {
        let placement = ring.slot_placement(slot).expect("placed");
        let primary = holders.primary.expect("a primary");
        assert_eq!(primary.0, placement.primary);
        assert!(sessions.contains(&primary), "with its current session");
        assert_eq!(holders.replica.map(|r| r.0), placement.replica);
    }
    // The dead slave 3 gets its id back and joins like a newcomer.
    let three = membership.register("127.0.0.1:3");
    assert_eq!(three.id, SlaveId(3));
    assert_eq!(state_of(&membership, three.id), Some(SlaveState::Joining));
    assert!(
        membership
            .begin_join(newcomer.id, newcomer.session)
            .is_some()
    );
}

#[test]
fn ring_slaves_that_do_not_come_back_in_time_are_declared_dead() {
    let saved = saved_with_two_on_the_ring();
    let (waiting, _events) = restarted(&saved, Duration::from_secs(3600));
    waiting.end_warmup_if_due();
    assert!(waiting.warming().is_some(), "not due yet");

    let (membership, events) = restarted(&saved, Duration::ZERO);
    membership.register("127.0.0.1:1");
    membership.end_warmup_if_due();
    assert_eq!(membership.warming(), None);
    assert_eq!(
        state_of(&membership, SlaveId(2)),
        Some(SlaveState::Suspected)
    );
    assert!(matches!(
        events.try_recv(),
        Ok(Event::Replicate { id, .. }) if id == SlaveId(2)
    ));
    assert_eq!(membership.len(), 1);
    let route = membership.route(b"k").expect("serving");
    assert_eq!(route.primary.id, SlaveId(1));
    assert!(route.recovering);
}

#[test]
fn a_snapshot_keeps_awaited_slaves_on_the_ring() {
    let saved = saved_with_two_on_the_ring();
    let (membership, _events) = restarted(&saved, Duration::from_secs(3600));
    membership.register("127.0.0.1:1");
    let again = membership.snapshot();
    assert_eq!(
        again.slaves, saved.slaves,
        "ids, addresses, slots, on the ring"
    );
    assert_eq!(again.next_id, saved.next_id);
}

/// A coordinator that stopped in the middle of a move (slave 3 was taken off the ring,
/// its copies not yet made) saved where the data still was: after its restart the data
/// is taken to be there, not where the ring places it, and the file keeps saying so
/// until a move finishes.
#[test]
fn after_a_restart_the_data_is_where_the_file_says_not_where_the_ring_places_it() {
    let mut saved = saved_with_two_on_the_ring();
    // Before the move: slave 3 the primary of every slot, slave 1 its replica.
    saved.held = vec![SavedHolders {
        primary: SlaveId(3),
        replica: Some(SlaveId(1)),
        slots: (0..SLOTS).collect(),
    }];
    let (membership, _events) = restarted(&saved, Duration::from_secs(3600));
    assert_eq!(membership.snapshot().held, saved.held, "kept while awaited");
    let one = membership.register("127.0.0.1:1");
    membership.register("127.0.0.1:2");
    assert_eq!(membership.warming(), None);
    for holders in membership.applied() {
        let primary = holders.primary.expect("a primary");
        assert_eq!(primary.0, SlaveId(3));
        assert!(!membership.is_source(primary), "slave 3 is not back");
        assert_eq!(holders.replica, Some((SlaveId(1), one.session)));
    }
    assert_eq!(
        membership.snapshot().held,
        saved.held,
        "until a move finishes"
    );
    membership.set_applied(&membership.ring());
    assert_eq!(
        membership.snapshot().held,
        saved.held,
        "copies made is not finished"
    );
    membership.record_finished_move();
    let held = membership.snapshot().held;
    assert!(
        held.iter()
            .all(|h| h.primary != SlaveId(3) && h.replica != Some(SlaveId(3))),
        "{held:?}"
    );
    assert_eq!(held.iter().map(|h| h.slots.len()).sum::<usize>(), SLOTS);
}

/// During the warm-up the ring does not change: a slave of the restored ring that is
/// back may not leave (its slots could go only to the slaves back so far, not to where
/// the copies are), one that fails is awaited again with its slots, and one that
/// registers again is back at once.
#[test]
fn during_the_warm_up_a_slave_that_fails_or_leaves_keeps_its_slots() {
    let saved = saved_with_two_on_the_ring();
    let (membership, events) = restarted(&saved, Duration::from_secs(3600));
    let one = membership.register("127.0.0.1:1");
    let (done, _finished) = std::sync::mpsc::sync_channel(1);
    assert!(!membership.leave(one.id, one.session, done), "no leave now");
    membership.suspect(one.id, "test");
    assert_eq!(
        membership.warming(),
        Some(RouteError::Restarting { waiting: 2 }),
        "awaited again"
    );
    assert!(events.try_recv().is_err(), "nothing to move");
    let again = membership.register("127.0.0.1:1");
    assert!(again.returning);
    let _ = membership.register("127.0.0.1:1");
    assert_eq!(
        membership.warming(),
        Some(RouteError::Restarting { waiting: 1 }),
        "registering twice is still back"
    );
    assert!(events.try_recv().is_err(), "no join, no re-replication");
    membership.register("127.0.0.1:2");
    assert_eq!(membership.warming(), None);
    let ring = membership.ring();
    for slave in saved.slaves.iter().filter(|slave| slave.on_ring) {
        assert_eq!(ring.slot_count(slave.id), slave.slots.len());
    }
}

/// Until a move has sorted the tables, a restarted coordinator reads the newer of a
/// primary's two tables (a move it cut short may have left them out of order), and
/// neither collects nor lets clients go direct.
#[test]
fn after_a_restart_reads_take_both_tables_until_they_are_sorted() {
    let saved = saved_with_two_on_the_ring();
    let (membership, _events) = restarted(&saved, Duration::from_secs(3600));
    membership.register("127.0.0.1:1");
    membership.register("127.0.0.1:2");
    assert_eq!(membership.warming(), None);
    assert!(membership.route(b"k").unwrap().recovering);
    assert!(membership.collection_targets().is_none());
    assert!(!membership.view().stable);
    membership.set_unsorted(false);
    assert!(!membership.route(b"k").unwrap().recovering);
    assert!(membership.collection_targets().is_some());
    assert!(membership.view().stable);
}

#[test]
fn without_a_ring_file_nothing_waits_for_a_save() {
    let (membership, _events) = membership();
    assert!(membership.reserve_versions(u64::MAX).is_ok());
    assert!(
        membership
            .add_flush(FlushMarker {
                threshold: 1,
                at: 0
            })
            .is_ok()
    );
    assert_eq!(membership.raise_collection_horizon(7).ok(), Some(7));
    assert_eq!(membership.version_floor(), 0);
}

#[test]
fn flush_markers_are_kept_and_pruned() {
    let (membership, _events) = membership();
    let now = crate::store::now_micros();
    membership
        .add_flush(FlushMarker {
            threshold: 10,
            at: 0,
        })
        .unwrap();
    membership
        .add_flush(FlushMarker {
            threshold: 20,
            at: 0,
        })
        .unwrap();
    let later = FlushMarker {
        threshold: 99,
        at: now + 60_000_000,
    };
    membership.add_flush(later).unwrap();
    let markers = membership.flushes();
    assert_eq!(markers.len(), 2, "{markers:?}");
    assert!(markers.contains(&FlushMarker {
        threshold: 20,
        at: 0
    }));
    assert!(markers.contains(&later));
}

#[test]
fn collection_waits_for_a_quiet_ring_and_its_horizon_only_grows() {
    let (membership, _events) = membership();
    assert!(membership.collection_targets().is_none(), "no slaves");
    let a = join(&membership, "127.0.0.1:1").id;
    let b = join(&membership, "127.0.0.1:2").id;
    let targets = membership.collection_targets().expect("quiet");
    assert_eq!(targets.len(), 2);
    // A slave registering (joining) makes it wait.
    let c = membership.register("127.0.0.1:3");
    assert!(
        membership.collection_targets().is_none(),
        "a slave is joining"
    );
    assert!(membership.begin_join(c.id, c.session).is_some());
    assert!(membership.finish_join(c.id, c.session));
    assert!(
        membership.collection_targets().is_none(),
        "data still moving"
    );
    membership.end_move();
    assert_eq!(membership.collection_targets().map(|t| t.len()), Some(3));
    // A death: not until its ranges have moved.
    membership.suspect(a, "test");
    assert!(membership.collection_targets().is_none());
    membership.finish_replicate(a);
    let targets = membership.collection_targets().expect("quiet again");
    assert!(targets.iter().all(|(id, _)| *id != a));
    assert!(targets.iter().any(|(id, _)| *id == b));
    assert_eq!(membership.collection_horizon(), 0);
    assert_eq!(membership.raise_collection_horizon(50).ok(), Some(50));
    assert_eq!(membership.raise_collection_horizon(40).ok(), Some(50));
    assert_eq!(membership.collection_horizon(), 50);
}
