//! The rollout's clock: one analysis every `[rollout] interval` while a rollout is
//! judged, on the control plane. Analyses and actions run on a blocking thread,
//! because applying a verdict may write the state file.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::reload::Reloader;
use crate::shutdown::Shutdown;

/// How often to look again when no rollout is judged; a reload that adds one, or an
/// action that resumes one, wakes the loop at once.
const IDLE: Duration = Duration::from_secs(60);

/// Analyses until shutdown. The clock runs from the last analysis, so reloads (a
/// whitelist file that changes every few seconds) never put the next one off.
pub async fn run(reloader: Arc<Reloader>, mut shutdown: Shutdown) {
    let mut last = Instant::now();
    let mut judged = false;
    loop {
        let interval = reloader.rollout_interval();
        if interval.is_some() && !judged {
            // A rollout that starts (or resumes) now gets a whole interval of traffic.
            last = Instant::now();
        }
        judged = interval.is_some();
        let due = last + interval.unwrap_or(IDLE);
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {
                last = Instant::now();
                if judged {
                    let reloader = Arc::clone(&reloader);
                    let analysis = tokio::task::spawn_blocking(move || reloader.analyze_rollout());
                    if let Err(panic) = analysis.await {
                        std::panic::resume_unwind(panic.into_panic());
                    }
                }
            }
            _ = reloader.rollout_changed() => {}
            _ = shutdown.wait() => return,
        }
    }
}
