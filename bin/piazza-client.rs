//! piazza-client: parse flags, run one command or the interactive prompt.

use std::process::ExitCode;

use piazza::cli;
use piazza::shell::{self, ClientArgs};

fn main() -> ExitCode {
    match cli::parse_args::<ClientArgs>() {
        Ok(args) => shell::main(args),
        Err(code) => code,
    }
}
