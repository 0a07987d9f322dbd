//! The `hb-send` thread: one UDP heartbeat to the coordinator every interval, carrying
//! the slave's id and session. The coordinator answers each; if it answers `Rejoin` (it
//! declared us dead, or it restarted and does not know the session), or does not answer
//! for ten intervals, the slave registers again over TCP, keeping its data: a join
//! reconciles it by version (or, after a coordinator restart, it goes straight back on
//! the ring).

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::Node;
use crate::shutdown::Shutdown;
use crate::wire::{Heartbeat, HeartbeatKind};

/// Sends heartbeats until the shutdown starts.
pub fn run(node: &Node, interval: Duration, shutdown: &Shutdown) {
    let socket = match UdpSocket::bind("0.0.0.0:0") {
        Ok(socket) => socket,
        Err(e) => {
            warn!(
                "cannot open a UDP socket for heartbeats: {e}; the coordinator will declare this slave dead"
            );
            return;
        }
    };
    // Without an answer for this long, the coordinator has declared us dead or moved
    // (restarted on another heartbeat port): register again over TCP.
    let silence_limit = (interval * 10).max(Duration::from_secs(2));
    let mut last_answer = Instant::now();
    while !shutdown.is_triggered() {
        let next = Instant::now() + interval;
        let Some(registration) = node.registration() else {
            if shutdown.wait_timeout(interval) {
                return;
            }
            continue;
        };
        let target: Option<SocketAddr> = registration
            .heartbeat
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next());
        let beat = Heartbeat {
            kind: HeartbeatKind::Alive,
            id: registration.id,
            session: registration.session,
        };
        if let Some(target) = target
            && let Err(e) = socket.send_to(&beat.encode(), target)
        {
            debug!("heartbeat to {target} failed: {e}");
        }
        // Read answers until it is time for the next heartbeat.
        let mut rejoin = false;
        while let Some(left) = next.checked_duration_since(Instant::now()) {
            if left.is_zero() || socket.set_read_timeout(Some(left)).is_err() {
                break;
            }
            let mut buf = [0u8; 32];
            match socket.recv_from(&mut buf) {
                Ok((n, _)) => {
                    if let Some(answer) = Heartbeat::decode(&buf[..n])
                        && answer.id == beat.id
                        && answer.session == beat.session
                    {
                        last_answer = Instant::now();
                        if answer.kind == HeartbeatKind::Rejoin {
                            rejoin = true;
                            node.direct.forget();
                        } else {
                            node.direct.heard();
                        }
                    }
                }
                Err(_) => break,
            }
        }
        let silent = last_answer.elapsed() > silence_limit;
        if (rejoin || silent) && !shutdown.is_triggered() {
            if silent {
                warn!(
                    "no answer to heartbeats for {} ms: registering again",
                    last_answer.elapsed().as_millis()
                );
            } else {
                warn!(
                    "the coordinator no longer knows slave {} (declared dead, or it restarted): registering again",
                    registration.id
                );
            }
            last_answer = Instant::now();
            match node.register(shutdown) {
                Ok(Some(again)) => info!("registered again as slave {}", again.id),
                Ok(None) => return,
                Err(e) => warn!("cannot register again: {e}; will retry"),
            }
        }
    }
}
