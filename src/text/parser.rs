//! The classic commands' parser: finds the line at the front of the buffer, splits it on
//! spaces and reads each command's arguments as memcached 1.6 reads them (module doc of
//! [`crate::text`] for the rules and where Piazza differs).

use super::number::{parse_signed, parse_unsigned};
use super::{Parsed, Refused, StatsArgs, TextCommand, TextError, TextLimits};
use crate::request::StoreMode;

/// The generic reply to a malformed line of a known command.
pub(super) const BAD_FORMAT: &str = "bad command line format";
/// memcached's reply to a `delete` with wrong arguments.
const DELETE_USAGE: &str = "bad command line format.  Usage: delete <key> [noreply]";
/// memcached's reply to an unparsable exptime (`touch`, `gat`, `flush_all`).
const BAD_EXPTIME: &str = "invalid exptime argument";
/// memcached's reply to an unparsable `incr`/`decr` delta.
const BAD_DELTA: &str = "invalid numeric delta argument";
/// memcached's reply to `stats detail` without a valid sub-command.
const DETAIL_USAGE: &str = "usage: stats detail on|off|dump";
/// memcached's number of slab classes; `stats cachedump` refuses ids from it up.
const SLAB_CLASSES: u32 = 64;
/// The largest `<bytes>` memcached accepts (`INT_MAX - 2`); larger is a bad line.
const MAX_DECLARED_BYTES: u64 = i32::MAX as u64 - 2;

/// Parse the first command in `buf`. Never panics; never allocates more than the declared,
/// already-validated sizes.
#[must_use]
pub fn parse(buf: &[u8], limits: &TextLimits) -> Parsed {
    parse_resume(buf, limits, &mut 0)
}

/// [`parse`], told that the first `*searched` bytes of `buf` hold no `\n` (learnt from an
/// earlier call on the same, shorter, buffer that answered [`Parsed::Incomplete`]); the
/// search for the end of the line resumes there. On `Incomplete` it records how far it
/// searched; on anything else it resets `*searched` to 0. Start with 0, and reset it
/// whenever the front of the buffer moves.
#[must_use]
pub fn parse_resume(buf: &[u8], limits: &TextLimits, searched: &mut usize) -> Parsed {
    let cap = line_cap(buf, limits);
    // A line may hold at most `cap` bytes before its `\n`: look at no more than cap + 1.
    let window = buf.len().min(cap.saturating_add(1));
    let from = (*searched).min(window);
    let newline = buf
        .get(from..window)
        .and_then(|part| part.iter().position(|&b| b == b'\n'))
        .map(|at| from + at);
    let Some(newline) = newline else {
        if buf.len() > cap {
            *searched = 0;
            return Parsed::Error {
                error: TextError::LineTooLong,
                consumed: buf.len(),
                skip: 0,
                noreply: false,
                forget: None,
            };
        }
        *searched = window;
        return Parsed::Incomplete;
    };
    *searched = 0;
    let line_len = newline + 1;
    let mut line = buf.get(..newline).unwrap_or_default();
    if let Some(stripped) = line.strip_suffix(b"\r") {
        line = stripped;
    }
    let tokens: Vec<&[u8]> = line
        .split(|&b| b == b' ')
        .filter(|t| !t.is_empty())
        .collect();
    let Some((&name, args)) = tokens.split_first() else {
        return refused(TextError::UnknownCommand, line_len, false);
    };
    let mode = match name {
        b"set" | b"cas" => Some(StoreMode::Set),
        b"add" => Some(StoreMode::Add),
        b"replace" => Some(StoreMode::Replace),
        b"append" => Some(StoreMode::Append),
        b"prepend" => Some(StoreMode::Prepend),
        _ => None,
    };
    if let Some(mode) = mode {
        // Incomplete from here means the data block is missing: the line is found and
        // `searched` stays 0 (rescanning a line of at most max_line_bytes is cheap).
        return parse_storage(buf, line_len, args, mode, name == b"cas", limits);
    }
    let outcome = match name {
        b"get" | b"bget" => parse_get(args, false, limits),
        b"gets" => parse_get(args, true, limits),
        b"gat" => parse_gat(args, false, limits),
        b"gats" => parse_gat(args, true, limits),
        b"delete" => parse_delete(args, limits),
        b"incr" => parse_arith(args, false, limits),
        b"decr" => parse_arith(args, true, limits),
        b"touch" => parse_touch(args, limits),
        b"flush_all" => parse_flush_all(args),
        b"verbosity" => parse_verbosity(args),
        // memcached answers a bad number here with ERROR, not CLIENT_ERROR.
        b"cache_memlimit" => match parse_verbosity(args) {
            Ok(TextCommand::Verbosity { level, noreply }) => Ok(TextCommand::CacheMemlimit {
                megabytes: level,
                noreply,
            }),
            Ok(other) => Ok(other),
            Err((_, noreply)) => Err((TextError::UnknownCommand, noreply)),
        },
        b"version" => Ok(TextCommand::Version),
        b"quit" => Ok(TextCommand::Quit),
        b"stats" => parse_stats(args).map_err(|e| (e, false)),
        b"shutdown" => Err((TextError::ShutdownDisabled, false)),
        _ => Err((unknown(name, args), false)),
    };
    match outcome {
        Ok(command) => Parsed::Command {
            command,
            consumed: line_len,
        },
        Err((error, noreply)) => refused(error, line_len, noreply),
    }
}

