//! Differential test: classic memcached text-protocol scripts are played against a real
//! memcached and against a Piazza cluster (coordinator + 3 slaves), and the replies must
//! be byte for byte the same.
//!
//! The scripts are here, one `#[test]` per group; the harness that plays them (servers,
//! sessions, placeholders, normalisation, the environment variables) is `tests/compat/`,
//! and two tests that poll for expiry rather than compare step by step are in
//! `tests/compat/polling.rs`.
//!
//! Left out, because Piazza differs from memcached 1.6 on purpose (README, "memcached"):
//! a storage line refused for a bad key, bad number or wrong token count whose `<bytes>`
//! parses has its data block swallowed (memcached reads it as commands: a client's data
//! must never run as a command); keys with control characters are refused (the contract);
//! `touch`, `gat` and `gats` give the item a new cas unique (memcached keeps it). Those
//! behaviours are tested in `tests/memcached_text.rs`.
//!
//! memcached must be installed (`apt-get install memcached`); `.ci/run` does that.

mod common;
mod compat;
#[path = "compat/polling.rs"]
mod polling;

use compat::run_group;

#[test]
fn storage_commands() {
    run_group(
        "store",
        &[
            (
                "set, then get it back with its flags",
                &[
                    "set {p}a 0 0 5\r\nhello\r\n",
                    "get {p}a\r\n",
                    "set {p}a 4294967295 0 3\r\nbye\r\n",
                    "get {p}a\r\n",
                    "set {p}b 1 0 0\r\n\r\n",
                    "get {p}b\r\n",
                ],
            ),
            (
                "values with \\r\\n and NUL inside",
                &["set {p}a 7 0 8\r\nx\r\ny\0\r\nz\r\n", "get {p}a\r\n"],
            ),
            (
                "add: stored when missing, not stored when present",
                &[
                    "add {p}a 0 0 1\r\n1\r\n",
                    "add {p}a 0 0 1\r\n2\r\n",
                    "get {p}a\r\n",
                    "delete {p}a\r\n",
                    "add {p}a 3 0 1\r\n3\r\n",
                    "get {p}a\r\n",
                ],
            ),
            (
                "replace: not stored when missing, stored when present",
                &[
                    "replace {p}a 0 0 1\r\n1\r\n",
                    "get {p}a\r\n",
                    "set {p}a 0 0 1\r\n1\r\n",
                    "replace {p}a 9 0 2\r\n22\r\n",
                    "get {p}a\r\n",
                ],
            ),
            (
                "append and prepend keep the flags; missing keys are not stored",
                &[
                    "append {p}a 0 0 1\r\nx\r\n",
                    "prepend {p}a 0 0 1\r\nx\r\n",
                    "get {p}a\r\n",
                    "set {p}a 5 0 3\r\nmid\r\n",
                    "append {p}a 9 0 4\r\n_end\r\n",
                    "prepend {p}a 9 0 6\r\nstart_\r\n",
                    "get {p}a\r\n",
                    "append {p}a 0 0 0\r\n\r\n",
                    "get {p}a\r\n",
                ],
            ),
            (
                "exptime 0 and a large relative exptime keep the item",
                &[
                    "set {p}a 0 0 1\r\na\r\n",
                    "set {p}b 0 2592000 1\r\nb\r\n",
                    "set {p}c 0 {future} 1\r\nc\r\n",
                    "get {p}a {p}b {p}c\r\n",
                ],
            ),
            (
                "extra and trailing spaces in storage commands",
                &[
                    "set  {p}a  3  0  1 \r\na\r\n",
                    "get {p}a\r\n",
                    "append {p}a 0 0 1  noreply \r\nb\r\n",
                    "get {p}a \r\n",
                ],
            ),
            (
                "a 100 KiB value",
                &[
                    "set {p}big 0 0 102400\r\n{rep:102400:v}\r\n",
                    "get {p}big\r\n",
                ],
            ),
        ],
    );
}

