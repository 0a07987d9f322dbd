//! The meta commands' parser: the line, its tokens, and the flags as memcached 1.6's
//! flag parser reads them (module doc of [`crate::meta`] for where Piazza differs).

use super::base64::base64_decode;
use super::{MAX_OPAQUE_BYTES, MetaCommand, MetaFlags, MetaParsed, ReplyFlag};
use crate::request::StoreMode;
use crate::text::TextLimits;
use crate::text::number::{c_number, parse_signed};

/// memcached's limit on the number of tokens of a meta command line, the empty terminal
/// token memcached's tokenizer adds included (`MFLAG_MAX_OPT_LENGTH`).
const MAX_TOKENS: usize = 20;
const BAD_FORMAT: &[u8] = b"CLIENT_ERROR bad command line format\r\n";
pub(super) const BAD_TOKEN: &str = "CLIENT_ERROR bad token in command line format";

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
        .and_then(|t| parse_signed(t))
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
            b'N' => match parse_signed(arg) {
                Some(n) => {
                    flags.vivify = Some(i64::from(n as i32));
                    flags.order.push(ReplyFlag::Vivify);
                }
                None => fail(Some(BAD_TOKEN)),
            },
            b'T' => match parse_signed(arg) {
                Some(n) => {
                    flags.ttl = Some(i64::from(n as i32));
                    flags.order.push(ReplyFlag::SetTtl);
                }
                None => fail(Some(BAD_TOKEN)),
            },
            b'R' => match parse_signed(arg) {
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

/// memcached's `safe_strtoull` (and `safe_strtoul` before its truncation): `strtoull`,
/// which negates a `-` number, refused when the result looks negative and had a `-`.
pub(super) fn c_strtoul(token: &[u8]) -> Option<u64> {
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
