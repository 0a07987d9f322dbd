//! The memcached text protocol spoken on the coordinator port: every classic command of
//! memcached 1.6 (`set add replace append prepend cas get gets gat gats touch incr decr
//! delete flush_all verbosity version stats quit`, and the old `bget` and `shutdown`).
//!
//! This module owns two things: parsing those commands out of the front of a connection's
//! byte buffer, and formatting the replies byte for byte as memcached writes them. Meta
//! commands (`mg ms md ma mn me`) are parsed by [`crate::meta`], which the connection asks
//! first.
//!
//! Invariant: it never takes a lock and never does I/O; it validates every declared length
//! against [`TextLimits`] before allocating for it. [`parse`] is a pure function of its
//! input: it says whether the buffer holds a whole command, an error (with how many bytes
//! to drop, how many more to swallow, and whether the client asked for silence), or not
//! enough bytes yet. [`parse_resume`] is the same with a note of how far an unfinished
//! line was already searched, so a long line arriving in pieces is scanned once.
//!
//! It must never panic on any input bytes, never allocate for a size a client declared
//! without checking it first, never treat bytes inside a data block as a command (a
//! storage command refused for any reason after its `<bytes>` was read has its block
//! swallowed), and never decide policy (what an exptime means, who serves a key): that is
//! the caller's job.
//!
//! memcached's rules it follows (1.6, `proto_text.c`): commands and arguments are split on
//! spaces only; a line ends with `\n`, one `\r` before it is dropped; `noreply` is the last
//! token of the line whatever its position (`set_noreply_maybe`), and once seen it silences
//! every reply of that command, errors included, except `ERROR` for a wrong number of
//! tokens, which is decided before. Numbers are read as C's `strtoul`/`strtol` read them
//! in memcached (a `+` sign and leading zeros are fine), but a number too large for its
//! field is refused where memcached would silently truncate it.
//!
//! Where Piazza answers differently from memcached 1.6.18, on purpose:
//! - a storage line refused for any reason (wrong token count included) whose `<bytes>` is
//!   a valid length has its data block swallowed; memcached swallows only after "too
//!   large" and reads the other blocks as commands (the data block of `set k x 0 15\r\n
//!   delete victim\r\n\r\n` would delete `victim`);
//! - keys with control characters are refused (`CLIENT_ERROR key has control
//!   characters`); memcached's protocol forbids them but accepts them;
//! - exptimes are read as 64-bit numbers (memcached: 32-bit, wrapping), flags and verbosity
//!   levels past 2^32 are refused (memcached truncates them);
//! - a line without `\n` is refused with `CLIENT_ERROR line too long` and the connection
//!   closed past [`TextLimits::max_line_bytes`] (retrieval lines: past
//!   [`TextLimits::max_retrieval_line_bytes`]); memcached closes silently past 2048 bytes
//!   unless the line is a `get`/`gets`, which it lets grow without bound.

use std::fmt;

use crate::request::StoreMode;

/// Limits the parser enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextLimits {
    /// Largest data block a storage command may carry; larger ones get
    /// `SERVER_ERROR object too large for cache` and their block is swallowed.
    pub max_value_bytes: usize,
    /// Longest key in bytes (memcached: 250).
    pub max_key_bytes: usize,
    /// Longest command line accepted, counted without its terminating `\n` (and without any
    /// data block), for every command but the retrieval ones.
    pub max_line_bytes: usize,
    /// Longest `get`/`gets`/`gat`/`gats`/`bget` line (many keys), counted the same way.
    pub max_retrieval_line_bytes: usize,
}

impl Default for TextLimits {
    /// 1 MiB values, 250-byte keys, 8192-byte command lines, 2 MiB retrieval lines.
    fn default() -> Self {
        TextLimits {
            max_value_bytes: 1024 * 1024,
            max_key_bytes: 250,
            max_line_bytes: 8192,
            max_retrieval_line_bytes: 2 * 1024 * 1024,
        }
    }
}

/// What `stats` was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatsArgs {
    /// `stats`: the general statistics.
    General,
    /// `stats <section> ...` (`settings`, `items`, `slabs`, `sizes`, `conns`, or one the
    /// server may not know: then `ERROR`). Arguments after the section are ignored, as
    /// memcached does.
    Section(String),
    /// `stats reset`: clear the counters, reply `RESET`.
    Reset,
    /// `stats detail on`: reply `OK`.
    DetailOn,
    /// `stats detail off`: reply `OK`.
    DetailOff,
    /// `stats detail dump`: the per-prefix statistics (none kept: `END`).
    DetailDump,
    /// `stats cachedump <slab class> <limit>`: the items of a slab class (none: `END`).
    Cachedump,
}

/// One whole command parsed from the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextCommand {
    /// `set|add|replace|append|prepend <key> <flags> <exptime> <bytes> [noreply]` and
    /// `cas <key> <flags> <exptime> <bytes> <cas unique> [noreply]`, each followed by
    /// `<data>\r\n`.
    Store {
        /// How the store treats what the key holds (`cas` is `Set` with `cas` given).
        mode: StoreMode,
        /// The key (validated: not too long, no control characters).
        key: Vec<u8>,
        /// Opaque flags, stored and returned with the value.
        flags: u32,
        /// Expiry time as sent; the caller decides what it means.
        exptime: i64,
        /// The data block, without its trailing `\r\n`.
        data: Vec<u8>,
        /// `cas`: the cas unique the key must still have (memcached compares it even when
        /// it is 0, which no stored item has). `None` for the other commands.
        cas: Option<u64>,
        /// True when the client asked for no reply.
        noreply: bool,
    },
    /// `get|bget <key>*`, `gets <key>*`, `gat <exptime> <key>*`, `gats <exptime> <key>*`.
    Get {
        /// The keys asked for, in order (`get` has at least one; `gat` may have none).
        keys: Vec<Vec<u8>>,
        /// True for `gets`/`gats`: each value is returned with its cas unique.
        cas: bool,
        /// `gat`/`gats`: the new exptime each key found gets.
        touch: Option<i64>,
    },
    /// `delete <key> [0] [noreply]`
    Delete {
        /// The key to delete.
        key: Vec<u8>,
        /// True when the client asked for no reply.
        noreply: bool,
    },
    /// `touch <key> <exptime> [noreply]`
    Touch {
        /// The key.
        key: Vec<u8>,
        /// The new expiry time as sent.
        exptime: i64,
        /// True when the client asked for no reply.
        noreply: bool,
    },
    /// `incr <key> <delta> [noreply]` (decr = false) or `decr ...` (decr = true).
    Arith {
        /// The key.
        key: Vec<u8>,
        /// Decrement instead of increment.
        decr: bool,
        /// By how much.
        delta: u64,
        /// True when the client asked for no reply.
        noreply: bool,
    },
    /// `flush_all [delay] [noreply]`
    FlushAll {
        /// The delay as sent (0 when absent): memcached's exptime rules apply (negative or
        /// 0: now; up to 30 days: seconds from now; larger: a Unix time).
        delay: i64,
        /// True when the client asked for no reply.
        noreply: bool,
    },
    /// `verbosity <level> [noreply]`: replies `OK` (the level changes nothing here).
    Verbosity {
        /// The level asked for.
        level: u32,
        /// True when the client asked for no reply.
        noreply: bool,
    },
    /// `cache_memlimit <megabytes> [noreply]`: replies `OK` from 8 MB up, as memcached
    /// does (Piazza has no memory limit to change: slaves keep every key).
    CacheMemlimit {
        /// The limit asked for, in megabytes.
        megabytes: u32,
        /// True when the client asked for no reply.
        noreply: bool,
    },
    /// `version` (arguments ignored, as memcached does).
    Version,
    /// `stats [args]`
    Stats(StatsArgs),
    /// `quit` (arguments ignored): the caller closes the connection without a reply.
    Quit,
}

