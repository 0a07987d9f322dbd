//! `piazza-bench`: a closed-loop load generator. N connections, one named thread each,
//! send gets and sets as fast as the answers come back, for a duration or an operation
//! count, and record every operation's latency (µs) in a per-thread log-bucket
//! [`Histogram`]; [`run`] merges them into a [`Report`].
//!
//! It speaks Piazza's binary protocol (frames from [`crate::wire`], matched by request
//! id), memcached's text protocol or Redis's RESP (minimal clients in this module), so
//! the same tool measures Piazza's two protocols, a real memcached and Redis. It connects
//! only to the address it is given.
//!
//! Workloads (`--workload`, [`Workload`]): `get-set` (gets and sets, `--get-ratio`),
//! `incr` (incr by 1; `--keys 1` is one hot key), `cas` (a `gets`, then a `cas` with the
//! unique it returned: one operation, counted as stored, as an `EXISTS` conflict or, if
//! the key is gone, as a miss), `set-ttl` (`get-set` whose sets carry an exptime of
//! `--ttl` seconds). `incr` and `cas` write every key before timing (counters at 0).
//! `--multiget N` makes every get ask N keys in one request: text `get k1 … kN`, RESP
//! `MGET`, binary N GET frames back to back (or one MULTI_GET frame with
//! `--multiget-op`); such a get is one operation and N keys in `key_ops` (keys/s).
//!
//! With `--pipeline N` each connection keeps N requests in flight: it writes N requests
//! back to back in one buffered write, then reads the N replies in order (every server
//! spoken to answers one connection's requests in order). Each operation's latency runs
//! from the moment its batch was sent to the moment its own reply was read. N = 1 is the
//! plain closed loop: one request, one reply. Per workload: incr and set-ttl pipeline
//! like gets and sets; a multi-key get is one of the N (binary: N × keys frames in
//! flight); cas cannot send a cas before its gets is answered, so a batch is N gets in one
//! write, then the N cas in a second write (two round trips; gets of the same key in one
//! batch see the same unique, so all but one of their cas conflict). `--direct` sends one
//! request at a time and `--redis-wait` goes with `get-set` only.
//!
//! Threads, all started and joined by [`run`]:
//! - `preload-<i>` (with `--preload`, and for `incr` and `cas`): write keys `i, i+N,
//!   i+2N, …` once, before timing;
//! - `bench-<i>`: one connection and one xorshift64* generator each. They connect, wait at
//!   a [`Barrier`] so that all start together, then loop, one batch of `--pipeline`
//!   operations at a time, until their share of `--ops` is done or `--seconds` have passed.
//!
//! Errors: an operation that fails counts in `errors`. When the connection itself broke
//! (I/O error, closed, a reply that cannot be framed or answers another request) the
//! operation and every later one of its batch count as errors, and the thread connects
//! again, once; if that fails, the thread stops and the reason is kept in
//! [`Report::stopped`]. An error *reply* (`SERVER_ERROR`, a binary error status) leaves a
//! healthy connection, which is kept. A get that finds nothing counts in `misses`, not
//! `errors`.
//!
//! `--verify` works with pipelining: replies are checked in the order they were sent,
//! which is the order the server applied them, so a get that follows a set of the same
//! key in one batch must return that set's value.
//!
//! No lock is held during an operation; the only shared state is the start gate, the
//! barrier and the read-only value bytes.
//!
//! What is where:
//! - `mod.rs` (here): [`run`] (probe, preload, start and join the threads, merge the
//!   figures), [`BenchError`] and the limits;
//! - [`args`]: the flags ([`BenchArgs`]), their checks, and the `Plan` every thread
//!   shares (key choice, zipf, values);
//! - [`histogram`]: the latency [`Histogram`]; [`report`]: the [`Report`] and its text
//!   and `--json` forms;
//! - `worker`: one `bench-<i>` thread's loop (batches, errors, reconnects, `--verify`);
//! - `conn`: the request/reply vocabulary (`Cmd`, `Kind`, `Done`, `OpError`) and `Conn`,
//!   one connection of any protocol; one file per protocol client: `binary` (Piazza's
//!   frames, pipelined), `direct` (direct routing through
//!   [`DirectClient`](crate::direct::DirectClient)), `memcache` (memcached's text
//!   protocol), `resp` (Redis);
//! - [`rng`]: the xorshift64* generator that picks keys and operations.

use std::sync::{Arc, Barrier, RwLock};
use std::thread::{self, JoinHandle};
use std::time::Instant;
use std::{fmt, io};

pub mod args;
mod binary;
mod conn;
mod direct;
pub mod histogram;
mod memcache;
pub mod report;
mod resp;
pub use crate::rng;
#[cfg(test)]
mod testkit;
mod worker;

