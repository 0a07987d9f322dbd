//! The tests of `tests/memcached_compat.rs` that wait for time to pass (relative expiry,
//! delayed `flush_all`): each polls both servers under a deadline instead of comparing a
//! script step by step, since the two servers' clocks do not tick together.

use std::time::{Duration, Instant};

use crate::compat::{Pair, Session, show, verdict};

/// Items with a 2 s relative expiry (set, add, touch, gat, gats) are there right after and
/// gone within a deadline, on both servers; an item with a long expiry stays. (2 s, not 1:
/// memcached's clock ticks once a second, so an exptime of 1 can end at once.)
#[test]
fn expiry_relative_by_polling() {
    let pair = Pair::start();
    let servers = pair.servers();
    // (setup steps, key that must expire)
    let cases: [(&[&str], &str); 5] = [
        (&["set rel_set 0 2 1\r\nx\r\n"], "rel_set"),
        (&["add rel_add 0 2 1\r\nx\r\n"], "rel_add"),
        (
            &["set rel_touch 0 0 1\r\nx\r\n", "touch rel_touch 2\r\n"],
            "rel_touch",
        ),
        (
            &["set rel_gat 0 0 1\r\nx\r\n", "gat 2 rel_gat\r\n"],
            "rel_gat",
        ),
        (
            &["set rel_gats 0 0 1\r\nx\r\n", "gats 2 rel_gats\r\n"],
            "rel_gats",
        ),
    ];
    let mut sessions: Vec<Session> = servers.iter().map(|(_, a)| Session::new(a)).collect();
    let mut problems = Vec::new();
    for (setup, _) in &cases {
        for session in sessions.iter_mut() {
            for step in *setup {
                session.exchange(step);
            }
        }
    }
    for session in sessions.iter_mut() {
        session.exchange("set rel_keep 0 100 1\r\nk\r\n");
    }
    // Right after: every key is there.
    for ((name, _), session) in servers.iter().zip(sessions.iter_mut()) {
        for (_, key) in &cases {
            let reply = session.exchange(&format!("get {key}\r\n"));
            if !reply.starts_with(b"VALUE ") {
                problems.push(format!(
                    "{name}: {key} missing right after it was stored: \"{}\"",
                    show(&reply)
                ));
            }
        }
    }
    // Then every key goes, within 6 s.
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut gone = vec![vec![false; cases.len()]; servers.len()];
    while Instant::now() < deadline && gone.iter().flatten().any(|g| !g) {
        for (s, session) in sessions.iter_mut().enumerate() {
            for (c, (_, key)) in cases.iter().enumerate() {
                if !gone[s][c] {
                    gone[s][c] = session.exchange(&format!("get {key}\r\n")) == b"END\r\n";
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for (s, (name, _)) in servers.iter().enumerate() {
        for (c, (_, key)) in cases.iter().enumerate() {
            if !gone[s][c] {
                problems.push(format!(
                    "{name}: {key} still there 6 s after it was given 2 s"
                ));
            }
        }
        let reply = sessions[s].exchange("get rel_keep\r\n");
        if reply != b"VALUE rel_keep 0 1\r\nk\r\nEND\r\n" {
            problems.push(format!(
                "{name}: rel_keep (exptime 100) should still be there: \"{}\"",
                show(&reply)
            ));
        }
    }
    verdict(
        "expiry_relative_by_polling",
        &problems,
        &format!("relative expiry:\n  {}", problems.join("\n  ")),
    );
}

/// `flush_all 2`: items stored before it are there right after and gone within a
/// deadline; items stored once the flush time is past stay.
#[test]
fn flush_all_delayed_by_polling() {
    let pair = Pair::start();
    let servers = pair.servers();
    let mut sessions: Vec<Session> = servers.iter().map(|(_, a)| Session::new(a)).collect();
    let mut problems = Vec::new();
    for ((name, _), session) in servers.iter().zip(sessions.iter_mut()) {
        let replies = [
            session.exchange("set old 0 0 1\r\no\r\n"),
            session.exchange("flush_all 2\r\n"),
            session.exchange("get old\r\n"),
        ];
        let expected: [&[u8]; 3] = [b"STORED\r\n", b"OK\r\n", b"VALUE old 0 1\r\no\r\nEND\r\n"];
        if replies.iter().zip(expected).any(|(got, want)| got != want) {
            problems.push(format!(
                "{name}: set old, flush_all 2, get old: {:?}",
                replies.iter().map(|r| show(r)).collect::<Vec<_>>()
            ));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut gone = vec![false; servers.len()];
    while Instant::now() < deadline && gone.iter().any(|g| !g) {
        for (s, session) in sessions.iter_mut().enumerate() {
            if !gone[s] {
                gone[s] = session.exchange("get old\r\n") == b"END\r\n";
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // memcached's clock has whole seconds: an item stored in the second the flush takes
    // effect goes too. A second and a half later, new items stay.
    std::thread::sleep(Duration::from_millis(1500));
    for ((name, _), (session, gone)) in servers.iter().zip(sessions.iter_mut().zip(gone)) {
        if !gone {
            problems.push(format!("{name}: old still there 6 s after flush_all 2"));
        }
        let replies = [
            session.exchange("set new 0 0 1\r\nn\r\n"),
            session.exchange("get new\r\n"),
        ];
        if replies[1] != b"VALUE new 0 1\r\nn\r\nEND\r\n" {
            problems.push(format!(
                "{name}: a key stored after the delayed flush should stay: {:?}",
                replies.iter().map(|r| show(r)).collect::<Vec<_>>()
            ));
        }
    }
    verdict(
        "flush_all_delayed_by_polling",
        &problems,
        &format!("delayed flush_all:\n  {}", problems.join("\n  ")),
    );
}
