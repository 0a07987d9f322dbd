//! Durability: the slave log, the coordinator's saved ring, and restarts of everything,
//! with real processes and SIGKILL.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::{Cluster, DEADLINE, Proc, TempDir, bin, wait_until};
use piazza::Client;

fn coordinator(dir: &Path, listen: &str) -> (Proc, String) {
    coordinator_with(dir, listen, "127.0.0.1:0").0
}

/// A coordinator; returns it, its address, and its heartbeat address.
fn coordinator_with(dir: &Path, listen: &str, heartbeat: &str) -> ((Proc, String), String) {
    let mut proc = Proc::start(
        bin("coordinator"),
        &[
            "--listen",
            listen,
            "--heartbeat",
            heartbeat,
            "--data-dir",
            &dir.join("coordinator").display().to_string(),
            "--heartbeat-interval-ms",
            "100",
            "--failure-timeout-ms",
            "1500",
        ]
        .map(String::from),
    );
    let addr = proc.wait_line("listening on ");
    let heartbeat = proc.wait_line("heartbeat on ");
    ((proc, addr), heartbeat)
}

fn slave(dir: &Path, index: usize, listen: &str, coordinator: &str, fsync: &str) -> (Proc, String) {
    let mut proc = Proc::start(
        bin("slave"),
        &[
            "--listen",
            listen,
            "--coordinator",
            coordinator,
            "--data-dir",
            &dir.join(format!("slave-{index}")).display().to_string(),
            "--heartbeat-interval-ms",
            "100",
            "--fsync",
            fsync,
        ]
        .map(String::from),
    );
    let addr = proc.wait_line("listening on ");
    (proc, addr)
}

fn alive_count(addr: &str) -> usize {
    Client::connect(addr)
        .and_then(|mut c| c.status())
        .map(|s| s.slaves.iter().filter(|s| s.state == "alive").count())
        .unwrap_or(0)
}

fn wait_serving(addr: &str, n: usize) {
    wait_until(DEADLINE, &format!("{n} slaves alive and serving"), || {
        alive_count(addr) == n
            && Client::connect(addr)
                .and_then(|mut c| c.get(b"probe").map(|_| ()))
                .is_ok()
    });
}

#[test]
fn with_fsync_always_killing_every_process_loses_no_acknowledged_write() {
    let dir = TempDir::new("restart");
    let (mut coord, addr) = coordinator(dir.path(), "127.0.0.1:0");
    let mut slaves: Vec<(Proc, String)> = (0..3)
        .map(|i| slave(dir.path(), i, "127.0.0.1:0", &addr, "always"))
        .collect();
    wait_serving(&addr, 3);

    let mut client = Client::connect(&addr).unwrap();
    let mut expected: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
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
    coord.kill();
    for (proc, _) in &mut slaves {
        proc.kill();
    }

    // Everything comes back on the same addresses and data dirs.
    let (_coord, addr2) = coordinator(dir.path(), &addr);
    assert_eq!(addr2, addr);
    let slave_addrs: Vec<String> = slaves.iter().map(|(_, a)| a.clone()).collect();
    let _slaves: Vec<(Proc, String)> = slave_addrs
        .iter()
        .enumerate()
        .map(|(i, a)| slave(dir.path(), i, a, &addr, "always"))
        .collect();
    wait_serving(&addr, 3);

    let cluster_view = Cluster::attach(&addr);
    let mut client = Client::connect(&addr).unwrap();
    for (key, value) in &expected {
        let got = client.get(key).unwrap().map(|v| v.value);
        assert_eq!(&got, value, "{}", String::from_utf8_lossy(key));
    }
    cluster_view.assert_two_copies(&expected);
    // No version is issued twice.
    assert!(client.put(b"after", b"y").unwrap() > last_version);
}

#[test]
fn a_restarted_coordinator_keeps_the_ring_and_never_reuses_a_version() {
    let dir = TempDir::new("coordrestart");
    let ((mut coord, addr), heartbeat) = coordinator_with(dir.path(), "127.0.0.1:0", "127.0.0.1:0");
    let _slaves: Vec<(Proc, String)> = (0..3)
        .map(|i| slave(dir.path(), i, "127.0.0.1:0", &addr, "everysec"))
        .collect();
    wait_serving(&addr, 3);
    let mut client = Client::connect(&addr).unwrap();
    let mut expected = HashMap::new();
    let mut before = 0;
    for i in 0..500 {
        let key = format!("c{i}").into_bytes();
        before = client.put(&key, b"before").unwrap();
        expected.insert(key, Some(b"before".to_vec()));
    }
    coord.kill();
    let (_coord, _) = coordinator_with(dir.path(), &addr, &heartbeat);
    // The slaves find out from the answers to their heartbeats and register again.
    wait_serving(&addr, 3);
    // The same client reconnects by itself.
    let after = client.put(b"c0", b"after").unwrap();
    assert!(after > before, "version {after} reused (before: {before})");
    expected.insert(b"c0".to_vec(), Some(b"after".to_vec()));
    for (key, value) in &expected {
        assert_eq!(client.get(key).unwrap().map(|v| v.value), *value);
    }
    Cluster::attach(&addr).assert_two_copies(&expected);
}

