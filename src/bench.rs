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
//! With `--pipeline N` each connection keeps N requests in flight: it writes N requests
//! back to back in one buffered write, then reads the N replies in order (every server
//! spoken to answers one connection's requests in order). Each operation's latency runs
//! from the moment its batch was sent to the moment its own reply was read. N = 1 is the
//! plain closed loop: one request, one reply.
//!
//! Threads, all started and joined by [`run`]:
//! - `preload-<i>` (with `--preload`): write keys `i, i+N, i+2N, …` once, before timing;
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

use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Barrier, RwLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use argh::FromArgs;

use crate::client::{CONNECT_TIMEOUT, ClientError, REQUEST_TIMEOUT};
use crate::config::DEFAULT_COORDINATOR;
use crate::direct::DirectClient;
use crate::wire::{self, Frame, Opcode, Status, WireError, WireLimits};

/// Most connections (threads) one run may ask for.
pub const MAX_CONNECTIONS: u64 = 4096;
/// Most requests one connection may keep in flight (`--pipeline`). A batch is written
/// whole before its replies are read, so the replies must fit in the socket buffers;
/// a write timeout ends the run with an error instead of a hang if they do not.
pub const MAX_PIPELINE: u64 = 1024;
/// Largest `--value-size` accepted (64 MiB; servers usually refuse far less).
pub const MAX_VALUE_SIZE: usize = 64 << 20;
/// Largest data block accepted in a memcached `VALUE` reply.
const MAX_TEXT_VALUE: usize = 128 << 20;
/// Longest memcached reply line read (a `VALUE` line with a 250-byte key fits easily).
const MAX_TEXT_LINE: u64 = 1024;
/// How long the start-up check waits for an answer: a server that speaks another
/// protocol may say nothing at all, and a bad flag should not cost the full request timeout.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// piazza-bench: closed-loop load generator. Runs N connections against a Piazza
/// coordinator (or any memcached, with --protocol memcache) and prints ops/s and latency
/// percentiles (p50, p99, p99.9, max).
#[derive(FromArgs, Debug, Clone, PartialEq)]
pub struct BenchArgs {
    /// address to load, HOST:PORT (default 127.0.0.1:7400)
    #[argh(option, default = "DEFAULT_COORDINATOR.into()")]
    pub coordinator: String,
    /// concurrent connections, one thread each (default 8)
    #[argh(option, default = "8", from_str_fn(parse_connections))]
    pub connections: u64,
    /// requests each connection keeps in flight: it writes N requests back to back, then
    /// reads their N replies in order; latency counts from the batch's send (default 1,
    /// at most 1024)
    #[argh(option, default = "1", from_str_fn(parse_pipeline))]
    pub pipeline: u64,
    /// how long to run, in seconds (default 10; --ops overrides it)
    #[argh(option, default = "10", from_str_fn(parse_positive))]
    pub seconds: u64,
    /// total operations across all connections (instead of --seconds)
    #[argh(option, from_str_fn(parse_positive))]
    pub ops: Option<u64>,
    /// number of distinct keys, key:0 to key:N-1 (default 10000)
    #[argh(option, default = "10000", from_str_fn(parse_positive))]
    pub keys: u64,
    /// value size in bytes (default 100)
    #[argh(option, default = "100", from_str_fn(parse_value_size))]
    pub value_size: usize,
    /// share of gets, from 0 to 1; the rest are sets (default 0.9)
    #[argh(option, default = "0.9", from_str_fn(parse_ratio))]
    pub get_ratio: f64,
    /// binary (Piazza's protocol) or memcache (text; works against memcached too)
    /// (default binary)
    #[argh(option, default = "Protocol::Binary", from_str_fn(parse_protocol))]
    pub protocol: Protocol,
    /// write every key once before the timed run, spread over the connections
    #[argh(switch)]
    pub preload: bool,
    /// seed of the key and operation choice: the same seed gives the same sequence
    /// (default 1)
    #[argh(option, default = "1")]
    pub seed: u64,
    /// zipfian key choice with this exponent (e.g. 0.99: a few keys get most of the
    /// load); 0 is uniform (default 0)
    #[argh(option, default = "0.0", from_str_fn(parse_zipf))]
    pub zipf: f64,
    /// with --protocol resp: send `WAIT 1 0` after every SET, so a SET counts only once a
    /// replica has it (Redis's way of acknowledging two copies); with --pipeline, one
    /// `WAIT 1 0` after each batch that holds a SET, and its SETs count when it answers
    #[argh(switch)]
    pub redis_wait: bool,
    /// with the binary protocol: direct routing (fetch the ring from the coordinator and
    /// send each request to the key's primary slave; see protocol.md, "Direct routing")
    #[argh(switch)]
    pub direct: bool,
    /// check every read: each connection owns its own slice of the keys, writes values
    /// it can recognise, and counts any get that does not return what it last stored
    #[argh(switch)]
    pub verify: bool,
    /// print one JSON line with the figures instead of text
    #[argh(switch)]
    pub json: bool,
}

fn parse_zipf(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(s) if (0.0..=10.0).contains(&s) => Ok(s),
        _ => Err(format!("'{value}' is not an exponent from 0 to 10")),
    }
}

fn parse_positive(value: &str) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(0) => Err("must be greater than 0".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("'{value}' is not a whole number")),
    }
}

fn parse_connections(value: &str) -> Result<u64, String> {
    match parse_positive(value)? {
        n if n > MAX_CONNECTIONS => Err(format!("at most {MAX_CONNECTIONS} connections")),
        n => Ok(n),
    }
}

fn parse_pipeline(value: &str) -> Result<u64, String> {
    match parse_positive(value)? {
        n if n > MAX_PIPELINE => Err(format!("at most {MAX_PIPELINE} requests in flight")),
        n => Ok(n),
    }
}

fn parse_value_size(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if n <= MAX_VALUE_SIZE => Ok(n),
        Ok(_) => Err(format!("at most {MAX_VALUE_SIZE} bytes")),
        Err(_) => Err(format!("'{value}' is not a whole number")),
    }
}

fn parse_ratio(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("'{value}' is not a number from 0 to 1")),
    }
}

fn parse_protocol(value: &str) -> Result<Protocol, String> {
    match value {
        "binary" => Ok(Protocol::Binary),
        "memcache" | "memcached" | "text" => Ok(Protocol::Memcache),
        "resp" | "redis" => Ok(Protocol::Resp),
        other => Err(format!(
            "unknown protocol '{other}' (use binary, memcache or resp)"
        )),
    }
}

/// Which protocol to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Piazza's binary frames (see [`crate::wire`]), matched by request id.
    Binary,
    /// memcached's text protocol (`set` and `get`).
    Memcache,
    /// Redis's protocol (`SET`, `GET`; with `--redis-wait`, `WAIT 1 0` after each SET).
    Resp,
    /// Piazza's binary frames with direct routing (`--direct`), one request at a time.
    Direct,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Binary => "binary",
            Protocol::Memcache => "memcache",
            Protocol::Resp => "resp",
            Protocol::Direct => "direct",
        })
    }
}

/// Why a run could not be made.
#[derive(Debug)]
pub enum BenchError {
    /// The flags do not go together; the message says how to fix them.
    Usage(String),
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
            BenchError::Usage(why) | BenchError::Unreachable(why) => f.write_str(why),
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
            BenchError::Thread(e) => Some(e),
            _ => None,
        }
    }
}

/// Sub-buckets per power of two: a bucket is at most 1/16 (6.25%) of its values wide.
const SUB_BUCKETS: u64 = 16;
/// Buckets enough for every u64 (the last power of two is 2^63).
const BUCKETS: usize = (64 - 3) * SUB_BUCKETS as usize;

/// A latency histogram in the manner of HdrHistogram, std only: values below 16 are
/// counted exactly; above, each power of two is split into 16 buckets by the 4 bits after
/// the leading one, so a reported value is within 6.25% of the true one. It covers every
/// `u64` (in µs, far beyond 60 s) in 976 counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram::default()
    }

    /// The bucket of `value`.
    fn index(value: u64) -> usize {
        if value < SUB_BUCKETS {
            return value as usize;
        }
        let exponent = 63 - u64::from(value.leading_zeros()); // 4 ..= 63
        let sub = (value >> (exponent - 4)) & (SUB_BUCKETS - 1);
        ((exponent - 3) * SUB_BUCKETS + sub) as usize
    }

    /// The smallest value that falls in bucket `index`.
    fn lowest(index: usize) -> u64 {
        let index = index as u64;
        if index < SUB_BUCKETS {
            return index;
        }
        let exponent = index / SUB_BUCKETS + 3;
        let sub = index % SUB_BUCKETS;
        (SUB_BUCKETS + sub) << (exponent - 4)
    }

    /// The largest value that falls in bucket `index`.
    fn highest(index: usize) -> u64 {
        if index + 1 >= BUCKETS {
            u64::MAX
        } else {
            Histogram::lowest(index + 1) - 1
        }
    }

    /// Counts one value.
    pub fn record(&mut self, value: u64) {
        self.counts[Histogram::index(value)] += 1;
        self.total += 1;
        self.max = self.max.max(value);
    }

    /// Adds another histogram's counts to this one.
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// How many values were counted.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest value counted, exactly (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value that `percentile` % (0 to 100) of the counted values do not exceed: the
    /// top of the bucket holding that rank, capped at the maximum, so it errs high by at
    /// most 6.25%. 0 when empty.
    pub fn percentile(&self, percentile: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let wanted = (percentile.clamp(0.0, 100.0) / 100.0 * self.total as f64).ceil();
        let rank = (wanted as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Histogram::highest(index).min(self.max);
            }
        }
        self.max
    }
}

