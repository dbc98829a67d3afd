//! The rollout's clock, on the control plane: one analysis every `[rollout]
//! interval` while a rollout is judged, or a follower's poll every `follow_interval`.
//! Applying a verdict runs on a blocking thread, because it may write the state file.
//! Each job runs as a task of its own: a job that panics is logged and costs that one
//! analysis or poll, never the clock (a dead clock would freeze the rollout silently).

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::error;

use super::reload::Reloader;
use crate::rollout::controller::{now_ms, FleetCounts, Job};
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
                    let kind = job.kind();
                    tokio::select! {
                        outcome = contained(perform(Arc::clone(&reloader), job)) => {
                            if let Err(why) = outcome {
                                error!(job = kind, "rollout job panicked: {why}; the rollout's clock goes on");
                            }
                        }
                        _ = shutdown.wait() => return,
                    }
                }
            }
            _ = reloader.rollout_changed() => {}
            _ = shutdown.wait() => return,
        }
    }
}

async fn perform(reloader: Arc<Reloader>, job: Job) {
    match job {
        Job::Analyze => blocking(move || reloader.analyze_rollout(None)).await,
        Job::Query { remote, query } => {
            let identity = &query.identity;
            let counts = prometheus::fetch(
                &remote,
                &identity.rule,
                &identity.canary_version,
                query.since_ms,
                now_ms(),
            )
            .await;
            let fleet = FleetCounts { query, counts };
            blocking(move || reloader.analyze_rollout(Some(fleet))).await
        }
        Job::Follow(remote) => {
            let answer = follow::fetch(&remote).await;
            blocking(move || reloader.follow_rollout(answer)).await
        }
        Job::Save => blocking(move || reloader.retry_rollout_save()).await,
    }
}

/// Runs `work` on a blocking thread; its panic, if it panics, goes on in the caller.
async fn blocking(work: impl FnOnce() + Send + 'static) {
    if let Err(err) = tokio::task::spawn_blocking(work).await {
        if err.is_panic() {
            std::panic::resume_unwind(err.into_panic());
        }
    }
}

/// Runs `job` as a task of its own, so its panic ends that task only: `Err` with the
/// panic's message. Dropping the future (at shutdown) aborts the task.
async fn contained(job: impl Future<Output = ()> + Send + 'static) -> Result<(), String> {
    struct AbortOnDrop(tokio::task::AbortHandle);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let task = tokio::spawn(job);
    let _abort = AbortOnDrop(task.abort_handle());
    match task.await {
        Ok(()) => Ok(()),
        Err(err) if err.is_panic() => Err(panic_message(err.into_panic().as_ref())),
        Err(_) => Ok(()),
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_job_is_contained_and_the_next_one_runs() {
        let outcome = contained(blocking(|| panic!("a blocking job's bug"))).await;
        assert_eq!(outcome, Err("a blocking job's bug".to_string()));
        let outcome = contained(async { panic!("an async job's bug: {}", 42) }).await;
        assert_eq!(outcome, Err("an async job's bug: 42".to_string()));
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        let outcome = contained(blocking(move || {
            flag.store(true, std::sync::atomic::Ordering::SeqCst)
        }))
        .await;
        assert_eq!(outcome, Ok(()));
        assert!(ran.load(std::sync::atomic::Ordering::SeqCst));
    }
}
