//! Failure detection, re-replication, joins and graceful leave, with real processes,
//! SIGKILL, SIGSTOP and short heartbeat timings.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Cluster, DEADLINE, FAILURE_MS, HEARTBEAT_MS, wait_until};
use piazza::Client;

type Expected = HashMap<Vec<u8>, Option<Vec<u8>>>;

fn load(cluster: &Cluster, prefix: &str, n: usize) -> Expected {
    let mut client = cluster.client();
    let mut expected = HashMap::new();
    for i in 0..n {
        let key = format!("{prefix}{i}").into_bytes();
        let value = format!("value {i} of {prefix}").into_bytes();
        client.put(&key, &value).unwrap();
        expected.insert(key, Some(value));
    }
    expected
}

fn assert_readable(client: &mut Client, expected: &Expected) {
    for (key, value) in expected {
        let got = client
            .get(key)
            .unwrap_or_else(|e| panic!("get {key:?}: {e}"));
        assert_eq!(
            got.map(|v| v.value),
            *value,
            "{}",
            String::from_utf8_lossy(key)
        );
    }
}

/// Reads every key in a loop on another thread until stopped; any miss or error fails.
struct Reader {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<u64, String>>>,
}

impl Reader {
    fn start(addr: &str, expected: &Expected) -> Reader {
        let stop = Arc::new(AtomicBool::new(false));
        let (addr, expected, flag) = (addr.to_string(), expected.clone(), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut client = Client::connect(&addr).map_err(|e| e.to_string())?;
            let mut reads = 0;
            while !flag.load(Ordering::SeqCst) {
                for (key, value) in &expected {
                    let got = client.get(key).map_err(|e| format!("get {key:?}: {e}"))?;
                    if got.map(|v| v.value) != *value {
                        return Err(format!("wrong value for {}", String::from_utf8_lossy(key)));
                    }
                    reads += 1;
                }
            }
            Ok(reads)
        });
        Reader {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        let thread = self.thread.take().unwrap();
        thread.join().unwrap().unwrap()
    }
}

#[test]
fn killed_slave_is_declared_dead_and_every_key_gets_two_copies_again() {
    let mut cluster = Cluster::start(4);
    let expected = load(&cluster, "k", 5000);
    cluster.assert_two_copies(&expected);

    let reader = Reader::start(&cluster.addr, &expected);
    let victim = cluster.slaves[2].addr.clone();
    let killed = Instant::now();
    cluster.slaves[2].proc.kill();
    cluster.wait_state(&victim, "dead");
    let detected = killed.elapsed();
    // failure timeout + one interval, plus what polling the status adds.
    assert!(
        detected <= Duration::from_millis(FAILURE_MS + HEARTBEAT_MS + 1000),
        "declared dead after {detected:?}"
    );
    cluster.wait_settled();
    assert!(reader.finish() > 0);
    cluster.assert_two_copies(&expected);

    // A second, later failure loses nothing either.
    let reader = Reader::start(&cluster.addr, &expected);
    cluster.slaves[0].proc.kill();
    let second = cluster.slaves[0].addr.clone();
    cluster.wait_state(&second, "dead");
    cluster.wait_settled();
    assert!(reader.finish() > 0);
    assert_readable(&mut cluster.client(), &expected);
    cluster.assert_two_copies(&expected);
}

/// Per key: the last acknowledged value, and the values sent since without an answer.
type WriterState = HashMap<Vec<u8>, (Option<Vec<u8>>, Vec<Vec<u8>>)>;

/// Writers that each own a slice of keys and remember, per key, the last acknowledged
/// value and the values sent since (which may or may not have landed).
struct Writers {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<(WriterState, u64, u64)>>,
}

impl Writers {
    fn start(addr: &str, n: usize, keys_each: usize) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|w| {
                let (addr, stop) = (addr.to_string(), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let mut client = Client::connect(&addr).unwrap();
                    let mut state: WriterState = HashMap::new();
                    let (mut acked, mut failed) = (0, 0);
                    let mut round = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        round += 1;
                        let key = format!("w{w}-{}", round as usize % keys_each).into_bytes();
                        let value = format!("w{w} round {round}").into_bytes();
                        let entry = state.entry(key.clone()).or_default();
                        match client.put(&key, &value) {
                            Ok(_) => {
                                *entry = (Some(value), Vec::new());
                                acked += 1;
                            }
                            Err(_) => {
                                entry.1.push(value);
                                failed += 1;
                                if let Ok(fresh) = Client::connect(&addr) {
                                    client = fresh;
                                }
                            }
                        }
                    }
                    (state, acked, failed)
                })
            })
            .collect();
        Writers { stop, threads }
    }

    /// Stops the writers and checks that every key reads as its last acknowledged value
    /// or one sent after it. Returns (acknowledged, failed) writes and the final values.
    fn finish_and_check(self, cluster: &Cluster) -> (u64, u64, Expected) {
        self.stop.store(true, Ordering::SeqCst);
        let mut client = cluster.client();
        let (mut acked, mut failed) = (0, 0);
        let mut finals = HashMap::new();
        for thread in self.threads {
            let (state, a, f) = thread.join().unwrap();
            acked += a;
            failed += f;
            for (key, (last, since)) in state {
                let got = client.get(&key).unwrap().map(|v| v.value);
                let ok = got == last || got.as_ref().is_some_and(|g| since.contains(g));
                assert!(
                    ok,
                    "{}: read {:?}, last acknowledged {:?}",
                    String::from_utf8_lossy(&key),
                    got.map(|g| String::from_utf8_lossy(&g).into_owned()),
                    last.map(|g| String::from_utf8_lossy(&g).into_owned())
                );
                finals.insert(key, got);
            }
        }
        (acked, failed, finals)
    }
}

