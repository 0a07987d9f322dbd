//! memcached's meta commands (`mn mg ms md ma me`) on the coordinator's text port:
//! parser and reply formats.
//!
//! The reference is memcached 1.6 (`doc/protocol.txt`, `proto_text.c`); replies and error
//! strings are byte for byte those of memcached 1.6.18, with these deliberate differences:
//! - an `ms` whose line is refused but whose `<datalen>` parses always has its data block
//!   swallowed (memcached reads it as a command when the key is too long or there are too
//!   many flags);
//! - an `O` token longer than 32 bytes is refused before `ms`/`md` do anything (as
//!   memcached), and after `mg`/`ma` were served (as memcached, which notices it while
//!   writing the reply): [`MetaFlags::opaque_too_long`] tells the executor;
//! - `x` (md: empty the value, keep the item) is accepted as in memcached 1.6.19+; `E` is
//!   refused as an invalid flag, as in 1.6.18 (the store cannot take a cas from clients).
//!
//! Like [`crate::text`], this module never takes a lock and never does I/O; it checks every
//! declared length against [`TextLimits`] before using it, never allocates for a size a
//! client declared without that check, and never reads a data block as a command.

use crate::request::StoreMode;
use crate::text::TextLimits;

/// memcached's limit on the number of tokens of a meta command line, the empty terminal
/// token memcached's tokenizer adds included (`MFLAG_MAX_OPT_LENGTH`).
const MAX_TOKENS: usize = 20;
/// Longest `O` (opaque) token, its `O` included (`MFLAG_MAX_OPAQUE_LENGTH`).
pub const MAX_OPAQUE_BYTES: usize = 32;

const BAD_FORMAT: &[u8] = b"CLIENT_ERROR bad command line format\r\n";
const BAD_TOKEN: &str = "CLIENT_ERROR bad token in command line format";

/// A reply flag, in the order the client sent it (memcached answers them in that order).
/// Flags that change the item (`T`, `N`, `R`) are listed too: a `t` before a `T` reports
/// the TTL from before the update, as memcached does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyFlag {
    /// `c`: return the cas unique.
    Cas,
    /// `f`: return the client flags.
    Flags,
    /// `h`: return whether the item was hit before.
    Hit,
    /// `k`: return the key.
    Key,
    /// `l`: return the seconds since the last access.
    LastAccess,
    /// `s`: return the value's size.
    Size,
    /// `t`: return the remaining TTL (`-1`: none).
    Ttl,
    /// `T<ttl>`: where the TTL changes.
    SetTtl,
    /// `N<ttl>`: where a vivified item gets its TTL.
    Vivify,
    /// `R<ttl>`: where the recache check is made.
    Recache,
    /// `O<opaque>`: the whole token, `O` included, copied back.
    Opaque(Vec<u8>),
}

/// The flags of a meta command, as memcached's flag parser reads them (every command
/// accepts every known flag; those it has no use for are ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaFlags {
    /// Reply flags and item-changing flags, in the order sent.
    pub order: Vec<ReplyFlag>,
    /// `b`: the key was sent in base64 (it is decoded here); returned keys are encoded.
    pub base64: bool,
    /// `q`: suppress the nominal reply (`EN` for `mg`, `HD` for the others).
    pub quiet: bool,
    /// `v`: return the value.
    pub value: bool,
    /// `T<ttl>`: memcached's exptime to set.
    pub ttl: Option<i64>,
    /// `N<ttl>`: create the item on a miss, with this exptime.
    pub vivify: Option<i64>,
    /// `R<ttl>`: win the recache right when the remaining TTL is below this.
    pub recache: Option<i64>,
    /// `C<cas>`: compare this cas unique.
    pub compare_cas: Option<u64>,
    /// `F<flags>`: client flags to store (memcached's 32-bit truncation applied).
    pub client_flags: u32,
    /// `M<mode>`: the mode character.
    pub mode: Option<u8>,
    /// `J<initial>`: `ma`'s initial value on autovivify (default 0).
    pub initial: u64,
    /// `D<delta>`: `ma`'s delta (default 1).
    pub delta: u64,
    /// `I`: invalidate (mark stale).
    pub invalidate: bool,
    /// `x`: `md` empties the value and keeps the item.
    pub remove_value: bool,
    /// An `O` token is over [`MAX_OPAQUE_BYTES`]: the command must answer
    /// `CLIENT_ERROR opaque token too long` (set only for `mg` and `ma`, which memcached
    /// serves before noticing).
    pub opaque_too_long: bool,
}

impl Default for MetaFlags {
    fn default() -> Self {
        MetaFlags {
            order: Vec::new(),
            base64: false,
            quiet: false,
            value: false,
            ttl: None,
            vivify: None,
            recache: None,
            compare_cas: None,
            client_flags: 0,
            mode: None,
            initial: 0,
            delta: 1,
            invalidate: false,
            remove_value: false,
            opaque_too_long: false,
        }
    }
}

impl MetaFlags {
    /// True when a `t` comes before the `T` (it then reports the TTL before the update).
    #[must_use]
    pub fn ttl_read_before_update(&self) -> bool {
        let t = self.order.iter().position(|f| *f == ReplyFlag::Ttl);
        let set = self.order.iter().position(|f| *f == ReplyFlag::SetTtl);
        matches!((t, set), (Some(t), Some(set)) if t < set)
    }

    /// True when `t` was asked for.
    #[must_use]
    pub fn wants_ttl(&self) -> bool {
        self.order.contains(&ReplyFlag::Ttl)
    }

    /// The exptime an item created by this command ends with: memcached applies `T` and
    /// `N` in the order sent, so the later one wins.
    #[must_use]
    pub fn created_exptime(&self) -> i64 {
        let mut exptime = 0;
        for flag in &self.order {
            match flag {
                ReplyFlag::SetTtl => exptime = self.ttl.unwrap_or(0),
                ReplyFlag::Vivify => exptime = self.vivify.unwrap_or(0),
                _ => {}
            }
        }
        exptime
    }
}

