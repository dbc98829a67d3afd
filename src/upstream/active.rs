//! Active health checks: an HTTP GET to each endpoint of a pool that configures
//! `health_check`, every `interval`. `fall` failures in a row mark the endpoint down;
//! `rise` passes in a row mark it up again. Endpoints start up, so a reload that adds
//! a check never black-holes a pool before its first probe.
//!
//! One scheduler task walks the live snapshot; each probe is its own short task on a
//! fresh connection, so a check never takes a pooled keep-alive connection.

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
use super::health::{now_millis, HealthCheck};
use super::pool::Pool;
use crate::shutdown::Shutdown;

/// How often the scheduler looks for due probes: the resolution of `interval`.
const TICK: Duration = Duration::from_millis(100);

/// Runs the checks of the pools `live` gives (the live config's, read again at every
/// tick) until shutdown.
pub async fn run<P>(live: impl Fn() -> P + Send + 'static, mut shutdown: Shutdown)
where
    P: std::ops::Deref<Target = [Pool]>,
{
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait() => return,
        }
        let pools = live();
        let now = now_millis();
        for pool in pools.iter() {
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
    let stream = TcpStream::connect(endpoint.socket).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = Request::get(path)
        .header(HOST, endpoint.authority.as_str())
        .header(USER_AGENT, "graygate-health-check")
        .body(Empty::<Bytes>::new())?;
    Ok(sender.send_request(request).await?.status())
}
