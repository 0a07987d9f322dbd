//! memcached's meta commands (`mn mg ms md ma me`): parser and reply formats. To be
//! written.

use crate::text::TextLimits;

/// A parsed meta command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaCommand {
    /// `mn`
    Noop,
}

/// What [`parse`] found at the front of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum MetaParsed {
    /// The line is not a meta command: let the classic parser have it.
    NotMeta,
    /// Not enough bytes yet.
    Incomplete,
    /// A whole command taking `consumed` bytes.
    Command {
        /// The command.
        command: MetaCommand,
        /// Bytes it took (line and data block).
        consumed: usize,
    },
    /// Send `reply` (may be empty), drop `consumed` bytes, then discard `skip` more.
    Error {
        /// The reply bytes.
        reply: Vec<u8>,
        /// Bytes to drop.
        consumed: usize,
        /// Further bytes to discard.
        skip: usize,
    },
}

/// Parses the meta command at the front of `buf`.
pub fn parse(buf: &[u8], _limits: &TextLimits) -> MetaParsed {
    if buf.starts_with(b"mn\r\n") {
        return MetaParsed::Command {
            command: MetaCommand::Noop,
            consumed: 4,
        };
    }
    MetaParsed::NotMeta
}
