//! The memcached text protocol subset served on the coordinator port: parsing commands
//! out of a byte buffer, and the reply formats, byte for byte as memcached writes them.
//!
//! [`parse`] looks at the front of a connection's buffer and says whether it holds a whole
//! command, an error (with how many bytes to drop and how many more to swallow), or not
//! enough bytes yet. It never panics on any input, never allocates more than sizes already
//! checked against [`TextLimits`], never takes a lock and never does I/O.

use std::fmt;

/// Limits the parser enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextLimits {
    /// Largest data block of a `set`.
    pub max_value_bytes: usize,
    /// Largest key (memcached: 250).
    pub max_key_bytes: usize,
    /// Longest command line accepted (without its data block).
    pub max_line_bytes: usize,
}

impl Default for TextLimits {
    fn default() -> Self {
        TextLimits {
            max_value_bytes: 1024 * 1024,
            max_key_bytes: 250,
            max_line_bytes: 8192,
        }
    }
}

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextCommand {
    /// `set <key> <flags> <exptime> <bytes> [noreply]\r\n<data>\r\n`
    Set {
        /// The key.
        key: Vec<u8>,
        /// Opaque flags, stored and returned.
        flags: u32,
        /// Expiry as given (the caller decides what non-zero means).
        exptime: i64,
        /// The data block.
        data: Vec<u8>,
        /// Send no reply on success.
        noreply: bool,
    },
    /// `get <key>+` (`cas` false) or `gets <key>+` (`cas` true).
    Get {
        /// The keys, in order.
        keys: Vec<Vec<u8>>,
        /// Include the cas value in each `VALUE` line.
        cas: bool,
    },
    /// `delete <key> [0] [noreply]`
    Delete {
        /// The key.
        key: Vec<u8>,
        /// Send no reply.
        noreply: bool,
    },
    /// `version`
    Version,
    /// `stats`
    Stats,
    /// `quit`
    Quit,
}

/// A command that cannot be served, with memcached's error class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextError {
    /// Unknown command or wrong number of arguments: `ERROR`.
    UnknownCommand,
    /// The client's fault: `CLIENT_ERROR <reason>`.
    Client(String),
    /// A value over the size limit: `SERVER_ERROR object too large for cache`.
    TooLarge,
    /// No end of line within the limit: `CLIENT_ERROR line too long`, then the
    /// connection is closed.
    LineTooLong,
}

impl TextError {
    /// The exact reply bytes, `\r\n` included.
    pub fn reply(&self) -> Vec<u8> {
        match self {
            TextError::UnknownCommand => b"ERROR\r\n".to_vec(),
            TextError::Client(reason) => {
                format!("CLIENT_ERROR {}\r\n", one_line(reason)).into_bytes()
            }
            TextError::TooLarge => b"SERVER_ERROR object too large for cache\r\n".to_vec(),
            TextError::LineTooLong => b"CLIENT_ERROR line too long\r\n".to_vec(),
        }
    }

    /// True when the connection must be closed after the reply.
    pub fn closes_connection(&self) -> bool {
        matches!(self, TextError::LineTooLong)
    }
}

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextError::UnknownCommand => write!(f, "unknown command"),
            TextError::Client(reason) => write!(f, "client error: {reason}"),
            TextError::TooLarge => write!(f, "object too large for cache"),
            TextError::LineTooLong => write!(f, "line too long"),
        }
    }
}

impl std::error::Error for TextError {}

/// What the front of a buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole command yet: read more and call again with the longer buffer.
    Incomplete,
    /// A whole command; drop `consumed` bytes from the front of the buffer.
    Command {
        /// The command.
        command: TextCommand,
        /// Bytes it took.
        consumed: usize,
    },
    /// Reply `error.reply()`, drop `consumed` bytes, then discard `skip` more bytes (from
    /// the buffer first, then from later reads): the data block of a refused `set`.
    Error {
        /// What is wrong.
        error: TextError,
        /// Bytes to drop now.
        consumed: usize,
        /// Bytes to swallow after them.
        skip: usize,
    },
}