/// A parsed meta command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaCommand {
    /// `mn`: answer `MN`.
    Noop,
    /// `me <key> [b]`: memcached's debug dump of an item.
    Debug {
        /// The key (decoded).
        key: Vec<u8>,
        /// The key came in base64.
        base64: bool,
    },
    /// `mg <key> <flags>*`
    Get {
        /// The key (decoded).
        key: Vec<u8>,
        /// The flags.
        flags: MetaFlags,
    },
    /// `ms <key> <datalen> <flags>*` and its data block.
    Set {
        /// The key (decoded).
        key: Vec<u8>,
        /// From `M`: `Set` (default), `Add` (`E`), `Append`, `Prepend`, `Replace`.
        mode: StoreMode,
        /// The data block, without its `\r\n`.
        data: Vec<u8>,
        /// The flags.
        flags: MetaFlags,
    },
    /// `md <key> <flags>*`
    Delete {
        /// The key (decoded).
        key: Vec<u8>,
        /// The flags.
        flags: MetaFlags,
    },
    /// `ma <key> <flags>*`
    Arith {
        /// The key (decoded).
        key: Vec<u8>,
        /// `MD`/`M-`: decrement.
        decr: bool,
        /// The flags.
        flags: MetaFlags,
    },
}

/// What [`parse`] found at the front of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum MetaParsed {
    /// The line is not a meta command, or not whole yet (no `\n` within the line limit):
    /// let the classic parser have it (it waits, or refuses a line too long).
    NotMeta,
    /// The command line is whole but its data block is not: read more.
    Incomplete,
    /// A whole command taking `consumed` bytes.
    Command {
        /// The command.
        command: MetaCommand,
        /// Bytes it took (line and data block; never 0).
        consumed: usize,
    },
    /// Send `reply` (may be empty), drop `consumed` bytes, then discard `skip` more.
    Error {
        /// The reply bytes.
        reply: Vec<u8>,
        /// Bytes to drop (never 0).
        consumed: usize,
        /// Further bytes to discard (the data block of a refused `ms`).
        skip: usize,
    },
}

/// Parses the meta command at the front of `buf`. Never panics.
#[must_use]
pub fn parse(buf: &[u8], limits: &TextLimits) -> MetaParsed {
    let window = buf.len().min(limits.max_line_bytes.saturating_add(1));
    let Some(newline) = buf
        .get(..window)
        .and_then(|head| head.iter().position(|&b| b == b'\n'))
    else {
        return MetaParsed::NotMeta;
    };
    let line_len = newline + 1;
    let mut line = buf.get(..newline).unwrap_or_default();
    // memcached strips a `\r` before the `\n` (not on a line of that `\r` alone) and,
    // being C, stops reading the line at a NUL.
    if line.len() > 1 {
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
    }
    if let Some(nul) = line.iter().position(|&b| b == 0) {
        line = line.get(..nul).unwrap_or_default();
    }
    let mut split = line.split(|&b| b == b' ').filter(|t| !t.is_empty());
    // Classic commands leave here without allocating.
    let Some(&[b'm', kind]) = split.next() else {
        return MetaParsed::NotMeta;
    };
    if !matches!(kind, b'n' | b'e' | b'g' | b's' | b'd' | b'a') {
        return MetaParsed::NotMeta;
    }
    let tokens: Vec<&[u8]> = line
        .split(|&b| b == b' ')
        .filter(|t| !t.is_empty())
        .collect();
    let result = match kind {
        b'n' => Ok(MetaCommand::Noop),
        b'e' => parse_debug(&tokens, limits),
        b'g' => parse_get(&tokens, limits),
        b's' => return parse_set(buf, line_len, &tokens, limits),
        b'd' => parse_delete(&tokens, limits, false),
        b'a' => parse_delete(&tokens, limits, true),
        _ => return MetaParsed::NotMeta,
    };
    match result {
        Ok(command) => MetaParsed::Command {
            command,
            consumed: line_len,
        },
        Err(reply) => MetaParsed::Error {
            reply,
            consumed: line_len,
            skip: 0,
        },
    }
}

/// `CLIENT_ERROR ...\r\n` (or any status line) as reply bytes.
fn line(text: &str) -> Vec<u8> {
    let mut out = text.as_bytes().to_vec();
    out.extend_from_slice(b"\r\n");
    out
}

/// `me <key> [b]`
fn parse_debug(tokens: &[&[u8]], limits: &TextLimits) -> Result<MetaCommand, Vec<u8>> {
    let Some(&key) = tokens.get(1) else {
        return Err(BAD_FORMAT.to_vec());
    };
    if key.len() > limits.max_key_bytes {
        return Err(BAD_FORMAT.to_vec());
    }
    if tokens.get(2).copied() == Some(b"b") {
        let key = base64_decode(key).ok_or_else(|| BAD_FORMAT.to_vec())?;
        return Ok(MetaCommand::Debug { key, base64: true });
    }
    Ok(MetaCommand::Debug {
        key: key.to_vec(),
        base64: false,
    })
}

/// `mg <key> <flags>*`
fn parse_get(tokens: &[&[u8]], limits: &TextLimits) -> Result<MetaCommand, Vec<u8>> {
    let Some(&key) = tokens.get(1) else {
        return Err(b"ERROR\r\n".to_vec());
    };
    if key.len() > limits.max_key_bytes {
        return Err(BAD_FORMAT.to_vec());
    }
    if tokens.len() + 1 > MAX_TOKENS {
        return Err(line("CLIENT_ERROR options flags are too long"));
    }
    let (key, mut flags) = parse_flags(key, tokens.get(2..).unwrap_or_default()).map_err(line)?;
    flags.opaque_too_long = opaque_too_long(&flags);
    Ok(MetaCommand::Get { key, flags })
}

