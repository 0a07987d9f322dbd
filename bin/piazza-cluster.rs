//! piazza-cluster: parse flags, set up logging and Ctrl-C, run a local cluster.

use std::process::ExitCode;

use piazza::cli;
use piazza::config::ClusterArgs;

fn main() -> ExitCode {
    cli::run_server(
        |args: &ClusterArgs| args.log_level,
        |args, shutdown| Ok(piazza::cluster::run(&args, shutdown)?),
    )
}
