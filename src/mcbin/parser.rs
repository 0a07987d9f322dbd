//! The packet parser: the header's lengths checked against the opcode and the limits
//! before any body is waited for, then the body decoded into a [`Command`].

use super::reply::write_error;
use super::{
    Command, HEADER_LEN, Header, MAGIC_REQUEST, MAX_BODY, McbinError, Packet, Parsed, opcode,
};
use crate::request::StoreMode;
use crate::text::TextLimits;

fn refuse(header: &Header, error: McbinError) -> Parsed {
    refuse_forgetting(header, error, None)
}

fn refuse_forgetting(header: &Header, error: McbinError, forget: Option<Vec<u8>>) -> Parsed {
    let mut reply = Vec::new();
    if let Some(status) = error.status() {
        write_error(&mut reply, header, status);
    }
    Parsed::Error {
        error,
        reply,
        skip: header.packet_len(),
        forget,
    }
}

/// Parses the request packet at the front of `buf` under `limits` (key and value
/// sizes). Lengths are checked from the header alone, before any waiting for the body,
/// so nothing larger than the limits is ever buffered for a packet.
pub fn parse(buf: &[u8], limits: &TextLimits) -> Parsed {
    let Some(&magic) = buf.first() else {
        return Parsed::Incomplete;
    };
    if magic != MAGIC_REQUEST {
        return Parsed::Error {
            error: McbinError::BadMagic(magic),
            reply: Vec::new(),
            skip: 0,
            forget: None,
        };
    }
    let Some(header) = Header::decode(buf) else {
        return Parsed::Incomplete;
    };
    let (key_len, extras_len, body_len) = (
        header.key_len as usize,
        header.extras_len as usize,
        header.body_len as usize,
    );
    if key_len + extras_len > body_len {
        return refuse(
            &header,
            McbinError::BadLengths {
                key_len: header.key_len,
                extras_len: header.extras_len,
                body_len: header.body_len,
            },
        );
    }
    if header.body_len > MAX_BODY {
        return refuse(&header, McbinError::BodyTooLarge(header.body_len));
    }
    if key_len > limits.max_key_bytes {
        return refuse(
            &header,
            McbinError::KeyTooLong {
                len: header.key_len,
                max: limits.max_key_bytes,
            },
        );
    }
    let shape = match check_shape(&header) {
        Ok(shape) => shape,
        Err(error) => return refuse(&header, error),
    };
    if shape == Shape::Storage && header.value_len() > limits.max_value_bytes {
        // Refused before the value arrives; the key is needed for a set (as memcached,
        // which reads extras and key before it looks at the value).
        let key_end = HEADER_LEN + extras_len + key_len;
        let Some(key) = buf.get(HEADER_LEN + extras_len..key_end) else {
            return Parsed::Incomplete;
        };
        let forget = matches!(header.opcode, opcode::SET | opcode::SETQ).then(|| key.to_vec());
        return refuse_forgetting(
            &header,
            McbinError::ValueTooLarge {
                len: header.value_len(),
                max: limits.max_value_bytes,
            },
            forget,
        );
    }
    if shape == Shape::Unknown {
        return refuse(&header, McbinError::UnknownCommand(header.opcode));
    }
    let total = header.packet_len();
    let Some(body) = buf.get(HEADER_LEN..total) else {
        return Parsed::Incomplete;
    };
    let (extras, rest) = body.split_at(extras_len);
    let (key, value) = rest.split_at(key_len);
    Parsed::Packet {
        packet: Packet {
            header,
            command: decode(&header, extras, key, value),
        },
        consumed: total,
    }
}

/// How a well-formed packet's body is laid out, for the size checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Carries a value under the value limit.
    Storage,
    /// Key and extras only.
    Fixed,
    /// Answered `Unknown command`, body skipped.
    Unknown,
}

