//! `piazza-client`'s command line: the subcommands `put`, `get`, `del`, `status`, the
//! memcached-style `gets add replace append prepend cas incr decr touch flush`, and the
//! interactive prompt that reads the same commands line by line from stdin.
//!
//! Exit codes (the contract): 0 success; 1 key not found (`get`, `del`), and likewise
//! when a conditional command did not store (`add` of a present key, `replace`/`append`/
//! `prepend`/`incr`/`decr`/`touch` of a missing one, `cas` with a stale unique); 2 any
//! error, with the reason on stderr. `get` prints the value alone on stdout, then a
//! newline.

use std::io::{self, BufRead, IsTerminal, Write};
use std::process::ExitCode;

use argh::FromArgs;

use crate::client::{Client, ClientError, ClusterStatus, Written};
use crate::config::DEFAULT_COORDINATOR;
use crate::update::Op;

/// piazza-client: store, read and delete keys in a Piazza cluster. With no subcommand,
/// reads commands (put KEY VALUE, get KEY, del KEY, status, help, quit) from stdin.
#[derive(FromArgs, Debug)]
pub struct ClientArgs {
    /// the coordinator's TCP address (default 127.0.0.1:7400)
    #[argh(option, default = "DEFAULT_COORDINATOR.into()")]
    pub coordinator: String,
    /// file with the cluster secret, for a coordinator started with --require-auth
    /// (default: the PIAZZA_SECRET environment variable, if set)
    #[argh(option)]
    pub secret_file: Option<std::path::PathBuf>,
    /// what to do (none: interactive prompt)
    #[argh(subcommand)]
    pub command: Option<ClientCommand>,
}

/// One client command.
#[derive(FromArgs, Debug, Clone, PartialEq, Eq)]
#[argh(subcommand)]
pub enum ClientCommand {
    /// Store a value.
    Put(PutArgs),
    /// Read a value.
    Get(GetArgs),
    /// Delete a key.
    Del(DelArgs),
    /// Show the ring.
    Status(StatusArgs),
    /// Read a value and its cas unique.
    Gets(GetsArgs),
    /// Store only if absent.
    Add(AddArgs),
    /// Store only if present.
    Replace(ReplaceArgs),
    /// Add to the end of a value.
    Append(AppendArgs),
    /// Add to the front of a value.
    Prepend(PrependArgs),
    /// Store only if the cas unique still matches.
    Cas(CasArgs),
    /// Add to a number.
    Incr(IncrArgs),
    /// Subtract from a number.
    Decr(DecrArgs),
    /// Set a new expiry.
    Touch(TouchArgs),
    /// Forget every key.
    Flush(FlushArgs),
}

/// print the value of KEY, then its cas unique on a second line (exit 1 if not there)
#[derive(FromArgs, Debug, Clone, PartialEq, Eq)]
#[argh(subcommand, name = "gets")]
pub struct GetsArgs {
    /// the key
    #[argh(positional)]
    pub key: String,
}

macro_rules! store_args {
    ($name:ident, $verb:literal, $doc:literal) => {
        #[doc = $doc]
        #[derive(FromArgs, Debug, Clone, PartialEq, Eq)]
        #[argh(subcommand, name = $verb)]
        pub struct $name {
            /// the key
            #[argh(positional)]
            pub key: String,
            /// the value
            #[argh(positional)]
            pub value: String,
            /// expiry: seconds from now (up to 30 days), or a Unix time; 0 never (the default)
            #[argh(option, default = "0")]
            pub ttl: i64,
        }
    };
}

store_args!(
    AddArgs,
    "add",
    "store VALUE under KEY only if KEY holds nothing (exit 1 if it does)"
);
store_args!(
    ReplaceArgs,
    "replace",
    "store VALUE under KEY only if KEY holds a value (exit 1 if not)"
);
store_args!(
    AppendArgs,
    "append",
    "add VALUE to the end of KEY's value (exit 1 if KEY is not there; --ttl is ignored)"
);
store_args!(
    PrependArgs,
    "prepend",
    "add VALUE to the front of KEY's value (exit 1 if KEY is not there; --ttl is ignored)"
);

