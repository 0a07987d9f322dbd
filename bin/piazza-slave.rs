//! piazza-slave: parse flags, set up logging and Ctrl-C, run a slave.

use std::process::ExitCode;

use piazza::cli;
use piazza::config::SlaveArgs;

fn main() -> ExitCode {
    cli::run_server(
        |args: &SlaveArgs| args.log_level,
        |args, shutdown| Ok(piazza::slave::run(args.config()?, shutdown)?),
    )
}
