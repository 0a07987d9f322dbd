//! Durability: the slave log, the coordinator's saved ring, and restarts of everything,
//! with real processes and SIGKILL.

mod common;

use std::path::Path;

use common::{Cluster, DEADLINE, Expected, Proc, TempDir, bin, wait_ok, wait_until};
use piazza::Client;
use piazza::wire::{Frame, Opcode, Status, TableSel};

#[test]
fn with_fsync_always_killing_every_process_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start_flags(3, &[], &["--fsync", "always"]);
    cluster.wait_serving(3);
    let addr = cluster.addr.clone();

    let mut client = Client::connect(&addr).unwrap();
    let mut expected = Expected::new();
    for i in 0..3000 {
        let key = format!("d{i}").into_bytes();
        let value = format!("first {i}").into_bytes();
        client.put(&key, &value).unwrap();
        expected.insert(key, Some(value));
    }
    for i in (0..3000).step_by(3) {
        let key = format!("d{i}").into_bytes();
        let value = format!("second {i}").into_bytes();
        client.put(&key, &value).unwrap();
        expected.insert(key, Some(value));
    }
    for i in (1..3000).step_by(5) {
        let key = format!("d{i}").into_bytes();
        client.delete(&key).unwrap();
        expected.insert(key, None);
    }
    let last_version = client.put(b"last", b"x").unwrap();
    expected.insert(b"last".to_vec(), Some(b"x".to_vec()));

    // Everything dies at once.
    cluster.kill_all();

    // Everything comes back on the same addresses and data dirs.
    cluster.restart_coordinator();
    for index in 0..3 {
        cluster.restart_slave(index);
    }
    cluster.wait_serving(3);

    let mut client = Client::connect(&addr).unwrap();
    for (key, value) in &expected {
        let got = client.get(key).unwrap().map(|v| v.value);
        assert_eq!(&got, value, "{}", String::from_utf8_lossy(key));
    }
    cluster.assert_two_copies(&expected);
    // No version is issued twice.
    assert!(client.put(b"after", b"y").unwrap() > last_version);
}

#[test]
fn a_restarted_coordinator_keeps_the_ring_and_never_reuses_a_version() {
    let mut cluster = Cluster::start_flags(3, &[], &["--fsync", "everysec"]);
    cluster.wait_serving(3);
    let mut client = cluster.client();
    let mut expected = Expected::new();
    let mut before = 0;
    for i in 0..500 {
        let key = format!("c{i}").into_bytes();
        before = client.put(&key, b"before").unwrap();
        expected.insert(key, Some(b"before".to_vec()));
    }
    // Same addresses (heartbeat port too) and data dir.
    cluster.restart_coordinator();
    // The slaves find out from the answers to their heartbeats and register again.
    cluster.wait_serving(3);
    // The same client reconnects by itself.
    let after = client.put(b"c0", b"after").unwrap();
    assert!(after > before, "version {after} reused (before: {before})");
    expected.insert(b"c0".to_vec(), Some(b"after".to_vec()));
    for (key, value) in &expected {
        assert_eq!(client.get(key).unwrap().map(|v| v.value), *value);
    }
    cluster.assert_two_copies(&expected);
}

/// A coordinator killed in the middle of a move (here a leave: the saved ring no longer
/// has the leaving slave, and none of its copies are made yet, because a slave the move
/// needs is paused) takes the move up again after its restart from where the data is,
/// not from the saved ring: every key ends with its two copies and no stray ones, and
/// nothing is lost when one more slave then dies.
#[test]
fn a_coordinator_killed_in_the_middle_of_a_move_finishes_it_after_its_restart() {
    let mut cluster = Cluster::start_flags(3, &["--failure-timeout-ms", "3000"], &[]);
    cluster.wait_serving(3);
    let expected = cluster.load("moving", 1500);
    cluster.assert_two_copies(&expected);
    // The move blocks on slave 1 (its fence), so it cannot finish before the kill.
    cluster.slaves[1].proc.signal("STOP");
    cluster.slaves[0].proc.signal("INT");
    wait_until(DEADLINE, "the coordinator to start the leave", || {
        cluster.coordinator.stderr_text().contains("is leaving")
    });
    cluster.coordinator.kill();
    cluster.slaves[0].proc.kill();
    cluster.slaves[1].proc.signal("CONT");
    cluster.restart_coordinator();
    cluster.wait_serving(2);
    cluster.wait_settled();
    cluster.assert_reads(&expected);
    cluster.assert_two_copies(&expected);
    // Both copies are real: one more death leaves every key on the last slave.
    let second = cluster.slaves[1].addr.clone();
    cluster.slaves[1].proc.kill();
    cluster.wait_state(&second, "dead");
    cluster.wait_settled();
    cluster.assert_reads(&expected);
}

