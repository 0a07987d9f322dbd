//! Pieces of meta replies: the return flags every command writes the same way.

use super::base64::base64_encode;
use super::{MetaFlags, ReplyFlag};

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

/// Appends `flag` if it is one every meta reply writes the same way: `O` (copied back),
/// `k`, and `c` when the reply has a `cas` to give. False for any other flag, which the
/// caller writes or ignores.
pub fn push_echoed(
    out: &mut Vec<u8>,
    flag: &ReplyFlag,
    flags: &MetaFlags,
    key: &[u8],
    cas: Option<u64>,
) -> bool {
    match (flag, cas) {
        (ReplyFlag::Opaque(token), _) => {
            out.push(b' ');
            out.extend_from_slice(token);
        }
        (ReplyFlag::Key, _) => push_key(out, key, flags.base64),
        (ReplyFlag::Cas, Some(cas)) => push_number(out, b'c', cas),
        _ => return false,
    }
    true
}

/// Appends the flags every meta reply may carry: `O` (copied back) and `k`, in order.
pub fn push_opaque_and_key(out: &mut Vec<u8>, flags: &MetaFlags, key: &[u8]) {
    for flag in &flags.order {
        push_echoed(out, flag, flags, key, None);
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