/// `md <key> <flags>*` and (`arith`) `ma <key> <flags>*`, checked alike.
fn parse_delete(
    tokens: &[&[u8]],
    limits: &TextLimits,
    arith: bool,
) -> Result<MetaCommand, Vec<u8>> {
    let Some(&key) = tokens.get(1) else {
        return Err(b"ERROR\r\n".to_vec());
    };
    if key.len() > limits.max_key_bytes {
        return Err(BAD_FORMAT.to_vec());
    }
    if tokens.len() + 1 > MAX_TOKENS {
        return Err(line("CLIENT_ERROR options flags too long"));
    }
    let (key, mut flags) = parse_flags(key, tokens.get(2..).unwrap_or_default())
        .map_err(|_| line("CLIENT_ERROR invalid or duplicate flag"))?;
    if !arith {
        if opaque_too_long(&flags) {
            return Err(line("CLIENT_ERROR opaque token too long"));
        }
        return Ok(MetaCommand::Delete { key, flags });
    }
    let decr = match flags.mode {
        None | Some(b'I' | b'+') => false,
        Some(b'D' | b'-') => true,
        Some(_) => return Err(line("CLIENT_ERROR invalid mode for ma M token")),
    };
    flags.opaque_too_long = opaque_too_long(&flags);
    Ok(MetaCommand::Arith { key, decr, flags })
}

/// `ms <key> <datalen> <flags>*\r\n<data>\r\n`; `line_len` is the command line's length
/// with its `\n`.
fn parse_set(buf: &[u8], line_len: usize, tokens: &[&[u8]], limits: &TextLimits) -> MetaParsed {
    let error = |reply: Vec<u8>, skip: usize| MetaParsed::Error {
        reply,
        consumed: line_len,
        skip,
    };
    let Some(&key) = tokens.get(1) else {
        return error(b"ERROR\r\n".to_vec(), 0);
    };
    // memcached reads datalen as a C long truncated to 32 bits, then wants 0..=INT_MAX-2.
    let datalen = tokens
        .get(2)
        .and_then(|t| c_strtol(t))
        .map(|n| n as i32)
        .filter(|&n| (0..=i32::MAX - 2).contains(&n))
        .and_then(|n| usize::try_from(n).ok());
    // Whenever the length is known, its block is swallowed with the error.
    let skip = datalen.map_or(0, |n| n.saturating_add(2));
    if key.len() > limits.max_key_bytes {
        return error(BAD_FORMAT.to_vec(), skip);
    }
    if tokens.len() == 2 {
        return error(BAD_FORMAT.to_vec(), 0);
    }
    if tokens.len() + 1 > MAX_TOKENS {
        return error(line("CLIENT_ERROR options flags too long"), skip);
    }
    let Some(datalen) = datalen else {
        return error(BAD_FORMAT.to_vec(), 0);
    };
    let (key, flags) = match parse_flags(key, tokens.get(3..).unwrap_or_default()) {
        Ok(parsed) => parsed,
        Err(reply) => return error(line(reply), skip),
    };
    let mode = match flags.mode {
        None | Some(b'S') => StoreMode::Set,
        Some(b'E') => StoreMode::Add,
        Some(b'A') => StoreMode::Append,
        Some(b'P') => StoreMode::Prepend,
        Some(b'R') => StoreMode::Replace,
        Some(_) => return error(line("CLIENT_ERROR invalid mode for ms M token"), skip),
    };
    if opaque_too_long(&flags) {
        return error(line("CLIENT_ERROR opaque token too long"), skip);
    }
    if datalen > limits.max_value_bytes {
        return error(line("SERVER_ERROR object too large for cache"), skip);
    }
    let Some(total) = line_len.checked_add(skip) else {
        return error(line("SERVER_ERROR object too large for cache"), skip);
    };
    let Some(block) = buf.get(line_len..total) else {
        return MetaParsed::Incomplete;
    };
    let Some((data, terminator)) = block.split_at_checked(datalen) else {
        return MetaParsed::Incomplete;
    };
    if terminator != b"\r\n" {
        return MetaParsed::Error {
            reply: line("CLIENT_ERROR bad data chunk"),
            consumed: total,
            skip: 0,
        };
    }
    MetaParsed::Command {
        command: MetaCommand::Set {
            key,
            mode,
            data: data.to_vec(),
            flags,
        },
        consumed: total,
    }
}

fn opaque_too_long(flags: &MetaFlags) -> bool {
    flags
        .order
        .iter()
        .any(|f| matches!(f, ReplyFlag::Opaque(t) if t.len() > MAX_OPAQUE_BYTES))
}

