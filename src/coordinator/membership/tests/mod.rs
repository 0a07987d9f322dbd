//! Unit tests of [`Membership`], transition by transition: `states` (registration, joins,
//! deaths, leaves, rebalancing), `restart` (the warm-up after a restart and what is saved),
//! `writes` (write targets, tickets and drains, route errors). Nothing here does I/O: the
//! membership has no ring file, and a
//! [`SlaveHandle`](crate::link::SlaveHandle) connects only when it is used,
//! which these tests never do.

use std::collections::HashSet;
use std::sync::mpsc;
use std::time::Duration;

use super::{Event, Membership, Registered, SlaveState};
use crate::coordinator::persist::Saved;
use crate::ring::SlaveId;

mod restart;
mod states;
mod writes;

pub(super) fn membership() -> (Membership, mpsc::Receiver<Event>) {
    let membership = Membership::new(1, Duration::from_secs(1));
    let (events, received) = mpsc::channel();
    membership.set_events(events);
    (membership, received)
}

/// Registers `addr` and takes it through a whole join.
pub(super) fn join(membership: &Membership, addr: &str) -> Registered {
    let registered = membership.register(addr);
    assert!(
        membership
            .begin_join(registered.id, registered.session)
            .is_some()
    );
    assert!(membership.finish_join(registered.id, registered.session));
    membership.end_move();
    registered
}

/// The state `status` shows for `id`.
pub(super) fn state_of(membership: &Membership, id: SlaveId) -> Option<SlaveState> {
    membership
        .status()
        .rows
        .iter()
        .find(|row| row.member.id == id)
        .map(|row| row.state)
}

/// The ids a write of `key` goes to.
pub(super) fn write_ids(membership: &Membership, key: &[u8]) -> HashSet<SlaveId> {
    let (targets, _ticket) = membership.write_targets(key).expect("writable");
    targets.iter().map(|(handle, _)| handle.id).collect()
}

/// A membership as a coordinator restarted with `saved` finds it.
pub(super) fn restarted(saved: &Saved, grace: Duration) -> (Membership, mpsc::Receiver<Event>) {
    let (mut membership, events) = membership();
    membership.restore(saved, grace);
    (membership, events)
}

/// What a coordinator with slaves 1 and 2 on the ring and 3 dead saves.
pub(super) fn saved_with_two_on_the_ring() -> Saved {
    let (membership, _events) = membership();
    join(&membership, "127.0.0.1:1");
    join(&membership, "127.0.0.1:2");
    let dead = join(&membership, "127.0.0.1:3");
    membership.suspect(dead.id, "test");
    membership.finish_replicate(dead.id);
    let saved = membership.snapshot();
    let on: Vec<bool> = saved.slaves.iter().map(|s| s.on_ring).collect();
    assert_eq!(on, [true, true, false]);
    saved
}

/// Four slaves, one dead and its ranges moved: the three left have uneven shares.
pub(super) fn uneven() -> (Membership, mpsc::Receiver<Event>) {
    let (membership, events) = membership();
    for port in 1..=4 {
        join(&membership, &format!("127.0.0.1:{port}"));
    }
    assert!(membership.begin_rebalance().is_none(), "even shares");
    membership.suspect(SlaveId(4), "test");
    membership.finish_replicate(SlaveId(4));
    assert!(
        !membership.ring().is_balanced(),
        "the test needs uneven shares"
    );
    let _ = events.try_iter().count();
    (membership, events)
}
