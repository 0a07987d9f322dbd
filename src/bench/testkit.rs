//! Canned servers and request readers for the clients' tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::thread::JoinHandle;

use crate::wire::{self, Frame, WireLimits};

/// A canned server for one connection: for each step, reads `requests` requests with
/// `read_one`, then writes `reply` in one write. Returns what it read.
pub(super) fn canned_server<R: Send + 'static>(
    read_one: fn(&mut BufReader<TcpStream>) -> Option<R>,
    script: Vec<(usize, Vec<u8>)>,
) -> (String, JoinHandle<Vec<R>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        let mut seen = Vec::new();
        for (requests, reply) in script {
            for _ in 0..requests {
                seen.push(read_one(&mut reader).expect("a whole request"));
            }
            writer.write_all(&reply).unwrap();
        }
        seen
    });
    (addr, server)
}

/// Reads one RESP command (an array of bulk strings) and returns its parts joined by
/// spaces.
pub(super) fn read_resp_command(reader: &mut BufReader<TcpStream>) -> Option<String> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let count: usize = line.trim_end().strip_prefix('*')?.parse().ok()?;
    let mut parts = Vec::new();
    for _ in 0..count {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let len: usize = line.trim_end().strip_prefix('$')?.parse().ok()?;
        let mut part = vec![0u8; len + 2];
        reader.read_exact(&mut part).ok()?;
        part.truncate(len);
        parts.push(String::from_utf8(part).ok()?);
    }
    Some(parts.join(" "))
}

/// Reads one memcached `get` or `set` (with its data) and returns its command line.
pub(super) fn read_memcache_command(reader: &mut BufReader<TcpStream>) -> Option<String> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let line = line.trim_end().to_string();
    if line.starts_with("set ") {
        let len: usize = line.rsplit(' ').next()?.parse().ok()?;
        let mut data = vec![0u8; len + 2];
        reader.read_exact(&mut data).ok()?;
    }
    Some(line)
}

pub(super) fn read_binary_frame(reader: &mut BufReader<TcpStream>) -> Option<Frame> {
    wire::read_frame(reader, &WireLimits::default()).ok()
}
