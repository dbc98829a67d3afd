//! Active health checks: an HTTP GET to each endpoint of a pool that configures
//! `health_check`, every `interval`. `fall` failures in a row mark the endpoint down;
//! `rise` passes in a row mark it up again. Endpoints start up, so a reload that adds
//! a check never black-holes a pool before its first probe.
//!
//! One scheduler task walks the live snapshot; each probe is its own short task on a
//! fresh connection, so a check never takes a pooled keep-alive connection.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, USER_AGENT};
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::MissedTickBehavior;
use tracing::{debug, info, warn};

use super::endpoint::Endpoint;
use super::health::now_millis;
use crate::config::model::HealthCheck;
use crate::shutdown::Shutdown;
use crate::snapshot::LiveConfig;

/// How often the scheduler looks for due probes: the resolution of `interval`.
const TICK: Duration = Duration::from_millis(100);

/// One endpoint's active-check state.
#[derive(Debug, Default)]
pub(super) struct ActiveState {
    pub(super) down: AtomicBool,
    passes: AtomicU32,
    failures: AtomicU32,
    /// When the next probe is due (process-clock milliseconds).
    next_probe: AtomicU64,
}

impl ActiveState {
    /// Claims the probe that is due now, if one is: only one caller wins it.
    fn claim(&self, now: u64, interval: Duration) -> bool {
        let due = self.next_probe.load(Ordering::Relaxed);
        let next = now + u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        due <= now
            && self
                .next_probe
                .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Counts a probe result; returns the new state when it changed (`true`: down).
    fn record(&self, passed: bool, check: &HealthCheck) -> Option<bool> {
        let down = self.down.load(Ordering::Relaxed);
        if passed {
            self.failures.store(0, Ordering::Relaxed);
            let passes = self.passes.fetch_add(1, Ordering::Relaxed) + 1;
            (down && passes >= check.rise).then(|| {
                self.down.store(false, Ordering::Relaxed);
                false
            })
        } else {
            self.passes.store(0, Ordering::Relaxed);
            let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
            (!down && failures >= check.fall).then(|| {
                self.down.store(true, Ordering::Relaxed);
                true
            })
        }
    }
}

/// Runs the checks of whatever config is live until shutdown.
pub async fn run(live: Arc<LiveConfig>, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait() => return,
        }
        let snapshot = live.load();
        let now = now_millis();
        for pool in snapshot.pools.iter() {
            let Some(check) = &pool.health_check else {
                continue;
            };
            for endpoint in &pool.endpoints {
                if endpoint.health.active.claim(now, check.interval) {
                    tokio::spawn(probe(
                        Arc::clone(endpoint),
                        check.clone(),
                        pool.name.clone(),
                    ));
                }
            }
        }
    }
}

async fn probe(endpoint: Arc<Endpoint>, check: HealthCheck, pool: Box<str>) {
    let result = tokio::time::timeout(check.timeout, get(&endpoint, &check.path)).await;
    let passed = matches!(result, Ok(Ok(status)) if status.is_success() || status.is_redirection());
    if !passed {
        debug!(
            pool = &*pool,
            endpoint = &*endpoint.address,
            ?result,
            "health check failed"
        );
    }
    match endpoint.health.active.record(passed, &check) {
        Some(true) => warn!(
            pool = &*pool,
            endpoint = &*endpoint.address,
            fall = check.fall,
            "endpoint marked down by health check"
        ),
        Some(false) => info!(
            pool = &*pool,
            endpoint = &*endpoint.address,
            rise = check.rise,
            "endpoint back up"
        ),
        None => {}
    }
}

async fn get(
    endpoint: &Endpoint,
    path: &str,
) -> Result<StatusCode, Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(endpoint.authority.as_str()).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = Request::get(path)
        .header(HOST, endpoint.authority.as_str())
        .header(USER_AGENT, "graygate-health-check")
        .body(Empty::<Bytes>::new())?;
    Ok(sender.send_request(request).await?.status())
}
