//! The opcodes, as memcached's `protocol_binary.h` names them.

/// get
pub const GET: u8 = 0x00;
/// set
pub const SET: u8 = 0x01;
/// add
pub const ADD: u8 = 0x02;
/// replace
pub const REPLACE: u8 = 0x03;
/// delete
pub const DELETE: u8 = 0x04;
/// increment
pub const INCREMENT: u8 = 0x05;
/// decrement
pub const DECREMENT: u8 = 0x06;
/// quit
pub const QUIT: u8 = 0x07;
/// flush
pub const FLUSH: u8 = 0x08;
/// getq
pub const GETQ: u8 = 0x09;
/// noop
pub const NOOP: u8 = 0x0a;
/// version
pub const VERSION: u8 = 0x0b;
/// getk
pub const GETK: u8 = 0x0c;
/// getkq
pub const GETKQ: u8 = 0x0d;
/// append
pub const APPEND: u8 = 0x0e;
/// prepend
pub const PREPEND: u8 = 0x0f;
/// stat
pub const STAT: u8 = 0x10;
/// setq
pub const SETQ: u8 = 0x11;
/// addq
pub const ADDQ: u8 = 0x12;
/// replaceq
pub const REPLACEQ: u8 = 0x13;
/// deleteq
pub const DELETEQ: u8 = 0x14;
/// incrementq
pub const INCREMENTQ: u8 = 0x15;
/// decrementq
pub const DECREMENTQ: u8 = 0x16;
/// quitq
pub const QUITQ: u8 = 0x17;
/// flushq
pub const FLUSHQ: u8 = 0x18;
/// appendq
pub const APPENDQ: u8 = 0x19;
/// prependq
pub const PREPENDQ: u8 = 0x1a;
/// touch
pub const TOUCH: u8 = 0x1c;
/// gat (get and touch)
pub const GAT: u8 = 0x1d;
/// gatq
pub const GATQ: u8 = 0x1e;
/// SASL list mechanisms
pub const SASL_LIST_MECHS: u8 = 0x20;
/// SASL auth
pub const SASL_AUTH: u8 = 0x21;
/// SASL step
pub const SASL_STEP: u8 = 0x22;
/// gatk
pub const GATK: u8 = 0x23;
/// gatkq
pub const GATKQ: u8 = 0x24;
