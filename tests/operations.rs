//! Read-modify-write operations, expiry and flush_all through Piazza's binary protocol
//! (the Rust `Client`), on real clusters: two copies, concurrency, a primary killed in
//! the middle, restarts and joins.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::{Cluster, DEADLINE, wait_until};
use piazza::client::Written;
use piazza::direct::DirectClient;
use piazza::update::Op;

fn value_of(client: &mut piazza::Client, key: &[u8]) -> Option<Vec<u8>> {
    client.get(key).unwrap().map(|v| v.value)
}

#[test]
fn conditional_writes_follow_memcached_and_reach_both_copies() {
    let cluster = Cluster::start(3);
    let mut client = cluster.client();
    let mut expected = HashMap::new();

    assert!(matches!(
        client.store(Op::Add, b"a", b"1", 0, 0).unwrap(),
        Written::Stored(_)
    ));
    assert_eq!(
        client.store(Op::Add, b"a", b"2", 0, 0).unwrap(),
        Written::NotStored
    );
    assert_eq!(
        client.store(Op::Replace, b"missing", b"x", 0, 0).unwrap(),
        Written::NotStored
    );
    assert!(matches!(
        client.store(Op::Replace, b"a", b"10", 0, 0).unwrap(),
        Written::Stored(_)
    ));
    client.store(Op::Append, b"a", b"0", 0, 0).unwrap();
    client.store(Op::Prepend, b"a", b"0", 0, 0).unwrap();
    assert_eq!(value_of(&mut client, b"a"), Some(b"0100".to_vec()));
    assert_eq!(
        client.store(Op::Append, b"missing", b"x", 0, 0).unwrap(),
        Written::NotStored
    );

    // cas: the unique is the version a read returns.
    let unique = client.get(b"a").unwrap().unwrap().version;
    assert_eq!(
        client
            .store(Op::Set, b"a", b"stale", 0, unique - 1)
            .unwrap(),
        Written::Exists
    );
    let stored = client.store(Op::Set, b"a", b"7", 0, unique).unwrap();
    assert!(matches!(stored, Written::Stored(v) if v > unique));
    assert_eq!(
        client.store(Op::Set, b"a", b"again", 0, unique).unwrap(),
        Written::Exists
    );
    assert_eq!(
        client.store(Op::Set, b"nothing", b"x", 0, 1).unwrap(),
        Written::NotFound
    );

    // incr/decr: 64-bit, wrapping up, stopping at zero, refusing non-numbers.
    assert_eq!(client.incr(b"a", 5, false).unwrap(), Some(12));
    assert_eq!(client.incr(b"a", 100, true).unwrap(), Some(0));
    // As memcached does, a shorter number is padded with spaces to the old length.
    assert_eq!(value_of(&mut client, b"a"), Some(b"0 ".to_vec()));
    assert_eq!(client.incr(b"missing", 1, false).unwrap(), None);
    client.put(b"max", u64::MAX.to_string().as_bytes()).unwrap();
    assert_eq!(client.incr(b"max", 2, false).unwrap(), Some(1));
    client.put(b"text", b"abc").unwrap();
    let err = client.incr(b"text", 1, false).unwrap_err();
    assert!(err.to_string().contains("non-numeric"), "{err}");

    // touch keeps the value.
    assert!(client.touch(b"a", 1000).unwrap());
    assert!(!client.touch(b"missing", 1000).unwrap());
    assert_eq!(value_of(&mut client, b"a"), Some(b"0 ".to_vec()));

    expected.insert(b"a".to_vec(), Some(b"0 ".to_vec()));
    expected.insert(b"max".to_vec(), Some(format!("{:<20}", 1).into_bytes()));
    expected.insert(b"text".to_vec(), Some(b"abc".to_vec()));
    cluster.assert_two_copies(&expected);
}