/// memcached's `_meta_flag_preparse`: reads the flag tokens, decodes a base64 key. A
/// duplicate or unknown flag stops at once; other bad tokens are all read, and the last
/// error found is the one reported.
fn parse_flags(key: &[u8], tokens: &[&[u8]]) -> Result<(Vec<u8>, MetaFlags), &'static str> {
    let mut flags = MetaFlags::default();
    let mut key = key.to_vec();
    let mut seen = [false; 127];
    let mut error: Option<&'static str> = None;
    let mut has_error = false;
    for &token in tokens {
        let Some((&o, arg)) = token.split_first() else {
            continue;
        };
        match seen.get_mut(usize::from(o)) {
            Some(seen) if !*seen => *seen = true,
            _ => return Err("CLIENT_ERROR duplicate flag"),
        }
        let mut fail = |why: Option<&'static str>| {
            has_error = true;
            if why.is_some() {
                error = why;
            }
        };
        match o {
            b'b' => {
                flags.base64 = true;
                match base64_decode(&key) {
                    Some(decoded) => key = decoded,
                    None => {
                        key.clear();
                        fail(Some("CLIENT_ERROR error decoding key"));
                    }
                }
            }
            b'N' => match c_strtol(arg) {
                Some(n) => {
                    flags.vivify = Some(i64::from(n as i32));
                    flags.order.push(ReplyFlag::Vivify);
                }
                None => fail(Some(BAD_TOKEN)),
            },
            b'T' => match c_strtol(arg) {
                Some(n) => {
                    flags.ttl = Some(i64::from(n as i32));
                    flags.order.push(ReplyFlag::SetTtl);
                }
                None => fail(Some(BAD_TOKEN)),
            },
            b'R' => match c_strtol(arg) {
                Some(n) => {
                    flags.recache = Some(i64::from(n as i32));
                    flags.order.push(ReplyFlag::Recache);
                }
                None => fail(Some(BAD_TOKEN)),
            },
            b'O' => flags.order.push(ReplyFlag::Opaque(token.to_vec())),
            b'P' | b'L' | b'u' => {}
            b'k' => flags.order.push(ReplyFlag::Key),
            b's' => flags.order.push(ReplyFlag::Size),
            b't' => flags.order.push(ReplyFlag::Ttl),
            b'c' => flags.order.push(ReplyFlag::Cas),
            b'f' => flags.order.push(ReplyFlag::Flags),
            b'l' => flags.order.push(ReplyFlag::LastAccess),
            b'h' => flags.order.push(ReplyFlag::Hit),
            b'v' => flags.value = true,
            b'q' => flags.quiet = true,
            b'x' => flags.remove_value = true,
            b'I' => flags.invalidate = true,
            // memcached's safe_strtoul: an unsigned long truncated to 32 bits.
            b'F' => match c_strtoul(arg) {
                Some(n) => flags.client_flags = n as u32,
                None => fail(None),
            },
            b'C' => match c_strtoul(arg) {
                Some(n) => flags.compare_cas = Some(n),
                None => fail(Some(BAD_TOKEN)),
            },
            b'M' => match *arg {
                [mode] => flags.mode = Some(mode),
                _ => fail(Some("CLIENT_ERROR incorrect length for M token")),
            },
            b'J' => match c_strtoul(arg) {
                Some(n) => flags.initial = n,
                None => fail(Some("CLIENT_ERROR invalid numeric initial value")),
            },
            b'D' => match c_strtoul(arg) {
                Some(n) => flags.delta = n,
                None => fail(Some("CLIENT_ERROR invalid numeric delta value")),
            },
            _ => return Err("CLIENT_ERROR invalid flag"),
        }
    }
    if has_error {
        return Err(error.unwrap_or("CLIENT_ERROR bad command line format"));
    }
    Ok((key, flags))
}

/// C's `isspace`.
fn c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// The sign and magnitude `strtol`/`strtoull` read, as memcached's `safe_strto*` accept
/// them: leading white space, an optional sign, at least one digit, then the end or white
/// space. `None` on overflow of a `u64` magnitude or a malformed token.
fn c_number(token: &[u8]) -> Option<(bool, u64)> {
    let mut rest = token;
    while let Some((&b, tail)) = rest.split_first() {
        if !c_space(b) {
            break;
        }
        rest = tail;
    }
    let negative = match rest.first() {
        Some(b'-') => true,
        Some(b'+') => false,
        _ => {
            return c_digits(rest).map(|m| (false, m));
        }
    };
    c_digits(rest.get(1..).unwrap_or_default()).map(|m| (negative, m))
}

fn c_digits(token: &[u8]) -> Option<u64> {
    let count = token.iter().take_while(|b| b.is_ascii_digit()).count();
    if count == 0 {
        return None;
    }
    if let Some(&next) = token.get(count) {
        if !c_space(next) {
            return None;
        }
    }
    let mut value: u64 = 0;
    for &b in token.get(..count).unwrap_or_default() {
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(value)
}

/// memcached's `safe_strtol` before its 32-bit truncation: a C `long` (64 bits).
fn c_strtol(token: &[u8]) -> Option<i64> {
    let (negative, magnitude) = c_number(token)?;
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// memcached's `safe_strtoull` (and `safe_strtoul` before its truncation): `strtoull`,
/// which negates a `-` number, refused when the result looks negative and had a `-`.
fn c_strtoul(token: &[u8]) -> Option<u64> {
    let (negative, magnitude) = c_number(token)?;
    let value = if negative {
        magnitude.wrapping_neg()
    } else {
        magnitude
    };
    if (value as i64) < 0 && token.contains(&b'-') {
        return None;
    }
    Some(value)
}

const BASE64_TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// The value of a base64 character (`=` counts as 0), as memcached's decoder sees it.
fn base64_value(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        b'=' => Some(0),
        _ => None,
    }
}

/// memcached's base64 decoder: characters outside the alphabet are skipped, the rest
/// must come in whole quads, decoding stops after the first padded quad; `None` where
/// memcached's returns 0 (nothing decoded, or bad padding).
#[must_use]
pub fn base64_decode(input: &[u8]) -> Option<Vec<u8>> {
    let count = input.iter().filter(|&&b| base64_value(b).is_some()).count();
    if count == 0 || count % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(count / 4 * 3);
    let mut block = [0u8; 4];
    let mut filled = 0;
    let mut pad = 0;
    for &b in input {
        let Some(value) = base64_value(b) else {
            continue;
        };
        if b == b'=' {
            pad += 1;
        }
        if let Some(slot) = block.get_mut(filled) {
            *slot = value;
        }
        filled += 1;
        if filled == 4 {
            let [a, b, c, d] = block;
            let bytes = [(a << 2) | (b >> 4), (b << 4) | (c >> 2), (c << 6) | d];
            filled = 0;
            match pad {
                0 => out.extend_from_slice(&bytes),
                1 => out.extend_from_slice(&bytes[..2]),
                2 => out.extend_from_slice(&bytes[..1]),
                _ => return None,
            }
            if pad > 0 {
                break;
            }
        }
    }
    if out.is_empty() {
        return None;
    }
    Some(out)
}

/// Standard base64 with `=` padding, as memcached encodes binary keys.
#[must_use]
pub fn base64_encode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len().div_ceil(3) * 4);
    let sym = |v: u8| BASE64_TABLE[usize::from(v & 0x3f)];
    for chunk in input.chunks(3) {
        match *chunk {
            [a, b, c] => out.extend_from_slice(&[
                sym(a >> 2),
                sym((a << 4) | (b >> 4)),
                sym((b << 2) | (c >> 6)),
                sym(c),
            ]),
            [a, b] => {
                out.extend_from_slice(&[sym(a >> 2), sym((a << 4) | (b >> 4)), sym(b << 2), b'='])
            }
            [a] => out.extend_from_slice(&[sym(a >> 2), sym(a << 4), b'=', b'=']),
            _ => {}
        }
    }
    out
}