/// The figures of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Protocol spoken.
    pub protocol: Protocol,
    /// Address loaded.
    pub target: String,
    /// Connections asked for.
    pub connections: u64,
    /// Requests each connection kept in flight.
    pub pipeline: u64,
    /// Seconds the timed part took (from the common start to the last thread's end).
    pub seconds: f64,
    /// With --verify: gets that returned something else than what was last stored.
    pub wrong: u64,
    /// Operations that succeeded (hits, misses and sets).
    pub ops: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Gets that found nothing.
    pub misses: u64,
    /// Median latency, µs.
    pub p50_us: u64,
    /// 99th percentile latency, µs.
    pub p99_us: u64,
    /// 99.9th percentile latency, µs.
    pub p999_us: u64,
    /// Largest latency, µs.
    pub max_us: u64,
    /// Share of gets asked for.
    pub get_ratio: f64,
    /// Value size in bytes.
    pub value_size: usize,
    /// Key space.
    pub keys: u64,
    /// Why each connection that gave up early did so (`bench-<i>: reason`); empty when
    /// every connection ran to the end.
    pub stopped: Vec<String>,
}

impl Report {
    /// Successful operations per second.
    pub fn ops_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ops as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// The report as text for a person: three lines, and a fourth naming the
    /// connections that gave up, if any.
    pub fn human(&self) -> String {
        let mut text = format!(
            "piazza-bench: {} protocol, {}, {} connections, pipeline {}, {:.1} s, {} keys, {}-byte values, {:.0}% gets\n\
             ops: {} ({:.0} ops/s)  errors: {}  misses: {}  wrong: {}\n\
             latency us: p50 {}  p99 {}  p99.9 {}  max {}\n",
            self.protocol,
            self.target,
            self.connections,
            self.pipeline,
            self.seconds,
            self.keys,
            self.value_size,
            self.get_ratio * 100.0,
            self.ops,
            self.ops_per_sec(),
            self.errors,
            self.misses,
            self.wrong,
            self.p50_us,
            self.p99_us,
            self.p999_us,
            self.max_us
        );
        if let Some(first) = self.stopped.first() {
            text.push_str(&format!(
                "stopped early: {} of {} connections ({first})\n",
                self.stopped.len(),
                self.connections
            ));
        }
        text
    }

    /// The figures as one JSON object on one line (no newline). Every value is a number
    /// except `protocol`, whose text never needs escaping.
    pub fn json(&self) -> String {
        format!(
            "{{\"protocol\":\"{}\",\"connections\":{},\"pipeline\":{},\"seconds\":{:.3},\"ops\":{},\"ops_per_sec\":{:.1},\"errors\":{},\"misses\":{},\"wrong\":{},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"get_ratio\":{},\"value_size\":{},\"keys\":{}}}",
            self.protocol,
            self.connections,
            self.pipeline,
            self.seconds,
            self.ops,
            self.ops_per_sec(),
            self.errors,
            self.misses,
            self.wrong,
            self.p50_us,
            self.p99_us,
            self.p999_us,
            self.max_us,
            self.get_ratio,
            self.value_size,
            self.keys
        )
    }
}

