//! Reloading the config as one transaction: read the file and every whitelist file,
//! parse, validate and compile all of it, then swap the new snapshot in with one store.
//! Any failure leaves the running config untouched and is reported with the same
//! messages `graygate check` prints.
//!
//! Triggers (file watch, `SIGHUP`, `POST /admin/reload`) all come here; reloads run one
//! at a time, so a slower, older compile never overwrites a newer one.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info};

use crate::config::{self, ConfigErrors};
use crate::shared::Shared;
use crate::snapshot::LiveConfig;

#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    live: Arc<LiveConfig>,
    shared: Arc<Shared>,
    /// Held for a whole reload; holds the last failure's messages.
    last_error: Mutex<Option<String>>,
}

/// What a successful reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new snapshot is in force, with this generation.
    Applied(u64),
    /// The file means what the running config means; nothing was swapped.
    Unchanged(u64),
}

impl Outcome {
    pub fn generation(self) -> u64 {
        match self {
            Outcome::Applied(g) | Outcome::Unchanged(g) => g,
        }
    }
}

impl Reloader {
    /// Loads the config for the first time, as generation 1.
    pub fn start(path: PathBuf, shared: Arc<Shared>) -> Result<Reloader, ConfigErrors> {
        let mut snapshot = config::load(&path, &shared)?;
        snapshot.origin.generation = 1;
        shared.metrics.set_generation(1);
        shared.metrics.retain(&snapshot.series);
        let live = Arc::new(LiveConfig::new(snapshot));
        Ok(Reloader {
            path,
            live,
            shared,
            last_error: Mutex::new(None),
        })
    }

    pub fn live(&self) -> &Arc<LiveConfig> {
        &self.live
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last reload's errors, cleared by the next good reload.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reloads now, on the calling thread (it reads files: call it off the runtime).
    pub fn reload(&self) -> Result<Outcome, ConfigErrors> {
        let mut last_error = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        let metrics = &self.shared.metrics;
        let current = self.live.load();
        let result = match config::load(&self.path, &self.shared) {
            Ok(next) if next.origin.fingerprint == current.origin.fingerprint => {
                metrics.retain(&current.series);
                Ok(Outcome::Unchanged(current.origin.generation))
            }
            Ok(mut next) => {
                let generation = current.origin.generation + 1;
                next.origin.generation = generation;
                let series = next.series.clone();
                self.live.store(next);
                metrics.set_generation(generation);
                metrics.retain(&series);
                Ok(Outcome::Applied(generation))
            }
            Err(errors) => {
                metrics.retain(&current.series);
                Err(errors)
            }
        };
        metrics.reload(result.is_ok());
        *last_error = result.as_ref().err().map(|errors| errors.to_string());
        result
    }

    /// Reloads on a blocking thread and logs the outcome.
    pub async fn reload_logged(
        self: &Arc<Self>,
        trigger: &'static str,
    ) -> Result<Outcome, ConfigErrors> {
        let reloader = Arc::clone(self);
        let result = tokio::task::spawn_blocking(move || reloader.reload())
            .await
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()));
        match &result {
            Ok(Outcome::Applied(generation)) => info!(trigger, generation, "config reloaded"),
            Ok(Outcome::Unchanged(generation)) => {
                info!(trigger, generation, "config reloaded: no effective change")
            }
            Err(errors) => error!(
                trigger,
                "config reload failed; the running config stays in force:\n{errors}"
            ),
        }
        result
    }
}

/// Registers `SIGHUP` now (its default action would kill the process) and returns the
/// future that reloads on each one.
pub fn on_sighup(reloader: Arc<Reloader>) -> std::io::Result<impl Future<Output = ()>> {
    let mut hangup = signal(SignalKind::hangup())?;
    Ok(async move {
        while hangup.recv().await.is_some() {
            let _ = reloader.reload_logged("SIGHUP").await;
        }
    })
}
