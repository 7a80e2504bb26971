//! Request bodies: the content type (JSON or NDJSON, else 415), a whole JSON body read under a
//! size and time limit (413, 408) and decoded (400), and [`Lines`], an NDJSON body split into
//! lines as it arrives, each under a length limit.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

use crate::service::http::error::ApiError;

/// `Content-Type` of a JSON body.
pub const JSON: &str = "application/json";
/// `Content-Type` of an NDJSON stream.
pub const NDJSON: &str = "application/x-ndjson";

/// JSON bodies up to this size are decoded on the runtime thread; larger ones (a batch of 100
/// MNIST samples is ~300 KB, several ms of parsing) on the blocking pool, so they cannot hold up
/// the small `/classify` requests queued behind them on the same worker.
const INLINE_PARSE_BYTES: usize = 64 << 10;

/// How a request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `application/json`: the whole body is one JSON value.
    Json,
    /// `application/x-ndjson`: one JSON value per line.
    Ndjson,
}

/// The body's kind from its `Content-Type` (parameters such as `charset` are ignored); 415
/// unless it is one of `accepted`.
pub fn body_kind(headers: &HeaderMap, accepted: &[BodyKind]) -> Result<BodyKind, ApiError> {
    let expected = || {
        accepted
            .iter()
            .map(|k| match k {
                BodyKind::Json => JSON,
                BodyKind::Ndjson => NDJSON,
            })
            .collect::<Vec<_>>()
            .join(" or ")
    };
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::UnsupportedMediaType(format!(
            "missing Content-Type; expected {}",
            expected()
        )));
    };
    let essence = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let kind = match essence.as_str() {
        JSON => Some(BodyKind::Json),
        NDJSON => Some(BodyKind::Ndjson),
        _ => None,
    };
    match kind {
        Some(k) if accepted.contains(&k) => Ok(k),
        _ => Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type {essence:?} is not supported here; expected {}",
            expected()
        ))),
    }
}

/// Reads a whole body of at most `limit` bytes within `timeout` and decodes it as JSON.
pub async fn read_json<T: DeserializeOwned + Send + 'static>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<T, ApiError> {
    decode_json(read_body(headers, body, limit, timeout).await?).await
}

/// Reads a whole body of at most `limit` bytes within `timeout`.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::TooLarge(format!("the body is larger than {limit} bytes"));
    // A declared length over the limit is refused before reading anything.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let read = axum::body::to_bytes(body, limit);
    match tokio::time::timeout(timeout, read).await {
        Err(_) => Err(ApiError::Timeout(timeout.as_millis() as u64)),
        Ok(Err(e)) => {
            // `to_bytes` reports the limit as a boxed `LengthLimitError` somewhere in the chain.
            let over_limit =
                std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
                    e.source()
                })
                .any(|e| e.is::<http_body_util::LengthLimitError>());
            Err(if over_limit {
                too_large()
            } else {
                ApiError::BodyRead(e.to_string())
            })
        }
        Ok(Ok(bytes)) => Ok(bytes),
    }
}

/// Decodes `bytes` as JSON: on the runtime thread when small, else on the blocking pool.
pub async fn decode_json<T: DeserializeOwned + Send + 'static>(
    bytes: Bytes,
) -> Result<T, ApiError> {
    if bytes.len() <= INLINE_PARSE_BYTES {
        return Ok(serde_json::from_slice(&bytes)?);
    }
    tokio::task::spawn_blocking(move || serde_json::from_slice(&bytes))
        .await
        .map_err(|e| ApiError::Internal(format!("JSON decoding task failed: {e}")))?
        .map_err(ApiError::from)
}

/// An NDJSON body as lines, read as they arrive.
pub struct Lines {
    body: Body,
    buf: BytesMut,
    /// Bytes of `buf` already searched for a newline.
    scanned: usize,
    max_line: usize,
    /// Lines returned so far (the last one's 1-based number).
    line: usize,
    done: bool,
}

impl Lines {
    /// Lines of `body`, each at most `max_line` bytes.
    pub fn new(body: Body, max_line: usize) -> Self {
        Self {
            body,
            buf: BytesMut::new(),
            scanned: 0,
            max_line,
            line: 0,
            done: false,
        }
    }

    /// The next line and its 1-based number, without its `\n` or `\r\n`; `None` at the end of
    /// the body. A final line without a newline counts. Fails with 413 on a line over the limit
    /// and 400 if the body cannot be read.
    pub async fn next_line(&mut self) -> Result<Option<(usize, Bytes)>, ApiError> {
        loop {
            if let Some(pos) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
                let end = self.scanned + pos;
                let mut line = self.buf.split_to(end + 1).freeze();
                line.truncate(end);
                if line.last() == Some(&b'\r') {
                    line.truncate(end - 1);
                }
                self.scanned = 0;
                return self.emit(line).map(Some);
            }
            self.scanned = self.buf.len();
            if self.buf.len() > self.max_line {
                return Err(self.too_long());
            }
            if self.done {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let line = self.buf.split().freeze();
                self.scanned = 0;
                return self.emit(line).map(Some);
            }
            match self.body.frame().await {
                None => self.done = true,
                Some(Err(e)) => return Err(ApiError::BodyRead(e.to_string())),
                Some(Ok(frame)) => {
                    // Trailers carry no data and are ignored.
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    fn emit(&mut self, line: Bytes) -> Result<(usize, Bytes), ApiError> {
        self.line += 1;
        if line.len() > self.max_line {
            return Err(ApiError::TooLarge(format!(
                "line {} is longer than {} bytes",
                self.line, self.max_line
            )));
        }
        Ok((self.line, line))
    }

    fn too_long(&self) -> ApiError {
        ApiError::TooLarge(format!(
            "line {} is longer than {} bytes",
            self.line + 1,
            self.max_line
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(chunks: &[&'static str], max: usize) -> Lines {
        let stream = futures_util::stream::iter(
            chunks
                .iter()
                .map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c.as_bytes())))
                .collect::<Vec<_>>(),
        );
        Lines::new(Body::from_stream(stream), max)
    }

    async fn collect(mut lines: Lines) -> Result<Vec<(usize, String)>, ApiError> {
        let mut out = Vec::new();
        while let Some((n, l)) = lines.next_line().await? {
            out.push((n, String::from_utf8_lossy(&l).into_owned()));
        }
        Ok(out)
    }

    #[tokio::test]
    async fn splits_across_chunks_and_keeps_a_final_line() {
        let lines = lines_of(&["ab", "c\r\nd", "e\n\nf"], 10);
        let got = collect(lines).await.expect("fits");
        let want = [(1, "abc"), (2, "de"), (3, ""), (4, "f")];
        assert_eq!(got, want.map(|(n, s)| (n, s.to_owned())).to_vec());
    }

    #[tokio::test]
    async fn refuses_a_long_line_before_its_end_arrives() {
        let lines = lines_of(&["ok\n", "0123456789", "0123456789"], 10);
        match collect(lines).await {
            Err(ApiError::TooLarge(m)) => assert!(m.contains("line 2"), "{m}"),
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }
}
