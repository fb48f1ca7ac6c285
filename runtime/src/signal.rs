//! The shutdown signal of every Agora server binary: a server's `run(listener, shutdown)` takes the future
//! [`shutdown_signal`] returns, so the first SIGINT (Ctrl-C) or SIGTERM starts its graceful drain.

use std::future::Future;

use tokio::signal::unix::{SignalKind, signal};

/// Installs the SIGINT and SIGTERM handlers now (so a signal that arrives before the future is first polled is not
/// lost, nor kills the process) and returns a future that resolves at the first of them, logging which. Must be
/// called within a tokio runtime; the error is the kernel's refusal to install a handler.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        tracing::info!(signal = name, "shutting down");
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// nextest runs each test in a process of its own, so the signal reaches only this test.
    #[tokio::test]
    async fn sigterm_resolves_the_future_and_does_not_kill_the_process() {
        let shutdown = shutdown_signal().unwrap();
        tokio::pin!(shutdown);
        // Not before a signal.
        assert!(tokio::time::timeout(Duration::from_millis(50), &mut shutdown).await.is_err());
        let status = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .expect("`kill` (procps or coreutils) runs");
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(10), shutdown).await.expect("SIGTERM resolves the shutdown future");
    }
}
