//! Test harness: starts the real binaries on ephemeral loopback ports, reads the
//! addresses they bound from their `listening on` lines, and kills (SIGKILL) and cleans up
//! everything in `Drop`. Waits poll a condition under a deadline; nothing sleeps blindly.
#![allow(dead_code)] // each test file uses a different part of the harness

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod cluster;
mod writers;

// Each test file uses a different part of the harness.
#[allow(unused_imports)]
pub use cluster::{Cluster, SlaveProc, direct_client, wait_direct_ready};
#[allow(unused_imports)]
pub use writers::{Writers, Written};

/// Heartbeat interval the tests run with.
pub const HEARTBEAT_MS: u64 = 100;
/// Failure timeout the tests run with. Generous on purpose: on a loaded machine (CI, or
/// developers building beside the tests) a process can go unscheduled for well over half
/// a second, and with 600 ms live slaves were declared dead, all at once (the coordinator
/// itself had stalled), and tests that never killed anything failed.
pub const FAILURE_MS: u64 = 1500;
/// How long a wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A raw TCP connection to `addr` for byte-level protocol tests: Nagle off, reads time out
/// after 10 s (a missing reply fails the test instead of hanging it).
pub fn connect(addr: &str) -> TcpStream {
    let stream =
        TcpStream::connect(addr).unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

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

/// Runs `command` to its end and checks that it failed as a start-up error must: exit
/// code 2, no panic. Returns what it wrote to stderr.
pub fn exits_with_2(command: &mut Command) -> String {
    let output = command.output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// Runs `piazza-bench --json` against the coordinator at `addr` with `args`, checks
/// that it succeeded and counted no errors, and returns its JSON line.
pub fn run_bench(addr: &str, args: &[&str]) -> String {
    let output = Command::new(bin("bench"))
        .args(["--coordinator", addr, "--json"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(line.contains("\"errors\":0"), "{args:?}: {line}");
    line
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
