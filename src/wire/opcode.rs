//! What a frame asks for ([`Opcode`]), what a response reports ([`Status`]), and which
//! of a slave's tables it addresses ([`TableSel`]): the byte values protocol.md lists.

/// Declares a `#[repr(u8)]` enum and its `from_u8`, the inverse of `as u8`: each byte
/// value is written once, in the enum, never again in a match.
macro_rules! byte_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$variant_meta:meta])* $variant:ident = $byte:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[repr(u8)]
        $vis enum $name {
            $( $(#[$variant_meta])* $variant = $byte, )*
        }

        impl $name {
            /// The variant whose byte this is, or `None` for a byte no variant uses.
            pub fn from_u8(byte: u8) -> Option<$name> {
                match byte {
                    $( $byte => Some($name::$variant), )*
                    _ => None,
                }
            }
        }
    };
}
pub(crate) use byte_enum;

byte_enum! {
    /// What a frame asks for. Values 0x01..=0x0F are client requests to the coordinator,
    /// 0x10..=0x1F are slave-to-coordinator, 0x20..=0x3F are coordinator-to-slave.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum Opcode {
        /// Read a key (client to coordinator).
        Get = 0x01,
        /// Store a key with flags (client to coordinator).
        Put = 0x02,
        /// Delete a key (client to coordinator).
        Delete = 0x03,
        /// Describe the ring (client to coordinator); the reply value is a TSV table.
        Status = 0x04,
        /// Do nothing, reply OK (any server).
        Ping = 0x05,
        /// Present the cluster secret (value) for this connection (any server).
        Auth = 0x06,
        /// Ask the coordinator for the routing view (direct routing): reply arg = epoch,
        /// flags bit 0 = stable, value = the members (see `view`).
        RingGet = 0x07,
        /// A conditional or read-modify-write operation (client to coordinator): value = the
        /// 40-byte operation (`update::Update`, its expiry field a memcached exptime), then
        /// the data. `set` with an expiry or a cas, `add`, `replace`, `append`, `prepend`,
        /// `incr`, `decr`, `touch`, delete with a cas.
        Update = 0x08,
        /// Forget everything stored so far (client to coordinator): arg = delay in seconds.
        Flush = 0x09,
        /// Read many keys at once (client to coordinator): value = packed keys; reply value =
        /// one packed result per key, in request order.
        MultiGet = 0x0A,
        /// A slave joins: key = the address it serves on; reply arg = token, flags = slave id.
        Register = 0x10,
        /// A slave leaves gracefully (flags = slave id, arg = session); answered once its data
        /// has been handed off.
        Deregister = 0x11,
        /// Read one key from a table of a slave.
        SlaveGet = 0x20,
        /// Store one versioned key into a table of a slave (older versions are ignored).
        SlavePut = 0x21,
        /// Write a versioned tombstone into a table of a slave.
        SlaveDelete = 0x22,
        /// Count live keys and tombstones in both tables of a slave.
        SlaveStats = 0x23,
        /// Apply a chunk of packed entries to a table of a slave, merging by version.
        BulkPut = 0x30,
        /// Ask a slave for a chunk of a table (arg = cursor; reply arg = next cursor, 0 = done).
        BulkGet = 0x31,
        /// Merge the `previous` entries inside a set of arcs into `own` and drop them from
        /// `previous` (value = arcs, see [`encode_arcs`](super::encode_arcs)). Used when a
        /// slave becomes the primary of slots it held as the replica.
        Absorb = 0x24,
        /// Move the `own` entries inside a set of arcs to `previous` (merging). Used when a
        /// slave becomes the replica of slots it was the primary of.
        Demote = 0x25,
        /// Drop the entries of a table inside a set of arcs (value = arcs).
        DropArc = 0x26,
        /// Forget everything: both tables (a slave rejoining the ring starts empty).
        Clear = 0x27,
        /// Send a table (entries inside the arcs in value, or all) to another slave (key =
        /// its address) as its table `flags` (1 own, 2 previous), merging by version.
        Transfer = 0x32,
        /// The coordinator's routing view for direct requests (arg = epoch, flags bit 0 =
        /// stable, value = members); answered once no direct request of an older view is
        /// still being applied.
        SetView = 0x28,
        /// A primary passes a direct write on to the key's replica: table = previous, arg =
        /// version, flags = memcached flags; value = epoch (u64), kind (u8: 1 put, 0
        /// delete), then the value.
        Forward = 0x29,
        /// `SlavePut` with an expiry: value = expires (u64, Unix seconds), then the value.
        SlavePutEx = 0x2A,
        /// A read-modify-write decided by the key's primary (add, replace, append, prepend,
        /// cas, incr/decr, touch, delete with cas): arg = the version to write, value = the
        /// operation (`update::Update`). Reply `Ok` with the entry written (value = kind u8,
        /// expires u64, then the value; arg = version; flags), or `NotFound`, `NotStored`,
        /// `Exists`, `NonNumeric`, `Stale` (arg = the newer version held).
        SlaveUpdate = 0x2B,
        /// `flush_all`: arg = threshold version, value = from when (u64 Unix microseconds).
        SlaveFlush = 0x2C,
        /// Read many keys of a table (table 0: the newer of both): value = packed keys; reply
        /// value = one packed result per key, in order.
        SlaveMultiGet = 0x2D,
        /// Collection (protocol.md, "Collection"): arg = the horizon, a version. Without
        /// flags, drop from memory every tombstone and every expired or flushed value older
        /// than the horizon; with [`COLLECT_FORGET`], log and drop *every* entry older than it
        /// (a slave about to be joined). Reply arg = entries dropped, value = tombstones
        /// (u64) and values (u64) among them.
        SlaveCollect = 0x2E,
    }
}

