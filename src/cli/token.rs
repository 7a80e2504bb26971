//! The bearer token a client command (`ffd replay`, `ffd healthcheck`) sends: read from
//! `--token-file FILE`, else from the first of a few `FFD_*_TOKEN` variables that is set.
//! Never a flag value, which the process list would show to every user of the machine.

use std::path::Path;

use anyhow::{bail, Context};

/// The token from `file` (minus one trailing newline), else from the first of `vars` that is
/// set in the environment; `None` if neither gives one. An empty token is an error.
pub fn client_token(file: Option<&Path>, vars: &[&str]) -> anyhow::Result<Option<String>> {
    let (text, origin) = match file {
        Some(path) => (
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the token file {}", path.display()))?,
            path.display().to_string(),
        ),
        None => match vars
            .iter()
            .find_map(|v| std::env::var(v).ok().map(|t| (t, v.to_string())))
        {
            Some(found) => found,
            None => return Ok(None),
        },
    };
    let token = text.strip_suffix('\n').unwrap_or(&text);
    let token = token.strip_suffix('\r').unwrap_or(token);
    if token.is_empty() {
        bail!("{origin} holds an empty token");
    }
    Ok(Some(token.to_owned()))
}
