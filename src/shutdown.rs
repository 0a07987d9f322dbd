//! One-way shutdown signalling for a server and every thread it owns.
//!
//! The Ctrl-C handler (installed in `bin/`) calls [`Shutdown::trigger`], which
//! 1. sets the flag every loop checks,
//! 2. wakes every thread waiting in [`Shutdown::wait_timeout`] (timers, senders),
//! 3. connects once to each registered listen address, since std cannot interrupt a
//!    blocked `accept`, and
//! 4. shuts down every registered connection socket, so blocked reads return at once.
//!
//! Owners then join their threads. [`Shutdown`] joins nothing: it only signals.
//!
//! A start that fails part-way is unwound by a [`StartGuard`]: it keeps the threads
//! started so far and, unless the start finishes, triggers the shutdown and joins them in
//! reverse start order when dropped, so an early `return Err(..)` (or `?`) leaves no
//! thread running.
//!
//! Lock order: `state` and `streams` are never held together.

use crate::sync::lock;
use std::collections::HashMap;
use std::net::{Shutdown as NetShutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
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

/// The threads a server's start has started so far; see the module doc.
///
/// ```no_run
/// # use piazza::shutdown::{Shutdown, StartGuard};
/// # fn bind_second() -> std::io::Result<()> { Ok(()) }
/// # fn start(shutdown: Shutdown) -> std::io::Result<()> {
/// let mut guard = StartGuard::new(&shutdown);
/// let first = guard.spawn("first", || {})?;
/// bind_second()?; // an error here triggers the shutdown and joins `first`
/// let mut threads = guard.finish();
/// let first = threads.take(first);
/// # let _ = first.join(); Ok(()) }
/// ```
pub struct StartGuard {
    shutdown: Shutdown,
    /// Each thread with what stops it besides the shutdown signal, in start order.
    started: Vec<(JoinHandle<()>, Option<Stop>)>,
}

/// What stops a thread besides the shutdown signal (closing its channel, say).
type Stop = Box<dyn FnOnce()>;

/// Names one thread of a [`StartGuard`], to take it back from [`Started`].
#[must_use = "take the thread back from `Started` once the start is over"]
pub struct Slot(usize);

/// The threads of a finished start, for their owner to take.
pub struct Started {
    handles: Vec<Option<JoinHandle<()>>>,
}

impl StartGuard {
    /// Nothing started yet; a failure will trigger `shutdown`.
    pub fn new(shutdown: &Shutdown) -> StartGuard {
        StartGuard {
            shutdown: shutdown.clone(),
            started: Vec::new(),
        }
    }

    /// Starts a thread named `name` (under 16 bytes), stopped by the shutdown signal.
    ///
    /// # Errors
    /// When the thread cannot start (the guard still unwinds the others when dropped).
    pub fn spawn(
        &mut self,
        name: &str,
        body: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<Slot> {
        let handle = std::thread::Builder::new().name(name.into()).spawn(body)?;
        Ok(self.keep(handle))
    }

    /// Like [`StartGuard::spawn`], for a thread that the shutdown signal alone does not stop:
    /// on failure, `stop` is called just before the thread is joined.
    ///
    /// # Errors
    /// As [`StartGuard::spawn`].
    pub fn spawn_stopped_by(
        &mut self,
        name: &str,
        stop: impl FnOnce() + 'static,
        body: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<Slot> {
        let slot = self.spawn(name, body)?;
        if let Some(entry) = self.started.last_mut() {
            entry.1 = Some(Box::new(stop));
        }
        Ok(slot)
    }

    /// Keeps a thread started elsewhere (stopped by the shutdown signal).
    pub fn keep(&mut self, handle: JoinHandle<()>) -> Slot {
        self.started.push((handle, None));
        Slot(self.started.len() - 1)
    }

    /// The start succeeded: hands the threads to their owner, who joins them from now on.
    pub fn finish(mut self) -> Started {
        Started {
            handles: self
                .started
                .drain(..)
                .map(|(handle, _)| Some(handle))
                .collect(),
        }
    }
}

impl Drop for StartGuard {
    /// The start failed (it did not [`finish`](StartGuard::finish)): stop and join every
    /// thread, last started first.
    fn drop(&mut self) {
        if self.started.is_empty() {
            return;
        }
        self.shutdown.trigger();
        while let Some((handle, stop)) = self.started.pop() {
            if let Some(stop) = stop {
                stop();
            }
            let _ = handle.join();
        }
    }
}

impl Started {
    /// The thread `slot` names.
    pub fn take(&mut self, slot: Slot) -> JoinHandle<()> {
        self.handles[slot.0]
            .take()
            .expect("a slot is not Clone, so each is taken once, from the guard that made it")
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
    fn a_failed_start_stops_and_joins_what_it_started() {
        let shutdown = Shutdown::new();
        let order = Arc::new(Mutex::new(Vec::new()));
        let result: std::io::Result<()> = (|| {
            let mut guard = StartGuard::new(&shutdown);
            let (waiter, log) = (shutdown.clone(), Arc::clone(&order));
            let _first = guard.spawn("first", move || {
                while !waiter.wait_timeout(Duration::from_secs(30)) {}
                lock(&log).push("first");
            })?;
            // A thread the signal does not stop: it ends when its channel closes.
            let (events, events_rx) = std::sync::mpsc::channel::<()>();
            let log = Arc::clone(&order);
            let _second = guard.spawn_stopped_by(
                "second",
                move || drop(events),
                move || {
                    while events_rx.recv().is_ok() {}
                    lock(&log).push("second");
                },
            )?;
            Err(std::io::Error::from(std::io::ErrorKind::AddrInUse))
        })();
        assert_eq!(
            result.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::AddrInUse)
        );
        assert!(shutdown.is_triggered());
        // Both have ended by the time the error is returned.
        let mut ended = lock(&order).clone();
        ended.sort();
        assert_eq!(ended, vec!["first", "second"]);
    }

    #[test]
    fn a_finished_start_hands_its_threads_over_untouched() {
        let shutdown = Shutdown::new();
        let mut guard = StartGuard::new(&shutdown);
        let waiter = shutdown.clone();
        let slot = guard
            .spawn("waits", move || {
                while !waiter.wait_timeout(Duration::from_secs(30)) {}
            })
            .unwrap();
        let mut started = guard.finish();
        assert!(!shutdown.is_triggered());
        let handle = started.take(slot);
        assert!(!handle.is_finished());
        shutdown.trigger();
        handle.join().unwrap();
    }

    #[test]
    fn wait_times_out_without_trigger() {
        let shutdown = Shutdown::new();
        assert!(!shutdown.wait_timeout(Duration::from_millis(10)));
    }
}
