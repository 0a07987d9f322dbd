//! Retrieval, delete, incr/decr, touch, flush_all, verbosity, version, quit, stats and
//! unknown commands.

use super::*;

// ---- retrieval ----------------------------------------------------------------

#[test]
fn get_gets_and_bget_parse_their_keys() {
    assert_eq!(command(b"get foo\r\n"), get(&[b"foo"], false, None));
    assert_eq!(command(b"gets foo\r\n"), get(&[b"foo"], true, None));
    assert_eq!(command(b"bget foo\r\n"), get(&[b"foo"], false, None));
    // memcached splits on spaces only, and `noreply` is just a key to a get.
    assert_eq!(
        command(b"  get  a bb   ccc noreply \r\n"),
        get(&[b"a", b"bb", b"ccc", b"noreply"], false, None)
    );
}

#[test]
fn gat_and_gats_take_an_exptime_then_keys() {
    assert_eq!(
        command(b"gat 10 a b\r\n"),
        get(&[b"a", b"b"], false, Some(10))
    );
    assert_eq!(command(b"gats -1 a\r\n"), get(&[b"a"], true, Some(-1)));
    // memcached answers a gat without keys with a bare END.
    assert_eq!(command(b"gat 10\r\n"), get(&[], false, Some(10)));
    assert_eq!(error(b"gat\r\n"), (TextError::UnknownCommand, 5, 0));
    for line in [&b"gat x k\r\n"[..], b"gats 1- k\r\n", b"gat 1x k\r\n"] {
        assert_eq!(reply_to(line), b"CLIENT_ERROR invalid exptime argument\r\n");
    }
}

#[test]
fn retrieval_without_keys_is_an_error() {
    for line in [&b"get\r\n"[..], b"gets   \r\n", b"bget\r\n"] {
        assert_eq!(error(line), (TextError::UnknownCommand, line.len(), 0));
    }
}

#[test]
fn a_bad_key_refuses_the_whole_retrieval_line() {
    let long = format!("get a {} b\r\n", "k".repeat(251));
    assert_eq!(
        reply_to(long.as_bytes()),
        b"CLIENT_ERROR bad command line format\r\n"
    );
    let long = format!("gat 1 {}\r\n", "k".repeat(251));
    assert_eq!(
        reply_to(long.as_bytes()),
        b"CLIENT_ERROR bad command line format\r\n"
    );
    assert_eq!(
        reply_to(b"gets a\tb\r\n"),
        b"CLIENT_ERROR key has control characters\r\n"
    );
}

// ---- delete, incr/decr, touch ---------------------------------------------------

#[test]
fn delete_parses_in_all_its_forms() {
    let del = |noreply| TextCommand::Delete {
        key: b"k".to_vec(),
        noreply,
    };
    assert_eq!(command(b"delete k\r\n"), del(false));
    assert_eq!(command(b"delete k noreply\r\n"), del(true));
    assert_eq!(command(b"delete k 0\r\n"), del(false));
    assert_eq!(command(b"delete k 0 noreply\r\n"), del(true));
}

#[test]
fn delete_with_bad_arguments_gets_memcached_usage_line_or_silence() {
    let usage = b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n";
    assert_eq!(error(b"delete\r\n").0, TextError::UnknownCommand);
    assert_eq!(reply_to(b"delete k 5\r\n"), usage);
    assert_eq!(reply_to(b"delete k 0 x\r\n"), usage);
    // The last token is "0": no noreply, so the error is shown.
    assert_eq!(reply_to(b"delete k noreply 0\r\n"), usage);
    // The last token is noreply: the same error is silenced.
    assert_eq!(reply_to(b"delete k x noreply\r\n"), b"");
    assert_eq!(reply_to(b"delete k 0 noreply x\r\n"), b"ERROR\r\n");
    let long = "k".repeat(251);
    assert_eq!(
        reply_to(format!("delete {long}\r\n").as_bytes()),
        b"CLIENT_ERROR bad command line format\r\n"
    );
    assert_eq!(
        reply_to(format!("delete {long} noreply\r\n").as_bytes()),
        b""
    );
}

