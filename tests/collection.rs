//! Collection of tombstones and expired values (protocol.md, "Collection"): they go away
//! once `--tombstone-grace-secs` has passed, and no deleted or expired key ever comes
//! back, through restarts, a slave that missed the deletes, joins or compactions.

mod common;

use common::{Cluster, DEADLINE, Expected, wait_until};
use piazza::Client;

/// The grace the tests run with: the shortest accepted.
const GRACE: &[&str] = &["--tombstone-grace-secs", "1"];

/// Entries the live slaves hold: (live values, the rest: tombstones, and expired values,
/// which count with them), copies included.
fn entries(cluster: &Cluster) -> (u64, u64) {
    cluster
        .live_addrs()
        .iter()
        .map(|addr| {
            let counts = Client::connect(addr)
                .and_then(|mut c| c.slave_stats())
                .expect("slave stats");
            (
                counts.own_live + counts.previous_live,
                counts.own_tombstones + counts.previous_tombstones,
            )
        })
        .fold((0, 0), |(l, d), (dl, dd)| (l + dl, d + dd))
}

fn dead_entries(cluster: &Cluster) -> u64 {
    entries(cluster).1
}

fn wait_collected(cluster: &Cluster) {
    wait_until(DEADLINE, "every tombstone collected", || {
        dead_entries(cluster) == 0
    });
}

/// Waits until `serving` slaves serve and nothing is moving, then checks every key reads
/// as `expected` and has its two copies.
fn assert_settled_with(cluster: &Cluster, serving: usize, expected: &Expected) {
    cluster.wait_serving(serving);
    cluster.wait_settled();
    cluster.assert_reads(expected);
    cluster.assert_two_copies(expected);
}

#[test]
fn tombstones_of_many_deletes_are_collected_and_the_keys_stay_deleted() {
    let cluster = Cluster::start_with(3, GRACE);
    let mut client = cluster.client();
    let mut expected = Expected::new();
    for i in 0..3000 {
        let key = format!("gone{i}").into_bytes();
        client.put(&key, b"short-lived").unwrap();
        assert!(client.delete(&key).unwrap());
        expected.insert(key, None);
    }
    for i in 0..300 {
        let key = format!("kept{i}").into_bytes();
        client.put(&key, b"kept").unwrap();
        expected.insert(key, Some(b"kept".to_vec()));
    }
    assert!(
        dead_entries(&cluster) > 0,
        "the latest deletes are younger than the grace"
    );
    wait_collected(&cluster);
    cluster.assert_reads(&expected);
    cluster.assert_two_copies(&expected);
    assert!(
        cluster.coordinator.stderr_text().contains("tombstones and"),
        "the coordinator logs what it collected"
    );
    // Visible: `status` shows per slave what was collected and the tombstones left, and
    // memcached's `stats` the same per slave.
    let status = cluster.status();
    let collected: u64 = status.slaves.iter().filter_map(|s| s.collected).sum();
    assert!(
        collected >= 2 * 3000,
        "collected {collected}:\n{}",
        status.raw
    );
    assert!(
        status.slaves.iter().all(|s| s.tombstones == Some(0)),
        "{}",
        status.raw
    );
    let stats = memcached_stats(&cluster);
    for slave in status.slaves.iter().filter(|s| s.state == "alive") {
        let share = stats.get(&format!("slave_{}_share", slave.id));
        assert_eq!(
            share.map(String::as_str),
            Some(slave.share.trim_end_matches('%'))
        );
        let stat = |name: &str| stats.get(&format!("slave_{}_{name}", slave.id)).cloned();
        assert_eq!(stat("collected"), slave.collected.map(|c| c.to_string()));
        assert_eq!(stat("tombstones"), Some("0".to_string()));
    }
}

/// `stats` over memcached's text protocol, as name → value.
fn memcached_stats(cluster: &Cluster) -> std::collections::HashMap<String, String> {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::net::TcpStream::connect(&cluster.addr).unwrap();
    stream.write_all(b"stats\r\n").unwrap();
    let mut stats = std::collections::HashMap::new();
    for line in BufReader::new(stream).lines() {
        let line = line.unwrap();
        if line == "END" {
            break;
        }
        let mut parts = line.splitn(3, ' ');
        if let (Some("STAT"), Some(name), Some(value)) = (parts.next(), parts.next(), parts.next())
        {
            stats.insert(name.to_string(), value.to_string());
        }
    }
    stats
}

#[test]
fn a_slave_killed_and_restarted_after_a_collection_brings_no_deleted_key_back() {
    let mut cluster = Cluster::start_with(3, GRACE);
    let mut expected = cluster.load("r", 900);
    cluster.change_thirds(&mut expected);
    wait_collected(&cluster);
    // Its log still holds the deletes' records: they are replayed, and collected again.
    cluster.restart_slave(0);
    assert_settled_with(&cluster, 3, &expected);
    wait_collected(&cluster);
}

/// A slave stops (`signal` STOP) or dies while keys are deleted, and comes back (CONT, or
/// restarted with its old data dir) once their tombstones are collected everywhere else:
/// it still holds the deleted values, and none may come back.
fn a_slave_that_missed_deletes_returns_after_their_collection(stop: bool) {
    let mut cluster = Cluster::start_with(3, GRACE);
    let mut expected = cluster.load("m", 900);
    let away = cluster.slaves[0].addr.clone();
    if stop {
        cluster.slaves[0].proc.signal("STOP");
    } else {
        cluster.slaves[0].proc.kill();
    }
    cluster.wait_state(&away, "dead");
    cluster.wait_settled();
    cluster.change_thirds(&mut expected);
    wait_collected(&cluster);
    if stop {
        cluster.slaves[0].proc.signal("CONT");
    } else {
        cluster.restart_slave(0);
    }
    assert_settled_with(&cluster, 3, &expected);
    let log = cluster.slaves[0].proc.stderr_text();
    assert!(
        log.contains("forgot"),
        "the returning slave forgot what it held before joining:\n{log}"
    );
}

