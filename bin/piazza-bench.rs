//! piazza-bench: parse flags, run the load, print the figures.

use std::process::ExitCode;

use piazza::bench::{self, BenchArgs};
use piazza::cli;

fn main() -> ExitCode {
    let args: BenchArgs = match cli::parse_args() {
        Ok(args) => args,
        Err(code) => return code,
    };
    cli::init_logging(log::LevelFilter::Warn);
    match bench::run(&args) {
        Ok(report) if args.json => {
            println!("{}", report.json());
            ExitCode::SUCCESS
        }
        Ok(report) => {
            print!("{}", report.human());
            ExitCode::SUCCESS
        }
        Err(e) => cli::fail(e),
    }
}