pub use args::{BenchArgs, Protocol, UsageError, Workload};
pub use histogram::Histogram;
pub use report::Report;

use args::{Plan, format_key};
use conn::Conn;
use worker::{Outcome, load};

/// Most connections (threads) one run may ask for.
pub const MAX_CONNECTIONS: u64 = 4096;
/// Most requests one connection may keep in flight (`--pipeline`). A batch is written
/// whole before its replies are read, so the replies must fit in the socket buffers;
/// a write timeout ends the run with an error instead of a hang if they do not.
pub const MAX_PIPELINE: u64 = 1024;
/// Most keys one get may ask for (`--multiget`).
pub const MAX_MULTIGET: u64 = 100;
/// Largest `--value-size` accepted (64 MiB; servers usually refuse far less).
pub const MAX_VALUE_SIZE: usize = 64 << 20;

/// Why a run could not be made.
#[derive(Debug)]
pub enum BenchError {
    /// The flags do not go together; the message says how to fix them.
    Usage(UsageError),
    /// The target could not be reached, or did not answer, at the start. The message
    /// names the address.
    Unreachable(String),
    /// `--preload` could not write a key.
    Preload(String),
    /// A thread could not start.
    Thread(io::Error),
    /// Every connection gave up before any operation succeeded.
    NothingDone(String),
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Usage(e) => write!(f, "{e}"),
            BenchError::Unreachable(why) => f.write_str(why),
            BenchError::Preload(why) => write!(f, "preload failed: {why}"),
            BenchError::Thread(e) => write!(f, "cannot start a load thread: {e}"),
            BenchError::NothingDone(why) => {
                write!(f, "every connection gave up, no operation done: {why}")
            }
        }
    }
}

impl std::error::Error for BenchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BenchError::Usage(e) => Some(e),
            BenchError::Thread(e) => Some(e),
            _ => None,
        }
    }
}