#[test]
fn concurrent_incr_and_cas_are_exact_on_both_paths() {
    let cluster = Cluster::start(3);
    let mut client = cluster.client();
    client.put(b"counter", b"0").unwrap();
    let (threads, each) = (8, 1000);
    let barrier = Arc::new(Barrier::new(threads));
    let workers: Vec<_> = (0..threads)
        .map(|i| {
            let (addr, barrier) = (cluster.addr.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                // Half the threads are direct-routing clients: their read-modify-writes
                // go to the same sequencer as everyone else's.
                let mut direct = DirectClient::connect(&addr).unwrap();
                let mut plain = piazza::Client::connect(&addr).unwrap();
                barrier.wait();
                for _ in 0..each {
                    let client = if i % 2 == 0 {
                        direct.coordinator()
                    } else {
                        &mut plain
                    };
                    client.incr(b"counter", 1, false).unwrap().unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let total = (threads * each).to_string().into_bytes();
    assert_eq!(value_of(&mut client, b"counter"), Some(total.clone()));

    // Two cas with the same unique: exactly one wins.
    let unique = client.get(b"counter").unwrap().unwrap().version;
    let barrier = Arc::new(Barrier::new(2));
    let racers: Vec<_> = (0..2)
        .map(|i| {
            let (addr, barrier) = (cluster.addr.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let mut client = piazza::Client::connect(&addr).unwrap();
                barrier.wait();
                client
                    .store(
                        Op::Set,
                        b"counter",
                        format!("racer {i}").as_bytes(),
                        0,
                        unique,
                    )
                    .unwrap()
            })
        })
        .collect();
    let results: Vec<Written> = racers.into_iter().map(|r| r.join().unwrap()).collect();
    let wins = results
        .iter()
        .filter(|r| matches!(r, Written::Stored(_)))
        .count();
    assert_eq!(wins, 1, "{results:?}");
    assert!(results.contains(&Written::Exists), "{results:?}");
    let mut expected = HashMap::new();
    expected.insert(
        b"counter".to_vec(),
        Some(value_of(&mut client, b"counter").unwrap()),
    );
    cluster.assert_two_copies(&expected);
}

#[test]
fn incr_counts_exactly_while_the_primary_is_killed() {
    let mut cluster = Cluster::start(3);
    let mut client = cluster.client();
    client.put(b"hits", b"0").unwrap();
    let (primary, _) = cluster.placement(b"hits");
    let (threads, each) = (8, 1000);
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let addr = cluster.addr.clone();
            std::thread::spawn(move || {
                let mut client = piazza::Client::connect(&addr).unwrap();
                client.set_timeout(Duration::from_secs(30)).unwrap();
                for _ in 0..each {
                    client.incr(b"hits", 1, false).unwrap().unwrap();
                }
            })
        })
        .collect();
    // Kill the key's primary once the counter is well under way.
    wait_until(DEADLINE, "incr under way", || {
        value_of(&mut client, b"hits")
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n >= 1000)
    });
    cluster.kill_slave_at(&primary);
    for worker in workers {
        worker.join().unwrap();
    }
    let total = (threads * each).to_string().into_bytes();
    assert_eq!(value_of(&mut client, b"hits"), Some(total.clone()));
    cluster.wait_settled();
    let mut expected = HashMap::new();
    expected.insert(b"hits".to_vec(), Some(total));
    cluster.assert_two_copies(&expected);
}

#[test]
fn expiry_holds_on_both_copies_through_failover() {
    let mut cluster = Cluster::start(3);
    let mut client = cluster.client();
    client.put_with_ttl(b"short", b"v", 3, 2).unwrap();
    client.put_with_ttl(b"long", b"v", 3, 1000).unwrap();
    client.put_with_ttl(b"past", b"v", 3, -1).unwrap();
    assert_eq!(value_of(&mut client, b"past"), None);
    assert_eq!(client.get(b"short").unwrap().unwrap().flags, 3);
    // Kill the primary of the short key at once: its replica must expire it too.
    let (primary, _) = cluster.placement(b"short");
    cluster.kill_slave_at(&primary);
    cluster.wait_settled();
    wait_until(DEADLINE, "the short key to expire", || {
        value_of(&mut client, b"short").is_none()
    });
    assert_eq!(value_of(&mut client, b"long"), Some(b"v".to_vec()));
    // A touch gives an expired-soon key a new life; a negative one ends it.
    assert!(client.touch(b"long", -1).unwrap());
    assert_eq!(value_of(&mut client, b"long"), None);
    assert!(!client.touch(b"short", 100).unwrap());
}

