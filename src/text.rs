//! The memcached text protocol (a subset) spoken on the coordinator port.
//!
//! This module owns two things: parsing memcached text commands (`get`, `gets`, `set`,
//! `delete`, `version`, `stats`, `quit`) out of the front of a connection's byte buffer,
//! and formatting the replies byte for byte as memcached writes them.
//!
//! Invariant: it never takes a lock and never does I/O; it validates every declared length
//! against [`TextLimits`] before allocating for it. [`parse`] is a pure function of its
//! input: it says whether the buffer holds a whole command, an error (with how many bytes
//! to drop and how many more to swallow), or not enough bytes yet.
//!
//! It must never panic on any input bytes, never allocate for a size a client declared
//! without checking it first, never treat bytes inside a `set` data block as a command,
//! and never decide policy (what a non-zero exptime means, who serves a key): that is the
//! caller's job.

use std::fmt;

/// Limits the parser enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextLimits {
    /// Largest data block a `set` may carry; larger ones get
    /// `SERVER_ERROR object too large for cache`.
    pub max_value_bytes: usize,
    /// Longest key in bytes (memcached: 250).
    pub max_key_bytes: usize,
    /// Longest command line accepted, counted without its terminating `\n` (and without any
    /// `set` data block).
    pub max_line_bytes: usize,
}

impl Default for TextLimits {
    /// 1 MiB values, 250-byte keys, 8192-byte command lines.
    fn default() -> Self {
        TextLimits {
            max_value_bytes: 1024 * 1024,
            max_key_bytes: 250,
            max_line_bytes: 8192,
        }
    }
}

/// One whole command parsed from the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextCommand {
    /// `set <key> <flags> <exptime> <bytes> [noreply]\r\n<data>\r\n`
    Set {
        /// The key (validated: no control characters, not too long).
        key: Vec<u8>,
        /// Opaque flags, stored and returned with the value.
        flags: u32,
        /// Expiry time as sent; the caller decides what a non-zero value means.
        exptime: i64,
        /// The data block, without its trailing `\r\n`.
        data: Vec<u8>,
        /// True when the client asked for no reply.
        noreply: bool,
    },
    /// `get <key>+` (cas = false) or `gets <key>+` (cas = true)
    Get {
        /// The keys asked for, in order (at least one).
        keys: Vec<Vec<u8>>,
        /// True for `gets`: each value is returned with its CAS unique.
        cas: bool,
    },
    /// `delete <key> [0] [noreply]`
    Delete {
        /// The key to delete.
        key: Vec<u8>,
        /// True when the client asked for no reply.
        noreply: bool,
    },
    /// `version`
    Version,
    /// `stats` (without arguments)
    Stats,
    /// `quit`: the caller closes the connection without a reply.
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
    /// No `\n` within `max_line_bytes`: reply `CLIENT_ERROR line too long\r\n`, then close
    /// the connection.
    LineTooLong,
}

impl TextError {
    /// The exact reply bytes, ending with `\r\n`.
    #[must_use]
    pub fn reply(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            TextError::UnknownCommand => out.extend_from_slice(b"ERROR\r\n"),
            TextError::Client(reason) => {
                out.extend_from_slice(b"CLIENT_ERROR ");
                push_line_safe(&mut out, reason);
                out.extend_from_slice(b"\r\n");
            }
            TextError::TooLarge => {
                out.extend_from_slice(b"SERVER_ERROR object too large for cache\r\n");
            }
            TextError::LineTooLong => out.extend_from_slice(b"CLIENT_ERROR line too long\r\n"),
        }
        out
    }

    /// True when the connection must be closed after sending the reply (only
    /// [`TextError::LineTooLong`]: the stream can no longer be framed).
    #[must_use]
    pub fn closes_connection(&self) -> bool {
        matches!(self, TextError::LineTooLong)
    }
}

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextError::UnknownCommand => f.write_str("unknown command or wrong argument count"),
            TextError::Client(reason) => write!(f, "client error: {reason}"),
            TextError::TooLarge => f.write_str("object too large for cache"),
            TextError::LineTooLong => f.write_str("command line too long"),
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
    /// Reply `error.reply()`, drop `consumed` bytes from the buffer, then discard `skip`
    /// further bytes (from what is left in the buffer first, then from later reads). `skip`
    /// is used so that a `set` whose line was rejected (too large, bad key, ...) but whose
    /// `<bytes>` was a valid number has its data block (bytes + 2) swallowed without
    /// buffering it, as memcached does.
    Error {
        /// What was wrong.
        error: TextError,
        /// Bytes to drop from the front of the buffer (never 0).
        consumed: usize,
        /// Further bytes to discard after those.
        skip: usize,
    },
}

