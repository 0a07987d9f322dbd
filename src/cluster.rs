//! A whole local cluster in one process: one coordinator and N slaves, each a real TCP
//! server on its own port, sharing one [`Shutdown`]. Ctrl-C stops all of them.
//!
//! Threads: each server's own (see `coordinator` and `slave`); [`run`] joins the slaves,
//! then the coordinator, after the shutdown is triggered.

use std::fmt;
use std::io::Write;
use std::path::Path;

use log::info;

use crate::config::{ClusterArgs, CoordinatorConfig, SlaveConfig};
use crate::coordinator::{self, CoordinatorError};
use crate::shutdown::Shutdown;
use crate::slave::{self, SlaveError};

/// Why the cluster could not start.
#[derive(Debug)]
pub enum ClusterError {
    /// The coordinator did not start.
    Coordinator(CoordinatorError),
    /// A slave did not start.
    Slave {
        /// Which one (0-based).
        index: u64,
        /// Why.
        source: SlaveError,
    },
    /// `--slave-port` plus the number of slaves runs past port 65535.
    Ports(String),
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterError::Coordinator(e) => write!(f, "coordinator: {e}"),
            ClusterError::Slave { index, source } => write!(f, "slave {index}: {source}"),
            ClusterError::Ports(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for ClusterError {}

/// Starts the cluster, prints where it serves and how to talk to it, and runs until
/// `shutdown` is triggered; then joins every server.
///
/// # Errors
/// When any server cannot start (everything started so far is stopped first).
pub fn run(args: &ClusterArgs, shutdown: Shutdown) -> Result<(), ClusterError> {
    let host = args
        .listen
        .rsplit_once(':')
        .map_or("127.0.0.1", |(host, _)| host)
        .to_string();
    let coordinator_config = CoordinatorConfig {
        listen: args.listen.clone(),
        heartbeat: args.heartbeat.clone(),
        data_dir: args.data_dir.join("coordinator"),
        heartbeat_interval: std::time::Duration::from_millis(args.heartbeat_interval_ms),
        failure_timeout: std::time::Duration::from_millis(args.failure_timeout_ms),
        links_per_slave: args.links_per_slave as usize,
        ..CoordinatorConfig::default()
    };
    let coordinator = coordinator::start(coordinator_config, shutdown.clone())
        .map_err(ClusterError::Coordinator)?;
    let mut slaves = Vec::new();
    for index in 0..args.slaves {
        let port = if args.slave_port == 0 {
            0
        } else {
            u16::try_from(u64::from(args.slave_port) + index).map_err(|_| {
                ClusterError::Ports(format!(
                    "--slave-port {} with {} slaves runs past port 65535",
                    args.slave_port, args.slaves
                ))
            })?
        };
        let config = SlaveConfig {
            listen: format!("{host}:{port}"),
            coordinator: coordinator.addr.to_string(),
            data_dir: Some(slave_dir(&args.data_dir, port, index)),
            heartbeat_interval: std::time::Duration::from_millis(args.heartbeat_interval_ms),
            fsync: args.fsync,
            ..SlaveConfig::default()
        };
        match slave::start(config, shutdown.clone()) {
            Ok(running) => slaves.push(running),
            Err(source) => {
                shutdown.trigger();
                for running in slaves {
                    running.wait();
                }
                coordinator.wait();
                return Err(ClusterError::Slave { index, source });
            }
        }
    }
    let slave_addrs: Vec<String> = slaves.iter().map(|s| s.addr.to_string()).collect();
    // Printed with writeln: a closed stdout must not take the cluster down.
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "piazza cluster: coordinator {} (heartbeats {}), {} slaves: {}",
        coordinator.addr,
        coordinator.heartbeat_addr,
        slaves.len(),
        slave_addrs.join(" ")
    );
    let _ = writeln!(
        out,
        "try: piazza-client --coordinator {0} put hello world   or   printf 'get hello\\r\\n' | nc -q1 {1} {2}",
        coordinator.addr,
        coordinator.addr.ip(),
        coordinator.addr.port()
    );
    let _ = writeln!(out, "Ctrl-C stops the cluster.");
    let _ = out.flush();
    info!("cluster ready");
    for running in slaves {
        running.wait();
    }
    coordinator.wait();
    info!("cluster stopped");
    Ok(())
}

fn slave_dir(data_dir: &Path, port: u16, index: u64) -> std::path::PathBuf {
    if port == 0 {
        data_dir.join(format!("slave-{index}"))
    } else {
        data_dir.join(format!("slave-{port}"))
    }
}
