//! Direct routing with real processes: clients that fetch the routing view and talk to
//! the key's primary, slaves that redirect what is not theirs, and writes acknowledged
//! on the direct path that survive a SIGKILLed slave, a join and a graceful leave.

mod common;

use std::collections::HashMap;

use common::{Cluster, DEADLINE, Expected, Writers, direct_client, wait_direct_ready};
use piazza::Client;
use piazza::client::ClientError;
use piazza::direct::{DirectOp, DirectReply};
use piazza::ring::SlaveId;
use piazza::view::View;
use piazza::wire::{Frame, Opcode, Status, TableSel};

#[test]
fn direct_requests_reach_the_primary_and_write_both_copies() {
    let cluster = Cluster::start(3);
    let mut client = direct_client(&cluster);
    wait_direct_ready(&mut client);
    let start = client.stats();

    let mut expected: Expected = HashMap::new();
    for i in 0..300 {
        let key = format!("direct:{i}").into_bytes();
        let value = format!("value {i}").into_bytes();
        let version = client.put(&key, &value).unwrap();
        assert!(version > 0);
        expected.insert(key, Some(value));
    }
    for i in (0..300).step_by(7) {
        let key = format!("direct:{i}").into_bytes();
        assert!(client.delete(&key).unwrap(), "delete of a live key");
        assert!(!client.delete(&key).unwrap(), "second delete finds nothing");
        expected.insert(key, None);
    }
    for (key, value) in &expected {
        assert_eq!(client.get(key).unwrap().map(|v| v.value), *value);
    }
    let stats = client.stats();
    assert_eq!(
        stats.via_coordinator, start.via_coordinator,
        "a stable cluster serves everything directly: {stats:?}"
    );
    assert!(stats.direct >= start.direct + 300 + 2 * 43 + 300);
    // The coordinator path sees the same data, and each key has its two copies.
    let mut plain = cluster.client();
    for (key, value) in &expected {
        assert_eq!(plain.get(key).unwrap().map(|v| v.value), *value);
    }
    cluster.assert_two_copies(&expected);
}

#[test]
fn writes_through_either_path_keep_their_order() {
    let cluster = Cluster::start(3);
    let mut direct = direct_client(&cluster);
    wait_direct_ready(&mut direct);
    let mut plain = cluster.client();
    for round in 0..50 {
        let key = format!("mixed:{}", round % 5).into_bytes();
        let first = format!("via coordinator {round}").into_bytes();
        let v1 = plain.put(&key, &first).unwrap();
        let second = format!("direct {round}").into_bytes();
        let v2 = direct.put(&key, &second).unwrap();
        assert!(v2 > v1, "a later direct write gets a newer version");
        assert_eq!(plain.get(&key).unwrap().unwrap().value, second);
        let third = format!("via coordinator again {round}").into_bytes();
        let v3 = plain.put(&key, &third).unwrap();
        assert!(v3 > v2, "a later coordinator write gets a newer version");
        assert_eq!(direct.get(&key).unwrap().unwrap().value, third);
    }
}

