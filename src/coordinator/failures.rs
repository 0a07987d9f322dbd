//! The failure detector's two threads: `hb-listen` receives the slaves' UDP heartbeats
//! (the original's `heartbeatListener()`) and `fd-timer` declares dead a slave not heard
//! from for `--failure-timeout-ms` (the original's `timer()`).

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use log::{debug, warn};

use super::membership::{Heard, Membership};
use crate::ring::SlaveId;
use crate::shutdown::Shutdown;
use crate::wire::{Heartbeat, HeartbeatKind};

/// Receives heartbeat datagrams until shutdown: records each known slave's, and tells an
/// unknown or stale one to register again.
pub(super) fn listen_heartbeats(socket: &UdpSocket, membership: &Membership, shutdown: &Shutdown) {
    let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 64];
    while !shutdown.is_triggered() {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                let Some(beat) = Heartbeat::decode(&buf[..n]) else {
                    debug!("ignored a {n}-byte datagram from {from}: not a heartbeat");
                    continue;
                };
                if beat.kind != HeartbeatKind::Alive {
                    continue;
                }
                let kind = match membership.heard(SlaveId(beat.id), beat.session) {
                    Heard::Known => HeartbeatKind::Ack,
                    Heard::Unknown => {
                        debug!(
                            "heartbeat from unknown slave {} (session {:x}) at {from}",
                            beat.id, beat.session
                        );
                        HeartbeatKind::Rejoin
                    }
                };
                let reply = Heartbeat { kind, ..beat };
                let _ = socket.send_to(&reply.encode(), from);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => {
                warn!("heartbeat socket: {e}");
                if shutdown.wait_timeout(Duration::from_millis(200)) {
                    break;
                }
            }
        }
    }
}

/// The failure detector (the original's `timer()`, with last-seen times instead of
/// counters reset every 20 s): every half interval, declares dead each slave not heard
/// from for `timeout`; a tick that wakes more than an interval late judges nobody (the
/// coordinator itself stalled, and the heartbeats may still be unread).
pub(super) fn detect_failures(
    membership: &Membership,
    interval: Duration,
    timeout: Duration,
    shutdown: &Shutdown,
) {
    let tick = (interval / 2).max(Duration::from_millis(10));
    let mut last = Instant::now();
    while !shutdown.wait_timeout(tick) {
        let woke = Instant::now();
        let late = woke.duration_since(last) > tick + interval;
        last = woke;
        membership.end_warmup_if_due();
        if late {
            // This process was not scheduled for a while (a stalled or overloaded
            // machine): heartbeats that arrived meanwhile may still be unread. Judge on
            // the next tick, once the listener has caught up.
            continue;
        }
        for (id, silent) in membership.silent_for(timeout) {
            membership.suspect(id, &format!("no heartbeat for {} ms", silent.as_millis()));
        }
    }
}
