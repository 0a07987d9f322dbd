//! What every binary does at start: parse flags (choosing the exit code ourselves), set
//! up logging to stderr, and turn Ctrl-C / SIGTERM into a [`Shutdown`].
//!
//! Exit codes: 0 success (and `--help`); 2 a bad flag or any error. `piazza-client` also
//! uses 1 for "key not found".

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use argh::FromArgs;
use log::LevelFilter;
use simplelog::{ColorChoice, ConfigBuilder, TermLogger, TerminalMode, ThreadLogMode};

use crate::shutdown::Shutdown;

/// Exit code for any error.
pub const EXIT_ERROR: u8 = 2;

/// Parses the process's arguments. `--help` prints and yields `Err(0)`; a bad flag prints
/// the reason and yields `Err(2)` (argh's own `from_env` would exit 1, which means "not
/// found" for `piazza-client`).
pub fn parse_args<T: FromArgs>() -> Result<T, ExitCode> {
    let args: Vec<String> = std::env::args().collect();
    let name = args
        .first()
        .and_then(|path| std::path::Path::new(path).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("piazza")
        .to_string();
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    match T::from_args(&[&name], &rest) {
        Ok(parsed) => Ok(parsed),
        Err(early) if early.status.is_ok() => {
            // A closed stdout (`--help | head`) is not an error worth a panic.
            let _ = writeln!(std::io::stdout(), "{}", early.output);
            Err(ExitCode::SUCCESS)
        }
        Err(early) => {
            eprintln!("{}", early.output.trim_end());
            Err(ExitCode::from(EXIT_ERROR))
        }
    }
}

/// Sends log lines at `level` and above to stderr, with the thread name on each line.
pub fn init_logging(level: LevelFilter) {
    let config = ConfigBuilder::new()
        .set_thread_level(LevelFilter::Error)
        .set_thread_mode(ThreadLogMode::Names)
        .set_target_level(LevelFilter::Off)
        .build();
    // Colours only on a terminal: a log file or a test's pipe gets plain text.
    let color = if std::io::stderr().is_terminal() {
        ColorChoice::Auto
    } else {
        ColorChoice::Never
    };
    // Fails only if a logger is already set, which is harmless.
    let _ = TermLogger::init(level, config, TerminalMode::Stderr, color);
}

/// Installs the Ctrl-C / SIGTERM handler that triggers `shutdown`. A second Ctrl-C while
/// shutting down exits at once.
///
/// # Errors
/// ctrlc's, if a handler is already installed or the signal cannot be caught.
pub fn stop_on_ctrl_c(shutdown: &Shutdown) -> Result<(), ctrlc::Error> {
    let shutdown = shutdown.clone();
    ctrlc::set_handler(move || {
        if shutdown.is_triggered() {
            eprintln!("second interrupt: exiting now");
            std::process::exit(130);
        }
        log::info!("interrupt received: shutting down");
        shutdown.trigger();
    })
}

/// The whole `main` of a server binary: parses the flags of type `A`, sends log lines
/// at `log_level(&args)` and above to stderr, installs the Ctrl-C / SIGTERM handler,
/// then calls `run` with the flags and the [`Shutdown`] that handler triggers. Returns
/// the exit code: 0 when `run` returns `Ok` (or for `--help`), 2 with one error line
/// otherwise.
pub fn run_server<A: FromArgs>(
    log_level: impl FnOnce(&A) -> LevelFilter,
    run: impl FnOnce(A, Shutdown) -> Result<(), Box<dyn std::error::Error>>,
) -> ExitCode {
    let args: A = match parse_args() {
        Ok(args) => args,
        Err(code) => return code,
    };
    init_logging(log_level(&args));
    let shutdown = Shutdown::new();
    if let Err(e) = stop_on_ctrl_c(&shutdown) {
        return fail(format_args!("cannot install the Ctrl-C handler: {e}"));
    }
    match run(args, shutdown) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// Prints `error: <message>` to stderr and returns exit code 2.
pub fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_ERROR)
}
