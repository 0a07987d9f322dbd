//! Storage commands and their data blocks.

use super::*;

// ---- storage ------------------------------------------------------------------

#[test]
fn every_storage_command_parses_with_its_data_block() {
    for (name, mode) in [
        ("set", StoreMode::Set),
        ("add", StoreMode::Add),
        ("replace", StoreMode::Replace),
        ("append", StoreMode::Append),
        ("prepend", StoreMode::Prepend),
    ] {
        let line = format!("{name} k 5 -3 3\r\nabc\r\n");
        assert_eq!(
            command(line.as_bytes()),
            TextCommand::Store {
                mode,
                key: b"k".to_vec(),
                flags: 5,
                exptime: -3,
                data: b"abc".to_vec(),
                cas: None,
                noreply: false,
            }
        );
        let line = format!("{name} k 0 0 1 noreply\r\nx\r\n");
        assert_eq!(command(line.as_bytes()), store(mode, b"k", b"x", true));
    }
}

#[test]
fn cas_carries_its_unique_even_zero() {
    for (unique, want) in [("77", 77), ("0", 0), ("18446744073709551615", u64::MAX)] {
        let line = format!("cas k 1 2 1 {unique}\r\nx\r\n");
        assert_eq!(
            command(line.as_bytes()),
            TextCommand::Store {
                mode: StoreMode::Set,
                key: b"k".to_vec(),
                flags: 1,
                exptime: 2,
                data: b"x".to_vec(),
                cas: Some(want),
                noreply: false,
            }
        );
    }
    assert!(matches!(
        command(b"cas k 0 0 1 5 noreply\r\nx\r\n"),
        TextCommand::Store {
            cas: Some(5),
            noreply: true,
            ..
        }
    ));
}

#[test]
fn flags_and_exptime_span_their_ranges() {
    assert!(matches!(
        command(b"set k 4294967295 -9223372036854775808 0\r\n\r\n"),
        TextCommand::Store {
            flags: u32::MAX,
            exptime: i64::MIN,
            ..
        }
    ));
    assert!(matches!(
        command(b"set k 0 9223372036854775807 0\r\n\r\n"),
        TextCommand::Store {
            exptime: i64::MAX,
            ..
        }
    ));
}

#[test]
fn numbers_read_as_strtoul_and_strtol_read_them_in_memcached() {
    // A sign, leading zeros, and whitespace around the digits (tabs: tokens are split
    // on spaces only) are accepted, as by C's strtoul/strtol.
    assert!(matches!(
        command(b"set k +7 +10 +03\r\nabc\r\n"),
        TextCommand::Store {
            flags: 7,
            exptime: 10,
            ref data,
            ..
        } if data == b"abc"
    ));
    assert!(matches!(
        command(b"set k \t7\t -0 -0\r\n\r\n"),
        TextCommand::Store {
            flags: 7,
            exptime: 0,
            ..
        }
    ));
    assert!(matches!(
        command(b"incr k +5\r\n"),
        TextCommand::Arith { delta: 5, .. }
    ));
    assert!(matches!(
        command(b"cas k 0 0 0 +9\r\n\r\n"),
        TextCommand::Store { cas: Some(9), .. }
    ));
    assert_eq!(command(b"gat +5 k\r\n"), get(&[b"k"], false, Some(5)));
    // Junk after the digits, a lone sign, or a negative unsigned number is refused.
    for token in [
        &b"5x"[..],
        b"+",
        b"-",
        b"",
        b"\t",
        b"--1",
        b"+-1",
        b"-5",
        b"0x5",
    ] {
        assert_eq!(parse_unsigned(token), None, "{token:?}");
    }
    assert_eq!(parse_signed(b"-5"), Some(-5));
    assert_eq!(parse_signed(b"-9223372036854775809"), None);
    assert_eq!(parse_unsigned(b"18446744073709551616"), None);
}

#[test]
fn a_last_token_other_than_noreply_is_ignored_as_memcached_does() {
    // memcached 1.6: `set k 0 0 3 norply` stores and answers STORED.
    assert_eq!(
        command(b"set k 0 0 3 norply\r\nabc\r\n"),
        store(StoreMode::Set, b"k", b"abc", false)
    );
}

#[test]
fn wrong_token_count_is_error_not_silenced_and_swallows_a_valid_block() {
    // Too few tokens: no <bytes> to trust, nothing swallowed.
    assert_eq!(
        refusal(b"set k 0 0\r\n"),
        (TextError::UnknownCommand, 11, 0, false, None)
    );
    // Too many: ERROR (even with noreply, as memcached), and the block is swallowed.
    let line = b"set k 0 0 1 noreply x\r\n";
    assert_eq!(
        refusal(line),
        (TextError::UnknownCommand, line.len(), 3, false, None)
    );
    // cas without its unique: its <bytes> is there, so its block is swallowed.
    let line = b"cas k 0 0 5\r\n";
    assert_eq!(
        refusal(line),
        (TextError::UnknownCommand, line.len(), 7, false, None)
    );
    assert_eq!(error(b"add\r\n"), (TextError::UnknownCommand, 5, 0));
    assert_eq!(
        error(b"append k 0 0\r\n"),
        (TextError::UnknownCommand, 14, 0)
    );
}