#[test]
fn incr_and_decr_parse_and_refuse_like_memcached() {
    assert_eq!(
        command(b"incr k 5\r\n"),
        TextCommand::Arith {
            key: b"k".to_vec(),
            decr: false,
            delta: 5,
            noreply: false
        }
    );
    assert_eq!(
        command(b"decr k 18446744073709551615 noreply\r\n"),
        TextCommand::Arith {
            key: b"k".to_vec(),
            decr: true,
            delta: u64::MAX,
            noreply: true
        }
    );
    for line in [&b"incr\r\n"[..], b"incr k\r\n", b"decr k 1 2 3\r\n"] {
        assert_eq!(reply_to(line), b"ERROR\r\n", "{line:?}");
    }
    for line in [
        &b"incr k x\r\n"[..],
        b"incr k -1\r\n",
        b"decr k 1-\r\n",
        b"incr k 18446744073709551616\r\n",
        b"incr k 0x10\r\n",
    ] {
        assert_eq!(
            reply_to(line),
            b"CLIENT_ERROR invalid numeric delta argument\r\n",
            "{line:?}"
        );
    }
    assert_eq!(reply_to(b"incr k x noreply\r\n"), b"");
    // `incr k noreply`: noreply is seen (last token), and the delta is bad: silent.
    assert_eq!(reply_to(b"incr k noreply\r\n"), b"");
    let long = format!("incr {} 1\r\n", "k".repeat(251));
    assert_eq!(
        reply_to(long.as_bytes()),
        b"CLIENT_ERROR bad command line format\r\n"
    );
}

#[test]
fn touch_parses_and_refuses_like_memcached() {
    assert_eq!(
        command(b"touch k -5\r\n"),
        TextCommand::Touch {
            key: b"k".to_vec(),
            exptime: -5,
            noreply: false
        }
    );
    assert_eq!(
        command(b"touch k 10 noreply\r\n"),
        TextCommand::Touch {
            key: b"k".to_vec(),
            exptime: 10,
            noreply: true
        }
    );
    for line in [&b"touch\r\n"[..], b"touch k\r\n", b"touch k 1 2 3\r\n"] {
        assert_eq!(reply_to(line), b"ERROR\r\n", "{line:?}");
    }
    assert_eq!(
        reply_to(b"touch k x\r\n"),
        b"CLIENT_ERROR invalid exptime argument\r\n"
    );
    assert_eq!(reply_to(b"touch k x noreply\r\n"), b"");
}

// ---- flush_all, verbosity, version, quit, stats --------------------------------

#[test]
fn flush_all_follows_memcached_argument_rules() {
    let flush = |delay, noreply| TextCommand::FlushAll { delay, noreply };
    assert_eq!(command(b"flush_all\r\n"), flush(0, false));
    assert_eq!(command(b"flush_all 0\r\n"), flush(0, false));
    assert_eq!(command(b"flush_all -1\r\n"), flush(-1, false));
    assert_eq!(command(b"flush_all noreply\r\n"), flush(0, true));
    assert_eq!(command(b"flush_all 10 noreply\r\n"), flush(10, true));
    // A second argument that is not noreply is ignored.
    assert_eq!(command(b"flush_all 10 x\r\n"), flush(10, false));
    for (line, want) in [
        (
            &b"flush_all x\r\n"[..],
            &b"CLIENT_ERROR invalid exptime argument\r\n"[..],
        ),
        (
            b"flush_all x y\r\n",
            b"CLIENT_ERROR invalid exptime argument\r\n",
        ),
        (
            b"flush_all noreply x\r\n",
            b"CLIENT_ERROR invalid exptime argument\r\n",
        ),
        (b"flush_all x noreply\r\n", b""),
        (b"flush_all 1 2 3\r\n", b"ERROR\r\n"),
    ] {
        assert_eq!(reply_to(line), want, "{line:?}");
    }
}

#[test]
fn verbosity_follows_memcached_argument_rules() {
    let verbosity = |level, noreply| TextCommand::Verbosity { level, noreply };
    assert_eq!(command(b"verbosity 1\r\n"), verbosity(1, false));
    assert_eq!(command(b"verbosity 1 noreply\r\n"), verbosity(1, true));
    assert_eq!(command(b"verbosity 1 x\r\n"), verbosity(1, false));
    assert_eq!(
        command(b"cache_memlimit 50 noreply\r\n"),
        TextCommand::CacheMemlimit {
            megabytes: 50,
            noreply: true
        }
    );
    for (line, want) in [
        (&b"verbosity\r\n"[..], &b"ERROR\r\n"[..]),
        (b"verbosity 1 2 3\r\n", b"ERROR\r\n"),
        (
            b"verbosity x\r\n",
            b"CLIENT_ERROR bad command line format\r\n",
        ),
        (b"verbosity x noreply\r\n", b""),
        (b"verbosity noreply\r\n", b""),
    ] {
        assert_eq!(reply_to(line), want, "{line:?}");
    }
}

#[test]
fn version_and_quit_ignore_arguments_as_memcached_does() {
    assert_eq!(command(b"version\r\n"), TextCommand::Version);
    assert_eq!(command(b"version x\r\n"), TextCommand::Version);
    assert_eq!(command(b"quit\r\n"), TextCommand::Quit);
    assert_eq!(command(b"quit now\r\n"), TextCommand::Quit);
}

