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

pub(crate) mod number;
mod parser;
mod reply;
#[cfg(test)]
mod tests;

pub use parser::{parse, parse_pieces, parse_resume};
pub use reply::{
    DELETED, END, ERROR, EXISTS, NOT_FOUND, NOT_STORED, OK, RESET, STORED, TOUCHED,
    write_client_error, write_number, write_server_error, write_stat, write_value, write_version,
};

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

/// A refused command as [`parse_pieces`] reports it: what a connection does about it
/// (its bytes and its data block already dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// What was wrong.
    pub error: TextError,
    /// Send no reply.
    pub noreply: bool,
    /// Delete this key's value (a `set` refused as too large).
    pub forget: Option<Vec<u8>>,
}
