//! Helpers for the rollout and fleet suites: upstreams whose behaviour a test changes
//! mid-run (or kills), closed-loop traffic from many users spread over gateways, and
//! the admin API of a rollout.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use super::{bin, config, get, send, Gateway, STEP};

// ---------------------------------------------------------------------------------
// Upstreams the test can make misbehave, and kill.
// ---------------------------------------------------------------------------------

pub const HEALTHY: u8 = 0;
pub const ERRORS: u8 = 1;

/// An upstream answering its name; `mode` and `delay_ms` change how, at any time.
/// Dropping it (or `kill`) closes its listener and every connection at once.
pub struct Backend {
    pub addr: SocketAddr,
    pub mode: Arc<AtomicU8>,
    pub delay_ms: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Backend {
    pub async fn start(name: &'static str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, delay_ms) = (
            Arc::new(AtomicU8::new(HEALTHY)),
            Arc::new(AtomicU64::new(0)),
        );
        let (m, d) = (Arc::clone(&mode), Arc::clone(&delay_ms));
        let task = tokio::spawn(async move {
            // The connections live in this task's set, so aborting it closes them all.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (m, d) = (Arc::clone(&m), Arc::clone(&d));
                let service = service_fn(move |_request: Request<Incoming>| {
                    let (m, d) = (Arc::clone(&m), Arc::clone(&d));
                    async move {
                        let delay = d.load(Ordering::Relaxed);
                        if delay > 0 {
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                        }
                        let status = match m.load(Ordering::Relaxed) {
                            ERRORS => StatusCode::SERVICE_UNAVAILABLE,
                            _ => StatusCode::OK,
                        };
                        let response = Response::builder()
                            .status(status)
                            .header("x-upstream", name)
                            .body(Full::new(Bytes::from(name)))
                            .unwrap();
                        Ok::<_, Infallible>(response)
                    }
                });
                connections.spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
                while connections.try_join_next().is_some() {}
            }
        });
        Backend {
            addr,
            mode,
            delay_ms,
            task,
        }
    }

    pub fn kill(&self) {
        self.task.abort();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct Backends {
    pub blue: Backend,
    pub green: Backend,
    pub canary: Backend,
}

impl Backends {
    pub async fn start() -> Backends {
        Backends {
            blue: Backend::start("blue").await,
            green: Backend::start("green").await,
            canary: Backend::start("canary").await,
        }
    }

    /// A config with the three pools (canary at version `version`), a per-mille rule
    /// `canary-rollout` at `file_permille`, and `rollout` appended.
    pub fn config(&self, version: &str, file_permille: u16, rollout: &str) -> String {
        config(
            self.blue.addr,
            self.green.addr,
            self.canary.addr,
            &format!(
                r#"
[routing]
stable = "blue"
user_key = {{ header = "x-user-id" }}
decision_headers = true

[[rules]]
name = "staff"
match = {{ whitelist = ["staff-1"] }}
to = "green"

[[rules]]
name = "canary-rollout"
match = {{ permille = {file_permille}, salt = "v2" }}
to = "canary"

{rollout}
"#
            ),
        )
        .replace(
            "[pools.canary]\n",
            &format!("[pools.canary]\nversion = \"{version}\"\n"),
        )
    }
}

/// A rollout judged every 250 ms that a healthy canary on loopback passes at once:
/// margins wide enough for the noise of a debug build on a shared machine.
pub fn fast_rollout(steps: &str, min_step: &str) -> String {
    format!(
        r#"[rollout]
rule = "canary-rollout"
steps = {steps}
interval = "250ms"
min_step_duration = "{min_step}"
min_requests = 100
failure_limit = 2
inconclusive_limit = 100000

[rollout.judge]
error_margin = 0.05
max_error_rate = 0.1
latency_margin = 1.0
max_p99 = "5s"
"#
    )
}

// ---------------------------------------------------------------------------------
// Traffic: many users, real requests, every answer kept.
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone)]
#[allow(dead_code, reason = "printed when an assertion fails")]
pub struct Answered {
    pub at: Instant,
    pub user: u64,
    pub status: u16,
    pub pool: String,
    pub upstream: String,
}

/// Closed-loop traffic from random users over `workers` keep-alive connections,
/// until stopped.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Answered>>>,
    workers: Vec<JoinHandle<()>>,
}