/// Runs the benchmark described by `args`: checks the target answers, preloads if asked,
/// then runs the timed load and merges the threads' figures.
///
/// # Errors
/// [`BenchError::Unreachable`] when the target cannot be reached or does not answer at
/// the start; [`BenchError::Preload`] when a preload write fails; [`BenchError::Thread`]
/// when a thread cannot start; [`BenchError::NothingDone`] when every connection gave up
/// without a single successful operation.
pub fn run(args: &BenchArgs) -> Result<Report, BenchError> {
    if args.direct && (args.protocol != Protocol::Binary || args.pipeline > 1) {
        return Err(BenchError::Usage(
            "--direct needs --protocol binary and --pipeline 1 (a direct client sends one request at a time)"
                .into(),
        ));
    }
    let plan = Arc::new(Plan::from_args(args));
    // Fail fast, naming the address, if nothing answers there.
    let mut probe = Conn::open(plan.protocol, &plan.addr).map_err(BenchError::Unreachable)?;
    probe.check().map_err(|e| {
        BenchError::Unreachable(format!(
            "{} does not answer the {} protocol: {e}",
            plan.addr, plan.protocol
        ))
    })?;
    drop(probe);
    if args.preload {
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
    let mut stopped = Vec::new();
    for (index, thread) in threads.into_iter().enumerate() {
        match thread.join() {
            Ok(outcome) => {
                histogram.merge(&outcome.histogram);
                ops += outcome.ops;
                errors += outcome.errors;
                misses += outcome.misses;
                wrong += outcome.wrong;
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
        stopped,
    })
}

/// What every thread needs, shared read-only.
struct Plan {
    protocol: Protocol,
    addr: String,
    n_keys: u64,
    get_ratio: f64,
    seed: u64,
    /// `None` when the run is bounded by an operation count instead.
    duration: Option<Duration>,
    value: Vec<u8>,
    /// Cumulative probabilities of key ranks, for `--zipf`; `None`: uniform.
    zipf: Option<Vec<f64>>,
    verify: bool,
    preloaded: bool,
    connections: u64,
    redis_wait: bool,
    /// Requests in flight per connection (`--pipeline`).
    pipeline: usize,
}

impl Plan {
    fn from_args(args: &BenchArgs) -> Plan {
        Plan {
            protocol: if args.direct {
                Protocol::Direct
            } else {
                args.protocol
            },
            addr: args.coordinator.clone(),
            n_keys: args.keys,
            get_ratio: args.get_ratio,
            seed: args.seed,
            duration: match args.ops {
                Some(_) => None,
                None => Some(Duration::from_secs(args.seconds)),
            },
            value: value_pattern(args.value_size),
            zipf: (args.zipf > 0.0).then(|| zipf_cdf(args.keys, args.zipf)),
            verify: args.verify,
            preloaded: args.preload,
            connections: args.connections,
            redis_wait: args.redis_wait,
            // At most MAX_PIPELINE (checked when parsing), so it fits any usize.
            pipeline: usize::try_from(args.pipeline).unwrap_or(1).max(1),
        }
    }

    /// The next key number for connection `index`: zipfian or uniform, and with
    /// `--verify` only from the connection's own slice (n % connections == index).
    fn pick(&self, rng: &mut Rng, index: u64) -> u64 {
        let n = match &self.zipf {
            Some(cdf) => {
                let u = rng.unit();
                cdf.partition_point(|&p| p < u) as u64
            }
            None => rng.below(self.n_keys),
        }
        .min(self.n_keys - 1);
        if !self.verify {
            return n;
        }
        let slice = (self.n_keys / self.connections).max(1);
        (n % slice) * self.connections + index
    }
}

/// Cumulative zipfian probabilities of ranks 0..n with exponent `s` (rank r has weight
/// 1 / (r + 1)^s).
fn zipf_cdf(n: u64, s: f64) -> Vec<f64> {
    let weights: Vec<f64> = (0..n).map(|r| 1.0 / ((r + 1) as f64).powf(s)).collect();
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    weights
        .iter()
        .map(|w| {
            acc += w / total;
            acc
        })
        .collect()
}

/// The value every set writes: `abc…z` repeated, `size` bytes.
fn value_pattern(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Writes `key:<n>` into `buf`, replacing what was there.
fn format_key(buf: &mut Vec<u8>, n: u64) {
    buf.clear();
    write!(buf, "key:{n}").expect("writing to a Vec cannot fail");
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
                let mut conn = Conn::open(plan.protocol, &plan.addr)?;
                let mut key = Vec::with_capacity(24);
                let mut n = index;
                while n < plan.n_keys {
                    format_key(&mut key, n);
                    conn.set(&key, &plan.value)
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

/// What one `bench-<i>` thread did.
#[derive(Default)]
struct Outcome {
    histogram: Histogram,
    ops: u64,
    errors: u64,
    misses: u64,
    wrong: u64,
    /// Why the thread stopped before the end, if it did.
    stopped: Option<String>,
}

/// One operation of a batch; the slots of a batch are reused from batch to batch.
struct Op {
    /// Key number.
    n: u64,
    /// `key:<n>`.
    key: Vec<u8>,
    kind: Kind,
    /// With `--verify`, what a set writes; `None`: the shared value pattern.
    value: Option<Vec<u8>>,
}

impl Op {
    fn new() -> Op {
        Op {
            n: 0,
            key: Vec::with_capacity(24),
            kind: Kind::Get,
            value: None,
        }
    }

    /// The request to send, `pattern` being the value of an ordinary set.
    fn cmd<'a>(&'a self, pattern: &'a [u8]) -> Cmd<'a> {
        match self.kind {
            Kind::Get => Cmd::Get(&self.key),
            Kind::Set => Cmd::Set(&self.key, self.value.as_deref().unwrap_or(pattern)),
        }
    }
}

/// One connection's thread: its connection, its figures and, with `--verify`, what each
/// of its keys holds.
struct Worker<'a> {
    plan: &'a Plan,
    conn: Conn,
    outcome: Outcome,
    /// With --verify: what each of our keys holds (None: unknown after a failed set).
    expected: HashMap<u64, Option<Vec<u8>>>,
    /// The value a verified get returned.
    got: Vec<u8>,
}

impl Worker<'_> {
    /// Counts a failed set as making its key's content unknown (with `--verify`): it may or
    /// may not have been applied.
    fn forget(&mut self, op: &Op) {
        if self.plan.verify && op.kind == Kind::Set {
            self.expected.insert(op.n, None);
        }
    }

    /// Checks a get's answer against what was last stored (with `--verify`), or records
    /// what a set stored.
    fn check(&mut self, op: &Op, done: Done) {
        if !self.plan.verify {
            return;
        }
        match op.kind {
            Kind::Set => {
                self.expected.insert(op.n, op.value.clone());
            }
            Kind::Get => {
                let plan = self.plan;
                let want = self
                    .expected
                    .entry(op.n)
                    .or_insert_with(|| plan.preloaded.then(|| plan.value.clone()));
                let same = match want {
                    Some(want) => done == Done::Hit && self.got == *want,
                    None => true, // unknown since a failed set
                };
                if !same {
                    self.outcome.wrong += 1;
                    log::warn!("verify: key:{} does not hold what was last stored", op.n);
                }
            }
        }
    }

    /// Counts one successful operation that took `micros`.
    fn succeeded(&mut self, done: Done, micros: u64) {
        self.outcome.histogram.record(micros);
        self.outcome.ops += 1;
        self.outcome.misses += u64::from(done == Done::Miss);
    }

    /// Replaces a broken connection; `false` (and the reason kept) when that fails too.
    fn reconnect(&mut self, why: &str) -> bool {
        log::debug!("connection broke ({why}); connecting again");
        match Conn::open(self.plan.protocol, &self.plan.addr)
            .map(|c| c.with_wait(self.plan.redis_wait))
        {
            Ok(fresh) => {
                self.conn = fresh;
                true
            }
            Err(again) => {
                self.outcome.stopped = Some(format!("{why}; then {again}"));
                false
            }
        }
    }

    /// Sends `ops` in one write and reads their replies in order. Returns why the
    /// connection broke, if it did (every operation not answered by then is an error).
    fn exchange(&mut self, ops: &[Op], waiting: &mut Vec<usize>) -> Option<String> {
        let plan = self.plan;
        let sent = Instant::now();
        let queued = ops
            .iter()
            .try_for_each(|op| self.conn.queue(op.cmd(&plan.value)))
            .and_then(|()| self.conn.flush());
        let wait = match queued {
            Ok(wait) => wait,
            Err(e) => {
                // Nothing can be read back in step: the whole batch failed.
                self.outcome.errors += ops.len() as u64;
                ops.iter().for_each(|op| self.forget(op));
                return match e {
                    OpError::Broken(why) => Some(why),
                    OpError::Reply(why) => Some(format!("cannot send: {why}")),
                };
            }
        };
        waiting.clear();
        for (i, op) in ops.iter().enumerate() {
            let out = (plan.verify && op.kind == Kind::Get).then_some(&mut self.got);
            match self.conn.recv(op.kind, out) {
                Ok(done) => {
                    self.check(op, done);
                    if wait && op.kind == Kind::Set {
                        // Counts once the WAIT after the batch says a replica has it.
                        waiting.push(i);
                    } else {
                        self.succeeded(done, micros_since(sent));
                    }
                }
                Err(OpError::Reply(why)) => {
                    self.outcome.errors += 1;
                    self.forget(op);
                    log::debug!("error reply: {why}");
                }
                Err(OpError::Broken(why)) => {
                    let lost = &ops[i..];
                    self.outcome.errors += (lost.len() + waiting.len()) as u64;
                    lost.iter().for_each(|op| self.forget(op));
                    waiting.iter().for_each(|&w| self.forget(&ops[w]));
                    return Some(why);
                }
            }
        }
        if !wait {
            return None;
        }
        let waited = self.conn.recv_wait();
        let micros = micros_since(sent);
        match waited {
            Ok(()) => {
                for _ in 0..waiting.len() {
                    self.succeeded(Done::Stored, micros);
                }
                None
            }
            Err(e) => {
                self.outcome.errors += waiting.len() as u64;
                waiting.iter().for_each(|&w| self.forget(&ops[w]));
                match e {
                    OpError::Reply(why) => {
                        log::debug!("WAIT error reply: {why}");
                        None
                    }
                    OpError::Broken(why) => Some(why),
                }
            }
        }
    }
}

/// Microseconds since `since`.
fn micros_since(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// One connection's closed loop: connect, wait for the others, then run batches of
/// `--pipeline` operations until the budget of operations (counting failures) is spent or
/// the duration has passed.
fn load(plan: &Plan, index: u64, budget: Option<u64>, barrier: &Barrier) -> Outcome {
    let conn = Conn::open(plan.protocol, &plan.addr).map(|c| c.with_wait(plan.redis_wait));
    // Every thread reaches the barrier, connected or not, or the others would wait forever.
    barrier.wait();
    let conn = match conn {
        Ok(conn) => conn,
        Err(why) => {
            return Outcome {
                stopped: Some(why),
                ..Outcome::default()
            };
        }
    };
    log::debug!("connected to {}", plan.addr);
    let mut worker = Worker {
        plan,
        conn,
        outcome: Outcome::default(),
        expected: HashMap::new(),
        got: Vec::new(),
    };
    let mut rng = Rng::new(plan.seed, index);
    let started = Instant::now();
    let mut attempts = 0u64;
    let mut batch: Vec<Op> = (0..plan.pipeline).map(|_| Op::new()).collect();
    let mut waiting = Vec::with_capacity(plan.pipeline);
    loop {
        let room = match (budget, plan.duration) {
            (Some(budget), _) => budget.saturating_sub(attempts),
            (None, Some(duration)) if started.elapsed() < duration => u64::MAX,
            _ => 0,
        };
        let size = usize::try_from(room).unwrap_or(usize::MAX).min(batch.len());
        if size == 0 {
            break;
        }
        for op in &mut batch[..size] {
            attempts += 1;
            op.n = plan.pick(&mut rng, index);
            format_key(&mut op.key, op.n);
            op.kind = if rng.unit() < plan.get_ratio {
                Kind::Get
            } else {
                Kind::Set
            };
            op.value = (plan.verify && op.kind == Kind::Set)
                .then(|| verify_value(&plan.value, index, attempts));
        }
        if let Some(why) = worker.exchange(&batch[..size], &mut waiting) {
            if !worker.reconnect(&why) {
                break;
            }
        }
    }
    worker.outcome
}

/// A value connection `index` can recognise: `<index>:<n>:` then the pattern, at least
/// as long as the pattern.
fn verify_value(pattern: &[u8], index: u64, n: u64) -> Vec<u8> {
    let mut value = format!("{index}:{n}:").into_bytes();
    let rest = pattern.len().saturating_sub(value.len());
    value.extend_from_slice(&pattern[..rest]);
    value
}

/// How an operation failed.
#[derive(Debug, PartialEq, Eq)]
enum OpError {
    /// The server answered with an error; the connection is still usable.
    Reply(String),
    /// The connection is broken or out of step; it must be replaced.
    Broken(String),
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpError::Reply(why) | OpError::Broken(why) => f.write_str(why),
        }
    }
}

impl From<ClientError> for OpError {
    fn from(e: ClientError) -> OpError {
        match e {
            ClientError::Server { .. } => OpError::Reply(e.to_string()),
            other => OpError::Broken(other.to_string()),
        }
    }
}

impl From<io::Error> for OpError {
    fn from(e: io::Error) -> OpError {
        OpError::Broken(format!("connection failed: {e}"))
    }
}

/// What an operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Get,
    Set,
}

/// One request, as queued on a connection.
#[derive(Debug, Clone, Copy)]
enum Cmd<'a> {
    /// Key.
    Get(&'a [u8]),
    /// Key and value.
    Set(&'a [u8], &'a [u8]),
}

/// What a successful reply said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    /// A get found the key.
    Hit,
    /// A get found nothing.
    Miss,
    /// A set was stored.
    Stored,
}

/// Buffer size of every bench connection's reader and writer: a batch of requests is
/// written with one flush, and a batch of replies read with few reads.
const CONN_BUFFER: usize = 64 * 1024;

