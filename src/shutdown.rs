//! One-way shutdown signalling for a server and every thread it owns.
//!
//! The Ctrl-C handler (installed in `bin/`) calls [`Shutdown::trigger`], which
//! 1. sets the flag every loop checks,
//! 2. wakes every thread waiting in [`Shutdown::wait_timeout`] (timers, senders),
//! 3. connects once to each registered listen address, since std cannot interrupt a
//!    blocked `accept`, and
//! 4. shuts down every registered connection socket, so blocked reads return at once.
//!
//! Owners then join their threads. Nothing here joins anything: it only signals.
//! Lock order: `state` and `streams` are never held together.

use crate::sync::lock;
use std::collections::HashMap;
use std::net::{Shutdown as NetShutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// A cloneable handle to one shutdown signal.
#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    triggered: AtomicBool,
    state: Mutex<State>,
    wake: Condvar,
    streams: Mutex<HashMap<u64, TcpStream>>,
    next_stream: AtomicU64,
}

#[derive(Default)]
struct State {
    stopped: bool,
    listeners: Vec<SocketAddr>,
}

impl Shutdown {
    /// A fresh, untriggered signal.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// True once [`trigger`](Self::trigger) has been called.
    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::SeqCst)
    }

    /// Starts the shutdown. Safe to call more than once and from any thread.
    pub fn trigger(&self) {
        if self.inner.triggered.swap(true, Ordering::SeqCst) {
            return;
        }
        let listeners = {
            let mut state = lock(&self.inner.state);
            state.stopped = true;
            state.listeners.clone()
        };
        self.inner.wake.notify_all();
        for addr in listeners {
            // Wake the acceptor; it sees the flag and returns. A refused connection means
            // the listener is already gone, which is what we want anyway.
            let _ = TcpStream::connect_timeout(&wake_addr(addr), Duration::from_millis(500));
        }
        let streams: Vec<TcpStream> = lock(&self.inner.streams).drain().map(|(_, s)| s).collect();
        for stream in streams {
            let _ = stream.shutdown(NetShutdown::Both);
        }
    }

    /// Registers a listening address to connect to on shutdown (to unblock `accept`).
    pub fn register_listener(&self, addr: SocketAddr) {
        lock(&self.inner.state).listeners.push(addr);
    }

    /// Registers a connection to shut down on shutdown. The returned guard unregisters it
    /// when dropped. If the shutdown has already started, the stream is shut down at once.
    pub fn register_stream(&self, stream: &TcpStream) -> StreamGuard {
        let id = self.inner.next_stream.fetch_add(1, Ordering::Relaxed);
        if let Ok(clone) = stream.try_clone() {
            lock(&self.inner.streams).insert(id, clone);
        }
        if self.is_triggered() {
            let _ = stream.shutdown(NetShutdown::Both);
        }
        StreamGuard {
            shutdown: self.clone(),
            id,
        }
    }

    /// Sleeps for `timeout` unless the shutdown starts first. Returns true if it did.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let state = lock(&self.inner.state);
        let (state, _) = self
            .inner
            .wake
            .wait_timeout_while(state, timeout, |s| !s.stopped)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.stopped
    }
}

/// Turns an unspecified listen address (0.0.0.0, ::) into loopback so we can connect to it.
fn wake_addr(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        match addr {
            SocketAddr::V4(_) => addr.set_ip([127, 0, 0, 1].into()),
            SocketAddr::V6(_) => addr.set_ip(std::net::Ipv6Addr::LOCALHOST.into()),
        }
    }
    addr
}

/// Keeps a connection registered with a [`Shutdown`] while alive.
pub struct StreamGuard {
    shutdown: Shutdown,
    id: u64,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        lock(&self.shutdown.inner.streams).remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;
    use std::time::Instant;

    #[test]
    fn trigger_wakes_waiters_and_blocked_reads() {
        let shutdown = Shutdown::new();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        shutdown.register_listener(addr);
        let client = TcpStream::connect(addr).unwrap();
        let (mut server_side, _) = listener.accept().unwrap();
        let _guard = shutdown.register_stream(&server_side);
        let waiter = {
            let shutdown = shutdown.clone();
            std::thread::spawn(move || shutdown.wait_timeout(Duration::from_secs(30)))
        };
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 1];
            server_side.read(&mut buf).unwrap_or(0)
        });
        let started = Instant::now();
        shutdown.trigger();
        assert!(waiter.join().unwrap());
        assert_eq!(reader.join().unwrap(), 0);
        assert!(started.elapsed() < Duration::from_secs(5));
        // The wake-up connection arrived at the listener.
        assert!(listener.accept().is_ok());
        drop(client);
        assert!(shutdown.is_triggered());
        assert!(shutdown.wait_timeout(Duration::from_secs(30)));
    }

    #[test]
    fn wait_times_out_without_trigger() {
        let shutdown = Shutdown::new();
        assert!(!shutdown.wait_timeout(Duration::from_millis(10)));
    }
}
