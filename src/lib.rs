//! Piazza: a small, dependable distributed key-value store.
//!
//! One coordinator keeps a ring of slaves and routes every key to its primary (first ring
//! successor of the key's hash) and its replica (the primary's successor), so every key
//! has two copies. Clients speak Piazza's binary protocol ([`wire`]) or memcached's text
//! protocol ([`text`]) on the coordinator's port.
//!
//! Codemap (README.md, "Architecture", says more):
//! - [`wire`]: binary frames and their CRC; [`text`]: memcached commands; [`request`]: the
//!   one request type both decode into;
//! - [`ring`]: tokens and placement; [`store`]: a slave's `own` and `previous` tables;
//!   [`wal`]: the log that makes them survive a restart;
//! - [`coordinator`], [`slave`]: the two servers; [`server`]: what they share (accept loop,
//!   connection cap, frame loop); [`shutdown`]: Ctrl-C to joined threads;
//! - [`client`]: the Rust client; [`shell`]: `piazza-client`'s commands and prompt; [`cluster`]: a whole local cluster in one process;
//!   [`mod@bench`]: the load generator; [`config`]: flags and typed configs; [`cli`]: what
//!   every binary does at start (flags, logging, exit codes).
#![deny(missing_docs)]

pub mod bench;
pub mod cli;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod coordinator;
pub mod direct;
pub mod link;
pub mod mcbin;
pub mod meta;
pub mod request;
pub mod ring;
pub mod rng;
pub mod server;
pub mod shell;
pub mod shutdown;
pub mod slave;
pub mod store;
pub mod sync;
pub mod text;
pub mod update;
pub mod view;
pub mod wal;
pub mod wire;

pub use client::Client;