/// One connection of any protocol. Requests are queued ([`Conn::queue`]), sent together
/// ([`Conn::flush`]), and their replies read one by one, in the order sent
/// ([`Conn::recv`]).
enum Conn {
    Binary(FrameConn),
    Memcache(TextConn),
    /// Redis; `true`: `WAIT 1 0` after every batch that holds a SET.
    Resp(TextConn, bool),
    /// Direct routing: requests run one by one when their reply is asked for.
    Direct(Box<DirectConn>),
}

/// A [`DirectClient`] behind the queue/flush/recv interface.
struct DirectConn {
    client: DirectClient,
    queued: std::collections::VecDeque<(Vec<u8>, Option<Vec<u8>>)>,
}

impl DirectConn {
    fn recv(&mut self, kind: Kind, out: Option<&mut Vec<u8>>) -> Result<Done, OpError> {
        let Some((key, value)) = self.queued.pop_front() else {
            return Err(OpError::Broken("no request queued".into()));
        };
        match (kind, value) {
            (Kind::Get, None) => match self.client.get(&key)? {
                Some(found) => {
                    if let Some(out) = out {
                        *out = found.value;
                    }
                    Ok(Done::Hit)
                }
                None => Ok(Done::Miss),
            },
            (Kind::Set, Some(value)) => {
                self.client.put(&key, &value)?;
                Ok(Done::Stored)
            }
            _ => Err(OpError::Broken(
                "reply asked for another kind of request".into(),
            )),
        }
    }
}

impl Conn {
    /// Connects; the error is one line naming the address.
    fn open(protocol: Protocol, addr: &str) -> Result<Conn, String> {
        if protocol == Protocol::Direct {
            let mut client = DirectClient::connect(addr).map_err(|e| e.to_string())?;
            client
                .set_timeout(REQUEST_TIMEOUT)
                .map_err(|e| format!("cannot set up the connection to {addr}: {e}"))?;
            return Ok(Conn::Direct(Box::new(DirectConn {
                client,
                queued: std::collections::VecDeque::new(),
            })));
        }
        let server = match protocol {
            Protocol::Binary | Protocol::Direct => "coordinator",
            Protocol::Memcache | Protocol::Resp => "server",
        };
        let stream = connect(addr).map_err(|e| {
            format!("cannot connect to {addr}: {e} (is the {server} running? try --coordinator)")
        })?;
        let opened = match protocol {
            Protocol::Binary => FrameConn::new(stream).map(Conn::Binary),
            Protocol::Memcache => TextConn::new(stream).map(Conn::Memcache),
            Protocol::Resp => TextConn::new(stream).map(|conn| Conn::Resp(conn, false)),
            Protocol::Direct => return Err("direct connections are opened above".into()),
        };
        opened.map_err(|e| format!("cannot set up the connection to {addr}: {e}"))
    }

    /// With `wait`, a Redis connection sends `WAIT 1 0` after every batch holding a SET.
    fn with_wait(self, wait: bool) -> Conn {
        match self {
            Conn::Resp(conn, _) => Conn::Resp(conn, wait),
            other => other,
        }
    }

    /// Checks within [`PROBE_TIMEOUT`] that the server speaks the protocol: a binary
    /// ping, memcached `version` or Redis `PING`. Meant for a connection used for nothing
    /// else.
    fn check(&mut self) -> Result<(), OpError> {
        match self {
            Conn::Binary(conn) => {
                conn.writer
                    .get_ref()
                    .set_read_timeout(Some(PROBE_TIMEOUT))?;
                conn.ping()
            }
            Conn::Memcache(conn) => {
                conn.writer
                    .get_ref()
                    .set_read_timeout(Some(PROBE_TIMEOUT))?;
                conn.version()
            }
            Conn::Direct(conn) => conn.client.refresh().map_err(OpError::from),
            Conn::Resp(conn, _) => {
                conn.writer
                    .get_ref()
                    .set_read_timeout(Some(PROBE_TIMEOUT))?;
                conn.resp_command(&[b"PING"])?;
                conn.writer.flush()?;
                match read_line(&mut conn.reader, &mut conn.line)? {
                    "+PONG" => Ok(()),
                    other => Err(OpError::Broken(format!("not a Redis server: '{other}'"))),
                }
            }
        }
    }

    /// Adds a request to the batch being built; nothing is sent before [`Conn::flush`].
    fn queue(&mut self, cmd: Cmd<'_>) -> Result<(), OpError> {
        match self {
            Conn::Binary(conn) => conn.queue(cmd),
            Conn::Memcache(conn) => conn.queue(cmd),
            Conn::Resp(conn, _) => conn.resp_queue(cmd),
            Conn::Direct(conn) => {
                conn.queued.push_back(match cmd {
                    Cmd::Get(key) => (key.to_vec(), None),
                    Cmd::Set(key, value) => (key.to_vec(), Some(value.to_vec())),
                });
                Ok(())
            }
        }
    }

    /// Sends the batch. A Redis connection with `WAIT` adds `WAIT 1 0` first if the batch
    /// holds a SET, and then returns `true`: read its reply with [`Conn::recv_wait`] after
    /// the batch's own.
    fn flush(&mut self) -> Result<bool, OpError> {
        let wait = match self {
            Conn::Resp(conn, true) if conn.sets_queued => {
                conn.resp_command(&[b"WAIT", b"1", b"0"])?;
                true
            }
            _ => false,
        };
        match self {
            Conn::Binary(conn) => conn.writer.flush()?,
            Conn::Memcache(conn) | Conn::Resp(conn, _) => {
                conn.sets_queued = false;
                conn.writer.flush()?;
            }
            Conn::Direct(_) => {}
        }
        Ok(wait)
    }

    /// Reads the reply to the oldest request not yet answered, a `kind` one. With `out`,
    /// a hit's value is copied into it.
    fn recv(&mut self, kind: Kind, out: Option<&mut Vec<u8>>) -> Result<Done, OpError> {
        match self {
            Conn::Binary(conn) => conn.recv(kind, out),
            Conn::Direct(conn) => conn.recv(kind, out),
            Conn::Memcache(conn) => {
                let done = match kind {
                    Kind::Get => {
                        read_get_reply(&mut conn.reader, &mut conn.line, &mut conn.data)?.into()
                    }
                    Kind::Set => {
                        read_set_reply(&mut conn.reader, &mut conn.line)?;
                        Done::Stored
                    }
                };
                conn.copy_value(done, out);
                Ok(done)
            }
            Conn::Resp(conn, _) => {
                let done = match kind {
                    Kind::Get => conn.resp_get_reply()?.into(),
                    Kind::Set => match read_line(&mut conn.reader, &mut conn.line)? {
                        "+OK" => Done::Stored,
                        other => return Err(resp_error(other)),
                    },
                };
                conn.copy_value(done, out);
                Ok(done)
            }
        }
    }

    /// Reads the reply to the `WAIT 1 0` that [`Conn::flush`] sent: at least one replica.
    fn recv_wait(&mut self) -> Result<(), OpError> {
        match self {
            Conn::Resp(conn, _) => match read_line(&mut conn.reader, &mut conn.line)? {
                line if line
                    .strip_prefix(':')
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|n| n >= 1) =>
                {
                    Ok(())
                }
                other => Err(resp_error(other)),
            },
            _ => Err(OpError::Broken("no WAIT was sent".into())),
        }
    }

    /// One request and its reply (and, for a Redis SET with `WAIT`, the WAIT's).
    fn one(&mut self, cmd: Cmd<'_>, out: Option<&mut Vec<u8>>) -> Result<Done, OpError> {
        let kind = match cmd {
            Cmd::Get(_) => Kind::Get,
            Cmd::Set(..) => Kind::Set,
        };
        self.queue(cmd)?;
        let wait = self.flush()?;
        let done = self.recv(kind, out);
        if !wait || matches!(done, Err(OpError::Broken(_))) {
            return done;
        }
        match (done, self.recv_wait()) {
            (_, Err(broken @ OpError::Broken(_))) => Err(broken),
            (Err(e), _) | (Ok(_), Err(e)) => Err(e),
            (Ok(done), Ok(())) => Ok(done),
        }
    }

    fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), OpError> {
        self.one(Cmd::Set(key, value), None).map(|_| ())
    }

    /// Like [`Conn::get`], copying the value into `out` on a hit.
    #[cfg(test)]
    fn get_value(&mut self, key: &[u8], out: &mut Vec<u8>) -> Result<bool, OpError> {
        self.one(Cmd::Get(key), Some(out))
            .map(|done| done == Done::Hit)
    }

    /// `Ok(true)` for a hit, `Ok(false)` for a miss.
    #[cfg(test)]
    fn get(&mut self, key: &[u8]) -> Result<bool, OpError> {
        self.one(Cmd::Get(key), None).map(|done| done == Done::Hit)
    }
}

impl From<bool> for Done {
    /// A get's outcome: `true` for a hit.
    fn from(found: bool) -> Done {
        if found { Done::Hit } else { Done::Miss }
    }
}