#[test]
fn acknowledged_writes_survive_a_kill_under_load() {
    let mut cluster = Cluster::start(4);
    let mut expected = load(&cluster, "base", 1000);
    let writers = Writers::start(&cluster.addr, 4, 200);
    wait_until(DEADLINE, "writers get going", || {
        cluster
            .status()
            .slaves
            .iter()
            .map(|s| s.own.unwrap_or(0))
            .sum::<u64>()
            > 1200
    });
    cluster.slaves[1].proc.kill();
    let victim = cluster.slaves[1].addr.clone();
    cluster.wait_state(&victim, "dead");
    cluster.wait_settled();
    let (acked, _failed, finals) = writers.finish_and_check(&cluster);
    assert!(acked > 100, "only {acked} writes acknowledged");
    cluster.wait_settled();
    assert_readable(&mut cluster.client(), &expected);
    expected.extend(finals);
    cluster.assert_two_copies(&expected);
}

#[test]
fn slaves_join_under_writes_and_take_their_ranges() {
    let mut cluster = Cluster::start(2);
    let mut expected = load(&cluster, "j", 2000);
    let writers = Writers::start(&cluster.addr, 2, 100);
    for _ in 0..2 {
        let index = cluster.add_slave();
        let addr = cluster.slaves[index].addr.clone();
        cluster.wait_settled();
        let row = cluster
            .status()
            .slaves
            .into_iter()
            .find(|s| s.addr == addr)
            .unwrap();
        assert!(
            row.own.unwrap() > 100,
            "new slave {addr} holds its range: {row:?}"
        );
        assert!(
            row.previous.unwrap() > 100,
            "new slave {addr} holds its predecessor's: {row:?}"
        );
    }
    let (acked, failed, finals) = writers.finish_and_check(&cluster);
    assert!(acked > 100);
    assert_eq!(failed, 0, "joins make no write fail");
    assert_readable(&mut cluster.client(), &expected);
    expected.extend(finals);
    // Exactly two copies: the old slaves dropped what moved.
    cluster.assert_two_copies(&expected);
}

#[test]
fn a_paused_slave_rejoins_without_serving_stale_or_deleted_data() {
    let cluster = Cluster::start(3);
    let mut expected = load(&cluster, "p", 600);
    let paused = cluster.slaves[0].addr.clone();
    cluster.slaves[0].proc.signal("STOP");
    cluster.wait_state(&paused, "dead");
    cluster.wait_settled();
    // Change the data while it sleeps: delete some keys, overwrite others.
    let mut client = cluster.client();
    for i in 0..600 {
        let key = format!("p{i}").into_bytes();
        if i % 3 == 0 {
            assert!(client.delete(&key).unwrap());
            expected.insert(key, None);
        } else if i % 3 == 1 {
            let value = format!("new {i}").into_bytes();
            client.put(&key, &value).unwrap();
            expected.insert(key, Some(value));
        }
    }
    cluster.slaves[0].proc.signal("CONT");
    cluster.wait_state(&paused, "alive");
    cluster.wait_settled();
    assert_readable(&mut cluster.client(), &expected);
    cluster.assert_two_copies(&expected);
}

#[test]
fn graceful_leave_under_writes_loses_nothing() {
    let mut cluster = Cluster::start(4);
    let mut expected = load(&cluster, "g", 2000);
    let writers = Writers::start(&cluster.addr, 2, 100);
    let leaving = cluster.slaves[3].addr.clone();
    cluster.slaves[3].proc.signal("INT");
    assert_eq!(
        cluster.slaves[3].proc.wait_exit(DEADLINE),
        Some(0),
        "{}",
        cluster.slaves[3].proc.stderr_text()
    );
    let row = cluster
        .status()
        .slaves
        .into_iter()
        .find(|s| s.addr == leaving)
        .unwrap();
    assert_eq!(row.state, "dead");
    cluster.wait_settled();
    let (acked, failed, finals) = writers.finish_and_check(&cluster);
    assert!(acked > 50);
    assert_eq!(failed, 0, "a graceful leave makes no write fail");
    assert_readable(&mut cluster.client(), &expected);
    expected.extend(finals);
    cluster.assert_two_copies(&expected);
}

#[test]
fn clusters_of_one_two_and_three_slaves_go_through_a_death() {
    for n in 1..=3 {
        let mut cluster = Cluster::start(n);
        let expected = load(&cluster, "s", 300);
        cluster.slaves[0].proc.kill();
        let victim = cluster.slaves[0].addr.clone();
        cluster.wait_state(&victim, "dead");
        cluster.wait_settled();
        let status = cluster.status();
        assert_eq!(status.copies as usize, (n - 1).min(2), "{}", status.raw);
        let mut client = cluster.client();
        if n == 1 {
            // No slave left: a clear error, not a wrong answer.
            let err = client.get(b"s1").unwrap_err().to_string();
            assert!(err.contains("no slaves"), "{err}");
        } else {
            assert_readable(&mut client, &expected);
        }
        if n == 3 {
            cluster.assert_two_copies(&expected);
        }
    }
}

#[test]
fn status_shows_each_state() {
    let mut cluster = Cluster::start(2);
    let status = cluster.status();
    assert!(status.slaves.iter().all(|s| s.state == "alive"));
    cluster.slaves[1].proc.kill();
    let victim = cluster.slaves[1].addr.clone();
    cluster.wait_state(&victim, "dead");
    let text = std::process::Command::new(common::bin("client"))
        .args(["--coordinator", &cluster.addr, "status"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&text.stdout);
    assert!(out.contains("dead"), "{out}");
    assert!(out.contains("ONE copy"), "{out}");
}
