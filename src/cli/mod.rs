//! The command line: argument types (clap) and one module per subcommand. `main.rs` parses and
//! dispatches here; errors are reported with `anyhow` at this level only.

mod client;
pub mod eval;
pub mod healthcheck;
pub mod replay;
pub mod serve;
mod token;
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
    /// Measure how trustworthy a saved model's probabilities are on the MNIST test set.
    Eval(eval::EvalArgs),
    /// Run the HTTP service: learn from /learn, answer /classify, export /metrics.
    Serve(serve::ServeArgs),
    /// Stream MNIST to a running server, then classify its test set through the server.
    Replay(replay::ReplayArgs),
    /// Exit 0 if a server answers /healthz with 200 (for Docker's HEALTHCHECK).
    Healthcheck(healthcheck::HealthcheckArgs),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train(args) => train::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Healthcheck(args) => healthcheck::run(args),
    }
}
