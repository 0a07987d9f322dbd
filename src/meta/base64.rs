//! Base64 as memcached's meta commands use it for binary keys (`b` flag).

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
