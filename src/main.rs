//! The `ffd` binary: parse the command line and hand over to `ffd::cli`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = ffd::cli::Cli::parse();
    match ffd::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