/// Why a command was refused; [`TextError::reply`] gives memcached's reply for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextError {
    /// Unknown command or wrong argument count for a known one: reply `ERROR\r\n`.
    UnknownCommand,
    /// The client's fault: reply `CLIENT_ERROR <reason>\r\n`.
    Client(String),
    /// Value over `max_value_bytes`: reply `SERVER_ERROR object too large for cache\r\n`.
    TooLarge,
    /// No `\n` within the line limit: reply `CLIENT_ERROR line too long\r\n`, then close
    /// the connection.
    LineTooLong,
    /// An unknown command whose last token starts with `HTTP/` (a web browser or proxy
    /// talking to the port): close the connection without a reply, as memcached does.
    HttpRequest,
    /// `shutdown`: reply `ERROR: shutdown not enabled\r\n` (memcached without `-A`).
    ShutdownDisabled,
}

impl TextError {
    /// The exact reply bytes, ending with `\r\n` (empty for [`TextError::HttpRequest`]).
    #[must_use]
    pub fn reply(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            TextError::UnknownCommand => out.extend_from_slice(ERROR),
            TextError::Client(reason) => write_client_error(&mut out, reason),
            TextError::TooLarge => {
                out.extend_from_slice(b"SERVER_ERROR object too large for cache\r\n");
            }
            TextError::LineTooLong => out.extend_from_slice(b"CLIENT_ERROR line too long\r\n"),
            TextError::HttpRequest => {}
            TextError::ShutdownDisabled => {
                out.extend_from_slice(b"ERROR: shutdown not enabled\r\n")
            }
        }
        out
    }

    /// True when the connection must be closed after sending the reply: the stream can no
    /// longer be framed ([`TextError::LineTooLong`]) or is not a memcached client
    /// ([`TextError::HttpRequest`]).
    #[must_use]
    pub fn closes_connection(&self) -> bool {
        matches!(self, TextError::LineTooLong | TextError::HttpRequest)
    }
}

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextError::UnknownCommand => f.write_str("unknown command or wrong argument count"),
            TextError::Client(reason) => write!(f, "client error: {reason}"),
            TextError::TooLarge => f.write_str("object too large for cache"),
            TextError::LineTooLong => f.write_str("command line too long"),
            TextError::HttpRequest => f.write_str("an HTTP request"),
            TextError::ShutdownDisabled => f.write_str("shutdown not enabled"),
        }
    }
}

impl std::error::Error for TextError {}

/// What [`parse`] found at the front of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not enough bytes yet for a whole command: read more and call again with the longer
    /// buffer.
    Incomplete,
    /// A whole command; drop `consumed` bytes from the front of the buffer.
    Command {
        /// The command.
        command: TextCommand,
        /// Bytes it took, command line and data block included (never 0).
        consumed: usize,
    },
    /// A refused command. Unless `noreply`, reply `error.reply()`; if `forget` names a
    /// key, delete that key's value; drop `consumed` bytes from the buffer, then discard
    /// `skip` further bytes (from what is left in the buffer first, then from later reads).
    /// `skip` is how a storage command whose line was refused (too large, bad key, ...) but
    /// whose `<bytes>` was a valid length has its data block (bytes + 2) swallowed without
    /// buffering it.
    Error {
        /// What was wrong.
        error: TextError,
        /// Bytes to drop from the front of the buffer (never 0).
        consumed: usize,
        /// Further bytes to discard after those.
        skip: usize,
        /// True when the client asked for no reply: send nothing (memcached's `noreply`
        /// silences errors too, all but `ERROR` for a wrong token count).
        noreply: bool,
        /// A `set` refused as too large: memcached deletes the key's old value so that a
        /// stale one is not served; the caller does the same (ignoring the outcome).
        forget: Option<Vec<u8>>,
    },
}

/// The generic reply to a malformed line of a known command.
const BAD_FORMAT: &str = "bad command line format";
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

/// A number token as C's `strtoull`/`strtoll` read it in memcached's `safe_strto*`
/// helpers: optional leading whitespace, an optional `+` or `-`, decimal digits, then the
/// end of the token or whitespace (what follows that is ignored). Returns whether it was
/// negative and its magnitude; `None` when there are no digits, something else follows
/// them, or the magnitude does not fit a `u64` (C's `ERANGE`).
fn c_number(token: &[u8]) -> Option<(bool, u64)> {
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    let start = token.iter().position(|&b| !is_space(b))?;
    let rest = token.get(start..)?;
    let (negative, rest) = match rest.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, rest),
    };
    let digits = rest
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(rest.len());
    if digits == 0 || rest.get(digits).is_some_and(|&b| !is_space(b)) {
        return None;
    }
    let mut value: u64 = 0;
    for &b in rest.get(..digits)? {
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some((negative, value))
}

/// An unsigned number as memcached's `safe_strtoul(l)` accepts it (a `-` only on zero),
/// fitting a `u64`.
fn parse_unsigned(token: &[u8]) -> Option<u64> {
    match c_number(token)? {
        (false, value) | (true, value @ 0) => Some(value),
        (true, _) => None,
    }
}

/// A signed number as memcached's `safe_strtol(l)` accepts it, fitting an `i64`.
fn parse_signed(token: &[u8]) -> Option<i64> {
    match c_number(token)? {
        (true, magnitude) => 0i64.checked_sub_unsigned(magnitude),
        (false, value) => i64::try_from(value).ok(),
    }
}

/// Appends `text` with every control character (`\r` and `\n` included) replaced by a
/// space, so it stays on one reply line.
fn push_line_safe(out: &mut Vec<u8>, text: &str) {
    let mut buf = [0u8; 4];
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
}

/// A `fmt::Write` sink over a byte vector that keeps what is written on one line.
struct LineWriter<'a>(&'a mut Vec<u8>);

impl fmt::Write for LineWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        push_line_safe(self.0, s);
        Ok(())
    }
}

/// Appends `value` formatted, kept to one line. Our sink never fails; an error here could
/// only come from a `Display` impl refusing to format, in which case what it wrote so far
/// stays and the reply line is still terminated by the caller.
fn push_display(out: &mut Vec<u8>, value: impl fmt::Display) {
    let _ = fmt::Write::write_fmt(&mut LineWriter(out), format_args!("{value}"));
}

/// Ends a retrieval or `stats` reply.
pub const END: &[u8] = b"END\r\n";
/// A storage command stored its value.
pub const STORED: &[u8] = b"STORED\r\n";
/// `add` of a present key, `replace`/`append`/`prepend` of a missing one.
pub const NOT_STORED: &[u8] = b"NOT_STORED\r\n";
/// `cas` with a cas unique the key no longer has.
pub const EXISTS: &[u8] = b"EXISTS\r\n";
/// Reply to a `delete` that removed the key.
pub const DELETED: &[u8] = b"DELETED\r\n";
/// The key holds nothing (`delete`, `touch`, `incr`, `decr`, `cas`).
pub const NOT_FOUND: &[u8] = b"NOT_FOUND\r\n";
/// Reply to a `touch` of a present key.
pub const TOUCHED: &[u8] = b"TOUCHED\r\n";
/// Reply to `flush_all`, `verbosity`, `stats detail on|off`.
pub const OK: &[u8] = b"OK\r\n";
/// Reply to `stats reset`.
pub const RESET: &[u8] = b"RESET\r\n";
/// Reply to an unknown command (and an unknown `stats` section).
pub const ERROR: &[u8] = b"ERROR\r\n";