/// `SlaveCollect` flag: forget every entry older than the horizon, values too, as a
/// logged record (before a join's transfers).
pub const COLLECT_FORGET: u32 = 1;

byte_enum! {
    /// The outcome a response reports. Requests carry `Ok` (0).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum Status {
        /// Done.
        Ok = 0x00,
        /// The key is not there (or only a tombstone is).
        NotFound = 0x01,
        /// The frame could not be decoded (bad magic, version, CRC, reserved bytes); the
        /// server closes the connection after this reply.
        BadFrame = 0x02,
        /// The opcode is not one this server serves; the connection stays open.
        UnknownOpcode = 0x03,
        /// The key or value is over the server's limit; the connection is closed.
        TooLarge = 0x04,
        /// The request is well framed but its arguments are wrong (empty key, bad table).
        Invalid = 0x05,
        /// The cluster cannot serve it now (no slaves, a replica did not answer).
        Unavailable = 0x06,
        /// The server hit an error of its own.
        ServerError = 0x07,
        /// The server is at its connection cap.
        Busy = 0x08,
        /// The connection has not presented the cluster secret (or a wrong one); closed.
        Unauthorized = 0x09,
        /// Direct routing: this slave is not the key's primary under the current view, or
        /// the view is changing; arg = the slave's view epoch. Fetch the view again
        /// (`RingGet`) or send the request to the coordinator.
        Redirect = 0x0A,
        /// A conditional write's cas did not match (memcached's `EXISTS`).
        Exists = 0x0B,
        /// A conditional write's condition did not hold (memcached's `NOT_STORED`).
        NotStored = 0x0C,
        /// incr/decr of a value that is not a decimal number.
        NonNumeric = 0x0D,
        /// `SlaveUpdate`: the key holds a newer version (arg) than the one proposed.
        Stale = 0x0E,
    }
}

impl Status {
    /// A short lower-case name, for logs and the client's error messages.
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::NotFound => "not found",
            Status::BadFrame => "bad frame",
            Status::UnknownOpcode => "unknown opcode",
            Status::TooLarge => "too large",
            Status::Invalid => "invalid request",
            Status::Unavailable => "unavailable",
            Status::ServerError => "server error",
            Status::Busy => "busy",
            Status::Unauthorized => "unauthorized",
            Status::Redirect => "redirect",
            Status::Exists => "exists",
            Status::NotStored => "not stored",
            Status::NonNumeric => "non-numeric value",
            Status::Stale => "stale",
        }
    }
}

byte_enum! {
    /// Which of a slave's two tables a frame addresses.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub enum TableSel {
        /// Not about a table.
        None = 0,
        /// The keys the slave is primary for.
        Own = 1,
        /// The copy of the predecessor's `own`.
        Previous = 2,
    }
}
