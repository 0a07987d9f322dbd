//! piazza-bench: parse flags, run the load, print the figures (text, or one JSON line
//! with `--json`). Exit code 0 on success, 2 on a bad flag, when the run cannot be made
//! (target unreachable, preload failed, every connection gave up), or when `--verify`
//! found a read that did not return what was last stored.

use std::io::Write;
use std::process::ExitCode;

use piazza::bench::{self, BenchArgs};
use piazza::cli;

fn main() -> ExitCode {
    let args: BenchArgs = match cli::parse_args() {
        Ok(args) => args,
        Err(code) => return code,
    };
    cli::init_logging(log::LevelFilter::Warn);
    let report = match bench::run(&args) {
        Ok(report) => report,
        Err(e) => return cli::fail(e),
    };
    let text = if args.json {
        format!("{}\n", report.json())
    } else {
        report.human()
    };
    // write_all instead of print!, so a closed pipe (`| head`) is an error, not a panic.
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) if report.wrong > 0 => cli::fail(format_args!(
            "--verify: {} reads did not return what was last stored",
            report.wrong
        )),
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => cli::fail(format_args!("cannot write the report: {e}")),
    }
}
