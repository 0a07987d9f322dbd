//! One connection speaking Piazza's binary frames on the coordinator port: client
//! requests (pipelined: reads and plain writes are begun with the router and answered in
//! order, up to the server's window), slave registrations and graceful leaves.

use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use log::info;

use super::Coordinator;
use super::router;
use crate::request::{Failure, Outcome, Request};
use crate::ring::SlaveId;
use crate::server;
use crate::wire::{self, Frame, Opcode, Status};

/// A binary request under way on a connection.
enum FramePending<'a> {
    /// Answered already.
    Ready(Frame),
    /// With the router: the reply's header, and the request under way.
    Routed {
        reply: Frame,
        pending: router::Pending<'a>,
        /// The key a GET reads.
        read: Option<Vec<u8>>,
    },
}

impl server::UnderWay for FramePending<'_> {
    fn send_buffered(&self) {
        if let FramePending::Routed { pending, .. } = self {
            pending.flush();
        }
    }
}

/// Serves the connection's frames until it closes.
pub(super) fn serve(coordinator: &Coordinator, stream: TcpStream, peer: SocketAddr) {
    let guard = server::Guard {
        secret: coordinator.security.secret.as_deref(),
        needs_auth: if coordinator.security.require_auth {
            |opcode| opcode != Opcode::Ping
        } else {
            |opcode| matches!(opcode, Opcode::Register | Opcode::Deregister)
        },
    };
    // A write of a key waits for a read of it under way (a read whose
    // primary fails is asked again of the replica when it is answered, and
    // must not see a write sent after it).
    let waits = |frame: &Frame, under_way: &mut dyn Iterator<Item = &FramePending<'_>>| {
        let write = matches!(frame.opcode, Opcode::Put | Opcode::Delete | Opcode::Update);
        let mut under_way = under_way;
        write
            && Iterator::any(
                &mut under_way,
                |pending| matches!(pending, FramePending::Routed { read: Some(key), .. } if *key == frame.key),
            )
    };
    server::serve_frames_ordered(
        stream,
        peer,
        &coordinator.server_limits,
        coordinator.limits,
        guard,
        waits,
        |frame| coordinator.begin_frame(frame),
        |pending| coordinator.finish_frame(pending),
    );
}