#[test]
fn stats_arguments_parse_as_memcached_reads_them() {
    let stats = |s| TextCommand::Stats(s);
    assert_eq!(command(b"stats\r\n"), stats(StatsArgs::General));
    for name in ["settings", "items", "slabs", "sizes", "conns", "bogus"] {
        assert_eq!(
            command(format!("stats {name}\r\n").as_bytes()),
            stats(StatsArgs::Section(name.to_string()))
        );
    }
    assert_eq!(
        command(b"stats items extra\r\n"),
        stats(StatsArgs::Section("items".into()))
    );
    assert_eq!(command(b"stats reset\r\n"), stats(StatsArgs::Reset));
    assert_eq!(command(b"stats reset x\r\n"), stats(StatsArgs::Reset));
    assert_eq!(command(b"stats detail on\r\n"), stats(StatsArgs::DetailOn));
    assert_eq!(
        command(b"stats detail off\r\n"),
        stats(StatsArgs::DetailOff)
    );
    assert_eq!(
        command(b"stats detail dump\r\n"),
        stats(StatsArgs::DetailDump)
    );
    assert_eq!(
        command(b"stats cachedump 1 10\r\n"),
        stats(StatsArgs::Cachedump)
    );
    for (line, want) in [
        (
            &b"stats detail\r\n"[..],
            &b"CLIENT_ERROR usage: stats detail on|off|dump\r\n"[..],
        ),
        (
            b"stats detail x\r\n",
            b"CLIENT_ERROR usage: stats detail on|off|dump\r\n",
        ),
        (b"stats cachedump\r\n", b"CLIENT_ERROR bad command line\r\n"),
        (
            b"stats cachedump 1\r\n",
            b"CLIENT_ERROR bad command line\r\n",
        ),
        (
            b"stats cachedump x 1\r\n",
            b"CLIENT_ERROR bad command line format\r\n",
        ),
        (
            b"stats cachedump 64 1\r\n",
            b"CLIENT_ERROR Illegal slab id\r\n",
        ),
    ] {
        assert_eq!(reply_to(line), want, "{line:?}");
    }
}

// ---- unknown commands -----------------------------------------------------------

#[test]
fn unknown_uppercase_and_empty_lines_reply_error() {
    for line in [
        &b"GET k\r\n"[..],
        b"bogus\r\n",
        b"mx\r\n",
        b"g\r\n",
        b"\r\n",
        b"\n",
        b"   \r\n",
        b"\x00\x01\x02\r\n",
    ] {
        assert_eq!(
            refusal(line),
            (TextError::UnknownCommand, line.len(), 0, false, None),
            "{line:?}"
        );
    }
}

#[test]
fn an_http_request_line_closes_silently_and_shutdown_is_disabled() {
    for line in [
        &b"GET / HTTP/1.1\r\n"[..],
        b"POST /x HTTP/1.0\r\n",
        b"foo HTTP/\r\n",
    ] {
        let (e, consumed, ..) = refusal(line);
        assert_eq!((e.clone(), consumed), (TextError::HttpRequest, line.len()));
        assert!(e.closes_connection());
        assert_eq!(e.reply(), b"");
    }
    // A known command keeps its meaning.
    assert_eq!(
        command(b"get k HTTP/1.1\r\n"),
        get(&[b"k", b"HTTP/1.1"], false, None)
    );
    assert_eq!(
        reply_to(b"shutdown\r\n"),
        b"ERROR: shutdown not enabled\r\n"
    );
    assert_eq!(
        reply_to(b"shutdown graceful\r\n"),
        b"ERROR: shutdown not enabled\r\n"
    );
}

#[test]
fn bare_newline_line_ending_is_accepted() {
    assert_eq!(
        command(b"set k 0 0 2\nhi\r\n"),
        store(StoreMode::Set, b"k", b"hi", false)
    );
    assert_eq!(command(b"version\n"), TextCommand::Version);
}

#[test]
fn key_of_250_bytes_is_accepted_and_251_rejected() {
    let ok = format!("get {}\r\n", "k".repeat(250));
    assert!(matches!(command(ok.as_bytes()), TextCommand::Get { .. }));
    let long = format!("get {}\r\n", "k".repeat(251));
    assert_eq!(
        reply_to(long.as_bytes()),
        b"CLIENT_ERROR bad command line format\r\n"
    );
    let set = format!("set {} 0 0 1\r\n", "k".repeat(251));
    assert_eq!(error(set.as_bytes()), (client(BAD_FORMAT), set.len(), 3));
}

#[test]
fn control_characters_in_keys_are_rejected() {
    for line in [
        &b"get a\tb\r\n"[..],
        b"get a\x7fb\r\n",
        b"delete \x01\r\n",
        b"touch a\x01 1\r\n",
        b"incr a\x01 1\r\n",
        b"get a\rb\r\n",
    ] {
        assert_eq!(
            error(line).0,
            client("key has control characters"),
            "{line:?}"
        );
    }
    let line = b"set a\x00b 0 0 1\r\n";
    assert_eq!(
        error(line),
        (client("key has control characters"), line.len(), 3)
    );
}
