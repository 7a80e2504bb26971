//! Shutdown: [`shutdown_signal`] (SIGINT or SIGTERM, for the binary) and the notice that tells
//! request handlers shutdown has begun — new learn requests get 503, open NDJSON streams stop.

use tokio::sync::watch;

/// Completes on SIGINT (ctrl-c) or, on unix, SIGTERM. If a handler cannot be installed, that
/// signal is not awaited (and the failure is logged).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received; shutting down"),
        () = terminate => tracing::info!("SIGTERM received; shutting down"),
    }
}

/// Starts shutdown (held by `service::run`).
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

/// Whether shutdown has begun (a cheap clone per handler).
#[derive(Debug, Clone)]
pub struct ShutdownNotice {
    rx: watch::Receiver<bool>,
}

/// A linked trigger and notice.
pub fn channel() -> (ShutdownTrigger, ShutdownNotice) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger { tx }, ShutdownNotice { rx })
}

impl ShutdownTrigger {
    /// Tells every notice that shutdown has begun.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }
}

impl ShutdownNotice {
    /// Whether shutdown has begun.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Completes once shutdown has begun (at once if it already has, or if the trigger is gone).
    pub async fn triggered(&mut self) {
        let _ = self.rx.wait_for(|begun| *begun).await;
    }
}
