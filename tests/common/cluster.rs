//! A whole cluster as separate processes: start, grow, restart, kill; where a key lives;
//! waits for the states a test needs; the two-copies check.

use std::collections::HashMap;
use std::path::PathBuf;

use piazza::Client;
use piazza::client::ClusterStatus;
use piazza::direct::DirectClient;
use piazza::view::View;
use piazza::wire::{Frame, Opcode};

use super::{
    DEADLINE, Expected, HEARTBEAT_MS, Proc, TempDir, bin, coordinator_args, strings, wait_ok,
    wait_until, with_defaults,
};

/// A slave process and its address.
pub struct SlaveProc {
    pub proc: Proc,
    pub addr: String,
    /// The flags it was started with (`--listen` as given, maybe port 0).
    pub args: Vec<String>,
}

/// A coordinator and its slaves, each a separate process.
pub struct Cluster {
    pub coordinator: Proc,
    pub addr: String,
    pub slaves: Vec<SlaveProc>,
    /// Extra flags every slave started by `add_slave` gets.
    pub slave_args: Vec<String>,
    /// The secret `client()` presents, if any.
    pub secret: Option<Vec<u8>>,
    /// Extra flags the coordinator was started with (a restart gets them again).
    pub coordinator_flags: Vec<String>,
    /// Where the processes keep their data. Declared last, so dropped last: removed once
    /// every process is dead (one still writing there could leave the dir behind).
    pub dir: TempDir,
}