const BAD_FORMAT: &str = "bad command line format";

fn error(error: TextError, consumed: usize, skip: usize) -> Parsed {
    Parsed::Error {
        error,
        consumed,
        skip,
    }
}

/// Parses the first command in `buf`.
pub fn parse(buf: &[u8], limits: &TextLimits) -> Parsed {
    let Some(newline) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > limits.max_line_bytes {
            return error(TextError::LineTooLong, buf.len(), 0);
        }
        return Parsed::Incomplete;
    };
    let line_len = newline + 1;
    if newline > limits.max_line_bytes {
        return error(TextError::LineTooLong, line_len, 0);
    }
    let line = &buf[..newline];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let tokens: Vec<&[u8]> = line
        .split(|&b| b == b' ')
        .filter(|token| !token.is_empty())
        .collect();
    let Some((&name, args)) = tokens.split_first() else {
        return error(TextError::UnknownCommand, line_len, 0);
    };
    match name {
        b"get" | b"gets" => parse_get(args, name == b"gets", line_len, limits),
        b"set" => parse_set(buf, args, line_len, limits),
        b"delete" => parse_delete(args, line_len, limits),
        b"version" if args.is_empty() => command(TextCommand::Version, line_len),
        b"stats" if args.is_empty() => command(TextCommand::Stats, line_len),
        b"quit" if args.is_empty() => command(TextCommand::Quit, line_len),
        _ => error(TextError::UnknownCommand, line_len, 0),
    }
}

fn command(command: TextCommand, consumed: usize) -> Parsed {
    Parsed::Command { command, consumed }
}

/// Checks a key: length and no control characters.
fn check_key(key: &[u8], limits: &TextLimits) -> Result<(), TextError> {
    if key.len() > limits.max_key_bytes {
        return Err(TextError::Client("key too long".into()));
    }
    if key.iter().any(|&b| b < 0x21 || b == 0x7f) {
        return Err(TextError::Client("key has control characters".into()));
    }
    Ok(())
}

fn parse_get(args: &[&[u8]], cas: bool, line_len: usize, limits: &TextLimits) -> Parsed {
    if args.is_empty() {
        return error(TextError::UnknownCommand, line_len, 0);
    }
    for key in args {
        if let Err(e) = check_key(key, limits) {
            return error(e, line_len, 0);
        }
    }
    let keys = args.iter().map(|key| key.to_vec()).collect();
    command(TextCommand::Get { keys, cas }, line_len)
}

fn parse_delete(args: &[&[u8]], line_len: usize, limits: &TextLimits) -> Parsed {
    let (key, rest) = match args.split_first() {
        Some(split) => split,
        None => return error(TextError::UnknownCommand, line_len, 0),
    };
    let noreply = match rest {
        [] => false,
        [b"noreply"] => true,
        [b"0"] => false,
        [b"0", b"noreply"] => true,
        _ => return error(TextError::Client(BAD_FORMAT.into()), line_len, 0),
    };
    if let Err(e) = check_key(key, limits) {
        return error(e, line_len, 0);
    }
    command(
        TextCommand::Delete {
            key: key.to_vec(),
            noreply,
        },
        line_len,
    )
}

