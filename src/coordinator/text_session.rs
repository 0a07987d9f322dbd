//! One memcached text-protocol connection on the coordinator port.
//!
//! Reads into a buffer, parses as many whole commands as it holds (pipelining), and writes
//! all their replies, in order, with one flush before reading again (or sooner, when they
//! grow past [`MAX_PENDING_OUTPUT`]). Plain `set`s, `delete`s and one-key `get`s are only
//! *begun* with the router and left in flight (up to `--pipeline-window` of them), so a
//! pipeline does not wait for one slave round trip per command; any other command first
//! collects what is in flight, in order, then runs. Commands on one key take effect in the
//! order sent (the router's rule for begun requests). A command split
//! across TCP segments simply waits for the rest; a long retrieval line arriving in pieces
//! is searched for its end once ([`text::parse_resume`]). Meta commands go to
//! [`meta::parse`] first, the classic ones to [`text::parse`].
//!
//! memcached's rules it keeps: under `noreply` nothing is sent back, errors included (the
//! parser says when); the data block of a refused storage command is swallowed, never read
//! as commands; a `set` refused as too large deletes the key's old value; `quit` and an
//! HTTP request line close the connection; only a line too long to frame closes it with an
//! error (`CLIENT_ERROR line too long`).

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};

use log::debug;

use super::router::Pending;
use super::stats::{MEMCACHED_VERSION, StatsReply};
use super::{Coordinator, meta_exec};
use crate::meta::{self, MetaParsed};
use crate::request::StoreMode;
use crate::request::{Failure, Outcome, RELATIVE_EXPTIME_MAX, Request, unix_now};
use crate::server::{BufferedReader, READ_CHUNK};
use crate::text::{self, Parsed, StatsArgs, TextCommand};

/// Replies held before they are written, at most (plus one chunk of values).
const MAX_PENDING_OUTPUT: usize = 1024 * 1024;
/// Keys of a multi-key `get` read at once: the router asks every slave in parallel, and a
/// connection holds at most this many values (up to 1 MiB each) before writing them.
const GET_MANY_CHUNK: usize = 100;

/// Serves the connection until the client quits, closes, idles out or sends a line that
/// cannot be framed.
pub(super) fn serve(coordinator: &Coordinator, stream: TcpStream, peer: SocketAddr) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufferedReader::new(read_half, &coordinator.server_limits);
    let mut session = Session {
        coordinator,
        stream,
        peer,
        out: Vec::with_capacity(READ_CHUNK),
        window: std::collections::VecDeque::new(),
    };
    let limits = &coordinator.text_limits;
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    // How much of the unfinished line at the front of `buf` is known to hold no `\n`.
    let mut searched: usize = 0;
    let security = &coordinator.security;
    let mut authenticated = !security.require_auth || security.secret.is_none();
    loop {
        if !reader.fill(&mut buf, peer) {
            return;
        }
        if !authenticated {
            match authenticate(security.secret.as_deref(), &mut buf) {
                Some(true) => {
                    authenticated = true;
                    searched = 0;
                    if session.stream.write_all(b"OK\r\n").is_err() {
                        return;
                    }
                }
                Some(false) => {
                    debug!("{peer}: text client without the right secret; closing");
                    let _ = session.stream.write_all(
                        b"CLIENT_ERROR authentication required: send auth <secret> first\r\n",
                    );
                    return;
                }
                None => continue,
            }
        }
        let mut close = false;
        let mut start = 0;
        while start < buf.len() {
            match meta::parse(&buf[start..], limits) {
                MetaParsed::NotMeta => {}
                MetaParsed::Incomplete => break,
                MetaParsed::Command { command, consumed } => {
                    start += consumed;
                    searched = 0;
                    session.settle();
                    meta_exec::execute(coordinator, command, &mut session.out);
                    if session.flush_if_full().is_err() {
                        return;
                    }
                    continue;
                }
                MetaParsed::Error {
                    reply,
                    consumed,
                    skip: more,
                } => {
                    session.settle();
                    session.out.extend_from_slice(&reply);
                    searched = 0;
                    start = reader.discard(buf.len(), start + consumed, more);
                    continue;
                }
            }
            match text::parse_resume(&buf[start..], limits, &mut searched) {
                Parsed::Incomplete => break,
                Parsed::Command { command, consumed } => {
                    start += consumed;
                    if command == TextCommand::Quit {
                        close = true;
                        break;
                    }
                    if session.execute(command).is_err() {
                        return;
                    }
                }
                Parsed::Error {
                    error,
                    consumed,
                    skip: more,
                    noreply,
                    forget,
                } => {
                    debug!("{peer}: {error}");
                    session.settle();
                    if let Some(key) = forget {
                        // memcached unlinks the old value of a set refused as too large,
                        // so that a stale one is not served; whether there was one does
                        // not change the reply.
                        let _ = coordinator.router.serve(Request::Delete { key, cas: 0 });
                    }
                    if !noreply {
                        session.out.extend_from_slice(&error.reply());
                    }
                    start = reader.discard(buf.len(), start + consumed, more);
                    if error.closes_connection() {
                        close = true;
                        break;
                    }
                }
            }
            // Bound what a pipeline of gets can make us hold: send as we go.
            if session.flush_if_full().is_err() {
                return;
            }
        }
        buf.drain(..start);
        session.settle();
        if session.flush().is_err() || close {
            return;
        }
    }
}

