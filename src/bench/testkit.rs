//! Canned servers and request readers for the clients' tests.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::wire::{self, Frame, WireLimits};

/// A canned server for one connection: for each step, reads `requests` requests with
/// `read_one`, then writes `reply` in one write. Returns what it read.
pub(super) fn canned_server<R: Send + 'static>(
    read_one: fn(&mut BufReader<TcpStream>) -> Option<R>,
    script: Vec<(usize, Vec<u8>)>,
) -> (String, JoinHandle<Vec<R>>) {
    let script = script
        .into_iter()
        .map(|(requests, reply)| (requests, Box::new(move |_: &[R]| reply) as Answer<R>))
        .collect();
    scripted_server(read_one, script)
}

/// What a [`scripted_server`] step answers, given the requests it just read.
pub(super) type Answer<R> = Box<dyn FnOnce(&[R]) -> Vec<u8> + Send>;

/// Like [`canned_server`], each reply made from the step's requests (binary replies
/// must repeat their request ids).
pub(super) fn scripted_server<R: Send + 'static>(
    read_one: fn(&mut BufReader<TcpStream>) -> Option<R>,
    script: Vec<(usize, Answer<R>)>,
) -> (String, JoinHandle<Vec<R>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        let mut seen = Vec::new();
        for (requests, answer) in script {
            let first = seen.len();
            for _ in 0..requests {
                seen.push(read_one(&mut reader).expect("a whole request"));
            }
            writer.write_all(&answer(&seen[first..])).unwrap();
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

/// Reads one memcached command (with its data, for `set` and `cas`) and returns its
/// command line.
pub(super) fn read_memcache_command(reader: &mut BufReader<TcpStream>) -> Option<String> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let line = line.trim_end().to_string();
    if line.starts_with("set ") || line.starts_with("cas ") {
        // `set|cas <key> <flags> <exptime> <bytes>[ <cas>]`
        let len: usize = line.split(' ').nth(4)?.parse().ok()?;
        let mut data = vec![0u8; len + 2];
        reader.read_exact(&mut data).ok()?;
    }
    Some(line)
}

pub(super) fn read_binary_frame(reader: &mut BufReader<TcpStream>) -> Option<Frame> {
    wire::read_frame(reader, &WireLimits::default()).ok()
}

/// What [`memcache_server`] holds: value and cas unique by key.
pub(super) type Store = HashMap<String, (Vec<u8>, u64)>;

/// A tiny in-order memcached for `run`: `version`, `set` (any exptime, ignored), `get` of
/// one key or many, `gets`, `cas`, `incr`; one thread per connection, serving
/// `connections` connections; returns what it holds once they are all closed. With
/// `stale`, a set of a key already present is acknowledged but not applied, so reads
/// return old values.
pub(super) fn memcache_server(connections: usize, stale: bool) -> (String, JoinHandle<Store>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let store = Arc::new(Mutex::new(Store::new()));
    let server = std::thread::spawn(move || {
        let mut threads = Vec::new();
        for _ in 0..connections {
            let (stream, _) = listener.accept().unwrap();
            let store = Arc::clone(&store);
            threads.push(std::thread::spawn(move || {
                serve_memcache(stream, &store, stale)
            }));
        }
        for thread in threads {
            thread.join().unwrap();
        }
        let store = store.lock().unwrap();
        store.clone()
    });
    (addr, server)
}

/// One connection of [`memcache_server`].
fn serve_memcache(stream: TcpStream, store: &Mutex<Store>, stale: bool) {
    let mut writer = BufWriter::new(stream.try_clone().unwrap());
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let mut next_cas = 1u64;
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let mut data = Vec::new();
        if let ["set" | "cas", _, _, _, len, ..] = words.as_slice() {
            data = vec![0u8; len.parse::<usize>().unwrap() + 2];
            reader.read_exact(&mut data).unwrap();
            data.truncate(data.len() - 2);
        }
        let mut store = store.lock().unwrap();
        // Unique across connections: the thread's counter, then the key's version.
        let mut bump = |old: Option<&(Vec<u8>, u64)>| {
            next_cas += 1;
            old.map_or(next_cas, |(_, cas)| cas + 1)
        };
        match words.as_slice() {
            ["version"] => writer.write_all(b"VERSION 1.0\r\n").unwrap(),
            ["set", key, _, _, _] => {
                if !(stale && store.contains_key(*key)) {
                    let cas = bump(store.get(*key));
                    store.insert(key.to_string(), (data, cas));
                }
                writer.write_all(b"STORED\r\n").unwrap();
            }
            ["cas", key, _, _, _, unique] => {
                let reply: &[u8] = match store.get(*key) {
                    None => b"NOT_FOUND\r\n",
                    Some((_, cas)) if cas.to_string() != *unique => b"EXISTS\r\n",
                    old => {
                        let cas = bump(old);
                        store.insert(key.to_string(), (data, cas));
                        b"STORED\r\n"
                    }
                };
                writer.write_all(reply).unwrap();
            }
            ["incr", key, delta] => match store.get(*key) {
                None => writer.write_all(b"NOT_FOUND\r\n").unwrap(),
                old => {
                    let value: u64 = String::from_utf8_lossy(&old.unwrap().0).parse().unwrap();
                    let value = value + delta.parse::<u64>().unwrap();
                    let cas = bump(old);
                    store.insert(key.to_string(), (value.to_string().into_bytes(), cas));
                    write!(writer, "{value}\r\n").unwrap();
                }
            },
            [verb @ ("get" | "gets"), keys @ ..] => {
                for key in keys {
                    if let Some((value, cas)) = store.get(*key) {
                        write!(writer, "VALUE {key} 0 {}", value.len()).unwrap();
                        if *verb == "gets" {
                            write!(writer, " {cas}").unwrap();
                        }
                        writer.write_all(b"\r\n").unwrap();
                        writer.write_all(value).unwrap();
                        writer.write_all(b"\r\n").unwrap();
                    }
                }
                writer.write_all(b"END\r\n").unwrap();
            }
            other => panic!("unexpected command {other:?}"),
        }
        // Like the real servers: one write per batch of whole requests.
        if reader.buffer().is_empty() {
            writer.flush().unwrap();
        }
    }
}
