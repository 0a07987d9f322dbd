//! Line lengths, pipelines split at every point, and fuzzed input.

use super::*;

// ---- line lengths -----------------------------------------------------------------

#[test]
fn a_short_line_without_newline_waits_until_it_is_too_long() {
    let small = TextLimits {
        max_line_bytes: 10,
        ..limits()
    };
    assert_eq!(parse(b"set abcdef", &small), Parsed::Incomplete);
    let (e, consumed) = match parse(b"set abcdefg", &small) {
        Parsed::Error {
            error, consumed, ..
        } => (error, consumed),
        other => panic!("{other:?}"),
    };
    assert_eq!(e.reply(), b"CLIENT_ERROR line too long\r\n");
    assert!(e.closes_connection());
    assert_eq!(consumed, 11);
    // Exactly max_line_bytes before the newline is still accepted.
    assert!(matches!(
        parse(b"delete abc\nmore", &small),
        Parsed::Command { consumed: 11, .. }
    ));
    // A newline that arrives only past the limit does not rescue the line.
    assert!(matches!(
        parse(b"delete abcdefgh\n", &small),
        Parsed::Error {
            error: TextError::LineTooLong,
            ..
        }
    ));
}

#[test]
fn retrieval_lines_have_their_own_long_cap() {
    let small = TextLimits {
        max_line_bytes: 10,
        max_retrieval_line_bytes: 30,
        ..limits()
    };
    for head in ["get ", "gets ", "gat 1 ", "gats 1 ", "bget ", "   get "] {
        let line = format!("{head}{}", "a ".repeat(20));
        let line = &line.as_bytes()[..30];
        assert_eq!(parse(line, &small), Parsed::Incomplete, "{head}");
        let mut whole = line.to_vec();
        whole.push(b'\n');
        assert!(
            matches!(parse(&whole, &small), Parsed::Command { .. }),
            "{head}"
        );
        let mut longer = line.to_vec();
        longer.push(b'a');
        assert!(matches!(
            parse(&longer, &small),
            Parsed::Error {
                error: TextError::LineTooLong,
                ..
            }
        ));
    }
    // "getx" or a get with more than max_line_bytes of leading spaces is not one.
    assert!(matches!(
        parse(b"getx aaaaaaaa", &small),
        Parsed::Error {
            error: TextError::LineTooLong,
            ..
        }
    ));
    assert!(matches!(
        parse(b"           get a", &small),
        Parsed::Error {
            error: TextError::LineTooLong,
            ..
        }
    ));
}

#[test]
fn a_400_key_100_kb_get_line_parses_in_one_go_and_in_pieces() {
    let keys: Vec<String> = (0..400).map(|i| format!("{i:0>249}x")).collect();
    let line = format!("get {}\r\n", keys.join(" "));
    assert!(line.len() > 100_000);
    match command(line.as_bytes()) {
        TextCommand::Get { keys: got, .. } => {
            assert_eq!(got.len(), 400);
            assert_eq!(got[399], keys[399].as_bytes());
        }
        other => panic!("{other:?}"),
    }
    // Arriving 1000 bytes at a time, each call searches only the new bytes.
    let bytes = line.as_bytes();
    let mut searched = 0;
    for end in (1000..bytes.len()).step_by(1000) {
        assert_eq!(
            parse_resume(&bytes[..end], &limits(), &mut searched),
            Parsed::Incomplete
        );
        assert_eq!(
            searched, end,
            "the whole prefix is known to hold no newline"
        );
    }
    assert!(matches!(
        parse_resume(bytes, &limits(), &mut searched),
        Parsed::Command { consumed, .. } if consumed == bytes.len()
    ));
    assert_eq!(searched, 0);
}

#[test]
fn a_2_mib_get_line_is_accepted_by_default() {
    let max = limits().max_retrieval_line_bytes;
    assert!(max >= 2 * 1024 * 1024);
    let mut line = b"get".to_vec();
    while line.len() + 5 <= max {
        line.extend_from_slice(b" abc");
    }
    line.extend_from_slice(b"\r\n");
    assert!(matches!(
        parse_default(&line),
        Parsed::Command { consumed, .. } if consumed == line.len()
    ));
}

#[test]
fn resuming_with_a_stale_hint_from_a_shorter_buffer_still_finds_the_line() {
    let mut searched = 0;
    assert_eq!(
        parse_resume(b"ver", &limits(), &mut searched),
        Parsed::Incomplete
    );
    assert_eq!(searched, 3);
    assert!(matches!(
        parse_resume(b"version\r\nget a\r\n", &limits(), &mut searched),
        Parsed::Command {
            command: TextCommand::Version,
            consumed: 9
        }
    ));
    assert_eq!(searched, 0);
    // A storage command waiting for its block leaves the hint at 0.
    assert_eq!(
        parse_resume(b"set k 0 0 5\r\nab", &limits(), &mut searched),
        Parsed::Incomplete
    );
    assert_eq!(searched, 0);
}

// ---- pipelines and splits ---------------------------------------------------------

