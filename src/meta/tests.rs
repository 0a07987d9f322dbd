//! The meta parser and reply pieces: every command's flags, memcached's errors, base64, and
//! fuzzing.

use super::parser::{BAD_TOKEN, c_strtoul};
use super::*;
use crate::text::TextLimits;
use crate::text::number::parse_signed;

fn limits() -> TextLimits {
    TextLimits::default()
}

fn command(buf: &[u8]) -> MetaCommand {
    match parse(buf, &limits()) {
        MetaParsed::Command { command, consumed } => {
            assert_eq!(consumed, buf.len(), "whole buffer should be one command");
            command
        }
        other => panic!("expected a command from {buf:?}, got {other:?}"),
    }
}

fn error(buf: &[u8]) -> (String, usize, usize) {
    match parse(buf, &limits()) {
        MetaParsed::Error {
            reply,
            consumed,
            skip,
        } => (String::from_utf8_lossy(&reply).into_owned(), consumed, skip),
        other => panic!("expected an error from {buf:?}, got {other:?}"),
    }
}

fn reply(buf: &[u8]) -> String {
    error(buf).0
}

fn flags_of(buf: &[u8]) -> MetaFlags {
    match command(buf) {
        MetaCommand::Get { flags, .. }
        | MetaCommand::Set { flags, .. }
        | MetaCommand::Delete { flags, .. }
        | MetaCommand::Arith { flags, .. } => flags,
        other => panic!("{other:?}"),
    }
}

#[test]
fn noop_takes_its_line_and_ignores_arguments() {
    assert_eq!(command(b"mn\r\n"), MetaCommand::Noop);
    assert_eq!(command(b"mn\n"), MetaCommand::Noop);
    assert_eq!(command(b"  mn  x y\r\n"), MetaCommand::Noop);
    assert!(matches!(
        parse(b"mn\r\nmg", &limits()),
        MetaParsed::Command { consumed: 4, .. }
    ));
}

#[test]
fn other_commands_are_not_meta() {
    for buf in [
        &b"get foo\r\n"[..],
        b"mx foo\r\n",
        b"mgg foo\r\n",
        b"MG foo\r\n",
        b"m\r\n",
        b"\r\n",
        b"mg\tfoo\r\n",
        b"mg foo",
        b"mn",
    ] {
        assert_eq!(parse(buf, &limits()), MetaParsed::NotMeta, "{buf:?}");
    }
}

#[test]
fn a_line_too_long_is_left_to_the_classic_parser() {
    let small = TextLimits {
        max_line_bytes: 10,
        ..limits()
    };
    assert_eq!(parse(b"mg abcdefghijk\r\n", &small), MetaParsed::NotMeta);
    assert!(matches!(
        parse(b"mg abcdef\n", &small),
        MetaParsed::Command { .. }
    ));
}