impl Cluster {
    /// Starts a coordinator and `n` slaves, and waits until all are in the ring.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with(n, &[])
    }

    /// [`Cluster::start`] with extra flags for the coordinator and for every slave.
    pub fn start_secure(n: usize, coordinator: &[&str], slaves: &[&str], secret: &[u8]) -> Cluster {
        let mut cluster = Cluster::start_flags(0, coordinator, slaves);
        cluster.secret = Some(secret.to_vec());
        for _ in 0..n {
            cluster.add_slave();
        }
        cluster
    }

    /// [`Cluster::start`] with extra flags for the coordinator.
    pub fn start_with(n: usize, extra: &[&str]) -> Cluster {
        Cluster::start_flags(n, extra, &[])
    }

    /// [`Cluster::start`] with extra flags for the coordinator and for every slave; a flag
    /// the harness also sets (`--failure-timeout-ms`...) takes the caller's value.
    pub fn start_flags(n: usize, coordinator: &[&str], slaves: &[&str]) -> Cluster {
        let dir = TempDir::new("cluster");
        let flags = strings(coordinator);
        let args = coordinator_args(dir.path(), "127.0.0.1:0", "127.0.0.1:0", &flags);
        let mut coordinator = Proc::start(bin("coordinator"), &args);
        let addr = coordinator.wait_line("listening on ");
        let mut cluster = Cluster {
            dir,
            coordinator,
            addr,
            slaves: Vec::new(),
            slave_args: strings(slaves),
            secret: None,
            coordinator_flags: flags,
        };
        for _ in 0..n {
            cluster.add_slave();
        }
        cluster
    }

    /// The flags slave number `index` gets: `slave_args` and `extra`, then (unless those
    /// set them) `listen`, the coordinator, its own data dir and the heartbeat interval.
    pub fn slave_flags(&self, index: usize, listen: &str, extra: &[&str]) -> Vec<String> {
        let mut flags = self.slave_args.clone();
        flags.extend(strings(extra));
        with_defaults(
            &flags,
            &[
                ("--listen", listen.to_string()),
                ("--coordinator", self.addr.clone()),
                ("--data-dir", self.slave_dir(index).display().to_string()),
                ("--heartbeat-interval-ms", HEARTBEAT_MS.to_string()),
            ],
        )
    }

    /// The data dir of slave number `index`.
    pub fn slave_dir(&self, index: usize) -> PathBuf {
        self.dir.path().join(format!("slave-{index}"))
    }

    /// Starts one more slave and waits until the coordinator lists it.
    pub fn add_slave(&mut self) -> usize {
        self.add_slave_with(&[])
    }

    /// [`Cluster::add_slave`] with extra flags for this slave.
    pub fn add_slave_with(&mut self, extra: &[&str]) -> usize {
        self.add_slave_via(extra, Proc::start)
    }

    /// [`Cluster::add_slave_with`], started by `start` (given the slave binary and its
    /// flags), e.g. under a shell that sets limits first.
    pub fn add_slave_via(
        &mut self,
        extra: &[&str],
        start: impl FnOnce(&str, &[String]) -> Proc,
    ) -> usize {
        let index = self.slaves.len();
        let args = self.slave_flags(index, "127.0.0.1:0", extra);
        let mut proc = start(bin("slave"), &args);
        let addr = proc.wait_line("listening on ");
        self.slaves.push(SlaveProc {
            proc,
            addr: addr.clone(),
            args,
        });
        self.wait_state(&addr, "alive");
        index
    }

    /// SIGKILLs slave `index` (if it runs) and starts it again on the same address and
    /// data dir with the same flags; returns once it listens (not once it is alive: wait
    /// for what the test needs).
    pub fn restart_slave(&mut self, index: usize) {
        let slave = &mut self.slaves[index];
        slave.proc.kill();
        let mut args = slave.args.clone();
        if let Some(at) = args.iter().position(|a| a == "--listen") {
            args[at + 1] = slave.addr.clone();
        }
        let mut proc = Proc::start(bin("slave"), &args);
        let addr = proc.wait_line("listening on ");
        assert_eq!(addr, slave.addr, "the restarted slave listens where it did");
        slave.proc = proc;
    }

    /// SIGKILLs the coordinator and starts it again on the same addresses and data dir
    /// with the same flags; returns once it listens.
    pub fn restart_coordinator(&mut self) {
        let heartbeat = self.heartbeat_addr();
        self.coordinator.kill();
        let args = coordinator_args(
            self.dir.path(),
            &self.addr,
            &heartbeat,
            &self.coordinator_flags,
        );
        let mut coordinator = Proc::start(bin("coordinator"), &args);
        let addr = coordinator.wait_line("listening on ");
        assert_eq!(
            addr, self.addr,
            "the restarted coordinator listens where it did"
        );
        self.coordinator = coordinator;
    }

    /// SIGKILLs the slave that serves on `addr`.
    pub fn kill_slave_at(&mut self, addr: &str) {
        let slave = self.slaves.iter_mut().find(|s| s.addr == addr).unwrap();
        slave.proc.kill();
    }

    /// SIGKILLs every process at once (the coordinator first).
    pub fn kill_all(&mut self) {
        self.coordinator.kill();
        for slave in &mut self.slaves {
            slave.proc.kill();
        }
    }

    /// A view of a cluster whose processes someone else owns (for its helpers only).
    pub fn attach(addr: &str) -> Cluster {
        let dir = TempDir::new("attach");
        let coordinator = Proc::start("true", &[]);
        Cluster {
            dir,
            coordinator,
            addr: addr.to_string(),
            slaves: Vec::new(),
            slave_args: Vec::new(),
            secret: None,
            coordinator_flags: Vec::new(),
        }
    }

    pub fn client(&self) -> Client {
        self.try_client().expect("connect to the coordinator")
    }

    /// A client (authenticated if the cluster has a secret), or why there is none.
    pub fn try_client(&self) -> Result<Client, String> {
        let mut client = Client::connect(&self.addr).map_err(|e| e.to_string())?;
        if let Some(secret) = &self.secret {
            client.auth(secret).map_err(|e| format!("auth: {e}"))?;
        }
        Ok(client)
    }

    pub fn status(&self) -> ClusterStatus {
        self.client().status().expect("status")
    }

    /// A client that has presented `secret`.
    pub fn client_with(&self, secret: &[u8]) -> Client {
        let mut client = self.client();
        client.auth(secret).expect("auth");
        client
    }

    /// (primary address, replica address) for a key, computed from the ring as a client
    /// would (protocol.md, "Placement").
    pub fn placement(&self, key: &[u8]) -> (String, Option<String>) {
        placement_in(&self.view().expect("ring view"), key)
    }

    /// The routing view (the ring: members and every token's owner), as `RING_GET` gives
    /// it to clients.
    pub fn view(&self) -> Result<View, String> {
        let mut client = self.try_client()?;
        let reply = client
            .call(Frame::request(Opcode::RingGet, 0, Vec::new(), Vec::new()))
            .map_err(|e| format!("RING_GET: {e}"))?;
        View::decode(reply.arg, reply.flags, &reply.value).map_err(|e| format!("view: {e}"))
    }
}

/// (primary, replica) addresses of `key` in `view` (protocol.md, "Placement").
fn placement_in(view: &View, key: &[u8]) -> (String, Option<String>) {
    let (primary, replica) = view.placement(key).expect("no slave on the ring");
    (primary.addr.clone(), replica.map(|r| r.addr.clone()))
}

