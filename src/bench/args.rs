//! Flags ([`BenchArgs`]), their checks, and the `Plan` every thread shares.

use std::fmt;
use std::io::Write;
use std::time::Duration;

use argh::FromArgs;

use super::rng::Rng;
use super::{MAX_CONNECTIONS, MAX_MULTIGET, MAX_PIPELINE, MAX_VALUE_SIZE};
use crate::config::DEFAULT_COORDINATOR;

/// piazza-bench: closed-loop load generator. Runs N connections against a Piazza
/// coordinator (or any memcached, with --protocol memcache) and prints ops/s and latency
/// percentiles (p50, p99, p99.9, max). Workloads: gets and sets (default), incr, gets
/// then cas, sets with an expiry; gets of one key or of --multiget N keys.
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
    /// share of gets, from 0 to 1; the rest are sets (default 0.9; workloads get-set and
    /// set-ttl)
    #[argh(option, default = "0.9", from_str_fn(parse_ratio))]
    pub get_ratio: f64,
    /// binary (Piazza's protocol), memcache (text; works against memcached too) or resp
    /// (Redis) (default binary)
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
    /// send each request to the key's primary slave; see protocol.md, "Direct routing");
    /// with --pipeline N, each batch of N goes out as one write per slave
    #[argh(switch)]
    pub direct: bool,
    /// check every read: each connection owns its own slice of the keys, writes values
    /// it can recognise, and counts any get that does not return what it last stored
    #[argh(switch)]
    pub verify: bool,
    /// print one JSON line with the figures instead of text
    #[argh(switch)]
    pub json: bool,
    /// what each operation is (default get-set): get-set (gets and sets, --get-ratio);
    /// incr (incr by 1 of a counter: --keys 1 is one hot key); cas (gets, then cas of a
    /// new value with the unique it returned: one operation, counted as stored or as an
    /// EXISTS conflict); set-ttl (like get-set, each set with an exptime of --ttl). incr
    /// and cas write their keys before timing, as --preload does (counters start at 0).
    /// binary and memcache speak all four; resp: get-set, incr, set-ttl; --direct:
    /// get-set. With --pipeline N, cas sends N gets, then their N cas: two round trips
    #[argh(option, default = "Workload::GetSet", from_str_fn(parse_workload))]
    pub workload: Workload,
    /// with --workload set-ttl: the exptime of every set, in seconds (default 300, at
    /// most 2592000: 30 days, memcached's limit for a relative time)
    #[argh(option, default = "300", from_str_fn(parse_ttl))]
    pub ttl: u32,
    /// every get asks for N keys at once (default 1, at most 100): memcache `get k1 ...
    /// kN`, resp `MGET`, binary N GET frames back to back (pipelined); reports keys/s as
    /// well as requests/s (a get of N keys is one operation). Workloads get-set and
    /// set-ttl; not with --verify or --direct
    #[argh(option, default = "1", from_str_fn(parse_multiget))]
    pub multiget: u64,
    /// with --protocol binary and --multiget N: one MULTI_GET frame per get (the
    /// coordinator reads the keys from every slave at once) instead of N GET frames
    #[argh(switch)]
    pub multiget_op: bool,
}

impl BenchArgs {
    /// Checks that the flags go together.
    ///
    /// # Errors
    /// The first pair of flags that does not; its message says how to fix it.
    pub(super) fn check(&self) -> Result<(), UsageError> {
        let protocol = if self.direct {
            Protocol::Direct
        } else {
            self.protocol
        };
        if self.direct && self.protocol != Protocol::Binary {
            return Err(UsageError::DirectNeedsBinary);
        }
        let spoken = match protocol {
            Protocol::Binary | Protocol::Memcache => true,
            Protocol::Resp => self.workload != Workload::Cas,
            Protocol::Direct => self.workload == Workload::GetSet,
        };
        if !spoken {
            return Err(UsageError::NotSpoken {
                workload: self.workload,
                by: if self.direct {
                    "--direct"
                } else {
                    protocol_flag(protocol)
                },
            });
        }
        if self.multiget > 1 && !self.workload.has_gets() {
            return Err(UsageError::MultigetNeedsGets(self.workload));
        }
        if self.multiget > 1 && (self.verify || self.direct) {
            return Err(UsageError::MultigetWithVerifyOrDirect);
        }
        if self.verify && !self.workload.has_gets() {
            return Err(UsageError::VerifyNeedsGets(self.workload));
        }
        if self.multiget_op && (protocol != Protocol::Binary || self.multiget < 2) {
            return Err(UsageError::MultigetOpNeedsBinaryMultiget);
        }
        if self.redis_wait && self.workload != Workload::GetSet {
            return Err(UsageError::RedisWaitNeedsGetSet);
        }
        Ok(())
    }
}

