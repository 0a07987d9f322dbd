//! piazza-coordinator: parse flags, set up logging and Ctrl-C, run the coordinator.

use std::process::ExitCode;

use piazza::cli;
use piazza::config::CoordinatorArgs;

fn main() -> ExitCode {
    cli::run_server(
        |args: &CoordinatorArgs| args.log_level,
        |args, shutdown| Ok(piazza::coordinator::run(args.config()?, shutdown)?),
    )
}