/// Connects to `addr` with `TCP_NODELAY`, and read and write timeouts of
/// [`REQUEST_TIMEOUT`] (a pipeline whose replies cannot drain fails instead of hanging).
fn connect(addr: &str) -> io::Result<TcpStream> {
    let candidates: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address to connect to");
    for candidate in candidates {
        match TcpStream::connect_timeout(&candidate, CONNECT_TIMEOUT) {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
                stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
                return Ok(stream);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Piazza's binary protocol with pipelining: each request gets the next request id, and
/// each reply must carry the id and the opcode of the oldest request not yet answered.
struct FrameConn {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
    /// Id of the next request queued.
    next_id: u32,
    /// Id the next reply must carry.
    next_reply: u32,
    limits: WireLimits,
    /// Reused to encode each request.
    scratch: Frame,
}

impl FrameConn {
    fn new(stream: TcpStream) -> io::Result<FrameConn> {
        Ok(FrameConn {
            reader: BufReader::with_capacity(CONN_BUFFER, stream.try_clone()?),
            writer: BufWriter::with_capacity(CONN_BUFFER, stream),
            next_id: 1,
            next_reply: 1,
            limits: WireLimits {
                max_key: wire::DEFAULT_MAX_KEY,
                max_value: wire::MAX_BULK_VALUE,
            },
            scratch: Frame::request(Opcode::Ping, 0, Vec::new(), Vec::new()),
        })
    }

    /// Encodes one request into the write buffer.
    fn push(&mut self, opcode: Opcode, key: &[u8], value: &[u8]) -> Result<(), OpError> {
        let frame = &mut self.scratch;
        frame.opcode = opcode;
        frame.request_id = self.next_id;
        frame.key.clear();
        frame.key.extend_from_slice(key);
        frame.value.clear();
        frame.value.extend_from_slice(value);
        self.next_id = self.next_id.wrapping_add(1);
        frame.write_to(&mut self.writer)?;
        Ok(())
    }

    fn queue(&mut self, cmd: Cmd<'_>) -> Result<(), OpError> {
        match cmd {
            Cmd::Get(key) => self.push(Opcode::Get, key, &[]),
            Cmd::Set(key, value) => self.push(Opcode::Put, key, value),
        }
    }

    /// Reads the next reply, which must answer request `next_reply` of `opcode`; an error
    /// status is an error reply on a healthy connection.
    fn read_reply(&mut self, opcode: Opcode) -> Result<Frame, OpError> {
        let reply = wire::read_frame(&mut self.reader, &self.limits).map_err(|e| {
            OpError::from(match e {
                WireError::BadMagic(b'S') => ClientError::Refused,
                WireError::Closed | WireError::Truncated => ClientError::Closed,
                WireError::Io(e) => ClientError::Io(e),
                other => ClientError::Wire(other),
            })
        })?;
        let id = self.next_reply;
        self.next_reply = id.wrapping_add(1);
        if reply.request_id != id {
            return Err(ClientError::Mismatch {
                sent: id,
                got: reply.request_id,
            }
            .into());
        }
        if !matches!(reply.status, Status::Ok | Status::NotFound) {
            return Err(ClientError::Server {
                status: reply.status,
                message: reply.value_text(),
            }
            .into());
        }
        if reply.opcode != opcode {
            return Err(OpError::Broken(format!(
                "reply to request {id} is a {:?} reply, not {opcode:?}",
                reply.opcode
            )));
        }
        Ok(reply)
    }

    fn recv(&mut self, kind: Kind, out: Option<&mut Vec<u8>>) -> Result<Done, OpError> {
        let opcode = match kind {
            Kind::Get => Opcode::Get,
            Kind::Set => Opcode::Put,
        };
        let reply = self.read_reply(opcode)?;
        match (kind, reply.status) {
            (Kind::Get, Status::Ok) => {
                if let Some(out) = out {
                    *out = reply.value;
                }
                Ok(Done::Hit)
            }
            (Kind::Get, _) => Ok(Done::Miss),
            (Kind::Set, Status::Ok) => Ok(Done::Stored),
            (Kind::Set, status) => Err(ClientError::Server {
                status,
                message: reply.value_text(),
            }
            .into()),
        }
    }

    fn ping(&mut self) -> Result<(), OpError> {
        self.push(Opcode::Ping, &[], &[])?;
        self.writer.flush()?;
        match self.read_reply(Opcode::Ping)?.status {
            Status::Ok => Ok(()),
            status => Err(OpError::Broken(format!(
                "ping answered {}, not ok",
                status.name()
            ))),
        }
    }
}

/// A minimal memcached text (or Redis RESP) client: `set`, single-key `get`, `version`
/// (RESP: `SET`, `GET`, `WAIT`, `PING`), requests queued and sent together, with
/// `TCP_NODELAY`.
struct TextConn {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
    /// Reused for every reply line and data block.
    line: Vec<u8>,
    data: Vec<u8>,
    /// A SET was queued since the last flush (for Redis's `WAIT`).
    sets_queued: bool,
}

impl TextConn {
    fn new(stream: TcpStream) -> io::Result<TextConn> {
        Ok(TextConn {
            reader: BufReader::with_capacity(CONN_BUFFER, stream.try_clone()?),
            writer: BufWriter::with_capacity(CONN_BUFFER, stream),
            line: Vec::with_capacity(64),
            data: Vec::new(),
            sets_queued: false,
        })
    }

    /// After a hit, copies the value just read (without its CRLF) into `out`.
    fn copy_value(&self, done: Done, out: Option<&mut Vec<u8>>) {
        if let (Done::Hit, Some(out)) = (done, out) {
            out.clear();
            out.extend_from_slice(&self.data[..self.data.len().saturating_sub(2)]);
        }
    }

    /// Queues a memcached `set` or `get`.
    fn queue(&mut self, cmd: Cmd<'_>) -> Result<(), OpError> {
        match cmd {
            Cmd::Get(key) => {
                self.writer.write_all(b"get ")?;
                self.writer.write_all(key)?;
                self.writer.write_all(b"\r\n")?;
            }
            Cmd::Set(key, value) => {
                self.writer.write_all(b"set ")?;
                self.writer.write_all(key)?;
                write!(self.writer, " 0 0 {}\r\n", value.len())?;
                self.writer.write_all(value)?;
                self.writer.write_all(b"\r\n")?;
                self.sets_queued = true;
            }
        }
        Ok(())
    }

    /// Queues one RESP command (an array of bulk strings).
    fn resp_command(&mut self, parts: &[&[u8]]) -> Result<(), OpError> {
        write!(self.writer, "*{}\r\n", parts.len())?;
        for part in parts {
            write!(self.writer, "${}\r\n", part.len())?;
            self.writer.write_all(part)?;
            self.writer.write_all(b"\r\n")?;
        }
        Ok(())
    }

    /// Queues a Redis `SET` or `GET`.
    fn resp_queue(&mut self, cmd: Cmd<'_>) -> Result<(), OpError> {
        match cmd {
            Cmd::Get(key) => self.resp_command(&[b"GET", key]),
            Cmd::Set(key, value) => {
                self.sets_queued = true;
                self.resp_command(&[b"SET", key, value])
            }
        }
    }

    /// Reads a `GET` reply: `Ok(true)` for a hit (the value, with its CRLF, is in `data`).
    fn resp_get_reply(&mut self) -> Result<bool, OpError> {
        let length = match read_line(&mut self.reader, &mut self.line)? {
            "$-1" => return Ok(false),
            line => match line.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
                Some(n) if n <= MAX_TEXT_VALUE => n,
                _ => return Err(resp_error(line)),
            },
        };
        self.data.clear();
        self.data.resize(length + 2, 0);
        self.reader.read_exact(&mut self.data)?;
        if !self.data.ends_with(b"\r\n") {
            return Err(OpError::Broken("RESP bulk string without CRLF".into()));
        }
        Ok(true)
    }

    fn version(&mut self) -> Result<(), OpError> {
        self.writer.write_all(b"version\r\n")?;
        self.writer.flush()?;
        let line = read_line(&mut self.reader, &mut self.line)?;
        if line.starts_with("VERSION ") {
            Ok(())
        } else {
            Err(error_line(line))
        }
    }
}

/// An unexpected RESP reply: a Redis error (`-ERR ...`) is a reply error, anything else
/// breaks the connection.
fn resp_error(line: &str) -> OpError {
    match line.strip_prefix('-') {
        Some(message) => OpError::Reply(message.to_string()),
        None => OpError::Broken(format!("unexpected RESP reply '{line}'")),
    }
}

/// Reads one `\r\n`-terminated reply line (at most [`MAX_TEXT_LINE`] bytes) into `buf`
/// and returns it without the line end.
fn read_line<'a>(reader: &mut impl BufRead, buf: &'a mut Vec<u8>) -> Result<&'a str, OpError> {
    buf.clear();
    let n = reader.by_ref().take(MAX_TEXT_LINE).read_until(b'\n', buf)?;
    if n == 0 {
        return Err(OpError::Broken("the server closed the connection".into()));
    }
    if !buf.ends_with(b"\r\n") {
        return Err(OpError::Broken(format!(
            "reply line not ended by \\r\\n within {MAX_TEXT_LINE} bytes"
        )));
    }
    std::str::from_utf8(&buf[..buf.len() - 2])
        .map_err(|_| OpError::Broken("reply line is not UTF-8".into()))
}

