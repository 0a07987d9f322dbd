//! One memcached text-protocol connection on the coordinator port.
//!
//! Reads into a buffer, parses as many whole commands as it holds (pipelining), serves
//! each through the router, and writes all their replies with one flush before reading
//! again. A command split across TCP segments simply waits for the rest. Bad input gets
//! memcached's error reply; only a line too long to frame closes the connection.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};

use log::debug;

use super::stats::{MEMCACHED_VERSION, StatsReply};
use super::{Coordinator, meta_exec};
use crate::meta::{self, MetaParsed};
use crate::request::{Failure, Outcome, Request};
use crate::server::Phased;
use crate::text::{self, Parsed, TextCommand, TextError};

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Replies held before they are written, at most (plus one value).
const MAX_PENDING_OUTPUT: usize = 1024 * 1024;

/// Serves the connection until the client quits, closes, idles out or sends a line that
/// cannot be framed.
pub(super) fn serve(coordinator: &Coordinator, mut stream: TcpStream, peer: SocketAddr) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = Phased::new(read_half, &coordinator.server_limits);
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut out: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    // Bytes of a refused data block still to be thrown away as they arrive.
    let mut skip: usize = 0;
    let mut chunk = vec![0u8; READ_CHUNK];
    let security = &coordinator.security;
    let mut authenticated = !security.require_auth || security.secret.is_none();
    loop {
        // A command cut in the middle must be completed within the request timeout.
        if buf.is_empty() && skip == 0 {
            reader.between_requests();
        }
        let n = match reader.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                debug!("{peer}: {e}; closing");
                return;
            }
        };
        let mut fresh = &chunk[..n];
        if skip > 0 {
            let dropped = skip.min(fresh.len());
            skip -= dropped;
            fresh = &fresh[dropped..];
        }
        buf.extend_from_slice(fresh);
        if !authenticated {
            match authenticate(security.secret.as_deref(), &mut buf) {
                Some(true) => {
                    authenticated = true;
                    if stream.write_all(b"OK\r\n").is_err() {
                        return;
                    }
                }
                Some(false) => {
                    debug!("{peer}: text client without the right secret; closing");
                    let _ = stream.write_all(
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
            match meta::parse(&buf[start..], &coordinator.text_limits) {
                MetaParsed::NotMeta => {}
                MetaParsed::Incomplete => break,
                MetaParsed::Command { command, consumed } => {
                    start += consumed;
                    meta_exec::execute(coordinator, command, &mut out);
                    continue;
                }
                MetaParsed::Error {
                    reply,
                    consumed,
                    skip: more,
                } => {
                    out.extend_from_slice(&reply);
                    start += consumed;
                    let dropped = more.min(buf.len() - start);
                    start += dropped;
                    skip = more - dropped;
                    continue;
                }
            }
            match text::parse(&buf[start..], &coordinator.text_limits) {
                Parsed::Incomplete => break,
                Parsed::Command { command, consumed } => {
                    start += consumed;
                    if command == TextCommand::Quit {
                        close = true;
                        break;
                    }
                    execute(coordinator, command, &mut out);
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
                    consumed,
                    skip: more,
                } => {
                    debug!("{peer}: {error}");
                    out.extend_from_slice(&error.reply());
                    start += consumed;
                    let available = buf.len() - start;
                    let dropped = more.min(available);
                    start += dropped;
                    skip = more - dropped;
                    if error.closes_connection() {
                        close = true;
                        break;
                    }
                }
            }
        }
        buf.drain(..start);
        if !out.is_empty() {
            if let Err(e) = stream.write_all(&out) {
                debug!("{peer}: write failed: {e}");
                return;
            }
            out.clear();
        }
        if close {
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

/// Serves one command, appending its reply to `out`.
fn execute(coordinator: &Coordinator, command: TextCommand, out: &mut Vec<u8>) {
    match command {
        TextCommand::Set {
            key,
            flags,
            exptime,
            data,
            noreply,
        } => {
            if exptime != 0 {
                out.extend_from_slice(
                    &TextError::Client("exptime not supported: use 0 (keys never expire)".into())
                        .reply(),
                );
                return;
            }
            let outcome = coordinator.router.serve(Request::Put {
                key,
                value: data,
                flags,
            });
            match outcome {
                Outcome::Stored { .. } if noreply => {}
                Outcome::Stored { .. } => out.extend_from_slice(text::STORED),
                other => write_failure(other, out),
            }
        }
        TextCommand::Get { keys, cas } => {
            for key in keys {
                match coordinator.router.serve(Request::Get { key: key.clone() }) {
                    Outcome::Found(found) => text::write_value(
                        out,
                        &key,
                        found.flags,
                        &found.value,
                        cas.then_some(found.version),
                    ),
                    Outcome::NotFound => {}
                    // memcached has no per-key error inside a get: report the failure
                    // and stop, without the END, as memcached does on a server error.
                    other => {
                        write_failure(other, out);
                        return;
                    }
                }
            }
            out.extend_from_slice(text::END);
        }
        TextCommand::Delete { key, noreply } => {
            let outcome = coordinator.router.serve(Request::Delete { key, cas: 0 });
            match outcome {
                Outcome::Deleted | Outcome::NotFound if noreply => {}
                Outcome::Deleted => out.extend_from_slice(text::DELETED),
                Outcome::NotFound => out.extend_from_slice(text::NOT_FOUND),
                other => write_failure(other, out),
            }
        }
        TextCommand::Version => {
            text::write_version(out, MEMCACHED_VERSION);
        }
        TextCommand::Stats => write_stats(coordinator, "", out),
        // Handled by the caller, which closes the connection.
        TextCommand::Quit => {}
    }
}

fn write_failure(outcome: Outcome, out: &mut Vec<u8>) {
    match outcome {
        Outcome::Failed(Failure::Invalid(why)) => {
            out.extend_from_slice(&TextError::Client(why).reply());
        }
        Outcome::Failed(Failure::TooLarge) => out.extend_from_slice(&TextError::TooLarge.reply()),
        Outcome::Failed(failure) => text::write_server_error(out, &failure.to_string()),
        other => text::write_server_error(out, &format!("unexpected outcome {other:?}")),
    }
}

fn write_stats(coordinator: &Coordinator, section: &str, out: &mut Vec<u8>) {
    match coordinator.stats(section) {
        StatsReply::Lines(lines) => {
            for (name, value) in lines {
                text::write_stat(out, &name, value);
            }
            out.extend_from_slice(text::END);
        }
        StatsReply::Reset => out.extend_from_slice(b"RESET\r\n"),
        StatsReply::Unknown => out.extend_from_slice(b"ERROR\r\n"),
    }
}