/// With `--require-auth`: the first line must be `auth <secret>`. `Some(true)` when it
/// is (the line is removed from `buf`), `Some(false)` when it is not (or the line grows
/// too long), `None` while the line is incomplete.
fn authenticate(secret: Option<&[u8]>, buf: &mut Vec<u8>) -> Option<bool> {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        return (buf.len() > 1024).then_some(false);
    };
    let line = buf[..end].strip_suffix(b"\r").unwrap_or(&buf[..end]);
    let ok = match (line.strip_prefix(b"auth "), secret) {
        (Some(given), Some(secret)) => crate::server::same_secret(given, secret),
        _ => false,
    };
    buf.drain(..=end);
    Some(ok)
}

/// The writing side of a connection: replies collect in `out` and go out in batches;
/// commands in flight wait in `window`, in order, with how to answer them.
struct Session<'a> {
    coordinator: &'a Coordinator,
    stream: TcpStream,
    peer: SocketAddr,
    out: Vec<u8>,
    window: std::collections::VecDeque<(Pending<'a>, Answer)>,
}

/// How to answer a command left in flight.
enum Answer {
    /// A plain `set`.
    Stored { noreply: bool },
    /// A `delete`.
    Deleted { noreply: bool },
    /// A one-key `get`/`gets`.
    Value { key: Vec<u8>, cas: bool },
}