#[test]
fn flush_all_reaches_every_slave_and_later_joiners() {
    let mut cluster = Cluster::start(2);
    let mut client = cluster.client();
    for i in 0..50 {
        client.put(format!("old{i}").as_bytes(), b"before").unwrap();
    }
    client.flush_all(0).unwrap();
    for i in 0..50 {
        assert_eq!(value_of(&mut client, format!("old{i}").as_bytes()), None);
    }
    client.put(b"new", b"after").unwrap();
    assert_eq!(value_of(&mut client, b"new"), Some(b"after".to_vec()));
    // A slave that joins later gets the flushed keys' entries, and the marker with them.
    cluster.add_slave();
    cluster.wait_settled();
    for i in 0..50 {
        assert_eq!(value_of(&mut client, format!("old{i}").as_bytes()), None);
    }
    let mut expected: HashMap<Vec<u8>, Option<Vec<u8>>> = (0..50)
        .map(|i| (format!("old{i}").into_bytes(), None))
        .collect();
    expected.insert(b"new".to_vec(), Some(b"after".to_vec()));
    cluster.assert_two_copies(&expected);

    // A delayed flush: nothing goes before its time, everything stored before it after.
    client.put(b"soon", b"x").unwrap();
    client.flush_all(2).unwrap();
    assert_eq!(value_of(&mut client, b"soon"), Some(b"x".to_vec()));
    wait_until(DEADLINE, "the delayed flush", || {
        value_of(&mut client, b"soon").is_none()
    });
    client.put(b"later", b"y").unwrap();
    assert_eq!(value_of(&mut client, b"later"), Some(b"y".to_vec()));
}

#[test]
fn multi_gets_keep_request_order_and_survive_a_dead_primary() {
    let mut cluster = Cluster::start(3);
    let mut client = cluster.client();
    for i in 0..10_000 {
        if i % 3 != 0 {
            client
                .put(format!("m{i}").as_bytes(), format!("v{i}").as_bytes())
                .unwrap();
        }
    }
    let keys =
        |n: usize| -> Vec<Vec<u8>> { (0..n).map(|i| format!("m{i}").into_bytes()).collect() };
    let check = |client: &mut piazza::Client, n: usize| {
        let results = client.get_many(&keys(n)).unwrap();
        assert_eq!(results.len(), n);
        for (i, result) in results.into_iter().enumerate() {
            let expected = (i % 3 != 0).then(|| format!("v{i}").into_bytes());
            assert_eq!(result.map(|v| v.value), expected, "key m{i} of {n}");
        }
    };
    for n in [1, 100, 10_000] {
        check(&mut client, n);
    }
    // Duplicates and a key asked twice come back twice.
    let twice = client.get_many(&[b"m1", b"m1", b"m0"]).unwrap();
    assert_eq!(twice[0], twice[1]);
    assert_eq!(twice[2], None);
    // A dead slave's keys come from their replicas.
    cluster.slaves[0].proc.kill();
    check(&mut client, 10_000);
    cluster.wait_settled();
    check(&mut client, 10_000);
}

/// A coordinator or a slave of a cluster that is killed and started again on the same
/// addresses and data dirs.
fn start_server(
    kind: &str,
    dir: &std::path::Path,
    listen: &str,
    coordinator: &str,
) -> (common::Proc, String) {
    let mut args = vec![
        "--listen".to_string(),
        listen.to_string(),
        "--data-dir".to_string(),
        dir.join(kind).display().to_string(),
        "--heartbeat-interval-ms".to_string(),
        common::HEARTBEAT_MS.to_string(),
    ];
    if kind == "coordinator" {
        args.extend(
            [
                "--heartbeat",
                "127.0.0.1:0",
                "--failure-timeout-ms",
                &common::FAILURE_MS.to_string(),
            ]
            .map(String::from),
        );
    } else {
        args.extend(["--coordinator", coordinator, "--fsync", "always"].map(String::from));
    }
    let binary = if kind == "coordinator" {
        "coordinator"
    } else {
        "slave"
    };
    let mut proc = common::Proc::start(common::bin(binary), &args);
    let addr = proc.wait_line("listening on ");
    (proc, addr)
}

