//! Test harness: starts the real binaries on ephemeral loopback ports, reads the
//! addresses they bound from their `listening on` lines, and kills (SIGKILL) and cleans up
//! everything in `Drop`. Waits poll a condition under a deadline; nothing sleeps blindly.
#![allow(dead_code)] // each test file uses a different part of the harness

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use piazza::Client;
use piazza::client::ClusterStatus;
use piazza::direct::{DirectClient, DirectStats};
use piazza::view::View;
use piazza::wire::{Frame, Opcode};

/// Heartbeat interval the tests run with.
pub const HEARTBEAT_MS: u64 = 100;
/// Failure timeout the tests run with. Generous on purpose: on a loaded machine (CI, or
/// developers building beside the tests) a process can go unscheduled for well over half
/// a second, and with 600 ms live slaves were declared dead, all at once (the coordinator
/// itself had stalled), and tests that never killed anything failed.
pub const FAILURE_MS: u64 = 1500;
/// How long a wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `condition` until it holds or `timeout` passes; panics naming `what`.
pub fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Polls `check` until it returns `Ok` or `timeout` passes; then panics naming `what`
/// and the last error `check` gave.
pub fn wait_ok(timeout: Duration, what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        let Err(last) = check() else {
            return;
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}; last: {last}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// What each key should hold: `Some(value)`, or `None` for deleted (or never written).
pub type Expected = HashMap<Vec<u8>, Option<Vec<u8>>>;

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static SERIAL: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "piazza-test-{tag}-{}-{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running binary whose stderr (and optionally stdout) lines are collected.
pub struct Proc {
    pub child: Child,
    pub command: String,
    pub stderr: Arc<Mutex<Vec<String>>>,
    pub stdout: Arc<Mutex<Vec<String>>>,
}

fn collect(reader: impl std::io::Read + Send + 'static, lines: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            lines.lock().unwrap().push(line);
        }
    });
}

impl Proc {
    pub fn start(binary: &str, args: &[String]) -> Proc {
        let command = format!("{binary} {}", args.join(" "));
        let mut child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command}: {e}"));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        collect(child.stderr.take().unwrap(), Arc::clone(&stderr));
        collect(child.stdout.take().unwrap(), Arc::clone(&stdout));
        Proc {
            child,
            command,
            stderr,
            stdout,
        }
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits for a stderr line starting with `prefix`; returns the rest of it.
    pub fn wait_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(line) = self
                .stderr
                .lock()
                .unwrap()
                .iter()
                .find_map(|l| l.strip_prefix(prefix).map(str::to_string))
            {
                return line.trim().to_string();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited with {status} before printing '{prefix}'; stderr:\n{}",
                    self.command,
                    self.stderr_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not print '{prefix}' in time; stderr:\n{}",
                self.command,
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal by name (INT, TERM, STOP, CONT) with the system's `kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit in time; stderr:\n{}",
                self.command,
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        // A failing test shows what each of its processes said (the test harness prints
        // captured output only for failures).
        if std::thread::panicking() {
            let lines = self.stderr.lock().map(|l| l.clone()).unwrap_or_default();
            if lines.is_empty() {
                return;
            }
            let skip = lines.len().saturating_sub(STDERR_TAIL);
            eprintln!(
                "---- stderr of {} (last {} of {} lines) ----\n{}",
                self.command,
                lines.len() - skip,
                lines.len(),
                lines[skip..].join("\n")
            );
        }
    }
}

/// How many of its last stderr lines a process shows when its test fails.
pub const STDERR_TAIL: usize = 200;

