//! The memcached text parser, walked over a whole buffer as a connection would: it may
//! never panic, never claim more bytes than it was given, and always make progress.
#![no_main]

use libfuzzer_sys::fuzz_target;
use piazza::text::{self, Parsed, TextLimits};

fuzz_target!(|data: &[u8]| {
    let limits = TextLimits {
        max_value_bytes: 512,
        max_key_bytes: 250,
        max_line_bytes: 256,
    };
    let mut at = 0;
    while at < data.len() {
        match text::parse(&data[at..], &limits) {
            Parsed::Incomplete => break,
            Parsed::Command { consumed, .. } | Parsed::Error { consumed, .. } => {
                assert!(consumed > 0 && consumed <= data.len() - at);
                at += consumed;
            }
        }
    }
});