impl Cluster {
    /// Waits until no data is moving and every slave on the ring is alive.
    ///
    /// Note: the coordinator may report a join done (the slave alive, nothing moving)
    /// just before the old holders of its slots have sorted their tables and dropped what
    /// moved (`recovery::through_future`), so right after this a slave may still hold a
    /// copy it is about to drop, or hold one in the table it is about to leave. [`Cluster::assert_two_copies`] waits for that.
    pub fn wait_settled(&self) {
        wait_until(DEADLINE, "data moves to finish", || {
            let status = self.status();
            status.moving.is_none()
                && status
                    .slaves
                    .iter()
                    .all(|s| matches!(s.state.as_str(), "alive" | "dead"))
        });
    }

    /// Waits until `n` slaves are alive and the coordinator serves a read (it may be
    /// restarting: an unreachable coordinator counts as not yet).
    pub fn wait_serving(&self, n: usize) {
        wait_ok(DEADLINE, &format!("{n} slaves alive and serving"), || {
            let mut client = self.try_client()?;
            let status = client.status().map_err(|e| format!("status: {e}"))?;
            let alive = status.slaves.iter().filter(|s| s.state == "alive").count();
            if alive != n {
                return Err(format!("{alive} slaves alive:\n{}", status.raw));
            }
            client
                .get(b"probe")
                .map(|_| ())
                .map_err(|e| format!("get: {e}"))
        });
    }

    /// The coordinator's UDP heartbeat address.
    pub fn heartbeat_addr(&mut self) -> String {
        self.coordinator.wait_line("heartbeat on ")
    }

    /// Waits until the status shows the slave at `addr` in `state`.
    pub fn wait_state(&self, addr: &str, state: &str) {
        wait_until(DEADLINE, &format!("slave {addr} {state}"), || {
            self.status()
                .slaves
                .iter()
                .any(|s| s.addr == addr && s.state == state)
        });
    }

    /// Addresses of the slaves on the ring.
    pub fn live_addrs(&self) -> Vec<String> {
        self.status()
            .slaves
            .iter()
            .filter(|s| s.state == "alive")
            .map(|s| s.addr.clone())
            .collect()
    }

    /// Stores `n` keys, `<prefix><i>`, through the coordinator; returns what they hold.
    pub fn load(&self, prefix: &str, n: usize) -> Expected {
        let mut client = self.client();
        let mut expected = Expected::new();
        for i in 0..n {
            let key = format!("{prefix}{i}").into_bytes();
            let value = format!("value {i} of {prefix}").into_bytes();
            client.put(&key, &value).unwrap();
            expected.insert(key, Some(value));
        }
        expected
    }

    /// Deletes every third key of `expected` (in key order) and overwrites every third
    /// plus one, through the coordinator.
    pub fn change_thirds(&self, expected: &mut Expected) {
        let mut client = self.client();
        let mut keys: Vec<Vec<u8>> = expected.keys().cloned().collect();
        keys.sort();
        for (i, key) in keys.into_iter().enumerate() {
            if i % 3 == 0 {
                assert!(client.delete(&key).unwrap());
                expected.insert(key, None);
            } else if i % 3 == 1 {
                let value = format!("changed {i}").into_bytes();
                client.put(&key, &value).unwrap();
                expected.insert(key, Some(value));
            }
        }
    }