impl Coordinator {
    /// Starts serving one binary frame: a request for the router is begun (left under
    /// way for reads and plain writes); anything else is answered at once.
    fn begin_frame(&self, mut frame: Frame) -> FramePending<'_> {
        // Key and value move into the request: no copy on the request path.
        let request = match frame.opcode {
            Opcode::Get => Request::Get {
                key: std::mem::take(&mut frame.key),
            },
            Opcode::Put => Request::Put {
                key: std::mem::take(&mut frame.key),
                value: std::mem::take(&mut frame.value),
                flags: frame.flags,
            },
            Opcode::Delete => Request::Delete {
                key: std::mem::take(&mut frame.key),
                cas: 0,
            },
            Opcode::Update => match crate::update::Update::decode(&frame.value) {
                Some(update) => update.into_request(std::mem::take(&mut frame.key)),
                None => {
                    return FramePending::Ready(
                        frame.error_reply(Status::Invalid, "malformed operation"),
                    );
                }
            },
            Opcode::Flush => Request::FlushAll {
                delay: u32::try_from(frame.arg).unwrap_or(u32::MAX),
            },
            Opcode::MultiGet => return FramePending::Ready(self.multi_get(&frame)),
            Opcode::Ping => return FramePending::Ready(frame.reply(Status::Ok)),
            Opcode::RingGet => {
                let view = self.membership.view();
                let mut reply = frame.reply(Status::Ok);
                reply.arg = view.epoch;
                reply.flags = view.flags();
                reply.value = view.encode_members();
                return FramePending::Ready(reply);
            }
            Opcode::Status => {
                let mut reply = frame.reply(Status::Ok);
                reply.value = self.status_text().into_bytes();
                return FramePending::Ready(reply);
            }
            Opcode::Register => return FramePending::Ready(self.register(&frame)),
            Opcode::Deregister => return FramePending::Ready(self.deregister(&frame)),
            _ => {
                return FramePending::Ready(frame.error_reply(
                    Status::Invalid,
                    "this is the coordinator: slave operations go to a slave",
                ));
            }
        };
        let read = match &request {
            Request::Get { key } => Some(key.clone()),
            _ => None,
        };
        FramePending::Routed {
            reply: frame.reply(Status::Ok),
            pending: self.router.begin(request),
            read,
        }
    }

    /// The reply to a frame begun with [`Coordinator::begin_frame`].
    fn finish_frame(&self, pending: FramePending<'_>) -> Frame {
        let (mut reply, pending) = match pending {
            FramePending::Ready(reply) => return reply,
            FramePending::Routed { reply, pending, .. } => (reply, pending),
        };
        match self.router.finish(pending) {
            Outcome::Found(found) => {
                reply.value = found.value;
                reply.flags = found.flags;
                reply.arg = found.version;
            }
            Outcome::NotFound => reply.status = Status::NotFound,
            Outcome::Stored { version } => reply.arg = version,
            Outcome::Deleted | Outcome::Flushed => {}
            Outcome::NotStored => reply.status = Status::NotStored,
            Outcome::Exists => reply.status = Status::Exists,
            Outcome::Number { value, version } => {
                reply.arg = version;
                reply.value = value.to_string().into_bytes();
            }
            Outcome::Failed(failure) => {
                let status = match failure {
                    Failure::Invalid(_) => Status::Invalid,
                    Failure::NonNumeric => Status::NonNumeric,
                    Failure::TooLarge => Status::TooLarge,
                    Failure::Unavailable(_) => Status::Unavailable,
                };
                reply = reply.error_reply(status, &failure.to_string());
            }
        }
        reply
    }

    /// MULTI_GET: value = packed keys; the reply lists one result per key, in order.
    fn multi_get(&self, frame: &Frame) -> Frame {
        let keys = match wire::unpack_keys(&frame.value, self.limits.max_key) {
            Ok(keys) => keys,
            Err(e) => return frame.error_reply(Status::Invalid, &e.to_string()),
        };
        let mut reply = frame.reply(Status::Ok);
        for outcome in self.router.get_many(&keys) {
            match outcome {
                Outcome::Found(found) => wire::pack_hit(
                    &mut reply.value,
                    found.version,
                    found.flags,
                    found.expires,
                    &found.value,
                ),
                Outcome::NotFound => wire::pack_result(&mut reply.value, None),
                other => {
                    let why = other.into_failure().to_string();
                    return frame.error_reply(Status::Unavailable, &why);
                }
            }
            if reply.value.len() > wire::MAX_BULK_VALUE {
                return frame.error_reply(
                    Status::TooLarge,
                    "the values asked for are over 8 MiB: ask fewer keys at once",
                );
            }
        }
        reply
    }

    /// A slave registers: key = the address it serves on.
    fn register(&self, frame: &Frame) -> Frame {
        let Ok(addr) = std::str::from_utf8(&frame.key) else {
            return frame.error_reply(Status::Invalid, "slave address is not UTF-8");
        };
        if addr.parse::<SocketAddr>().is_err() {
            return frame.error_reply(
                Status::Invalid,
                "slave address must be IP:PORT (use --advertise on the slave)",
            );
        }
        let registered = self.membership.register(addr);
        info!(
            "slave {} at {addr} {}; it joins once it has its data",
            registered.id,
            if registered.returning {
                "registered again"
            } else {
                "registered"
            },
        );
        let mut reply = frame.reply(Status::Ok);
        reply.arg = 0;
        reply.flags = registered.id.0;
        reply.value = registered.session.to_be_bytes().to_vec();
        // The flush markers in force, so a slave that missed a flush_all never serves
        // what it flushed: a count (u8), then threshold and time (u64 each) per marker.
        let flushes = self.membership.flushes();
        reply.value.push(flushes.len() as u8);
        for marker in flushes {
            reply
                .value
                .extend_from_slice(&marker.threshold.to_be_bytes());
            reply.value.extend_from_slice(&marker.at.to_be_bytes());
        }
        reply
            .value
            .extend_from_slice(self.heartbeat_addr.to_string().as_bytes());
        // The collection horizon, in the key, where slaves that do not collect never
        // look (protocol.md, "Collection").
        let horizon = self.membership.collection_horizon();
        if horizon > 0 {
            reply.key = horizon.to_be_bytes().to_vec();
        }
        reply
    }

    /// A slave leaves gracefully (flags = id, arg = session): its ranges are handed on
    /// while it still serves, and the reply comes once that is done.
    fn deregister(&self, frame: &Frame) -> Frame {
        let id = SlaveId(frame.flags);
        if self.membership.warming().is_some() {
            // Its slots cannot be handed on before the other slaves of the restored
            // ring are back; the slave asks again.
            return frame.error_reply(
                Status::Unavailable,
                "the coordinator restarted and waits for its slaves: ask again once it serves",
            );
        }
        let (done, finished) = mpsc::sync_channel(1);
        if !self.membership.leave(id, frame.arg, done) {
            return frame.error_reply(
                Status::Invalid,
                "not a live slave under that session (already declared dead?)",
            );
        }
        info!("slave {id} is leaving: handing its ranges on");
        match finished.recv_timeout(Duration::from_secs(600)) {
            Ok(()) => frame.reply(Status::Ok),
            Err(_) => frame.error_reply(Status::Unavailable, "hand-off did not finish in time"),
        }
    }
}
