//! Reloading the config: read, parse, validate and compile all of it, then swap it in
//! with one store. Any failure leaves the running config untouched.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info};

use crate::config::{self, ConfigErrors};
use crate::snapshot::LiveConfig;
use crate::upstream::Clients;

#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    live: Arc<LiveConfig>,
    clients: Arc<Clients>,
    /// Serializes reloads, so a slower, older compile never overwrites a newer one.
    in_progress: Mutex<()>,
}

impl Reloader {
    pub fn new(path: PathBuf, live: Arc<LiveConfig>, clients: Arc<Clients>) -> Self {
        Reloader {
            path,
            live,
            clients,
            in_progress: Mutex::new(()),
        }
    }

    /// Reloads now, on the calling thread (it reads files: call it off the runtime).
    pub fn reload(&self) -> Result<(), ConfigErrors> {
        let _one_at_a_time = self.in_progress.lock().unwrap_or_else(|p| p.into_inner());
        let snapshot = config::load(&self.path, &self.clients)?;
        self.live.store(snapshot);
        Ok(())
    }

    /// Reloads on a blocking thread and logs the outcome.
    pub async fn reload_logged(self: &Arc<Self>, trigger: &'static str) {
        let reloader = Arc::clone(self);
        match tokio::task::spawn_blocking(move || reloader.reload()).await {
            Ok(Ok(())) => info!(trigger, path = %self.path.display(), "config reloaded"),
            Ok(Err(errors)) => {
                error!(
                    trigger,
                    "config reload failed; the running config stays in force:\n{errors}"
                )
            }
            Err(panic) => error!(trigger, "config reload panicked: {panic}"),
        }
    }
}

/// Registers `SIGHUP` now (its default action would kill the process) and returns the
/// future that reloads on each one.
pub fn on_sighup(reloader: Arc<Reloader>) -> std::io::Result<impl Future<Output = ()>> {
    let mut hangup = signal(SignalKind::hangup())?;
    Ok(async move {
        while hangup.recv().await.is_some() {
            reloader.reload_logged("SIGHUP").await;
        }
    })
}