/// store VALUE under KEY only if its cas unique (from `gets`) is still UNIQUE (exit 1 if
/// it changed or KEY is gone)
#[derive(FromArgs, Debug, Clone, PartialEq, Eq)]
#[argh(subcommand, name = "cas")]
pub struct CasArgs {
    /// the key
    #[argh(positional)]
    pub key: String,
    /// the value
    #[argh(positional)]
    pub value: String,
    /// the cas unique `gets` printed
    #[argh(positional)]
    pub unique: u64,
    /// expiry: seconds from now (up to 30 days), or a Unix time; 0 never
    #[argh(option, default = "0")]
    pub ttl: i64,
}

/// add DELTA (default 1) to the decimal number under KEY and print it (exit 1 if KEY is
/// not there)
#[derive(FromArgs, Debug, Clone, PartialEq, Eq)]
#[argh(subcommand, name = "incr")]
pub struct IncrArgs {
    /// the key
    #[argh(positional)]
    pub key: String,
    /// how much (default 1)
    #[argh(positional, default = "1")]
    pub delta: u64,
}

/// subtract DELTA (default 1, stopping at 0) from the decimal number under KEY and print
/// it (exit 1 if KEY is not there)
#[derive(FromArgs, Debug, Clone, PartialEq, Eq)]
#[argh(subcommand, name = "decr")]
pub struct DecrArgs {
    /// the key
    #[argh(positional)]
    pub key: String,
    /// how much (default 1)
    #[argh(positional, default = "1")]
    pub delta: u64,
}

/// give KEY a new expiry TTL: seconds from now (up to 30 days), a Unix time, 0 never, or
/// negative to expire it now, written after `--` (`touch KEY -- -1`); exit 1 if KEY is
/// not there
#[derive(FromArgs, Debug, Clone, PartialEq, Eq)]
#[argh(subcommand, name = "touch")]
pub struct TouchArgs {
    /// the key
    #[argh(positional)]
    pub key: String,
    /// the new expiry
    #[argh(positional)]
    pub ttl: i64,
}

/// forget every key stored so far, on every slave (memcached's flush_all)
#[derive(FromArgs, Debug, Clone, PartialEq, Eq)]
#[argh(subcommand, name = "flush")]
pub struct FlushArgs {
    /// seconds from now when the flush takes effect (default 0: at once)
    #[argh(option, default = "0")]
    pub delay: u32,
}

store_args!(PutArgs, "put", "store VALUE under KEY");

/// print the value of KEY (exit 1 if it is not there)
#[derive(FromArgs, Debug, Clone, PartialEq, Eq)]
#[argh(subcommand, name = "get")]
pub struct GetArgs {
    /// the key
    #[argh(positional)]
    pub key: String,
}

/// delete KEY (exit 1 if it was not there)
#[derive(FromArgs, Debug, Clone, PartialEq, Eq)]
#[argh(subcommand, name = "del")]
pub struct DelArgs {
    /// the key
    #[argh(positional)]
    pub key: String,
}

/// show every slave: id, address, first ring token, share of the keys, state, and key counts
#[derive(FromArgs, Debug, Clone, PartialEq, Eq)]
#[argh(subcommand, name = "status")]
pub struct StatusArgs {}

/// Exit code: key not found.
pub const EXIT_NOT_FOUND: u8 = 1;
/// Exit code: any error.
pub const EXIT_ERROR: u8 = 2;

