//! Serving admitted connections: the accept loop and the three deadlines each connection keeps.
//!
//! - **Request head** (`http.header_timeout_ms`): from accept, or from the end of the previous
//!   answer, to the end of the headers. Bytes that trickle in do not extend it, so slowloris
//!   cannot hold a slot for longer. This is hyper's own `header_read_timeout`, which is why the
//!   connections are served here with hyper's HTTP/1 builder rather than by `axum::serve`: axum
//!   builds hyper's connection itself, without a timer, and exposes no way to set it. Tracking
//!   the head in the stream wrapper instead would mean parsing HTTP a second time.
//! - **Request body** (`http.min_body_bytes_per_second` after `http.body_grace_ms`): counted
//!   on the body the handler reads ([`PacedBody`]), over the time the handler waits for it, so
//!   a handler busy elsewhere (a full learn queue) is not charged to the client.
//! - **Silence** (`http.idle_timeout_ms`): nothing read or written ([`BoundedStream`]); it also
//!   catches a client that stops reading its answer.
//!
//! The code serving a connection tells its [`ConnectionState`] when a request begins and when
//! its answer has been sent, which the listener uses to pick whom to evict.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::Router;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::IntCounterVec;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use super::listener::{Admitted, BoundedListener, ConnectionState};
use crate::service::config::HttpSection;
use crate::service::metrics::ConnectionClose;

/// The per-connection deadlines, from `[http]`.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    header_timeout: Duration,
    idle: Duration,
    body_pace: Option<BodyPace>,
}

impl ConnectionLimits {
    /// The limits `http` sets.
    pub fn new(http: &HttpSection) -> Self {
        Self {
            header_timeout: Duration::from_millis(http.header_timeout_ms),
            idle: Duration::from_millis(http.idle_timeout_ms),
            body_pace: (http.min_body_bytes_per_second > 0).then(|| BodyPace {
                grace: Duration::from_millis(http.body_grace_ms),
                min_bytes_per_second: http.min_body_bytes_per_second,
            }),
        }
    }
}

/// Serves `router` on every connection `listener` admits until `shutdown` completes; then stops
/// accepting, closes connections that are between requests, lets requests in progress finish
/// (each connection closes after its answer) and returns once every connection has closed.
/// `closed` counts the connections the server closes, by reason. The `io::Result` mirrors
/// `axum::serve`; accept errors are retried rather than returned.
pub async fn serve(
    mut listener: BoundedListener,
    router: Router,
    limits: ConnectionLimits,
    closed: IntCounterVec,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let builder = Arc::new(builder);
    // `stop` tells every connection to wind down; each task holds a `running` sender it never
    // uses, so the receiver yields `None` once the last one has ended.
    let (stop, stopped) = watch::channel(false);
    let (running, mut all_done) = mpsc::channel::<()>(1);
    let mut shutdown = pin!(shutdown);
    loop {
        let admitted = tokio::select! {
            admitted = listener.accept() => admitted,
            () = &mut shutdown => break,
        };
        tokio::spawn(serve_connection(
            admitted,
            Arc::clone(&builder),
            router.clone(),
            limits,
            closed.clone(),
            stopped.clone(),
            running.clone(),
        ));
    }
    drop(listener);
    let _ = stop.send(true);
    drop(running);
    let _ = all_done.recv().await;
    Ok(())
}

/// Serves one connection until it ends, is evicted, or the server stops.
async fn serve_connection(
    admitted: Admitted,
    builder: Arc<http1::Builder>,
    router: Router,
    limits: ConnectionLimits,
    closed: IntCounterVec,
    mut stopped: watch::Receiver<bool>,
    _running: mpsc::Sender<()>,
) {
    let Admitted { stream, peer, slot } = admitted;
    let state = Arc::clone(slot.state());
    let io = TokioIo::new(BoundedStream::new(stream, limits.idle, Arc::clone(&state)));
    let service = {
        let state = Arc::clone(&state);
        service_fn(move |request| {
            answer(
                router.clone(),
                Arc::clone(&state),
                limits.body_pace,
                request,
            )
        })
    };
    let mut conn = pin!(builder.serve_connection(io, service));
    let mut stopping = false;
    let result = loop {
        tokio::select! {
            result = conn.as_mut() => break result,
            // Returning drops the connection, which closes the socket at once. A connection
            // whose head completed just as it was chosen finishes that request first.
            () = state.evicted() => {
                if !state.is_busy() {
                    break Ok(());
                }
                conn.as_mut().graceful_shutdown();
            }
            _ = stopped.changed(), if !stopping => {
                stopping = true;
                if !state.is_busy() {
                    break Ok(());
                }
                conn.as_mut().graceful_shutdown();
            }
        }
    };
    if let Err(e) = &result {
        // hyper's head deadline also ends a keep-alive connection on which nothing arrived.
        if e.is_timeout() {
            state.close_because(if state.head_begun() {
                ConnectionClose::HeaderTimeout
            } else {
                ConnectionClose::Idle
            });
        }
        tracing::trace!(%peer, error = %e, "connection ended with an error");
    }
    if let Some(reason) = state.closed_by() {
        tracing::debug!(%peer, reason = reason.as_str(), "connection closed by the server");
        closed.with_label_values(&[reason.as_str()]).inc();
    }
    drop(slot);
}

