//! Reloading the config as one transaction: read the file and every whitelist file,
//! parse, validate and compile all of it, then swap the new snapshot in with one store.
//! Any failure leaves the running config untouched and is reported with the same
//! messages `graygate check` prints.
//!
//! Triggers (file watch, `SIGHUP`, `POST /admin/reload`) all come here; reloads run one
//! at a time, so a slower, older compile never overwrites a newer one.
//!
//! The reloader is the one writer of the live snapshot. The rollout controller changes
//! weights through it, under the same lock, and every compiled config passes through
//! the controller before it goes live, so a reload never undoes a weight and a weight
//! change never undoes a reload.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;
use tracing::{error, info};

use super::dns::{self, Dns};
use crate::config::{self, ConfigErrors};
use crate::rollout::controller::{now_ms, ActionError, FleetCounts, Job, Rollouts};
use crate::rollout::follow::LeaderState;
use crate::rollout::machine::Input;
use crate::shared::Shared;
use crate::snapshot::LiveConfig;

#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    live: Arc<LiveConfig>,
    shared: Arc<Shared>,
    /// Held for a whole reload and for every change of rollout weight.
    inner: Mutex<Inner>,
    /// Pinged when a reload may have changed the rollout (its interval, its presence).
    rollout_changed: Notify,
    /// Pinged when a reload may have changed the endpoint names or their schedule.
    names_changed: Notify,
    /// Looks endpoint names up; `server.dns` as it was at start.
    dns: Dns,
}

#[derive(Debug)]
struct Inner {
    /// The last reload's errors, cleared by the next good reload.
    last_error: Option<String>,
    rollouts: Rollouts,
}

/// An operator's rollout action, as the admin API and the CLI name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutAction {
    Pause,
    Resume,
    Promote { full: bool },
    Abort,
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
        let mut rollouts = Rollouts::new(shared.metrics.rollout());
        let dns = Dns::new(&snapshot.file);
        let snapshot = rollouts.adopt(snapshot, now_ms());
        let live = Arc::new(LiveConfig::new(snapshot));
        Ok(Reloader {
            path,
            live,
            shared,
            inner: Mutex::new(Inner {
                last_error: None,
                rollouts,
            }),
            rollout_changed: Notify::new(),
            names_changed: Notify::new(),
            dns,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
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

    pub fn dns(&self) -> &Dns {
        &self.dns
    }

    /// The last reload's errors, cleared by the next good reload.
    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    /// Reloads now, on the calling thread (it reads files: call it off the runtime).
    pub fn reload(&self) -> Result<Outcome, ConfigErrors> {
        let mut inner = self.lock();
        // A reload is also when a rotated access log is let go (as nginx's).
        self.shared.access_logs.reopen();
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
                let series = Arc::clone(&next.series);
                let next = inner.rollouts.adopt(next, now_ms());
                self.live.store(next);
                self.rollout_changed.notify_one();
                self.names_changed.notify_one();
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
        inner.last_error = result.as_ref().err().map(|errors| errors.to_string());
        result
    }

    /// Swaps in the live snapshot with its endpoint names as they resolve now, if
    /// that changes any endpoint (off the runtime: it waits for a reload under way).
    pub fn refresh_endpoints(&self) {
        let _inner = self.lock();
        if let Some(next) = self.live.load().with_resolved(&self.shared) {
            self.live.store(next);
        }
    }

    /// Resolves when a reload may have changed the endpoint names.
    pub async fn names_changed(&self) {
        self.names_changed.notified().await
    }

    /// Runs one rollout analysis now, on this instance's cohorts or on the fleet's
    /// counts, and applies its verdict (it may write the state file: call it off the
    /// runtime).
    pub fn analyze_rollout(&self, fleet: Option<FleetCounts>) {
        let mut inner = self.lock();
        if let Some(next) = inner.rollouts.analyze(&self.live.load(), now_ms(), fleet) {
            self.live.store(next);
        }
    }

    /// Applies what a follower's poll found (off the runtime, as above).
    pub fn follow_rollout(&self, answer: Result<LeaderState, String>) {
        let mut inner = self.lock();
        if let Some(next) = inner.rollouts.follow(&self.live.load(), now_ms(), answer) {
            self.live.store(next);
        }
    }

    /// Tries again to save a rollout state whose save failed (off the runtime).
    pub fn retry_rollout_save(&self) {
        self.lock().rollouts.retry_save();
    }

    /// `/admin/rollout/state`, for followers; `None` without a rollout.
    pub fn rollout_leader_state(&self) -> Option<LeaderState> {
        self.lock().rollouts.leader_state()
    }

    /// An operator's action on the rollout; the status after it, or why not.
    pub fn act_on_rollout(&self, action: RolloutAction) -> Result<Value, ActionError> {
        let mut inner = self.lock();
        let input = match action {
            RolloutAction::Pause => Input::Pause,
            RolloutAction::Resume => Input::Resume,
            RolloutAction::Promote { full } => Input::Promote { full },
            RolloutAction::Abort => Input::Abort,
        };
        if let Some(next) = inner.rollouts.act(&self.live.load(), input, now_ms())? {
            self.live.store(next);
        }
        self.rollout_changed.notify_one();
        Ok(inner
            .rollouts
            .status()
            .expect("an action applied to a rollout"))
    }

    /// `/admin/rollout`, or `None` without a rollout.
    pub fn rollout_status(&self) -> Option<Value> {
        self.lock().rollouts.status()
    }

    /// What the rollout's clock does next, and how long after the last time.
    pub fn rollout_job(&self) -> Option<(std::time::Duration, Job)> {
        self.lock().rollouts.job()
    }

    /// Resolves when a reload or an action may have changed the rollout's timing.
    pub async fn rollout_changed(&self) {
        self.rollout_changed.notified().await
    }

    /// Reloads on a blocking thread and logs the outcome.
    pub async fn reload_logged(
        self: &Arc<Self>,
        trigger: &'static str,
    ) -> Result<Outcome, ConfigErrors> {
        // A name the new config brings is looked up first, so that its pool has
        // endpoints from the first request.
        dns::resolve_unknown_in_file(self, &self.path).await;
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

/// Registers `SIGUSR1` now and returns the future that, on each one, has the access
/// log files opened again (nginx's `USR1`): after logrotate renames a file, the lines go
/// to a new one.
pub fn on_sigusr1(reloader: Arc<Reloader>) -> std::io::Result<impl Future<Output = ()>> {
    let mut user1 = signal(SignalKind::user_defined1())?;
    Ok(async move {
        while user1.recv().await.is_some() {
            info!("SIGUSR1: opening the access log files again");
            reloader.shared().access_logs.reopen();
        }
    })
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