/// The generic reply to a malformed line of a known command.
const BAD_FORMAT: &str = "bad command line format";

/// Parse the first command in `buf`. Never panics; never allocates more than the declared,
/// already-validated sizes.
#[must_use]
pub fn parse(buf: &[u8], limits: &TextLimits) -> Parsed {
    // A line may hold at most max_line_bytes bytes before its `\n`.
    let window = buf.len().min(limits.max_line_bytes.saturating_add(1));
    let newline = buf
        .get(..window)
        .and_then(|head| head.iter().position(|&b| b == b'\n'));
    let Some(newline) = newline else {
        if buf.len() > limits.max_line_bytes {
            return Parsed::Error {
                error: TextError::LineTooLong,
                consumed: buf.len(),
                skip: 0,
            };
        }
        return Parsed::Incomplete;
    };
    let line_len = newline + 1;
    let mut line = buf.get(..newline).unwrap_or_default();
    if let Some(stripped) = line.strip_suffix(b"\r") {
        line = stripped;
    }
    let tokens: Vec<&[u8]> = line
        .split(|&b| b == b' ')
        .filter(|t| !t.is_empty())
        .collect();
    let outcome = match tokens.split_first() {
        None => Err(TextError::UnknownCommand),
        Some((&name, args)) => match name {
            b"get" => parse_get(args, false, limits),
            b"gets" => parse_get(args, true, limits),
            b"set" => return parse_set(buf, line_len, args, limits),
            b"delete" => parse_delete(args, limits),
            b"version" => no_args(args, TextCommand::Version),
            b"stats" => no_args(args, TextCommand::Stats),
            b"quit" => no_args(args, TextCommand::Quit),
            _ => Err(TextError::UnknownCommand),
        },
    };
    match outcome {
        Ok(command) => Parsed::Command {
            command,
            consumed: line_len,
        },
        Err(error) => Parsed::Error {
            error,
            consumed: line_len,
            skip: 0,
        },
    }
}

/// A command that takes no arguments: any argument makes it `ERROR`.
fn no_args(args: &[&[u8]], command: TextCommand) -> Result<TextCommand, TextError> {
    if args.is_empty() {
        Ok(command)
    } else {
        Err(TextError::UnknownCommand)
    }
}

/// `get <key>+` / `gets <key>+`.
fn parse_get(args: &[&[u8]], cas: bool, limits: &TextLimits) -> Result<TextCommand, TextError> {
    if args.is_empty() {
        return Err(TextError::UnknownCommand);
    }
    let mut keys = Vec::with_capacity(args.len());
    for &key in args {
        keys.push(check_key(key, limits)?.to_vec());
    }
    Ok(TextCommand::Get { keys, cas })
}

/// `delete <key> [0] [noreply]`, as memcached accepts it.
fn parse_delete(args: &[&[u8]], limits: &TextLimits) -> Result<TextCommand, TextError> {
    let bad = || TextError::Client(BAD_FORMAT.to_string());
    let (key, noreply) = match *args {
        [key] | [key, b"0"] => (key, false),
        [key, b"noreply"] | [key, b"0", b"noreply"] => (key, true),
        [_, _] | [_, _, _] => return Err(bad()),
        _ => return Err(TextError::UnknownCommand),
    };
    let key = check_key(key, limits)?;
    Ok(TextCommand::Delete {
        key: key.to_vec(),
        noreply,
    })
}

