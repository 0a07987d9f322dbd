//! piazza-slave: parse flags, set up logging and Ctrl-C, run a slave.

use std::process::ExitCode;

use piazza::cli;
use piazza::config::SlaveArgs;
use piazza::shutdown::Shutdown;

fn main() -> ExitCode {
    let args: SlaveArgs = match cli::parse_args() {
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
    match piazza::slave::run(config, shutdown) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => cli::fail(e),
    }
}