fn parse_set(buf: &[u8], args: &[&[u8]], line_len: usize, limits: &TextLimits) -> Parsed {
    let (key, flags, exptime, bytes, noreply) = match args {
        [key, flags, exptime, bytes] => (key, flags, exptime, bytes, None),
        [key, flags, exptime, bytes, noreply] => (key, flags, exptime, bytes, Some(noreply)),
        _ => return error(TextError::UnknownCommand, line_len, 0),
    };
    let Some(bytes) = parse_number::<usize>(bytes) else {
        return error(TextError::Client(BAD_FORMAT.into()), line_len, 0);
    };
    let Some(skip) = bytes.checked_add(2) else {
        return error(TextError::Client(BAD_FORMAT.into()), line_len, 0);
    };
    if bytes > limits.max_value_bytes {
        return error(TextError::TooLarge, line_len, skip);
    }
    if let Err(e) = check_key(key, limits) {
        return error(e, line_len, skip);
    }
    let (Some(flags), Some(exptime)) = (parse_number::<u32>(flags), parse_signed(exptime)) else {
        return error(TextError::Client(BAD_FORMAT.into()), line_len, skip);
    };
    let noreply = match noreply {
        None => false,
        Some(&word) if word == b"noreply" => true,
        Some(_) => return error(TextError::Client(BAD_FORMAT.into()), line_len, skip),
    };
    let total = line_len + skip;
    let Some(block) = buf.get(line_len..total) else {
        return Parsed::Incomplete;
    };
    let (data, end) = block.split_at(bytes);
    if end != b"\r\n" {
        return error(TextError::Client("bad data chunk".into()), total, 0);
    }
    command(
        TextCommand::Set {
            key: key.to_vec(),
            flags,
            exptime,
            data: data.to_vec(),
            noreply,
        },
        total,
    )
}

/// A non-negative decimal number: digits only, no sign, fits `T`.
fn parse_number<T: std::str::FromStr>(token: &[u8]) -> Option<T> {
    if token.is_empty() || !token.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(token).ok()?.parse().ok()
}

/// A decimal number with an optional leading `-`.
fn parse_signed(token: &[u8]) -> Option<i64> {
    match token.strip_prefix(b"-") {
        Some(digits) => parse_number::<i64>(digits).map(|n| -n),
        None => parse_number(token),
    }
}

/// Turns a reason into one line: no CR or LF can split a reply.
fn one_line(reason: &str) -> String {
    reason.replace(['\r', '\n'], " ")
}

/// End of a `get` reply.
pub const END: &[u8] = b"END\r\n";
/// A `set` succeeded.
pub const STORED: &[u8] = b"STORED\r\n";
/// A `delete` found the key.
pub const DELETED: &[u8] = b"DELETED\r\n";
/// A `delete` did not find the key.
pub const NOT_FOUND: &[u8] = b"NOT_FOUND\r\n";

