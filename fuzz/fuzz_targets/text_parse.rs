//! The memcached text parser, walked over a whole buffer as a connection would: it may
//! never panic, never claim more bytes than it was given, and always make progress. The
//! first byte picks where the input is cut in two; fed in those two pieces (resuming the
//! line search, swallowing refused data blocks across the cut), it must parse exactly as
//! it does in one piece.
#![no_main]

use libfuzzer_sys::fuzz_target;
use piazza::text::{self, Parsed, TextLimits};

/// What one parse produced, in a comparable form.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Command(text::TextCommand),
    Refused(text::TextError, bool, Option<Vec<u8>>),
}

/// Parses `data` fed in pieces ending at `cuts`, as a connection would.
fn walk(data: &[u8], cuts: &[usize], limits: &TextLimits) -> Vec<Seen> {
    let mut seen = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut skip = 0usize;
    let mut searched = 0usize;
    let mut from = 0;
    for &cut in cuts.iter().chain(std::iter::once(&data.len())) {
        let cut = cut.clamp(from, data.len());
        let mut piece = &data[from..cut];
        from = cut;
        let dropped = skip.min(piece.len());
        skip -= dropped;
        piece = &piece[dropped..];
        buf.extend_from_slice(piece);
        loop {
            match text::parse_resume(&buf, limits, &mut searched) {
                Parsed::Incomplete => break,
                Parsed::Command { command, consumed } => {
                    assert!(consumed > 0 && consumed <= buf.len());
                    seen.push(Seen::Command(command));
                    buf.drain(..consumed);
                }
                Parsed::Error {
                    error,
                    consumed,
                    skip: more,
                    noreply,
                    forget,
                } => {
                    assert!(consumed > 0 && consumed <= buf.len());
                    let closes = error.closes_connection();
                    seen.push(Seen::Refused(error, noreply, forget));
                    buf.drain(..consumed);
                    let dropped = more.min(buf.len());
                    buf.drain(..dropped);
                    skip = more - dropped;
                    if closes {
                        return seen;
                    }
                }
            }
        }
    }
    seen
}

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
    let whole = walk(data, &[], &limits);
    let cut = usize::from(first) * data.len() / 255;
    assert_eq!(walk(data, &[cut], &limits), whole);
});