/// Parses `input` fed in the pieces that end at `cuts` (clamped to the input, in order),
/// as a connection reads it: the unfinished line's search resumed, each command dropped
/// from the front of the buffer, a refused command's data block swallowed from the buffer
/// and then from later pieces, never read as commands; up to an error that closes the
/// connection. Every command and refusal, in order. Sessions keep the same rule with
/// their reader (`BufferedReader::discard`); this is it whole, for tests and fuzzing.
///
/// # Panics
///
/// If the parser breaks its promise that `consumed` is in `1..=` the bytes it was given.
#[must_use]
pub fn parse_pieces(
    input: &[u8],
    cuts: &[usize],
    limits: &TextLimits,
) -> Vec<Result<TextCommand, Refused>> {
    let mut parsed = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut skip = 0usize;
    let mut searched = 0usize;
    let mut from = 0;
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        let cut = cut.clamp(from, input.len());
        let piece = &input[from..cut];
        from = cut;
        let dropped = skip.min(piece.len());
        skip -= dropped;
        buf.extend_from_slice(&piece[dropped..]);
        loop {
            let (consumed, more, next) = match parse_resume(&buf, limits, &mut searched) {
                Parsed::Incomplete => break,
                Parsed::Command { command, consumed } => (consumed, 0, Ok(command)),
                Parsed::Error {
                    error,
                    consumed,
                    skip,
                    noreply,
                    forget,
                } => (
                    consumed,
                    skip,
                    Err(Refused {
                        error,
                        noreply,
                        forget,
                    }),
                ),
            };
            assert!(consumed > 0 && consumed <= buf.len(), "consumed {consumed}");
            buf.drain(..consumed);
            let dropped = more.min(buf.len());
            buf.drain(..dropped);
            skip = more - dropped;
            let closes = matches!(&next, Err(refused) if refused.error.closes_connection());
            parsed.push(next);
            if closes {
                return parsed;
            }
        }
    }
    parsed
}

/// The line limit for the line at the front of `buf`: the long one if its first token
/// (after any spaces) is a retrieval command followed by a space.
fn line_cap(buf: &[u8], limits: &TextLimits) -> usize {
    let short = limits.max_line_bytes;
    let head = buf.get(..buf.len().min(short)).unwrap_or_default();
    let start = head.iter().position(|&b| b != b' ').unwrap_or(head.len());
    let rest = head.get(start..).unwrap_or_default();
    let retrieval = [&b"get "[..], b"gets ", b"gat ", b"gats ", b"bget "]
        .iter()
        .any(|name| rest.starts_with(name));
    if retrieval {
        limits.max_retrieval_line_bytes.max(short)
    } else {
        short
    }
}

/// A refused line without a data block.
fn refused(error: TextError, consumed: usize, noreply: bool) -> Parsed {
    Parsed::Error {
        error,
        consumed,
        skip: 0,
        noreply,
        forget: None,
    }
}

/// An unknown command: `ERROR`, or a silent close for an HTTP request line.
fn unknown(name: &[u8], args: &[&[u8]]) -> TextError {
    let last = args.last().copied().unwrap_or(name);
    if name.len() >= 2 && last.starts_with(b"HTTP/") {
        TextError::HttpRequest
    } else {
        TextError::UnknownCommand
    }
}

/// memcached's `noreply`: the last token of the line.
fn wants_noreply(args: &[&[u8]]) -> bool {
    args.last().is_some_and(|&t| t == b"noreply")
}

/// A client error, silenced or not.
fn client(reason: &str, noreply: bool) -> (TextError, bool) {
    (TextError::Client(reason.to_string()), noreply)
}

/// `get|bget <key>+` / `gets <key>+`.
fn parse_get(
    args: &[&[u8]],
    cas: bool,
    limits: &TextLimits,
) -> Result<TextCommand, (TextError, bool)> {
    if args.is_empty() {
        return Err((TextError::UnknownCommand, false));
    }
    Ok(TextCommand::Get {
        keys: keys(args, limits)?,
        cas,
        touch: None,
    })
}