#[test]
fn a_slave_killed_while_keys_were_deleted_brings_none_back_after_their_collection() {
    a_slave_that_missed_deletes_returns_after_their_collection(false);
}

#[test]
fn a_slave_paused_while_keys_were_deleted_brings_none_back_after_their_collection() {
    a_slave_that_missed_deletes_returns_after_their_collection(true);
}

#[test]
fn a_join_and_compactions_after_a_collection_bring_nothing_back() {
    let mut cluster = Cluster::start_flags(3, GRACE, &["--compact-min-bytes", "20000"]);
    let mut expected = cluster.load("j", 1500);
    cluster.change_thirds(&mut expected);
    wait_collected(&cluster);
    // More writes, so every log grows past the threshold and is compacted.
    let mut client = cluster.client();
    for i in 0..1500 {
        let key = format!("after{i}").into_bytes();
        let value = vec![b'a' + (i % 26) as u8; 100];
        client.put(&key, &value).unwrap();
        expected.insert(key, Some(value));
    }
    for index in 0..3 {
        let dir = cluster.slave_dir(index);
        wait_until(DEADLINE, "every slave compacted its log", || {
            std::fs::read_dir(&dir).unwrap().flatten().any(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                name.starts_with("snapshot.") && !name.ends_with(".tmp")
            })
        });
    }
    // `status` shows when each slave last compacted.
    wait_until(DEADLINE, "status shows the compactions", || {
        let status = cluster.status();
        status.slaves.iter().all(|s| s.compacted.is_some())
    });
    // A new slave joins, and a compacted one restarts from its snapshot.
    cluster.add_slave();
    cluster.restart_slave(1);
    assert_settled_with(&cluster, 4, &expected);
}

#[test]
fn expired_values_are_collected_and_never_come_back() {
    let mut cluster = Cluster::start_with(3, GRACE);
    let mut client = cluster.client();
    let mut expected = Expected::new();
    for i in 0..600 {
        let key = format!("ttl{i}").into_bytes();
        client.put_with_ttl(&key, b"brief", 0, 1).unwrap();
        expected.insert(key, None);
    }
    for i in 0..100 {
        let key = format!("forever{i}").into_bytes();
        client.put(&key, b"stays").unwrap();
        expected.insert(key, Some(b"stays".to_vec()));
    }
    let (live, dead) = entries(&cluster);
    assert!(
        live + dead > 2 * 100,
        "the latest values with an expiry are still held"
    );
    wait_until(DEADLINE, "every expired value collected", || {
        entries(&cluster) == (2 * 100, 0)
    });
    let purged_or_collected: u64 = cluster
        .status()
        .slaves
        .iter()
        .map(|s| s.purged.unwrap_or(0) + s.collected.unwrap_or(0))
        .sum();
    assert!(
        purged_or_collected >= 2 * 600,
        "status counts the expired values dropped"
    );
    cluster.assert_reads(&expected);
    // A restart replays the expired values from the log: still invisible, collected again.
    cluster.restart_slave(2);
    assert_settled_with(&cluster, 3, &expected);
    wait_collected(&cluster);
}

#[test]
fn the_horizon_survives_a_coordinator_restart() {
    let mut cluster = Cluster::start_with(3, GRACE);
    let mut expected = cluster.load("h", 900);
    let away = cluster.slaves[0].addr.clone();
    cluster.slaves[0].proc.kill();
    cluster.wait_state(&away, "dead");
    cluster.wait_settled();
    cluster.change_thirds(&mut expected);
    wait_collected(&cluster);
    let ring = std::fs::read_to_string(cluster.dir.path().join("coordinator/ring")).unwrap();
    assert!(ring.contains("\ncollected "), "{ring}");
    // A coordinator whose own horizon is ten minutes back: only the saved one can make
    // the returning slave forget the values whose deletes it missed.
    cluster.coordinator_flags = vec!["--tombstone-grace-secs".into(), "600".into()];
    cluster.restart_coordinator();
    cluster.wait_serving(2);
    cluster.restart_slave(0);
    assert_settled_with(&cluster, 3, &expected);
}

#[test]
fn a_sole_slave_restarted_after_a_collection_keeps_all_its_data() {
    let mut cluster = Cluster::start_with(1, GRACE);
    let mut client = cluster.client();
    let mut expected = Expected::new();
    for i in 0..300 {
        let key = format!("s{i}").into_bytes();
        client.put(&key, b"only copy").unwrap();
        expected.insert(key, Some(b"only copy".to_vec()));
    }
    client.put(b"deleted", b"x").unwrap();
    assert!(client.delete(b"deleted").unwrap());
    expected.insert(b"deleted".to_vec(), None);
    // Once the delete is collected, the horizon is past every write above.
    wait_collected(&cluster);
    // It joins an empty ring again: its copy is the only one, nothing is forgotten.
    cluster.restart_slave(0);
    cluster.wait_serving(1);
    cluster.wait_settled();
    cluster.assert_reads(&expected);
}
