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

impl From<Parsed> for Seen {
    fn from(parsed: Parsed) -> Seen {
        match parsed {
            Parsed::Command { command, .. } => Seen::Command(command),
            Parsed::Error {
                error,
                noreply,
                forget,
                ..
            } => Seen::Refused(error, noreply, forget),
            Parsed::Incomplete => unreachable!("parse_pieces returns whole parses only"),
        }
    }
}

/// Parses `data` fed in pieces ending at `cuts`, as a connection would.
fn walk(data: &[u8], cuts: &[usize], limits: &TextLimits) -> Vec<Seen> {
    text::parse_pieces(data, cuts, limits)
        .into_iter()
        .map(Seen::from)
        .collect()
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