#[test]
fn cas_outcomes() {
    run_group(
        "cas",
        &[
            (
                "cas with the right unique stores, with a wrong one says EXISTS",
                &[
                    "set {p}a 0 0 1\r\n1\r\n",
                    "gets {p}a\r\n",
                    "cas {p}a 0 0 1 {cas+1:{p}a}\r\n2\r\n",
                    "get {p}a\r\n",
                    "cas {p}a 7 0 1 {cas:{p}a}\r\n3\r\n",
                    "gets {p}a\r\n",
                    "cas {p}a 0 0 1 {cas:{p}a}\r\n4\r\n",
                    "gets {p}a\r\n",
                ],
            ),
            (
                "cas on a missing key and on a deleted key says NOT_FOUND",
                &[
                    "cas {p}missing 0 0 1 12345\r\nx\r\n",
                    "set {p}a 0 0 1\r\n1\r\n",
                    "gets {p}a\r\n",
                    "delete {p}a\r\n",
                    "cas {p}a 0 0 1 {cas:{p}a}\r\nx\r\n",
                    "get {p}a\r\n",
                ],
            ),
            (
                "a unique stays while the item is untouched and changes on every write",
                &[
                    "set {p}a 0 0 1\r\n1\r\n",
                    "gets {p}a\r\n",
                    "gets {p}a\r\n",
                    "append {p}a 0 0 1\r\n2\r\n",
                    "gets {p}a\r\n",
                    "set {p}a 0 0 1\r\n5\r\n",
                    "gets {p}a\r\n",
                    "incr {p}a 1\r\n",
                    "gets {p}a\r\n",
                ],
            ),
            (
                "two keys have different uniques",
                &[
                    "set {p}a 0 0 1\r\n1\r\n",
                    "set {p}b 0 0 1\r\n1\r\n",
                    "gets {p}a {p}b {p}a\r\n",
                ],
            ),
            (
                "cas with a bad data chunk and a bad unique",
                &[
                    "set {p}a 0 0 1\r\n1\r\n",
                    "gets {p}a\r\n",
                    "cas {p}a 0 0 1 {cas:{p}a}\r\nxyz\r\n",
                    "get {p}a\r\n",
                ],
            ),
        ],
    );
}

#[test]
fn retrieval() {
    run_group(
        "get",
        &[
            (
                "get and gets of many keys, misses and repeats included",
                &[
                    "set {p}1 1 0 1\r\na\r\n",
                    "set {p}2 2 0 2\r\nbb\r\n",
                    "set {p}3 3 0 3\r\nccc\r\n",
                    "get {p}1 {p}miss {p}2 {p}3 {p}1 {p}none\r\n",
                    "gets {p}3 {p}miss {p}2\r\n",
                    "get {p}miss\r\n",
                    "gets {p}miss {p}none\r\n",
                ],
            ),
            (
                "get of 100 keys",
                &[
                    "set {p}k10 0 0 2\r\n10\r\n",
                    "set {p}k55 0 0 2\r\n55\r\n",
                    "get {p}k0 {p}k1 {p}k2 {p}k3 {p}k4 {p}k5 {p}k6 {p}k7 {p}k8 {p}k9 {p}k10 {p}k11 {p}k12 {p}k13 {p}k14 {p}k15 {p}k16 {p}k17 {p}k18 {p}k19 {p}k20 {p}k21 {p}k22 {p}k23 {p}k24 {p}k25 {p}k26 {p}k27 {p}k28 {p}k29 {p}k30 {p}k31 {p}k32 {p}k33 {p}k34 {p}k35 {p}k36 {p}k37 {p}k38 {p}k39 {p}k40 {p}k41 {p}k42 {p}k43 {p}k44 {p}k45 {p}k46 {p}k47 {p}k48 {p}k49 {p}k50 {p}k51 {p}k52 {p}k53 {p}k54 {p}k55 {p}k56 {p}k57 {p}k58 {p}k59 {p}k60 {p}k61 {p}k62 {p}k63 {p}k64 {p}k65 {p}k66 {p}k67 {p}k68 {p}k69 {p}k70 {p}k71 {p}k72 {p}k73 {p}k74 {p}k75 {p}k76 {p}k77 {p}k78 {p}k79 {p}k80 {p}k81 {p}k82 {p}k83 {p}k84 {p}k85 {p}k86 {p}k87 {p}k88 {p}k89 {p}k90 {p}k91 {p}k92 {p}k93 {p}k94 {p}k95 {p}k96 {p}k97 {p}k98 {p}k99\r\n",
                ],
            ),
            (
                "get without keys, and extra spaces between keys",
                &[
                    "get\r\n",
                    "gets\r\n",
                    "set {p}a 0 0 1\r\na\r\n",
                    "get  {p}a   {p}a \r\n",
                ],
            ),
            (
                "a 250-byte key works, a 251-byte key does not",
                &[
                    "set {rep:250:k} 0 0 1\r\nx\r\n",
                    "get {rep:250:k}\r\n",
                    "get {rep:251:k}\r\n",
                    "get {p}a {rep:251:k}\r\n",
                ],
            ),
            (
                "lines ending in a bare \\n",
                &["set {p}a 0 0 1\nx\r\n", "get {p}a\n", "gets {p}a {p}b\n"],
            ),
        ],
    );
}