/// `gat <exptime> <key>*` / `gats <exptime> <key>*`.
fn parse_gat(
    args: &[&[u8]],
    cas: bool,
    limits: &TextLimits,
) -> Result<TextCommand, (TextError, bool)> {
    let Some((&exptime, keys_given)) = args.split_first() else {
        return Err((TextError::UnknownCommand, false));
    };
    let exptime = parse_signed(exptime).ok_or_else(|| client(BAD_EXPTIME, false))?;
    Ok(TextCommand::Get {
        keys: keys(keys_given, limits)?,
        cas,
        touch: Some(exptime),
    })
}

/// Every key of a retrieval line, checked.
fn keys(args: &[&[u8]], limits: &TextLimits) -> Result<Vec<Vec<u8>>, (TextError, bool)> {
    let mut keys = Vec::with_capacity(args.len());
    for &key in args {
        keys.push(check_key(key, limits).map_err(|e| (e, false))?.to_vec());
    }
    Ok(keys)
}

/// `delete <key> [0] [noreply]`, as memcached accepts it.
fn parse_delete(args: &[&[u8]], limits: &TextLimits) -> Result<TextCommand, (TextError, bool)> {
    if args.is_empty() || args.len() > 3 {
        return Err((TextError::UnknownCommand, false));
    }
    let noreply = args.len() > 1 && wants_noreply(args);
    if args.len() > 1 {
        let hold_is_zero = args.get(1).is_some_and(|&t| t == b"0");
        let valid = (args.len() == 2 && (hold_is_zero || noreply))
            || (args.len() == 3 && hold_is_zero && noreply);
        if !valid {
            return Err(client(DELETE_USAGE, noreply));
        }
    }
    let key = args.first().copied().unwrap_or_default();
    let key = check_key(key, limits).map_err(|e| (e, noreply))?;
    Ok(TextCommand::Delete {
        key: key.to_vec(),
        noreply,
    })
}

/// `incr|decr <key> <delta> [noreply]`.
fn parse_arith(
    args: &[&[u8]],
    decr: bool,
    limits: &TextLimits,
) -> Result<TextCommand, (TextError, bool)> {
    let [key, delta, ..] = *args else {
        return Err((TextError::UnknownCommand, false));
    };
    if args.len() > 3 {
        return Err((TextError::UnknownCommand, false));
    }
    let noreply = wants_noreply(args);
    let key = check_key(key, limits).map_err(|e| (e, noreply))?;
    let delta = parse_unsigned(delta).ok_or_else(|| client(BAD_DELTA, noreply))?;
    Ok(TextCommand::Arith {
        key: key.to_vec(),
        decr,
        delta,
        noreply,
    })
}

/// `touch <key> <exptime> [noreply]`.
fn parse_touch(args: &[&[u8]], limits: &TextLimits) -> Result<TextCommand, (TextError, bool)> {
    let [key, exptime, ..] = *args else {
        return Err((TextError::UnknownCommand, false));
    };
    if args.len() > 3 {
        return Err((TextError::UnknownCommand, false));
    }
    let noreply = wants_noreply(args);
    let key = check_key(key, limits).map_err(|e| (e, noreply))?;
    let exptime = parse_signed(exptime).ok_or_else(|| client(BAD_EXPTIME, noreply))?;
    Ok(TextCommand::Touch {
        key: key.to_vec(),
        exptime,
        noreply,
    })
}

/// `flush_all [delay] [noreply]`: memcached reads a delay unless the only argument is
/// `noreply`, and ignores a second argument that is not `noreply`.
fn parse_flush_all(args: &[&[u8]]) -> Result<TextCommand, (TextError, bool)> {
    if args.len() > 2 {
        return Err((TextError::UnknownCommand, false));
    }
    let noreply = wants_noreply(args);
    let delay = match args.first() {
        Some(_) if args.len() == 1 && noreply => 0,
        Some(&delay) => parse_signed(delay).ok_or_else(|| client(BAD_EXPTIME, noreply))?,
        None => 0,
    };
    Ok(TextCommand::FlushAll { delay, noreply })
}

/// `verbosity <level> [noreply]` (a second argument that is not `noreply` is ignored).
fn parse_verbosity(args: &[&[u8]]) -> Result<TextCommand, (TextError, bool)> {
    let Some(&level) = args.first() else {
        return Err((TextError::UnknownCommand, false));
    };
    if args.len() > 2 {
        return Err((TextError::UnknownCommand, false));
    }
    let noreply = wants_noreply(args);
    let level = parse_unsigned(level)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| client(BAD_FORMAT, noreply))?;
    Ok(TextCommand::Verbosity { level, noreply })
}

