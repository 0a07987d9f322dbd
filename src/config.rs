//! Command-line flags of every binary (argh structs whose `///` lines are the `--help`
//! text) and the typed configurations the servers run with (`Duration`, not `_ms`).
//!
//! Flags are parsed in `bin/`; this module only turns them into configs and checks them.
//! It does no I/O.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use argh::FromArgs;
use log::LevelFilter;

/// Default TCP address of the coordinator.
pub const DEFAULT_COORDINATOR: &str = "127.0.0.1:7400";
/// Default UDP heartbeat address of the coordinator.
pub const DEFAULT_HEARTBEAT: &str = "127.0.0.1:7401";
/// Default TCP address of a slave.
pub const DEFAULT_SLAVE: &str = "127.0.0.1:7410";

/// Parses a `--log-level` value.
pub fn parse_level(value: &str) -> Result<LevelFilter, String> {
    match value.to_ascii_lowercase().as_str() {
        "off" => Ok(LevelFilter::Off),
        "error" => Ok(LevelFilter::Error),
        "warn" => Ok(LevelFilter::Warn),
        "info" => Ok(LevelFilter::Info),
        "debug" => Ok(LevelFilter::Debug),
        "trace" => Ok(LevelFilter::Trace),
        other => Err(format!(
            "unknown log level '{other}' (use error, warn, info, debug or trace)"
        )),
    }
}

/// Parses `--tombstone-grace-secs`: at least [`MIN_TOMBSTONE_GRACE_SECS`].
fn parse_tombstone_grace(value: &str) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(n) if n >= MIN_TOMBSTONE_GRACE_SECS => Ok(n),
        Ok(_) => Err(format!(
            "must be at least {MIN_TOMBSTONE_GRACE_SECS} second: a tombstone must outlive every write older than it still under way (twice --slave-timeout-ms) plus the clock skew between machines"
        )),
        Err(_) => Err(format!("'{value}' is not a whole number of seconds")),
    }
}

/// The shortest `--tombstone-grace-secs` accepted.
pub const MIN_TOMBSTONE_GRACE_SECS: u64 = 1;

fn parse_positive(value: &str) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(0) => Err("must be greater than 0".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("'{value}' is not a whole number")),
    }
}

/// Why flags cannot be turned into a configuration, or a configuration cannot serve
/// where it is asked to. Each message says what to do.
#[derive(Debug)]
pub enum ConfigError {
    /// `--secret-file` cannot be read.
    SecretUnreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The secret, from the file or `PIAZZA_SECRET`, is empty.
    SecretEmpty,
    /// Protected mode: a non-loopback address without a secret or `--insecure`.
    Unprotected {
        /// The address refused.
        addr: SocketAddr,
        /// The flag that set it.
        flag: &'static str,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::SecretUnreadable { path, source } => {
                write!(f, "cannot read --secret-file {}: {source}", path.display())
            }
            ConfigError::SecretEmpty => write!(
                f,
                "the cluster secret is empty (check --secret-file or PIAZZA_SECRET)"
            ),
            ConfigError::Unprotected { addr, flag } => write!(
                f,
                "refusing to serve on {addr} ({flag}) without a cluster secret: anyone who can reach it could join the ring or read and change data; set --secret-file (or PIAZZA_SECRET), or pass --insecure if the network is trusted"
            ),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::SecretUnreadable { source, .. } => Some(source),
            ConfigError::SecretEmpty | ConfigError::Unprotected { .. } => None,
        }
    }
}

/// Reads the cluster secret: from `--secret-file` if given, else from the environment
/// variable `PIAZZA_SECRET`, else none. Surrounding white space is dropped.
///
/// # Errors
/// When the file cannot be read or the secret is empty.
pub fn load_secret(file: Option<&PathBuf>) -> Result<Option<Vec<u8>>, ConfigError> {
    let raw = match file {
        Some(path) => std::fs::read(path).map_err(|source| ConfigError::SecretUnreadable {
            path: path.clone(),
            source,
        })?,
        None => match std::env::var_os("PIAZZA_SECRET") {
            Some(value) => value.into_encoded_bytes(),
            None => return Ok(None),
        },
    };
    let secret = raw.trim_ascii().to_vec();
    if secret.is_empty() {
        return Err(ConfigError::SecretEmpty);
    }
    Ok(Some(secret))
}