#[test]
fn touch_and_gat() {
    run_group(
        "touch",
        &[
            (
                "touch a hit and a miss",
                &[
                    "set {p}a 0 0 1\r\na\r\n",
                    "touch {p}a 1000\r\n",
                    "touch {p}miss 1000\r\n",
                    "get {p}a\r\n",
                    "touch {p}a 0\r\n",
                    "get {p}a\r\n",
                ],
            ),
            (
                "gat and gats over hits and misses",
                &[
                    "set {p}a 1 0 1\r\na\r\n",
                    "set {p}b 2 0 2\r\nbb\r\n",
                    "gat 1000 {p}a {p}miss {p}b\r\n",
                    "gats 1000 {p}b {p}a {p}miss\r\n",
                    "gets {p}a {p}b\r\n",
                    "gat 0 {p}miss\r\n",
                ],
            ),
            (
                "touch and gat that expire the item at once",
                &[
                    "set {p}a 0 0 1\r\na\r\n",
                    "set {p}b 0 0 1\r\nb\r\n",
                    "touch {p}a -1\r\n",
                    "get {p}a\r\n",
                    "gat -1 {p}b\r\n",
                    "get {p}b\r\n",
                    "set {p}c 0 0 1\r\nc\r\n",
                    "touch {p}c {past}\r\n",
                    "get {p}c\r\n",
                ],
            ),
            (
                "bad touch and gat lines",
                &[
                    "touch {p}a\r\n",
                    "touch {p}a abc\r\n",
                    "gat\r\n",
                    "gat 10\r\n",
                    "gat abc {p}a\r\n",
                    "gats\r\n",
                    "touch {rep:251:k} 10\r\n",
                ],
            ),
        ],
    );
}

#[test]
fn incr_decr() {
    run_group(
        "arith",
        &[
            (
                "incr and decr on a number, on a miss",
                &[
                    "set {p}n 5 0 2\r\n10\r\n",
                    "incr {p}n 1\r\n",
                    "incr {p}n 89\r\n",
                    "decr {p}n 50\r\n",
                    "get {p}n\r\n",
                    "incr {p}miss 1\r\n",
                    "decr {p}miss 1\r\n",
                    "get {p}miss\r\n",
                ],
            ),
            (
                "incr wraps at 2^64",
                &[
                    "set {p}n 0 0 20\r\n18446744073709551615\r\n",
                    "incr {p}n 1\r\n",
                    "get {p}n\r\n",
                    "set {p}m 0 0 20\r\n18446744073709551610\r\n",
                    "incr {p}m 10\r\n",
                    "incr {p}m 18446744073709551615\r\n",
                ],
            ),
            (
                "decr stops at 0",
                &[
                    "set {p}n 0 0 1\r\n5\r\n",
                    "decr {p}n 6\r\n",
                    "decr {p}n 1\r\n",
                    "get {p}n\r\n",
                    "set {p}m 0 0 2\r\n10\r\n",
                    "decr {p}m 18446744073709551615\r\n",
                ],
            ),
            (
                "a shorter result is padded with spaces in place",
                &[
                    "set {p}n 0 0 3\r\n100\r\n",
                    "decr {p}n 1\r\n",
                    "get {p}n\r\n",
                    "decr {p}n 95\r\n",
                    "get {p}n\r\n",
                    "set {p}z 0 0 3\r\n007\r\n",
                    "incr {p}z 1\r\n",
                    "get {p}z\r\n",
                    "incr {p}n 1000\r\n",
                    "get {p}n\r\n",
                ],
            ),
            (
                "non-numeric values",
                &[
                    "set {p}t 0 0 3\r\nabc\r\n",
                    "incr {p}t 1\r\n",
                    "decr {p}t 1\r\n",
                    "set {p}e 0 0 0\r\n\r\n",
                    "incr {p}e 1\r\n",
                    "set {p}neg 0 0 2\r\n-5\r\n",
                    "incr {p}neg 1\r\n",
                    "set {p}huge 0 0 21\r\n184467440737095516160\r\n",
                    "incr {p}huge 1\r\n",
                    "set {p}sp 0 0 3\r\n 12\r\n",
                    "incr {p}sp 1\r\n",
                    "set {p}tail 0 0 3\r\n12x\r\n",
                    "incr {p}tail 1\r\n",
                    "get {p}t\r\n",
                ],
            ),
            (
                "invalid deltas",
                &[
                    "set {p}n 0 0 1\r\n1\r\n",
                    "incr {p}n abc\r\n",
                    "incr {p}n -1\r\n",
                    "decr {p}n 18446744073709551616\r\n",
                    "incr {p}n 1.5\r\n",
                    "incr {p}n\r\n",
                    "incr {p}n 1 2\r\n",
                    "incr {p}miss abc\r\n",
                    "get {p}n\r\n",
                ],
            ),
        ],
    );
}