#[test]
fn slaves_redirect_what_is_not_theirs_and_refuse_bad_frames() {
    let cluster = Cluster::start(3);
    let mut client = direct_client(&cluster);
    wait_direct_ready(&mut client);
    let view = client.view().clone();
    let key = b"some key".to_vec();
    let (primary, replica) = view.placement(&key).unwrap();
    let other = view
        .members
        .iter()
        .find(|m| m.id != primary.id && Some(m.id) != replica.map(|r| r.id))
        .unwrap();

    // Right slave, wrong epoch: redirect carrying the slave's epoch.
    let mut to_primary = Client::connect(&primary.addr).unwrap();
    let mut get = Frame::request(Opcode::Get, 0, key.clone(), Vec::new());
    get.arg = view.epoch + 1000;
    let reply = to_primary.call(get.clone()).unwrap();
    assert_eq!(reply.status, Status::Redirect);
    assert_eq!(reply.arg, view.epoch);
    // Plain clients (epoch 0) are redirected too.
    let reply = to_primary.call(Frame::request(Opcode::Get, 0, key.clone(), Vec::new()));
    assert_eq!(reply.unwrap().status, Status::Redirect);
    // Right epoch, wrong slave.
    let mut to_other = Client::connect(&other.addr).unwrap();
    get.arg = view.epoch;
    let reply = to_other.call(get.clone()).unwrap();
    assert_eq!(reply.status, Status::Redirect);
    assert!(
        reply.value_text().contains(&primary.addr),
        "{}",
        reply.value_text()
    );
    let mut put = Frame::request(Opcode::Put, 0, key.clone(), b"x".to_vec());
    put.arg = view.epoch;
    assert_eq!(to_other.call(put.clone()).unwrap().status, Status::Redirect);
    assert_eq!(to_primary.call(put).unwrap().status, Status::Ok);
    assert_eq!(to_primary.call(get).unwrap().value, b"x");

    // A forward to a slave that is not the key's replica, and malformed ones.
    let mut forward = Frame::request(Opcode::Forward, 0, key.clone(), {
        let mut v = view.epoch.to_be_bytes().to_vec();
        v.push(1);
        v.extend_from_slice(b"y");
        v
    });
    forward.table = TableSel::Previous;
    forward.arg = u64::MAX - 1;
    assert_eq!(
        to_other.call(forward.clone()).unwrap().status,
        Status::Redirect
    );
    let mut short = forward.clone();
    short.value = vec![1, 2, 3];
    assert_eq!(to_other.call(short).unwrap().status, Status::Invalid);
    let mut kind = forward.clone();
    kind.value[8] = 9;
    assert_eq!(to_other.call(kind).unwrap().status, Status::Invalid);
    // A malformed view is refused and changes nothing.
    let mut bad_view = Frame::request(Opcode::SetView, 0, Vec::new(), vec![0, 0, 0, 5]);
    bad_view.arg = view.epoch;
    bad_view.flags = piazza::view::STABLE;
    assert_eq!(to_other.call(bad_view).unwrap().status, Status::Invalid);
    assert_eq!(
        client.get(&key).unwrap().map(|v| v.value),
        Some(b"x".to_vec())
    );
    // The coordinator's view decodes and names every slave.
    let mut coordinator = cluster.client();
    let reply = coordinator
        .call(Frame::request(Opcode::RingGet, 0, Vec::new(), Vec::new()))
        .unwrap();
    let decoded = View::decode(reply.arg, reply.flags, &reply.value).unwrap();
    assert_eq!(decoded.members.len(), 3);
    assert!(decoded.stable);
}

#[test]
fn direct_writes_survive_a_killed_slave_a_join_and_a_leave() {
    let mut cluster = Cluster::start(4);
    let mut client = direct_client(&cluster);
    wait_direct_ready(&mut client);
    // One writer over 400 keys; a write that fails (while a slave is being replaced) is
    // not retried: its key may then read as that value or the last acknowledged one.
    let writers = Writers::start_direct(vec![client], 400);
    let progress = || writers.progress(500);
    progress();

    let victim = cluster.slaves[1].addr.clone();
    cluster.slaves[1].proc.kill();
    cluster.wait_state(&victim, "dead");
    cluster.wait_settled();
    progress();
    cluster.add_slave();
    cluster.wait_settled();
    progress();
    // A graceful leave (SIGINT): its ranges are handed on while it still serves.
    cluster.slaves[0].proc.signal("INT");
    assert_eq!(cluster.slaves[0].proc.wait_exit(DEADLINE), Some(0));
    cluster.wait_settled();
    progress();

    let written = writers.finish_and_check(&cluster);
    let stats = written.direct[0];
    eprintln!("writer: {} keys, {written:?}", written.finals.len());
    assert_eq!(
        written.finals.len(),
        400,
        "the writer went round its keys: {stats:?}"
    );
    assert!(stats.direct > 0, "{stats:?}");
    // Every write either landed or did not; nothing acknowledged is lost (checked by
    // finish_and_check), and each key ends with one value everywhere.
    let expected = written.finals;
    cluster.wait_settled();
    let mut reader = direct_client(&cluster);
    for (key, value) in &expected {
        assert_eq!(
            reader.get(key).unwrap().map(|v| v.value),
            *value,
            "{}",
            String::from_utf8_lossy(key)
        );
    }
    cluster.assert_two_copies(&expected);
}