/// Classifies an unexpected reply line: memcached's three error classes are replies on
/// a healthy connection; anything else means we are out of step.
fn error_line(line: &str) -> OpError {
    if line == "ERROR" || line.starts_with("CLIENT_ERROR") || line.starts_with("SERVER_ERROR") {
        OpError::Reply(line.to_string())
    } else {
        OpError::Broken(format!("unexpected reply '{line}'"))
    }
}

/// Reads the reply to a `set`: `STORED`, or an error.
fn read_set_reply(reader: &mut impl BufRead, line: &mut Vec<u8>) -> Result<(), OpError> {
    match read_line(reader, line)? {
        "STORED" => Ok(()),
        "NOT_STORED" => Err(OpError::Reply("NOT_STORED".into())),
        other => Err(error_line(other)),
    }
}

/// Reads the reply to a single-key `get`: `Ok(false)` for a miss (`END` alone),
/// `Ok(true)` for a hit (`VALUE <key> <flags> <bytes>[ <cas>]`, the data, `END`).
fn read_get_reply(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
    data: &mut Vec<u8>,
) -> Result<bool, OpError> {
    let length = match read_line(reader, line)? {
        "END" => return Ok(false),
        header => parse_value_header(header)?,
    };
    // Checked against the limit above, before allocating.
    data.clear();
    data.resize(length + 2, 0);
    reader.read_exact(data)?;
    if !data.ends_with(b"\r\n") {
        return Err(OpError::Broken(format!(
            "data block of {length} bytes not followed by \\r\\n"
        )));
    }
    match read_line(reader, line)? {
        "END" => Ok(true),
        other => Err(OpError::Broken(format!(
            "expected END after the value, got '{other}'"
        ))),
    }
}

/// Reads the data length from `VALUE <key> <flags> <bytes>[ <cas>]`.
fn parse_value_header(line: &str) -> Result<usize, OpError> {
    let fields: Vec<&str> = line.split(' ').collect();
    match fields.as_slice() {
        ["VALUE", _key, flags, bytes] | ["VALUE", _key, flags, bytes, _] => {
            let bad = || OpError::Broken(format!("bad VALUE line '{line}'"));
            flags.parse::<u32>().map_err(|_| bad())?;
            match bytes.parse::<usize>() {
                Ok(n) if n <= MAX_TEXT_VALUE => Ok(n),
                Ok(n) => Err(OpError::Broken(format!(
                    "value of {n} bytes is over the {MAX_TEXT_VALUE}-byte limit"
                ))),
                Err(_) => Err(bad()),
            }
        }
        _ => Err(error_line(line)),
    }
}

/// xorshift64* (Vigna): small, fast, and good enough to pick keys and operations.
struct Rng(u64);

impl Rng {
    /// The generator of connection `index` for `seed`: distinct per connection, the same
    /// from run to run, never zero.
    fn new(seed: u64, index: u64) -> Rng {
        let mixed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (index + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
        Rng(mixed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is below 2^-40 for any key space used).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn report() -> Report {
        Report {
            protocol: Protocol::Memcache,
            target: "127.0.0.1:1".into(),
            connections: 8,
            pipeline: 1,
            seconds: 2.0,
            ops: 1000,
            errors: 1,
            misses: 2,
            wrong: 0,
            p50_us: 80,
            p99_us: 400,
            p999_us: 900,
            max_us: 2100,
            get_ratio: 0.9,
            value_size: 100,
            keys: 10,
            stopped: Vec::new(),
        }
    }

    #[test]
    fn percentiles_of_a_uniform_distribution_are_within_the_bucket_error() {
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v);
        }
        for (p, exact) in [
            (1.0, 1_000.0),
            (50.0, 50_000.0),
            (90.0, 90_000.0),
            (99.0, 99_000.0),
            (99.9, 99_900.0),
        ] {
            let got = h.percentile(p) as f64;
            assert!(
                (got - exact).abs() / exact <= 1.0 / 16.0,
                "p{p}: {got} vs {exact}"
            );
        }
        assert_eq!(h.percentile(100.0), 100_000);
        assert_eq!(h.max(), 100_000);
        assert_eq!(h.count(), 100_000);
    }

    #[test]
    fn small_values_are_exact_and_large_ones_fit_their_bucket() {
        let mut h = Histogram::new();
        for v in 0..16 {
            h.record(v);
        }
        assert_eq!(h.percentile(50.0), 7);
        for v in [16, 17, 31, 32, 1000, 60_000_000, 3_600_000_000, u64::MAX] {
            let index = Histogram::index(v);
            let (low, high) = (Histogram::lowest(index), Histogram::highest(index));
            assert!(low <= v && v <= high, "{v} not in [{low}, {high}]");
            assert!(
                high - low <= low / 16,
                "bucket of {v} too wide: [{low}, {high}]"
            );
        }
        assert_eq!(Histogram::index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn one_slow_value_shows_in_the_tail_only() {
        let mut h = Histogram::new();
        for _ in 0..999 {
            h.record(100);
        }
        h.record(50_000);
        assert!((100..=106).contains(&h.percentile(50.0)));
        assert!((100..=106).contains(&h.percentile(99.0)));
        assert_eq!(h.percentile(99.99), 50_000);
        assert_eq!(h.max(), 50_000);
    }

    #[test]
    fn merge_adds_counts_and_keeps_the_larger_max() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        a.record(10);
        b.record(20);
        b.record(3000);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.max(), 3000);
        assert_eq!(a.percentile(50.0), 20);
        let mut both = Histogram::new();
        for v in [10, 20, 3000] {
            both.record(v);
        }
        assert_eq!(a, both);
    }

    #[test]
    fn empty_histogram_reports_zero() {
        let h = Histogram::new();
        assert_eq!(h.count(), 0);
        assert_eq!(h.max(), 0);
        assert_eq!(h.percentile(50.0), 0);
        assert_eq!(h.percentile(99.9), 0);
    }

    /// Splits a flat JSON object whose values hold no commas, quotes or nesting.
    fn flat_json(line: &str) -> Vec<(String, String)> {
        let body = line
            .strip_prefix('{')
            .and_then(|rest| rest.strip_suffix('}'))
            .expect("an object");
        body.split(',')
            .map(|pair| {
                let (key, value) = pair.split_once(':').expect("key:value");
                let key = key
                    .strip_prefix('"')
                    .and_then(|k| k.strip_suffix('"'))
                    .expect("a quoted key");
                (key.to_string(), value.to_string())
            })
            .collect()
    }

    #[test]
    fn json_line_holds_every_figure_in_order() {
        let json = report().json();
        assert!(!json.contains('\n'));
        let pairs = flat_json(&json);
        let expected = [
            ("protocol", "\"memcache\""),
            ("connections", "8"),
            ("pipeline", "1"),
            ("seconds", "2.000"),
            ("ops", "1000"),
            ("ops_per_sec", "500.0"),
            ("errors", "1"),
            ("misses", "2"),
            ("wrong", "0"),
            ("p50_us", "80"),
            ("p99_us", "400"),
            ("p999_us", "900"),
            ("max_us", "2100"),
            ("get_ratio", "0.9"),
            ("value_size", "100"),
            ("keys", "10"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(pairs, expected);
        for (key, value) in &pairs[1..] {
            assert!(
                value.parse::<f64>().is_ok(),
                "{key}: {value} is not a number"
            );
        }
    }

    #[test]
    fn json_of_a_zero_length_run_has_no_nan() {
        let mut empty = report();
        empty.seconds = 0.0;
        empty.get_ratio = 1.0;
        let json = empty.json();
        assert!(json.contains("\"ops_per_sec\":0.0"), "{json}");
        assert!(json.contains("\"get_ratio\":1,"), "{json}");
        assert!(!json.contains("NaN") && !json.contains("inf"));
    }

    #[test]
    fn human_report_has_the_three_lines() {
        let text = report().human();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "piazza-bench: memcache protocol, 127.0.0.1:1, 8 connections, pipeline 1, 2.0 s, 10 keys, 100-byte values, 90% gets",
                "ops: 1000 (500 ops/s)  errors: 1  misses: 2  wrong: 0",
                "latency us: p50 80  p99 400  p99.9 900  max 2100",
            ]
        );
        let mut stopped = report();
        stopped.stopped.push("bench-3: cannot connect".into());
        assert!(
            stopped
                .human()
                .ends_with("stopped early: 1 of 8 connections (bench-3: cannot connect)\n")
        );
    }

    fn set_reply(bytes: &[u8]) -> Result<(), OpError> {
        read_set_reply(&mut Cursor::new(bytes), &mut Vec::new())
    }

    fn get_reply(bytes: &[u8]) -> Result<bool, OpError> {
        read_get_reply(&mut Cursor::new(bytes), &mut Vec::new(), &mut Vec::new())
    }

