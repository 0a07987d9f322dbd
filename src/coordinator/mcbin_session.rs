//! One memcached binary-protocol connection on the coordinator port.
//!
//! Reads into a buffer, parses as many whole packets as it holds (pipelining), serves
//! each through the router, and writes all their replies with one write before reading
//! again (so quiet commands' errors and the reply to a closing noop go out together). A
//! packet split across TCP segments waits for the rest, within the request timeout.
//! Lengths are checked from the header before the body is waited for, so the buffer
//! never holds more than one packet under the limits plus what was read with it; a value
//! over the limit is answered `Too large.` and skipped as it arrives, without being held.
//!
//! With `--require-auth` and a cluster secret, memcached binary clients cannot present
//! the secret (Piazza's memcached port has no SASL): the first request is answered
//! 0x0020 `Auth failure.` and the connection is closed.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};

use log::debug;

use super::Coordinator;
use super::router::Pending;
use super::stats::{MEMCACHED_VERSION, StatsReply};
use crate::mcbin::{self, Dispatch, Header, Parsed, Status};
use crate::request::{Request, unix_now};
use crate::server::{BufferedReader, READ_CHUNK};

/// Bytes read from the socket at a time.
/// Replies held before they are written, at most (plus one value).
const MAX_PENDING_OUTPUT: usize = 1024 * 1024;

/// Serves the connection until the client quits, closes, idles out or sends a packet
/// after which the stream cannot be trusted.
pub(super) fn serve(coordinator: &Coordinator, mut stream: TcpStream, peer: SocketAddr) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufferedReader::new(read_half, &coordinator.server_limits);
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut out: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut window = Window::default();
    let security = &coordinator.security;
    let locked = security.require_auth && security.secret.is_some();
    loop {
        if !reader.fill(&mut buf, peer) {
            return;
        }
        if locked {
            if let Some(header) = Header::decode(&buf) {
                debug!(
                    "{peer}: memcached binary client on a cluster that requires the secret; closing"
                );
                mcbin::write_error(&mut out, &header, Status::AuthError);
                let _ = stream.write_all(&out);
                return;
            }
            continue;
        }
        let mut close = false;
        let mut start = 0;
        while start < buf.len() {
            match mcbin::parse(&buf[start..], &coordinator.text_limits) {
                Parsed::Incomplete => break,
                Parsed::Packet { packet, consumed } => {
                    start += consumed;
                    if execute(coordinator, packet, &mut window, &mut out) {
                        close = true;
                        break;
                    }
                    // Bound what a pipeline of gets can make us hold: send as we go.
                    if out.len() >= MAX_PENDING_OUTPUT {
                        if let Err(e) = stream.write_all(&out) {
                            debug!("{peer}: write failed: {e}");
                            return;
                        }
                        out.clear();
                    }
                }
                Parsed::Error {
                    error,
                    reply,
                    skip: more,
                    forget,
                } => {
                    debug!("{peer}: {error}");
                    window.settle(coordinator, &mut out);
                    if let Some(key) = forget {
                        // memcached drops the old value of a key whose set was refused.
                        let _ = coordinator.router.serve(Request::Delete { key, cas: 0 });
                    }
                    out.extend_from_slice(&reply);
                    if error.closes() {
                        close = true;
                        break;
                    }
                    start = reader.discard(buf.len(), start, more);
                }
            }
        }
        buf.drain(..start);
        window.settle(coordinator, &mut out);
        if !out.is_empty() {
            if let Err(e) = stream.write_all(&out) {
                debug!("{peer}: write failed: {e}");
                return;
            }
            out.clear();
        }
        // An idle connection does not keep the room a large value needed.
        if buf.is_empty() {
            buf.shrink_to(READ_CHUNK);
        }
        out.shrink_to(READ_CHUNK);
        if close {
            return;
        }
    }
}

/// Reads and plain writes begun with the router and not yet answered, in order.
#[derive(Default)]
struct Window<'a> {
    /// Each request in flight, how to answer it, and the key it reads (gets only).
    inflight: std::collections::VecDeque<(Pending<'a>, mcbin::Answer, Option<Vec<u8>>)>,
}

impl<'a> Window<'a> {
    /// Answers everything in flight, in order.
    fn settle(&mut self, coordinator: &Coordinator, out: &mut Vec<u8>) {
        // What is still in the links' buffers goes out first, to every slave at once.
        for (pending, _, _) in &self.inflight {
            pending.flush();
        }
        while let Some((pending, answer, _)) = self.inflight.pop_front() {
            answer.write(out, coordinator.router.finish(pending));
        }
    }

    /// True when a read of `key` is in flight: a write of `key` must wait for it (a read
    /// whose primary fails is asked again of the replica when it is answered, and must
    /// not see a write sent after it).
    fn reads(&self, key: &[u8]) -> bool {
        self.inflight
            .iter()
            .any(|(_, _, read)| read.as_deref() == Some(key))
    }
}

/// Serves one packet, appending its reply to `out` (or leaving a get, a plain set or a
/// delete in flight); true when the connection closes.
fn execute<'a>(
    coordinator: &'a Coordinator,
    packet: mcbin::Packet,
    window: &mut Window<'a>,
    out: &mut Vec<u8>,
) -> bool {
    let header = packet.header;
    let dispatched = mcbin::dispatch(packet, unix_now());
    if let Dispatch::Router { request, answer } = dispatched {
        let in_flight = matches!(
            request,
            Request::Get { .. }
                | Request::Put { .. }
                | Request::Store {
                    mode: crate::request::StoreMode::Set,
                    cas: 0,
                    ..
                }
                | Request::Delete { cas: 0, .. }
        );
        if in_flight {
            let (read, written) = match &request {
                Request::Get { key } => (Some(key.clone()), None),
                Request::Put { key, .. }
                | Request::Store { key, .. }
                | Request::Delete { key, .. } => (None, Some(key.as_slice())),
                _ => (None, None),
            };
            if written.is_some_and(|key| window.reads(key)) {
                window.settle(coordinator, out);
            }
            window
                .inflight
                .push_back((coordinator.router.begin(request), answer, read));
            // A full window is answered whole, so the next one goes out together too.
            if window.inflight.len() >= coordinator.server_limits.pipeline_window.max(1) {
                window.settle(coordinator, out);
            }
        } else {
            window.settle(coordinator, out);
            answer.write(out, coordinator.router.serve(request));
        }
        return false;
    }
    window.settle(coordinator, out);
    match dispatched {
        Dispatch::Router { .. } => {}
        Dispatch::Noop => mcbin::write_response(out, &header, Status::Ok, 0, &[], &[], &[]),
        Dispatch::Version => mcbin::write_response(
            out,
            &header,
            Status::Ok,
            0,
            &[],
            &[],
            MEMCACHED_VERSION.as_bytes(),
        ),
        Dispatch::Stat(section) => match coordinator.stats(&section) {
            StatsReply::Lines(lines) => {
                for (name, value) in lines {
                    mcbin::write_stat(out, &header, &name, &value);
                }
                mcbin::write_stat(out, &header, "", "");
            }
            StatsReply::Reset => mcbin::write_stat(out, &header, "", ""),
            StatsReply::Unknown => mcbin::write_error(out, &header, Status::NotFound),
        },
        Dispatch::Quit { quiet } => {
            if !quiet {
                mcbin::write_response(out, &header, Status::Ok, 0, &[], &[], &[]);
            }
            return true;
        }
    }
    false
}