/// `set <key> <flags> <exptime> <bytes> [noreply]\r\n<data>\r\n`; `line_len` is the
/// length of the command line including its `\n`.
fn parse_set(buf: &[u8], line_len: usize, args: &[&[u8]], limits: &TextLimits) -> Parsed {
    let error = |error: TextError, skip: usize| Parsed::Error {
        error,
        consumed: line_len,
        skip,
    };
    let (key, flags, exptime, bytes, noreply) = match *args {
        [key, flags, exptime, bytes] => (key, flags, exptime, bytes, None),
        [key, flags, exptime, bytes, noreply] => (key, flags, exptime, bytes, Some(noreply)),
        _ => return error(TextError::UnknownCommand, 0),
    };
    let Some(bytes) = parse_unsigned(bytes).and_then(|n| usize::try_from(n).ok()) else {
        return error(TextError::Client(BAD_FORMAT.to_string()), 0);
    };
    let skip = bytes.saturating_add(2);
    if bytes > limits.max_value_bytes {
        return error(TextError::TooLarge, skip);
    }
    let noreply = match noreply {
        None => false,
        Some(b"noreply") => true,
        Some(_) => return error(TextError::Client(BAD_FORMAT.to_string()), skip),
    };
    let key = match check_key(key, limits) {
        Ok(key) => key,
        Err(e) => return error(e, skip),
    };
    let Some(flags) = parse_unsigned(flags).and_then(|n| u32::try_from(n).ok()) else {
        return error(TextError::Client(BAD_FORMAT.to_string()), skip);
    };
    let Some(exptime) = parse_signed(exptime) else {
        return error(TextError::Client(BAD_FORMAT.to_string()), skip);
    };
    let Some(total) = line_len.checked_add(skip) else {
        return error(TextError::TooLarge, skip);
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
        };
    }
    Parsed::Command {
        command: TextCommand::Set {
            key: key.to_vec(),
            flags,
            exptime,
            data: data.to_vec(),
            noreply,
        },
        consumed: total,
    }
}

/// Checks a key token against the limits and memcached's character rules.
fn check_key<'a>(key: &'a [u8], limits: &TextLimits) -> Result<&'a [u8], TextError> {
    if key.is_empty() {
        return Err(TextError::Client(BAD_FORMAT.to_string()));
    }
    if key.len() > limits.max_key_bytes {
        return Err(TextError::Client("key too long".to_string()));
    }
    if key.iter().any(|&b| b < 0x21 || b == 0x7f) {
        return Err(TextError::Client("key has control characters".to_string()));
    }
    Ok(key)
}

/// A non-empty string of ASCII digits (no sign) that fits a `u64`.
fn parse_unsigned(token: &[u8]) -> Option<u64> {
    if token.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    for &b in token {
        let digit = match b {
            b'0'..=b'9' => u64::from(b - b'0'),
            _ => return None,
        };
        value = value.checked_mul(10)?.checked_add(digit)?;
    }
    Some(value)
}