impl Session<'_> {
    /// Writes every reply collected so far.
    fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let written = self.stream.write_all(&self.out);
        self.out.clear();
        written.inspect_err(|e| debug!("{}: write failed: {e}", self.peer))
    }

    /// Writes the collected replies if they have grown past [`MAX_PENDING_OUTPUT`]; true
    /// when it wrote.
    fn flush_if_full(&mut self) -> io::Result<bool> {
        if self.out.len() < MAX_PENDING_OUTPUT {
            return Ok(false);
        }
        self.flush().map(|()| true)
    }

    fn serve(&self, request: Request) -> Outcome {
        self.coordinator.router.serve(request)
    }

    /// Begins `request` and leaves it in flight; answers all in flight when the window
    /// is full (so the next window's requests go out to the slaves together too).
    fn begin(&mut self, request: Request, answer: Answer) {
        let pending = self.coordinator.router.begin(request);
        self.window.push_back((pending, answer));
        if self.window.len() >= self.coordinator.server_limits.pipeline_window.max(1) {
            self.settle();
        }
    }

    /// Before a write of `key` is begun: if a read of `key` is in flight, collects what is
    /// in flight first. A read whose primary fails is asked again of the replica when it is
    /// collected, and must not see a write sent after it.
    fn settle_reads_of(&mut self, key: &[u8]) {
        if self
            .window
            .iter()
            .any(|(_, answer)| matches!(answer, Answer::Value { key: read, .. } if read == key))
        {
            self.settle();
        }
    }

    /// Collects every command in flight, in order, appending their replies to `out`.
    /// What is still in the links' buffers goes out first, to every slave at once.
    fn settle(&mut self) {
        for (pending, _) in &self.window {
            pending.flush();
        }
        while let Some((pending, answer)) = self.window.pop_front() {
            self.answer(pending, answer);
        }
    }

    fn answer(&mut self, pending: Pending<'_>, answer: Answer) {
        let outcome = self.coordinator.router.finish(pending);
        match answer {
            Answer::Stored { noreply: true } | Answer::Deleted { noreply: true } => {}
            Answer::Stored { noreply: false } => match outcome {
                Outcome::Stored { .. } => self.out.extend_from_slice(text::STORED),
                other => write_failure(other.into_failure(), &mut self.out),
            },
            Answer::Deleted { noreply: false } => match outcome {
                Outcome::Deleted => self.out.extend_from_slice(text::DELETED),
                Outcome::NotFound => self.out.extend_from_slice(text::NOT_FOUND),
                other => write_failure(other.into_failure(), &mut self.out),
            },
            Answer::Value { key, cas } => match outcome {
                Outcome::Found(found) => {
                    text::write_value(
                        &mut self.out,
                        &key,
                        found.flags,
                        &found.value,
                        cas.then_some(found.version),
                    );
                    self.out.extend_from_slice(text::END);
                }
                Outcome::NotFound => self.out.extend_from_slice(text::END),
                other => write_failure(other.into_failure(), &mut self.out),
            },
        }
    }

    /// Serves one command (not `quit`), appending its reply to `out` unless the client
    /// asked for none, or leaving it in flight (plain `set`, `delete`, one-key `get`).
    /// Fails only when the client cannot be written to.
    fn execute(&mut self, command: TextCommand) -> io::Result<()> {
        let command = match command {
            TextCommand::Store {
                mode: StoreMode::Set,
                key,
                flags,
                exptime,
                data,
                cas: None,
                noreply,
            } => {
                self.settle_reads_of(&key);
                let request = Request::Store {
                    mode: StoreMode::Set,
                    key,
                    value: data,
                    flags,
                    exptime,
                    cas: 0,
                };
                self.begin(request, Answer::Stored { noreply });
                return Ok(());
            }
            TextCommand::Delete { key, noreply } => {
                self.settle_reads_of(&key);
                self.begin(Request::Delete { key, cas: 0 }, Answer::Deleted { noreply });
                return Ok(());
            }
            TextCommand::Get {
                mut keys,
                cas,
                touch: None,
            } if keys.len() == 1 => {
                let key = keys.pop().unwrap_or_default();
                let request = Request::Get { key: key.clone() };
                self.begin(request, Answer::Value { key, cas });
                return Ok(());
            }
            other => other,
        };
        self.settle();
        match command {
            TextCommand::Store {
                mode,
                key,
                flags,
                exptime,
                data,
                cas,
                noreply,
            } => {
                let outcome = match cas {
                    // memcached compares a cas unique of 0 too, and no item has it: the
                    // key is either missing (NOT_FOUND) or has another one (EXISTS).
                    Some(0) => match self.serve(Request::Get { key }) {
                        Outcome::Found(_) => Outcome::Exists,
                        other => other,
                    },
                    Some(cas) => self.serve(Request::Store {
                        mode,
                        key,
                        value: data,
                        flags,
                        exptime,
                        cas,
                    }),
                    None => self.serve(Request::Store {
                        mode,
                        key,
                        value: data,
                        flags,
                        exptime,
                        cas: 0,
                    }),
                };
                if !noreply {
                    match outcome {
                        Outcome::Stored { .. } => self.out.extend_from_slice(text::STORED),
                        Outcome::NotStored => self.out.extend_from_slice(text::NOT_STORED),
                        Outcome::Exists => self.out.extend_from_slice(text::EXISTS),
                        Outcome::NotFound => self.out.extend_from_slice(text::NOT_FOUND),
                        other => write_failure(other.into_failure(), &mut self.out),
                    }
                }
            }
            TextCommand::Get { keys, cas, touch } => self.retrieve(keys, cas, touch)?,
            TextCommand::Delete { key, noreply } => {
                let outcome = self.serve(Request::Delete { key, cas: 0 });
                if !noreply {
                    match outcome {
                        Outcome::Deleted => self.out.extend_from_slice(text::DELETED),
                        Outcome::NotFound => self.out.extend_from_slice(text::NOT_FOUND),
                        other => write_failure(other.into_failure(), &mut self.out),
                    }
                }
            }
            TextCommand::Touch {
                key,
                exptime,
                noreply,
            } => {
                let outcome = self.serve(Request::Touch { key, exptime });
                if !noreply {
                    match outcome {
                        Outcome::Found(_) => self.out.extend_from_slice(text::TOUCHED),
                        Outcome::NotFound => self.out.extend_from_slice(text::NOT_FOUND),
                        other => write_failure(other.into_failure(), &mut self.out),
                    }
                }
            }
            TextCommand::Arith {
                key,
                decr,
                delta,
                noreply,
            } => {
                let outcome = self.serve(Request::Arith {
                    key,
                    decr,
                    delta,
                    create: None,
                    exptime: None,
                    cas: 0,
                });
                if !noreply {
                    match outcome {
                        Outcome::Number { value, .. } => text::write_number(&mut self.out, value),
                        Outcome::NotFound => self.out.extend_from_slice(text::NOT_FOUND),
                        other => write_failure(other.into_failure(), &mut self.out),
                    }
                }
            }
            TextCommand::FlushAll { delay, noreply } => {
                let delay = flush_delay(delay, unix_now());
                let outcome = self.serve(Request::FlushAll { delay });
                if !noreply {
                    match outcome {
                        Outcome::Flushed => self.out.extend_from_slice(text::OK),
                        other => write_failure(other.into_failure(), &mut self.out),
                    }
                }
            }
            TextCommand::Verbosity { noreply, .. } => {
                if !noreply {
                    self.out.extend_from_slice(text::OK);
                }
            }
            TextCommand::CacheMemlimit { megabytes, noreply } => {
                if noreply {
                } else if megabytes < 8 {
                    self.out.extend_from_slice(
                        b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n",
                    );
                } else {
                    self.out.extend_from_slice(text::OK);
                }
            }
            TextCommand::Version => text::write_version(&mut self.out, MEMCACHED_VERSION),
            TextCommand::Stats(args) => self.stats(args),
            // Handled by the caller, which closes the connection.
            TextCommand::Quit => {}
        }
        Ok(())
    }

    /// `get`/`gets` (touch = None) and `gat`/`gats`: every key found, in order, then
    /// `END`. Several keys of a `get` are read [`GET_MANY_CHUNK`] at a time through the
    /// router's parallel multi-get; `gat` touches key by key. A failure answers only the
    /// error, as memcached does (it drops the values stacked so far; those already written
    /// to the client stay written).
    fn retrieve(&mut self, keys: Vec<Vec<u8>>, cas: bool, touch: Option<i64>) -> io::Result<()> {
        let mut mark = self.out.len();
        for chunk in keys.chunks(GET_MANY_CHUNK) {
            let outcomes = match (touch, chunk) {
                (None, [key]) => vec![self.serve(Request::Get { key: key.clone() })],
                (None, _) => self.coordinator.router.get_many(chunk),
                (Some(exptime), _) => chunk
                    .iter()
                    .map(|key| {
                        self.serve(Request::Touch {
                            key: key.clone(),
                            exptime,
                        })
                    })
                    .collect(),
            };
            for (key, outcome) in chunk.iter().zip(outcomes) {
                match outcome {
                    Outcome::Found(found) => text::write_value(
                        &mut self.out,
                        key,
                        found.flags,
                        &found.value,
                        cas.then_some(found.version),
                    ),
                    Outcome::NotFound => {}
                    other => {
                        self.out.truncate(mark);
                        write_failure(other.into_failure(), &mut self.out);
                        return Ok(());
                    }
                }
            }
            if self.flush_if_full()? {
                mark = 0;
            }
        }
        self.out.extend_from_slice(text::END);
        Ok(())
    }

    /// `stats [args]`, as memcached answers each.
    fn stats(&mut self, args: StatsArgs) {
        let section = match args {
            StatsArgs::General => "",
            StatsArgs::Section(ref name) => name,
            StatsArgs::Reset => "reset",
            StatsArgs::DetailOn | StatsArgs::DetailOff => {
                self.out.extend_from_slice(text::OK);
                return;
            }
            // No per-prefix statistics and no slab classes to dump: empty lists.
            StatsArgs::DetailDump | StatsArgs::Cachedump => {
                self.out.extend_from_slice(text::END);
                return;
            }
        };
        match self.coordinator.stats(section) {
            StatsReply::Lines(lines) => {
                for (name, value) in lines {
                    text::write_stat(&mut self.out, &name, value);
                }
                self.out.extend_from_slice(text::END);
            }
            StatsReply::Reset => self.out.extend_from_slice(text::RESET),
            StatsReply::Unknown => self.out.extend_from_slice(text::ERROR),
        }
    }
}