/// Flags that do not go together. Each message says how to fix them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageError {
    /// `--direct` with a protocol other than binary.
    DirectNeedsBinary,
    /// A workload the chosen protocol (`by`, its flag) does not speak.
    NotSpoken {
        /// The workload asked for.
        workload: Workload,
        /// The flag that chose the protocol.
        by: &'static str,
    },
    /// `--multiget` with a workload that does no gets.
    MultigetNeedsGets(Workload),
    /// `--multiget` with `--verify` or `--direct`.
    MultigetWithVerifyOrDirect,
    /// `--verify` with a workload that does no gets.
    VerifyNeedsGets(Workload),
    /// `--multiget-op` without `--protocol binary` and `--multiget` of 2 or more.
    MultigetOpNeedsBinaryMultiget,
    /// `--redis-wait` with a workload other than get-set.
    RedisWaitNeedsGetSet,
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsageError::DirectNeedsBinary => write!(
                f,
                "--direct needs --protocol binary (direct routing speaks Piazza's frames)"
            ),
            UsageError::NotSpoken { workload, by } => write!(
                f,
                "--workload {workload} is not spoken by {by} (binary and memcache speak every workload; resp: get-set, incr, set-ttl; --direct: get-set)"
            ),
            UsageError::MultigetNeedsGets(workload) => write!(
                f,
                "--multiget needs gets: use it with --workload get-set or set-ttl, not {workload}"
            ),
            UsageError::MultigetWithVerifyOrDirect => {
                write!(f, "--multiget does not go with --verify or --direct")
            }
            UsageError::VerifyNeedsGets(workload) => write!(
                f,
                "--verify checks gets against sets: use it with --workload get-set or set-ttl, not {workload}"
            ),
            UsageError::MultigetOpNeedsBinaryMultiget => write!(
                f,
                "--multiget-op needs --protocol binary and --multiget 2 or more"
            ),
            UsageError::RedisWaitNeedsGetSet => {
                write!(f, "--redis-wait goes with --workload get-set only")
            }
        }
    }
}

impl std::error::Error for UsageError {}

/// The `--protocol` value naming `protocol`.
fn protocol_flag(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Binary | Protocol::Direct => "--protocol binary",
        Protocol::Memcache => "--protocol memcache",
        Protocol::Resp => "--protocol resp",
    }
}

/// What each operation of a run is (`--workload`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Gets and sets, `--get-ratio` of them gets.
    GetSet,
    /// `incr` by 1.
    Incr,
    /// `gets`, then `cas` of a new value with the unique it returned.
    Cas,
    /// Like [`Workload::GetSet`], each set with an exptime of `--ttl` seconds.
    SetTtl,
}

impl Workload {
    /// True for the workloads made of gets and sets.
    pub fn has_gets(self) -> bool {
        matches!(self, Workload::GetSet | Workload::SetTtl)
    }

    /// True for the workloads that write every key before timing.
    pub fn needs_keys(self) -> bool {
        matches!(self, Workload::Incr | Workload::Cas)
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Workload::GetSet => "get-set",
            Workload::Incr => "incr",
            Workload::Cas => "cas",
            Workload::SetTtl => "set-ttl",
        })
    }
}

fn parse_workload(value: &str) -> Result<Workload, String> {
    match value {
        "get-set" | "getset" => Ok(Workload::GetSet),
        "incr" => Ok(Workload::Incr),
        "cas" => Ok(Workload::Cas),
        "set-ttl" | "ttl" => Ok(Workload::SetTtl),
        other => Err(format!(
            "unknown workload '{other}' (use get-set, incr, cas or set-ttl)"
        )),
    }
}

/// memcached reads a larger exptime as an absolute Unix time.
const MAX_TTL: u32 = 30 * 24 * 3600;