/// Runs the command line and returns the exit code.
pub fn main(args: ClientArgs) -> ExitCode {
    let secret = match crate::config::load_secret(args.secret_file.as_ref()) {
        Ok(secret) => secret,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let connected = Client::connect(&args.coordinator).and_then(|mut client| {
        if let Some(secret) = &secret {
            client.auth(secret)?;
        }
        Ok(client)
    });
    let mut client = match connected {
        Ok(client) => client,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match args.command {
        Some(command) => {
            let stdout = io::stdout();
            let code = execute(&mut client, &command, &mut stdout.lock());
            ExitCode::from(code)
        }
        None => prompt(&mut client),
    }
}

/// Runs one command, printing its result to `out` and errors to stderr; returns the exit
/// code.
pub fn execute(client: &mut Client, command: &ClientCommand, out: &mut impl Write) -> u8 {
    let result = match command {
        ClientCommand::Put(a) if a.ttl == 0 => client
            .put(a.key.as_bytes(), a.value.as_bytes())
            .map(|_| writeln!(out, "stored").map_or(EXIT_ERROR, |()| 0)),
        ClientCommand::Put(a) => client
            .put_with_ttl(a.key.as_bytes(), a.value.as_bytes(), 0, a.ttl)
            .map(|_| writeln!(out, "stored").map_or(EXIT_ERROR, |()| 0)),
        ClientCommand::Gets(a) => client.get(a.key.as_bytes()).map(|found| match found {
            Some(v) => {
                let written = out
                    .write_all(&v.value)
                    .and_then(|()| writeln!(out, "\n{}", v.version));
                written.map_or(EXIT_ERROR, |()| 0)
            }
            None => {
                eprintln!("not found: {}", a.key);
                EXIT_NOT_FOUND
            }
        }),
        ClientCommand::Add(a) => store(client, Op::Add, &a.key, &a.value, a.ttl, 0, out),
        ClientCommand::Replace(a) => store(client, Op::Replace, &a.key, &a.value, a.ttl, 0, out),
        ClientCommand::Append(a) => store(client, Op::Append, &a.key, &a.value, 0, 0, out),
        ClientCommand::Prepend(a) => store(client, Op::Prepend, &a.key, &a.value, 0, 0, out),
        ClientCommand::Cas(a) => store(client, Op::Set, &a.key, &a.value, a.ttl, a.unique, out),
        ClientCommand::Incr(IncrArgs { key, delta })
        | ClientCommand::Decr(DecrArgs { key, delta }) => {
            let decr = matches!(command, ClientCommand::Decr(_));
            client.incr(key.as_bytes(), *delta, decr).map(|n| match n {
                Some(n) => writeln!(out, "{n}").map_or(EXIT_ERROR, |()| 0),
                None => {
                    eprintln!("not found: {key}");
                    EXIT_NOT_FOUND
                }
            })
        }
        ClientCommand::Touch(a) => client.touch(a.key.as_bytes(), a.ttl).map(|found| {
            if found {
                writeln!(out, "touched").map_or(EXIT_ERROR, |()| 0)
            } else {
                eprintln!("not found: {}", a.key);
                EXIT_NOT_FOUND
            }
        }),
        ClientCommand::Flush(a) => client
            .flush_all(a.delay)
            .map(|()| writeln!(out, "flushed").map_or(EXIT_ERROR, |()| 0)),
        ClientCommand::Get(a) => client.get(a.key.as_bytes()).map(|found| match found {
            Some(v) => {
                let written = out.write_all(&v.value).and_then(|()| out.write_all(b"\n"));
                written.map_or(EXIT_ERROR, |()| 0)
            }
            None => {
                eprintln!("not found: {}", a.key);
                EXIT_NOT_FOUND
            }
        }),
        ClientCommand::Del(a) => client.delete(a.key.as_bytes()).map(|existed| {
            if existed {
                writeln!(out, "deleted").map_or(EXIT_ERROR, |()| 0)
            } else {
                eprintln!("not found: {}", a.key);
                EXIT_NOT_FOUND
            }
        }),
        ClientCommand::Status(_) => client
            .status()
            .map(|status| write!(out, "{}", format_status(&status)).map_or(EXIT_ERROR, |()| 0)),
    };
    result.unwrap_or_else(|e: ClientError| {
        eprintln!("error: {e}");
        EXIT_ERROR
    })
}

/// A conditional store: prints `stored` (exit 0), or why not (exit 1).
fn store(
    client: &mut Client,
    op: Op,
    key: &str,
    value: &str,
    ttl: i64,
    cas: u64,
    out: &mut impl Write,
) -> Result<u8, ClientError> {
    Ok(
        match client.store(op, key.as_bytes(), value.as_bytes(), ttl, cas)? {
            Written::Stored(_) => writeln!(out, "stored").map_or(EXIT_ERROR, |()| 0),
            Written::NotStored => {
                eprintln!("not stored: {key}");
                EXIT_NOT_FOUND
            }
            Written::Exists => {
                eprintln!("exists: {key} changed since that cas unique");
                EXIT_NOT_FOUND
            }
            Written::NotFound => {
                eprintln!("not found: {key}");
                EXIT_NOT_FOUND
            }
        },
    )
}

/// The ring as an aligned table a person reads at a glance.
pub fn format_status(status: &ClusterStatus) -> String {
    let mut rows: Vec<[String; 11]> = vec![[
        "ID".into(),
        "ADDRESS".into(),
        "TOKEN".into(),
        "SHARE".into(),
        "STATE".into(),
        "OWN".into(),
        "PREVIOUS".into(),
        "TOMBSTONES".into(),
        "PURGED".into(),
        "COLLECTED".into(),
        "COMPACTED".into(),
    ]];
    let now = crate::request::unix_now();
    for s in &status.slaves {
        let count = |c: Option<u64>| c.map_or("-".into(), |n| n.to_string());
        rows.push([
            s.id.to_string(),
            s.addr.clone(),
            s.token.clone(),
            s.share.clone(),
            s.state.clone(),
            count(s.own),
            count(s.previous),
            count(s.tombstones),
            count(s.purged),
            count(s.collected),
            s.compacted
                .map_or("-".into(), |at| format!("{}s ago", now.saturating_sub(at))),
        ]);
    }
    let mut widths = [0usize; 11];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut text = match status.copies {
        0 => "no slaves: start a piazza-slave to store data\n".to_string(),
        1 => format!(
            "{} slave, ring epoch {}: ONE copy of every key (start another slave for two)\n",
            status.slaves.len(),
            status.epoch
        ),
        n => format!(
            "{} slaves, ring epoch {}: {n} copies of every key\n",
            status.slaves.len(),
            status.epoch
        ),
    };
    if let Some(moving) = &status.moving {
        text.push_str(&format!("moving data: {moving}\n"));
    }
    if status.slaves.is_empty() {
        return text;
    }
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

/// Parses one prompt line into a command. `Ok(None)` for a blank line.
///
/// # Errors
/// A message saying what is wrong and how the command is written.
pub fn parse_line(line: &str) -> Result<Option<ClientCommand>, String> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(None);
    }
    let (verb, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim_start();
    let one_key = |usage: &str| {
        if rest.is_empty() || rest.contains(char::is_whitespace) {
            Err(format!("usage: {usage}"))
        } else {
            Ok(rest.to_string())
        }
    };
    let command = match verb {
        "put" | "set" => {
            // The value is the rest of the line, spaces included.
            let Some((key, value)) = rest.split_once(char::is_whitespace) else {
                return Err("usage: put KEY VALUE".into());
            };
            ClientCommand::Put(PutArgs {
                key: key.to_string(),
                value: value.trim_start().to_string(),
                ttl: 0,
            })
        }
        "get" => ClientCommand::Get(GetArgs {
            key: one_key("get KEY")?,
        }),
        "del" | "delete" => ClientCommand::Del(DelArgs {
            key: one_key("del KEY")?,
        }),
        "status" => ClientCommand::Status(StatusArgs {}),
        "gets" => ClientCommand::Gets(GetsArgs {
            key: one_key("gets KEY")?,
        }),
        "flush" | "flush_all" => ClientCommand::Flush(FlushArgs {
            delay: if rest.is_empty() {
                0
            } else {
                rest.parse()
                    .map_err(|_| "usage: flush [DELAY]".to_string())?
            },
        }),
        "add" | "replace" | "append" | "prepend" => {
            let Some((key, value)) = rest.split_once(char::is_whitespace) else {
                return Err(format!("usage: {verb} KEY VALUE"));
            };
            let (key, value) = (key.to_string(), value.trim_start().to_string());
            match verb {
                "add" => ClientCommand::Add(AddArgs { key, value, ttl: 0 }),
                "replace" => ClientCommand::Replace(ReplaceArgs { key, value, ttl: 0 }),
                "append" => ClientCommand::Append(AppendArgs { key, value, ttl: 0 }),
                _ => ClientCommand::Prepend(PrependArgs { key, value, ttl: 0 }),
            }
        }
        "incr" | "decr" | "touch" | "cas" => {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let number = |word: &str, usage: &str| {
                word.parse::<u64>().map_err(|_| format!("usage: {usage}"))
            };
            match (verb, words.as_slice()) {
                ("incr", [key, delta @ ..]) if delta.len() <= 1 => ClientCommand::Incr(IncrArgs {
                    key: key.to_string(),
                    delta: delta
                        .first()
                        .map_or(Ok(1), |d| number(d, "incr KEY [DELTA]"))?,
                }),
                ("decr", [key, delta @ ..]) if delta.len() <= 1 => ClientCommand::Decr(DecrArgs {
                    key: key.to_string(),
                    delta: delta
                        .first()
                        .map_or(Ok(1), |d| number(d, "decr KEY [DELTA]"))?,
                }),
                ("touch", [key, ttl]) => ClientCommand::Touch(TouchArgs {
                    key: key.to_string(),
                    ttl: ttl
                        .parse()
                        .map_err(|_| "usage: touch KEY TTL".to_string())?,
                }),
                ("cas", [key, value, unique]) => ClientCommand::Cas(CasArgs {
                    key: key.to_string(),
                    value: value.to_string(),
                    unique: number(unique, "cas KEY VALUE UNIQUE")?,
                    ttl: 0,
                }),
                _ => return Err(format!("usage: {}", usage_of(verb))),
            }
        }
        other => {
            return Err(format!("unknown command '{other}' ({HELP})"));
        }
    };
    Ok(Some(command))
}

const HELP: &str = "commands: put KEY VALUE | get KEY | gets KEY | del KEY | add/replace/append/prepend KEY VALUE | cas KEY VALUE UNIQUE | incr/decr KEY [DELTA] | touch KEY TTL | flush [DELAY] | status | help | quit";

fn usage_of(verb: &str) -> &'static str {
    match verb {
        "incr" => "incr KEY [DELTA]",
        "decr" => "decr KEY [DELTA]",
        "touch" => "touch KEY TTL",
        _ => "cas KEY VALUE UNIQUE",
    }
}

/// The interactive prompt: one command per line until `quit` or end of input. The exit
/// code is 0 unless the connection fails.
fn prompt(client: &mut Client) -> ExitCode {
    let interactive = io::stdin().is_terminal();
    if interactive {
        let _ = writeln!(io::stdout(), "connected to {}; {HELP}", client.addr());
    }
    let stdin = io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            let _ = write!(io::stdout(), "piazza> ");
            let _ = io::stdout().flush();
        }
        let Some(line) = lines.next() else {
            return ExitCode::SUCCESS;
        };
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                eprintln!("error: cannot read stdin: {e}");
                return ExitCode::from(EXIT_ERROR);
            }
        };
        match line.trim() {
            "quit" | "exit" => return ExitCode::SUCCESS,
            "help" => {
                let _ = writeln!(io::stdout(), "{HELP}");
                continue;
            }
            _ => {}
        }
        match parse_line(&line) {
            Ok(Some(command)) => {
                let stdout = io::stdout();
                let code = execute(client, &command, &mut stdout.lock());
                if code == EXIT_ERROR && client.ping().is_err() {
                    eprintln!("error: lost the connection to {}", client.addr());
                    return ExitCode::from(EXIT_ERROR);
                }
            }
            Ok(None) => {}
            Err(message) => eprintln!("{message}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_lines_parse() {
        assert_eq!(
            parse_line("put k hello world").unwrap(),
            Some(ClientCommand::Put(PutArgs {
                key: "k".into(),
                value: "hello world".into(),
                ttl: 0,
            }))
        );
        assert_eq!(
            parse_line("incr n 5").unwrap(),
            Some(ClientCommand::Incr(IncrArgs {
                key: "n".into(),
                delta: 5
            }))
        );
        assert_eq!(
            parse_line("cas k v 42").unwrap(),
            Some(ClientCommand::Cas(CasArgs {
                key: "k".into(),
                value: "v".into(),
                unique: 42,
                ttl: 0
            }))
        );
        assert!(parse_line("touch k").unwrap_err().contains("usage"));
        assert!(parse_line("incr k x").unwrap_err().contains("usage"));
        assert_eq!(
            parse_line("  get k ").unwrap(),
            Some(ClientCommand::Get(GetArgs { key: "k".into() }))
        );
        assert_eq!(parse_line("").unwrap(), None);
        assert!(parse_line("get").unwrap_err().contains("usage"));
        assert!(parse_line("get a b").unwrap_err().contains("usage"));
        assert!(parse_line("put k").unwrap_err().contains("usage"));
        assert!(
            parse_line("frobnicate")
                .unwrap_err()
                .contains("unknown command")
        );
    }

    #[test]
    fn status_table_says_how_many_copies() {
        let status = crate::client::parse_status(
            "copies\t1\nepoch\t1\nid\taddr\ttoken\tshare\tstate\town\tprevious\n1\t127.0.0.1:7410\t0x003fffffffffffff\t100.0%\talive\t3\t0\n",
        )
        .unwrap();
        let text = format_status(&status);
        assert!(text.contains("ONE copy"), "{text}");
        assert!(text.contains("127.0.0.1:7410"), "{text}");
        assert!(text.lines().nth(1).unwrap().starts_with("ID"), "{text}");
    }
}
