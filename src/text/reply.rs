//! The classic commands' replies, byte for byte as memcached 1.6 writes them. Whatever a
//! client or the server put in a reply line (a reason, a stat) is kept to that one line.

use std::fmt;

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
    push_number(out, u64::from(flags));
    out.push(b' ');
    push_number(out, data.len() as u64);
    if let Some(cas) = cas {
        out.push(b' ');
        push_number(out, cas);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends `value` in decimal (without `fmt`: a multi-get writes three per value).
fn push_number(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends the reply to an `incr`/`decr` that applied: the new value, `<value>\r\n`.
pub fn write_number(out: &mut Vec<u8>, value: u64) {
    push_number(out, value);
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
    write_line(out, b"VERSION ", version);
}

/// Appends `CLIENT_ERROR <reason>\r\n`, with `reason` kept to one line.
pub fn write_client_error(out: &mut Vec<u8>, reason: &str) {
    write_line(out, b"CLIENT_ERROR ", reason);
}

/// Appends `SERVER_ERROR <reason>\r\n`, with `reason` kept to one line.
pub fn write_server_error(out: &mut Vec<u8>, reason: &str) {
    write_line(out, b"SERVER_ERROR ", reason);
}

/// Appends `<prefix><text>\r\n`, with `text` kept to one line.
fn write_line(out: &mut Vec<u8>, prefix: &[u8], text: &str) {
    out.extend_from_slice(prefix);
    push_line_safe(out, text);
    out.extend_from_slice(b"\r\n");
}