#[test]
fn mg_parses_every_flag_in_order() {
    let flags = flags_of(b"mg foo s t c f l h O123 k v q u T30 N40 R50 C7\r\n");
    assert_eq!(
        flags.order,
        vec![
            ReplyFlag::Size,
            ReplyFlag::Ttl,
            ReplyFlag::Cas,
            ReplyFlag::Flags,
            ReplyFlag::LastAccess,
            ReplyFlag::Hit,
            ReplyFlag::Opaque(b"O123".to_vec()),
            ReplyFlag::Key,
            ReplyFlag::SetTtl,
            ReplyFlag::Vivify,
            ReplyFlag::Recache,
        ]
    );
    assert!(flags.value && flags.quiet && !flags.base64);
    assert_eq!(
        (flags.ttl, flags.vivify, flags.recache, flags.compare_cas),
        (Some(30), Some(40), Some(50), Some(7))
    );
    assert!(flags.ttl_read_before_update());
    assert!(!flags_of(b"mg foo T1 t\r\n").ttl_read_before_update());
    assert_eq!(flags.created_exptime(), 40);
    assert_eq!(flags_of(b"mg foo N40 T30\r\n").created_exptime(), 30);
    match command(b"mg foo\r\n") {
        MetaCommand::Get { key, flags } => {
            assert_eq!(key, b"foo");
            assert_eq!(flags, MetaFlags::default());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn mg_errors_are_memcacheds() {
    assert_eq!(error(b"mg\r\n"), ("ERROR\r\n".into(), 4, 0));
    assert_eq!(reply(b"mg foo x y\r\n"), "CLIENT_ERROR invalid flag\r\n");
    assert_eq!(reply(b"mg foo E5\r\n"), "CLIENT_ERROR invalid flag\r\n");
    assert_eq!(reply(b"mg foo v v\r\n"), "CLIENT_ERROR duplicate flag\r\n");
    assert_eq!(reply(b"mg foo \xc3\r\n"), "CLIENT_ERROR duplicate flag\r\n");
    assert_eq!(reply(b"mg foo \x01\r\n"), "CLIENT_ERROR invalid flag\r\n");
    assert_eq!(
        reply(b"mg foo T- Nx\r\n"),
        "CLIENT_ERROR bad token in command line format\r\n"
    );
    assert_eq!(
        reply(b"mg foo Tx b\r\n"),
        "CLIENT_ERROR error decoding key\r\n"
    );
    assert_eq!(
        reply(b"mg foo Fx\r\n"),
        "CLIENT_ERROR bad command line format\r\n"
    );
    assert_eq!(
        reply(b"mg foo a b c d e f g h i j k l m n o p q r\r\n"),
        "CLIENT_ERROR options flags are too long\r\n"
    );
    let long = format!("mg {}\r\n", "k".repeat(251));
    assert_eq!(
        reply(long.as_bytes()),
        "CLIENT_ERROR bad command line format\r\n"
    );
    let ok = format!("mg {} v\r\n", "k".repeat(250));
    assert!(matches!(command(ok.as_bytes()), MetaCommand::Get { .. }));
}

#[test]
fn a_long_opaque_is_flagged_for_mg_and_ma_and_refused_by_md_and_ms() {
    let opaque = format!("O{}", "1".repeat(32));
    let get = format!("mg k {opaque}\r\n");
    assert!(flags_of(get.as_bytes()).opaque_too_long);
    let arith = format!("ma k {opaque}\r\n");
    assert!(flags_of(arith.as_bytes()).opaque_too_long);
    let del = format!("md k {opaque}\r\n");
    assert_eq!(
        reply(del.as_bytes()),
        "CLIENT_ERROR opaque token too long\r\n"
    );
    let set = format!("ms k 2 {opaque}\r\nhi\r\n");
    let (r, consumed, skip) = error(set.as_bytes());
    assert_eq!(r, "CLIENT_ERROR opaque token too long\r\n");
    assert_eq!((consumed, skip), (set.len() - 4, 4));
    let fine = format!("mg k O{}\r\n", "1".repeat(31));
    assert!(!flags_of(fine.as_bytes()).opaque_too_long);
}

#[test]
fn base64_keys_are_decoded() {
    match command(b"mg Zm9v b k\r\n") {
        MetaCommand::Get { key, flags } => {
            assert_eq!(key, b"foo");
            assert!(flags.base64);
        }
        other => panic!("{other:?}"),
    }
    match command(b"ms AAEC/w== 1 b\r\nx\r\n") {
        MetaCommand::Set { key, .. } => assert_eq!(key, [0, 1, 2, 255]),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        reply(b"md foo b\r\n"),
        "CLIENT_ERROR invalid or duplicate flag\r\n"
    );
    assert_eq!(
        command(b"me Zm9v b\r\n"),
        MetaCommand::Debug {
            key: b"foo".to_vec(),
            base64: true
        }
    );
    assert_eq!(
        reply(b"me foo b\r\n"),
        "CLIENT_ERROR bad command line format\r\n"
    );
}

#[test]
fn base64_round_trips_and_follows_memcached() {
    for len in 0usize..40 {
        let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
        let encoded = base64_encode(&data);
        assert_eq!(encoded.len(), len.div_ceil(3) * 4);
        if len > 0 {
            assert_eq!(base64_decode(&encoded), Some(data));
        }
    }
    assert_eq!(base64_encode(b"foo"), b"Zm9v");
    assert_eq!(base64_encode(b"fo"), b"Zm8=");
    assert_eq!(base64_encode(b"f"), b"Zg==");
    assert_eq!(base64_decode(b"Zm8="), Some(b"fo".to_vec()));
    assert_eq!(base64_decode(b"Zg=="), Some(b"f".to_vec()));
    // Characters outside the alphabet are skipped; decoding stops at padding.
    assert_eq!(base64_decode(b"Zm-9v"), Some(b"foo".to_vec()));
    assert_eq!(base64_decode(b"Zg==Zm9v"), Some(b"f".to_vec()));
    assert_eq!(base64_decode(b"Zm9"), None);
    assert_eq!(base64_decode(b""), None);
    assert_eq!(base64_decode(b"-!"), None);
    assert_eq!(base64_decode(b"Z==="), None);
}

#[test]
fn ms_parses_with_its_data_block() {
    match command(b"ms foo 2 T30 F5 C9 c k O1 q I MA N60 s\r\nhi\r\n") {
        MetaCommand::Set {
            key,
            mode,
            data,
            flags,
        } => {
            assert_eq!(
                (key.as_slice(), mode, data.as_slice()),
                (&b"foo"[..], StoreMode::Append, &b"hi"[..])
            );
            assert_eq!(flags.ttl, Some(30));
            assert_eq!(flags.client_flags, 5);
            assert_eq!(flags.compare_cas, Some(9));
            assert_eq!(flags.vivify, Some(60));
            assert!(flags.quiet && flags.invalidate);
        }
        other => panic!("{other:?}"),
    }
    for (m, mode) in [
        ("", StoreMode::Set),
        (" MS", StoreMode::Set),
        (" ME", StoreMode::Add),
        (" MA", StoreMode::Append),
        (" MP", StoreMode::Prepend),
        (" MR", StoreMode::Replace),
    ] {
        let buf = format!("ms k 0{m}\r\n\r\n");
        assert!(
            matches!(command(buf.as_bytes()), MetaCommand::Set { mode: got, .. } if got == mode)
        );
    }
    // Binary data with CRLF inside is taken verbatim.
    match command(b"ms k 6\r\na\r\nmn\r\r\n") {
        MetaCommand::Set { data, .. } => assert_eq!(data, b"a\r\nmn\r"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ms_flags_follow_memcacheds_number_rules() {
    // safe_strtoul keeps the low 32 bits of flags.
    assert_eq!(
        flags_of(b"ms k 0 F99999999999\r\n\r\n").client_flags,
        1_215_752_191
    );
    // The data length is read as a long truncated to 32 bits.
    assert!(matches!(
        command(b"ms k 4294967298\r\nhi\r\n"),
        MetaCommand::Set { .. }
    ));
    assert_eq!(flags_of(b"ms k 0 T-1\r\n\r\n").ttl, Some(-1));
    assert_eq!(flags_of(b"ms k 0 T+5\r\n\r\n").ttl, Some(5));
    assert_eq!(
        flags_of(b"ma k C18446744073709551615\r\n").compare_cas,
        Some(u64::MAX)
    );
    assert_eq!(
        reply(b"ma k C-1\r\n"),
        "CLIENT_ERROR invalid or duplicate flag\r\n"
    );
    assert_eq!(
        reply(b"mg k C18446744073709551616\r\n"),
        "CLIENT_ERROR bad token in command line format\r\n"
    );
}

#[test]
fn ms_errors_swallow_the_block_when_its_length_is_known() {
    assert_eq!(error(b"ms\r\n"), ("ERROR\r\n".into(), 4, 0));
    assert_eq!(
        error(b"ms foo\r\n"),
        ("CLIENT_ERROR bad command line format\r\n".into(), 8, 0)
    );
    for bad in [&b"ms foo -1\r\n"[..], b"ms foo 1x\r\n", b"ms foo x\r\n"] {
        assert_eq!(
            error(bad),
            (
                "CLIENT_ERROR bad command line format\r\n".into(),
                bad.len(),
                0
            )
        );
    }
    let cases: [(&[u8], &str); 7] = [
        (
            b"ms foo 2 Me\r\n",
            "CLIENT_ERROR invalid mode for ms M token",
        ),
        (
            b"ms foo 2 MEE\r\n",
            "CLIENT_ERROR incorrect length for M token",
        ),
        (b"ms foo 2 c C F\r\n", BAD_TOKEN),
        (b"ms foo 2 z\r\n", "CLIENT_ERROR invalid flag"),
        (b"ms foo 2 c c\r\n", "CLIENT_ERROR duplicate flag"),
        (
            b"ms foo 2 a b c d e f g h i j k l m n o p q\r\n",
            "CLIENT_ERROR options flags too long",
        ),
        (b"ms foo 2 E1\r\n", "CLIENT_ERROR invalid flag"),
    ];
    for (buf, want) in cases {
        let (r, consumed, skip) = error(buf);
        assert_eq!(r, format!("{want}\r\n"), "{buf:?}");
        assert_eq!((consumed, skip), (buf.len(), 4), "{buf:?}");
    }
    let long = format!("ms {} 3\r\n", "k".repeat(251));
    assert_eq!(
        error(long.as_bytes()),
        (
            "CLIENT_ERROR bad command line format\r\n".into(),
            long.len(),
            5
        )
    );
}

#[test]
fn ms_too_large_skips_without_waiting() {
    let small = TextLimits {
        max_value_bytes: 10,
        ..limits()
    };
    match parse(b"ms k 11 T0\r\n", &small) {
        MetaParsed::Error {
            reply,
            consumed,
            skip,
        } => {
            assert_eq!(reply, b"SERVER_ERROR object too large for cache\r\n");
            assert_eq!((consumed, skip), (12, 13));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(parse(b"ms k 10\r\n", &small), MetaParsed::Incomplete);
    // The largest length memcached accepts, never allocated.
    let (r, _, skip) = error(b"ms k 2147483645\r\n");
    assert_eq!(r, "SERVER_ERROR object too large for cache\r\n");
    assert_eq!(skip, 2_147_483_647);
}

#[test]
fn ms_bad_data_chunk_consumes_the_block() {
    let buf = b"ms k 2\r\nhiX\r\n";
    assert_eq!(
        error(buf),
        ("CLIENT_ERROR bad data chunk\r\n".into(), 12, 0)
    );
}

#[test]
fn every_prefix_of_an_ms_is_not_yet_whole() {
    let full = b"ms key 10 T5 c\r\n0123\r\n6789\r\n";
    for cut in 0..full.len() {
        let got = parse(&full[..cut], &limits());
        assert!(
            matches!(got, MetaParsed::NotMeta | MetaParsed::Incomplete),
            "{cut}: {got:?}"
        );
    }
    assert!(matches!(
        parse(full, &limits()),
        MetaParsed::Command { consumed, .. } if consumed == full.len()
    ));
}

#[test]
fn md_and_ma_parse_and_refuse_like_memcached() {
    match command(b"md foo C5 q I T30 x k O9\r\n") {
        MetaCommand::Delete { key, flags } => {
            assert_eq!(key, b"foo");
            assert_eq!(flags.compare_cas, Some(5));
            assert!(flags.quiet && flags.invalidate && flags.remove_value);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(error(b"md\r\n").0, "ERROR\r\n");
    assert_eq!(
        reply(b"md foo Tx\r\n"),
        "CLIENT_ERROR invalid or duplicate flag\r\n"
    );
    assert_eq!(
        reply(b"md foo a b c d e f g h i j k l m n o p q r\r\n"),
        "CLIENT_ERROR options flags too long\r\n"
    );
    for (m, decr) in [
        ("", false),
        (" MI", false),
        (" M+", false),
        (" MD", true),
        (" M-", true),
    ] {
        let buf = format!("ma k{m}\r\n");
        assert!(matches!(command(buf.as_bytes()), MetaCommand::Arith { decr: d, .. } if d == decr));
    }
    let flags = flags_of(b"ma k N0 J10 D5 T9 v t c\r\n");
    assert_eq!(
        (flags.initial, flags.delta, flags.vivify, flags.ttl),
        (10, 5, Some(0), Some(9))
    );
    assert_eq!(flags_of(b"ma k\r\n").delta, 1);
    assert_eq!(
        reply(b"ma k Mx\r\n"),
        "CLIENT_ERROR invalid mode for ma M token\r\n"
    );
    assert_eq!(
        reply(b"ma k Dx\r\n"),
        "CLIENT_ERROR invalid or duplicate flag\r\n"
    );
    assert_eq!(error(b"ma\r\n").0, "ERROR\r\n");
}

#[test]
fn ignored_flags_are_accepted_and_numbers_read_as_c_does() {
    let flags = flags_of(b"mg k P L u\r\n");
    assert!(flags.order.is_empty());
    assert_eq!(parse_signed(b"\t-12"), Some(-12));
    assert_eq!(parse_signed(b"+7\t"), Some(7));
    assert_eq!(parse_signed(b"7x"), None);
    assert_eq!(parse_signed(b"-"), None);
    assert_eq!(parse_signed(b""), None);
    assert_eq!(parse_signed(b"9223372036854775808"), None);
    assert_eq!(parse_signed(b"-9223372036854775808"), Some(i64::MIN));
    assert_eq!(c_strtoul(b"-0"), Some(0));
    assert_eq!(c_strtoul(b"-5"), None);
    assert_eq!(c_strtoul(b"18446744073709551616"), None);
    // A T beyond 32 bits wraps as memcached's int32 does.
    assert_eq!(flags_of(b"mg k T4294967297\r\n").ttl, Some(1));
}

#[test]
fn me_parses_and_refuses() {
    assert_eq!(
        command(b"me foo\r\n"),
        MetaCommand::Debug {
            key: b"foo".to_vec(),
            base64: false
        }
    );
    assert_eq!(reply(b"me\r\n"), "CLIENT_ERROR bad command line format\r\n");
}

#[test]
fn a_nul_ends_the_line_as_in_c() {
    match command(b"mg foo\0 zzz\r\n") {
        MetaCommand::Get { key, flags } => {
            assert_eq!(key, b"foo");
            assert!(flags.order.is_empty());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn reply_helpers_are_byte_exact() {
    let mut out = Vec::new();
    push_key(&mut out, b"foo", false);
    push_key(&mut out, b"foo", true);
    push_number(&mut out, b'c', 42u64);
    push_ttl(&mut out, 0, 100);
    push_ttl(&mut out, 130, 100);
    assert_eq!(out, b" kfoo kZm9v b c42 t-1 t30");
    out.clear();
    let flags = flags_of(b"mg foo k c O1\r\n");
    push_opaque_and_key(&mut out, &flags, b"foo");
    assert_eq!(out, b" kfoo O1");
}

#[test]
fn fuzzed_input_never_panics_and_consumes_sanely() {
    let seeds: [&[u8]; 10] = [
        b"ms key 5 T10 F3 c k O1 MA N5\r\nhello\r\n",
        b"mg key s t c f l h O12 k v q T30 N40 R5 b\r\n",
        b"md a C5 q I T3 x\r\n",
        b"ma n N0 J10 D3 MD v t c\r\n",
        b"me Zm9v b\r\nmn\r\n",
        b"ms k 99999999999\r\n",
        b"ms k -1 -1 -1\r\n",
        b"mg Zm9v== b k\r\n",
        b"ms AAEC/w== 1 b\r\nx\r\n",
        b"\r\n\n \r\n",
    ];
    let alphabet = b"msgdnaeb0123456789 -+=/\r\n\0\x7f\tkvqcCTNMEFOIJDxRtfhls";
    let small = TextLimits {
        max_value_bytes: 16,
        max_key_bytes: 6,
        max_line_bytes: 40,
        ..TextLimits::default()
    };
    let mut rng = crate::rng::Rng::new(0x2545_F491_4F6C_DD1D, 0);
    for round in 0..60_000 {
        let input = rng.parser_input(&seeds, b"m", alphabet, 5);
        let lim = if round % 2 == 0 { small } else { limits() };
        let mut rest = &input[..];
        loop {
            match parse(rest, &lim) {
                MetaParsed::NotMeta | MetaParsed::Incomplete => break,
                MetaParsed::Command { consumed, .. } => {
                    assert!(consumed > 0, "zero consumed on {input:?}");
                    assert!(consumed <= rest.len(), "overrun on {input:?}");
                    rest = &rest[consumed..];
                }
                MetaParsed::Error {
                    consumed, reply, ..
                } => {
                    assert!(consumed > 0, "zero consumed on {input:?}");
                    assert!(consumed <= rest.len(), "overrun on {input:?}");
                    assert!(reply.ends_with(b"\r\n"), "{reply:?}");
                    rest = &rest[consumed..];
                }
            }
        }
    }
}
