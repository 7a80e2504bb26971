//! The command line: argument types (clap) and one module per subcommand. `main.rs` parses and
//! dispatches here; errors are reported with `anyhow` at this level only.

pub mod train;

use clap::{Parser, Subcommand};

/// ffd: a streaming Forward-Forward learning service.
#[derive(Debug, Parser)]
#[command(name = "ffd", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train offline on MNIST and evaluate on its test set.
    Train(train::TrainArgs),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train(args) => train::run(args),
    }
}