/// Appends `VALUE <key> <flags> <bytes>[ <cas>]\r\n<data>\r\n`.
pub fn write_value(out: &mut Vec<u8>, key: &[u8], flags: u32, data: &[u8], cas: Option<u64>) {
    out.extend_from_slice(b"VALUE ");
    out.extend_from_slice(key);
    let header = match cas {
        Some(cas) => format!(" {flags} {} {cas}\r\n", data.len()),
        None => format!(" {flags} {}\r\n", data.len()),
    };
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends `STAT <name> <value>\r\n`.
pub fn write_stat(out: &mut Vec<u8>, name: &str, value: impl fmt::Display) {
    out.extend_from_slice(format!("STAT {name} {value}\r\n").as_bytes());
}

/// Appends `VERSION <version>\r\n`.
pub fn write_version(out: &mut Vec<u8>, version: &str) {
    out.extend_from_slice(format!("VERSION {version}\r\n").as_bytes());
}

/// Appends `SERVER_ERROR <reason>\r\n`, the reason folded onto one line.
pub fn write_server_error(out: &mut Vec<u8>, reason: &str) {
    out.extend_from_slice(format!("SERVER_ERROR {}\r\n", one_line(reason)).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> TextLimits {
        TextLimits::default()
    }

    fn parsed(input: &[u8]) -> Parsed {
        parse(input, &limits())
    }

    fn command_of(input: &[u8]) -> TextCommand {
        match parsed(input) {
            Parsed::Command { command, consumed } => {
                assert_eq!(consumed, input.len());
                command
            }
            other => panic!("{input:?} gave {other:?}"),
        }
    }

    fn error_of(input: &[u8]) -> (Vec<u8>, usize, usize) {
        match parsed(input) {
            Parsed::Error {
                error,
                consumed,
                skip,
            } => (error.reply(), consumed, skip),
            other => panic!("{input:?} gave {other:?}"),
        }
    }

    #[test]
    fn each_command_parses() {
        assert_eq!(
            command_of(b"set k 5 0 3\r\nabc\r\n"),
            TextCommand::Set {
                key: b"k".to_vec(),
                flags: 5,
                exptime: 0,
                data: b"abc".to_vec(),
                noreply: false
            }
        );
        assert_eq!(
            command_of(b"get a bb ccc\r\n"),
            TextCommand::Get {
                keys: vec![b"a".to_vec(), b"bb".to_vec(), b"ccc".to_vec()],
                cas: false
            }
        );
        assert_eq!(
            command_of(b"gets a\r\n"),
            TextCommand::Get {
                keys: vec![b"a".to_vec()],
                cas: true
            }
        );
        assert_eq!(
            command_of(b"delete k\r\n"),
            TextCommand::Delete {
                key: b"k".to_vec(),
                noreply: false
            }
        );
        assert_eq!(
            command_of(b"delete k 0 noreply\r\n"),
            TextCommand::Delete {
                key: b"k".to_vec(),
                noreply: true
            }
        );
        assert_eq!(command_of(b"version\r\n"), TextCommand::Version);
        assert_eq!(command_of(b"stats\r\n"), TextCommand::Stats);
        assert_eq!(command_of(b"quit\r\n"), TextCommand::Quit);
        // A bare \n ends a line too, and extra spaces are fine.
        assert_eq!(command_of(b"quit\n"), TextCommand::Quit);
        assert_eq!(
            command_of(b"set  k 1 -1 0 noreply\n\r\n"),
            TextCommand::Set {
                key: b"k".to_vec(),
                flags: 1,
                exptime: -1,
                data: Vec::new(),
                noreply: true
            }
        );
    }

    #[test]
    fn binary_data_with_crlf_and_zero_bytes_is_data() {
        let input = b"set k 0 0 6\r\n\r\nget\0\r\n";
        match command_of(input) {
            TextCommand::Set { data, .. } => assert_eq!(data, b"\r\nget\0"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_prefix_of_a_command_is_incomplete() {
        let input = b"set key 1 0 5\r\nab\r\nc\r\n";
        for cut in 0..input.len() {
            assert_eq!(parsed(&input[..cut]), Parsed::Incomplete, "cut at {cut}");
        }
        assert!(matches!(parsed(input), Parsed::Command { .. }));
    }

    #[test]
    fn pipelined_commands_parse_one_at_a_time() {
        let input = b"get a\r\nset b 0 0 1\r\nx\r\ndelete c\r\n";
        let mut at = 0;
        let mut commands = Vec::new();
        while at < input.len() {
            match parsed(&input[at..]) {
                Parsed::Command { command, consumed } => {
                    commands.push(command);
                    at += consumed;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(commands.len(), 3);
        assert!(matches!(commands[2], TextCommand::Delete { .. }));
    }

    #[test]
    fn errors_reply_exactly_as_memcached() {
        assert_eq!(error_of(b"bogus\r\n"), (b"ERROR\r\n".to_vec(), 7, 0));
        assert_eq!(error_of(b"\r\n"), (b"ERROR\r\n".to_vec(), 2, 0));
        assert_eq!(error_of(b"get\r\n").0, b"ERROR\r\n");
        assert_eq!(error_of(b"set k 0 0\r\n").0, b"ERROR\r\n");
        assert_eq!(error_of(b"version x\r\n").0, b"ERROR\r\n");
        assert_eq!(
            error_of(b"set k 0 0 3\r\nabcde\r\n"),
            (b"CLIENT_ERROR bad data chunk\r\n".to_vec(), 18, 0)
        );
        assert_eq!(
            error_of(b"set k 0 0 x\r\n"),
            (b"CLIENT_ERROR bad command line format\r\n".to_vec(), 13, 0)
        );
        assert_eq!(
            error_of(b"set k -1 0 1\r\n"),
            (b"CLIENT_ERROR bad command line format\r\n".to_vec(), 14, 3)
        );
        assert_eq!(
            error_of(b"set k 0 0 1 norply\r\n").0,
            b"CLIENT_ERROR bad command line format\r\n"
        );
        assert_eq!(
            error_of(b"delete k 1\r\n").0,
            b"CLIENT_ERROR bad command line format\r\n"
        );
    }

    #[test]
    fn too_large_is_refused_without_waiting_for_the_data() {
        let line = format!("set big 0 0 {}\r\n", 1024 * 1024 + 1);
        assert_eq!(
            error_of(line.as_bytes()),
            (
                b"SERVER_ERROR object too large for cache\r\n".to_vec(),
                line.len(),
                1024 * 1024 + 3
            )
        );
        let huge = format!("set big 0 0 {}\r\n", u64::MAX);
        assert!(matches!(parsed(huge.as_bytes()), Parsed::Error { .. }));
    }

    #[test]
    fn keys_are_checked() {
        let ok = format!("get {}\r\n", "k".repeat(250));
        assert!(matches!(parsed(ok.as_bytes()), Parsed::Command { .. }));
        let long = format!("get {}\r\n", "k".repeat(251));
        assert_eq!(
            error_of(long.as_bytes()).0,
            b"CLIENT_ERROR key too long\r\n"
        );
        assert_eq!(
            error_of(b"get a\x01b\r\n").0,
            b"CLIENT_ERROR key has control characters\r\n"
        );
        // A bad key in a set still swallows the data block.
        assert_eq!(error_of(b"set a\x7fb 0 0 4\r\n").2, 6);
    }

    #[test]
    fn a_line_with_no_end_is_cut_off() {
        let junk = vec![b'x'; 8193];
        let (reply, consumed, _) = error_of(&junk);
        assert_eq!(reply, b"CLIENT_ERROR line too long\r\n");
        assert_eq!(consumed, junk.len());
        assert!(TextError::LineTooLong.closes_connection());
        assert!(!TextError::UnknownCommand.closes_connection());
        assert_eq!(parsed(&junk[..100]), Parsed::Incomplete);
    }

    #[test]
    fn replies_are_byte_exact() {
        let mut out = Vec::new();
        write_value(&mut out, b"k", 7, b"a\r\nb", None);
        write_value(&mut out, b"k", 0, b"", Some(42));
        out.extend_from_slice(END);
        assert_eq!(
            out,
            b"VALUE k 7 4\r\na\r\nb\r\nVALUE k 0 0 42\r\n\r\nEND\r\n"
        );
        let mut out = Vec::new();
        write_stat(&mut out, "uptime", 5);
        write_version(&mut out, "0.1.0");
        write_server_error(&mut out, "two\r\nlines");
        assert_eq!(
            out,
            b"STAT uptime 5\r\nVERSION 0.1.0\r\nSERVER_ERROR two  lines\r\n"
        );
    }

    #[test]
    fn random_input_never_panics_and_always_makes_progress() {
        let seeds: [&[u8]; 4] = [
            b"set k 0 0 3\r\nabc\r\n",
            b"get a b c\r\n",
            b"delete k noreply\r\n",
            b"gets x\r\nquit\r\n",
        ];
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let limits = TextLimits {
            max_value_bytes: 64,
            max_key_bytes: 250,
            max_line_bytes: 64,
        };
        for round in 0..50_000 {
            let mut input = seeds[round % seeds.len()].to_vec();
            for _ in 0..(next() % 4) {
                let i = next() as usize % input.len();
                input[i] = next() as u8;
            }
            if next() % 3 == 0 {
                input.extend((0..next() % 100).map(|_| next() as u8));
            }
            match parse(&input, &limits) {
                Parsed::Incomplete => {}
                Parsed::Command { consumed, .. } | Parsed::Error { consumed, .. } => {
                    assert!(consumed > 0 && consumed <= input.len(), "{input:?}");
                }
            }
        }
    }
}