#[test]
fn delete() {
    run_group(
        "delete",
        &[(
            "delete a hit, a miss, with a 0 time, with a time",
            &[
                "set {p}a 0 0 1\r\na\r\n",
                "delete {p}a\r\n",
                "delete {p}a\r\n",
                "get {p}a\r\n",
                "set {p}b 0 0 1\r\nb\r\n",
                "delete {p}b 0\r\n",
                "set {p}c 0 0 1\r\nc\r\n",
                "delete {p}c 10\r\n",
                "delete {p}c 0 noreply\r\n",
                "get {p}b {p}c\r\n",
                "delete\r\n",
                "delete {rep:251:k}\r\n",
            ],
        )],
    );
}

#[test]
fn flush_all() {
    run_group(
        "flush",
        &[(
            "flush_all, flush_all 0, flush_all noreply, bad arguments",
            &[
                "set {p}a 0 0 1\r\na\r\n",
                "set {p}b 0 0 1\r\nb\r\n",
                "flush_all\r\n",
                "get {p}a {p}b\r\n",
                "set {p}a 0 0 1\r\na\r\n",
                "flush_all 0\r\n",
                "get {p}a\r\n",
                "set {p}a 0 0 1\r\na\r\n",
                "flush_all noreply\r\n",
                "get {p}a\r\n",
                "set {p}a 0 0 1\r\na\r\n",
                "flush_all 0 noreply\r\n",
                "get {p}a\r\n",
                "flush_all abc\r\n",
                "flush_all 0 0\r\n",
                "set {p}c 0 0 1\r\nc\r\n",
                "get {p}c\r\n",
            ],
        )],
    );
}

#[test]
fn noreply_everywhere() {
    run_group(
        "noreply",
        &[
            (
                "successful storage commands are silent",
                &[
                    "set {p}a 0 0 1 noreply\r\na\r\n",
                    "add {p}b 0 0 1 noreply\r\nb\r\n",
                    "replace {p}a 1 0 1 noreply\r\nA\r\n",
                    "append {p}a 0 0 1 noreply\r\n+\r\n",
                    "prepend {p}a 0 0 1 noreply\r\n-\r\n",
                    "gets {p}a {p}b\r\n",
                    "cas {p}a 0 0 1 {cas:{p}a} noreply\r\nc\r\n",
                    "get {p}a\r\n",
                ],
            ),
            (
                "failed storage commands are silent too",
                &[
                    "set {p}a 0 0 1\r\na\r\n",
                    "add {p}a 0 0 1 noreply\r\nx\r\n",
                    "replace {p}miss 0 0 1 noreply\r\nx\r\n",
                    "append {p}miss 0 0 1 noreply\r\nx\r\n",
                    "prepend {p}miss 0 0 1 noreply\r\nx\r\n",
                    "gets {p}a\r\n",
                    "cas {p}a 0 0 1 {cas+1:{p}a} noreply\r\nx\r\n",
                    "cas {p}miss 0 0 1 1 noreply\r\nx\r\n",
                    "get {p}a {p}miss\r\n",
                ],
            ),
            (
                "delete, incr, decr, touch with noreply",
                &[
                    "set {p}n 0 0 1\r\n5\r\n",
                    "incr {p}n 3 noreply\r\n",
                    "decr {p}n 1 noreply\r\n",
                    "incr {p}miss 1 noreply\r\n",
                    "decr {p}miss 1 noreply\r\n",
                    "get {p}n\r\n",
                    "touch {p}n 100 noreply\r\n",
                    "touch {p}miss 100 noreply\r\n",
                    "delete {p}n noreply\r\n",
                    "delete {p}n noreply\r\n",
                    "get {p}n\r\n",
                ],
            ),
            (
                "errors with noreply",
                &[
                    "set {p}t 0 0 1\r\nt\r\n",
                    "incr {p}t 1 noreply\r\n",
                    "incr {p}t abc noreply\r\n",
                    "set {p}a 0 0 1 noreply\r\nabc\r\n",
                    "set {p}a 0 0 -1 noreply\r\n",
                    "set {p}big 0 0 2097153 noreply\r\n{rep:2097153:b}\r\n",
                    "get {p}a {p}big\r\n",
                ],
            ),
            (
                "noreply in the wrong place or spelt wrong",
                &[
                    "set {p}a 0 0 1 norepl\r\na\r\n",
                    "get {p}a\r\n",
                    "get {p}b noreply\r\n",
                    "delete {p}a noreply extra\r\n",
                ],
            ),
        ],
    );
}