/// Who may talk to a server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    /// The cluster secret slaves and the coordinator present to each other.
    pub secret: Option<Vec<u8>>,
    /// Clients must present the secret too (coordinator only).
    pub require_auth: bool,
    /// Allow a non-loopback address without a secret.
    pub insecure: bool,
}

impl Security {
    /// Protected mode, as in Redis: refuses to serve a non-loopback address without a
    /// secret unless `insecure`.
    ///
    /// # Errors
    /// [`ConfigError::Unprotected`], whose message says what to do.
    pub fn check_bind(&self, addr: SocketAddr, flag: &'static str) -> Result<(), ConfigError> {
        if addr.ip().is_loopback() || self.secret.is_some() || self.insecure {
            return Ok(());
        }
        Err(ConfigError::Unprotected { addr, flag })
    }
}

/// Limits and timeouts every server shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connection threads at most; past it a new connection gets an error and is closed.
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// A request must arrive whole within this long of its first byte (and a reply be
    /// taken by the client within it), or the connection is closed.
    pub request_timeout: Duration,
    /// Largest key in a binary frame.
    pub max_key_bytes: usize,
    /// Largest value.
    pub max_value_bytes: usize,
    /// Requests of one connection under way at once, at most (pipelining); a client that
    /// sends more without reading replies is not read from until it does.
    pub pipeline_window: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 1024,
            idle_timeout: Duration::from_secs(300),
            request_timeout: Duration::from_secs(10),
            max_key_bytes: crate::wire::DEFAULT_MAX_KEY,
            max_value_bytes: crate::wire::DEFAULT_MAX_VALUE,
            pipeline_window: DEFAULT_PIPELINE_WINDOW,
        }
    }
}

/// Requests of one connection under way at once, by default.
pub const DEFAULT_PIPELINE_WINDOW: usize = 64;

/// The coordinator's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorConfig {
    /// TCP address for clients (both protocols) and slave registration.
    pub listen: String,
    /// UDP address for slave heartbeats.
    pub heartbeat: String,
    /// Where membership state is kept.
    pub data_dir: PathBuf,
    /// How often slaves are expected to send a heartbeat.
    pub heartbeat_interval: Duration,
    /// A slave silent for this long is declared dead.
    pub failure_timeout: Duration,
    /// How long the coordinator waits for a slave's reply.
    pub slave_timeout: Duration,
    /// How old a tombstone or an expired value must be before slaves drop it.
    pub tombstone_grace: Duration,
    /// Open connections kept to each slave, each carrying many requests at once.
    pub links_per_slave: usize,
    /// Connection and size limits.
    pub limits: ServerLimits,
    /// Secret and protected mode.
    pub security: Security,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            listen: DEFAULT_COORDINATOR.into(),
            heartbeat: DEFAULT_HEARTBEAT.into(),
            data_dir: PathBuf::from("./piazza-data/coordinator"),
            heartbeat_interval: Duration::from_millis(1000),
            failure_timeout: Duration::from_millis(3000),
            slave_timeout: Duration::from_millis(5000),
            tombstone_grace: Duration::from_secs(60),
            links_per_slave: 1,
            limits: ServerLimits::default(),
            security: Security::default(),
        }
    }
}

/// A slave's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlaveConfig {
    /// TCP address to serve on.
    pub listen: String,
    /// The address to tell the coordinator (defaults to the bound address).
    pub advertise: Option<String>,
    /// The coordinator's TCP address.
    pub coordinator: String,
    /// Where the slave keeps its data (`None`: `./piazza-data/slave-<port>`).
    pub data_dir: Option<PathBuf>,
    /// How often to send a heartbeat.
    pub heartbeat_interval: Duration,
    /// How long to keep trying to reach the coordinator at start.
    pub register_timeout: Duration,
    /// When the log is synced to disk.
    pub fsync: Fsync,
    /// How long a graceful leave waits for the hand-off of its ranges.
    pub leave_timeout: Duration,
    /// Cut a log that is corrupt in the middle instead of refusing to start.
    pub salvage: bool,
    /// Compact the log once it is larger than this and than twice the last snapshot.
    pub compact_min_bytes: u64,
    /// Connection and size limits.
    pub limits: ServerLimits,
    /// Secret and protected mode.
    pub security: Security,
}

