//! Test harness: starts the real binaries on ephemeral loopback ports, reads the
//! addresses they bound from their `listening on` lines, and kills (SIGKILL) and cleans up
//! everything in `Drop`. Waits poll a condition under a deadline; nothing sleeps blindly.
#![allow(dead_code)] // each test file uses a different part of the harness

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use piazza::Client;
use piazza::client::ClusterStatus;

/// Heartbeat interval the tests run with.
pub const HEARTBEAT_MS: u64 = 100;
/// Failure timeout the tests run with.
pub const FAILURE_MS: u64 = 600;
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
    }
}

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

/// A slave process and its address.
pub struct SlaveProc {
    pub proc: Proc,
    pub addr: String,
}

/// A coordinator and its slaves, each a separate process.
pub struct Cluster {
    pub dir: TempDir,
    pub coordinator: Proc,
    pub addr: String,
    pub slaves: Vec<SlaveProc>,
    /// Extra flags every slave started by `add_slave` gets.
    pub slave_args: Vec<String>,
    /// The secret `client()` presents, if any.
    pub secret: Option<Vec<u8>>,
}

impl Cluster {
    /// Starts a coordinator and `n` slaves, and waits until all are in the ring.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with(n, &[])
    }

    /// [`Cluster::start`] with extra flags for the coordinator and for every slave.
    pub fn start_secure(n: usize, coordinator: &[&str], slaves: &[&str], secret: &[u8]) -> Cluster {
        let mut cluster = Cluster::start_with(0, coordinator);
        cluster.slave_args = strings(slaves);
        cluster.secret = Some(secret.to_vec());
        for _ in 0..n {
            cluster.add_slave();
        }
        cluster
    }

    /// [`Cluster::start`] with extra flags for the coordinator.
    pub fn start_with(n: usize, extra: &[&str]) -> Cluster {
        let dir = TempDir::new("cluster");
        let mut args = strings(extra);
        args.extend(strings(&[
            "--listen",
            "127.0.0.1:0",
            "--heartbeat",
            "127.0.0.1:0",
            "--data-dir",
            &dir.path().join("coordinator").display().to_string(),
            "--heartbeat-interval-ms",
            &HEARTBEAT_MS.to_string(),
            "--failure-timeout-ms",
            &FAILURE_MS.to_string(),
            "--slave-timeout-ms",
            "2000",
        ]));
        let mut coordinator = Proc::start(bin("coordinator"), &args);
        let addr = coordinator.wait_line("listening on ");
        let mut cluster = Cluster {
            dir,
            coordinator,
            addr,
            slaves: Vec::new(),
            slave_args: Vec::new(),
            secret: None,
        };
        for _ in 0..n {
            cluster.add_slave();
        }
        cluster
    }

    /// Starts one more slave and waits until the coordinator lists it.
    pub fn add_slave(&mut self) -> usize {
        let index = self.slaves.len();
        let mut args = self.slave_args.clone();
        args.extend(strings(&[
            "--listen",
            "127.0.0.1:0",
            "--coordinator",
            &self.addr,
            "--data-dir",
            &self
                .dir
                .path()
                .join(format!("slave-{index}"))
                .display()
                .to_string(),
            "--heartbeat-interval-ms",
            &HEARTBEAT_MS.to_string(),
        ]));
        let mut proc = Proc::start(bin("slave"), &args);
        let addr = proc.wait_line("listening on ");
        self.slaves.push(SlaveProc {
            proc,
            addr: addr.clone(),
        });
        wait_until(DEADLINE, &format!("slave {addr} alive in the ring"), || {
            self.status()
                .slaves
                .iter()
                .any(|s| s.addr == addr && s.state == "alive")
        });
        index
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
        }
    }

    pub fn client(&self) -> Client {
        let mut client = Client::connect(&self.addr).expect("connect to the coordinator");
        if let Some(secret) = &self.secret {
            client.auth(secret).expect("auth");
        }
        client
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
        let status = self.status();
        let mut ring: Vec<(u64, String)> = status
            .slaves
            .iter()
            .filter(|s| s.state == "alive" || s.state == "unreachable")
            .map(|s| {
                let token = u64::from_str_radix(s.token.trim_start_matches("0x"), 16)
                    .expect("token is hex");
                (token, s.addr.clone())
            })
            .collect();
        ring.sort();
        let hash = piazza::ring::key_hash(key);
        let index = ring.iter().position(|(t, _)| *t >= hash).unwrap_or(0);
        let primary = ring[index].1.clone();
        let replica = (ring.len() > 1).then(|| ring[(index + 1) % ring.len()].1.clone());
        (primary, replica)
    }
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
    /// its primary (own) and replica (previous), and that the live slaves hold exactly
    /// two copies of each live key in all (no stray copies left behind).
    pub fn assert_two_copies(
        &self,
        expected: &std::collections::HashMap<Vec<u8>, Option<Vec<u8>>>,
    ) {
        use piazza::wire::TableSel;
        let live = self.live_addrs();
        assert!(live.len() >= 2, "two copies need two slaves: {live:?}");
        let mut clients: std::collections::HashMap<String, Client> = live
            .iter()
            .map(|addr| (addr.clone(), Client::connect(addr).unwrap()))
            .collect();
        for (key, value) in expected {
            let (primary, replica) = self.placement(key);
            let replica = replica.unwrap();
            let own = clients
                .get_mut(&primary)
                .unwrap()
                .slave_get(TableSel::Own, key)
                .unwrap();
            let previous = clients
                .get_mut(&replica)
                .unwrap()
                .slave_get(TableSel::Previous, key)
                .unwrap();
            assert_eq!(
                own.map(|v| v.value),
                *value,
                "primary {primary} own of {key:?}"
            );
            assert_eq!(
                previous.map(|v| v.value),
                *value,
                "replica {replica} previous of {key:?}"
            );
        }
        let live_keys = expected.values().filter(|v| v.is_some()).count() as u64;
        let (mut own, mut previous) = (0, 0);
        for client in clients.values_mut() {
            let counts = client.slave_stats().unwrap();
            own += counts.own_live;
            previous += counts.previous_live;
        }
        assert_eq!(
            (own, previous),
            (live_keys, live_keys),
            "live copies in own and previous"
        );
    }
}