/// Runs `piazza-bench --direct --json` against `cluster` with `args`, asserts it
/// succeeded with no wrong reads and no errors, and returns its JSON line.
fn bench_json(cluster: &Cluster, args: &[&str]) -> String {
    let line = common::run_bench(&cluster.addr, &[&["--direct"], args].concat());
    assert!(line.contains("\"wrong\":0"), "{line}");
    line
}

#[test]
fn piazza_bench_direct_verifies_every_read() {
    let cluster = Cluster::start(3);
    let mut client = direct_client(&cluster);
    wait_direct_ready(&mut client);
    let line = bench_json(
        &cluster,
        &[
            "--connections",
            "4",
            "--ops",
            "2000",
            "--keys",
            "200",
            "--preload",
            "--verify",
            "--get-ratio",
            "0.5",
        ],
    );
    assert!(line.contains("\"protocol\":\"direct\""), "{line}");
    assert!(line.contains("\"misses\":0"), "{line}");
    // Pipelined: batches of 16 in flight per connection, every read still checked.
    let line = bench_json(
        &cluster,
        &[
            "--connections",
            "4",
            "--pipeline",
            "16",
            "--ops",
            "4000",
            "--keys",
            "200",
            "--verify",
            "--get-ratio",
            "0.5",
        ],
    );
    assert!(line.contains("\"pipeline\":16"), "{line}");
    // --direct is for the binary protocol.
    let output = std::process::Command::new(common::bin("bench"))
        .args(["--coordinator", &cluster.addr, "--direct"])
        .args(["--protocol", "memcache", "--ops", "10"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--direct"));
}

/// A sequential model of a few keys: what each request of a batch must answer.
#[derive(Default)]
struct Model {
    values: HashMap<Vec<u8>, Vec<u8>>,
    versions: HashMap<Vec<u8>, u64>,
}

impl Model {
    /// Checks the outcome of `op` (the `index`th of its batch) and applies it.
    fn check(
        &mut self,
        index: usize,
        op: &DirectOp<'_>,
        outcome: Result<DirectReply, ClientError>,
    ) {
        let outcome = outcome.unwrap_or_else(|e| panic!("request {index} ({op:?}) failed: {e}"));
        match (*op, outcome) {
            (DirectOp::Get(key), DirectReply::Value(found)) => assert_eq!(
                found.map(|v| v.value),
                self.values.get(key).cloned(),
                "request {index}: get {}",
                String::from_utf8_lossy(key)
            ),
            (DirectOp::Put { key, value, .. }, DirectReply::Stored(version)) => {
                let last = self.versions.insert(key.to_vec(), version).unwrap_or(0);
                assert!(version > last, "request {index}: versions of a key grow");
                self.values.insert(key.to_vec(), value.to_vec());
            }
            (DirectOp::Delete(key), DirectReply::Deleted(was)) => {
                assert_eq!(
                    was,
                    self.values.remove(key).is_some(),
                    "request {index}: delete {}",
                    String::from_utf8_lossy(key)
                );
            }
            (op, outcome) => panic!("request {index}: {op:?} answered {outcome:?}"),
        }
    }
}

/// Keys and values of a batch of `n` requests over `n_keys` keys: about half gets, 40%
/// puts and (with `deletes`) 10% deletes, from `seed`.
fn random_batch(seed: u64, n: usize, n_keys: u64, deletes: bool) -> Vec<(u8, Vec<u8>, Vec<u8>)> {
    let mut rng = piazza::rng::Rng::new(seed, 1);
    (0..n)
        .map(|i| {
            let key = format!("pipe:{}", rng.below(n_keys)).into_bytes();
            let kind = match rng.below(10) {
                0..=4 => b'g',
                9 if deletes => b'd',
                _ => b'p',
            };
            (kind, key, format!("value {seed}/{i}").into_bytes())
        })
        .collect()
}

fn ops_of(batch: &[(u8, Vec<u8>, Vec<u8>)]) -> Vec<DirectOp<'_>> {
    batch
        .iter()
        .map(|(kind, key, value)| match kind {
            b'g' => DirectOp::Get(key),
            b'd' => DirectOp::Delete(key),
            _ => DirectOp::Put {
                key,
                value,
                flags: 0,
            },
        })
        .collect()
}

#[test]
fn a_pipelined_batch_answers_as_a_sequential_run_would() {
    let cluster = Cluster::start(3);
    let mut client = direct_client(&cluster);
    wait_direct_ready(&mut client);
    let start = client.stats();
    let mut model = Model::default();
    // 1,000 requests over 40 keys: the same key many times in one batch, and longer
    // than one window of requests in flight.
    for seed in 1..=3 {
        let batch = random_batch(seed, 1000, 40, true);
        let ops = ops_of(&batch);
        let outcomes = client.execute(&ops);
        assert_eq!(outcomes.len(), ops.len());
        for (index, (op, outcome)) in ops.iter().zip(outcomes).enumerate() {
            model.check(index, op, outcome);
        }
    }
    let stats = client.stats();
    assert_eq!(
        stats.via_coordinator, start.via_coordinator,
        "a stable cluster serves every request directly: {stats:?}"
    );
    assert_eq!(stats.direct, start.direct + 3000);
    // get_many and put_many, and the coordinator's view of the same keys.
    let keys: Vec<Vec<u8>> = (0..40).map(|i| format!("pipe:{i}").into_bytes()).collect();
    let found = client.get_many(&keys);
    let mut plain = cluster.client();
    for (key, found) in keys.iter().zip(found) {
        let expected = model.values.get(key).cloned();
        assert_eq!(found.unwrap().map(|v| v.value), expected);
        assert_eq!(plain.get(key).unwrap().map(|v| v.value), expected);
    }
    let items: Vec<(Vec<u8>, Vec<u8>)> =
        keys.iter().map(|k| (k.clone(), b"last".to_vec())).collect();
    for version in client.put_many(&items) {
        assert!(version.unwrap() > 0);
    }
    let expected: Expected = keys
        .iter()
        .map(|k| (k.clone(), Some(b"last".to_vec())))
        .collect();
    cluster.assert_two_copies(&expected);
}

#[test]
fn pipelined_batches_stay_in_order_while_a_slave_joins() {
    let mut cluster = Cluster::start(3);
    let mut client = direct_client(&cluster);
    wait_direct_ready(&mut client);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_batches = std::sync::Arc::clone(&stop);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let done_batches = std::sync::Arc::clone(&done);
    // Batches so far with both direct replies and redirected ones.
    let mixed_so_far = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mixed_batches = std::sync::Arc::clone(&mixed_so_far);
    // Batches of gets and puts (deletes answer "was it there" from the key's primary,
    // which a write redirected by its replica has already changed) until told to stop;
    // each batch checked against the model. Returns the model and how many batches had
    // both direct replies and redirected ones.
    let batches = std::thread::spawn(move || {
        let mut model = Model::default();
        let (mut mixed, mut seed) = (0, 0);
        while !stop_batches.load(std::sync::atomic::Ordering::SeqCst) || seed < 3 {
            seed += 1;
            let batch = random_batch(seed, 2000, 100, false);
            let ops = ops_of(&batch);
            let before = client.stats();
            let outcomes = client.execute(&ops);
            let after = client.stats();
            for (index, (op, outcome)) in ops.iter().zip(outcomes).enumerate() {
                model.check(index, op, outcome);
            }
            if after.direct > before.direct && after.redirects > before.redirects {
                mixed += 1;
                mixed_batches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            done_batches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        (model, mixed, client.stats())
    });
    // The join: fence views, data moving, then a stable view with one slave more. A
    // client may learn of the fence from the coordinator before any slave redirects it
    // (a busy machine shifts the timing): then another slave joins, up to five.
    common::wait_until(DEADLINE, "two batches before the join", || {
        done.load(std::sync::atomic::Ordering::SeqCst) >= 2
    });
    for slaves in 4..=8 {
        cluster.add_slave();
        cluster.wait_settled();
        common::wait_until(DEADLINE, "a stable view with the new slave", || {
            cluster
                .view()
                .is_ok_and(|view| view.stable && view.members.len() == slaves)
        });
        if mixed_so_far.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (model, mixed, stats) = batches.join().expect("the batch thread");
    eprintln!("{mixed} batches with a redirect among direct replies; {stats:?}");
    assert!(
        stats.redirects > 0,
        "the join redirected requests: {stats:?}"
    );
    assert!(
        mixed > 0,
        "a redirect came in the middle of a batch: {stats:?}"
    );
    let expected: Expected = model
        .values
        .iter()
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    cluster.wait_settled();
    cluster.assert_two_copies(&expected);
}

/// The names of a process's threads (Linux: `/proc/PID/task/*/comm`).
fn thread_names(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc/PID/task");
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect()
}

/// A slave's forwards to its replicas travel links shared by all its serving threads: 24
/// clients writing at once leave at most two links per other slave, so a replica serves a
/// few forward connections (a serving thread each), not one per client; and every write
/// has its two copies.
#[test]
#[cfg(target_os = "linux")]
fn many_clients_share_each_slaves_links_to_its_replicas() {
    let cluster = Cluster::start(3);
    let mut first = direct_client(&cluster);
    wait_direct_ready(&mut first);
    let writers: Vec<_> = (0..24)
        .map(|c| {
            let mut client = direct_client(&cluster);
            std::thread::spawn(move || {
                let mut written: Expected = HashMap::new();
                for i in 0..100 {
                    let key = format!("shared:{c}:{i}").into_bytes();
                    let value = format!("{c}/{i}").into_bytes();
                    client.put(&key, &value).expect("direct put");
                    written.insert(key, Some(value));
                }
                (client, written)
            })
        })
        .collect();
    let mut expected: Expected = HashMap::new();
    let mut clients = Vec::new();
    for writer in writers {
        let (client, written) = writer.join().expect("writer thread");
        assert_eq!(client.stats().via_coordinator, 0, "all went directly");
        clients.push(client);
        expected.extend(written);
    }
    // Every client still holds its connections: the slaves serve 24 of them each.
    for slave in &cluster.slaves {
        let names = thread_names(slave.proc.child.id());
        let serving = names.iter().filter(|n| n.starts_with("slave-")).count();
        // 24 clients, 2 links from each other slave, the coordinator's: not a connection
        // per client and replica (that would be 24 more). Links have no threads of their
        // own: their callers read the replies.
        assert!(
            (24..=34).contains(&serving),
            "{}: {serving} serving threads: {names:?}",
            slave.addr
        );
        assert!(
            !names
                .iter()
                .any(|n| n.starts_with("fwd-") || n.starts_with("link-")),
            "{}: reader threads: {names:?}",
            slave.addr
        );
    }
    cluster.assert_two_copies(&expected);
}

/// Two keys (`PREFIX:i`) whose replica in `view` is slave `id`.
fn two_keys_replicated_by(view: &View, id: SlaveId, prefix: &str) -> Vec<Vec<u8>> {
    let keys: Vec<Vec<u8>> = (0..10_000)
        .map(|i| format!("{prefix}:{i}").into_bytes())
        .filter(|key| view.is_replica(id, key))
        .take(2)
        .collect();
    assert_eq!(keys.len(), 2, "keys whose replica is slave {id}");
    keys
}

/// FORWARDs that reach a replica together are applied as one batch, each judged on its
/// own: in one write, two good ones, a malformed one and one for another view get OK,
/// INVALID, REDIRECT and OK, in order, and the good ones land in the replica's
/// `previous` table.
#[test]
fn a_batch_of_forwards_is_judged_forward_by_forward() {
    let cluster = Cluster::start(3);
    let mut client = direct_client(&cluster);
    wait_direct_ready(&mut client);
    let view = client.view().clone();
    let replica = view.members[0].clone();
    let keys = two_keys_replicated_by(&view, replica.id, "batched");
    let forward = |key: &[u8], epoch: u64, value: &[u8]| {
        let mut body = epoch.to_be_bytes().to_vec();
        body.push(1);
        body.extend_from_slice(value);
        let mut frame = Frame::request(Opcode::Forward, 0, key.to_vec(), body);
        frame.table = TableSel::Previous;
        frame.arg = 1 << 60;
        frame.flags = 7;
        frame
    };
    let mut malformed = forward(&keys[0], view.epoch, b"");
    malformed.value.truncate(4);
    let mut batch = [
        forward(&keys[0], view.epoch, b"first"),
        malformed,
        forward(&keys[1], view.epoch + 1000, b"stale view"),
        forward(&keys[1], view.epoch, b"second"),
    ];
    let mut to_replica = Client::connect(&replica.addr).unwrap();
    let ids: Vec<u32> = batch
        .iter_mut()
        .map(|frame| to_replica.queue(frame).unwrap())
        .collect();
    to_replica.flush().unwrap();
    let statuses: Vec<Status> = ids
        .iter()
        .map(|id| to_replica.receive(*id).unwrap().status)
        .collect();
    assert_eq!(
        statuses,
        [Status::Ok, Status::Invalid, Status::Redirect, Status::Ok]
    );
    for (key, value) in keys.iter().zip([&b"first"[..], b"second"]) {
        let mut read = Frame::request(Opcode::SlaveGet, 0, key.clone(), Vec::new());
        read.table = TableSel::Previous;
        let reply = to_replica.call(read).unwrap();
        assert_eq!((reply.status, reply.value.as_slice()), (Status::Ok, value));
        assert_eq!((reply.arg, reply.flags), (1 << 60, 7));
    }
}

/// A direct delete that the primary applied but whose replica then did not answer goes
/// on to the coordinator, which finds the key already gone from the primary: the client
/// still reports it deleted (the primary's answer says it removed a live value), for a
/// request alone and for one in a batch.
#[test]
fn a_delete_whose_replica_hangs_still_reports_the_key_deleted() {
    let cluster = Cluster::start(3);
    let mut alone = direct_client(&cluster);
    wait_direct_ready(&mut alone);
    let mut batched = direct_client(&cluster);
    let view = alone.view().clone();
    let replica = view.members[0].clone();
    let keys = two_keys_replicated_by(&view, replica.id, "hung");
    for key in &keys {
        alone.put(key, b"there").unwrap();
    }
    let stopped = cluster
        .slaves
        .iter()
        .position(|slave| slave.addr == replica.addr)
        .unwrap();
    let before = alone.stats();
    cluster.slaves[stopped].proc.signal("STOP");
    let first = keys[0].clone();
    let deleted_alone = std::thread::spawn(move || (alone.delete(&first), alone.stats()));
    let deleted_in_batch = batched.execute(&[DirectOp::Delete(&keys[1])]);
    let (deleted_alone, stats) = deleted_alone.join().unwrap();
    cluster.slaves[stopped].proc.signal("CONT");
    assert!(
        matches!(deleted_alone, Ok(true)),
        "alone: {deleted_alone:?}"
    );
    assert!(
        matches!(
            deleted_in_batch.as_slice(),
            [Ok(DirectReply::Deleted(true))]
        ),
        "in a batch: {deleted_in_batch:?}"
    );
    // It went on: to the coordinator, or (if the coordinator declared the paused
    // replica dead first) straight to the primary of the next view.
    assert!(
        stats.via_coordinator + stats.redirects > before.via_coordinator + before.redirects,
        "the delete was answered on its first try: {stats:?}"
    );
    let mut plain = cluster.client();
    for key in &keys {
        assert_eq!(
            plain.get(key).unwrap(),
            None,
            "{}",
            String::from_utf8_lossy(key)
        );
    }
}