#[test]
fn bad_flags_exptime_or_unique_are_bad_format_and_swallow_the_block() {
    for line in [
        &b"set k -1 0 3\r\n"[..],
        b"set k 1+ 0 3\r\n",
        b"set k 4294967296 0 3\r\n",
        b"set k x 0 3\r\n",
        b"add k 0 - 3\r\n",
        b"replace k 0 5x 3\r\n",
        b"prepend k 0 9223372036854775808 3\r\n",
        b"cas k 0 0 3 x\r\n",
        b"cas k 0 0 3 -1\r\n",
        b"cas k 0 0 3 18446744073709551616\r\n",
    ] {
        assert_eq!(
            refusal(line),
            (client(BAD_FORMAT), line.len(), 5, false, None),
            "{line:?}"
        );
    }
}

#[test]
fn a_bad_byte_count_is_bad_format_and_swallows_nothing() {
    for line in [
        &b"set k 0 0 -1\r\n"[..],
        b"set k 0 0 1x\r\n",
        b"set k 0 0 x\r\n",
        b"set k 0 0 2147483646\r\n",
        b"set k 0 0 99999999999999999999999\r\n",
    ] {
        assert_eq!(error(line), (client(BAD_FORMAT), line.len(), 0), "{line:?}");
    }
    // The largest length memcached accepts is INT_MAX - 2: too large, swallowed.
    let line = b"set k 0 0 2147483645\r\n";
    assert_eq!(
        refusal(line),
        (
            TextError::TooLarge,
            line.len(),
            2_147_483_647,
            false,
            Some(b"k".to_vec())
        )
    );
}

#[test]
fn noreply_silences_storage_errors_like_set_noreply_maybe() {
    // Bad flags under noreply: silent, block swallowed.
    let line = b"set k x 0 5 noreply\r\n";
    assert_eq!(
        refusal(line),
        (client(BAD_FORMAT), line.len(), 7, true, None)
    );
    assert_eq!(reply_to(line), b"");
    // `noreply` in the <bytes> place: memcached sees noreply (last token) and a bad
    // length; silent, and with no valid length nothing is swallowed.
    let line = b"set k 0 0 noreply\r\n";
    assert_eq!(
        refusal(line),
        (client(BAD_FORMAT), line.len(), 0, true, None)
    );
    let line = format!("set {} 0 0 1 noreply\r\n", "k".repeat(251));
    assert_eq!(
        refusal(line.as_bytes()),
        (client(BAD_FORMAT), line.len(), 3, true, None)
    );
}

#[test]
fn too_large_swallows_without_waiting_and_forgets_only_for_set() {
    let small = TextLimits {
        max_value_bytes: 10,
        ..limits()
    };
    let too_large = |line: &[u8]| {
        let (error, consumed, skip, noreply, forget) = refusal_with(line, &small);
        assert_eq!(error, TextError::TooLarge);
        assert_eq!((consumed, skip), (line.len(), 13));
        (noreply, forget)
    };
    assert_eq!(too_large(b"set k 0 0 11\r\n"), (false, Some(b"k".to_vec())));
    assert_eq!(
        too_large(b"set k 0 0 11 noreply\r\n"),
        (true, Some(b"k".to_vec()))
    );
    // memcached drops the old value for set only; add/replace/append/prepend/cas keep it.
    for line in [
        &b"add k 0 0 11\r\n"[..],
        b"replace k 0 0 11\r\n",
        b"append k 0 0 11\r\n",
        b"prepend k 0 0 11\r\n",
        b"cas k 0 0 11 5\r\n",
    ] {
        assert_eq!(too_large(line), (false, None), "{line:?}");
    }
    assert!(matches!(
        parse(b"set k 0 0 10\r\n", &small),
        Parsed::Incomplete
    ));
    assert_eq!(
        TextError::TooLarge.reply(),
        b"SERVER_ERROR object too large for cache\r\n"
    );
}

#[test]
fn a_key_error_outranks_too_large_as_in_memcached() {
    let small = TextLimits {
        max_value_bytes: 10,
        ..limits()
    };
    let line = format!("set {} 0 0 11\r\n", "k".repeat(251));
    assert!(matches!(
        parse(line.as_bytes(), &small),
        Parsed::Error { error: TextError::Client(ref r), skip: 13, .. } if r == BAD_FORMAT
    ));
}

#[test]
fn split_storage_waits_for_the_data_block() {
    assert_eq!(parse_default(b"set k 0 0 5\r\nhel"), Parsed::Incomplete);
    assert_eq!(parse_default(b"set k 0 0 5\r\nhello\r"), Parsed::Incomplete);
    assert_eq!(parse_default(b"cas k 0 0 5 1\r\n"), Parsed::Incomplete);
}

#[test]
fn a_block_not_ending_in_crlf_is_a_bad_data_chunk_of_exactly_bytes_plus_two() {
    let buf = b"set k 0 0 3\r\nabcde\r\n";
    let (e, consumed, skip, noreply, _) = refusal(buf);
    assert_eq!(e.reply(), b"CLIENT_ERROR bad data chunk\r\n");
    assert_eq!((consumed, skip, noreply), (13 + 5, 0, false));
    // The "\r\n" left over is then an empty line: ERROR, as memcached answers.
    assert_eq!(error(&buf[consumed..]), (TextError::UnknownCommand, 2, 0));
    // Silenced by noreply.
    assert_eq!(reply_to(b"append k 0 0 3 noreply\r\nabcde\r\n"), b"");
}

#[test]
fn binary_data_with_crlf_and_commands_inside_is_taken_verbatim() {
    let data = b"a\r\ndelete victim\r\n\0\0\n\r";
    let mut buf = format!("append bin 0 0 {}\r\n", data.len()).into_bytes();
    buf.extend_from_slice(data);
    buf.extend_from_slice(b"\r\n");
    match command(&buf) {
        TextCommand::Store { data: got, .. } => assert_eq!(got, data),
        other => panic!("{other:?}"),
    }
}
