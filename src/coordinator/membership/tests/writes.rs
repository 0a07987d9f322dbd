//! Where writes go, the tickets that count them, drains, and route errors.

use std::time::Duration;

use super::{join, membership};
use crate::coordinator::membership::RouteError;
use crate::wire::TableSel;

#[test]
fn write_targets_put_the_key_primary_first() {
    let (membership, _events) = membership();
    for port in 1..=3 {
        join(&membership, &format!("127.0.0.1:{port}"));
    }
    for i in 0..200 {
        let key = format!("key{i}").into_bytes();
        let route = membership.route(&key).unwrap();
        let (targets, _ticket) = membership.write_targets(&key).unwrap();
        assert_eq!(targets.len(), 2);
        assert_eq!(targets[0].0.id, route.primary.id);
        assert_eq!(targets[0].1, TableSel::Own);
        assert_eq!(Some(targets[1].0.id), route.replica.as_ref().map(|r| r.id));
        assert_eq!(targets[1].1, TableSel::Previous);
    }
}

#[test]
fn a_drain_waits_for_older_epochs_only() {
    let (membership, _events) = membership();
    let a = join(&membership, "127.0.0.1:1");
    join(&membership, "127.0.0.1:2");
    let (_, old) = membership.write_targets(b"k").unwrap();
    membership.suspect(a.id, "test");
    let (_, current) = membership.write_targets(b"k").unwrap();
    assert!(current.epoch() > old.epoch());
    std::thread::scope(|scope| {
        let drain = scope.spawn(|| membership.drain(Duration::from_secs(10)));
        drop(old);
        assert!(drain.join().unwrap(), "done once the old write is");
    });
    assert!(
        membership.drain(Duration::from_millis(10)),
        "a write of the current epoch is not waited for"
    );
    drop(current);
}

#[test]
fn a_drain_waits_for_the_writes_of_older_epochs() {
    let (membership, _events) = membership();
    let a = join(&membership, "127.0.0.1:1").id;
    join(&membership, "127.0.0.1:2");
    let (_, ticket) = membership.write_targets(b"k").unwrap();
    assert!(membership.drain(Duration::from_millis(10)), "nothing older");
    membership.suspect(a, "test");
    assert!(
        !membership.drain(Duration::from_millis(50)),
        "a write of the old epoch is under way"
    );
    drop(ticket);
    assert!(membership.drain(Duration::from_millis(50)));
}

#[test]
fn wait_epoch_returns_at_a_change_or_its_timeout() {
    let (membership, _events) = membership();
    let epoch = membership.epoch();
    assert_eq!(
        membership.wait_epoch(epoch, Duration::from_millis(10)),
        epoch
    );
    let registered = membership.register("127.0.0.1:1");
    assert!(
        membership
            .begin_join(registered.id, registered.session)
            .is_some()
    );
    let now = membership.epoch();
    assert!(now > epoch);
    assert_eq!(
        membership.wait_epoch(epoch, Duration::from_secs(60)),
        now,
        "already changed: no wait"
    );
}

#[test]
fn route_errors_read_as_clients_saw_them() {
    assert_eq!(
        RouteError::NoSlaves.to_string(),
        "no slaves in the ring (start a piazza-slave)"
    );
    assert_eq!(
        RouteError::Restarting { waiting: 3 }.to_string(),
        "coordinator restarting: waiting for 3 slave(s) to register again"
    );
}