    #[test]
    fn memcache_set_replies_parse() {
        assert_eq!(set_reply(b"STORED\r\n"), Ok(()));
        assert_eq!(
            set_reply(b"SERVER_ERROR out of memory\r\n"),
            Err(OpError::Reply("SERVER_ERROR out of memory".into()))
        );
        assert!(matches!(
            set_reply(b"CLIENT_ERROR bad data chunk\r\n"),
            Err(OpError::Reply(_))
        ));
        assert!(matches!(set_reply(b"ERROR\r\n"), Err(OpError::Reply(_))));
        assert!(matches!(set_reply(b"STORED"), Err(OpError::Broken(_))));
        assert!(matches!(set_reply(b""), Err(OpError::Broken(_))));
        assert!(matches!(set_reply(b"VALUE x\r\n"), Err(OpError::Broken(_))));
    }

    #[test]
    fn memcache_get_replies_parse() {
        assert_eq!(get_reply(b"VALUE key:1 0 5\r\nhello\r\nEND\r\n"), Ok(true));
        assert_eq!(
            get_reply(b"VALUE key:1 7 5 42\r\nhe\r\nl\r\nEND\r\n"),
            Ok(true)
        );
        assert_eq!(get_reply(b"VALUE key:1 0 0\r\n\r\nEND\r\n"), Ok(true));
        assert_eq!(get_reply(b"END\r\n"), Ok(false));
        assert_eq!(
            get_reply(b"SERVER_ERROR no slaves\r\n"),
            Err(OpError::Reply("SERVER_ERROR no slaves".into()))
        );
        for broken in [
            &b"VALUE key:1 0 5\r\nhello!!END\r\n"[..],
            b"VALUE key:1 0 5\r\nhello\r\n",
            b"VALUE key:1 0 5\r\nhel",
            b"VALUE key:1 0 x\r\n",
            b"VALUE key:1 0 99999999999\r\n",
            b"VALUE key:1\r\n",
            b"STORED\r\n",
        ] {
            assert!(
                matches!(get_reply(broken), Err(OpError::Broken(_))),
                "{:?}",
                String::from_utf8_lossy(broken)
            );
        }
    }

    #[test]
    fn key_choice_is_deterministic_per_seed_and_connection() {
        let draw = |seed, index| {
            let mut rng = Rng::new(seed, index);
            (0..100).map(|_| rng.below(10_000)).collect::<Vec<u64>>()
        };
        assert_eq!(draw(1, 0), draw(1, 0));
        assert_ne!(draw(1, 0), draw(1, 1));
        assert_ne!(draw(1, 0), draw(2, 0));
        let mut rng = Rng::new(0, 0);
        let gets = (0..10_000).filter(|_| rng.unit() < 0.9).count();
        assert!((8_800..=9_200).contains(&gets), "{gets}");
        let mut key = Vec::new();
        format_key(&mut key, 42);
        assert_eq!(key, b"key:42");
    }

    #[test]
    fn flags_are_checked() {
        assert!(parse_ratio("1.5").is_err());
        assert!(parse_ratio("nan").is_err());
        assert_eq!(parse_ratio("0"), Ok(0.0));
        assert!(parse_positive("0").is_err());
        assert!(parse_connections("5000").is_err());
        assert!(parse_value_size("x").is_err());
        assert_eq!(parse_protocol("resp"), Ok(Protocol::Resp));
        assert_eq!(parse_pipeline("8"), Ok(8));
        assert!(parse_pipeline("0").is_err());
        assert!(parse_pipeline("1025").is_err());
        assert!(parse_protocol("http").is_err());
        let defaults = BenchArgs::from_args(&["piazza-bench"], &[]).expect("no flags is fine");
        assert_eq!(defaults.coordinator, "127.0.0.1:7400");
        assert_eq!((defaults.connections, defaults.seconds), (8, 10));
        assert_eq!((defaults.keys, defaults.value_size), (10_000, 100));
        assert_eq!(defaults.get_ratio, 0.9);
        assert_eq!(defaults.protocol, Protocol::Binary);
        assert_eq!(defaults.pipeline, 1);
        assert!(!defaults.json && !defaults.preload && defaults.ops.is_none());
        let args = BenchArgs::from_args(
            &["piazza-bench"],
            &[
                "--ops",
                "10",
                "--json",
                "--protocol",
                "memcache",
                "--preload",
            ],
        )
        .expect("valid flags");
        assert_eq!(args.ops, Some(10));
        assert!(args.json && args.preload);
        assert_eq!(args.protocol, Protocol::Memcache);
    }

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
    fn zipf_skews_towards_the_first_keys_and_verify_keeps_to_its_slice() {
        let cdf = zipf_cdf(1000, 0.99);
        assert!(cdf.windows(2).all(|w| w[0] <= w[1]));
        assert!((cdf[999] - 1.0).abs() < 1e-9);
        assert!(
            cdf[9] > 0.3,
            "the top 1% of keys get a large share: {}",
            cdf[9]
        );
        let args = BenchArgs::from_args(
            &["piazza-bench"],
            &[
                "--keys",
                "1000",
                "--zipf",
                "0.99",
                "--verify",
                "--connections",
                "4",
            ],
        )
        .unwrap();
        let plan = Plan::from_args(&args);
        let mut rng = Rng::new(1, 2);
        let picks: Vec<u64> = (0..10_000).map(|_| plan.pick(&mut rng, 2)).collect();
        assert!(picks.iter().all(|&n| n < 1000 && n % 4 == 2));
        let low = picks.iter().filter(|&&n| n < 100).count();
        assert!(low > 5_000, "zipf puts most picks on low keys: {low}");
        assert!(parse_zipf("-1").is_err());
        assert_eq!(verify_value(b"abcdefghij", 3, 7), b"3:7:abcdef");
    }

