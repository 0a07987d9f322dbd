//! The memcached text parser, walked over a whole buffer as a connection would: it may
//! never panic, never claim more bytes than it was given, and always make progress. The
//! first byte picks where the input is cut in two; fed in those two pieces (resuming the
//! line search, swallowing refused data blocks across the cut), it must parse exactly as
//! it does in one piece.
#![no_main]

use libfuzzer_sys::fuzz_target;
use piazza::text::{TextLimits, parse_pieces};

fuzz_target!(|data: &[u8]| {
    let limits = TextLimits {
        max_value_bytes: 512,
        max_key_bytes: 250,
        max_line_bytes: 256,
        max_retrieval_line_bytes: 1024,
    };
    let Some((&first, data)) = data.split_first() else {
        return;
    };
    let whole = parse_pieces(data, &[], &limits);
    let cut = usize::from(first) * data.len() / 255;
    assert_eq!(parse_pieces(data, &[cut], &limits), whole);
});
