//! Writer threads that keep overwriting their keys through a failure, and the check of
//! what they were acknowledged against what the cluster holds.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use piazza::Client;
use piazza::direct::{DirectClient, DirectStats};

use super::{Cluster, DEADLINE, Expected, wait_until};

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