    /// A canned server for one connection: for each step, reads `requests` requests with
    /// `read_one`, then writes `reply` in one write. Returns what it read.
    fn canned_server<R: Send + 'static>(
        read_one: fn(&mut BufReader<TcpStream>) -> Option<R>,
        script: Vec<(usize, Vec<u8>)>,
    ) -> (String, JoinHandle<Vec<R>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            let mut seen = Vec::new();
            for (requests, reply) in script {
                for _ in 0..requests {
                    seen.push(read_one(&mut reader).expect("a whole request"));
                }
                writer.write_all(&reply).unwrap();
            }
            seen
        });
        (addr, server)
    }

    /// Reads one RESP command (an array of bulk strings) and returns its parts joined by
    /// spaces.
    fn read_resp_command(reader: &mut BufReader<TcpStream>) -> Option<String> {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let count: usize = line.trim_end().strip_prefix('*')?.parse().ok()?;
        let mut parts = Vec::new();
        for _ in 0..count {
            line.clear();
            reader.read_line(&mut line).ok()?;
            let len: usize = line.trim_end().strip_prefix('$')?.parse().ok()?;
            let mut part = vec![0u8; len + 2];
            reader.read_exact(&mut part).ok()?;
            part.truncate(len);
            parts.push(String::from_utf8(part).ok()?);
        }
        Some(parts.join(" "))
    }

    /// Reads one memcached `get` or `set` (with its data) and returns its command line.
    fn read_memcache_command(reader: &mut BufReader<TcpStream>) -> Option<String> {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end().to_string();
        if line.starts_with("set ") {
            let len: usize = line.rsplit(' ').next()?.parse().ok()?;
            let mut data = vec![0u8; len + 2];
            reader.read_exact(&mut data).ok()?;
        }
        Some(line)
    }

    fn read_binary_frame(reader: &mut BufReader<TcpStream>) -> Option<Frame> {
        wire::read_frame(reader, &WireLimits::default()).ok()
    }

    #[test]
    fn resp_client_speaks_redis_replies() {
        let (addr, server) = canned_server(
            read_resp_command,
            vec![
                (2, b"+OK\r\n:1\r\n".to_vec()),   // SET, then its WAIT
                (1, b"$5\r\nhello\r\n".to_vec()), // GET hit
                (1, b"$-1\r\n".to_vec()),         // GET miss
                (1, b"-ERR wrong\r\n".to_vec()),  // SET refused
            ],
        );
        let mut conn = Conn::open(Protocol::Resp, &addr).unwrap().with_wait(true);
        conn.set(b"k", b"hello").unwrap();
        let mut out = Vec::new();
        assert!(conn.get_value(b"k", &mut out).unwrap());
        assert_eq!(out, b"hello");
        assert!(!conn.get(b"nope").unwrap());
        let mut conn = match conn {
            Conn::Resp(text, _) => Conn::Resp(text, false),
            other => other,
        };
        assert!(matches!(conn.set(b"k", b"v"), Err(OpError::Reply(m)) if m.contains("wrong")));
        assert_eq!(
            server.join().unwrap(),
            ["SET k hello", "WAIT 1 0", "GET k", "GET nope", "SET k v"]
        );
    }

    #[test]
    fn pipelined_resp_replies_match_their_requests_and_wait_follows_the_batch() {
        let (addr, server) = canned_server(
            read_resp_command,
            vec![
                // The server sees the whole batch, WAIT last, before it answers anything.
                (
                    5,
                    b"+OK\r\n$2\r\nv1\r\n$-1\r\n-ERR no room\r\n:1\r\n".to_vec(),
                ),
                // Gets only: no WAIT.
                (2, b"$1\r\nx\r\n$-1\r\n".to_vec()),
            ],
        );
        let mut conn = Conn::open(Protocol::Resp, &addr).unwrap().with_wait(true);
        for cmd in [
            Cmd::Set(b"a", b"v1"),
            Cmd::Get(b"a"),
            Cmd::Get(b"b"),
            Cmd::Set(b"c", b"v2"),
        ] {
            conn.queue(cmd).unwrap();
        }
        assert!(conn.flush().unwrap(), "a batch with a SET ends with WAIT");
        let mut out = Vec::new();
        assert_eq!(conn.recv(Kind::Set, None), Ok(Done::Stored));
        assert_eq!(conn.recv(Kind::Get, Some(&mut out)), Ok(Done::Hit));
        assert_eq!(out, b"v1");
        assert_eq!(conn.recv(Kind::Get, Some(&mut out)), Ok(Done::Miss));
        assert_eq!(
            conn.recv(Kind::Set, None),
            Err(OpError::Reply("ERR no room".into()))
        );
        assert_eq!(conn.recv_wait(), Ok(()));
        conn.queue(Cmd::Get(b"x")).unwrap();
        conn.queue(Cmd::Get(b"y")).unwrap();
        assert!(!conn.flush().unwrap(), "no SET, no WAIT");
        assert_eq!(conn.recv(Kind::Get, Some(&mut out)), Ok(Done::Hit));
        assert_eq!(out, b"x");
        assert_eq!(conn.recv(Kind::Get, None), Ok(Done::Miss));
        assert_eq!(
            server.join().unwrap(),
            [
                "SET a v1", "GET a", "GET b", "SET c v2", "WAIT 1 0", "GET x", "GET y"
            ]
        );
    }

    #[test]
    fn pipelined_memcache_replies_match_their_requests() {
        let (addr, server) = canned_server(
            read_memcache_command,
            vec![
                (
                    5,
                    b"VALUE k1 0 3\r\none\r\nEND\r\nSTORED\r\nEND\r\nSERVER_ERROR out of memory\r\nVALUE k3 0 5\r\nthree\r\nEND\r\n"
                        .to_vec(),
                ),
                // A set answered like a get: out of step, the connection is broken.
                (2, b"STORED\r\nSTORED\r\n".to_vec()),
            ],
        );
        let mut conn = Conn::open(Protocol::Memcache, &addr).unwrap();
        for cmd in [
            Cmd::Get(b"k1"),
            Cmd::Set(b"k2", b"two"),
            Cmd::Get(b"k2x"),
            Cmd::Set(b"k3", b"three"),
            Cmd::Get(b"k3"),
        ] {
            conn.queue(cmd).unwrap();
        }
        assert!(!conn.flush().unwrap(), "memcache never sends WAIT");
        let mut out = Vec::new();
        assert_eq!(conn.recv(Kind::Get, Some(&mut out)), Ok(Done::Hit));
        assert_eq!(out, b"one");
        assert_eq!(conn.recv(Kind::Set, None), Ok(Done::Stored));
        assert_eq!(conn.recv(Kind::Get, Some(&mut out)), Ok(Done::Miss));
        assert_eq!(out, b"one", "a miss leaves the buffer alone");
        assert!(matches!(conn.recv(Kind::Set, None), Err(OpError::Reply(_))));
        assert_eq!(conn.recv(Kind::Get, Some(&mut out)), Ok(Done::Hit));
        assert_eq!(out, b"three");
        conn.queue(Cmd::Set(b"a", b"1")).unwrap();
        conn.queue(Cmd::Get(b"a")).unwrap();
        conn.flush().unwrap();
        assert_eq!(conn.recv(Kind::Set, None), Ok(Done::Stored));
        assert!(matches!(
            conn.recv(Kind::Get, None),
            Err(OpError::Broken(_))
        ));
        assert_eq!(
            server.join().unwrap(),
            [
                "get k1",
                "set k2 0 0 3",
                "get k2x",
                "set k3 0 0 5",
                "get k3",
                "set a 0 0 1",
                "get a"
            ]
        );
    }

    /// Encodes the replies to `requests`, in order: a get of `key:<n>` finds `value-<n>`
    /// unless n is odd; a put is stored.
    fn binary_replies(requests: &[Frame]) -> Vec<u8> {
        let mut out = Vec::new();
        for request in requests {
            let reply = match request.opcode {
                Opcode::Get if request.key.ends_with(b"1") || request.key.ends_with(b"3") => {
                    request.reply(Status::NotFound)
                }
                Opcode::Get => {
                    let mut reply = request.reply(Status::Ok);
                    reply.value = [&b"value-"[..], &request.key[4..]].concat();
                    reply
                }
                _ => request.reply(Status::Ok),
            };
            reply.encode_into(&mut out);
        }
        out
    }

    #[test]
    fn pipelined_binary_replies_match_by_request_id() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            // First batch: read all four, answer all four in order.
            let first: Vec<Frame> = (0..4)
                .map(|_| read_binary_frame(&mut reader).expect("a frame"))
                .collect();
            writer.write_all(&binary_replies(&first)).unwrap();
            // Second batch: answer the two requests in the wrong order.
            let mut second: Vec<Frame> = (0..2)
                .map(|_| read_binary_frame(&mut reader).expect("a frame"))
                .collect();
            second.swap(0, 1);
            writer.write_all(&binary_replies(&second)).unwrap();
            first.into_iter().chain(second).collect::<Vec<Frame>>()
        });
        let mut conn = Conn::open(Protocol::Binary, &addr).unwrap();
        for cmd in [
            Cmd::Get(b"key:0"),
            Cmd::Set(b"key:1", b"x"),
            Cmd::Get(b"key:3"),
            Cmd::Get(b"key:4"),
        ] {
            conn.queue(cmd).unwrap();
        }
        assert!(!conn.flush().unwrap());
        let mut out = Vec::new();
        assert_eq!(conn.recv(Kind::Get, Some(&mut out)), Ok(Done::Hit));
        assert_eq!(out, b"value-0");
        assert_eq!(conn.recv(Kind::Set, None), Ok(Done::Stored));
        assert_eq!(conn.recv(Kind::Get, Some(&mut out)), Ok(Done::Miss));
        assert_eq!(conn.recv(Kind::Get, Some(&mut out)), Ok(Done::Hit));
        assert_eq!(out, b"value-4");
        conn.queue(Cmd::Get(b"key:6")).unwrap();
        conn.queue(Cmd::Get(b"key:8")).unwrap();
        conn.flush().unwrap();
        match conn.recv(Kind::Get, Some(&mut out)) {
            Err(OpError::Broken(why)) => assert!(why.contains("request 6"), "{why}"),
            other => panic!("a reply to another request must break the connection: {other:?}"),
        }
        let seen = server.join().unwrap();
        let ids: Vec<u32> = seen.iter().map(|frame| frame.request_id).collect();
        assert_eq!(
            ids,
            [1, 2, 3, 4, 6, 5],
            "ids count up; the server swapped the last two"
        );
        assert_eq!(seen[1].opcode, Opcode::Put);
        assert_eq!(seen[1].value, b"x");
    }

    /// A tiny in-order memcached for `run`: `version`, `set`, `get`, one thread per
    /// connection. With `stale`, a set of a key already present is acknowledged but
    /// not applied, so reads return old values. Serves `connections` connections.
    fn memcache_server(connections: usize, stale: bool) -> (String, JoinHandle<()>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let store = Arc::new(std::sync::Mutex::new(HashMap::<String, Vec<u8>>::new()));
        let server = std::thread::spawn(move || {
            let mut threads = Vec::new();
            for _ in 0..connections {
                let (stream, _) = listener.accept().unwrap();
                let store = Arc::clone(&store);
                threads.push(std::thread::spawn(move || {
                    let mut writer = BufWriter::new(stream.try_clone().unwrap());
                    let mut reader = BufReader::new(stream);
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let words: Vec<&str> = line.split_whitespace().collect();
                        match words.as_slice() {
                            ["version"] => writer.write_all(b"VERSION 1.0\r\n").unwrap(),
                            ["set", key, _, _, len] => {
                                let mut data = vec![0u8; len.parse::<usize>().unwrap() + 2];
                                reader.read_exact(&mut data).unwrap();
                                data.truncate(data.len() - 2);
                                let mut store = store.lock().unwrap();
                                if !(stale && store.contains_key(*key)) {
                                    store.insert(key.to_string(), data);
                                }
                                writer.write_all(b"STORED\r\n").unwrap();
                            }
                            ["get", key] => {
                                if let Some(value) = store.lock().unwrap().get(*key) {
                                    write!(writer, "VALUE {key} 0 {}\r\n", value.len()).unwrap();
                                    writer.write_all(value).unwrap();
                                    writer.write_all(b"\r\n").unwrap();
                                }
                                writer.write_all(b"END\r\n").unwrap();
                            }
                            other => panic!("unexpected command {other:?}"),
                        }
                        // Like the real servers: one write per batch of whole requests.
                        if reader.buffer().is_empty() {
                            writer.flush().unwrap();
                        }
                    }
                }));
            }
            for thread in threads {
                thread.join().unwrap();
            }
        });
        (addr, server)
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
