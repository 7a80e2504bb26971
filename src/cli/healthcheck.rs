//! `ffd healthcheck`: exits 0 when a server answers `GET /healthz` with 200 within a short
//! timeout, non-zero with a message otherwise. Docker's `HEALTHCHECK` runs it inside the
//! container, which has no curl.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

use super::client::ApiClient;

/// Arguments of `ffd healthcheck`.
#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// Base URL of the ffd server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Give up after this many milliseconds (connecting and answering).
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
    /// A file holding a token, for a server whose probes are closed (`auth.health_open =
    /// false`); default: the `FFD_READ_TOKEN` or else the `FFD_LEARN_TOKEN` variable.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,
}

/// Runs `ffd healthcheck`: `Ok` if `/healthz` answered 200.
pub fn run(args: HealthcheckArgs) -> anyhow::Result<()> {
    let token = super::token::client_token(
        args.token_file.as_deref(),
        &[
            crate::service::auth::READ_TOKEN_VAR,
            crate::service::auth::LEARN_TOKEN_VAR,
        ],
    )?;
    let client = ApiClient::with_token(
        &args.url,
        Duration::from_millis(args.timeout_ms.max(1)),
        token.as_deref(),
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let status = runtime.block_on(async {
        let response = client.get("/healthz").await?;
        anyhow::Ok(response.status())
    })?;
    if status != reqwest::StatusCode::OK {
        bail!("GET {}/healthz answered {status}", client.base());
    }
    println!("ok: {}/healthz answered {status}", client.base());
    Ok(())
}