const PIPELINE: &[u8] = b"set a 1 0 3\r\nabc\r\nget a b\r\nappend other 0 0 15\r\n\
delete victim\r\n\r\nadd k 0 0 2 noreply\r\nhi\r\ncas k 0 0 1 9\r\nx\r\nincr n 5\r\n\
decr n 1 noreply\r\ntouch k 10\r\ngats 5 a k\r\nset k x 0 4 noreply\r\nget k\r\n\
set big 0 0 40\r\n0123456789012345678901234567890123456789\r\nbogus\r\n\
delete k 0 noreply\r\nflush_all 10\r\nverbosity 1\r\nstats detail on\r\nversion\r\nquit\r\n";

#[test]
fn a_pipeline_parses_the_same_at_every_split_point() {
    let small = TextLimits {
        max_value_bytes: 30,
        ..limits()
    };
    let whole = parse_pieces(PIPELINE, &[], &small);
    assert_eq!(whole.len(), 19, "{whole:#?}");
    // The data block of the append is data, never a delete.
    assert!(!whole.iter().any(|s| matches!(
        s,
        Ok(TextCommand::Delete { key, .. }) if key == b"victim"
    )));
    // The bad set is silent and its block ("get k") swallowed; the too-large one is
    // refused, swallowed, and forgets its key.
    assert!(whole.contains(&Err(Refused {
        error: client(BAD_FORMAT),
        noreply: true,
        forget: None
    })));
    assert!(whole.contains(&Err(Refused {
        error: TextError::TooLarge,
        noreply: false,
        forget: Some(b"big".to_vec())
    })));
    assert_eq!(whole.last(), Some(&Ok(TextCommand::Quit)));
    for cut in 0..=PIPELINE.len() {
        assert_eq!(
            parse_pieces(PIPELINE, &[cut], &small),
            whole,
            "split at {cut}"
        );
    }
    // And one byte at a time.
    let every: Vec<usize> = (1..PIPELINE.len()).collect();
    assert_eq!(parse_pieces(PIPELINE, &every, &small), whole);
}

#[test]
fn every_prefix_of_a_command_is_incomplete() {
    for full in [
        &b"set key 1 2 10 noreply\r\n0123\r\n6789\r\n"[..],
        b"cas key 1 2 3 44\r\nabc\r\n",
        b"get a b c\r\n",
        b"gat 1 a\r\n",
        b"delete key 0 noreply\r\n",
        b"incr k 1\r\n",
        b"touch k 1\r\n",
        b"flush_all\r\n",
        b"version\r\n",
    ] {
        for cut in 0..full.len() {
            let prefix = full.get(..cut).unwrap_or_default();
            assert_eq!(parse_default(prefix), Parsed::Incomplete, "prefix {cut}");
        }
        assert!(matches!(
            parse_default(full),
            Parsed::Command { consumed, .. } if consumed == full.len()
        ));
    }
}

// ---- randomized -------------------------------------------------------------------

#[test]
fn fuzzed_input_never_panics_and_consumes_sanely() {
    let seeds: [&[u8]; 16] = [
        b"set key 1 2 5 noreply\r\nhello\r\n",
        b"set k 0 0 3\r\nabc\r\nget k\r\n",
        b"get a b c\r\n",
        b"gets a\n",
        b"gat 1 a b\r\ngats -1 c\r\n",
        b"delete k 0 noreply\r\n",
        b"version\r\nstats\r\nquit\r\n",
        b"set k 0 0 99999999\r\n",
        b"set k -1 -1 -1\r\n",
        b"cas k 0 0 1 0 noreply\r\nx\r\n",
        b"append k 0 0 15\r\ndelete victim\r\n\r\n",
        b"incr k 1\r\ndecr k 18446744073709551615 noreply\r\n",
        b"touch k 10\r\nflush_all 0 noreply\r\nverbosity 1\r\n",
        b"stats detail dump\r\nstats cachedump 1 2\r\n",
        b"GET / HTTP/1.1\r\n",
        b"\r\n\n \r\n",
    ];
    let alphabet = b"setgdlvrionqucaph0123456789 -+\r\n\0\x7f\tk";
    let small = TextLimits {
        max_value_bytes: 16,
        max_key_bytes: 4,
        max_line_bytes: 24,
        max_retrieval_line_bytes: 40,
    };
    let mut rng = crate::rng::Rng::new(0x9E37_79B9_7F4A_7C15, 0);
    for round in 0..300_000 {
        let input = rng.parser_input(&seeds, b"", alphabet, 4);
        let lim = if round % 2 == 0 { small } else { limits() };
        // Walk the whole buffer as a connection would, then again split in two: the
        // same things must come out.
        let whole = parse_pieces(&input, &[], &lim);
        if round % 8 == 0 && !input.is_empty() {
            let cut = rng.index(input.len() + 1);
            assert_eq!(
                parse_pieces(&input, &[cut], &lim),
                whole,
                "{input:?} cut at {cut}"
            );
        }
    }
}
