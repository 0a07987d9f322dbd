//! piazza-coordinator: parse flags, set up logging and Ctrl-C, run the coordinator.

use std::process::ExitCode;

use piazza::cli;
use piazza::config::CoordinatorArgs;
use piazza::shutdown::Shutdown;

fn main() -> ExitCode {
    let args: CoordinatorArgs = match cli::parse_args() {
        Ok(args) => args,
        Err(code) => return code,
    };
    cli::init_logging(args.log_level);
    let shutdown = Shutdown::new();
    if let Err(e) = cli::stop_on_ctrl_c(&shutdown) {
        return cli::fail(e);
    }
    let config = match args.config() {
        Ok(config) => config,
        Err(e) => return cli::fail(e),
    };
    match piazza::coordinator::run(config, shutdown) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => cli::fail(e),
    }
}