/// Runs the benchmark described by `args`: checks the target answers, preloads if asked,
/// then runs the timed load and merges the threads' figures.
///
/// # Errors
/// [`BenchError::Usage`] when the flags do not go together (a workload the protocol
/// does not speak, `--multiget` with `--verify`, …);
/// [`BenchError::Unreachable`] when the target cannot be reached or does not answer at
/// the start; [`BenchError::Preload`] when a preload write fails; [`BenchError::Thread`]
/// when a thread cannot start; [`BenchError::NothingDone`] when every connection gave up
/// without a single successful operation.
pub fn run(args: &BenchArgs) -> Result<Report, BenchError> {
    args.check().map_err(BenchError::Usage)?;
    let plan = Arc::new(Plan::from_args(args));
    // Fail fast, naming the address, if nothing answers there.
    let mut probe = Conn::open(plan.protocol, &plan.addr)
        .map_err(|e| BenchError::Unreachable(e.to_string()))?;
    probe.check().map_err(|e| {
        BenchError::Unreachable(format!(
            "{} does not answer the {} protocol: {e}",
            plan.addr, plan.protocol
        ))
    })?;
    drop(probe);
    if plan.preloaded {
        preload(&plan, args.connections)?;
    }

    let connections = args.connections;
    let barrier = Arc::new(Barrier::new(connections as usize + 1));
    // Held for writing while threads are spawned: a thread first takes it for reading, so
    // it waits until every thread exists (then all of them reach the barrier) or learns
    // that a spawn failed (`true`) and leaves without touching the barrier.
    let gate = Arc::new(RwLock::new(false));
    let mut gate_guard = gate
        .write()
        .expect("nothing can poison a lock not yet shared");
    let mut threads: Vec<JoinHandle<Outcome>> = Vec::new();
    for index in 0..connections {
        let budget = args
            .ops
            .map(|ops| ops / connections + u64::from(index < ops % connections));
        let (plan, barrier, gate) = (Arc::clone(&plan), Arc::clone(&barrier), Arc::clone(&gate));
        let spawned = thread::Builder::new()
            .name(format!("bench-{index}"))
            .spawn(move || {
                let aborted = gate.read().map(|flag| *flag).unwrap_or(true);
                if aborted {
                    return Outcome::default();
                }
                load(&plan, index, budget, &barrier)
            });
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                *gate_guard = true;
                drop(gate_guard);
                for thread in threads {
                    let _ = thread.join();
                }
                return Err(BenchError::Thread(e));
            }
        }
    }
    drop(gate_guard);
    barrier.wait();
    let started = Instant::now();

    let mut histogram = Histogram::new();
    let (mut ops, mut errors, mut misses, mut wrong) = (0, 0, 0, 0);
    let (mut key_ops, mut cas_stored, mut cas_exists) = (0, 0, 0);
    let mut stopped = Vec::new();
    for (index, thread) in threads.into_iter().enumerate() {
        match thread.join() {
            Ok(outcome) => {
                histogram.merge(&outcome.histogram);
                ops += outcome.ops;
                errors += outcome.errors;
                misses += outcome.misses;
                wrong += outcome.wrong;
                key_ops += outcome.key_ops;
                cas_stored += outcome.cas_stored;
                cas_exists += outcome.cas_exists;
                if let Some(why) = outcome.stopped {
                    log::warn!("bench-{index} gave up: {why}");
                    stopped.push(format!("bench-{index}: {why}"));
                }
            }
            Err(_) => stopped.push(format!("bench-{index}: the thread panicked")),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if ops == 0 && stopped.len() as u64 == connections {
        return Err(BenchError::NothingDone(stopped.swap_remove(0)));
    }
    Ok(Report {
        protocol: plan.protocol,
        target: plan.addr.clone(),
        connections,
        pipeline: args.pipeline,
        seconds,
        ops,
        errors,
        misses,
        wrong,
        p50_us: histogram.percentile(50.0),
        p99_us: histogram.percentile(99.0),
        p999_us: histogram.percentile(99.9),
        max_us: histogram.max(),
        get_ratio: args.get_ratio,
        value_size: args.value_size,
        keys: args.keys,
        workload: args.workload,
        multiget: args.multiget,
        multiget_op: args.multiget_op,
        ttl: args.ttl,
        key_ops,
        cas_stored,
        cas_exists,
        stopped,
    })
}

/// Writes every key once, `connections` threads each taking every N-th key.
fn preload(plan: &Arc<Plan>, connections: u64) -> Result<(), BenchError> {
    let mut threads = Vec::new();
    let mut spawn_error = None;
    for index in 0..connections.min(plan.n_keys) {
        let plan = Arc::clone(plan);
        let spawned = thread::Builder::new()
            .name(format!("preload-{index}"))
            .spawn(move || -> Result<(), String> {
                let mut conn = Conn::open(plan.protocol, &plan.addr).map_err(|e| e.to_string())?;
                let mut key = Vec::with_capacity(24);
                let mut n = index;
                while n < plan.n_keys {
                    format_key(&mut key, n);
                    conn.set(&key, plan.initial_value())
                        .map_err(|e| format!("set key:{n}: {e}"))?;
                    n += connections;
                }
                Ok(())
            });
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                spawn_error = Some(e);
                break;
            }
        }
    }
    let mut first_error = None;
    for thread in threads {
        let result = thread
            .join()
            .unwrap_or_else(|_| Err("a preload thread panicked".into()));
        if let Err(why) = result {
            first_error.get_or_insert(why);
        }
    }
    match (spawn_error, first_error) {
        (Some(e), _) => Err(BenchError::Thread(e)),
        (None, Some(why)) => Err(BenchError::Preload(why)),
        (None, None) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argh::FromArgs;

    use crate::bench::testkit::memcache_server;

    #[test]
    fn unreachable_target_fails_fast_naming_the_address() {
        // Bind then drop a listener: the port is very likely closed right after.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .to_string();
        for protocol in ["binary", "memcache"] {
            let args = BenchArgs::from_args(
                &["piazza-bench"],
                &["--coordinator", &addr, "--protocol", protocol],
            )
            .expect("valid flags");
            let message = run(&args).expect_err("nothing listens there").to_string();
            assert!(message.contains(&addr), "{message}");
            assert!(!message.contains('\n'), "{message}");
        }
    }

    #[test]
    fn pipelined_run_verifies_reads_in_order() {
        let flags = |addr: &str| -> BenchArgs {
            BenchArgs::from_args(
                &["piazza-bench"],
                &[
                    "--coordinator",
                    addr,
                    "--protocol",
                    "memcache",
                    "--pipeline",
                    "8",
                    "--verify",
                    "--get-ratio",
                    "0.5",
                    "--keys",
                    "40",
                    "--connections",
                    "2",
                    "--ops",
                    "3001",
                ],
            )
            .unwrap()
        };
        // The probe, then two connections.
        let (addr, server) = memcache_server(3, false);
        let report = run(&flags(&addr)).unwrap();
        server.join().unwrap();
        assert_eq!(report.pipeline, 8);
        assert_eq!((report.ops, report.errors, report.wrong), (3001, 0, 0));
        assert!(report.misses > 0, "keys are not preloaded: early gets miss");
        assert!(report.json().contains("\"pipeline\":8,"));
        assert!(report.human().contains("2 connections, pipeline 8,"));
        // A server that keeps the first value of every key: verify sees it.
        let (addr, server) = memcache_server(3, true);
        let report = run(&flags(&addr)).unwrap();
        server.join().unwrap();
        assert!(report.wrong > 0, "stale reads must be caught");
    }
}
