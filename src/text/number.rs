//! Numbers as memcached reads them: C's `strtoull`/`strtoll` behind its `safe_strto*`
//! helpers. Shared by the classic and the meta parsers.

/// A number token as C's `strtoull`/`strtoll` read it in memcached's `safe_strto*`
/// helpers: optional leading whitespace, an optional `+` or `-`, decimal digits, then the
/// end of the token or whitespace (what follows that is ignored). Returns whether it was
/// negative and its magnitude; `None` when there are no digits, something else follows
/// them, or the magnitude does not fit a `u64` (C's `ERANGE`).
pub(crate) fn c_number(token: &[u8]) -> Option<(bool, u64)> {
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
pub(crate) fn parse_unsigned(token: &[u8]) -> Option<u64> {
    match c_number(token)? {
        (false, value) | (true, value @ 0) => Some(value),
        (true, _) => None,
    }
}

/// A signed number as memcached's `safe_strtol(l)` accepts it, fitting an `i64`.
pub(crate) fn parse_signed(token: &[u8]) -> Option<i64> {
    match c_number(token)? {
        (true, magnitude) => 0i64.checked_sub_unsigned(magnitude),
        (false, value) => i64::try_from(value).ok(),
    }
}
