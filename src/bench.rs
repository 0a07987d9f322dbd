//! `piazza-bench`: a closed-loop load generator. N connections, one named thread each,
//! send gets and sets as fast as the answers come back, for a duration or an operation
//! count, and record every operation's latency (µs) in a per-thread log-bucket
//! [`Histogram`]; [`run`] merges them into a [`Report`].
//!
//! It speaks Piazza's binary protocol (through [`Client`]) or memcached's text protocol
//! (a minimal client in this module), so the same tool measures Piazza's two protocols
//! and a real memcached. It connects only to the address it is given.
//!
//! Threads, all started and joined by [`run`]:
//! - `preload-<i>` (with `--preload`): write keys `i, i+N, i+2N, …` once, before timing;
//! - `bench-<i>`: one connection and one xorshift64* generator each. They connect, wait at
//!   a [`Barrier`] so that all start together, then loop until their share of `--ops` is
//!   done or `--seconds` have passed.
//!
//! Errors: an operation that fails counts in `errors`. When the connection itself broke
//! (I/O error, closed, a reply that cannot be framed) the thread connects again, once; if
//! that fails, the thread stops and the reason is kept in [`Report::stopped`]. An error
//! *reply* (`SERVER_ERROR`, a binary error status) leaves a healthy connection, which is
//! kept. A get that finds nothing counts in `misses`, not `errors`.
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

use crate::client::{CONNECT_TIMEOUT, Client, ClientError, REQUEST_TIMEOUT};
use crate::config::DEFAULT_COORDINATOR;

/// Most connections (threads) one run may ask for.
pub const MAX_CONNECTIONS: u64 = 4096;
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
    /// replica has it (Redis's way of acknowledging two copies)
    #[argh(switch)]
    pub redis_wait: bool,
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
    /// Piazza's binary frames, through [`Client`].
    Binary,
    /// memcached's text protocol (`set` and `get`).
    Memcache,
    /// Redis's protocol (`SET`, `GET`; with `--redis-wait`, `WAIT 1 0` after each SET).
    Resp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Binary => "binary",
            Protocol::Memcache => "memcache",
            Protocol::Resp => "resp",
        })
    }
}

/// Why a run could not be made.
#[derive(Debug)]
pub enum BenchError {
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
            "piazza-bench: {} protocol, {}, {} connections, {:.1} s, {} keys, {}-byte values, {:.0}% gets\n\
             ops: {} ({:.0} ops/s)  errors: {}  misses: {}  wrong: {}\n\
             latency us: p50 {}  p99 {}  p99.9 {}  max {}\n",
            self.protocol,
            self.target,
            self.connections,
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
            "{{\"protocol\":\"{}\",\"connections\":{},\"seconds\":{:.3},\"ops\":{},\"ops_per_sec\":{:.1},\"errors\":{},\"misses\":{},\"wrong\":{},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"get_ratio\":{},\"value_size\":{},\"keys\":{}}}",
            self.protocol,
            self.connections,
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
}

