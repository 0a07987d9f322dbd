//! The mapping both ways: a packet to a router [`Request`] (or a command the session
//! answers itself), and the router's [`Outcome`] to memcached's reply (the tables in the
//! module doc of [`crate::mcbin`]).

use super::reply::{write_error, write_error_message, write_failure, write_response};
use super::{Command, Header, NO_CREATE, Packet, Status};
use crate::request::{Create, Failure, Outcome, RELATIVE_EXPTIME_MAX, Request, StoreMode};

/// The seconds from `now` (Unix seconds) of a flush's memcached exptime: relative up to
/// 30 days, else a Unix time (one in the past: at once).
pub fn flush_delay(exptime: u32, now: u64) -> u32 {
    if i64::from(exptime) <= RELATIVE_EXPTIME_MAX {
        exptime
    } else {
        u64::from(exptime).saturating_sub(now) as u32
    }
}

/// What a packet asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dispatch {
    /// Serve `request` through the router, then encode its outcome with `answer`.
    Router {
        /// The request.
        request: Request,
        /// How to answer it.
        answer: Answer,
    },
    /// noop: answer status 0.
    Noop,
    /// version: answer the version string.
    Version,
    /// stat: answer the section's statistics.
    Stat(String),
    /// quit: answer (unless quiet) and close.
    Quit {
        /// quitq: close without a reply.
        quiet: bool,
    },
}

/// Which reply layout an outcome is encoded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// get family: flags, optional key, value.
    Get,
    /// touch: flags only.
    Touch,
    /// A storage command, in the mode the client asked for.
    Store(StoreMode),
    /// delete.
    Delete,
    /// incr/decr: 8-byte value.
    Arith,
    /// flush.
    Flush,
}

/// How to encode the router's outcome for one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The request's header (opcode and opaque are echoed).
    pub header: Header,
    /// The reply layout.
    pub kind: Kind,
    /// Quiet form: nothing on success (gets: nothing on a miss).
    pub quiet: bool,
    /// getk/gatk: the key, returned in hits and misses.
    pub key: Option<Vec<u8>>,
}

/// What `packet` asks for; `now` (Unix seconds) turns an absolute flush time into a
/// delay.
pub fn dispatch(packet: Packet, now: u64) -> Dispatch {
    let header = packet.header;
    let cas = header.cas;
    let answer = |kind, quiet, key: Option<&[u8]>| Answer {
        header,
        kind,
        quiet,
        key: key.map(<[u8]>::to_vec),
    };
    let (request, answer) = match packet.command {
        Command::Noop => return Dispatch::Noop,
        Command::Version => return Dispatch::Version,
        Command::Quit { quiet } => return Dispatch::Quit { quiet },
        Command::Stat { key } => {
            return Dispatch::Stat(String::from_utf8_lossy(&key).into_owned());
        }
        Command::Get {
            key,
            quiet,
            with_key,
        } => {
            let answer = answer(Kind::Get, quiet, with_key.then_some(&key[..]));
            (Request::Get { key }, answer)
        }
        Command::Touch { key, exptime } => (
            Request::Touch {
                key,
                exptime: i64::from(exptime),
            },
            answer(Kind::Touch, false, None),
        ),
        Command::Gat {
            key,
            exptime,
            quiet,
            with_key,
        } => {
            let answer = answer(Kind::Get, quiet, with_key.then_some(&key[..]));
            let exptime = i64::from(exptime);
            (Request::Touch { key, exptime }, answer)
        }
        Command::Store {
            mode,
            key,
            value,
            flags,
            exptime,
            quiet,
        } => {
            let answer = answer(Kind::Store(mode), quiet, None);
            let request = match mode {
                StoreMode::Set if exptime == 0 && cas == 0 => Request::Put { key, value, flags },
                // memcached: an add or replace with a cas is a cas.
                StoreMode::Add | StoreMode::Replace if cas != 0 => Request::Store {
                    mode: StoreMode::Set,
                    key,
                    value,
                    flags,
                    exptime: i64::from(exptime),
                    cas,
                },
                mode => Request::Store {
                    mode,
                    key,
                    value,
                    flags,
                    exptime: i64::from(exptime),
                    cas,
                },
            };
            (request, answer)
        }
        Command::Delete { key, quiet } => (
            Request::Delete { key, cas },
            answer(Kind::Delete, quiet, None),
        ),
        Command::Arith {
            key,
            decr,
            delta,
            initial,
            exptime,
            quiet,
        } => (
            Request::Arith {
                key,
                decr,
                delta,
                create: (exptime != NO_CREATE).then_some(Create {
                    initial,
                    exptime: i64::from(exptime),
                    flags: 0,
                }),
                exptime: None,
                cas,
            },
            answer(Kind::Arith, quiet, None),
        ),
        Command::Flush { exptime, quiet } => (
            Request::FlushAll {
                delay: flush_delay(exptime, now),
            },
            answer(Kind::Flush, quiet, None),
        ),
    };
    Dispatch::Router { request, answer }
}