/// An optional `-` then a non-empty string of ASCII digits that fits an `i64`.
fn parse_signed(token: &[u8]) -> Option<i64> {
    match token.strip_prefix(b"-") {
        Some(digits) => 0i64.checked_sub_unsigned(parse_unsigned(digits)?),
        None => i64::try_from(parse_unsigned(token)?).ok(),
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

/// Ends a `get`/`gets` reply.
pub const END: &[u8] = b"END\r\n";
/// Reply to a successful `set`.
pub const STORED: &[u8] = b"STORED\r\n";
/// Reply to a `delete` that removed the key.
pub const DELETED: &[u8] = b"DELETED\r\n";
/// Reply to a `delete` of a missing key.
pub const NOT_FOUND: &[u8] = b"NOT_FOUND\r\n";

/// Appends one value of a `get`/`gets` reply:
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
            other => panic!("expected a command, got {other:?}"),
        }
    }

    fn error(buf: &[u8]) -> (TextError, usize, usize) {
        match parse_default(buf) {
            Parsed::Error {
                error,
                consumed,
                skip,
            } => (error, consumed, skip),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    fn client(reason: &str) -> TextError {
        TextError::Client(reason.to_string())
    }

    #[test]
    fn get_parses_one_key_without_cas() {
        assert_eq!(
            command(b"get foo\r\n"),
            TextCommand::Get {
                keys: vec![b"foo".to_vec()],
                cas: false
            }
        );
    }

    #[test]
    fn gets_sets_cas() {
        assert_eq!(
            command(b"gets foo\r\n"),
            TextCommand::Get {
                keys: vec![b"foo".to_vec()],
                cas: true
            }
        );
    }

    #[test]
    fn get_accepts_many_keys_and_extra_spaces() {
        assert_eq!(
            command(b"get  a bb   ccc \r\n"),
            TextCommand::Get {
                keys: vec![b"a".to_vec(), b"bb".to_vec(), b"ccc".to_vec()],
                cas: false
            }
        );
    }

    #[test]
    fn get_without_keys_is_an_error() {
        let (e, consumed, skip) = error(b"get\r\n");
        assert_eq!((e.reply(), consumed, skip), (b"ERROR\r\n".to_vec(), 5, 0));
        assert_eq!(error(b"gets   \r\n").0, TextError::UnknownCommand);
    }

    #[test]
    fn set_parses_with_its_data_block() {
        assert_eq!(
            command(b"set k 5 0 3\r\nabc\r\n"),
            TextCommand::Set {
                key: b"k".to_vec(),
                flags: 5,
                exptime: 0,
                data: b"abc".to_vec(),
                noreply: false
            }
        );
    }

    #[test]
    fn set_with_noreply_sets_noreply() {
        assert_eq!(
            command(b"set k 4294967295 -1 0 noreply\r\n\r\n"),
            TextCommand::Set {
                key: b"k".to_vec(),
                flags: u32::MAX,
                exptime: -1,
                data: Vec::new(),
                noreply: true
            }
        );
    }

    #[test]
    fn set_with_a_bad_sixth_token_is_a_client_error_that_skips_the_data() {
        let (e, consumed, skip) = error(b"set k 0 0 3 norply\r\nabc\r\n");
        assert_eq!((e, consumed, skip), (client(BAD_FORMAT), 20, 5));
    }

    #[test]
    fn set_with_wrong_token_count_is_unknown_command() {
        assert_eq!(error(b"set k 0 0\r\n"), (TextError::UnknownCommand, 11, 0));
        assert_eq!(
            error(b"set k 0 0 1 noreply x\r\n"),
            (TextError::UnknownCommand, 23, 0)
        );
    }

    #[test]
    fn set_with_bad_byte_count_skips_nothing() {
        for line in [
            &b"set k 0 0 -1\r\n"[..],
            b"set k 0 0 +1\r\n",
            b"set k 0 0 x\r\n",
            b"set k 0 0 99999999999999999999999\r\n",
        ] {
            assert_eq!(error(line), (client(BAD_FORMAT), line.len(), 0));
        }
    }

    #[test]
    fn set_with_bad_flags_or_exptime_skips_the_data_block() {
        for line in [
            &b"set k -1 0 3\r\n"[..],
            b"set k +1 0 3\r\n",
            b"set k 4294967296 0 3\r\n",
            b"set k x 0 3\r\n",
            b"set k 0 - 3\r\n",
            b"set k 0 +5 3\r\n",
            b"set k 0 9223372036854775808 3\r\n",
        ] {
            assert_eq!(error(line), (client(BAD_FORMAT), line.len(), 5), "{line:?}");
        }
    }

    #[test]
    fn exptime_spans_the_whole_i64_range() {
        let min = command(b"set k 0 -9223372036854775808 0\r\n\r\n");
        assert!(matches!(
            min,
            TextCommand::Set {
                exptime: i64::MIN,
                ..
            }
        ));
        let max = command(b"set k 0 9223372036854775807 0\r\n\r\n");
        assert!(matches!(
            max,
            TextCommand::Set {
                exptime: i64::MAX,
                ..
            }
        ));
    }

    #[test]
    fn too_large_set_skips_its_data_without_waiting_for_it() {
        let small = TextLimits {
            max_value_bytes: 10,
            ..limits()
        };
        let buf = b"set k 0 0 11\r\n";
        match parse(buf, &small) {
            Parsed::Error {
                error,
                consumed,
                skip,
            } => {
                assert_eq!(
                    error.reply(),
                    b"SERVER_ERROR object too large for cache\r\n"
                );
                assert_eq!((consumed, skip), (buf.len(), 13));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(b"set k 0 0 10\r\n", &small),
            Parsed::Incomplete
        ));
    }

    #[test]
    fn huge_declared_size_does_not_overflow() {
        let buf = b"set k 0 0 18446744073709551615\r\n";
        assert_eq!(error(buf), (TextError::TooLarge, buf.len(), usize::MAX));
    }

    #[test]
    fn split_set_waits_for_the_data_block() {
        assert_eq!(parse_default(b"set k 0 0 5\r\nhel"), Parsed::Incomplete);
        assert_eq!(parse_default(b"set k 0 0 5\r\nhello\r"), Parsed::Incomplete);
    }

    #[test]
    fn set_data_not_followed_by_crlf_is_a_bad_data_chunk() {
        let buf = b"set k 0 0 3\r\nabcde\r\n";
        let (e, consumed, skip) = error(buf);
        assert_eq!(e.reply(), b"CLIENT_ERROR bad data chunk\r\n");
        assert_eq!((consumed, skip), (13 + 5, 0));
        assert!(!e.closes_connection());
    }

    #[test]
    fn binary_data_with_crlf_and_zero_bytes_is_taken_verbatim() {
        let data = b"a\r\nget x\r\n\0\0\n\r";
        let mut buf = format!("set bin 0 0 {}\r\n", data.len()).into_bytes();
        buf.extend_from_slice(data);
        buf.extend_from_slice(b"\r\n");
        match command(&buf) {
            TextCommand::Set { data: got, .. } => assert_eq!(got, data),
            other => panic!("{other:?}"),
        }
    }

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
    fn delete_with_bad_arguments_is_refused() {
        assert_eq!(error(b"delete\r\n").0, TextError::UnknownCommand);
        assert_eq!(error(b"delete k 5\r\n").0, client(BAD_FORMAT));
        assert_eq!(error(b"delete k noreply 0\r\n").0, client(BAD_FORMAT));
        assert_eq!(error(b"delete k 0 x\r\n").0, client(BAD_FORMAT));
        assert_eq!(
            error(b"delete k 0 noreply x\r\n").0,
            TextError::UnknownCommand
        );
    }

    #[test]
    fn version_stats_and_quit_parse_and_refuse_arguments() {
        assert_eq!(command(b"version\r\n"), TextCommand::Version);
        assert_eq!(command(b"stats\r\n"), TextCommand::Stats);
        assert_eq!(command(b"quit\r\n"), TextCommand::Quit);
        for line in [&b"version x\r\n"[..], b"stats items\r\n", b"quit now\r\n"] {
            assert_eq!(error(line), (TextError::UnknownCommand, line.len(), 0));
        }
    }

    #[test]
    fn unknown_and_uppercase_commands_reply_error() {
        for line in [
            &b"GET k\r\n"[..],
            b"flush_all\r\n",
            b"\r\n",
            b"\n",
            b"   \r\n",
        ] {
            let (e, consumed, skip) = error(line);
            assert_eq!(e.reply(), b"ERROR\r\n");
            assert_eq!((consumed, skip), (line.len(), 0));
        }
    }

    #[test]
    fn bare_newline_line_ending_is_accepted() {
        assert_eq!(
            command(b"set k 0 0 2\nhi\r\n"),
            TextCommand::Set {
                key: b"k".to_vec(),
                flags: 0,
                exptime: 0,
                data: b"hi".to_vec(),
                noreply: false
            }
        );
        assert_eq!(command(b"version\n"), TextCommand::Version);
    }

    #[test]
    fn key_of_250_bytes_is_accepted_and_251_rejected() {
        let ok = format!("get {}\r\n", "k".repeat(250));
        assert!(matches!(command(ok.as_bytes()), TextCommand::Get { .. }));
        let long = format!("get {}\r\n", "k".repeat(251));
        let (e, _, _) = error(long.as_bytes());
        assert_eq!(e.reply(), b"CLIENT_ERROR key too long\r\n");
        let set = format!("set {} 0 0 1\r\n", "k".repeat(251));
        assert_eq!(
            error(set.as_bytes()),
            (client("key too long"), set.len(), 3)
        );
    }

    #[test]
    fn control_characters_in_keys_are_rejected() {
        for line in [&b"get a\tb\r\n"[..], b"get a\x7fb\r\n", b"delete \x01\r\n"] {
            assert_eq!(error(line).0, client("key has control characters"));
        }
        let line = b"set a\x00b 0 0 1\r\n";
        assert_eq!(
            error(line),
            (client("key has control characters"), line.len(), 3)
        );
    }

    #[test]
    fn a_stray_carriage_return_inside_a_line_stays_in_its_token() {
        assert_eq!(
            error(b"get a\rb\r\n").0,
            client("key has control characters")
        );
    }

    #[test]
    fn line_without_newline_waits_until_it_is_too_long() {
        let small = TextLimits {
            max_line_bytes: 10,
            ..limits()
        };
        assert_eq!(parse(b"get abcdef", &small), Parsed::Incomplete);
        let (e, consumed) = match parse(b"get abcdefg", &small) {
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
            parse(b"get abcdef\nmore", &small),
            Parsed::Command { consumed: 11, .. }
        ));
        // A newline that arrives only past the limit does not rescue the line.
        assert!(matches!(
            parse(b"get abcdefgh\n", &small),
            Parsed::Error {
                error: TextError::LineTooLong,
                ..
            }
        ));
    }

    #[test]
    fn every_prefix_of_a_command_is_incomplete() {
        for full in [
            &b"set key 1 2 10 noreply\r\n0123\r\n6789\r\n"[..],
            b"get a b c\r\n",
            b"delete key 0 noreply\r\n",
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

    #[test]
    fn pipelined_commands_parse_one_per_call() {
        let buf = b"set k 0 0 3\r\nget\r\nget k\r\ndelete k noreply\r\n";
        let mut rest = &buf[..];
        let mut seen = Vec::new();
        while !rest.is_empty() {
            match parse_default(rest) {
                Parsed::Command { command, consumed } => {
                    seen.push(command);
                    rest = rest.get(consumed..).unwrap_or_default();
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(seen.len(), 3);
        assert!(matches!(&seen[0], TextCommand::Set { data, .. } if data == b"get"));
        assert!(matches!(&seen[1], TextCommand::Get { .. }));
        assert!(matches!(
            &seen[2],
            TextCommand::Delete { noreply: true, .. }
        ));
    }

    #[test]
    fn error_replies_are_exact() {
        assert_eq!(TextError::UnknownCommand.reply(), b"ERROR\r\n");
        assert_eq!(
            client("bad data chunk").reply(),
            b"CLIENT_ERROR bad data chunk\r\n"
        );
        assert_eq!(
            TextError::TooLarge.reply(),
            b"SERVER_ERROR object too large for cache\r\n"
        );
        assert_eq!(
            TextError::LineTooLong.reply(),
            b"CLIENT_ERROR line too long\r\n"
        );
        assert_eq!(client("a\r\nb").reply(), b"CLIENT_ERROR a  b\r\n");
        assert!(!TextError::UnknownCommand.closes_connection());
        assert!(!TextError::TooLarge.closes_connection());
        assert!(!client("x").closes_connection());
    }

    #[test]
    fn errors_display_as_text() {
        assert_eq!(client("bad").to_string(), "client error: bad");
        assert_eq!(
            TextError::TooLarge.to_string(),
            "object too large for cache"
        );
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
        write_stat(&mut out, "odd", "two\nlines");
        assert_eq!(
            out,
            b"STAT pid 42\r\nVERSION 1.2.3\r\nSERVER_ERROR boom  ERROR\r\nSTAT odd two lines\r\n"
        );
        out.clear();
        out.extend_from_slice(END);
        out.extend_from_slice(STORED);
        out.extend_from_slice(DELETED);
        out.extend_from_slice(NOT_FOUND);
        assert_eq!(out, b"END\r\nSTORED\r\nDELETED\r\nNOT_FOUND\r\n");
    }

    /// Deterministic xorshift64 generator for the fuzz loop.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            // n is small here; the modulo bias does not matter for fuzzing.
            (self.next() % (n.max(1) as u64)) as usize
        }
    }

    #[test]
    fn fuzzed_input_never_panics_and_consumes_sanely() {
        let seeds: [&[u8]; 9] = [
            b"set key 1 2 5 noreply\r\nhello\r\n",
            b"set k 0 0 3\r\nabc\r\nget k\r\n",
            b"get a b c\r\n",
            b"gets a\n",
            b"delete k 0 noreply\r\n",
            b"version\r\nstats\r\nquit\r\n",
            b"set k 0 0 99999999\r\n",
            b"set k -1 -1 -1\r\n",
            b"\r\n\n \r\n",
        ];
        let alphabet = b"setgdlvrionqu0123456789 -+\r\n\0\x7f\tk";
        let small = TextLimits {
            max_value_bytes: 16,
            max_key_bytes: 4,
            max_line_bytes: 24,
        };
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for round in 0..300_000 {
            let mut input: Vec<u8> = match rng.below(3) {
                0 => (0..rng.below(64)).map(|_| rng.next() as u8).collect(),
                1 => (0..rng.below(64))
                    .map(|_| alphabet[rng.below(alphabet.len())])
                    .collect(),
                _ => seeds[rng.below(seeds.len())].to_vec(),
            };
            for _ in 0..rng.below(4) {
                if input.is_empty() {
                    break;
                }
                let at = rng.below(input.len());
                match rng.below(4) {
                    0 => input[at] = rng.next() as u8,
                    1 => input[at] = alphabet[rng.below(alphabet.len())],
                    2 => input.truncate(at),
                    _ => {
                        input.remove(at);
                    }
                }
            }
            let lim = if round % 2 == 0 { small } else { limits() };
            // Walk the whole buffer as a connection would.
            let mut rest = &input[..];
            loop {
                match parse(rest, &lim) {
                    Parsed::Incomplete => break,
                    Parsed::Command { consumed, .. } | Parsed::Error { consumed, .. } => {
                        assert!(consumed > 0, "zero consumed on {input:?}");
                        assert!(consumed <= rest.len(), "overrun on {input:?}");
                        rest = &rest[consumed..];
                    }
                }
            }
        }
    }
}