impl Plan {
    fn from_args(args: &BenchArgs) -> Plan {
        Plan {
            protocol: args.protocol,
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

/// One connection's closed loop: connect, wait for the others, then run until the budget
/// of operations (counting failures) is spent or the duration has passed.
fn load(plan: &Plan, index: u64, budget: Option<u64>, barrier: &Barrier) -> Outcome {
    let mut outcome = Outcome::default();
    let conn = Conn::open(plan.protocol, &plan.addr).map(|c| c.with_wait(plan.redis_wait));
    // Every thread reaches the barrier, connected or not, or the others would wait forever.
    barrier.wait();
    let mut conn = match conn {
        Ok(conn) => conn,
        Err(why) => {
            outcome.stopped = Some(why);
            return outcome;
        }
    };
    log::debug!("connected to {}", plan.addr);
    let mut rng = Rng::new(plan.seed, index);
    let started = Instant::now();
    let mut key = Vec::with_capacity(24);
    let mut attempts = 0u64;
    // With --verify: what each of our keys holds (None: unknown after a failed set).
    let mut expected: HashMap<u64, Option<Vec<u8>>> = HashMap::new();
    let mut got = Vec::new();
    loop {
        let done = match (budget, plan.duration) {
            (Some(budget), _) => attempts >= budget,
            (None, Some(duration)) => started.elapsed() >= duration,
            (None, None) => true,
        };
        if done {
            break;
        }
        attempts += 1;
        let n = plan.pick(&mut rng, index);
        format_key(&mut key, n);
        let is_get = rng.unit() < plan.get_ratio;
        let value = if plan.verify && !is_get {
            verify_value(&plan.value, index, attempts)
        } else {
            Vec::new()
        };
        let op_started = Instant::now();
        let result = match (is_get, plan.verify) {
            (true, false) => conn.get(&key).map(|found| !found),
            (true, true) => conn.get_value(&key, &mut got).map(|found| {
                let want = expected
                    .entry(n)
                    .or_insert_with(|| plan.preloaded.then(|| plan.value.clone()));
                let same = match want {
                    Some(want) => found && got == *want,
                    None => true, // unknown since a failed set
                };
                if !same {
                    outcome.wrong += 1;
                    log::warn!("verify: key:{n} does not hold what was last stored");
                }
                !found
            }),
            (false, false) => conn.set(&key, &plan.value).map(|()| false),
            (false, true) => {
                let result = conn.set(&key, &value).map(|()| false);
                let now = result.as_ref().ok().map(|_| value.clone());
                expected.insert(n, now);
                result
            }
        };
        let micros = u64::try_from(op_started.elapsed().as_micros()).unwrap_or(u64::MAX);
        match result {
            Ok(missed) => {
                outcome.histogram.record(micros);
                outcome.ops += 1;
                outcome.misses += u64::from(missed);
            }
            Err(OpError::Reply(why)) => {
                outcome.errors += 1;
                log::debug!("error reply: {why}");
            }
            Err(OpError::Broken(why)) => {
                outcome.errors += 1;
                log::debug!("connection broke ({why}); connecting again");
                match Conn::open(plan.protocol, &plan.addr).map(|c| c.with_wait(plan.redis_wait)) {
                    Ok(fresh) => conn = fresh,
                    Err(again) => {
                        outcome.stopped = Some(format!("{why}; then {again}"));
                        return outcome;
                    }
                }
            }
        }
    }
    outcome
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

/// One connection of either protocol.
enum Conn {
    Binary(Box<Client>),
    Memcache(TextConn),
    /// Redis; `true`: `WAIT 1 0` after every SET.
    Resp(TextConn, bool),
}

impl Conn {
    /// Connects; the error is one line naming the address.
    fn open(protocol: Protocol, addr: &str) -> Result<Conn, String> {
        match protocol {
            Protocol::Binary => Client::connect(addr)
                .map(|client| Conn::Binary(Box::new(client)))
                .map_err(|e| e.to_string()),
            Protocol::Memcache | Protocol::Resp => TextConn::connect(addr)
                .map(|conn| match protocol {
                    Protocol::Resp => Conn::Resp(conn, false),
                    _ => Conn::Memcache(conn),
                })
                .map_err(|e| {
                    format!(
                        "cannot connect to {addr}: {e} (is the server running? try --coordinator)"
                    )
                }),
        }
    }

    /// With `wait`, a Redis connection sends `WAIT 1 0` after every SET.
    fn with_wait(self, wait: bool) -> Conn {
        match self {
            Conn::Resp(conn, _) => Conn::Resp(conn, wait),
            other => other,
        }
    }

    /// Checks within [`PROBE_TIMEOUT`] that the server speaks the protocol: a binary
    /// ping, or memcached `version`. Meant for a connection used for nothing else.
    fn check(&mut self) -> Result<(), OpError> {
        match self {
            Conn::Binary(client) => {
                client.set_timeout(PROBE_TIMEOUT)?;
                client.ping().map_err(OpError::from)
            }
            Conn::Memcache(conn) => {
                conn.writer
                    .get_ref()
                    .set_read_timeout(Some(PROBE_TIMEOUT))?;
                conn.version()
            }
            Conn::Resp(conn, _) => {
                conn.writer
                    .get_ref()
                    .set_read_timeout(Some(PROBE_TIMEOUT))?;
                conn.resp_command(&[b"PING"])?;
                match read_line(&mut conn.reader, &mut conn.line)? {
                    "+PONG" => Ok(()),
                    other => Err(OpError::Broken(format!("not a Redis server: '{other}'"))),
                }
            }
        }
    }

    fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), OpError> {
        match self {
            Conn::Binary(client) => client.put(key, value).map(|_| ()).map_err(OpError::from),
            Conn::Memcache(conn) => conn.set(key, value),
            Conn::Resp(conn, wait) => conn.resp_set(key, value, *wait),
        }
    }

    /// Like [`Conn::get`], copying the value into `out` on a hit.
    fn get_value(&mut self, key: &[u8], out: &mut Vec<u8>) -> Result<bool, OpError> {
        match self {
            Conn::Binary(client) => match client.get(key).map_err(OpError::from)? {
                Some(found) => {
                    *out = found.value;
                    Ok(true)
                }
                None => Ok(false),
            },
            Conn::Memcache(conn) => {
                let found = conn.get(key)?;
                conn.copy_value(found, out);
                Ok(found)
            }
            Conn::Resp(conn, _) => {
                let found = conn.resp_get(key)?;
                conn.copy_value(found, out);
                Ok(found)
            }
        }
    }

    /// `Ok(true)` for a hit, `Ok(false)` for a miss.
    fn get(&mut self, key: &[u8]) -> Result<bool, OpError> {
        match self {
            Conn::Binary(client) => client
                .get(key)
                .map(|found| found.is_some())
                .map_err(OpError::from),
            Conn::Memcache(conn) => conn.get(key),
            Conn::Resp(conn, _) => conn.resp_get(key),
        }
    }
}

impl TextConn {
    /// After a hit, copies the value just read (without its CRLF) into `out`.
    fn copy_value(&self, found: bool, out: &mut Vec<u8>) {
        if found {
            out.clear();
            out.extend_from_slice(&self.data[..self.data.len().saturating_sub(2)]);
        }
    }

    /// Sends one RESP command (an array of bulk strings).
    fn resp_command(&mut self, parts: &[&[u8]]) -> Result<(), OpError> {
        write!(self.writer, "*{}\r\n", parts.len())?;
        for part in parts {
            write!(self.writer, "${}\r\n", part.len())?;
            self.writer.write_all(part)?;
            self.writer.write_all(b"\r\n")?;
        }
        self.writer.flush()?;
        Ok(())
    }

    fn resp_set(&mut self, key: &[u8], value: &[u8], wait: bool) -> Result<(), OpError> {
        self.resp_command(&[b"SET", key, value])?;
        match read_line(&mut self.reader, &mut self.line)? {
            "+OK" => {}
            other => return Err(resp_error(other)),
        }
        if !wait {
            return Ok(());
        }
        self.resp_command(&[b"WAIT", b"1", b"0"])?;
        match read_line(&mut self.reader, &mut self.line)? {
            line if line
                .strip_prefix(':')
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n >= 1) =>
            {
                Ok(())
            }
            other => Err(resp_error(other)),
        }
    }

    /// `Ok(true)` for a hit (the value, with its CRLF, is in `data`).
    fn resp_get(&mut self, key: &[u8]) -> Result<bool, OpError> {
        self.resp_command(&[b"GET", key])?;
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
}

/// An unexpected RESP reply: a Redis error (`-ERR ...`) is a reply error, anything else
/// breaks the connection.
fn resp_error(line: &str) -> OpError {
    match line.strip_prefix('-') {
        Some(message) => OpError::Reply(message.to_string()),
        None => OpError::Broken(format!("unexpected RESP reply '{line}'")),
    }
}

/// A minimal memcached text client: `set`, single-key `get` and `version`, one request at
/// a time, with `TCP_NODELAY`.
struct TextConn {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
    /// Reused for every reply line and data block.
    line: Vec<u8>,
    data: Vec<u8>,
}

impl TextConn {
    fn connect(addr: &str) -> io::Result<TextConn> {
        let candidates: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
        let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address to connect to");
        for candidate in candidates {
            match TcpStream::connect_timeout(&candidate, CONNECT_TIMEOUT) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
                    return Ok(TextConn {
                        reader: BufReader::new(stream.try_clone()?),
                        writer: BufWriter::new(stream),
                        line: Vec::with_capacity(64),
                        data: Vec::new(),
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), OpError> {
        self.writer.write_all(b"set ")?;
        self.writer.write_all(key)?;
        write!(self.writer, " 0 0 {}\r\n", value.len())?;
        self.writer.write_all(value)?;
        self.writer.write_all(b"\r\n")?;
        self.writer.flush()?;
        read_set_reply(&mut self.reader, &mut self.line)
    }

    fn get(&mut self, key: &[u8]) -> Result<bool, OpError> {
        self.writer.write_all(b"get ")?;
        self.writer.write_all(key)?;
        self.writer.write_all(b"\r\n")?;
        self.writer.flush()?;
        read_get_reply(&mut self.reader, &mut self.line, &mut self.data)
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
                "piazza-bench: memcache protocol, 127.0.0.1:1, 8 connections, 2.0 s, 10 keys, 100-byte values, 90% gets",
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
        assert!(parse_protocol("http").is_err());
        let defaults = BenchArgs::from_args(&["piazza-bench"], &[]).expect("no flags is fine");
        assert_eq!(defaults.coordinator, "127.0.0.1:7400");
        assert_eq!((defaults.connections, defaults.seconds), (8, 10));
        assert_eq!((defaults.keys, defaults.value_size), (10_000, 100));
        assert_eq!(defaults.get_ratio, 0.9);
        assert_eq!(defaults.protocol, Protocol::Binary);
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

    #[test]
    fn resp_client_speaks_redis_replies() {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        // A canned server: answers the commands in the order the client sends them.
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let replies: [&[u8]; 6] = [
                b"+OK\r\n",         // SET
                b":1\r\n",          // WAIT
                b"$5\r\nhello\r\n", // GET hit
                b"$-1\r\n",         // GET miss
                b"-ERR wrong\r\n",  // SET refused
                b"+PONG\r\n",       // unused
            ];
            let mut buf = [0u8; 4096];
            for reply in &replies[..5] {
                let _ = stream.read(&mut buf).unwrap();
                stream.write_all(reply).unwrap();
            }
        });
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
        server.join().unwrap();
    }
}