/// Appends ` k<key>`, or ` k<base64 key> b` for a key that came in base64.
pub fn push_key(out: &mut Vec<u8>, key: &[u8], base64: bool) {
    out.extend_from_slice(b" k");
    if base64 {
        out.extend_from_slice(&base64_encode(key));
        out.extend_from_slice(b" b");
    } else {
        out.extend_from_slice(key);
    }
}

/// Appends ` <c><number>` (a numeric reply flag such as ` c42`).
pub fn push_number(out: &mut Vec<u8>, flag: u8, value: impl std::fmt::Display) {
    out.push(b' ');
    out.push(flag);
    out.extend_from_slice(value.to_string().as_bytes());
}

/// Appends the flags every meta reply may carry: `O` (copied back) and `k`, in order.
pub fn push_opaque_and_key(out: &mut Vec<u8>, flags: &MetaFlags, key: &[u8]) {
    for flag in &flags.order {
        match flag {
            ReplyFlag::Opaque(token) => {
                out.push(b' ');
                out.extend_from_slice(token);
            }
            ReplyFlag::Key => push_key(out, key, flags.base64),
            _ => {}
        }
    }
}

/// `mg`/`ma`'s `t`: the remaining TTL of an item expiring at `expires` (Unix seconds, 0
/// never), `-1` for none; memcached's 32-bit unsigned arithmetic, wrapping included.
pub fn push_ttl(out: &mut Vec<u8>, expires: u64, now: u64) {
    if expires == 0 {
        out.extend_from_slice(b" t-1");
    } else {
        push_number(out, b't', expires.wrapping_sub(now) as u32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> TextLimits {
        TextLimits::default()
    }

    fn command(buf: &[u8]) -> MetaCommand {
        match parse(buf, &limits()) {
            MetaParsed::Command { command, consumed } => {
                assert_eq!(consumed, buf.len(), "whole buffer should be one command");
                command
            }
            other => panic!("expected a command from {buf:?}, got {other:?}"),
        }
    }

    fn error(buf: &[u8]) -> (String, usize, usize) {
        match parse(buf, &limits()) {
            MetaParsed::Error {
                reply,
                consumed,
                skip,
            } => (String::from_utf8_lossy(&reply).into_owned(), consumed, skip),
            other => panic!("expected an error from {buf:?}, got {other:?}"),
        }
    }

    fn reply(buf: &[u8]) -> String {
        error(buf).0
    }

    fn flags_of(buf: &[u8]) -> MetaFlags {
        match command(buf) {
            MetaCommand::Get { flags, .. }
            | MetaCommand::Set { flags, .. }
            | MetaCommand::Delete { flags, .. }
            | MetaCommand::Arith { flags, .. } => flags,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn noop_takes_its_line_and_ignores_arguments() {
        assert_eq!(command(b"mn\r\n"), MetaCommand::Noop);
        assert_eq!(command(b"mn\n"), MetaCommand::Noop);
        assert_eq!(command(b"  mn  x y\r\n"), MetaCommand::Noop);
        assert!(matches!(
            parse(b"mn\r\nmg", &limits()),
            MetaParsed::Command { consumed: 4, .. }
        ));
    }

    #[test]
    fn other_commands_are_not_meta() {
        for buf in [
            &b"get foo\r\n"[..],
            b"mx foo\r\n",
            b"mgg foo\r\n",
            b"MG foo\r\n",
            b"m\r\n",
            b"\r\n",
            b"mg\tfoo\r\n",
            b"mg foo",
            b"mn",
        ] {
            assert_eq!(parse(buf, &limits()), MetaParsed::NotMeta, "{buf:?}");
        }
    }

    #[test]
    fn a_line_too_long_is_left_to_the_classic_parser() {
        let small = TextLimits {
            max_line_bytes: 10,
            ..limits()
        };
        assert_eq!(parse(b"mg abcdefghijk\r\n", &small), MetaParsed::NotMeta);
        assert!(matches!(
            parse(b"mg abcdef\n", &small),
            MetaParsed::Command { .. }
        ));
    }

    #[test]
    fn mg_parses_every_flag_in_order() {
        let flags = flags_of(b"mg foo s t c f l h O123 k v q u T30 N40 R50 C7\r\n");
        assert_eq!(
            flags.order,
            vec![
                ReplyFlag::Size,
                ReplyFlag::Ttl,
                ReplyFlag::Cas,
                ReplyFlag::Flags,
                ReplyFlag::LastAccess,
                ReplyFlag::Hit,
                ReplyFlag::Opaque(b"O123".to_vec()),
                ReplyFlag::Key,
                ReplyFlag::SetTtl,
                ReplyFlag::Vivify,
                ReplyFlag::Recache,
            ]
        );
        assert!(flags.value && flags.quiet && !flags.base64);
        assert_eq!(
            (flags.ttl, flags.vivify, flags.recache, flags.compare_cas),
            (Some(30), Some(40), Some(50), Some(7))
        );
        assert!(flags.ttl_read_before_update());
        assert!(!flags_of(b"mg foo T1 t\r\n").ttl_read_before_update());
        assert_eq!(flags.created_exptime(), 40);
        assert_eq!(flags_of(b"mg foo N40 T30\r\n").created_exptime(), 30);
        match command(b"mg foo\r\n") {
            MetaCommand::Get { key, flags } => {
                assert_eq!(key, b"foo");
                assert_eq!(flags, MetaFlags::default());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mg_errors_are_memcacheds() {
        assert_eq!(error(b"mg\r\n"), ("ERROR\r\n".into(), 4, 0));
        assert_eq!(reply(b"mg foo x y\r\n"), "CLIENT_ERROR invalid flag\r\n");
        assert_eq!(reply(b"mg foo E5\r\n"), "CLIENT_ERROR invalid flag\r\n");
        assert_eq!(reply(b"mg foo v v\r\n"), "CLIENT_ERROR duplicate flag\r\n");
        assert_eq!(reply(b"mg foo \xc3\r\n"), "CLIENT_ERROR duplicate flag\r\n");
        assert_eq!(reply(b"mg foo \x01\r\n"), "CLIENT_ERROR invalid flag\r\n");
        assert_eq!(
            reply(b"mg foo T- Nx\r\n"),
            "CLIENT_ERROR bad token in command line format\r\n"
        );
        assert_eq!(
            reply(b"mg foo Tx b\r\n"),
            "CLIENT_ERROR error decoding key\r\n"
        );
        assert_eq!(
            reply(b"mg foo Fx\r\n"),
            "CLIENT_ERROR bad command line format\r\n"
        );
        assert_eq!(
            reply(b"mg foo a b c d e f g h i j k l m n o p q r\r\n"),
            "CLIENT_ERROR options flags are too long\r\n"
        );
        let long = format!("mg {}\r\n", "k".repeat(251));
        assert_eq!(
            reply(long.as_bytes()),
            "CLIENT_ERROR bad command line format\r\n"
        );
        let ok = format!("mg {} v\r\n", "k".repeat(250));
        assert!(matches!(command(ok.as_bytes()), MetaCommand::Get { .. }));
    }

    #[test]
    fn a_long_opaque_is_flagged_for_mg_and_ma_and_refused_by_md_and_ms() {
        let opaque = format!("O{}", "1".repeat(32));
        let get = format!("mg k {opaque}\r\n");
        assert!(flags_of(get.as_bytes()).opaque_too_long);
        let arith = format!("ma k {opaque}\r\n");
        assert!(flags_of(arith.as_bytes()).opaque_too_long);
        let del = format!("md k {opaque}\r\n");
        assert_eq!(
            reply(del.as_bytes()),
            "CLIENT_ERROR opaque token too long\r\n"
        );
        let set = format!("ms k 2 {opaque}\r\nhi\r\n");
        let (r, consumed, skip) = error(set.as_bytes());
        assert_eq!(r, "CLIENT_ERROR opaque token too long\r\n");
        assert_eq!((consumed, skip), (set.len() - 4, 4));
        let fine = format!("mg k O{}\r\n", "1".repeat(31));
        assert!(!flags_of(fine.as_bytes()).opaque_too_long);
    }

    #[test]
    fn base64_keys_are_decoded() {
        match command(b"mg Zm9v b k\r\n") {
            MetaCommand::Get { key, flags } => {
                assert_eq!(key, b"foo");
                assert!(flags.base64);
            }
            other => panic!("{other:?}"),
        }
        match command(b"ms AAEC/w== 1 b\r\nx\r\n") {
            MetaCommand::Set { key, .. } => assert_eq!(key, [0, 1, 2, 255]),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            reply(b"md foo b\r\n"),
            "CLIENT_ERROR invalid or duplicate flag\r\n"
        );
        assert_eq!(
            command(b"me Zm9v b\r\n"),
            MetaCommand::Debug {
                key: b"foo".to_vec(),
                base64: true
            }
        );
        assert_eq!(
            reply(b"me foo b\r\n"),
            "CLIENT_ERROR bad command line format\r\n"
        );
    }

    #[test]
    fn base64_round_trips_and_follows_memcached() {
        for len in 0usize..40 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let encoded = base64_encode(&data);
            assert_eq!(encoded.len(), len.div_ceil(3) * 4);
            if len > 0 {
                assert_eq!(base64_decode(&encoded), Some(data));
            }
        }
        assert_eq!(base64_encode(b"foo"), b"Zm9v");
        assert_eq!(base64_encode(b"fo"), b"Zm8=");
        assert_eq!(base64_encode(b"f"), b"Zg==");
        assert_eq!(base64_decode(b"Zm8="), Some(b"fo".to_vec()));
        assert_eq!(base64_decode(b"Zg=="), Some(b"f".to_vec()));
        // Characters outside the alphabet are skipped; decoding stops at padding.
        assert_eq!(base64_decode(b"Zm-9v"), Some(b"foo".to_vec()));
        assert_eq!(base64_decode(b"Zg==Zm9v"), Some(b"f".to_vec()));
        assert_eq!(base64_decode(b"Zm9"), None);
        assert_eq!(base64_decode(b""), None);
        assert_eq!(base64_decode(b"-!"), None);
        assert_eq!(base64_decode(b"Z==="), None);
    }

    #[test]
    fn ms_parses_with_its_data_block() {
        match command(b"ms foo 2 T30 F5 C9 c k O1 q I MA N60 s\r\nhi\r\n") {
            MetaCommand::Set {
                key,
                mode,
                data,
                flags,
            } => {
                assert_eq!(
                    (key.as_slice(), mode, data.as_slice()),
                    (&b"foo"[..], StoreMode::Append, &b"hi"[..])
                );
                assert_eq!(flags.ttl, Some(30));
                assert_eq!(flags.client_flags, 5);
                assert_eq!(flags.compare_cas, Some(9));
                assert_eq!(flags.vivify, Some(60));
                assert!(flags.quiet && flags.invalidate);
            }
            other => panic!("{other:?}"),
        }
        for (m, mode) in [
            ("", StoreMode::Set),
            (" MS", StoreMode::Set),
            (" ME", StoreMode::Add),
            (" MA", StoreMode::Append),
            (" MP", StoreMode::Prepend),
            (" MR", StoreMode::Replace),
        ] {
            let buf = format!("ms k 0{m}\r\n\r\n");
            assert!(
                matches!(command(buf.as_bytes()), MetaCommand::Set { mode: got, .. } if got == mode)
            );
        }
        // Binary data with CRLF inside is taken verbatim.
        match command(b"ms k 6\r\na\r\nmn\r\r\n") {
            MetaCommand::Set { data, .. } => assert_eq!(data, b"a\r\nmn\r"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ms_flags_follow_memcacheds_number_rules() {
        // safe_strtoul keeps the low 32 bits of flags.
        assert_eq!(
            flags_of(b"ms k 0 F99999999999\r\n\r\n").client_flags,
            1_215_752_191
        );
        // The data length is read as a long truncated to 32 bits.
        assert!(matches!(
            command(b"ms k 4294967298\r\nhi\r\n"),
            MetaCommand::Set { .. }
        ));
        assert_eq!(flags_of(b"ms k 0 T-1\r\n\r\n").ttl, Some(-1));
        assert_eq!(flags_of(b"ms k 0 T+5\r\n\r\n").ttl, Some(5));
        assert_eq!(
            flags_of(b"ma k C18446744073709551615\r\n").compare_cas,
            Some(u64::MAX)
        );
        assert_eq!(
            reply(b"ma k C-1\r\n"),
            "CLIENT_ERROR invalid or duplicate flag\r\n"
        );
        assert_eq!(
            reply(b"mg k C18446744073709551616\r\n"),
            "CLIENT_ERROR bad token in command line format\r\n"
        );
    }

    #[test]
    fn ms_errors_swallow_the_block_when_its_length_is_known() {
        assert_eq!(error(b"ms\r\n"), ("ERROR\r\n".into(), 4, 0));
        assert_eq!(
            error(b"ms foo\r\n"),
            ("CLIENT_ERROR bad command line format\r\n".into(), 8, 0)
        );
        for bad in [&b"ms foo -1\r\n"[..], b"ms foo 1x\r\n", b"ms foo x\r\n"] {
            assert_eq!(
                error(bad),
                (
                    "CLIENT_ERROR bad command line format\r\n".into(),
                    bad.len(),
                    0
                )
            );
        }
        let cases: [(&[u8], &str); 7] = [
            (
                b"ms foo 2 Me\r\n",
                "CLIENT_ERROR invalid mode for ms M token",
            ),
            (
                b"ms foo 2 MEE\r\n",
                "CLIENT_ERROR incorrect length for M token",
            ),
            (b"ms foo 2 c C F\r\n", BAD_TOKEN),
            (b"ms foo 2 z\r\n", "CLIENT_ERROR invalid flag"),
            (b"ms foo 2 c c\r\n", "CLIENT_ERROR duplicate flag"),
            (
                b"ms foo 2 a b c d e f g h i j k l m n o p q\r\n",
                "CLIENT_ERROR options flags too long",
            ),
            (b"ms foo 2 E1\r\n", "CLIENT_ERROR invalid flag"),
        ];
        for (buf, want) in cases {
            let (r, consumed, skip) = error(buf);
            assert_eq!(r, format!("{want}\r\n"), "{buf:?}");
            assert_eq!((consumed, skip), (buf.len(), 4), "{buf:?}");
        }
        let long = format!("ms {} 3\r\n", "k".repeat(251));
        assert_eq!(
            error(long.as_bytes()),
            (
                "CLIENT_ERROR bad command line format\r\n".into(),
                long.len(),
                5
            )
        );
    }

    #[test]
    fn ms_too_large_skips_without_waiting() {
        let small = TextLimits {
            max_value_bytes: 10,
            ..limits()
        };
        match parse(b"ms k 11 T0\r\n", &small) {
            MetaParsed::Error {
                reply,
                consumed,
                skip,
            } => {
                assert_eq!(reply, b"SERVER_ERROR object too large for cache\r\n");
                assert_eq!((consumed, skip), (12, 13));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse(b"ms k 10\r\n", &small), MetaParsed::Incomplete);
        // The largest length memcached accepts, never allocated.
        let (r, _, skip) = error(b"ms k 2147483645\r\n");
        assert_eq!(r, "SERVER_ERROR object too large for cache\r\n");
        assert_eq!(skip, 2_147_483_647);
    }

    #[test]
    fn ms_bad_data_chunk_consumes_the_block() {
        let buf = b"ms k 2\r\nhiX\r\n";
        assert_eq!(
            error(buf),
            ("CLIENT_ERROR bad data chunk\r\n".into(), 12, 0)
        );
    }

    #[test]
    fn every_prefix_of_an_ms_is_not_yet_whole() {
        let full = b"ms key 10 T5 c\r\n0123\r\n6789\r\n";
        for cut in 0..full.len() {
            let got = parse(&full[..cut], &limits());
            assert!(
                matches!(got, MetaParsed::NotMeta | MetaParsed::Incomplete),
                "{cut}: {got:?}"
            );
        }
        assert!(matches!(
            parse(full, &limits()),
            MetaParsed::Command { consumed, .. } if consumed == full.len()
        ));
    }

    #[test]
    fn md_and_ma_parse_and_refuse_like_memcached() {
        match command(b"md foo C5 q I T30 x k O9\r\n") {
            MetaCommand::Delete { key, flags } => {
                assert_eq!(key, b"foo");
                assert_eq!(flags.compare_cas, Some(5));
                assert!(flags.quiet && flags.invalidate && flags.remove_value);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(error(b"md\r\n").0, "ERROR\r\n");
        assert_eq!(
            reply(b"md foo Tx\r\n"),
            "CLIENT_ERROR invalid or duplicate flag\r\n"
        );
        assert_eq!(
            reply(b"md foo a b c d e f g h i j k l m n o p q r\r\n"),
            "CLIENT_ERROR options flags too long\r\n"
        );
        for (m, decr) in [
            ("", false),
            (" MI", false),
            (" M+", false),
            (" MD", true),
            (" M-", true),
        ] {
            let buf = format!("ma k{m}\r\n");
            assert!(
                matches!(command(buf.as_bytes()), MetaCommand::Arith { decr: d, .. } if d == decr)
            );
        }
        let flags = flags_of(b"ma k N0 J10 D5 T9 v t c\r\n");
        assert_eq!(
            (flags.initial, flags.delta, flags.vivify, flags.ttl),
            (10, 5, Some(0), Some(9))
        );
        assert_eq!(flags_of(b"ma k\r\n").delta, 1);
        assert_eq!(
            reply(b"ma k Mx\r\n"),
            "CLIENT_ERROR invalid mode for ma M token\r\n"
        );
        assert_eq!(
            reply(b"ma k Dx\r\n"),
            "CLIENT_ERROR invalid or duplicate flag\r\n"
        );
        assert_eq!(error(b"ma\r\n").0, "ERROR\r\n");
    }

    #[test]
    fn ignored_flags_are_accepted_and_numbers_read_as_c_does() {
        let flags = flags_of(b"mg k P L u\r\n");
        assert!(flags.order.is_empty());
        assert_eq!(c_strtol(b"\t-12"), Some(-12));
        assert_eq!(c_strtol(b"+7\t"), Some(7));
        assert_eq!(c_strtol(b"7x"), None);
        assert_eq!(c_strtol(b"-"), None);
        assert_eq!(c_strtol(b""), None);
        assert_eq!(c_strtol(b"9223372036854775808"), None);
        assert_eq!(c_strtol(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(c_strtoul(b"-0"), Some(0));
        assert_eq!(c_strtoul(b"-5"), None);
        assert_eq!(c_strtoul(b"18446744073709551616"), None);
        // A T beyond 32 bits wraps as memcached's int32 does.
        assert_eq!(flags_of(b"mg k T4294967297\r\n").ttl, Some(1));
    }

    #[test]
    fn me_parses_and_refuses() {
        assert_eq!(
            command(b"me foo\r\n"),
            MetaCommand::Debug {
                key: b"foo".to_vec(),
                base64: false
            }
        );
        assert_eq!(reply(b"me\r\n"), "CLIENT_ERROR bad command line format\r\n");
    }

    #[test]
    fn a_nul_ends_the_line_as_in_c() {
        match command(b"mg foo\0 zzz\r\n") {
            MetaCommand::Get { key, flags } => {
                assert_eq!(key, b"foo");
                assert!(flags.order.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reply_helpers_are_byte_exact() {
        let mut out = Vec::new();
        push_key(&mut out, b"foo", false);
        push_key(&mut out, b"foo", true);
        push_number(&mut out, b'c', 42u64);
        push_ttl(&mut out, 0, 100);
        push_ttl(&mut out, 130, 100);
        assert_eq!(out, b" kfoo kZm9v b c42 t-1 t30");
        out.clear();
        let flags = flags_of(b"mg foo k c O1\r\n");
        push_opaque_and_key(&mut out, &flags, b"foo");
        assert_eq!(out, b" kfoo O1");
    }

    #[test]
    fn fuzzed_input_never_panics_and_consumes_sanely() {
        let seeds: [&[u8]; 10] = [
            b"ms key 5 T10 F3 c k O1 MA N5\r\nhello\r\n",
            b"mg key s t c f l h O12 k v q T30 N40 R5 b\r\n",
            b"md a C5 q I T3 x\r\n",
            b"ma n N0 J10 D3 MD v t c\r\n",
            b"me Zm9v b\r\nmn\r\n",
            b"ms k 99999999999\r\n",
            b"ms k -1 -1 -1\r\n",
            b"mg Zm9v== b k\r\n",
            b"ms AAEC/w== 1 b\r\nx\r\n",
            b"\r\n\n \r\n",
        ];
        let alphabet = b"msgdnaeb0123456789 -+=/\r\n\0\x7f\tkvqcCTNMEFOIJDxRtfhls";
        let small = TextLimits {
            max_value_bytes: 16,
            max_key_bytes: 6,
            max_line_bytes: 40,
            ..TextLimits::default()
        };
        let mut rng = crate::rng::Rng::new(0x2545_F491_4F6C_DD1D, 0);
        for round in 0..60_000 {
            let mut input: Vec<u8> = match rng.index(3) {
                0 => (0..rng.index(64)).map(|_| rng.next() as u8).collect(),
                1 => {
                    let mut v = b"m".to_vec();
                    v.extend((0..rng.index(64)).map(|_| alphabet[rng.index(alphabet.len())]));
                    v
                }
                _ => seeds[rng.index(seeds.len())].to_vec(),
            };
            for _ in 0..rng.index(5) {
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
            let mut rest = &input[..];
            loop {
                match parse(rest, &lim) {
                    MetaParsed::NotMeta | MetaParsed::Incomplete => break,
                    MetaParsed::Command { consumed, .. } => {
                        assert!(consumed > 0, "zero consumed on {input:?}");
                        assert!(consumed <= rest.len(), "overrun on {input:?}");
                        rest = &rest[consumed..];
                    }
                    MetaParsed::Error {
                        consumed, reply, ..
                    } => {
                        assert!(consumed > 0, "zero consumed on {input:?}");
                        assert!(consumed <= rest.len(), "overrun on {input:?}");
                        assert!(reply.ends_with(b"\r\n"), "{reply:?}");
                        rest = &rest[consumed..];
                    }
                }
            }
        }
    }
}