/// `stats [section [args]]`.
fn parse_stats(args: &[&[u8]]) -> Result<TextCommand, TextError> {
    let usage = || TextError::Client(DETAIL_USAGE.to_string());
    let stats = match *args {
        [] => StatsArgs::General,
        [b"reset", ..] => StatsArgs::Reset,
        [b"detail"] => return Err(usage()),
        [b"detail", sub, ..] => match sub {
            b"on" => StatsArgs::DetailOn,
            b"off" => StatsArgs::DetailOff,
            b"dump" => StatsArgs::DetailDump,
            _ => return Err(usage()),
        },
        [b"cachedump", id, limit, ..] => {
            let number = |t: &[u8]| parse_unsigned(t).and_then(|n| u32::try_from(n).ok());
            let (Some(id), Some(_)) = (number(id), number(limit)) else {
                return Err(TextError::Client(BAD_FORMAT.to_string()));
            };
            if id >= SLAB_CLASSES {
                return Err(TextError::Client("Illegal slab id".to_string()));
            }
            StatsArgs::Cachedump
        }
        [b"cachedump", ..] => return Err(TextError::Client("bad command line".to_string())),
        [section, ..] => StatsArgs::Section(String::from_utf8_lossy(section).into_owned()),
    };
    Ok(TextCommand::Stats(stats))
}

/// `set|add|replace|append|prepend <key> <flags> <exptime> <bytes> [noreply]` or `cas <key>
/// <flags> <exptime> <bytes> <cas unique> [noreply]`, then the data block; `line_len` is
/// the length of the command line including its `\n`.
fn parse_storage(
    buf: &[u8],
    line_len: usize,
    args: &[&[u8]],
    mode: StoreMode,
    with_cas: bool,
    limits: &TextLimits,
) -> Parsed {
    // Whatever else is wrong, a valid <bytes> means a data block follows: swallow it.
    let declared = args
        .get(3)
        .and_then(|&t| parse_signed(t))
        .and_then(|n| u64::try_from(n).ok())
        .filter(|&n| n <= MAX_DECLARED_BYTES)
        .and_then(|n| usize::try_from(n).ok());
    let skip = declared.map_or(0, |n| n.saturating_add(2));
    let refuse = |error: TextError, noreply: bool, skip: usize| Parsed::Error {
        error,
        consumed: line_len,
        skip,
        noreply,
        forget: None,
    };
    let wanted = if with_cas { 5 } else { 4 };
    if args.len() != wanted && args.len() != wanted + 1 {
        return refuse(TextError::UnknownCommand, false, skip);
    }
    let noreply = wants_noreply(args);
    let bad = || TextError::Client(BAD_FORMAT.to_string());
    let [key, flags, exptime, ..] = *args else {
        return refuse(TextError::UnknownCommand, false, skip);
    };
    let key = match check_key(key, limits) {
        Ok(key) => key,
        Err(e) => return refuse(e, noreply, skip),
    };
    let Some(flags) = parse_unsigned(flags).and_then(|n| u32::try_from(n).ok()) else {
        return refuse(bad(), noreply, skip);
    };
    let Some(exptime) = parse_signed(exptime) else {
        return refuse(bad(), noreply, skip);
    };
    let cas = if with_cas {
        match args.get(4).and_then(|&t| parse_unsigned(t)) {
            Some(unique) => Some(unique),
            None => return refuse(bad(), noreply, skip),
        }
    } else {
        None
    };
    let Some(bytes) = declared else {
        return refuse(bad(), noreply, 0);
    };
    if bytes > limits.max_value_bytes {
        return Parsed::Error {
            error: TextError::TooLarge,
            consumed: line_len,
            skip,
            noreply,
            forget: (mode == StoreMode::Set && !with_cas).then(|| key.to_vec()),
        };
    }
    let Some(total) = line_len.checked_add(skip) else {
        return refuse(TextError::TooLarge, noreply, skip);
    };
    let Some(block) = buf.get(line_len..total) else {
        return Parsed::Incomplete;
    };
    let Some((data, terminator)) = block.split_at_checked(bytes) else {
        return Parsed::Incomplete;
    };
    if terminator != b"\r\n" {
        return Parsed::Error {
            error: TextError::Client("bad data chunk".to_string()),
            consumed: total,
            skip: 0,
            noreply,
            forget: None,
        };
    }
    Parsed::Command {
        command: TextCommand::Store {
            mode,
            key: key.to_vec(),
            flags,
            exptime,
            data: data.to_vec(),
            cas,
            noreply,
        },
        consumed: total,
    }
}

/// Checks a key token against the limits (memcached: `bad command line format` when too
/// long) and Piazza's character rule (no control characters, which memcached's protocol
/// forbids but does not check).
fn check_key<'a>(key: &'a [u8], limits: &TextLimits) -> Result<&'a [u8], TextError> {
    if key.is_empty() || key.len() > limits.max_key_bytes {
        return Err(TextError::Client(BAD_FORMAT.to_string()));
    }
    if key.iter().any(|&b| b < 0x21 || b == 0x7f) {
        return Err(TextError::Client("key has control characters".to_string()));
    }
    Ok(key)
}