#[test]
fn bad_lines() {
    run_group(
        "bad",
        &[
            (
                "bad data chunks",
                &[
                    "set {p}a 0 0 1\r\nabc\r\n",
                    "get {p}a\r\n",
                    "set {p}b 0 0 3\r\nabcde\r\n",
                    "set {p}c 0 0 3\r\nab\r\n\r\n",
                    "get {p}b {p}c\r\n",
                ],
            ),
            (
                "too-large values are refused and their data swallowed",
                &[
                    "set {p}big 0 0 2097153\r\n{rep:2097153:b}\r\n",
                    "get {p}big\r\n",
                    "set {p}big 0 0 1\r\nx\r\n",
                    "append {p}big 0 0 2097153\r\n{rep:2097153:b}\r\n",
                    "get {p}big\r\n",
                ],
            ),
            (
                "251-byte keys",
                &["incr {rep:251:k} 1\r\n", "gets {rep:251:k}\r\n"],
            ),
            (
                "control characters in keys and lines",
                &["\x00\x01\x02\r\n"],
            ),
            (
                "wrong token counts",
                &[
                    "set {p}a 0 0\r\n",
                    "set {p}a\r\n",
                    "set\r\n",
                    "add {p}a 0 0\r\n",
                    "incr\r\n",
                    "decr {p}a\r\n",
                    "touch\r\n",
                    "delete {p}a 0 noreply extra\r\n",
                    "version extra\r\n",
                ],
            ),
            (
                "bad numbers in storage commands",
                &[
                    "set {p}a 0 0 -1\r\n",
                    "set {p}a 0 0 abc\r\n",
                    "set {p}a 0 0 1x\r\nx\r\n",
                    "get {p}a\r\n",
                ],
            ),
            (
                "unknown commands, empty lines, case",
                &[
                    "foo\r\n",
                    "\r\n",
                    "GET {p}a\r\n",
                    "Set {p}a 0 0 1\r\n",
                    " get {p}a\r\n",
                    "get {p}a\r\n",
                ],
            ),
        ],
    );
}

#[test]
fn pipelining() {
    run_group(
        "pipe",
        &[
            (
                "many commands in one write",
                &[
                    "set {p}a 0 0 1\r\na\r\nset {p}b 0 0 1\r\nb\r\nget {p}a {p}b\r\ndelete {p}a\r\nget {p}a\r\nincr {p}b 1\r\nadd {p}b 0 0 1\r\nc\r\n",
                    "set {p}n 0 0 1 noreply\r\n1\r\nincr {p}n 1 noreply\r\nincr {p}n 1\r\nbogus\r\nget {p}n\r\n",
                    "gets {p}a\r\nset {p}c 0 0 1\r\nc\r\ngets {p}c\r\ntouch {p}c 10\r\ngat 20 {p}c\r\n",
                ],
            ),
            (
                "commands sent a few bytes at a time",
                &[
                    "~set {p}a 3 0 10\r\n0123456789\r\nget {p}a\r\n",
                    "~gets {p}a {p}miss\r\nappend {p}a 0 0 2\r\n\r\n\r\nget {p}a\r\n",
                    "~incr {p}miss 1\r\nset {p}n 0 0 1\r\n9\r\nincr {p}n 1\r\n",
                ],
            ),
            (
                "errors in the middle of a pipeline",
                &[
                    "set {p}a 0 0 1\r\nabc\r\nget {p}a\r\nset {p}b 0 0 1\r\nb\r\nget {p}b\r\n",
                    "get {rep:251:k}\r\nget {p}b\r\nfoo\r\nget {p}b\r\n",
                ],
            ),
        ],
    );
}