/// Copies a slave must not have (as a move cut short leaves them: here written straight
/// into the tables of the slaves that do not hold the key) are cleared once a restarted
/// coordinator has put every table in order; the copies that belong stay.
#[test]
fn a_restarted_coordinator_clears_copies_left_where_they_do_not_belong() {
    let mut cluster = Cluster::start(3);
    cluster.wait_serving(3);
    let mut expected = cluster.load("stray", 300);
    let (primary, replica) = cluster.placement(b"stray-extra");
    let replica = replica.expect("three slaves: a replica");
    let outsider = cluster
        .slaves
        .iter()
        .map(|slave| slave.addr.clone())
        .find(|addr| *addr != primary && *addr != replica)
        .unwrap();
    // A stale copy in both tables of the slave that is neither the key's primary nor
    // its replica.
    let stray = |addr: &str, table: TableSel| {
        let mut frame = Frame::request(
            Opcode::SlavePut,
            0,
            b"stray-extra".to_vec(),
            b"stale".to_vec(),
        );
        frame.table = table;
        frame.arg = 1;
        let reply = Client::connect(addr).unwrap().call(frame).unwrap();
        assert_eq!(reply.status, Status::Ok);
    };
    stray(&outsider, TableSel::Own);
    stray(&outsider, TableSel::Previous);
    expected.insert(b"stray-extra".to_vec(), None);
    assert!(
        cluster.two_copies(&expected).is_err(),
        "the strays are seen"
    );
    cluster.restart_coordinator();
    cluster.wait_serving(3);
    cluster.assert_two_copies(&expected);
    cluster.assert_reads(&expected);
}

/// A slave that leaves while a restarted coordinator still waits for the slaves of its
/// ring is told to ask again, and does: once the others are back, its ranges are handed
/// on and every key keeps two copies.
#[test]
fn a_leave_during_the_warm_up_waits_for_it_and_hands_the_ranges_on() {
    let mut cluster = Cluster::start_flags(3, &["--failure-timeout-ms", "10000"], &[]);
    cluster.wait_serving(3);
    let expected = cluster.load("warm", 600);
    // Slave 2 cannot register again yet, so the warm-up lasts.
    cluster.slaves[2].proc.signal("STOP");
    cluster.restart_coordinator();
    cluster.slaves[0].proc.signal("INT");
    wait_until(DEADLINE, "the leave to be answered 'ask again'", || {
        cluster.slaves[0]
            .proc
            .stderr_text()
            .contains("leaving: asking")
            && cluster
                .coordinator
                .stderr_text()
                .contains("registered again")
    });
    cluster.slaves[2].proc.signal("CONT");
    assert_eq!(cluster.slaves[0].proc.wait_exit(DEADLINE), Some(0));
    assert!(
        cluster.slaves[0]
            .proc
            .stderr_text()
            .contains("ranges handed on"),
        "{}",
        cluster.slaves[0].proc.stderr_text()
    );
    cluster.wait_serving(2);
    cluster.wait_settled();
    cluster.assert_reads(&expected);
    cluster.assert_two_copies(&expected);
}

