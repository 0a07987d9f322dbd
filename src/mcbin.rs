//! memcached's binary protocol (magic 0x80): packet codec. To be written.

/// First byte of a request packet.
pub const MAGIC_REQUEST: u8 = 0x80;
/// First byte of a response packet.
pub const MAGIC_RESPONSE: u8 = 0x81;
