//! Access tokens: read once at start from `FFD_LEARN_TOKEN` / `FFD_READ_TOKEN` or from the file
//! `FFD_LEARN_TOKEN_FILE` / `FFD_READ_TOKEN_FILE` names — never from a flag, which any user of
//! the machine could read in the process list. Only a SHA-256 digest of each token is kept, so
//! no `Debug`, log line or config dump can show it; a presented token is hashed too and the two
//! fixed-size digests are compared in constant time, so neither the content nor the length of
//! the real token leaks through timing.

use std::collections::HashMap;
use std::path::PathBuf;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The learn token (guards `/learn` and `/admin/*`).
pub const LEARN_TOKEN_VAR: &str = "FFD_LEARN_TOKEN";
/// A file holding the learn token.
pub const LEARN_TOKEN_FILE_VAR: &str = "FFD_LEARN_TOKEN_FILE";
/// The read token (guards `/classify` and `/v1/model`).
pub const READ_TOKEN_VAR: &str = "FFD_READ_TOKEN";
/// A file holding the read token.
pub const READ_TOKEN_FILE_VAR: &str = "FFD_READ_TOKEN_FILE";
/// Every variable that carries a token: `Config::load` leaves them out (they are not config
/// keys, and the configuration must never hold a token).
pub const TOKEN_VARIABLES: [&str; 4] = [
    LEARN_TOKEN_VAR,
    LEARN_TOKEN_FILE_VAR,
    READ_TOKEN_VAR,
    READ_TOKEN_FILE_VAR,
];

/// Why the tokens could not be read. Messages name the variable or file, never the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// A token was given both directly and as a file.
    #[error("set {value_var} or {file_var}, not both")]
    Both {
        /// The variable holding the token.
        value_var: &'static str,
        /// The variable naming the file.
        file_var: &'static str,
    },
    /// A token is empty (after removing a trailing newline).
    #[error("{origin} holds an empty token")]
    Empty {
        /// The variable, or the file and the variable that named it.
        origin: String,
    },
    /// A token file could not be read.
    #[error("cannot read the token file {} (named by {var})", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The variable that named it.
        var: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A secret token, kept as its SHA-256 digest.
#[derive(Clone)]
pub struct Token {
    digest: [u8; 32],
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// A token from its text; `None` if it is empty.
    pub fn new(secret: &str) -> Option<Self> {
        (!secret.is_empty()).then(|| Self {
            digest: Sha256::digest(secret.as_bytes()).into(),
        })
    }

    /// Whether `presented` is this token. Constant time in the content of both and in the
    /// length of the real one: both sides are hashed to 32 bytes before the comparison.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        digest.ct_eq(&self.digest).into()
    }
}

/// The tokens a service checks requests against; `None` leaves its routes open (except
/// `/admin/*`, which is refused without a learn token).
#[derive(Debug, Clone, Default)]
pub struct AccessTokens {
    /// Guards `/learn` and `/admin/*`; also accepted wherever the read token is.
    pub learn: Option<Token>,
    /// Guards `/classify` and `/v1/model` (and `/metrics`, probes when configured closed).
    pub read: Option<Token>,
}

impl AccessTokens {
    /// Reads the tokens from `vars` (the process environment in `ffd serve`): each from its
    /// variable or from the file its `_FILE` variable names, minus one trailing newline (as
    /// `echo` and most secret stores leave). Both forms of one token, an empty token or an
    /// unreadable file are errors.
    pub fn from_env<I, K, V>(vars: I) -> Result<Self, TokenError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let vars: HashMap<String, String> = vars
            .into_iter()
            .filter(|(k, _)| TOKEN_VARIABLES.contains(&k.as_ref()))
            .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
            .collect();
        Ok(Self {
            learn: read_token(&vars, LEARN_TOKEN_VAR, LEARN_TOKEN_FILE_VAR)?,
            read: read_token(&vars, READ_TOKEN_VAR, READ_TOKEN_FILE_VAR)?,
        })
    }

    /// Whether any token is set.
    pub fn any(&self) -> bool {
        self.learn.is_some() || self.read.is_some()
    }
}

fn read_token(
    vars: &HashMap<String, String>,
    value_var: &'static str,
    file_var: &'static str,
) -> Result<Option<Token>, TokenError> {
    let (text, origin) = match (vars.get(value_var), vars.get(file_var)) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(TokenError::Both {
                value_var,
                file_var,
            })
        }
        (Some(value), None) => (value.clone(), value_var.to_owned()),
        (None, Some(path)) => {
            let path = PathBuf::from(path);
            let text = std::fs::read_to_string(&path).map_err(|source| TokenError::Read {
                path: path.clone(),
                var: file_var,
                source,
            })?;
            (text, format!("{} (named by {file_var})", path.display()))
        }
    };
    let secret = text
        .strip_suffix('\n')
        .map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
    Token::new(secret)
        .map(Some)
        .ok_or(TokenError::Empty { origin })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tokens_from_variables_and_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("learn");
        std::fs::write(&path, "s3cret\n").expect("write");
        let path = path.to_str().expect("utf-8 path");
        let t = AccessTokens::from_env([(LEARN_TOKEN_FILE_VAR, path), (READ_TOKEN_VAR, "r")])
            .expect("valid");
        let learn = t.learn.expect("learn token");
        assert!(learn.matches(b"s3cret"));
        assert!(!learn.matches(b"s3cret\n"));
        assert!(!learn.matches(b"s3cre"));
        assert!(t.read.expect("read token").matches(b"r"));
        let none = AccessTokens::from_env([("HOME", "/root")]).expect("valid");
        assert!(!none.any());
    }

    #[test]
    fn refuses_both_forms_empty_tokens_and_missing_files() {
        let err = AccessTokens::from_env([(LEARN_TOKEN_VAR, "a"), (LEARN_TOKEN_FILE_VAR, "/x")])
            .expect_err("both");
        assert!(matches!(err, TokenError::Both { .. }), "{err}");
        let err = AccessTokens::from_env([(READ_TOKEN_VAR, "\n")]).expect_err("empty");
        assert!(err.to_string().contains(READ_TOKEN_VAR), "{err}");
        let err = AccessTokens::from_env([(READ_TOKEN_FILE_VAR, "/nonexistent/ffd-token")])
            .expect_err("missing file");
        assert!(err.to_string().contains("/nonexistent/ffd-token"), "{err}");
    }

    #[test]
    fn debug_never_shows_the_token() {
        let t = AccessTokens::from_env([(LEARN_TOKEN_VAR, "hunter2")]).expect("valid");
        let shown = format!("{t:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }
}