impl Traffic {
    /// Traffic to one gateway.
    pub fn start(gw: &Gateway, workers: usize) -> Traffic {
        Traffic::spread(&[(gw, 1.0)], workers)
    }

    /// Each request goes to one of `gateways`, with the chance its weight gives it.
    pub fn spread(gateways: &[(&Gateway, f64)], workers: usize) -> Traffic {
        Traffic::impatient(gateways, workers, STEP)
    }

    /// As [`Traffic::spread`], from clients that give up on an answer after
    /// `patience`. A request that fails or is given up on is kept with status 0.
    pub fn impatient(gateways: &[(&Gateway, f64)], workers: usize, patience: Duration) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .build_http::<Full<Bytes>>();
        let total: f64 = gateways.iter().map(|(_, w)| w).sum();
        let mut below = 0.0;
        let targets: Arc<Vec<(String, f64)>> = Arc::new(
            gateways
                .iter()
                .map(|(gw, w)| {
                    below += w / total;
                    (gw.url("/"), below)
                })
                .collect(),
        );
        let workers = (0..workers as u64)
            .map(|w| {
                let (stop, seen, client) = (Arc::clone(&stop), Arc::clone(&seen), client.clone());
                let targets = Arc::clone(&targets);
                tokio::spawn(async move {
                    let mut rng = fastrand::Rng::with_seed(w);
                    while !stop.load(Ordering::Relaxed) {
                        let user = rng.u64(..1_000_000);
                        let draw = rng.f64();
                        let url = targets
                            .iter()
                            .find(|(_, below)| draw < *below)
                            .unwrap_or(&targets[targets.len() - 1])
                            .0
                            .clone();
                        let request = Request::get(&url)
                            .header("x-user-id", user.to_string())
                            .body(Full::new(Bytes::new()))
                            .unwrap();
                        let Ok(Ok(response)) =
                            tokio::time::timeout(patience, client.request(request)).await
                        else {
                            seen.lock().unwrap().push(Answered {
                                at: Instant::now(),
                                user,
                                status: 0,
                                pool: String::new(),
                                upstream: String::new(),
                            });
                            continue;
                        };
                        let header = |name: &str| {
                            response
                                .headers()
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string()
                        };
                        let (pool, upstream) = (header("x-graygate-pool"), header("x-upstream"));
                        let status = response.status().as_u16();
                        let _ = response.into_body().collect().await;
                        seen.lock().unwrap().push(Answered {
                            at: Instant::now(),
                            user,
                            status,
                            pool,
                            upstream,
                        });
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            seen,
            workers,
        }
    }

    pub async fn stop(self) -> Vec<Answered> {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            let _ = worker.await;
        }
        Arc::try_unwrap(self.seen).unwrap().into_inner().unwrap()
    }
}

// ---------------------------------------------------------------------------------
// The admin API and the CLI.
// ---------------------------------------------------------------------------------

pub async fn status(gw: &Gateway) -> Value {
    let answer = get(&gw.admin_url("/admin/rollout"), &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    serde_json::from_str(&answer.body).unwrap()
}

pub async fn post(gw: &Gateway, path: &str) -> (StatusCode, Value) {
    let answer = send(
        Request::post(gw.admin_url(path))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    (
        answer.status,
        serde_json::from_str(&answer.body).unwrap_or(Value::Null),
    )
}

/// Polls `/admin/rollout` until `done` holds; the status that made it hold.
pub async fn wait_for(
    gw: &Gateway,
    limit: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let s = status(gw).await;
        if done(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} within {limit:?}; status: {s:#}\nlogs:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn state(s: &Value) -> &str {
    s["state"].as_str().unwrap()
}

/// `graygate rollout ARGS --admin ADDR`: exit code, stdout, stderr.
pub fn cli(gw: &Gateway, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(bin())
        .arg("rollout")
        .args(args)
        .args(["--admin", &gw.admin.to_string()])
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The failed checks of the latest analysis.
pub fn failed_checks(s: &Value) -> std::collections::BTreeSet<String> {
    s["analyses"][0]["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["result"] == "fail")
        .map(|c| c["check"].as_str().unwrap().to_string())
        .collect()
}