impl Default for SlaveConfig {
    fn default() -> Self {
        SlaveConfig {
            listen: DEFAULT_SLAVE.into(),
            advertise: None,
            coordinator: DEFAULT_COORDINATOR.into(),
            data_dir: None,
            heartbeat_interval: Duration::from_millis(1000),
            register_timeout: Duration::from_secs(10),
            fsync: Fsync::EverySec,
            leave_timeout: Duration::from_secs(120),
            salvage: false,
            compact_min_bytes: 64 * 1024 * 1024,
            limits: ServerLimits::default(),
            security: Security::default(),
        }
    }
}

/// When a slave syncs its log to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Before acknowledging every write.
    Always,
    /// Once a second, from a background thread.
    EverySec,
    /// Left to the operating system.
    Never,
}

/// Parses an `--fsync` value.
pub fn parse_fsync(value: &str) -> Result<Fsync, String> {
    match value {
        "always" => Ok(Fsync::Always),
        "everysec" => Ok(Fsync::EverySec),
        "never" => Ok(Fsync::Never),
        other => Err(format!(
            "unknown fsync mode '{other}' (use always, everysec or never)"
        )),
    }
}

/// Declares a server's flags struct (argh has no `flatten`): the fields written in it, with
/// the limit flags both servers share written once, here, where `..limit_flags(..)`
/// stands (only the `--max-connections` line of `--help` differs between them), and
/// `server_limits`, which turns those flags into [`ServerLimits`]. Field types are written
/// as plain names (`bool`, `Option<PathBuf>`), so argh's derive can still see a switch's
/// `bool`.
macro_rules! server_args {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($(#[$before_meta:meta])* pub $before:ident: $before_ty:ident $(<$before_of:ident>)?,)*
            ..limit_flags(connections = $connections_help:literal),
            $($(#[$after_meta:meta])* pub $after:ident: $after_ty:ident $(<$after_of:ident>)?,)*
        }
    ) => {
        $(#[$meta])*
        #[derive(FromArgs, Debug)]
        pub struct $name {
            $($(#[$before_meta])* pub $before: $before_ty $(<$before_of>)?,)*
            #[doc = $connections_help]
            #[argh(option, default = "1024", from_str_fn(parse_positive))]
            pub max_connections: u64,
            /// close a connection idle this long, in ms (default 300000)
            #[argh(option, default = "300000", from_str_fn(parse_positive))]
            pub idle_timeout_ms: u64,
            /// close a connection whose request does not arrive whole within this long of its
            /// first byte, in ms (default 10000)
            #[argh(option, default = "10000", from_str_fn(parse_positive))]
            pub request_timeout_ms: u64,
            /// largest value accepted, in bytes (default 1048576)
            #[argh(option, default = "1048576", from_str_fn(parse_positive))]
            pub max_value_bytes: u64,
            /// largest key accepted in a binary frame, in bytes (default 65536; the text
            /// protocol's limit is memcached's 250)
            #[argh(option, default = "65536", from_str_fn(parse_positive))]
            pub max_key_bytes: u64,
            $($(#[$after_meta])* pub $after: $after_ty $(<$after_of>)?,)*
        }

        impl $name {
            /// The connection and size limits these flags set, with `pipeline_window`.
            pub fn server_limits(&self, pipeline_window: usize) -> ServerLimits {
                ServerLimits {
                    max_connections: self.max_connections as usize,
                    idle_timeout: Duration::from_millis(self.idle_timeout_ms),
                    request_timeout: Duration::from_millis(self.request_timeout_ms),
                    max_value_bytes: self.max_value_bytes as usize,
                    max_key_bytes: self.max_key_bytes as usize,
                    pipeline_window,
                }
            }
        }
    };
}

server_args! {
/// piazza-coordinator: the coordination server. It keeps the ring of slaves, routes every
/// request to the key's primary and replica, and serves Piazza's binary protocol and
/// memcached's protocols (text, meta commands, binary) on the same TCP port.
pub struct CoordinatorArgs {
    /// TCP address for clients and slaves (default 127.0.0.1:7400; port 0 picks a free port)
    #[argh(option, default = "DEFAULT_COORDINATOR.into()")]
    pub listen: String,
    /// UDP address for slave heartbeats (default 127.0.0.1:7401; port 0 picks a free port)
    #[argh(option, default = "DEFAULT_HEARTBEAT.into()")]
    pub heartbeat: String,
    /// directory for the coordinator's membership state (default ./piazza-data/coordinator)
    #[argh(option, default = "PathBuf::from(\"./piazza-data/coordinator\")")]
    pub data_dir: PathBuf,
    /// expected interval between a slave's heartbeats in ms (default 1000)
    #[argh(option, default = "1000", from_str_fn(parse_positive))]
    pub heartbeat_interval_ms: u64,
    /// a slave silent this long (ms) is declared dead (default 3000)
    #[argh(option, default = "3000", from_str_fn(parse_positive))]
    pub failure_timeout_ms: u64,
    /// how long to wait for a slave's reply, in ms (default 5000)
    #[argh(option, default = "5000", from_str_fn(parse_positive))]
    pub slave_timeout_ms: u64,
    /// seconds a tombstone (delete) or an expired value is kept before slaves drop it
    /// (default 60, at least 1): must exceed twice --slave-timeout-ms plus the clock skew
    /// between machines, or a late write older than a dropped delete could come back
    #[argh(option, default = "60", from_str_fn(parse_tombstone_grace))]
    pub tombstone_grace_secs: u64,
    /// open connections to each slave, each carrying many requests at once (default 1:
    /// one connection batches best; see BENCHMARKS.md)
    #[argh(option, default = "1", from_str_fn(parse_positive))]
    pub links_per_slave: u64,
    ..limit_flags(connections = "most client connections served at once (default 1024)"),
    /// requests of one client connection in flight at once, at most (pipelining; default
    /// 64): a client that sends more without reading its replies is not read from until
    /// it does
    #[argh(option, default = "64", from_str_fn(parse_positive))]
    pub pipeline_window: u64,
    /// file holding the cluster secret (default: the PIAZZA_SECRET environment variable;
    /// none: no secret)
    #[argh(option)]
    pub secret_file: Option<PathBuf>,
    /// serve a non-loopback address without a secret (protected mode is on otherwise)
    #[argh(switch)]
    pub insecure: bool,
    /// clients must present the secret too (binary AUTH, or text `auth <secret>`)
    #[argh(switch)]
    pub require_auth: bool,
    /// log level: error, warn, info, debug or trace (default info)
    #[argh(option, default = "LevelFilter::Info", from_str_fn(parse_level))]
    pub log_level: LevelFilter,
}
}

impl CoordinatorArgs {
    /// The typed configuration these flags describe.
    ///
    /// # Errors
    /// When the secret cannot be read.
    pub fn config(&self) -> Result<CoordinatorConfig, ConfigError> {
        Ok(CoordinatorConfig {
            security: Security {
                secret: load_secret(self.secret_file.as_ref())?,
                require_auth: self.require_auth,
                insecure: self.insecure,
            },
            listen: self.listen.clone(),
            heartbeat: self.heartbeat.clone(),
            data_dir: self.data_dir.clone(),
            heartbeat_interval: Duration::from_millis(self.heartbeat_interval_ms),
            failure_timeout: Duration::from_millis(self.failure_timeout_ms),
            slave_timeout: Duration::from_millis(self.slave_timeout_ms),
            tombstone_grace: Duration::from_secs(self.tombstone_grace_secs),
            links_per_slave: self.links_per_slave as usize,
            limits: self.server_limits(self.pipeline_window as usize),
        })
    }
}

server_args! {
/// piazza-slave: a storage node. It holds an `own` table (the keys it is primary for) and a
/// `previous` table (a copy of its predecessor's `own`), registers with the coordinator, and
/// serves the coordinator's requests.
pub struct SlaveArgs {
    /// TCP address to serve on (default 127.0.0.1:7410; port 0 picks a free port)
    #[argh(option, default = "DEFAULT_SLAVE.into()")]
    pub listen: String,
    /// address to give the coordinator, if not the bound one (for 0.0.0.0 binds)
    #[argh(option)]
    pub advertise: Option<String>,
    /// the coordinator's TCP address (default 127.0.0.1:7400)
    #[argh(option, default = "DEFAULT_COORDINATOR.into()")]
    pub coordinator: String,
    /// data directory (default ./piazza-data/slave-<port>)
    #[argh(option)]
    pub data_dir: Option<PathBuf>,
    /// interval between heartbeats in ms (default 1000)
    #[argh(option, default = "1000", from_str_fn(parse_positive))]
    pub heartbeat_interval_ms: u64,
    /// how long to keep trying to reach the coordinator at start, in ms (default 10000)
    #[argh(option, default = "10000", from_str_fn(parse_positive))]
    pub register_timeout_ms: u64,
    /// when to sync the log to disk: always, everysec or never (default everysec)
    #[argh(option, default = "Fsync::EverySec", from_str_fn(parse_fsync))]
    pub fsync: Fsync,
    /// on Ctrl-C, how long to wait for the hand-off of this slave's data, in ms
    /// (default 120000)
    #[argh(option, default = "120000", from_str_fn(parse_positive))]
    pub leave_timeout_ms: u64,
    /// start even if the log is corrupt before its last record, cutting it there (what
    /// follows the damage is lost; the other copies refill it when the slave joins)
    #[argh(switch)]
    pub salvage: bool,
    /// compact the log once it passes this many bytes and twice the last snapshot
    /// (default 67108864)
    #[argh(option, default = "64 * 1024 * 1024", from_str_fn(parse_positive))]
    pub compact_min_bytes: u64,
    ..limit_flags(connections = "most connections served at once (default 1024)"),
    /// file holding the cluster secret (default: the PIAZZA_SECRET environment variable;
    /// none: no secret)
    #[argh(option)]
    pub secret_file: Option<PathBuf>,
    /// serve a non-loopback address without a secret (protected mode is on otherwise)
    #[argh(switch)]
    pub insecure: bool,
    /// log level: error, warn, info, debug or trace (default info)
    #[argh(option, default = "LevelFilter::Info", from_str_fn(parse_level))]
    pub log_level: LevelFilter,
}
}

impl SlaveArgs {
    /// The typed configuration these flags describe.
    ///
    /// # Errors
    /// When the secret cannot be read.
    pub fn config(&self) -> Result<SlaveConfig, ConfigError> {
        Ok(SlaveConfig {
            security: Security {
                secret: load_secret(self.secret_file.as_ref())?,
                require_auth: false,
                insecure: self.insecure,
            },
            listen: self.listen.clone(),
            advertise: self.advertise.clone(),
            coordinator: self.coordinator.clone(),
            data_dir: self.data_dir.clone(),
            heartbeat_interval: Duration::from_millis(self.heartbeat_interval_ms),
            register_timeout: Duration::from_millis(self.register_timeout_ms),
            fsync: self.fsync,
            leave_timeout: Duration::from_millis(self.leave_timeout_ms),
            salvage: self.salvage,
            compact_min_bytes: self.compact_min_bytes,
            limits: self.server_limits(DEFAULT_PIPELINE_WINDOW),
        })
    }
}

/// piazza-cluster: runs a whole local cluster in the foreground: one coordinator and N
/// slaves, each a real TCP server on its own port, in this one process. Ctrl-C stops
/// everything cleanly.
#[derive(FromArgs, Debug)]
pub struct ClusterArgs {
    /// number of slaves (default 3)
    #[argh(option, default = "3", from_str_fn(parse_positive))]
    pub slaves: u64,
    /// the coordinator's TCP address (default 127.0.0.1:7400)
    #[argh(option, default = "DEFAULT_COORDINATOR.into()")]
    pub listen: String,
    /// the coordinator's UDP heartbeat address (default 127.0.0.1:7401)
    #[argh(option, default = "DEFAULT_HEARTBEAT.into()")]
    pub heartbeat: String,
    /// first slave port; slaves take consecutive ports from it; 0 lets the OS pick each
    /// (default 7410)
    #[argh(option, default = "7410")]
    pub slave_port: u16,
    /// directory for all data (default ./piazza-data)
    #[argh(option, default = "PathBuf::from(\"./piazza-data\")")]
    pub data_dir: PathBuf,
    /// interval between heartbeats in ms (default 1000)
    #[argh(option, default = "1000", from_str_fn(parse_positive))]
    pub heartbeat_interval_ms: u64,
    /// a slave silent this long (ms) is declared dead (default 3000)
    #[argh(option, default = "3000", from_str_fn(parse_positive))]
    pub failure_timeout_ms: u64,
    /// when slaves sync their logs: always, everysec or never (default everysec)
    #[argh(option, default = "Fsync::EverySec", from_str_fn(parse_fsync))]
    pub fsync: Fsync,
    /// open connections from the coordinator to each slave (default 1)
    #[argh(option, default = "1", from_str_fn(parse_positive))]
    pub links_per_slave: u64,
    /// log level: error, warn, info, debug or trace (default info)
    #[argh(option, default = "LevelFilter::Info", from_str_fn(parse_level))]
    pub log_level: LevelFilter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protected_mode_refuses_open_addresses_without_a_secret() {
        let open: SocketAddr = "0.0.0.0:7400".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:7400".parse().unwrap();
        let none = Security::default();
        assert!(none.check_bind(local, "--listen").is_ok());
        let err = none.check_bind(open, "--listen").unwrap_err().to_string();
        assert!(
            err.contains("--secret-file") && err.contains("--insecure"),
            "{err}"
        );
        let secret = Security {
            secret: Some(b"s".to_vec()),
            ..Security::default()
        };
        assert!(secret.check_bind(open, "--listen").is_ok());
        let insecure = Security {
            insecure: true,
            ..Security::default()
        };
        assert!(insecure.check_bind(open, "--listen").is_ok());
    }

    #[test]
    fn defaults_match_the_contract() {
        let args = CoordinatorArgs::from_args(&["piazza-coordinator"], &[]).unwrap();
        let mut config = args.config().unwrap();
        config.security.secret = None; // PIAZZA_SECRET may be set where tests run
        assert_eq!(config, CoordinatorConfig::default());
        let args = SlaveArgs::from_args(&["piazza-slave"], &[]).unwrap();
        let mut config = args.config().unwrap();
        config.security.secret = None;
        assert_eq!(config, SlaveConfig::default());
    }

    #[test]
    fn both_servers_read_the_shared_limit_flags_alike() {
        let flags = [
            "--max-connections",
            "7",
            "--idle-timeout-ms",
            "8",
            "--request-timeout-ms",
            "9",
            "--max-value-bytes",
            "10",
            "--max-key-bytes",
            "11",
        ];
        let expected = ServerLimits {
            max_connections: 7,
            idle_timeout: Duration::from_millis(8),
            request_timeout: Duration::from_millis(9),
            max_value_bytes: 10,
            max_key_bytes: 11,
            pipeline_window: DEFAULT_PIPELINE_WINDOW,
        };
        let coordinator = CoordinatorArgs::from_args(&["c"], &flags).unwrap();
        assert_eq!(coordinator.config().unwrap().limits, expected);
        let slave = SlaveArgs::from_args(&["s"], &flags).unwrap();
        assert_eq!(slave.config().unwrap().limits, expected);
        // The pipeline window is the coordinator's alone.
        let mut with_window = flags.to_vec();
        with_window.extend(["--pipeline-window", "3"]);
        let coordinator = CoordinatorArgs::from_args(&["c"], &with_window).unwrap();
        assert_eq!(coordinator.config().unwrap().limits.pipeline_window, 3);
        assert!(SlaveArgs::from_args(&["s"], &with_window).is_err());
        let err = SlaveArgs::from_args(&["s"], &["--max-key-bytes", "0"]).unwrap_err();
        assert!(err.output.contains("greater than 0"), "{}", err.output);
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        let err = CoordinatorArgs::from_args(&["c"], &["--failure-timeout-ms", "0"]).unwrap_err();
        assert!(err.output.contains("greater than 0"), "{}", err.output);
        let err = CoordinatorArgs::from_args(&["c"], &["--tombstone-grace-secs", "0"]).unwrap_err();
        assert!(err.output.contains("at least 1 second"), "{}", err.output);
        let args = CoordinatorArgs::from_args(&["c"], &["--tombstone-grace-secs", "1"]).unwrap();
        assert_eq!(
            args.config().unwrap().tombstone_grace,
            Duration::from_secs(1)
        );
        let err = SlaveArgs::from_args(&["s"], &["--fsync", "sometimes"]).unwrap_err();
        assert!(err.output.contains("unknown fsync mode"), "{}", err.output);
        let err = SlaveArgs::from_args(&["s"], &["--log-level", "loud"]).unwrap_err();
        assert!(err.output.contains("unknown log level"), "{}", err.output);
    }
}
