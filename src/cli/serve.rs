//! `ffd serve`: loads the configuration (embedded defaults → `--config FILE` → `FFD_*`
//! environment → flags), sets up logging, binds the listener and runs the service until SIGINT
//! or SIGTERM. Logs go to stderr; `--print-config` prints the effective config to stdout.
//! Access tokens come only from `FFD_*_TOKEN` / `FFD_*_TOKEN_FILE` (never a flag: the process
//! list would show it) and are read before anything else starts.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

use crate::service::{self, AccessTokens, Config, LogFormat};

/// Arguments of `ffd serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// A TOML config file layered over the embedded defaults (config/default.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address and port to listen on (overrides `listen`).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Start from a model written by `ffd train --save` (overrides `model_file`).
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Log format (overrides `log_format`); levels come from RUST_LOG (default `info`).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormatArg>,
    /// Directory of checkpoints and the write-ahead log (overrides `data_dir`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Move the saved checkpoints and WAL into `DATA_DIR/discarded-<time>/` and start afresh
    /// (needed when the network configuration changed).
    #[arg(long)]
    pub reset: bool,
}

/// `--log-format` values.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormatArg {
    Text,
    Json,
}

/// Runs `ffd serve`.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = effective_config(&args)?;
    if args.print_config {
        print!(
            "{}",
            config.to_toml().context("printing the configuration")?
        );
        return Ok(());
    }
    let access = AccessTokens::from_env(
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
    )
    .context("reading the access tokens")?;
    init_logging(config.log_format)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        service::run(listener, config, access, service::shutdown_signal()).await?;
        anyhow::Ok(())
    })
}

/// The configuration after every layer, validated.
fn effective_config(args: &ServeArgs) -> anyhow::Result<Config> {
    // Variables that are not valid UTF-8 cannot name a config key and are left out.
    let env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    let mut config = Config::load(args.config.as_deref(), env)?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(model) = &args.model {
        config.model_file = Some(model.clone());
    }
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    config.durability.reset = args.reset;
    if let Some(format) = args.log_format {
        config.log_format = match format {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        };
    }
    config.validate()?;
    Ok(config)
}

fn init_logging(format: LogFormat) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("setting up logging: {e}"))
}