/// `flush_all`'s delay as memcached reads it, in seconds from `now`: 0 or negative is
/// now, up to 30 days relative seconds, larger a Unix time (past: now).
fn flush_delay(delay: i64, now: u64) -> u32 {
    let seconds = match u64::try_from(delay) {
        Err(_) | Ok(0) => 0,
        Ok(d) if d <= RELATIVE_EXPTIME_MAX as u64 => d,
        Ok(at) => at.saturating_sub(now),
    };
    u32::try_from(seconds).unwrap_or(u32::MAX)
}

/// Appends the reply memcached gives for a failure (text and meta commands alike).
pub(super) fn write_failure(failure: Failure, out: &mut Vec<u8>) {
    match failure {
        Failure::Invalid(why) => text::write_client_error(out, &why),
        Failure::TooLarge => out.extend_from_slice(&text::TextError::TooLarge.reply()),
        Failure::NonNumeric => text::write_client_error(out, &Failure::NonNumeric.to_string()),
        Failure::Unavailable(why) => text::write_server_error(out, &why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_delay_follows_memcached_exptime_rules() {
        let now = 1_800_000_000;
        assert_eq!(flush_delay(0, now), 0);
        assert_eq!(flush_delay(-5, now), 0);
        assert_eq!(flush_delay(i64::MIN, now), 0);
        assert_eq!(flush_delay(10, now), 10);
        assert_eq!(
            flush_delay(RELATIVE_EXPTIME_MAX, now),
            RELATIVE_EXPTIME_MAX as u32
        );
        assert_eq!(flush_delay(now as i64 + 60, now), 60);
        assert_eq!(flush_delay(now as i64 - 60, now), 0);
        assert_eq!(flush_delay(i64::MAX, now), u32::MAX);
    }

    #[test]
    fn failures_get_memcached_replies() {
        let reply = |outcome| {
            let mut out = Vec::new();
            write_failure(Outcome::into_failure(outcome), &mut out);
            out
        };
        assert_eq!(
            reply(Outcome::Failed(Failure::Invalid("empty key".into()))),
            b"CLIENT_ERROR empty key\r\n"
        );
        assert_eq!(
            reply(Outcome::Failed(Failure::TooLarge)),
            b"SERVER_ERROR object too large for cache\r\n"
        );
        assert_eq!(
            reply(Outcome::Failed(Failure::NonNumeric)),
            b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
        );
        assert_eq!(
            reply(Outcome::Failed(Failure::Unavailable("no slaves".into()))),
            b"SERVER_ERROR no slaves\r\n"
        );
        assert_eq!(
            reply(Outcome::Deleted),
            b"SERVER_ERROR unexpected outcome Deleted\r\n"
        );
    }
}
