//! The cluster secret, client authentication, and protected mode.

mod common;

use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Cluster, TempDir, bin, wait_until};
use piazza::Client;
use piazza::client::ClientError;
use piazza::wire::{Heartbeat, HeartbeatKind, Status, TableSel};

fn secret_file(dir: &TempDir, name: &str, secret: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, secret).unwrap();
    path.display().to_string()
}

fn assert_unauthorized(err: &ClientError) {
    assert!(
        matches!(
            err,
            ClientError::Server {
                status: Status::Unauthorized,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn slaves_need_the_secret_and_forged_heartbeats_keep_no_one_alive() {
    let dir = TempDir::new("secret");
    let good = secret_file(&dir, "good", "correct horse battery staple\n");
    let bad = secret_file(&dir, "bad", "wrong");
    let mut cluster = Cluster::start_secure(
        2,
        &["--secret-file", &good],
        &["--secret-file", &good],
        b"correct horse battery staple",
    );
    let mut client = cluster.client();
    client.put(b"k", b"v").unwrap();
    assert_eq!(client.get(b"k").unwrap().unwrap().value, b"v");

    // Without a secret, or with a wrong one, a slave cannot register.
    for flags in [vec![], vec!["--secret-file".to_string(), bad.clone()]] {
        let err = common::exits_with_2(
            Command::new(bin("slave"))
                .args(["--listen", "127.0.0.1:0", "--coordinator", &cluster.addr])
                .args(["--register-timeout-ms", "500", "--data-dir"])
                .arg(dir.path().join(format!("intruder-{}", flags.len())))
                .args(&flags),
        );
        assert!(
            err.contains("secret") || err.contains("unauthorized"),
            "{err}"
        );
    }
    assert_eq!(cluster.status().slaves.len(), 2);

    // A slave's port refuses requests without the secret, and serves them with it.
    let slave = cluster.slaves[0].addr.clone();
    let err = Client::connect(&slave)
        .unwrap()
        .slave_get(TableSel::Own, b"k")
        .unwrap_err();
    assert_unauthorized(&err);
    let mut authed = Client::connect(&slave).unwrap();
    authed.auth(b"correct horse battery staple").unwrap();
    authed.slave_stats().unwrap();

    // Kill a slave and forge its heartbeats: it is declared dead all the same.
    let hb = cluster.heartbeat_addr();
    let victim = cluster.slaves[1].addr.clone();
    let victim_id = cluster
        .status()
        .slaves
        .iter()
        .find(|s| s.addr == victim)
        .unwrap()
        .id;
    cluster.slaves[1].proc.kill();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let started = Instant::now();
    wait_until(
        common::DEADLINE,
        "the killed slave declared dead despite forgeries",
        || {
            for session in [0, 1, u64::MAX, started.elapsed().as_nanos() as u64] {
                let forged = Heartbeat {
                    kind: HeartbeatKind::Alive,
                    id: victim_id,
                    session,
                };
                socket.send_to(&forged.encode(), &hb).unwrap();
            }
            cluster
                .client()
                .status()
                .map(|s| {
                    s.slaves
                        .iter()
                        .any(|s| s.addr == victim && s.state == "dead")
                })
                .unwrap_or(false)
        },
    );
    assert_eq!(cluster.client().get(b"k").unwrap().unwrap().value, b"v");
}

#[test]
fn require_auth_makes_clients_present_the_secret_in_both_protocols() {
    let dir = TempDir::new("reqauth");
    let good = secret_file(&dir, "good", "s3cret");
    let cluster = Cluster::start_secure(
        1,
        &["--secret-file", &good, "--require-auth"],
        &["--secret-file", &good],
        b"s3cret",
    );
    // Binary, without: refused and closed.
    let err = Client::connect(&cluster.addr)
        .unwrap()
        .get(b"x")
        .unwrap_err();
    assert_unauthorized(&err);
    // Binary, with.
    let mut client = cluster.client_with(b"s3cret");
    client.put(b"x", b"1").unwrap();
    // piazza-client with --secret-file.
    let run = common::run_client(
        &[],
        &[
            "--coordinator",
            &cluster.addr,
            "--secret-file",
            &good,
            "get",
            "x",
        ],
        "",
    );
    assert_eq!((run.code, run.stdout.as_str()), (Some(0), "1\n"), "{run:?}");
    // Text: auth first, then commands; without it, an error and a closed connection.
    use std::io::{BufRead, BufReader, Read, Write};
    let mut stream = std::net::TcpStream::connect(&cluster.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(b"get x\r\n").unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(
        reply.starts_with("CLIENT_ERROR authentication required"),
        "{reply}"
    );
    let stream = std::net::TcpStream::connect(&cluster.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    (&stream).write_all(b"auth s3cret\r\nget x\r\n").unwrap();
    let mut lines = Vec::new();
    for _ in 0..4 {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        lines.push(line);
    }
    assert_eq!(lines, ["OK\r\n", "VALUE x 0 1\r\n", "1\r\n", "END\r\n"]);
}

#[test]
fn protected_mode_refuses_an_open_address_without_a_secret() {
    let dir = TempDir::new("protected");
    let err = common::exits_with_2(
        Command::new(bin("coordinator"))
            .args([
                "--listen",
                "0.0.0.0:0",
                "--heartbeat",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir.path().join("c")),
    );
    assert!(
        err.contains("without a cluster secret") && err.contains("--insecure"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let err = common::exits_with_2(
        Command::new(bin("slave"))
            .args(["--listen", "0.0.0.0:0", "--data-dir"])
            .arg(dir.path().join("s")),
    );
    assert!(err.contains("without a cluster secret"));
}

#[test]
fn direct_routing_presents_the_secret_to_slaves() {
    let dir = TempDir::new("secret-direct");
    let good = secret_file(&dir, "good", "s3cret");
    let cluster = Cluster::start_secure(
        3,
        &["--secret-file", &good, "--require-auth"],
        &["--secret-file", &good],
        b"s3cret",
    );
    // Slaves serve direct requests once the coordinator has sent them the view (each of
    // them: a probe per slave).
    let mut direct = common::direct_client(&cluster);
    common::wait_direct_ready(&mut direct);
    let fallbacks = direct.stats().via_coordinator;
    for i in 0..50 {
        let key = format!("secret-direct:{i}");
        direct.put(key.as_bytes(), b"value").unwrap();
        assert_eq!(direct.get(key.as_bytes()).unwrap().unwrap().value, b"value");
    }
    assert_eq!(
        direct.stats().via_coordinator,
        fallbacks,
        "{:?}",
        direct.stats()
    );
    // Without the secret the coordinator refuses the view, and nothing is served.
    let mut stranger = piazza::direct::DirectClient::connect(&cluster.addr).unwrap();
    assert!(stranger.refresh().is_err());
    assert!(stranger.get(b"secret-direct:1").is_err());
}
