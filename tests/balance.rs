//! Balanced placement with real processes: slaves join, are SIGKILLed and leave gracefully
//! in a random order between 1 and 16 slaves; after every step each slave's share of the
//! hash space is within ±10 % of 1/N and every key is on exactly its two places.

mod common;

use std::collections::HashMap;

use common::{Cluster, DEADLINE, Expected, Proc, SlaveProc, bin, wait_ok};
use piazza::rng::Rng;

/// Every live slave's share (status, in per cent) within ±10 % of 100/N.
fn shares_even(cluster: &Cluster, n: usize) -> Result<(), String> {
    let status = cluster.try_client()?.status().map_err(|e| e.to_string())?;
    if status.moving.is_some() {
        return Err(format!("data still moving:\n{}", status.raw));
    }
    let alive: Vec<_> = status
        .slaves
        .iter()
        .filter(|s| s.state == "alive")
        .collect();
    if alive.len() != n {
        return Err(format!(
            "{} slaves alive, expected {n}:\n{}",
            alive.len(),
            status.raw
        ));
    }
    let fair = 100.0 / n as f64;
    for slave in alive {
        let share: f64 = slave
            .share
            .trim_end_matches('%')
            .parse()
            .map_err(|_| format!("share '{}' is not a percentage", slave.share))?;
        if (share - fair).abs() > fair * 0.10 {
            return Err(format!(
                "slave {} holds {share}% with {n} slaves (fair {fair:.1}%):\n{}",
                slave.id, status.raw
            ));
        }
    }
    Ok(())
}

/// With one slave: every key in its `own`, nothing in `previous`.
fn one_copy(cluster: &Cluster, expected: &Expected) -> Result<(), String> {
    let status = cluster.try_client()?.status().map_err(|e| e.to_string())?;
    let live = expected.values().filter(|v| v.is_some()).count() as u64;
    let alive: Vec<_> = status
        .slaves
        .iter()
        .filter(|s| s.state == "alive")
        .collect();
    match alive.as_slice() {
        [only] if only.own == Some(live) && only.previous == Some(0) => Ok(()),
        _ => Err(format!(
            "expected one slave with {live} keys in own:\n{}",
            status.raw
        )),
    }
}

#[test]
fn shares_stay_even_and_keys_keep_two_places_through_joins_deaths_and_leaves() {
    let mut cluster = Cluster::start(1);
    let mut rng = Rng::new(0x5eed_ba1a_11ce, 0);
    let mut expected: Expected = HashMap::new();
    let mut client = cluster.client();
    for i in 0..1500 {
        let key = format!("bal{i}").into_bytes();
        let value = format!("value {i}").into_bytes();
        client.put(&key, &value).unwrap();
        expected.insert(key, Some(value));
    }
    drop(client);
    // Indexes of the slaves that run.
    let mut running: Vec<usize> = vec![0];
    let mut reached_16 = false;
    let mut step = 0;
    while !(reached_16 && running.len() == 1) {
        step += 1;
        assert!(step < 80, "the walk should have ended");
        let n = running.len();
        // Grow towards 16 first, then shrink towards 1, with steps the other way mixed in.
        let grow = if reached_16 {
            rng.below(5) == 0 && n < 16
        } else {
            n == 1 || rng.below(5) != 0
        };
        let what = if grow {
            running.push(cluster.add_slave());
            "join"
        } else {
            let at = rng.below(n as u64) as usize;
            let index = running.swap_remove(at);
            let slave = &mut cluster.slaves[index];
            if rng.below(2) == 0 {
                slave.proc.kill();
                "kill -9"
            } else {
                slave.proc.signal("INT");
                assert_eq!(slave.proc.wait_exit(DEADLINE), Some(0), "a graceful leave");
                "leave"
            }
        };
        let n = running.len();
        reached_16 |= n == 16;
        // Some writes and deletes between steps, acknowledged by the new placement.
        let mut client = cluster.client();
        for _ in 0..20 {
            let key = format!("bal{}", rng.below(1500)).into_bytes();
            if rng.below(3) == 0 {
                client.delete(&key).unwrap();
                expected.insert(key, None);
            } else {
                let value = format!("step {step}").into_bytes();
                client.put(&key, &value).unwrap();
                expected.insert(key, Some(value));
            }
        }
        let context = format!("step {step} ({what}, {n} slaves)");
        wait_ok(DEADLINE, &format!("{context}: even shares"), || {
            shares_even(&cluster, n)
        });
        if n >= 2 {
            wait_ok(DEADLINE, &format!("{context}: two copies"), || {
                cluster.two_copies(&expected)
            });
        } else {
            wait_ok(DEADLINE, &format!("{context}: one copy"), || {
                one_copy(&cluster, &expected)
            });
        }
    }
    assert!(reached_16);
}

#[test]
fn slaves_that_register_at_once_get_even_shares() {
    let mut cluster = Cluster::start(1);
    let mut client = cluster.client();
    let mut expected: Expected = HashMap::new();
    for i in 0..500 {
        let key = format!("once{i}").into_bytes();
        client.put(&key, b"v").unwrap();
        expected.insert(key, Some(b"v".to_vec()));
    }
    // Four more start together: they register while each other's joins are planned.
    let mut started = Vec::new();
    for index in 1..5 {
        let args = cluster.slave_flags(index, "127.0.0.1:0", &[]);
        started.push((Proc::start(bin("slave"), &args), args));
    }
    for (mut proc, args) in started {
        let addr = proc.wait_line("listening on ");
        cluster.slaves.push(SlaveProc { proc, addr, args });
    }
    wait_ok(DEADLINE, "five even shares", || shares_even(&cluster, 5));
    wait_ok(DEADLINE, "two copies", || cluster.two_copies(&expected));
}
