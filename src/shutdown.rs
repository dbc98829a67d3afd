//! Shutdown as its own small type: one trigger, any number of listeners, and the
//! signals (`SIGTERM`, `SIGINT`) that pull the trigger.

use std::future::Future;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::info;

/// Fires shutdown for every [`Shutdown`] made from the same channel.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// Resolves once shutdown has been triggered; cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    pub fn fire(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    /// Waits until shutdown is triggered (at once if it already was, or if the
    /// trigger is gone).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|fired| *fired).await;
    }

    /// Whether shutdown was triggered since this `Shutdown` was made: one atomic load,
    /// cheap enough to ask per request. (A copy made after the trigger fired does not
    /// see it here; [`Shutdown::wait`] does.)
    pub fn is_fired(&self) -> bool {
        self.0.has_changed().unwrap_or(true)
    }
}

/// Registers `SIGTERM` and `SIGINT` now, so no signal arrives unhandled, and returns
/// the future that fires `trigger` on the first of them.
pub fn on_signals(trigger: Trigger) -> std::io::Result<impl Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!(signal = name, "shutting down: draining in-flight requests");
        trigger.fire();
    })
}
