//! `piazza-bench`: a closed-loop load generator. N connections, one named thread each
//! (`bench-<i>`), send gets and sets as fast as answers come back, for a duration or an
//! operation count, and record every operation's latency in a log-bucket histogram.
//!
//! It speaks Piazza's binary protocol (through [`Client`]) or memcached's text protocol,
//! so the same tool measures Piazza's two ports and a real memcached in one run. It only
//! connects where it is told; it never targets anything but the given address.

use std::fmt;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use argh::FromArgs;

use crate::client::{Client, ClientError};
use crate::config::DEFAULT_COORDINATOR;

/// piazza-bench: load generator. Runs N connections against a Piazza coordinator (or any
/// memcached with --protocol memcache) and prints ops/s and latency percentiles.
#[derive(FromArgs, Debug, Clone)]
pub struct BenchArgs {
    /// address to load (default 127.0.0.1:7400)
    #[argh(option, default = "DEFAULT_COORDINATOR.into()")]
    pub coordinator: String,
    /// concurrent connections, one thread each (default 8)
    #[argh(option, default = "8", from_str_fn(positive))]
    pub connections: u64,
    /// how long to run, in seconds (default 10; ignored with --ops)
    #[argh(option, default = "10", from_str_fn(positive))]
    pub seconds: u64,
    /// total operations across all connections (instead of --seconds)
    #[argh(option, from_str_fn(positive))]
    pub ops: Option<u64>,
    /// number of distinct keys (default 10000)
    #[argh(option, default = "10000", from_str_fn(positive))]
    pub keys: u64,
    /// value size in bytes (default 100)
    #[argh(option, default = "100")]
    pub value_size: usize,
    /// share of gets, from 0 to 1 (default 0.9)
    #[argh(option, default = "0.9", from_str_fn(ratio))]
    pub get_ratio: f64,
    /// binary (Piazza's protocol) or memcache (text; works against memcached too)
    /// (default binary)
    #[argh(option, default = "Protocol::Binary", from_str_fn(protocol))]
    pub protocol: Protocol,
    /// write every key once before the timed run
    #[argh(switch)]
    pub preload: bool,
    /// seed for the key choice (default 1)
    #[argh(option, default = "1")]
    pub seed: u64,
    /// print one JSON line with the figures instead of text
    #[argh(switch)]
    pub json: bool,
}

fn positive(value: &str) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(0) => Err("must be greater than 0".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("'{value}' is not a whole number")),
    }
}

fn ratio(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("'{value}' is not a number from 0 to 1")),
    }
}

/// Which protocol to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Piazza's binary frames.
    Binary,
    /// memcached's text protocol.
    Memcache,
}

fn protocol(value: &str) -> Result<Protocol, String> {
    match value {
        "binary" => Ok(Protocol::Binary),
        "memcache" | "memcached" | "text" => Ok(Protocol::Memcache),
        other => Err(format!(
            "unknown protocol '{other}' (use binary or memcache)"
        )),
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Binary => "binary",
            Protocol::Memcache => "memcache",
        })
    }
}

/// Why a run could not be made.
#[derive(Debug)]
pub enum BenchError {
    /// The target could not be reached at the start.
    Connect(String),
    /// A load thread could not start.
    Thread(io::Error),
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Connect(why) => write!(f, "{why}"),
            BenchError::Thread(e) => write!(f, "cannot start a load thread: {e}"),
        }
    }
}

impl std::error::Error for BenchError {}

/// Latency histogram with log buckets: exact below 16 µs, then 16 buckets per power of
/// two (at most 1/16 = 6.25% relative error), up to u64::MAX µs. Std only.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

const SUB_BUCKETS: u64 = 16;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; 64 * SUB_BUCKETS as usize],
            total: 0,
            max: 0,
        }
    }
}