#[test]
fn data_that_looks_like_commands() {
    // Data blocks here never contain `{p}`: their lengths are counted by hand. `victim` is
    // a key of this group only (each group has its own servers).
    run_group(
        "data",
        &[
            (
                "a data block holding commands is data",
                &[
                    "set victim 0 0 1\r\nv\r\n",
                    "set {p}k 0 0 15\r\ndelete victim\r\n\r\n",
                    "set {p}g 0 0 12\r\nget victim\r\n\r\n",
                    "set {p}f 0 0 11\r\nflush_all\r\n\r\n",
                    "set {p}q 0 0 6\r\nquit\r\n\r\n",
                    "set {p}v 0 0 18\r\nVALUE x 0 1\r\nEND\r\n\r\n",
                    "get {p}k {p}g {p}f {p}q {p}v victim\r\n",
                ],
            ),
            (
                "a data block holding a whole set with its data",
                &[
                    "set victim 0 0 1\r\nv\r\n",
                    "set {p}k 0 0 21\r\nset victim 0 0 1\r\nx\r\n\r\n",
                    "get {p}k victim\r\n",
                ],
            ),
            (
                "a data block one byte short of its command line (the classic mistake)",
                &[
                    "set victim 0 0 1\r\nv\r\n",
                    "set {p}k 0 0 14\r\ndelete victim\r\n\r\n",
                    "get {p}k victim\r\n",
                    "set {p}m 0 0 16\r\nVALUE x 0 1\r\nEND\r\n\r\n",
                    "get {p}m\r\n",
                ],
            ),
        ],
    );
}

#[test]
fn expiry_negative_and_absolute() {
    run_group(
        "expiry",
        &[
            (
                "a negative exptime stores an already expired item",
                &[
                    "set {p}a 0 -1 1\r\na\r\n",
                    "get {p}a\r\n",
                    "add {p}a 0 0 1\r\nb\r\n",
                    "get {p}a\r\n",
                    "set {p}c 0 0 1\r\nc\r\n",
                    "set {p}c 0 -1 1\r\nd\r\n",
                    "get {p}c\r\n",
                ],
            ),
            (
                "a Unix time in the past expires at once, one in the future does not",
                &[
                    "set {p}a 0 {past} 1\r\na\r\n",
                    "set {p}b 0 {future} 1\r\nb\r\n",
                    "get {p}a {p}b\r\n",
                    "replace {p}a 0 0 1\r\nx\r\n",
                    "set {p}c 0 2592001 1\r\nc\r\n",
                    "get {p}c\r\n",
                ],
            ),
            (
                "expired items cannot be appended to, incremented or touched",
                &[
                    "set {p}a 0 -1 1\r\n1\r\n",
                    "append {p}a 0 0 1\r\n2\r\n",
                    "incr {p}a 1\r\n",
                    "touch {p}a 100\r\n",
                    "gets {p}a\r\n",
                    "cas {p}a 0 0 1 1\r\nx\r\n",
                ],
            ),
        ],
    );
}

#[test]
fn misc_commands() {
    run_group(
        "misc",
        &[
            (
                "version and verbosity",
                &[
                    "version\r\n",
                    "verbosity 1\r\n",
                    "verbosity 0 noreply\r\n",
                    "verbosity\r\n",
                    "cache_memlimit 50\r\n",
                    "cache_memlimit 1\r\n",
                    "cache_memlimit 64 noreply\r\n",
                    "cache_memlimit x\r\n",
                    "cache_memlimit\r\n",
                ],
            ),
            (
                "quit closes the connection, even mid-pipeline",
                &[
                    "set {p}a 0 0 1\r\na\r\n",
                    "get {p}a\r\nquit\r\nget {p}a\r\n",
                    "get {p}a\r\n",
                ],
            ),
        ],
    );
}