#[test]
fn a_bad_or_busy_data_dir_stops_the_start_with_one_line() {
    let dir = TempDir::new("baddir");
    // A data dir under a regular file cannot be created.
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let err = common::exits_with_2(
        std::process::Command::new(bin("slave"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(file.join("sub")),
    );
    assert!(err.contains("data dir"), "{err}");
    let err = common::exits_with_2(
        std::process::Command::new(bin("coordinator"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--heartbeat",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(file.join("sub")),
    );
    assert!(err.contains("data dir"), "{err}");

    // A second process on a data dir in use.
    let cluster = Cluster::start(1);
    let addr = cluster.addr.clone();
    let err = common::exits_with_2(
        std::process::Command::new(bin("slave"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--coordinator",
                &addr,
                "--data-dir",
            ])
            .arg(cluster.slave_dir(0)),
    );
    assert!(err.contains("in use by another process"), "{err}");
}

fn dir_files(dir: &Path, prefix: &str) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let len = e.metadata().ok()?.len();
            name.starts_with(prefix).then_some((name, len))
        })
        .collect();
    files.sort();
    files
}

/// Threshold the compaction test runs with (`--compact-min-bytes`).
const COMPACT_MIN: u64 = 200_000;

#[test]
fn compaction_under_writes_shrinks_the_log_and_a_restart_recovers_everything() {
    let min = COMPACT_MIN.to_string();
    let mut cluster = Cluster::start_flags(1, &[], &["--compact-min-bytes", &min]);
    cluster.wait_serving(1);
    let mut client = cluster.client();
    let mut expected = Expected::new();
    // Overwrite a small key space many times: the log grows (about 1 MB), the live data
    // does not (about 30 KB).
    for round in 0..40 {
        for i in 0..200 {
            let key = format!("k{i}").into_bytes();
            let value = format!("round {round} {}", "x".repeat(100)).into_bytes();
            client.put(&key, &value).unwrap();
            expected.insert(key, Some(value));
        }
    }
    assert!(client.delete(b"k1").unwrap());
    expected.insert(b"k1".to_vec(), None);
    let data = cluster.slave_dir(0);
    // The log written so far is far past the threshold; how much of it is still in the
    // log depends on when the `wal-sync` thread (once a second) compacted, which on a
    // busy machine may be mid-way through the writes. Once the writes stop, the segment
    // being written is compacted again as soon as it passes the threshold (or twice the
    // snapshot, much smaller): wait for that state, however long the machine takes.
    let written: u64 = 40 * 200 * 100;
    assert!(written > 3 * COMPACT_MIN);
    wait_ok(
        std::time::Duration::from_secs(60),
        "the log compacted to one segment under the threshold",
        || {
            let snapshots = dir_files(&data, "snapshot.");
            let segments = dir_files(&data, "wal.");
            let log_bytes: u64 = segments.iter().map(|f| f.1).sum();
            let done = snapshots.len() == 1
                && !snapshots[0].0.ends_with(".tmp")
                && segments.len() == 1
                && log_bytes <= COMPACT_MIN;
            if done {
                Ok(())
            } else {
                Err(format!("snapshots {snapshots:?}, segments {segments:?}"))
            }
        },
    );
    // Writes keep working, and a SIGKILL then restart recovers snapshot + log.
    client.put(b"after", b"compaction").unwrap();
    expected.insert(b"after".to_vec(), Some(b"compaction".to_vec()));
    cluster.restart_slave(0);
    cluster.wait_serving(1);
    let mut client = cluster.client();
    for (key, value) in &expected {
        assert_eq!(
            client.get(key).unwrap().map(|v| v.value),
            *value,
            "{}",
            String::from_utf8_lossy(key)
        );
    }
}

#[test]
fn a_write_the_log_cannot_take_is_refused_not_acknowledged() {
    let mut cluster = Cluster::start(0);
    // The shell caps the size of files the slave may write (RLIMIT_FSIZE, 64 KiB) and
    // ignores SIGXFSZ, so a write past it fails with EFBIG, as a full disk would.
    cluster.add_slave_via(&[], |binary, args| {
        Proc::start(
            "bash",
            &[
                "-c".to_string(),
                format!(
                    "trap '' XFSZ; ulimit -f 64; exec {binary} {}",
                    args.join(" ")
                ),
            ],
        )
    });
    cluster.wait_serving(1);
    let mut client = cluster.client();
    let mut stored = Vec::new();
    let value = vec![b'v'; 1000];
    let error = loop {
        let key = format!("f{}", stored.len()).into_bytes();
        match client.put(&key, &value) {
            Ok(_) => stored.push(key),
            Err(e) => break e.to_string(),
        }
        assert!(stored.len() < 1000, "the file size cap never hit");
    };
    assert!(error.contains("storage"), "{error}");
    assert!(
        stored.len() > 10,
        "only {} writes before the cap",
        stored.len()
    );
    // What was acknowledged is there; the refused key is not.
    for key in &stored {
        assert_eq!(
            client.get(key).unwrap().map(|v| v.value),
            Some(value.clone())
        );
    }
    let refused = format!("f{}", stored.len()).into_bytes();
    assert_eq!(client.get(&refused).unwrap(), None);
}