/// Runs one request through `router`, marking the connection busy until the answer is sent.
async fn answer(
    router: Router,
    state: Arc<ConnectionState>,
    pace: Option<BodyPace>,
    request: hyper::Request<Incoming>,
) -> Result<hyper::Response<AnswerBody>, Infallible> {
    state.request_started();
    let done = RequestDone(Arc::clone(&state));
    let request = request.map(|body| match pace {
        Some(pace) => Body::new(PacedBody::new(body, pace, state)),
        None => Body::new(body),
    });
    let response = router.oneshot(request).await?;
    Ok(response.map(|body| AnswerBody { body, _done: done }))
}

/// Marks the connection as waiting for its next request head when dropped.
struct RequestDone(Arc<ConnectionState>);

impl Drop for RequestDone {
    fn drop(&mut self) {
        self.0.request_finished(Instant::now());
    }
}

/// An answer's body; hyper drops it once the last byte is written, which ends the request.
struct AnswerBody {
    body: Body,
    _done: RequestDone,
}

impl http_body::Body for AnswerBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The minimum body rate and its grace.
#[derive(Debug, Clone, Copy)]
struct BodyPace {
    grace: Duration,
    min_bytes_per_second: u64,
}

impl BodyPace {
    /// How long the handler may have waited for a body of which `received` bytes arrived.
    fn allowance(&self, received: u64) -> Duration {
        let earned = received as f64 / self.min_bytes_per_second as f64;
        self.grace
            .saturating_add(Duration::try_from_secs_f64(earned).unwrap_or(Duration::MAX))
    }
}

/// A request body that fails once the handler has waited for it longer than
/// `grace + received / min_rate`: the average rate over the waiting time, after the grace.
struct PacedBody {
    body: Incoming,
    pace: BodyPace,
    state: Arc<ConnectionState>,
    received: u64,
    /// Waiting time of earlier reads.
    waited: Duration,
    /// When the current wait began, if the handler is waiting.
    waiting_since: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl PacedBody {
    fn new(body: Incoming, pace: BodyPace, state: Arc<ConnectionState>) -> Self {
        Self {
            body,
            pace,
            state,
            received: 0,
            waited: Duration::ZERO,
            waiting_since: None,
            timer: None,
        }
    }
}

impl http_body::Body for PacedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(since) = this.waiting_since.take() {
                    this.waited += since.elapsed();
                }
                if let Some(data) = frame.as_ref().and_then(|f| f.as_ref().ok()?.data_ref()) {
                    this.received += data.len() as u64;
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let now = Instant::now();
                let since = *this.waiting_since.get_or_insert(now);
                let left = this
                    .pace
                    .allowance(this.received)
                    .saturating_sub(this.waited);
                let deadline = since
                    .checked_add(left)
                    .unwrap_or_else(|| now + Duration::from_secs(365 * 86_400));
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                ready!(timer.as_mut().poll(cx));
                this.state.close_because(ConnectionClose::SlowBody);
                Poll::Ready(Some(Err(Box::new(SlowBody {
                    min_bytes_per_second: this.pace.min_bytes_per_second,
                }))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body that arrived too slowly.
#[derive(Debug)]
struct SlowBody {
    min_bytes_per_second: u64,
}

impl fmt::Display for SlowBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the request body arrived slower than {} bytes per second",
            self.min_bytes_per_second
        )
    }
}

impl std::error::Error for SlowBody {}

/// An admitted connection's socket: fails a read or write that has waited once nothing has
/// been read or written for the idle timeout (hyper then closes the connection).
#[derive(Debug)]
pub struct BoundedStream {
    stream: TcpStream,
    idle: Duration,
    last_activity: Instant,
    /// Set to `last_activity + idle` only when an operation has to wait, so a busy connection
    /// does not touch the timer wheel on every read and write.
    timer: Pin<Box<Sleep>>,
    state: Arc<ConnectionState>,
}

impl BoundedStream {
    fn new(stream: TcpStream, idle: Duration, state: Arc<ConnectionState>) -> Self {
        let now = Instant::now();
        Self {
            stream,
            idle,
            last_activity: now,
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
            state,
        }
    }

    /// Notes the outcome of an operation: activity if it completed, else the idle check.
    fn check<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.last_activity = Instant::now();
            return poll;
        }
        let deadline = self.last_activity + self.idle;
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        ready!(self.timer.as_mut().poll(cx));
        self.state.close_because(ConnectionClose::Idle);
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the connection was idle for too long",
        )))
    }
}

impl AsyncRead for BoundedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let filled = buf.filled().len();
        let poll = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > filled {
            this.state.bytes_arrived();
        }
        this.check(cx, poll)
    }
}

impl AsyncWrite for BoundedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.check(cx, poll)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.check(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