fn parse_ttl(value: &str) -> Result<u32, String> {
    match value.parse::<u32>() {
        Ok(0) => Err("must be greater than 0 (0 means no expiry: use --workload get-set)".into()),
        Ok(n) if n <= MAX_TTL => Ok(n),
        _ => Err(format!(
            "'{value}' is not a number of seconds from 1 to {MAX_TTL}"
        )),
    }
}

fn parse_multiget(value: &str) -> Result<u64, String> {
    match parse_positive(value)? {
        n if n > MAX_MULTIGET => Err(format!("at most {MAX_MULTIGET} keys per get")),
        n => Ok(n),
    }
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
    /// Piazza's binary frames with direct routing (`--direct`); a batch of `--pipeline`
    /// requests goes out as one write per slave.
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

/// What every thread needs, shared read-only.
pub(super) struct Plan {
    /// The protocol spoken (`Direct` with `--direct`).
    pub(super) protocol: Protocol,
    /// The address loaded (`--coordinator`).
    pub(super) addr: String,
    /// Keys `key:0` to `key:<n_keys - 1>` (`--keys`).
    pub(super) n_keys: u64,
    /// Share of operations that are gets (`--get-ratio`).
    pub(super) get_ratio: f64,
    /// Seed of every thread's random choices (`--seed`).
    pub(super) seed: u64,
    /// `None` when the run is bounded by an operation count instead.
    pub(super) duration: Option<Duration>,
    /// The value every set writes (`--value-size` bytes).
    pub(super) value: Vec<u8>,
    /// Cumulative probabilities of key ranks, for `--zipf`; `None`: uniform.
    pub(super) zipf: Option<Vec<f64>>,
    /// Check each get against what was last stored (`--verify`).
    pub(super) verify: bool,
    /// Every key is written before the timed part (`--preload`, or a workload that
    /// needs the keys there).
    pub(super) preloaded: bool,
    /// Connections, one thread each (`--connections`).
    pub(super) connections: u64,
    /// Redis: `WAIT 1 0` after every batch holding a SET (`--redis-wait`).
    pub(super) redis_wait: bool,
    /// Requests in flight per connection (`--pipeline`).
    pub(super) pipeline: usize,
    /// What each operation is (`--workload`).
    pub(super) workload: Workload,
    /// Exptime of a set, `--workload set-ttl`.
    pub(super) ttl: u32,
    /// Keys per get (`--multiget`).
    pub(super) multiget: usize,
    /// A binary multi-key get is one MULTI_GET frame (`--multiget-op`).
    pub(super) multiget_op: bool,
}

impl Plan {
    pub(super) fn from_args(args: &BenchArgs) -> Plan {
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
            preloaded: args.preload || args.workload.needs_keys(),
            connections: args.connections,
            redis_wait: args.redis_wait,
            // At most MAX_PIPELINE (checked when parsing), so it fits any usize.
            pipeline: usize::try_from(args.pipeline).unwrap_or(1).max(1),
            workload: args.workload,
            ttl: args.ttl,
            // At most MAX_MULTIGET (checked when parsing).
            multiget: usize::try_from(args.multiget).unwrap_or(1).max(1),
            multiget_op: args.multiget_op,
        }
    }

    /// What the preload (and the start of `incr` and `cas`) writes: a counter at 0 for
    /// `incr`, else the value pattern.
    pub(super) fn initial_value(&self) -> &[u8] {
        match self.workload {
            Workload::Incr => b"0",
            _ => &self.value,
        }
    }

    /// The next key number for connection `index`: zipfian or uniform, and with
    /// `--verify` only from the connection's own slice (n % connections == index).
    pub(super) fn pick(&self, rng: &mut Rng, index: u64) -> u64 {
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
pub(super) fn zipf_cdf(n: u64, s: f64) -> Vec<f64> {
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
pub(super) fn value_pattern(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Writes `key:<n>` into `buf`, replacing what was there.
pub(super) fn format_key(buf: &mut Vec<u8>, n: u64) {
    buf.clear();
    write!(buf, "key:{n}").expect("writing to a Vec cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::worker::verify_value;

    #[test]
    fn keys_are_named_key_colon_number() {
        let mut key = b"key:123456".to_vec();
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
}