pub fn bin(name: &str) -> &'static str {
    match name {
        "coordinator" => env!("CARGO_BIN_EXE_piazza-coordinator"),
        "slave" => env!("CARGO_BIN_EXE_piazza-slave"),
        "client" => env!("CARGO_BIN_EXE_piazza-client"),
        "cluster" => env!("CARGO_BIN_EXE_piazza-cluster"),
        "bench" => env!("CARGO_BIN_EXE_piazza-bench"),
        other => panic!("no binary {other}"),
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// `defaults` (flag, value) pairs, except those `extra` sets itself, after `extra`: a
/// caller's flag replaces the harness's default instead of repeating it.
fn with_defaults(extra: &[String], defaults: &[(&str, String)]) -> Vec<String> {
    let mut args = extra.to_vec();
    for (flag, value) in defaults {
        if !extra.iter().any(|a| a == flag) {
            args.push(flag.to_string());
            args.push(value.clone());
        }
    }
    args
}

/// The flags of a test coordinator: `extra`, then (unless `extra` sets them) addresses,
/// data dir and the tests' timings.
pub fn coordinator_args(
    dir: &Path,
    listen: &str,
    heartbeat: &str,
    extra: &[String],
) -> Vec<String> {
    with_defaults(
        extra,
        &[
            ("--listen", listen.to_string()),
            ("--heartbeat", heartbeat.to_string()),
            ("--data-dir", dir.join("coordinator").display().to_string()),
            ("--heartbeat-interval-ms", HEARTBEAT_MS.to_string()),
            ("--failure-timeout-ms", FAILURE_MS.to_string()),
            ("--slave-timeout-ms", "2000".to_string()),
        ],
    )
}

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

/// Deterministic xorshift64* for test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

impl Cluster {
    /// Waits until no data is moving and every slave on the ring is alive.
    ///
    /// Note: the coordinator reports a join done (the slave alive, nothing moving) before
    /// the old holders of its range have split or dropped it (`recovery::join`, steps 3
    /// and 4), so right after this a slave may still hold a copy it is about to drop, or
    /// lack one it is about to split off. [`Cluster::assert_two_copies`] waits for that.
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

/// What a `piazza-client` run gave.
#[derive(Debug)]
pub struct ClientRun {
    /// Its exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `piazza-client` with `args`, behind `wrapper` if not empty (e.g. `ip netns exec
/// NS`), with `input` on its standard input (its prompt reads commands from there); fails
/// the test if it has not exited within [`DEADLINE`].
pub fn run_client(wrapper: &[&str], args: &[&str], input: &str) -> ClientRun {
    let mut command = match wrapper.split_first() {
        Some((program, rest)) => {
            let mut command = Command::new(program);
            command.args(rest).arg(bin("client"));
            command
        }
        None => Command::new(bin("client")),
    };
    let mut child = command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start piazza-client {args:?}: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let mut stdin = child.stdin.take().unwrap();
    // A client that exits early (an error) closes its end: that is for its exit code to say.
    let _ = stdin.write_all(input.as_bytes());
    drop(stdin);
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for piazza-client") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("piazza-client {args:?} did not exit within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    ClientRun {
        code: status.code(),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Per key: the last acknowledged value, and the values sent since without an answer
/// (which may or may not have landed).
type WriterState = HashMap<Vec<u8>, (Option<Vec<u8>>, Vec<Vec<u8>>)>;

/// What a writer thread ends with: its state, acknowledged and failed writes, and its
/// direct client's stats (for a direct writer).
type WriterEnd = (WriterState, u64, u64, Option<DirectStats>);

/// How a writer thread sends its puts.
enum Via {
    /// Through the coordinator; a fresh connection after a failure.
    Coordinator {
        client: Client,
        addr: String,
        secret: Option<Vec<u8>>,
    },
    /// Straight to the key's primary.
    Direct(Box<DirectClient>),
}

impl Via {
    fn put(&mut self, key: &[u8], value: &[u8]) -> bool {
        match self {
            Via::Coordinator { client, .. } => client.put(key, value).is_ok(),
            Via::Direct(client) => client.put(key, value).is_ok(),
        }
    }

    fn recover(&mut self) {
        if let Via::Coordinator {
            client,
            addr,
            secret,
        } = self
            && let Ok(mut fresh) = Client::connect(addr)
            && secret.as_ref().is_none_or(|s| fresh.auth(s).is_ok())
        {
            *client = fresh;
        }
    }

    fn stats(&self) -> Option<DirectStats> {
        match self {
            Via::Coordinator { .. } => None,
            Via::Direct(client) => Some(client.stats()),
        }
    }
}

/// Writer threads that each own a slice of keys (`w<thread>-<n>`, `keys_each` of them)
/// and overwrite them in turn until stopped, remembering per key the last acknowledged
/// value and the values sent since. A failed write is not retried (its value stays
/// uncertain: it may or may not have landed); the writer goes on to the next key.
pub struct Writers {
    stop: Arc<AtomicBool>,
    /// Writes acknowledged so far, all threads together.
    acked: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<WriterEnd>>,
}

/// What [`Writers::finish_and_check`] found.
#[derive(Debug)]
pub struct Written {
    /// Writes acknowledged.
    pub acked: u64,
    /// Writes that failed (their values may or may not have landed).
    pub failed: u64,
    /// Every key written and the value it reads as (checked).
    pub finals: Expected,
    /// For direct writers, each one's client stats.
    pub direct: Vec<DirectStats>,
}

impl Writers {
    /// `n` writers through the coordinator.
    pub fn start(cluster: &Cluster, n: usize, keys_each: usize) -> Writers {
        let vias = (0..n)
            .map(|_| Via::Coordinator {
                client: cluster.client(),
                addr: cluster.addr.clone(),
                secret: cluster.secret.clone(),
            })
            .collect();
        Writers::spawn(vias, keys_each)
    }

    /// One writer per direct client (each with a 5 s request timeout).
    pub fn start_direct(clients: Vec<DirectClient>, keys_each: usize) -> Writers {
        let vias = clients
            .into_iter()
            .map(|mut client| {
                client
                    .set_timeout(Duration::from_secs(5))
                    .expect("set the direct client's timeout");
                Via::Direct(Box::new(client))
            })
            .collect();
        Writers::spawn(vias, keys_each)
    }

    fn spawn(vias: Vec<Via>, keys_each: usize) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acked_total = Arc::new(AtomicU64::new(0));
        let threads = vias
            .into_iter()
            .enumerate()
            .map(|(w, mut via)| {
                let (stop, acked_total) = (Arc::clone(&stop), Arc::clone(&acked_total));
                std::thread::spawn(move || {
                    let mut state: WriterState = HashMap::new();
                    let (mut acked, mut failed) = (0, 0);
                    let mut round = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        round += 1;
                        let key = format!("w{w}-{}", round as usize % keys_each).into_bytes();
                        let value = format!("w{w} round {round}").into_bytes();
                        let entry = state.entry(key.clone()).or_default();
                        if via.put(&key, &value) {
                            *entry = (Some(value), Vec::new());
                            acked += 1;
                            acked_total.fetch_add(1, Ordering::SeqCst);
                        } else {
                            entry.1.push(value);
                            failed += 1;
                            via.recover();
                            // Pace retries against a cluster that is down for a moment.
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                    (state, acked, failed, via.stats())
                })
            })
            .collect();
        Writers {
            stop,
            acked: acked_total,
            threads,
        }
    }

    /// Writes acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    /// Waits (up to [`DEADLINE`]) until `n` more writes have been acknowledged.
    pub fn progress(&self, n: u64) {
        let target = self.acked() + n;
        wait_until(DEADLINE, &format!("{n} more writes acknowledged"), || {
            self.acked() >= target
        });
    }

    /// Stops the writers and checks, through the coordinator, that every key reads as its
    /// last acknowledged value or one sent after it.
    pub fn finish_and_check(self, cluster: &Cluster) -> Written {
        self.stop.store(true, Ordering::SeqCst);
        let mut client = cluster.client();
        let mut written = Written {
            acked: 0,
            failed: 0,
            finals: HashMap::new(),
            direct: Vec::new(),
        };
        for thread in self.threads {
            let (state, acked, failed, stats) = thread.join().unwrap();
            written.acked += acked;
            written.failed += failed;
            written.direct.extend(stats);
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
                written.finals.insert(key, got);
            }
        }
        written
    }
}
