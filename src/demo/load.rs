//! A small load generator for the demos: `graygate demo-load --target URL --rate N`.
//! It sends GETs at a steady rate (open loop: a slow gateway does not slow it down,
//! and at most [`MAX_IN_FLIGHT`] wait at once; beyond, a tick is skipped and counted),
//! each dressed as a request from a different kind of client, so that every rule of
//! the demo configs sees traffic:
//!
//! | share | what the request carries |
//! | --- | --- |
//! | 90 % | `x-user-id`: one of `--users` ids (the rest are anonymous) |
//! | 50 % | `?channel=web`; 5 % `?channel=appstore` |
//! | 40 % / 40 % / 20 % | an app, a mobile-browser or a desktop `User-Agent` |
//! | 10 % | `Cookie: city=110000` |
//! | 1 % | `x-user-group: internal-testers` |
//!
//! It tallies the answers by the pool that gave them (the first word of a demo
//! upstream's body) and by status class.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tracing::info;

use crate::shutdown::Shutdown;

/// Requests waiting for an answer at once; a tick beyond this is skipped.
pub const MAX_IN_FLIGHT: usize = 256;
/// The longest one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

const USER_AGENTS: [(f64, &str); 3] = [
    (0.4, "MyShop-App/5.1 (iPhone; iOS 17)"),
    (0.8, "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0) Mobile"),
    (1.0, "Mozilla/5.0 (Windows NT 10.0; Win64; x64)"),
];

#[derive(Debug, Clone)]
pub struct LoadSettings {
    /// `http://host:port`, with a path if wanted.
    pub target: Uri,
    /// Requests per second.
    pub rate: f64,
    /// Distinct user ids.
    pub users: u32,
    /// How often to log the tally (`None`: never).
    pub report_every: Option<Duration>,
}

/// What came back so far.
#[derive(Debug, Default)]
pub struct Tally {
    /// By pool (or `gateway` for the gateway's own answers), then status class.
    pub answers: BTreeMap<(String, String), u64>,
    /// Requests that got no answer (refused, reset, timed out).
    pub failed: u64,
    /// Ticks skipped because [`MAX_IN_FLIGHT`] requests were waiting.
    pub skipped: u64,
}

/// One request of the mix, from draws uniform in [0, 1).
pub fn request(target: &Uri, users: u32, draw: &mut impl FnMut() -> f64) -> Request<Empty<Bytes>> {
    let channel = match draw() {
        d if d < 0.50 => Some("web"),
        d if d < 0.55 => Some("appstore"),
        _ => None,
    };
    let base = target.to_string();
    let base = base.trim_end_matches('/');
    let uri = match channel {
        Some(channel) => format!("{base}/?channel={channel}"),
        None => format!("{base}/"),
    };
    let mut builder = Request::get(uri);
    if draw() < 0.9 {
        let id = 1 + (draw() * f64::from(users.max(1))) as u32;
        builder = builder.header("x-user-id", id.to_string());
    }
    let pick = draw();
    let agent = USER_AGENTS
        .iter()
        .find(|(upto, _)| pick < *upto)
        .map_or(USER_AGENTS[2].1, |(_, agent)| agent);
    builder = builder.header("user-agent", agent);
    if draw() < 0.1 {
        builder = builder.header("cookie", "city=110000");
    }
    if draw() < 0.01 {
        builder = builder.header("x-user-group", "internal-testers");
    }
    builder
        .body(Empty::new())
        .expect("the target is a valid URI")
}

/// Sends the load until `shutdown`; the tally.
pub async fn run(settings: LoadSettings, mut shutdown: Shutdown) -> Arc<Mutex<Tally>> {
    let tally = Arc::new(Mutex::new(Tally::default()));
    if settings.rate <= 0.0 {
        return tally;
    }
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / settings.rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut reports = settings.report_every.map(tokio::time::interval);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = async { reports.as_mut().expect("guarded").tick().await }, if reports.is_some() => {
                report(&tally);
                continue;
            }
            _ = shutdown.wait() => return tally,
        }
        if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
            lock(&tally).skipped += 1;
            continue;
        }
        let request = request(&settings.target, settings.users, &mut fastrand::f64);
        let (client, tally, in_flight) =
            (client.clone(), Arc::clone(&tally), Arc::clone(&in_flight));
        in_flight.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let answer = tokio::time::timeout(REQUEST_TIMEOUT, async {
                let response = client.request(request).await.ok()?;
                let status = response.status();
                let body = response.into_body().collect().await.ok()?.to_bytes();
                Some((status, body))
            })
            .await
            .ok()
            .flatten();
            in_flight.fetch_sub(1, Ordering::Relaxed);
            let mut tally = lock(&tally);
            match answer {
                Some((status, body)) => {
                    let text = String::from_utf8_lossy(&body);
                    // A demo upstream's answers start with its pool's name; the
                    // gateway's own (502, 503, 504) do not name one.
                    let pool = match text.split_whitespace().next() {
                        Some(word) if !word.starts_with(|c: char| c.is_ascii_digit()) => word,
                        _ => "gateway",
                    };
                    let class = format!("{}xx", status.as_u16() / 100);
                    *tally.answers.entry((pool.to_string(), class)).or_default() += 1;
                }
                None => tally.failed += 1,
            }
        });
    }
}

fn lock(tally: &Mutex<Tally>) -> std::sync::MutexGuard<'_, Tally> {
    tally.lock().unwrap_or_else(|p| p.into_inner())
}

/// Logs the tally so far on one line.
fn report(tally: &Mutex<Tally>) {
    let tally = lock(tally);
    let answers: Vec<String> = tally
        .answers
        .iter()
        .map(|((pool, class), n)| format!("{pool} {class} {n}"))
        .collect();
    info!(
        answers = answers.join(", "),
        failed = tally.failed,
        skipped = tally.skipped,
        "demo-load so far"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_has_every_kind_of_client() {
        let target: Uri = "http://gateway:8080".parse().unwrap();
        let mut rng = fastrand::Rng::with_seed(7);
        let (mut web, mut appstore, mut ids, mut testers, mut city, mut app) = (0, 0, 0, 0, 0, 0);
        let n = 20_000;
        for _ in 0..n {
            let r = request(&target, 100, &mut || rng.f64());
            let uri = r.uri().to_string();
            assert!(uri.starts_with("http://gateway:8080/"), "{uri}");
            web += usize::from(uri.ends_with("channel=web"));
            appstore += usize::from(uri.ends_with("channel=appstore"));
            if let Some(id) = r.headers().get("x-user-id") {
                let id: u32 = id.to_str().unwrap().parse().unwrap();
                assert!((1..=100).contains(&id));
                ids += 1;
            }
            testers += usize::from(r.headers().contains_key("x-user-group"));
            city += usize::from(r.headers().contains_key("cookie"));
            app += usize::from(
                r.headers()["user-agent"]
                    .to_str()
                    .unwrap()
                    .starts_with("MyShop"),
            );
        }
        let share = |k: usize| k as f64 / n as f64;
        assert!((share(web) - 0.5).abs() < 0.02, "web {}", share(web));
        assert!((share(appstore) - 0.05).abs() < 0.01);
        assert!((share(ids) - 0.9).abs() < 0.02);
        assert!((share(testers) - 0.01).abs() < 0.005);
        assert!((share(city) - 0.1).abs() < 0.01);
        assert!((share(app) - 0.4).abs() < 0.02);
    }
}