/// Appends one value of a retrieval reply:
/// `VALUE <key> <flags> <bytes>[ <cas>]\r\n<data>\r\n`.
pub fn write_value(out: &mut Vec<u8>, key: &[u8], flags: u32, data: &[u8], cas: Option<u64>) {
    out.extend_from_slice(b"VALUE ");
    out.extend_from_slice(key);
    out.push(b' ');
    push_display(out, flags);
    out.push(b' ');
    push_display(out, data.len());
    if let Some(cas) = cas {
        out.push(b' ');
        push_display(out, cas);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends the reply to an `incr`/`decr` that applied: the new value, `<value>\r\n`.
pub fn write_number(out: &mut Vec<u8>, value: u64) {
    push_display(out, value);
    out.extend_from_slice(b"\r\n");
}

/// Appends one line of a `stats` reply: `STAT <name> <value>\r\n` (both kept to one line).
pub fn write_stat(out: &mut Vec<u8>, name: &str, value: impl fmt::Display) {
    out.extend_from_slice(b"STAT ");
    push_line_safe(out, name);
    out.push(b' ');
    push_display(out, value);
    out.extend_from_slice(b"\r\n");
}

/// Appends the reply to `version`: `VERSION <version>\r\n`.
pub fn write_version(out: &mut Vec<u8>, version: &str) {
    out.extend_from_slice(b"VERSION ");
    push_line_safe(out, version);
    out.extend_from_slice(b"\r\n");
}

/// Appends `CLIENT_ERROR <reason>\r\n`, with `reason` kept to one line.
pub fn write_client_error(out: &mut Vec<u8>, reason: &str) {
    out.extend_from_slice(b"CLIENT_ERROR ");
    push_line_safe(out, reason);
    out.extend_from_slice(b"\r\n");
}

/// Appends `SERVER_ERROR <reason>\r\n`, with `reason` kept to one line.
pub fn write_server_error(out: &mut Vec<u8>, reason: &str) {
    out.extend_from_slice(b"SERVER_ERROR ");
    push_line_safe(out, reason);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> TextLimits {
        TextLimits::default()
    }

    fn parse_default(buf: &[u8]) -> Parsed {
        parse(buf, &limits())
    }

    fn command(buf: &[u8]) -> TextCommand {
        match parse_default(buf) {
            Parsed::Command { command, consumed } => {
                assert_eq!(consumed, buf.len(), "whole buffer should be one command");
                command
            }
            other => panic!("expected a command from {buf:?}, got {other:?}"),
        }
    }

    /// A refusal, in the order (error, consumed, skip, noreply, forget).
    type Refusal = (TextError, usize, usize, bool, Option<Vec<u8>>);

    fn refusal(buf: &[u8]) -> Refusal {
        match parse_default(buf) {
            Parsed::Error {
                error,
                consumed,
                skip,
                noreply,
                forget,
            } => (error, consumed, skip, noreply, forget),
            other => panic!("expected an error from {buf:?}, got {other:?}"),
        }
    }

    /// The error, consumed and skip of a refusal.
    fn error(buf: &[u8]) -> (TextError, usize, usize) {
        let (error, consumed, skip, _, _) = refusal(buf);
        (error, consumed, skip)
    }

    /// The bytes a connection would send back for `buf` if it is refused.
    fn reply_to(buf: &[u8]) -> Vec<u8> {
        let (error, _, _, noreply, _) = refusal(buf);
        if noreply { Vec::new() } else { error.reply() }
    }

    fn client(reason: &str) -> TextError {
        TextError::Client(reason.to_string())
    }

    fn store(mode: StoreMode, key: &[u8], data: &[u8], noreply: bool) -> TextCommand {
        TextCommand::Store {
            mode,
            key: key.to_vec(),
            flags: 0,
            exptime: 0,
            data: data.to_vec(),
            cas: None,
            noreply,
        }
    }

    fn get(keys: &[&[u8]], cas: bool, touch: Option<i64>) -> TextCommand {
        TextCommand::Get {
            keys: keys.iter().map(|k| k.to_vec()).collect(),
            cas,
            touch,
        }
    }

    // ---- retrieval ----------------------------------------------------------------

    #[test]
    fn get_gets_and_bget_parse_their_keys() {
        assert_eq!(command(b"get foo\r\n"), get(&[b"foo"], false, None));
        assert_eq!(command(b"gets foo\r\n"), get(&[b"foo"], true, None));
        assert_eq!(command(b"bget foo\r\n"), get(&[b"foo"], false, None));
        // memcached splits on spaces only, and `noreply` is just a key to a get.
        assert_eq!(
            command(b"  get  a bb   ccc noreply \r\n"),
            get(&[b"a", b"bb", b"ccc", b"noreply"], false, None)
        );
    }

    #[test]
    fn gat_and_gats_take_an_exptime_then_keys() {
        assert_eq!(
            command(b"gat 10 a b\r\n"),
            get(&[b"a", b"b"], false, Some(10))
        );
        assert_eq!(command(b"gats -1 a\r\n"), get(&[b"a"], true, Some(-1)));
        // memcached answers a gat without keys with a bare END.
        assert_eq!(command(b"gat 10\r\n"), get(&[], false, Some(10)));
        assert_eq!(error(b"gat\r\n"), (TextError::UnknownCommand, 5, 0));
        for line in [&b"gat x k\r\n"[..], b"gats 1- k\r\n", b"gat 1x k\r\n"] {
            assert_eq!(reply_to(line), b"CLIENT_ERROR invalid exptime argument\r\n");
        }
    }

    #[test]
    fn retrieval_without_keys_is_an_error() {
        for line in [&b"get\r\n"[..], b"gets   \r\n", b"bget\r\n"] {
            assert_eq!(error(line), (TextError::UnknownCommand, line.len(), 0));
        }
    }

    #[test]
    fn a_bad_key_refuses_the_whole_retrieval_line() {
        let long = format!("get a {} b\r\n", "k".repeat(251));
        assert_eq!(
            reply_to(long.as_bytes()),
            b"CLIENT_ERROR bad command line format\r\n"
        );
        let long = format!("gat 1 {}\r\n", "k".repeat(251));
        assert_eq!(
            reply_to(long.as_bytes()),
            b"CLIENT_ERROR bad command line format\r\n"
        );
        assert_eq!(
            reply_to(b"gets a\tb\r\n"),
            b"CLIENT_ERROR key has control characters\r\n"
        );
    }

    // ---- storage ------------------------------------------------------------------

    #[test]
    fn every_storage_command_parses_with_its_data_block() {
        for (name, mode) in [
            ("set", StoreMode::Set),
            ("add", StoreMode::Add),
            ("replace", StoreMode::Replace),
            ("append", StoreMode::Append),
            ("prepend", StoreMode::Prepend),
        ] {
            let line = format!("{name} k 5 -3 3\r\nabc\r\n");
            assert_eq!(
                command(line.as_bytes()),
                TextCommand::Store {
                    mode,
                    key: b"k".to_vec(),
                    flags: 5,
                    exptime: -3,
                    data: b"abc".to_vec(),
                    cas: None,
                    noreply: false,
                }
            );
            let line = format!("{name} k 0 0 1 noreply\r\nx\r\n");
            assert_eq!(command(line.as_bytes()), store(mode, b"k", b"x", true));
        }
    }

    #[test]
    fn cas_carries_its_unique_even_zero() {
        for (unique, want) in [("77", 77), ("0", 0), ("18446744073709551615", u64::MAX)] {
            let line = format!("cas k 1 2 1 {unique}\r\nx\r\n");
            assert_eq!(
                command(line.as_bytes()),
                TextCommand::Store {
                    mode: StoreMode::Set,
                    key: b"k".to_vec(),
                    flags: 1,
                    exptime: 2,
                    data: b"x".to_vec(),
                    cas: Some(want),
                    noreply: false,
                }
            );
        }
        assert!(matches!(
            command(b"cas k 0 0 1 5 noreply\r\nx\r\n"),
            TextCommand::Store {
                cas: Some(5),
                noreply: true,
                ..
            }
        ));
    }

    #[test]
    fn flags_and_exptime_span_their_ranges() {
        assert!(matches!(
            command(b"set k 4294967295 -9223372036854775808 0\r\n\r\n"),
            TextCommand::Store {
                flags: u32::MAX,
                exptime: i64::MIN,
                ..
            }
        ));
        assert!(matches!(
            command(b"set k 0 9223372036854775807 0\r\n\r\n"),
            TextCommand::Store {
                exptime: i64::MAX,
                ..
            }
        ));
    }

    #[test]
    fn numbers_read_as_strtoul_and_strtol_read_them_in_memcached() {
        // A sign, leading zeros, and whitespace around the digits (tabs: tokens are split
        // on spaces only) are accepted, as by C's strtoul/strtol.
        assert!(matches!(
            command(b"set k +7 +10 +03\r\nabc\r\n"),
            TextCommand::Store {
                flags: 7,
                exptime: 10,
                ref data,
                ..
            } if data == b"abc"
        ));
        assert!(matches!(
            command(b"set k \t7\t -0 -0\r\n\r\n"),
            TextCommand::Store {
                flags: 7,
                exptime: 0,
                ..
            }
        ));
        assert!(matches!(
            command(b"incr k +5\r\n"),
            TextCommand::Arith { delta: 5, .. }
        ));
        assert!(matches!(
            command(b"cas k 0 0 0 +9\r\n\r\n"),
            TextCommand::Store { cas: Some(9), .. }
        ));
        assert_eq!(command(b"gat +5 k\r\n"), get(&[b"k"], false, Some(5)));
        // Junk after the digits, a lone sign, or a negative unsigned number is refused.
        for token in [
            &b"5x"[..],
            b"+",
            b"-",
            b"",
            b"\t",
            b"--1",
            b"+-1",
            b"-5",
            b"0x5",
        ] {
            assert_eq!(parse_unsigned(token), None, "{token:?}");
        }
        assert_eq!(parse_signed(b"-5"), Some(-5));
        assert_eq!(parse_signed(b"-9223372036854775809"), None);
        assert_eq!(parse_unsigned(b"18446744073709551616"), None);
    }

    #[test]
    fn a_last_token_other_than_noreply_is_ignored_as_memcached_does() {
        // memcached 1.6: `set k 0 0 3 norply` stores and answers STORED.
        assert_eq!(
            command(b"set k 0 0 3 norply\r\nabc\r\n"),
            store(StoreMode::Set, b"k", b"abc", false)
        );
    }

    #[test]
    fn wrong_token_count_is_error_not_silenced_and_swallows_a_valid_block() {
        // Too few tokens: no <bytes> to trust, nothing swallowed.
        assert_eq!(
            refusal(b"set k 0 0\r\n"),
            (TextError::UnknownCommand, 11, 0, false, None)
        );
        // Too many: ERROR (even with noreply, as memcached), and the block is swallowed.
        let line = b"set k 0 0 1 noreply x\r\n";
        assert_eq!(
            refusal(line),
            (TextError::UnknownCommand, line.len(), 3, false, None)
        );
        // cas without its unique: its <bytes> is there, so its block is swallowed.
        let line = b"cas k 0 0 5\r\n";
        assert_eq!(
            refusal(line),
            (TextError::UnknownCommand, line.len(), 7, false, None)
        );
        assert_eq!(error(b"add\r\n"), (TextError::UnknownCommand, 5, 0));
        assert_eq!(
            error(b"append k 0 0\r\n"),
            (TextError::UnknownCommand, 14, 0)
        );
    }

    #[test]
    fn bad_flags_exptime_or_unique_are_bad_format_and_swallow_the_block() {
        for line in [
            &b"set k -1 0 3\r\n"[..],
            b"set k 1+ 0 3\r\n",
            b"set k 4294967296 0 3\r\n",
            b"set k x 0 3\r\n",
            b"add k 0 - 3\r\n",
            b"replace k 0 5x 3\r\n",
            b"prepend k 0 9223372036854775808 3\r\n",
            b"cas k 0 0 3 x\r\n",
            b"cas k 0 0 3 -1\r\n",
            b"cas k 0 0 3 18446744073709551616\r\n",
        ] {
            assert_eq!(
                refusal(line),
                (client(BAD_FORMAT), line.len(), 5, false, None),
                "{line:?}"
            );
        }
    }

    #[test]
    fn a_bad_byte_count_is_bad_format_and_swallows_nothing() {
        for line in [
            &b"set k 0 0 -1\r\n"[..],
            b"set k 0 0 1x\r\n",
            b"set k 0 0 x\r\n",
            b"set k 0 0 2147483646\r\n",
            b"set k 0 0 99999999999999999999999\r\n",
        ] {
            assert_eq!(error(line), (client(BAD_FORMAT), line.len(), 0), "{line:?}");
        }
        // The largest length memcached accepts is INT_MAX - 2: too large, swallowed.
        let line = b"set k 0 0 2147483645\r\n";
        assert_eq!(
            refusal(line),
            (
                TextError::TooLarge,
                line.len(),
                2_147_483_647,
                false,
                Some(b"k".to_vec())
            )
        );
    }

    #[test]
    fn noreply_silences_storage_errors_like_set_noreply_maybe() {
        // Bad flags under noreply: silent, block swallowed.
        let line = b"set k x 0 5 noreply\r\n";
        assert_eq!(
            refusal(line),
            (client(BAD_FORMAT), line.len(), 7, true, None)
        );
        assert_eq!(reply_to(line), b"");
        // `noreply` in the <bytes> place: memcached sees noreply (last token) and a bad
        // length; silent, and with no valid length nothing is swallowed.
        let line = b"set k 0 0 noreply\r\n";
        assert_eq!(
            refusal(line),
            (client(BAD_FORMAT), line.len(), 0, true, None)
        );
        let line = format!("set {} 0 0 1 noreply\r\n", "k".repeat(251));
        assert_eq!(
            refusal(line.as_bytes()),
            (client(BAD_FORMAT), line.len(), 3, true, None)
        );
    }

    #[test]
    fn too_large_swallows_without_waiting_and_forgets_only_for_set() {
        let small = TextLimits {
            max_value_bytes: 10,
            ..limits()
        };
        let too_large = |line: &[u8]| match parse(line, &small) {
            Parsed::Error {
                error,
                consumed,
                skip,
                noreply,
                forget,
            } => {
                assert_eq!(error, TextError::TooLarge);
                assert_eq!((consumed, skip), (line.len(), 13));
                (noreply, forget)
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(too_large(b"set k 0 0 11\r\n"), (false, Some(b"k".to_vec())));
        assert_eq!(
            too_large(b"set k 0 0 11 noreply\r\n"),
            (true, Some(b"k".to_vec()))
        );
        // memcached drops the old value for set only; add/replace/append/prepend/cas keep it.
        for line in [
            &b"add k 0 0 11\r\n"[..],
            b"replace k 0 0 11\r\n",
            b"append k 0 0 11\r\n",
            b"prepend k 0 0 11\r\n",
            b"cas k 0 0 11 5\r\n",
        ] {
            assert_eq!(too_large(line), (false, None), "{line:?}");
        }
        assert!(matches!(
            parse(b"set k 0 0 10\r\n", &small),
            Parsed::Incomplete
        ));
        assert_eq!(
            TextError::TooLarge.reply(),
            b"SERVER_ERROR object too large for cache\r\n"
        );
    }

    #[test]
    fn a_key_error_outranks_too_large_as_in_memcached() {
        let small = TextLimits {
            max_value_bytes: 10,
            ..limits()
        };
        let line = format!("set {} 0 0 11\r\n", "k".repeat(251));
        assert!(matches!(
            parse(line.as_bytes(), &small),
            Parsed::Error { error: TextError::Client(ref r), skip: 13, .. } if r == BAD_FORMAT
        ));
    }

    #[test]
    fn split_storage_waits_for_the_data_block() {
        assert_eq!(parse_default(b"set k 0 0 5\r\nhel"), Parsed::Incomplete);
        assert_eq!(parse_default(b"set k 0 0 5\r\nhello\r"), Parsed::Incomplete);
        assert_eq!(parse_default(b"cas k 0 0 5 1\r\n"), Parsed::Incomplete);
    }

    #[test]
    fn a_block_not_ending_in_crlf_is_a_bad_data_chunk_of_exactly_bytes_plus_two() {
        let buf = b"set k 0 0 3\r\nabcde\r\n";
        let (e, consumed, skip, noreply, _) = refusal(buf);
        assert_eq!(e.reply(), b"CLIENT_ERROR bad data chunk\r\n");
        assert_eq!((consumed, skip, noreply), (13 + 5, 0, false));
        // The "\r\n" left over is then an empty line: ERROR, as memcached answers.
        assert_eq!(error(&buf[consumed..]), (TextError::UnknownCommand, 2, 0));
        // Silenced by noreply.
        assert_eq!(reply_to(b"append k 0 0 3 noreply\r\nabcde\r\n"), b"");
    }

    #[test]
    fn binary_data_with_crlf_and_commands_inside_is_taken_verbatim() {
        let data = b"a\r\ndelete victim\r\n\0\0\n\r";
        let mut buf = format!("append bin 0 0 {}\r\n", data.len()).into_bytes();
        buf.extend_from_slice(data);
        buf.extend_from_slice(b"\r\n");
        match command(&buf) {
            TextCommand::Store { data: got, .. } => assert_eq!(got, data),
            other => panic!("{other:?}"),
        }
    }

    // ---- delete, incr/decr, touch ---------------------------------------------------

    #[test]
    fn delete_parses_in_all_its_forms() {
        let del = |noreply| TextCommand::Delete {
            key: b"k".to_vec(),
            noreply,
        };
        assert_eq!(command(b"delete k\r\n"), del(false));
        assert_eq!(command(b"delete k noreply\r\n"), del(true));
        assert_eq!(command(b"delete k 0\r\n"), del(false));
        assert_eq!(command(b"delete k 0 noreply\r\n"), del(true));
    }

    #[test]
    fn delete_with_bad_arguments_gets_memcached_usage_line_or_silence() {
        let usage = b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n";
        assert_eq!(error(b"delete\r\n").0, TextError::UnknownCommand);
        assert_eq!(reply_to(b"delete k 5\r\n"), usage);
        assert_eq!(reply_to(b"delete k 0 x\r\n"), usage);
        // The last token is "0": no noreply, so the error is shown.
        assert_eq!(reply_to(b"delete k noreply 0\r\n"), usage);
        // The last token is noreply: the same error is silenced.
        assert_eq!(reply_to(b"delete k x noreply\r\n"), b"");
        assert_eq!(reply_to(b"delete k 0 noreply x\r\n"), b"ERROR\r\n");
        let long = "k".repeat(251);
        assert_eq!(
            reply_to(format!("delete {long}\r\n").as_bytes()),
            b"CLIENT_ERROR bad command line format\r\n"
        );
        assert_eq!(
            reply_to(format!("delete {long} noreply\r\n").as_bytes()),
            b""
        );
    }

    #[test]
    fn incr_and_decr_parse_and_refuse_like_memcached() {
        assert_eq!(
            command(b"incr k 5\r\n"),
            TextCommand::Arith {
                key: b"k".to_vec(),
                decr: false,
                delta: 5,
                noreply: false
            }
        );
        assert_eq!(
            command(b"decr k 18446744073709551615 noreply\r\n"),
            TextCommand::Arith {
                key: b"k".to_vec(),
                decr: true,
                delta: u64::MAX,
                noreply: true
            }
        );
        for line in [&b"incr\r\n"[..], b"incr k\r\n", b"decr k 1 2 3\r\n"] {
            assert_eq!(reply_to(line), b"ERROR\r\n", "{line:?}");
        }
        for line in [
            &b"incr k x\r\n"[..],
            b"incr k -1\r\n",
            b"decr k 1-\r\n",
            b"incr k 18446744073709551616\r\n",
            b"incr k 0x10\r\n",
        ] {
            assert_eq!(
                reply_to(line),
                b"CLIENT_ERROR invalid numeric delta argument\r\n",
                "{line:?}"
            );
        }
        assert_eq!(reply_to(b"incr k x noreply\r\n"), b"");
        // `incr k noreply`: noreply is seen (last token), and the delta is bad: silent.
        assert_eq!(reply_to(b"incr k noreply\r\n"), b"");
        let long = format!("incr {} 1\r\n", "k".repeat(251));
        assert_eq!(
            reply_to(long.as_bytes()),
            b"CLIENT_ERROR bad command line format\r\n"
        );
    }

    #[test]
    fn touch_parses_and_refuses_like_memcached() {
        assert_eq!(
            command(b"touch k -5\r\n"),
            TextCommand::Touch {
                key: b"k".to_vec(),
                exptime: -5,
                noreply: false
            }
        );
        assert_eq!(
            command(b"touch k 10 noreply\r\n"),
            TextCommand::Touch {
                key: b"k".to_vec(),
                exptime: 10,
                noreply: true
            }
        );
        for line in [&b"touch\r\n"[..], b"touch k\r\n", b"touch k 1 2 3\r\n"] {
            assert_eq!(reply_to(line), b"ERROR\r\n", "{line:?}");
        }
        assert_eq!(
            reply_to(b"touch k x\r\n"),
            b"CLIENT_ERROR invalid exptime argument\r\n"
        );
        assert_eq!(reply_to(b"touch k x noreply\r\n"), b"");
    }

    // ---- flush_all, verbosity, version, quit, stats --------------------------------

    #[test]
    fn flush_all_follows_memcached_argument_rules() {
        let flush = |delay, noreply| TextCommand::FlushAll { delay, noreply };
        assert_eq!(command(b"flush_all\r\n"), flush(0, false));
        assert_eq!(command(b"flush_all 0\r\n"), flush(0, false));
        assert_eq!(command(b"flush_all -1\r\n"), flush(-1, false));
        assert_eq!(command(b"flush_all noreply\r\n"), flush(0, true));
        assert_eq!(command(b"flush_all 10 noreply\r\n"), flush(10, true));
        // A second argument that is not noreply is ignored.
        assert_eq!(command(b"flush_all 10 x\r\n"), flush(10, false));
        for (line, want) in [
            (
                &b"flush_all x\r\n"[..],
                &b"CLIENT_ERROR invalid exptime argument\r\n"[..],
            ),
            (
                b"flush_all x y\r\n",
                b"CLIENT_ERROR invalid exptime argument\r\n",
            ),
            (
                b"flush_all noreply x\r\n",
                b"CLIENT_ERROR invalid exptime argument\r\n",
            ),
            (b"flush_all x noreply\r\n", b""),
            (b"flush_all 1 2 3\r\n", b"ERROR\r\n"),
        ] {
            assert_eq!(reply_to(line), want, "{line:?}");
        }
    }

    #[test]
    fn verbosity_follows_memcached_argument_rules() {
        let verbosity = |level, noreply| TextCommand::Verbosity { level, noreply };
        assert_eq!(command(b"verbosity 1\r\n"), verbosity(1, false));
        assert_eq!(command(b"verbosity 1 noreply\r\n"), verbosity(1, true));
        assert_eq!(command(b"verbosity 1 x\r\n"), verbosity(1, false));
        assert_eq!(
            command(b"cache_memlimit 50 noreply\r\n"),
            TextCommand::CacheMemlimit {
                megabytes: 50,
                noreply: true
            }
        );
        for (line, want) in [
            (&b"verbosity\r\n"[..], &b"ERROR\r\n"[..]),
            (b"verbosity 1 2 3\r\n", b"ERROR\r\n"),
            (
                b"verbosity x\r\n",
                b"CLIENT_ERROR bad command line format\r\n",
            ),
            (b"verbosity x noreply\r\n", b""),
            (b"verbosity noreply\r\n", b""),
        ] {
            assert_eq!(reply_to(line), want, "{line:?}");
        }
    }

    #[test]
    fn version_and_quit_ignore_arguments_as_memcached_does() {
        assert_eq!(command(b"version\r\n"), TextCommand::Version);
        assert_eq!(command(b"version x\r\n"), TextCommand::Version);
        assert_eq!(command(b"quit\r\n"), TextCommand::Quit);
        assert_eq!(command(b"quit now\r\n"), TextCommand::Quit);
    }

    #[test]
    fn stats_arguments_parse_as_memcached_reads_them() {
        let stats = |s| TextCommand::Stats(s);
        assert_eq!(command(b"stats\r\n"), stats(StatsArgs::General));
        for name in ["settings", "items", "slabs", "sizes", "conns", "bogus"] {
            assert_eq!(
                command(format!("stats {name}\r\n").as_bytes()),
                stats(StatsArgs::Section(name.to_string()))
            );
        }
        assert_eq!(
            command(b"stats items extra\r\n"),
            stats(StatsArgs::Section("items".into()))
        );
        assert_eq!(command(b"stats reset\r\n"), stats(StatsArgs::Reset));
        assert_eq!(command(b"stats reset x\r\n"), stats(StatsArgs::Reset));
        assert_eq!(command(b"stats detail on\r\n"), stats(StatsArgs::DetailOn));
        assert_eq!(
            command(b"stats detail off\r\n"),
            stats(StatsArgs::DetailOff)
        );
        assert_eq!(
            command(b"stats detail dump\r\n"),
            stats(StatsArgs::DetailDump)
        );
        assert_eq!(
            command(b"stats cachedump 1 10\r\n"),
            stats(StatsArgs::Cachedump)
        );
        for (line, want) in [
            (
                &b"stats detail\r\n"[..],
                &b"CLIENT_ERROR usage: stats detail on|off|dump\r\n"[..],
            ),
            (
                b"stats detail x\r\n",
                b"CLIENT_ERROR usage: stats detail on|off|dump\r\n",
            ),
            (b"stats cachedump\r\n", b"CLIENT_ERROR bad command line\r\n"),
            (
                b"stats cachedump 1\r\n",
                b"CLIENT_ERROR bad command line\r\n",
            ),
            (
                b"stats cachedump x 1\r\n",
                b"CLIENT_ERROR bad command line format\r\n",
            ),
            (
                b"stats cachedump 64 1\r\n",
                b"CLIENT_ERROR Illegal slab id\r\n",
            ),
        ] {
            assert_eq!(reply_to(line), want, "{line:?}");
        }
    }

    // ---- unknown commands -----------------------------------------------------------

    #[test]
    fn unknown_uppercase_and_empty_lines_reply_error() {
        for line in [
            &b"GET k\r\n"[..],
            b"bogus\r\n",
            b"mx\r\n",
            b"g\r\n",
            b"\r\n",
            b"\n",
            b"   \r\n",
            b"\x00\x01\x02\r\n",
        ] {
            assert_eq!(
                refusal(line),
                (TextError::UnknownCommand, line.len(), 0, false, None),
                "{line:?}"
            );
        }
    }

    #[test]
    fn an_http_request_line_closes_silently_and_shutdown_is_disabled() {
        for line in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"POST /x HTTP/1.0\r\n",
            b"foo HTTP/\r\n",
        ] {
            let (e, consumed, ..) = refusal(line);
            assert_eq!((e.clone(), consumed), (TextError::HttpRequest, line.len()));
            assert!(e.closes_connection());
            assert_eq!(e.reply(), b"");
        }
        // A known command keeps its meaning.
        assert_eq!(
            command(b"get k HTTP/1.1\r\n"),
            get(&[b"k", b"HTTP/1.1"], false, None)
        );
        assert_eq!(
            reply_to(b"shutdown\r\n"),
            b"ERROR: shutdown not enabled\r\n"
        );
        assert_eq!(
            reply_to(b"shutdown graceful\r\n"),
            b"ERROR: shutdown not enabled\r\n"
        );
    }

    #[test]
    fn bare_newline_line_ending_is_accepted() {
        assert_eq!(
            command(b"set k 0 0 2\nhi\r\n"),
            store(StoreMode::Set, b"k", b"hi", false)
        );
        assert_eq!(command(b"version\n"), TextCommand::Version);
    }

    #[test]
    fn key_of_250_bytes_is_accepted_and_251_rejected() {
        let ok = format!("get {}\r\n", "k".repeat(250));
        assert!(matches!(command(ok.as_bytes()), TextCommand::Get { .. }));
        let long = format!("get {}\r\n", "k".repeat(251));
        assert_eq!(
            reply_to(long.as_bytes()),
            b"CLIENT_ERROR bad command line format\r\n"
        );
        let set = format!("set {} 0 0 1\r\n", "k".repeat(251));
        assert_eq!(error(set.as_bytes()), (client(BAD_FORMAT), set.len(), 3));
    }

    #[test]
    fn control_characters_in_keys_are_rejected() {
        for line in [
            &b"get a\tb\r\n"[..],
            b"get a\x7fb\r\n",
            b"delete \x01\r\n",
            b"touch a\x01 1\r\n",
            b"incr a\x01 1\r\n",
            b"get a\rb\r\n",
        ] {
            assert_eq!(
                error(line).0,
                client("key has control characters"),
                "{line:?}"
            );
        }
        let line = b"set a\x00b 0 0 1\r\n";
        assert_eq!(
            error(line),
            (client("key has control characters"), line.len(), 3)
        );
    }

    // ---- line lengths -----------------------------------------------------------------

    #[test]
    fn a_short_line_without_newline_waits_until_it_is_too_long() {
        let small = TextLimits {
            max_line_bytes: 10,
            ..limits()
        };
        assert_eq!(parse(b"set abcdef", &small), Parsed::Incomplete);
        let (e, consumed) = match parse(b"set abcdefg", &small) {
            Parsed::Error {
                error, consumed, ..
            } => (error, consumed),
            other => panic!("{other:?}"),
        };
        assert_eq!(e.reply(), b"CLIENT_ERROR line too long\r\n");
        assert!(e.closes_connection());
        assert_eq!(consumed, 11);
        // Exactly max_line_bytes before the newline is still accepted.
        assert!(matches!(
            parse(b"delete abc\nmore", &small),
            Parsed::Command { consumed: 11, .. }
        ));
        // A newline that arrives only past the limit does not rescue the line.
        assert!(matches!(
            parse(b"delete abcdefgh\n", &small),
            Parsed::Error {
                error: TextError::LineTooLong,
                ..
            }
        ));
    }

    #[test]
    fn retrieval_lines_have_their_own_long_cap() {
        let small = TextLimits {
            max_line_bytes: 10,
            max_retrieval_line_bytes: 30,
            ..limits()
        };
        for head in ["get ", "gets ", "gat 1 ", "gats 1 ", "bget ", "   get "] {
            let line = format!("{head}{}", "a ".repeat(20));
            let line = &line.as_bytes()[..30];
            assert_eq!(parse(line, &small), Parsed::Incomplete, "{head}");
            let mut whole = line.to_vec();
            whole.push(b'\n');
            assert!(
                matches!(parse(&whole, &small), Parsed::Command { .. }),
                "{head}"
            );
            let mut longer = line.to_vec();
            longer.push(b'a');
            assert!(matches!(
                parse(&longer, &small),
                Parsed::Error {
                    error: TextError::LineTooLong,
                    ..
                }
            ));
        }
        // "getx" or a get with more than max_line_bytes of leading spaces is not one.
        assert!(matches!(
            parse(b"getx aaaaaaaa", &small),
            Parsed::Error {
                error: TextError::LineTooLong,
                ..
            }
        ));
        assert!(matches!(
            parse(b"           get a", &small),
            Parsed::Error {
                error: TextError::LineTooLong,
                ..
            }
        ));
    }

    #[test]
    fn a_400_key_100_kb_get_line_parses_in_one_go_and_in_pieces() {
        let keys: Vec<String> = (0..400).map(|i| format!("{i:0>249}x")).collect();
        let line = format!("get {}\r\n", keys.join(" "));
        assert!(line.len() > 100_000);
        match command(line.as_bytes()) {
            TextCommand::Get { keys: got, .. } => {
                assert_eq!(got.len(), 400);
                assert_eq!(got[399], keys[399].as_bytes());
            }
            other => panic!("{other:?}"),
        }
        // Arriving 1000 bytes at a time, each call searches only the new bytes.
        let bytes = line.as_bytes();
        let mut searched = 0;
        for end in (1000..bytes.len()).step_by(1000) {
            assert_eq!(
                parse_resume(&bytes[..end], &limits(), &mut searched),
                Parsed::Incomplete
            );
            assert_eq!(
                searched, end,
                "the whole prefix is known to hold no newline"
            );
        }
        assert!(matches!(
            parse_resume(bytes, &limits(), &mut searched),
            Parsed::Command { consumed, .. } if consumed == bytes.len()
        ));
        assert_eq!(searched, 0);
    }

    #[test]
    fn a_2_mib_get_line_is_accepted_by_default() {
        let max = limits().max_retrieval_line_bytes;
        assert!(max >= 2 * 1024 * 1024);
        let mut line = b"get".to_vec();
        while line.len() + 5 <= max {
            line.extend_from_slice(b" abc");
        }
        line.extend_from_slice(b"\r\n");
        assert!(matches!(
            parse_default(&line),
            Parsed::Command { consumed, .. } if consumed == line.len()
        ));
    }

    #[test]
    fn resuming_with_a_stale_hint_from_a_shorter_buffer_still_finds_the_line() {
        let mut searched = 0;
        assert_eq!(
            parse_resume(b"ver", &limits(), &mut searched),
            Parsed::Incomplete
        );
        assert_eq!(searched, 3);
        assert!(matches!(
            parse_resume(b"version\r\nget a\r\n", &limits(), &mut searched),
            Parsed::Command {
                command: TextCommand::Version,
                consumed: 9
            }
        ));
        assert_eq!(searched, 0);
        // A storage command waiting for its block leaves the hint at 0.
        assert_eq!(
            parse_resume(b"set k 0 0 5\r\nab", &limits(), &mut searched),
            Parsed::Incomplete
        );
        assert_eq!(searched, 0);
    }

    // ---- pipelines and splits ---------------------------------------------------------

    /// What one parse produced, as a connection sees it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Seen {
        Command(TextCommand),
        Refused(TextError, bool, Option<Vec<u8>>),
    }

    /// Feeds `input` in the pieces that `cuts` delimit, as a connection would (resuming
    /// searches, swallowing skips from the buffer then from later pieces), and returns
    /// everything parsed, stopping at an error that closes the connection.
    fn walk(input: &[u8], cuts: &[usize], limits: &TextLimits) -> Vec<Seen> {
        let mut seen = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut skip = 0usize;
        let mut searched = 0usize;
        let mut from = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            let mut piece = &input[from..cut.max(from)];
            from = cut.max(from);
            let dropped = skip.min(piece.len());
            skip -= dropped;
            piece = &piece[dropped..];
            buf.extend_from_slice(piece);
            loop {
                match parse_resume(&buf, limits, &mut searched) {
                    Parsed::Incomplete => break,
                    Parsed::Command { command, consumed } => {
                        assert!(consumed > 0 && consumed <= buf.len());
                        seen.push(Seen::Command(command));
                        buf.drain(..consumed);
                    }
                    Parsed::Error {
                        error,
                        consumed,
                        skip: more,
                        noreply,
                        forget,
                    } => {
                        assert!(consumed > 0 && consumed <= buf.len());
                        let closes = error.closes_connection();
                        seen.push(Seen::Refused(error, noreply, forget));
                        buf.drain(..consumed);
                        let dropped = more.min(buf.len());
                        buf.drain(..dropped);
                        skip = more - dropped;
                        if closes {
                            return seen;
                        }
                    }
                }
            }
        }
        seen
    }

    const PIPELINE: &[u8] = b"set a 1 0 3\r\nabc\r\nget a b\r\nappend other 0 0 15\r\n\
delete victim\r\n\r\nadd k 0 0 2 noreply\r\nhi\r\ncas k 0 0 1 9\r\nx\r\nincr n 5\r\n\
decr n 1 noreply\r\ntouch k 10\r\ngats 5 a k\r\nset k x 0 4 noreply\r\nget k\r\n\
set big 0 0 40\r\n0123456789012345678901234567890123456789\r\nbogus\r\n\
delete k 0 noreply\r\nflush_all 10\r\nverbosity 1\r\nstats detail on\r\nversion\r\nquit\r\n";

    #[test]
    fn a_pipeline_parses_the_same_at_every_split_point() {
        let small = TextLimits {
            max_value_bytes: 30,
            ..limits()
        };
        let whole = walk(PIPELINE, &[], &small);
        assert_eq!(whole.len(), 19, "{whole:#?}");
        // The data block of the append is data, never a delete.
        assert!(!whole.iter().any(|s| matches!(
            s,
            Seen::Command(TextCommand::Delete { key, .. }) if key == b"victim"
        )));
        // The bad set is silent and its block ("get k") swallowed; the too-large one is
        // refused, swallowed, and forgets its key.
        assert!(whole.contains(&Seen::Refused(client(BAD_FORMAT), true, None)));
        assert!(whole.contains(&Seen::Refused(
            TextError::TooLarge,
            false,
            Some(b"big".to_vec())
        )));
        assert_eq!(whole.last(), Some(&Seen::Command(TextCommand::Quit)));
        for cut in 0..=PIPELINE.len() {
            assert_eq!(walk(PIPELINE, &[cut], &small), whole, "split at {cut}");
        }
        // And one byte at a time.
        let every: Vec<usize> = (1..PIPELINE.len()).collect();
        assert_eq!(walk(PIPELINE, &every, &small), whole);
    }

    #[test]
    fn every_prefix_of_a_command_is_incomplete() {
        for full in [
            &b"set key 1 2 10 noreply\r\n0123\r\n6789\r\n"[..],
            b"cas key 1 2 3 44\r\nabc\r\n",
            b"get a b c\r\n",
            b"gat 1 a\r\n",
            b"delete key 0 noreply\r\n",
            b"incr k 1\r\n",
            b"touch k 1\r\n",
            b"flush_all\r\n",
            b"version\r\n",
        ] {
            for cut in 0..full.len() {
                let prefix = full.get(..cut).unwrap_or_default();
                assert_eq!(parse_default(prefix), Parsed::Incomplete, "prefix {cut}");
            }
            assert!(matches!(
                parse_default(full),
                Parsed::Command { consumed, .. } if consumed == full.len()
            ));
        }
    }

    // ---- replies ----------------------------------------------------------------------

    #[test]
    fn error_replies_are_exact() {
        assert_eq!(TextError::UnknownCommand.reply(), b"ERROR\r\n");
        assert_eq!(
            client("bad data chunk").reply(),
            b"CLIENT_ERROR bad data chunk\r\n"
        );
        assert_eq!(
            TextError::LineTooLong.reply(),
            b"CLIENT_ERROR line too long\r\n"
        );
        assert_eq!(client("a\r\nb").reply(), b"CLIENT_ERROR a  b\r\n");
        assert!(!TextError::UnknownCommand.closes_connection());
        assert!(!TextError::TooLarge.closes_connection());
        assert!(!TextError::ShutdownDisabled.closes_connection());
        assert!(!client("x").closes_connection());
    }

    #[test]
    fn errors_display_as_text() {
        assert_eq!(client("bad").to_string(), "client error: bad");
        assert_eq!(
            TextError::TooLarge.to_string(),
            "object too large for cache"
        );
        assert_eq!(TextError::HttpRequest.to_string(), "an HTTP request");
    }

    #[test]
    fn write_value_is_byte_exact_with_and_without_cas() {
        let mut out = Vec::new();
        write_value(&mut out, b"k", 7, b"a\r\nb", None);
        assert_eq!(out, b"VALUE k 7 4\r\na\r\nb\r\n");
        out.clear();
        write_value(&mut out, b"key", 0, b"", Some(12345));
        assert_eq!(out, b"VALUE key 0 0 12345\r\n\r\n");
    }

    #[test]
    fn other_reply_helpers_are_byte_exact_and_single_line() {
        let mut out = Vec::new();
        write_stat(&mut out, "pid", 42);
        write_version(&mut out, "1.2.3");
        write_server_error(&mut out, "boom\r\nERROR");
        write_client_error(&mut out, "cannot increment or decrement non-numeric value");
        write_stat(&mut out, "odd", "two\nlines");
        write_number(&mut out, u64::MAX);
        write_number(&mut out, 0);
        assert_eq!(
            out,
            b"STAT pid 42\r\nVERSION 1.2.3\r\nSERVER_ERROR boom  ERROR\r\n\
CLIENT_ERROR cannot increment or decrement non-numeric value\r\n\
STAT odd two lines\r\n18446744073709551615\r\n0\r\n"
        );
        out.clear();
        for constant in [
            END, STORED, NOT_STORED, EXISTS, DELETED, NOT_FOUND, TOUCHED, OK, RESET, ERROR,
        ] {
            out.extend_from_slice(constant);
        }
        assert_eq!(
            out,
            b"END\r\nSTORED\r\nNOT_STORED\r\nEXISTS\r\nDELETED\r\nNOT_FOUND\r\nTOUCHED\r\n\
OK\r\nRESET\r\nERROR\r\n"
        );
    }

    // ---- randomized -------------------------------------------------------------------

    #[test]
    fn fuzzed_input_never_panics_and_consumes_sanely() {
        let seeds: [&[u8]; 16] = [
            b"set key 1 2 5 noreply\r\nhello\r\n",
            b"set k 0 0 3\r\nabc\r\nget k\r\n",
            b"get a b c\r\n",
            b"gets a\n",
            b"gat 1 a b\r\ngats -1 c\r\n",
            b"delete k 0 noreply\r\n",
            b"version\r\nstats\r\nquit\r\n",
            b"set k 0 0 99999999\r\n",
            b"set k -1 -1 -1\r\n",
            b"cas k 0 0 1 0 noreply\r\nx\r\n",
            b"append k 0 0 15\r\ndelete victim\r\n\r\n",
            b"incr k 1\r\ndecr k 18446744073709551615 noreply\r\n",
            b"touch k 10\r\nflush_all 0 noreply\r\nverbosity 1\r\n",
            b"stats detail dump\r\nstats cachedump 1 2\r\n",
            b"GET / HTTP/1.1\r\n",
            b"\r\n\n \r\n",
        ];
        let alphabet = b"setgdlvrionqucaph0123456789 -+\r\n\0\x7f\tk";
        let small = TextLimits {
            max_value_bytes: 16,
            max_key_bytes: 4,
            max_line_bytes: 24,
            max_retrieval_line_bytes: 40,
        };
        let mut rng = crate::rng::Rng::new(0x9E37_79B9_7F4A_7C15, 0);
        for round in 0..300_000 {
            let mut input: Vec<u8> = match rng.index(3) {
                0 => (0..rng.index(64)).map(|_| rng.next() as u8).collect(),
                1 => (0..rng.index(64))
                    .map(|_| alphabet[rng.index(alphabet.len())])
                    .collect(),
                _ => seeds[rng.index(seeds.len())].to_vec(),
            };
            for _ in 0..rng.index(4) {
                if input.is_empty() {
                    break;
                }
                let at = rng.index(input.len());
                match rng.index(4) {
                    0 => input[at] = rng.next() as u8,
                    1 => input[at] = alphabet[rng.index(alphabet.len())],
                    2 => input.truncate(at),
                    _ => {
                        input.remove(at);
                    }
                }
            }
            let lim = if round % 2 == 0 { small } else { limits() };
            // Walk the whole buffer as a connection would, then again split in two: the
            // same things must come out.
            let whole = walk(&input, &[], &lim);
            if round % 8 == 0 && !input.is_empty() {
                let cut = rng.index(input.len() + 1);
                assert_eq!(walk(&input, &[cut], &lim), whole, "{input:?} cut at {cut}");
            }
        }
    }
}