/// memcached's per-opcode length checks (`dispatch_bin_command`).
fn check_shape(h: &Header) -> Result<Shape, McbinError> {
    use opcode::*;
    let (key, ext, body) = (h.key_len as u32, h.extras_len as u32, h.body_len);
    let malformed = |needs| McbinError::Malformed {
        opcode: h.opcode,
        needs,
    };
    let (ok, shape, needs) = match h.opcode {
        VERSION | NOOP | QUIT | QUITQ | SASL_LIST_MECHS => (
            ext == 0 && key == 0 && body == 0,
            if h.opcode == SASL_LIST_MECHS {
                Shape::Unknown
            } else {
                Shape::Fixed
            },
            "no extras, key or value",
        ),
        FLUSH | FLUSHQ => (
            key == 0 && body == ext && (ext == 0 || ext == 4),
            Shape::Fixed,
            "no key or value and 0 or 4 bytes of extras",
        ),
        SET | SETQ | ADD | ADDQ | REPLACE | REPLACEQ => (
            ext == 8 && key != 0,
            Shape::Storage,
            "8 bytes of extras and a key",
        ),
        APPEND | APPENDQ | PREPEND | PREPENDQ => {
            (ext == 0 && key != 0, Shape::Storage, "a key and no extras")
        }
        GET | GETQ | GETK | GETKQ | DELETE | DELETEQ => (
            ext == 0 && key != 0 && body == key,
            Shape::Fixed,
            "a key only",
        ),
        INCREMENT | INCREMENTQ | DECREMENT | DECREMENTQ => (
            ext == 20 && key != 0 && body == key + ext,
            Shape::Fixed,
            "20 bytes of extras and a key, no value",
        ),
        TOUCH | GAT | GATQ | GATK | GATKQ => (
            ext == 4 && key != 0 && body == key + ext,
            Shape::Fixed,
            "4 bytes of extras and a key, no value",
        ),
        STAT => (ext == 0 && body == key, Shape::Fixed, "no extras or value"),
        SASL_AUTH | SASL_STEP => (
            ext == 0 && key != 0,
            Shape::Unknown,
            "a key (the mechanism) and no extras",
        ),
        _ => (true, Shape::Unknown, ""),
    };
    if ok { Ok(shape) } else { Err(malformed(needs)) }
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    match bytes.get(at..at + 4) {
        Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
        _ => 0,
    }
}

fn be_u64(bytes: &[u8], at: usize) -> u64 {
    match bytes.get(at..at + 8).map(<[u8; 8]>::try_from) {
        Some(Ok(b)) => u64::from_be_bytes(b),
        _ => 0,
    }
}

/// Decodes a packet whose lengths [`check_shape`] accepted (never `Shape::Unknown`).
fn decode(h: &Header, extras: &[u8], key: &[u8], value: &[u8]) -> Command {
    use opcode::*;
    let key = key.to_vec();
    let op = h.opcode;
    match op {
        GET | GETQ | GETK | GETKQ => Command::Get {
            key,
            quiet: matches!(op, GETQ | GETKQ),
            with_key: matches!(op, GETK | GETKQ),
        },
        TOUCH => Command::Touch {
            key,
            exptime: be_u32(extras, 0),
        },
        GAT | GATQ | GATK | GATKQ => Command::Gat {
            key,
            exptime: be_u32(extras, 0),
            quiet: matches!(op, GATQ | GATKQ),
            with_key: matches!(op, GATK | GATKQ),
        },
        SET | SETQ | ADD | ADDQ | REPLACE | REPLACEQ | APPEND | APPENDQ | PREPEND | PREPENDQ => {
            let mode = match op {
                SET | SETQ => StoreMode::Set,
                ADD | ADDQ => StoreMode::Add,
                REPLACE | REPLACEQ => StoreMode::Replace,
                APPEND | APPENDQ => StoreMode::Append,
                _ => StoreMode::Prepend,
            };
            Command::Store {
                mode,
                key,
                value: value.to_vec(),
                flags: be_u32(extras, 0),
                exptime: be_u32(extras, 4),
                quiet: matches!(op, SETQ | ADDQ | REPLACEQ | APPENDQ | PREPENDQ),
            }
        }
        DELETE | DELETEQ => Command::Delete {
            key,
            quiet: op == DELETEQ,
        },
        INCREMENT | INCREMENTQ | DECREMENT | DECREMENTQ => Command::Arith {
            key,
            decr: matches!(op, DECREMENT | DECREMENTQ),
            delta: be_u64(extras, 0),
            initial: be_u64(extras, 8),
            exptime: be_u32(extras, 16),
            quiet: matches!(op, INCREMENTQ | DECREMENTQ),
        },
        FLUSH | FLUSHQ => Command::Flush {
            exptime: be_u32(extras, 0),
            quiet: op == FLUSHQ,
        },
        VERSION => Command::Version,
        STAT => Command::Stat { key },
        QUIT | QUITQ => Command::Quit { quiet: op == QUITQ },
        // NOOP, and nothing else reaches here (check_shape sends the rest to Unknown).
        _ => Command::Noop,
    }
}