#[test]
fn expiry_flush_and_counters_survive_a_whole_cluster_restart() {
    let dir = common::TempDir::new("opsrestart");
    let (mut coordinator, addr) = start_server("coordinator", dir.path(), "127.0.0.1:0", "");
    let mut slaves: Vec<(common::Proc, String)> = ["slave-0", "slave-1", "slave-2"]
        .iter()
        .map(|name| start_server(name, dir.path(), "127.0.0.1:0", &addr))
        .collect();
    let serving = |addr: &str| {
        wait_until(DEADLINE, "3 slaves alive and serving", || {
            piazza::Client::connect(addr)
                .and_then(|mut c| {
                    let alive = c
                        .status()?
                        .slaves
                        .iter()
                        .filter(|s| s.state == "alive")
                        .count();
                    c.get(b"probe").map(|_| alive)
                })
                .is_ok_and(|alive| alive == 3)
        })
    };
    serving(&addr);
    let mut client = piazza::Client::connect(&addr).unwrap();
    client.put(b"flushed", b"old").unwrap();
    client.flush_all(0).unwrap();
    client.put(b"after", b"kept").unwrap();
    client.put_with_ttl(b"ttl-long", b"v", 0, 1000).unwrap();
    client.put_with_ttl(b"ttl-short", b"v", 0, 2).unwrap();
    client.put(b"n", b"41").unwrap();
    assert_eq!(client.incr(b"n", 1, false).unwrap(), Some(42));

    // Everything dies at once, and comes back on the same addresses and data dirs.
    coordinator.kill();
    for (proc, _) in &mut slaves {
        proc.kill();
    }
    let (_coordinator, addr2) = start_server("coordinator", dir.path(), &addr, "");
    assert_eq!(addr2, addr);
    let _slaves: Vec<(common::Proc, String)> = ["slave-0", "slave-1", "slave-2"]
        .iter()
        .zip(&slaves)
        .map(|(name, (_, listen))| start_server(name, dir.path(), listen, &addr))
        .collect();
    serving(&addr);
    let mut client = piazza::Client::connect(&addr).unwrap();
    assert_eq!(value_of(&mut client, b"flushed"), None, "a flush stays");
    assert_eq!(value_of(&mut client, b"after"), Some(b"kept".to_vec()));
    assert_eq!(value_of(&mut client, b"ttl-long"), Some(b"v".to_vec()));
    assert_eq!(value_of(&mut client, b"n"), Some(b"42".to_vec()));
    assert_eq!(client.incr(b"n", 1, false).unwrap(), Some(43));
    wait_until(DEADLINE, "the short expiry after the restart", || {
        value_of(&mut client, b"ttl-short").is_none()
    });
}

#[test]
fn a_slave_that_missed_a_flush_never_serves_what_was_flushed() {
    let dir = common::TempDir::new("opsmissedflush");
    let (_coordinator, addr) = start_server("coordinator", dir.path(), "127.0.0.1:0", "");
    let mut slaves: Vec<(common::Proc, String)> = ["slave-0", "slave-1", "slave-2"]
        .iter()
        .map(|name| start_server(name, dir.path(), "127.0.0.1:0", &addr))
        .collect();
    let cluster = Cluster::attach(&addr);
    wait_until(DEADLINE, "3 slaves alive", || {
        cluster.live_addrs().len() == 3
    });
    let mut client = piazza::Client::connect(&addr).unwrap();
    let mut expected: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
    for i in 0..300 {
        let key = format!("f{i}").into_bytes();
        client.put(&key, b"before the flush").unwrap();
        expected.insert(key, None);
    }
    // One slave is down while the flush happens, then comes back with its old data.
    let (mut down, down_addr) = slaves.remove(0);
    down.kill();
    cluster.wait_state(&down_addr, "dead");
    client.flush_all(0).unwrap();
    client.put(b"fresh", b"after").unwrap();
    expected.insert(b"fresh".to_vec(), Some(b"after".to_vec()));
    let _back = start_server("slave-0", dir.path(), &down_addr, &addr);
    wait_until(DEADLINE, "the slave back and every move done", || {
        cluster.live_addrs().len() == 3 && cluster.status().moving.is_none()
    });
    for (key, value) in &expected {
        assert_eq!(&value_of(&mut client, key), value);
    }
    cluster.assert_two_copies(&expected);
}

#[test]
fn piazza_bench_counts_exactly_with_incr_and_runs_cas_and_ttl_workloads() {
    let cluster = Cluster::start(3);
    let mut client = cluster.client();
    for protocol in ["binary", "memcache"] {
        for workload in ["incr", "cas", "set-ttl"] {
            let flags = "--keys 1 --connections 4 --pipeline 8 --ops 1000";
            let mut args = vec!["--protocol", protocol, "--workload", workload];
            args.extend(flags.split(' '));
            common::run_bench(&cluster.addr, &args);
            if workload == "incr" {
                // 1,000 increments of the one key, from 0, on 4 pipelined connections.
                assert_eq!(
                    value_of(&mut client, b"key:0"),
                    Some(b"1000".to_vec()),
                    "{protocol}"
                );
            }
        }
    }
}