#[test]
fn a_bad_or_busy_data_dir_stops_the_start_with_one_line() {
    let dir = TempDir::new("baddir");
    // A data dir under a regular file cannot be created.
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let output = std::process::Command::new(bin("slave"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(file.join("sub"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains("data dir"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let output = std::process::Command::new(bin("coordinator"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--heartbeat",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(file.join("sub"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains("data dir"), "{err}");

    // A second process on a data dir in use.
    let (_coord, addr) = coordinator(dir.path(), "127.0.0.1:0");
    let (_first, _) = slave(dir.path(), 0, "127.0.0.1:0", &addr, "everysec");
    let output = std::process::Command::new(bin("slave"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--coordinator",
            &addr,
            "--data-dir",
        ])
        .arg(dir.path().join("slave-0"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains("in use by another process"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
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

#[test]
fn compaction_under_writes_shrinks_the_log_and_a_restart_recovers_everything() {
    let dir = TempDir::new("compact");
    let ((_coord, addr), _) = coordinator_with(dir.path(), "127.0.0.1:0", "127.0.0.1:0");
    let start_slave = |listen: &str| {
        let mut proc = Proc::start(
            bin("slave"),
            &[
                "--listen",
                listen,
                "--coordinator",
                &addr,
                "--data-dir",
                &dir.path().join("only").display().to_string(),
                "--heartbeat-interval-ms",
                "100",
                "--compact-min-bytes",
                "200000",
            ]
            .map(String::from),
        );
        let slave_addr = proc.wait_line("listening on ");
        (proc, slave_addr)
    };
    let (mut slave, slave_addr) = start_slave("127.0.0.1:0");
    wait_serving(&addr, 1);
    let mut client = Client::connect(&addr).unwrap();
    let mut expected = HashMap::new();
    // Overwrite a small key space many times: the log grows, the live data does not.
    for round in 0..40 {
        for i in 0..200 {
            let key = format!("k{i}").into_bytes();
            let value = format!("round {round} {}", "x".repeat(100)).into_bytes();
            client.put(&key, &value).unwrap();
            expected.insert(key, value);
        }
    }
    assert!(client.delete(b"k1").unwrap());
    expected.remove(b"k1".as_slice());
    let data = dir.path().join("only");
    wait_until(DEADLINE, "a snapshot is written", || {
        !dir_files(&data, "snapshot.").is_empty()
    });
    wait_until(DEADLINE, "old segments removed", || {
        dir_files(&data, "wal.").len() == 1
    });
    let log_bytes: u64 = dir_files(&data, "wal.").iter().map(|f| f.1).sum();
    assert!(
        log_bytes < 400_000,
        "log still {log_bytes} bytes after compaction"
    );
    // Writes keep working, and a SIGKILL then restart recovers snapshot + log.
    client.put(b"after", b"compaction").unwrap();
    expected.insert(b"after".to_vec(), b"compaction".to_vec());
    slave.kill();
    let (_slave, _) = start_slave(&slave_addr);
    wait_serving(&addr, 1);
    let mut client = Client::connect(&addr).unwrap();
    for (key, value) in &expected {
        assert_eq!(
            client.get(key).unwrap().map(|v| v.value).as_ref(),
            Some(value),
            "{}",
            String::from_utf8_lossy(key)
        );
    }
    assert_eq!(
        client.get(b"k1").unwrap(),
        None,
        "a deleted key stays deleted"
    );
}

#[test]
fn a_write_the_log_cannot_take_is_refused_not_acknowledged() {
    let dir = TempDir::new("full");
    let ((_coord, addr), _) = coordinator_with(dir.path(), "127.0.0.1:0", "127.0.0.1:0");
    // The shell caps the size of files the slave may write (RLIMIT_FSIZE, 64 KiB) and
    // ignores SIGXFSZ, so a write past it fails with EFBIG, as a full disk would.
    let data = dir.path().join("capped");
    let mut slave = Proc::start(
        "bash",
        &[
            "-c".to_string(),
            format!(
                "trap '' XFSZ; ulimit -f 64; exec {} --listen 127.0.0.1:0 --coordinator {addr} --data-dir {} --heartbeat-interval-ms 100",
                bin("slave"),
                data.display()
            ),
        ],
    );
    slave.wait_line("listening on ");
    wait_serving(&addr, 1);
    let mut client = Client::connect(&addr).unwrap();
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
