//! piazza-cluster: parse flags, set up logging and Ctrl-C, run a local cluster.

use std::process::ExitCode;

use piazza::cli;
use piazza::config::ClusterArgs;
use piazza::shutdown::Shutdown;

fn main() -> ExitCode {
    let args: ClusterArgs = match cli::parse_args() {
        Ok(args) => args,
        Err(code) => return code,
    };
    cli::init_logging(args.log_level);
    let shutdown = Shutdown::new();
    if let Err(e) = cli::stop_on_ctrl_c(&shutdown) {
        return cli::fail(e);
    }
    match piazza::cluster::run(&args, shutdown) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => cli::fail(e),
    }
}