    /// Checks, through the coordinator, that every key of `expected` reads as expected
    /// (None: not there).
    pub fn assert_reads(&self, expected: &Expected) {
        let mut client = self.client();
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

    /// Checks that every key in `expected` (None: deleted) is held exactly as expected by
    /// its primary (own) and replica (previous), with the same version and flags in both,
    /// and that the live slaves hold exactly two copies of each live key in all (no stray
    /// copies left behind).
    ///
    /// Waits (up to [`DEADLINE`]) for that to hold, and fails with the last mismatch: the
    /// last step of a join (old holders splitting and dropping its range) is not shown by
    /// `status` (see [`Cluster::wait_settled`]).
    pub fn assert_two_copies(&self, expected: &Expected) {
        wait_ok(DEADLINE, "two copies of every key", || {
            self.two_copies(expected)
        });
    }

    /// One pass of [`Cluster::assert_two_copies`]: the first mismatch, if any.
    pub fn two_copies(&self, expected: &Expected) -> Result<(), String> {
        use piazza::wire::TableSel;
        let status = self
            .try_client()?
            .status()
            .map_err(|e| format!("status: {e}"))?;
        let view = self.view()?;
        let live: Vec<&String> = status
            .slaves
            .iter()
            .filter(|s| s.state == "alive")
            .map(|s| &s.addr)
            .collect();
        if live.len() < 2 || live.len() != view.members.len() {
            return Err(format!("two copies need two live slaves:\n{}", status.raw));
        }
        let mut clients: HashMap<String, Client> = HashMap::new();
        for addr in live {
            let mut client = Client::connect(addr).map_err(|e| e.to_string())?;
            if let Some(secret) = &self.secret {
                client.auth(secret).map_err(|e| format!("auth: {e}"))?;
            }
            clients.insert(addr.clone(), client);
        }
        for (key, value) in expected {
            let shown = String::from_utf8_lossy(key);
            let (primary, replica) = placement_in(&view, key);
            let replica = replica.expect("two slaves on the ring");
            let own = clients
                .get_mut(&primary)
                .unwrap()
                .slave_get(TableSel::Own, key)
                .map_err(|e| format!("{primary} own of {shown}: {e}"))?;
            let previous = clients
                .get_mut(&replica)
                .unwrap()
                .slave_get(TableSel::Previous, key)
                .map_err(|e| format!("{replica} previous of {shown}: {e}"))?;
            let text = |v: &Option<piazza::client::Value>| {
                v.as_ref()
                    .map(|v| String::from_utf8_lossy(&v.value).into_owned())
            };
            let want = value
                .as_ref()
                .map(|v| String::from_utf8_lossy(v).into_owned());
            if own.as_ref().map(|v| &v.value) != value.as_ref() {
                return Err(format!(
                    "primary {primary} own of {shown}: {:?}, expected {want:?}",
                    text(&own)
                ));
            }
            if previous.as_ref().map(|v| &v.value) != value.as_ref() {
                return Err(format!(
                    "replica {replica} previous of {shown}: {:?}, expected {want:?}",
                    text(&previous)
                ));
            }
            if let (Some(own), Some(previous)) = (&own, &previous)
                && (own.version, own.flags) != (previous.version, previous.flags)
            {
                return Err(format!(
                    "{shown}: version and flags {:?} on the primary, {:?} on the replica",
                    (own.version, own.flags),
                    (previous.version, previous.flags)
                ));
            }
        }
        let live_keys = expected.values().filter(|v| v.is_some()).count() as u64;
        let (mut own, mut previous) = (0, 0);
        for client in clients.values_mut() {
            let counts = client.slave_stats().map_err(|e| e.to_string())?;
            own += counts.own_live;
            previous += counts.previous_live;
        }
        if (own, previous) != (live_keys, live_keys) {
            return Err(format!(
                "live copies in own and previous: ({own}, {previous}), expected ({live_keys}, {live_keys})"
            ));
        }
        Ok(())
    }
}

/// A direct client (authenticated if the cluster has a secret) whose view is stable.
pub fn direct_client(cluster: &Cluster) -> DirectClient {
    let mut client = DirectClient::connect(&cluster.addr).expect("connect");
    if let Some(secret) = &cluster.secret {
        client.auth(secret).expect("auth");
    }
    wait_until(DEADLINE, "a stable routing view", || {
        client.refresh().is_ok() && client.view().stable
    });
    client
}

/// Waits until every slave of a stable view serves direct requests: for each, a write
/// (and its forward to the replica) and a delete of a key it is primary for, both
/// answered directly. The coordinator pushes the view to the slaves in parallel, and again
/// each tick to those that refused it (one not yet registered), so one slave answering
/// directly does not mean they all do. The probes leave only tombstones behind.
pub fn wait_direct_ready(client: &mut DirectClient) {
    wait_ok(DEADLINE, "every slave serving direct requests", || {
        client.refresh().map_err(|e| format!("refresh: {e}"))?;
        let view = client.view().clone();
        if !view.stable {
            return Err(format!("view {} not stable", view.epoch));
        }
        for member in &view.members {
            let key = (0..100_000)
                .map(|i| format!("probe:{i}"))
                .find(|key| {
                    view.placement(key.as_bytes())
                        .is_some_and(|(primary, _)| primary.id == member.id)
                })
                .ok_or_else(|| format!("no probe key for slave {}", member.id))?;
            let before = client.stats().direct;
            client
                .put(key.as_bytes(), b"probe")
                .map_err(|e| format!("put: {e}"))?;
            client
                .delete(key.as_bytes())
                .map_err(|e| format!("delete: {e}"))?;
            let direct = client.stats().direct - before;
            if direct != 2 {
                return Err(format!(
                    "slave {} at {}: {direct} of 2 requests served directly",
                    member.id, member.addr
                ));
            }
        }
        Ok(())
    });
}
