//! The rollout's clock, on the control plane: one analysis every `[rollout]
//! interval` while a rollout is judged, or a follower's poll every `follow_interval`.
//! Applying a verdict runs on a blocking thread, because it may write the state file.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::reload::Reloader;
use crate::rollout::controller::{now_ms, Job};
use crate::rollout::{follow, prometheus};
use crate::shutdown::Shutdown;

/// How often to look again when there is nothing to do; a reload that adds a rollout,
/// or an action that resumes one, wakes the loop at once.
const IDLE: Duration = Duration::from_secs(60);

/// Analyses (or a follower's polls) until shutdown. The clock runs from the last one,
/// so reloads (a whitelist file that changes every few seconds) never put the next
/// one off. Waiting on Prometheus or on the instance followed happens here, outside
/// the reloader's lock.
pub async fn run(reloader: Arc<Reloader>, mut shutdown: Shutdown) {
    let mut last = Instant::now();
    let mut active = false;
    loop {
        let job = reloader.rollout_job();
        if job.is_some() && !active {
            // A rollout that starts (or resumes) now gets a whole interval of traffic.
            last = Instant::now();
        }
        active = job.is_some();
        let every = job.as_ref().map_or(IDLE, |(every, _)| *every);
        let due = last.checked_add(every).unwrap_or(last + IDLE);
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {
                last = Instant::now();
                if let Some((_, job)) = job {
                    tokio::select! {
                        _ = perform(&reloader, job) => {}
                        _ = shutdown.wait() => return,
                    }
                }
            }
            _ = reloader.rollout_changed() => {}
            _ = shutdown.wait() => return,
        }
    }
}

async fn perform(reloader: &Arc<Reloader>, job: Job) {
    let reloader = Arc::clone(reloader);
    let applied = match job {
        Job::Analyze => tokio::task::spawn_blocking(move || reloader.analyze_rollout(None)),
        Job::Query {
            remote,
            rule,
            version,
            step,
            since_ms,
        } => {
            let counts = prometheus::fetch(&remote, &rule, &version, since_ms, now_ms()).await;
            tokio::task::spawn_blocking(move || reloader.analyze_rollout(Some((step, counts))))
        }
        Job::Follow(remote) => {
            let answer = follow::fetch(&remote).await;
            tokio::task::spawn_blocking(move || reloader.follow_rollout(answer))
        }
        Job::Save => tokio::task::spawn_blocking(move || reloader.retry_rollout_save()),
    };
    if let Err(panic) = applied.await {
        std::panic::resume_unwind(panic.into_panic());
    }
}
