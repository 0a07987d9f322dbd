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
//! declared length against [`crate::text::TextLimits`] before using it, never allocates
//! for a size a client declared without that check, and never reads a data block as a
//! command.

use crate::request::StoreMode;

mod base64;
mod parser;
mod reply;
#[cfg(test)]
mod tests;

pub use base64::{base64_decode, base64_encode};
pub use parser::parse;
pub use reply::{push_echoed, push_key, push_number, push_opaque_and_key, push_ttl};

/// Longest `O` (opaque) token, its `O` included (`MFLAG_MAX_OPAQUE_LENGTH`).
pub const MAX_OPAQUE_BYTES: usize = 32;

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