impl Histogram {
    fn index(value: u64) -> usize {
        if value < SUB_BUCKETS {
            return value as usize;
        }
        let exponent = 63 - u64::from(value.leading_zeros()); // >= 4
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

    /// Counts one value.
    pub fn record(&mut self, value: u64) {
        self.counts[Self::index(value)] += 1;
        self.total += 1;
        self.max = self.max.max(value);
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// Values counted.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest value counted (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at or below which `percentile` % of the values lie (the bucket's lower
    /// bound, capped at the maximum); 0 when empty.
    pub fn percentile(&self, percentile: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((percentile / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Self::lowest(index).min(self.max);
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
    /// Connections.
    pub connections: u64,
    /// Seconds the timed run took.
    pub seconds: f64,
    /// Operations completed.
    pub ops: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Gets that found nothing.
    pub misses: u64,
    /// Latency percentiles and maximum, in µs.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Maximum.
    pub max_us: u64,
    /// Share of gets.
    pub get_ratio: f64,
    /// Value size.
    pub value_size: usize,
    /// Key space.
    pub keys: u64,
}

impl Report {
    /// Operations per second.
    pub fn ops_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ops as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// The report as text for a person.
    pub fn human(&self) -> String {
        format!(
            "piazza-bench: {} protocol, {}, {} connections, {:.1} s, {} keys, {}-byte values, {:.0}% gets\n\
             ops: {} ({:.0} ops/s)  errors: {}  misses: {}\n\
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
            self.p50_us,
            self.p99_us,
            self.p999_us,
            self.max_us
        )
    }

    /// The report as one JSON line.
    pub fn json(&self) -> String {
        format!(
            "{{\"protocol\":\"{}\",\"connections\":{},\"seconds\":{:.3},\"ops\":{},\"ops_per_sec\":{:.1},\"errors\":{},\"misses\":{},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"get_ratio\":{},\"value_size\":{},\"keys\":{}}}",
            self.protocol,
            self.connections,
            self.seconds,
            self.ops,
            self.ops_per_sec(),
            self.errors,
            self.misses,
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

/// One connection of either protocol.
enum Conn {
    Binary(Client),
    Memcache(TextConn),
}

/// What a get found.
enum Got {
    Hit,
    Miss,
}

impl Conn {
    fn open(protocol: Protocol, addr: &str) -> Result<Conn, String> {
        match protocol {
            Protocol::Binary => Client::connect(addr)
                .map(Conn::Binary)
                .map_err(|e| e.to_string()),
            Protocol::Memcache => TextConn::connect(addr)
                .map(Conn::Memcache)
                .map_err(|e| format!("cannot connect to {addr}: {e}")),
        }
    }

    fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        match self {
            Conn::Binary(client) => client.put(key, value).map(|_| ()).map_err(describe),
            Conn::Memcache(conn) => conn.set(key, value),
        }
    }

    fn get(&mut self, key: &[u8]) -> Result<Got, String> {
        match self {
            Conn::Binary(client) => match client.get(key) {
                Ok(Some(_)) => Ok(Got::Hit),
                Ok(None) => Ok(Got::Miss),
                Err(e) => Err(describe(e)),
            },
            Conn::Memcache(conn) => conn.get(key),
        }
    }
}

fn describe(e: ClientError) -> String {
    e.to_string()
}

/// A minimal memcached text client: `set` and single-key `get`.
struct TextConn {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
    line: String,
}

impl TextConn {
    fn connect(addr: &str) -> io::Result<TextConn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(TextConn {
            reader: BufReader::new(stream.try_clone()?),
            writer: BufWriter::new(stream),
            line: String::new(),
        })
    }

    fn read_line(&mut self) -> Result<&str, String> {
        self.line.clear();
        match self.reader.read_line(&mut self.line) {
            Ok(0) => Err("connection closed".into()),
            Ok(_) => Ok(self.line.trim_end()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        let io = |e: io::Error| e.to_string();
        self.writer.write_all(b"set ").map_err(io)?;
        self.writer.write_all(key).map_err(io)?;
        write!(self.writer, " 0 0 {}\r\n", value.len()).map_err(io)?;
        self.writer.write_all(value).map_err(io)?;
        self.writer.write_all(b"\r\n").map_err(io)?;
        self.writer.flush().map_err(io)?;
        parse_set_reply(self.read_line()?)
    }

    fn get(&mut self, key: &[u8]) -> Result<Got, String> {
        let io = |e: io::Error| e.to_string();
        self.writer.write_all(b"get ").map_err(io)?;
        self.writer.write_all(key).map_err(io)?;
        self.writer.write_all(b"\r\n").map_err(io)?;
        self.writer.flush().map_err(io)?;
        let line = self.read_line()?.to_string();
        match parse_get_header(&line)? {
            None => Ok(Got::Miss),
            Some(len) => {
                let mut data = vec![0u8; len + 2];
                self.reader.read_exact(&mut data).map_err(io)?;
                match self.read_line()? {
                    "END" => Ok(Got::Hit),
                    other => Err(format!("expected END, got '{other}'")),
                }
            }
        }
    }
}

/// Reads the reply to a `set`.
fn parse_set_reply(line: &str) -> Result<(), String> {
    if line == "STORED" {
        Ok(())
    } else {
        Err(format!("set failed: {line}"))
    }
}

/// Reads the first line of a single-key `get` reply: `None` for a miss (`END`), the data
/// length for a hit (`VALUE <key> <flags> <bytes>`).
fn parse_get_header(line: &str) -> Result<Option<usize>, String> {
    if line == "END" {
        return Ok(None);
    }
    let fields: Vec<&str> = line.split(' ').collect();
    match fields.as_slice() {
        ["VALUE", _, _, bytes, ..] => bytes
            .parse()
            .map(Some)
            .map_err(|_| format!("bad VALUE line '{line}'")),
        _ => Err(format!("get failed: {line}")),
    }
}

/// xorshift64*: the key and operation choice of one connection.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Outcome {
    histogram: Histogram,
    ops: u64,
    errors: u64,
    misses: u64,
    fatal: Option<String>,
}

/// Runs the benchmark described by `args`.
///
/// # Errors
/// When the target cannot be reached at the start, or a thread cannot start.
pub fn run(args: &BenchArgs) -> Result<Report, BenchError> {
    // Fail fast, with the address, if nothing answers.
    Conn::open(args.protocol, &args.coordinator).map_err(BenchError::Connect)?;
    let value: Arc<Vec<u8>> = Arc::new(
        (0..args.value_size)
            .map(|i| b'a' + (i % 26) as u8)
            .collect(),
    );
    if args.preload {
        preload(args, &value)?;
    }
    let connections = args.connections;
    let barrier = Arc::new(Barrier::new(connections as usize + 1));
    let per_thread_ops = args.ops.map(|ops| ops.div_ceil(connections));
    let mut threads = Vec::new();
    for index in 0..connections {
        let (args, value, barrier) = (args.clone(), Arc::clone(&value), Arc::clone(&barrier));
        let thread = std::thread::Builder::new()
            .name(format!("bench-{index}"))
            .spawn(move || load(&args, index, &value, &barrier, per_thread_ops))
            .map_err(BenchError::Thread)?;
        threads.push(thread);
    }
    barrier.wait();
    let started = Instant::now();
    let mut histogram = Histogram::default();
    let (mut ops, mut errors, mut misses) = (0, 0, 0);
    let mut fatal = None;
    for thread in threads {
        match thread.join() {
            Ok(outcome) => {
                histogram.merge(&outcome.histogram);
                ops += outcome.ops;
                errors += outcome.errors;
                misses += outcome.misses;
                fatal = fatal.or(outcome.fatal);
            }
            Err(_) => errors += 1,
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Some(why) = fatal {
        eprintln!("piazza-bench: a connection gave up: {why}");
    }
    Ok(Report {
        protocol: args.protocol,
        target: args.coordinator.clone(),
        connections,
        seconds,
        ops,
        errors,
        misses,
        p50_us: histogram.percentile(50.0),
        p99_us: histogram.percentile(99.0),
        p999_us: histogram.percentile(99.9),
        max_us: histogram.max(),
        get_ratio: args.get_ratio,
        value_size: args.value_size,
        keys: args.keys,
    })
}

/// Writes every key once, spread over the connections.
fn preload(args: &BenchArgs, value: &Arc<Vec<u8>>) -> Result<(), BenchError> {
    let mut threads = Vec::new();
    for index in 0..args.connections {
        let (args, value) = (args.clone(), Arc::clone(value));
        let thread = std::thread::Builder::new()
            .name(format!("preload-{index}"))
            .spawn(move || -> Result<(), String> {
                let mut conn = Conn::open(args.protocol, &args.coordinator)?;
                let mut key = index;
                while key < args.keys {
                    conn.set(format!("key:{key}").as_bytes(), &value)?;
                    key += args.connections;
                }
                Ok(())
            })
            .map_err(BenchError::Thread)?;
        threads.push(thread);
    }
    for thread in threads {
        match thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(BenchError::Connect(format!("preload failed: {e}"))),
            Err(_) => return Err(BenchError::Connect("preload thread panicked".into())),
        }
    }
    Ok(())
}

/// One connection's closed loop.
fn load(
    args: &BenchArgs,
    index: u64,
    value: &[u8],
    barrier: &Barrier,
    ops_budget: Option<u64>,
) -> Outcome {
    let mut outcome = Outcome {
        histogram: Histogram::default(),
        ops: 0,
        errors: 0,
        misses: 0,
        fatal: None,
    };
    let conn = Conn::open(args.protocol, &args.coordinator);
    barrier.wait();
    let mut conn = match conn {
        Ok(conn) => conn,
        Err(e) => {
            outcome.fatal = Some(e);
            return outcome;
        }
    };
    let mut rng = Rng(args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (index + 1).wrapping_mul(0xD1B5_4A32_D192_ED03)
        | 1);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut key = Vec::with_capacity(32);
    loop {
        match ops_budget {
            Some(budget) if outcome.ops + outcome.errors >= budget => break,
            None if outcome.ops % 64 == 0 && Instant::now() >= deadline => break,
            _ => {}
        }
        key.clear();
        key.extend_from_slice(format!("key:{}", rng.next() % args.keys).as_bytes());
        let is_get = rng.unit() < args.get_ratio;
        let started = Instant::now();
        let result = if is_get {
            conn.get(&key).map(|got| matches!(got, Got::Miss))
        } else {
            conn.set(&key, value).map(|()| false)
        };
        let micros = started.elapsed().as_micros() as u64;
        match result {
            Ok(missed) => {
                outcome.histogram.record(micros);
                outcome.ops += 1;
                outcome.misses += u64::from(missed);
            }
            Err(e) => {
                outcome.errors += 1;
                // Reconnect once; give up if that fails too.
                match Conn::open(args.protocol, &args.coordinator) {
                    Ok(fresh) => conn = fresh,
                    Err(again) => {
                        outcome.fatal = Some(format!("{e}; reconnect failed: {again}"));
                        return outcome;
                    }
                }
            }
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_percentiles_are_within_the_bucket_error() {
        let mut h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        for (p, exact) in [(50.0, 5_000.0), (99.0, 9_900.0), (99.9, 9_990.0)] {
            let got = h.percentile(p) as f64;
            assert!(
                (got - exact).abs() / exact <= 0.0625,
                "p{p}: {got} vs {exact}"
            );
        }
        assert_eq!(h.max(), 10_000);
        assert_eq!(h.count(), 10_000);
        assert_eq!(Histogram::default().percentile(99.0), 0);
        for v in [0, 1, 15, 16, 17, 1000, u64::MAX] {
            let lowest = Histogram::lowest(Histogram::index(v));
            assert!(lowest <= v && v - lowest <= v / 16, "{v} -> {lowest}");
        }
    }

    #[test]
    fn merging_adds_counts() {
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        a.record(10);
        b.record(20);
        b.record(30);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.max(), 30);
    }

    #[test]
    fn json_line_has_every_figure() {
        let report = Report {
            protocol: Protocol::Memcache,
            target: "127.0.0.1:1".into(),
            connections: 8,
            seconds: 2.0,
            ops: 1000,
            errors: 1,
            misses: 2,
            p50_us: 80,
            p99_us: 400,
            p999_us: 900,
            max_us: 2100,
            get_ratio: 0.9,
            value_size: 100,
            keys: 10,
        };
        let json = report.json();
        assert!(json.starts_with('{') && json.ends_with('}') && !json.contains('\n'));
        for part in [
            "\"protocol\":\"memcache\"",
            "\"ops\":1000",
            "\"ops_per_sec\":500.0",
            "\"errors\":1",
            "\"p99_us\":400",
            "\"p999_us\":900",
            "\"max_us\":2100",
        ] {
            assert!(json.contains(part), "{json} lacks {part}");
        }
        assert!(report.human().contains("500 ops/s"));
    }

    #[test]
    fn memcache_replies_parse() {
        assert!(parse_set_reply("STORED").is_ok());
        assert!(parse_set_reply("SERVER_ERROR out of memory").is_err());
        assert_eq!(parse_get_header("END").unwrap(), None);
        assert_eq!(parse_get_header("VALUE key:1 0 100").unwrap(), Some(100));
        assert_eq!(parse_get_header("VALUE key:1 0 5 77").unwrap(), Some(5));
        assert!(parse_get_header("SERVER_ERROR no slaves").is_err());
        assert!(parse_get_header("VALUE key:1 0 x").is_err());
    }

    #[test]
    fn flags_are_checked() {
        assert!(ratio("1.5").is_err());
        assert!(positive("0").is_err());
        assert!(protocol("resp").is_err());
        let args = BenchArgs::from_args(&["piazza-bench"], &["--ops", "10", "--json"]).unwrap();
        assert_eq!(args.ops, Some(10));
        assert!(args.json);
    }
}