impl Answer {
    /// Appends the reply to `outcome` (nothing where a quiet command stays silent).
    pub fn write(&self, out: &mut Vec<u8>, outcome: Outcome) {
        let h = &self.header;
        let ok = |out: &mut Vec<u8>, cas: u64| {
            if !self.quiet {
                write_response(out, h, Status::Ok, cas, &[], &[], &[]);
            }
        };
        match (self.kind, outcome) {
            (Kind::Get, Outcome::Found(found)) => {
                let key = self.key.as_deref().unwrap_or_default();
                write_response(
                    out,
                    h,
                    Status::Ok,
                    found.version,
                    &found.flags.to_be_bytes(),
                    key,
                    &found.value,
                );
            }
            (Kind::Get, Outcome::NotFound) if self.quiet => {}
            (Kind::Get, Outcome::NotFound) => match &self.key {
                Some(key) => write_response(out, h, Status::NotFound, 0, &[], key, &[]),
                None => write_error(out, h, Status::NotFound),
            },
            (Kind::Touch, Outcome::Found(found)) => write_response(
                out,
                h,
                Status::Ok,
                found.version,
                &found.flags.to_be_bytes(),
                &[],
                &[],
            ),
            (Kind::Store(_), Outcome::Stored { version }) => ok(out, version),
            // memcached: an append or prepend that would make the value too large is
            // not stored (a value too large by itself was refused by `parse`).
            (
                Kind::Store(StoreMode::Append | StoreMode::Prepend),
                Outcome::Failed(Failure::TooLarge),
            ) => write_error(out, h, Status::NotStored),
            (Kind::Store(mode), Outcome::NotStored) => {
                let status = match mode {
                    StoreMode::Add => Status::Exists,
                    StoreMode::Replace => Status::NotFound,
                    _ => Status::NotStored,
                };
                write_error(out, h, status);
            }
            (Kind::Delete, Outcome::Deleted) => ok(out, 0),
            (Kind::Arith, Outcome::Number { value, version }) => {
                if !self.quiet {
                    write_response(out, h, Status::Ok, version, &[], &[], &value.to_be_bytes());
                }
            }
            (Kind::Arith, Outcome::NotStored) => write_error(out, h, Status::NotStored),
            (Kind::Flush, Outcome::Flushed) => ok(out, 0),
            (_, Outcome::NotFound) => write_error(out, h, Status::NotFound),
            (_, Outcome::Exists) => write_error(out, h, Status::Exists),
            (_, Outcome::Failed(failure)) => write_failure(out, h, &failure),
            (kind, other) => write_error_message(
                out,
                h,
                Status::OutOfMemory,
                &format!("unexpected outcome {other:?} for {kind:?}"),
            ),
        }
    }
}
