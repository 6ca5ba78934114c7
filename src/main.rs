//! The `djshim` binary: arguments in, exit status out.

use std::process::ExitCode;

use clap::Parser;
use djshim::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match djshim::commands::run(&cli) {
        Ok(code) => code,
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("djshim: error: {e}");
            e.exit_code()
        }
    }
}
