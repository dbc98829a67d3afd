//! Metrics, the admin listener and the access log, end to end: the real binary between
//! real upstreams and clients, its `/metrics` read with a real exposition parser
//! (`prometheus-parse`), checked by `promtool check metrics` and scraped by a real
//! Prometheus server.
//!
//! Every test starts its own gateway (and, where used, its own Prometheus) on
//! 127.0.0.1 ephemeral ports, so the tests run in parallel without sharing anything.
//! External tools: `/usr/bin/promtool` and `/usr/bin/prometheus`, from Debian's
//! `prometheus` package.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::prometheus::Prometheus;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use prometheus_parse::{Sample, Scrape, Value};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

/// The histogram bounds `graygate_request_duration_seconds` (and the time to first
/// byte) is exported with: SPEC's up to 30 s, then on to 5 minutes for long streams.
const DURATION_BOUNDS: [f64; 19] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0,
    30.0, 60.0, 120.0, 300.0,
];

/// One `/metrics` scrape: the raw text and what a real parser made of it.
struct Metrics {
    text: String,
    scrape: Scrape,
}

impl Metrics {
    fn parse(text: String) -> Metrics {
        let scrape =
            Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("the exposition parses");
        Metrics { text, scrape }
    }

    /// The sample of `name` whose label set is exactly `labels` (no more, no fewer).
    fn sample(&self, name: &str, labels: &[(&str, &str)]) -> Option<&Sample> {
        let mut found = self.scrape.samples.iter().filter(|s| {
            s.metric == name
                && s.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        });
        let first = found.next();
        assert!(
            found.next().is_none(),
            "two samples of {name} {labels:?} in:\n{}",
            self.text
        );
        first
    }

    fn require(&self, name: &str, labels: &[(&str, &str)]) -> &Sample {
        self.sample(name, labels)
            .unwrap_or_else(|| panic!("no sample {name} {labels:?} in:\n{}", self.text))
    }

    /// A counter's value; the sample must be typed as a counter.
    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match self.require(name, labels).value {
            Value::Counter(v) => v,
            ref other => panic!("{name} {labels:?} is not typed counter: {other:?}"),
        }
    }

    /// A counter's value, or `None` when the series is absent.
    fn counter_opt(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.sample(name, labels).map(|s| match s.value {
            Value::Counter(v) => v,
            ref other => panic!("{name} {labels:?} is not typed counter: {other:?}"),
        })
    }

    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match self.require(name, labels).value {
            Value::Gauge(v) => v,
            ref other => panic!("{name} {labels:?} is not typed gauge: {other:?}"),
        }
    }

    /// A histogram's buckets (cumulative, in exposition order), `_count` and `_sum`.
    fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Histogram {
        let buckets = match &self.require(name, labels).value {
            Value::Histogram(buckets) => buckets
                .iter()
                .map(|b| (b.less_than, b.count))
                .collect::<Vec<_>>(),
            other => panic!("{name} {labels:?} is not typed histogram: {other:?}"),
        };
        let plain = |suffix: &str| match self.require(&format!("{name}{suffix}"), labels).value {
            Value::Untyped(v) | Value::Counter(v) | Value::Gauge(v) => v,
            ref other => panic!("{name}{suffix} {labels:?}: {other:?}"),
        };
        Histogram {
            buckets,
            count: plain("_count"),
            sum: plain("_sum"),
        }
    }

    /// Every sample of `name`.
    fn all(&self, name: &str) -> Vec<&Sample> {
        self.scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .collect()
    }

    /// Samples of any metric that carry `label="value"`.
    fn with_label(&self, label: &str, value: &str) -> Vec<String> {
        self.scrape
            .samples
            .iter()
            .filter(|s| s.labels.get(label) == Some(value))
            .map(|s| format!("{}{{{}}}", s.metric, s.labels))
            .collect()
    }
}

#[derive(Debug)]
struct Histogram {
    buckets: Vec<(f64, f64)>,
    count: f64,
    sum: f64,
}

/// `GET /metrics` (Prometheus text, no `Accept`), parsed.
async fn scrape(gw: &Gateway) -> Metrics {
    let answer = get(&gw.admin_url("/metrics"), &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    Metrics::parse(answer.body)
}

/// Scrapes until `ready` holds (requests are counted when the response body is done,
/// which may be a moment after the client read it), at most [`STEP`]; returns the last
/// scrape either way, so the caller's exact assertions report what was there.
async fn scrape_until(gw: &Gateway, ready: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = Instant::now() + STEP;
    loop {
        let metrics = scrape(gw).await;
        if ready(&metrics) || Instant::now() >= deadline {
            return metrics;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The value of a counter, 0 when absent (for `scrape_until` predicates only).
fn counted(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.sample(name, labels)
        .map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => f64::NAN,
        })
        .unwrap_or(0.0)
}

/// A `[server]` table on ephemeral ports and the given pools, `(name, endpoint,
/// version)`, then `rest` (routing, rules, log).
fn gateway_config(pools: &[(&str, SocketAddr, Option<&str>)], rest: &str) -> String {
    let mut text = String::from(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_timeout = \"5s\"\n\n",
    );
    for (name, endpoint, version) in pools {
        text.push_str(&format!("[pools.{name}]\nendpoints = [\"{endpoint}\"]\n"));
        if let Some(version) = version {
            // A version already quoted (a TOML literal string) goes in as it is.
            if version.starts_with('\'') {
                text.push_str(&format!("version = {version}\n"));
            } else {
                text.push_str(&format!("version = \"{version}\"\n"));
            }
        }
    }
    text.push('\n');
    text.push_str(rest);
    text
}

/// Replaces the running gateway's config file the way an editor does (write, then
/// rename), so the file watcher never reads half a file.
fn rewrite_config(gw: &Gateway, text: &str) {
    let temp = gw.dir.path().join(".graygate.toml.new");
    std::fs::write(&temp, text).expect("write new config");
    std::fs::rename(&temp, &gw.config_path).expect("rename new config into place");
}

async fn post(url: &str) -> Answer {
    send(Request::post(url).body(Full::new(Bytes::new())).unwrap()).await
}

async fn request(method: &str, url: &str) -> Answer {
    send(
        Request::builder()
            .method(method)
            .uri(url)
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
}

/// `POST /admin/reload`: status and JSON body.
async fn admin_reload(gw: &Gateway) -> (StatusCode, Json) {
    let answer = post(&gw.admin_url("/admin/reload")).await;
    let body = serde_json::from_str(&answer.body)
        .unwrap_or_else(|e| panic!("reload answer is not JSON ({e}): {}", answer.body));
    (answer.status, body)
}

/// An upstream that answers every request with `status` and `body`.
async fn answering(status: u16, body: &'static str) -> Upstream {
    Upstream::with_handler(Arc::new(move |_| {
        Response::builder()
            .status(status)
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    }))
    .await
}

// ---------------------------------------------------------------------------------
// 1. Exact counts
// ---------------------------------------------------------------------------------

/// 7 requests to canary by header, 5 to blue by default (3 answered 200, 2 answered
/// 404), 3 to green (whose upstream answers 503) and 4 to `dark`, whose only endpoint
/// refuses connections (502: `fallback = "fail"`, so they are not sent to blue).
/// Fewer than 5 failures go to green and dark each, so passive ejection (5
/// consecutive failures) never starts and every count is exact.
#[tokio::test]
async fn request_counts_per_pool_status_class_and_rule_are_exact() {
    let blue = Upstream::with_handler(Arc::new(|seen: &Seen| {
        let status = if seen.uri.path() == "/missing" {
            404
        } else {
            200
        };
        Response::builder()
            .status(status)
            .body(Full::new(Bytes::from("blue")))
            .unwrap()
    }))
    .await;
    let green = answering(503, "green is down").await;
    let canary = Upstream::named("canary").await;
    let dark = dead_address().await;
    let gw = Gateway::start(&gateway_config(
        &[
            ("blue", blue.addr, None),
            ("green", green.addr, None),
            ("canary", canary.addr, None),
            ("dark", dark, None),
        ],
        r#"[routing]
stable = "blue"
decision_headers = true
fallback = "fail"

[[rules]]
name = "canary-by-header"
match = { header = { name = "x-canary", present = true } }
to = "canary"

[[rules]]
name = "green-by-header"
match = { header = { name = "x-green", present = true } }
to = "green"

[[rules]]
name = "dark-by-header"
match = { header = { name = "x-dark", present = true } }
to = "dark"
"#,
    ));

    for _ in 0..7 {
        let a = get(&gw.url("/"), &[("x-canary", "1")]).await;
        assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "canary"));
    }
    for path in ["/", "/a", "/b", "/missing", "/missing"] {
        let a = get(&gw.url(path), &[]).await;
        let want = if path == "/missing" { 404 } else { 200 };
        assert_eq!(a.status, want, "{path}: {}", a.body);
        assert_eq!(a.header("x-graygate-rule"), Some("default"));
    }
    for _ in 0..3 {
        let a = get(&gw.url("/"), &[("x-green", "1")]).await;
        assert_eq!(a.status, 503, "green's own 503 is passed on: {}", a.body);
        assert_eq!(a.body, "green is down");
    }
    for _ in 0..4 {
        let a = get(&gw.url("/"), &[("x-dark", "1")]).await;
        assert_eq!(a.status, 502, "a refused connection is a 502: {}", a.body);
        assert_eq!(a.header("x-graygate-pool"), Some("dark"));
    }

    let req = "graygate_requests_total";
    let m = scrape_until(&gw, |m| {
        counted(m, req, &[("pool", "canary"), ("status_class", "2xx")]) >= 7.0
            && counted(m, req, &[("pool", "blue"), ("status_class", "2xx")]) >= 3.0
            && counted(m, req, &[("pool", "blue"), ("status_class", "4xx")]) >= 2.0
            && counted(m, req, &[("pool", "green"), ("status_class", "5xx")]) >= 3.0
            && counted(m, req, &[("pool", "dark"), ("status_class", "5xx")]) >= 4.0
    })
    .await;

    // graygate_requests_total{pool, status_class}: every class of every pool is
    // exported (absent series would break rate() and alerts), with exact values.
    let want: BTreeMap<(&str, &str), f64> = [
        (("canary", "2xx"), 7.0),
        (("blue", "2xx"), 3.0),
        (("blue", "4xx"), 2.0),
        (("green", "5xx"), 3.0),
        (("dark", "5xx"), 4.0),
    ]
    .into_iter()
    .collect();
    for pool in ["blue", "green", "canary", "dark"] {
        for class in ["1xx", "2xx", "3xx", "4xx", "5xx"] {
            let got = m.counter(req, &[("pool", pool), ("status_class", class)]);
            let expected = want.get(&(pool, class)).copied().unwrap_or(0.0);
            assert_eq!(got, expected, "{req}{{pool={pool},status_class={class}}}");
        }
    }
    assert_eq!(m.all(req).len(), 4 * 5, "no other request series");

    // graygate_request_duration_seconds{pool}: _count per pool, cumulative buckets
    // with SPEC's bounds, +Inf equal to _count, a positive _sum.
    for (pool, n) in [
        ("blue", 5.0),
        ("green", 3.0),
        ("canary", 7.0),
        ("dark", 4.0),
    ] {
        let h = m.histogram("graygate_request_duration_seconds", &[("pool", pool)]);
        assert_eq!(h.count, n, "duration _count of {pool}");
        let bounds: Vec<f64> = h.buckets.iter().map(|b| b.0).collect();
        let mut want_bounds = DURATION_BOUNDS.to_vec();
        want_bounds.push(f64::INFINITY);
        assert_eq!(bounds, want_bounds, "bucket bounds of {pool}");
        assert!(
            h.buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "buckets are cumulative: {h:?}"
        );
        assert_eq!(h.buckets.last().unwrap().1, n, "+Inf bucket of {pool}");
        assert!(
            h.sum > 0.0 && h.sum < n * 10.0,
            "duration _sum of {pool}: {h:?}"
        );
    }

    // graygate_upstream_errors_total{pool, kind}: only dark's 4 refused connects.
    // green's 503 answers are upstream answers, not transport errors.
    for pool in ["blue", "green", "canary", "dark"] {
        for kind in ["connect", "timeout", "reset", "protocol"] {
            let got = m.counter(
                "graygate_upstream_errors_total",
                &[("pool", pool), ("kind", kind)],
            );
            let expected = if (pool, kind) == ("dark", "connect") {
                4.0
            } else {
                0.0
            };
            assert_eq!(got, expected, "upstream_errors{{pool={pool},kind={kind}}}");
        }
    }

    // graygate_rule_matches_total{rule, pool}, with "default" for the fall-through.
    let rules = "graygate_rule_matches_total";
    for (rule, pool, n) in [
        ("canary-by-header", "canary", 7.0),
        ("default", "blue", 5.0),
        ("green-by-header", "green", 3.0),
        ("dark-by-header", "dark", 4.0),
    ] {
        assert_eq!(
            m.counter(rules, &[("rule", rule), ("pool", pool)]),
            n,
            "{rules}{{rule={rule},pool={pool}}}"
        );
    }
    assert_eq!(m.all(rules).len(), 4, "one series per rule and default");

    // Nothing fell back (no endpoint was ejected), nothing retried, no log dropped.
    for pool in ["green", "canary", "dark"] {
        assert_eq!(
            m.counter(
                "graygate_fallbacks_total",
                &[("from", pool), ("to", "blue")]
            ),
            0.0
        );
    }
    for pool in ["blue", "green", "canary", "dark"] {
        assert_eq!(m.counter("graygate_retries_total", &[("pool", pool)]), 0.0);
        assert_eq!(
            m.gauge(
                "graygate_pool_endpoints",
                &[("pool", pool), ("state", "healthy")]
            ),
            1.0,
            "{pool}: 4 failures or fewer do not eject"
        );
    }
    assert_eq!(m.counter("graygate_access_log_dropped_total", &[]), 0.0);
    assert_eq!(m.gauge("graygate_config_generation", &[]), 1.0);

    // What the upstreams saw agrees.
    assert_eq!(canary.requests().len(), 7);
    assert_eq!(blue.requests().len(), 5);
    assert_eq!(green.requests().len(), 3);
}

// ---------------------------------------------------------------------------------
// 1b. Upstream error kinds and durations
// ---------------------------------------------------------------------------------

/// How a [`RawUpstream`] answers once it has read a request head.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    /// Bytes that are not HTTP: a protocol error.
    Garbage,
    /// Closes the connection without answering: a reset.
    Close,
    /// Never answers: the request timeout passes.
    Silent,
    /// Sends a 200 head at once and its 4-byte body `slow` after the delay.
    SlowBody(Duration),
}

/// A raw TCP upstream that misbehaves on purpose; stops on drop.
struct RawUpstream {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl RawUpstream {
    async fn start(behaviour: Behaviour) -> RawUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&chunk[..n]),
                        }
                    }
                    match behaviour {
                        Behaviour::Garbage => {
                            let _ = stream.write_all(b"NOT HTTP AT ALL\r\n\r\n").await;
                        }
                        Behaviour::Close => {}
                        Behaviour::Silent => tokio::time::sleep(STEP).await,
                        Behaviour::SlowBody(delay) => {
                            let _ = stream
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n")
                                .await;
                            tokio::time::sleep(delay).await;
                            let _ = stream.write_all(b"slow").await;
                            // Keep the connection until the gateway lets it go.
                            let _ = tokio::time::timeout(STEP, stream.read(&mut chunk)).await;
                        }
                    }
                });
            }
        });
        RawUpstream { addr, task }
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One request each to an upstream that answers garbage (protocol), one that closes
/// the connection (reset) and one that never answers (timeout, after the 1 s request
/// timeout): 502, 502, 504, each counted once under its kind and its pool's 5xx.
#[tokio::test]
async fn upstream_error_kinds_protocol_reset_and_timeout_are_counted() {
    let blue = Upstream::named("blue").await;
    let garbage = RawUpstream::start(Behaviour::Garbage).await;
    let closing = RawUpstream::start(Behaviour::Close).await;
    let silent = RawUpstream::start(Behaviour::Silent).await;
    let gw = Gateway::start(&gateway_config(
        &[
            ("blue", blue.addr, None),
            ("garbage", garbage.addr, None),
            ("closing", closing.addr, None),
            ("silent", silent.addr, None),
        ],
        r#"[limits]
request_timeout = "1s"

[routing]
stable = "blue"
fallback = "fail"

[[rules]]
name = "to-garbage"
match = { header = { name = "x-to", exact = "garbage" } }
to = "garbage"

[[rules]]
name = "to-closing"
match = { header = { name = "x-to", exact = "closing" } }
to = "closing"

[[rules]]
name = "to-silent"
match = { header = { name = "x-to", exact = "silent" } }
to = "silent"
"#,
    ));
    for (pool, status) in [("garbage", 502), ("closing", 502), ("silent", 504)] {
        let started = Instant::now();
        let a = get(&gw.url("/"), &[("x-to", pool)]).await;
        assert_eq!(a.status, status, "{pool}: {}", a.body);
        if pool == "silent" {
            assert!(started.elapsed() >= Duration::from_millis(900));
        }
    }
    let req = "graygate_requests_total";
    let m = scrape_until(&gw, |m| {
        counted(m, req, &[("pool", "silent"), ("status_class", "5xx")]) >= 1.0
    })
    .await;
    let expected = [
        ("garbage", "protocol"),
        ("closing", "reset"),
        ("silent", "timeout"),
    ];
    for pool in ["blue", "garbage", "closing", "silent"] {
        for kind in ["connect", "timeout", "reset", "protocol"] {
            let want = if expected.contains(&(pool, kind)) {
                1.0
            } else {
                0.0
            };
            assert_eq!(
                m.counter(
                    "graygate_upstream_errors_total",
                    &[("pool", pool), ("kind", kind)]
                ),
                want,
                "upstream_errors{{pool={pool},kind={kind}}}"
            );
        }
        let want = if pool == "blue" { 0.0 } else { 1.0 };
        assert_eq!(
            m.counter(req, &[("pool", pool), ("status_class", "5xx")]),
            want,
            "{pool} 5xx"
        );
        assert_eq!(
            m.histogram("graygate_request_duration_seconds", &[("pool", pool)])
                .count,
            want,
            "{pool} duration count"
        );
    }
    let silent_duration = m.histogram("graygate_request_duration_seconds", &[("pool", "silent")]);
    assert!(
        silent_duration.sum >= 0.9,
        "a timed-out request's duration is its wait: {silent_duration:?}"
    );
}

/// A response whose body comes 600 ms after its head is counted only when the body is
/// done, and its duration (arrival to the end of the response) lands in the
/// `le="1.0"` bucket, not below `le="0.5"`.
#[tokio::test]
async fn a_request_is_counted_when_its_body_ends_with_its_whole_duration() {
    let slow = RawUpstream::start(Behaviour::SlowBody(Duration::from_millis(600))).await;
    let gw = Gateway::start(&gateway_config(
        &[("blue", slow.addr, None)],
        "[routing]\nstable = \"blue\"\n",
    ));
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: graygate.test\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    tokio::time::timeout(STEP, async {
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed early");
            got.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("head in time");
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );

    // The head is here, the body is not: not counted yet.
    let req = [("pool", "blue"), ("status_class", "2xx")];
    let m = scrape(&gw).await;
    if !String::from_utf8_lossy(&got).ends_with("slow") {
        assert_eq!(m.counter("graygate_requests_total", &req), 0.0);
        assert_eq!(
            m.histogram("graygate_request_duration_seconds", &[("pool", "blue")])
                .count,
            0.0
        );
        // The time to first byte is taken when the head arrives.
        assert_eq!(
            m.histogram("graygate_time_to_first_byte_seconds", &[("pool", "blue")])
                .count,
            1.0
        );
    }

    tokio::time::timeout(STEP, async {
        while !String::from_utf8_lossy(&got).ends_with("slow") {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed early");
            got.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("body in time");
    let m = scrape_until(&gw, |m| counted(m, "graygate_requests_total", &req) >= 1.0).await;
    assert_eq!(m.counter("graygate_requests_total", &req), 1.0);
    let h = m.histogram("graygate_request_duration_seconds", &[("pool", "blue")]);
    assert_eq!(h.count, 1.0);
    let bucket = |le: f64| h.buckets.iter().find(|b| b.0 == le).unwrap().1;
    assert_eq!(bucket(0.5), 0.0, "600 ms is above 0.5 s: {h:?}");
    assert_eq!(bucket(f64::INFINITY), 1.0);
    assert!(h.sum >= 0.6, "{h:?}");
    // The head came at once: the time to first byte is the head's, not the body's.
    let first = m.histogram("graygate_time_to_first_byte_seconds", &[("pool", "blue")]);
    assert_eq!(first.count, 1.0);
    let bounds: Vec<f64> = first.buckets.iter().map(|b| b.0).collect();
    assert_eq!(bounds[..DURATION_BOUNDS.len()], DURATION_BOUNDS);
    let first_bucket = |le: f64| first.buckets.iter().find(|b| b.0 == le).unwrap().1;
    assert_eq!(first_bucket(0.25), 1.0, "{first:?}");
    assert!(first.sum < 0.25, "{first:?}");
}

/// `graygate_build_info`, the `process_*` family, and `graygate_endpoint_up` per
/// endpoint, following health checks and reloads.
#[tokio::test]
async fn build_info_process_metrics_and_endpoint_up() {
    let blue = Upstream::named("blue").await;
    let dead = dead_address().await;
    let health = "health_check = { path = \"/healthz\", interval = \"100ms\", timeout = \"100ms\", fall = 1, rise = 1 }\n";
    let config = gateway_config(
        &[("blue", blue.addr, None), ("canary", dead, None)],
        "[routing]\nstable = \"blue\"\n",
    )
    .replace(
        &format!("[pools.canary]\nendpoints = [\"{dead}\"]\n"),
        &format!("[pools.canary]\nendpoints = [\"{dead}\"]\n{health}"),
    );
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let gw = Gateway::start(&config);
    let canary = [("pool", "canary"), ("endpoint", &*dead.to_string())];
    let blue_labels = [("pool", "blue"), ("endpoint", &*blue.addr.to_string())];
    let m = scrape_until(&gw, |m| {
        m.sample("graygate_endpoint_up", &canary)
            .is_some_and(|s| matches!(s.value, Value::Gauge(v) if v == 0.0))
    })
    .await;
    assert_eq!(m.gauge("graygate_endpoint_up", &canary), 0.0, "checks fail");
    assert_eq!(m.gauge("graygate_endpoint_up", &blue_labels), 1.0);
    assert_eq!(m.all("graygate_endpoint_up").len(), 2);
    assert_eq!(
        m.gauge(
            "graygate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    // The process figures are the gateway's own: it started a moment ago, holds
    // sockets, and its limit is above what it holds.
    let start = m.gauge("process_start_time_seconds", &[]);
    assert!((start - started).abs() < 30.0, "{start} vs {started}");
    let open = m.gauge("process_open_fds", &[]);
    assert!(open >= 4.0, "listeners, epoll and the log pipe: {open}");
    assert!(m.gauge("process_max_fds", &[]) > open);
    assert!(m.gauge("process_resident_memory_bytes", &[]) > 1e6);
    assert!(m.counter("process_cpu_seconds_total", &[]) >= 0.0);
    let fds = std::fs::read_dir(format!("/proc/{}/fd", gw.pid()))
        .unwrap()
        .count() as f64;
    assert!(
        (open - fds).abs() <= 3.0,
        "process_open_fds {open} vs /proc/PID/fd {fds}"
    );

    // A reload that drops the canary drops its endpoint's series.
    rewrite_config(
        &gw,
        &gateway_config(
            &[("blue", blue.addr, None)],
            "[routing]\nstable = \"blue\"\n",
        ),
    );
    let m = scrape_until(&gw, |m| m.all("graygate_endpoint_up").len() == 1).await;
    assert_eq!(m.all("graygate_endpoint_up").len(), 1, "{}", m.text);
    assert_eq!(m.gauge("graygate_endpoint_up", &blue_labels), 1.0);
}

/// `graygate_requests_total` of one status class, summed over every pool.
fn class_total(m: &Metrics, class: &str) -> f64 {
    m.all("graygate_requests_total")
        .iter()
        .filter(|s| s.labels.get("status_class") == Some(class))
        .map(|s| match s.value {
            Value::Counter(v) => v,
            _ => panic!("graygate_requests_total is not a counter"),
        })
        .sum()
}

/// SPEC "Headers": the gateway's own 400, 408 and 431 are "counted in the metrics".
/// hyper answers a malformed request line (400) and an oversized head (431) itself,
/// before the proxy sees a request, and closes a connection whose head does not
/// arrive within `header_read_timeout` without an answer. No pool was decided, so they
/// are counted in `graygate_client_errors_total{kind}`, not per pool.
#[tokio::test]
async fn gateway_made_400_431_and_header_timeouts_are_counted() {
    let blue = Upstream::named("blue").await;
    let gw = Gateway::start(&gateway_config(
        &[("blue", blue.addr, None)],
        "[limits]\nmax_header_bytes = 8192\nheader_read_timeout = \"1s\"\n\n[routing]\nstable = \"blue\"\n",
    ));
    let big = format!(
        "GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let answer = raw_exchange(gw.addr, big.as_bytes(), Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    let answer = raw_exchange(gw.addr, b"GARBAGE\r\n\r\n", Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    let slow = raw_exchange(
        gw.addr,
        b"GET / HTTP/1.1\r\nhost: x\r\n",
        Duration::from_secs(4),
    )
    .await;
    // The slow head is closed without an answer, as nginx does for client_header_timeout.
    assert!(slow.is_empty(), "{slow:?}");
    // None of them reached a pool: they are counted before routing, by kind.
    let m = scrape_until(&gw, |m| {
        m.text
            .contains(r#"graygate_client_errors_total{kind="header_timeout"} 1"#)
    })
    .await;
    for kind in ["bad_request", "header_too_large", "header_timeout"] {
        let line = format!("graygate_client_errors_total{{kind=\"{kind}\"}} 1");
        assert!(m.text.contains(&line), "missing {line:?} in\n{}", m.text);
    }
    assert_eq!(class_total(&m, "4xx"), 0.0, "{}", m.text);
}

// ---------------------------------------------------------------------------------
// 2. The exposition formats: promtool, content types, OpenMetrics
// ---------------------------------------------------------------------------------

fn promtool() -> &'static str {
    "/usr/bin/promtool"
}

/// Sends a little traffic of every kind, so every family has samples.
async fn mixed_traffic(gw: &Gateway) {
    for _ in 0..3 {
        assert_eq!(get(&gw.url("/"), &[]).await.status, 200);
        assert_eq!(get(&gw.url("/"), &[("x-canary", "1")]).await.status, 200);
    }
    // dark's endpoint refuses connections: the request falls back to blue.
    assert_eq!(get(&gw.url("/"), &[("x-dark", "1")]).await.status, 200);
    // A failed and a good reload, so the reload counter has both results.
    let text = std::fs::read_to_string(&gw.config_path).unwrap();
    rewrite_config(gw, "[pools.x]\nendpoints = 1\n");
    assert_eq!(admin_reload(gw).await.0, 422);
    rewrite_config(gw, &text);
    assert_eq!(admin_reload(gw).await.0, 200);
}

/// A version label with characters the exposition must escape (`"` and `\`), a
/// comma and a non-ASCII letter, as a TOML literal string and as the label value.
const CANARY_VERSION_TOML: &str = r#"'v1.5.0-rc.1 "beta", \ é'"#;
const CANARY_VERSION: &str = r#"v1.5.0-rc.1 "beta", \ é"#;

async fn dark_canary_gateway() -> (Gateway, Upstream, Upstream) {
    let blue = Upstream::named("blue").await;
    let canary = Upstream::named("canary").await;
    let dark = dead_address().await;
    let gw = Gateway::start(&gateway_config(
        &[
            ("blue", blue.addr, Some("v1.4.2")),
            ("canary", canary.addr, Some(CANARY_VERSION_TOML)),
            ("dark", dark, None),
        ],
        r#"[routing]
stable = "blue"
user_key = { header = "x-user-id" }

[[rules]]
name = "canary-by-header"
match = { header = { name = "x-canary", present = true } }
to = "canary"

[[rules]]
name = "dark-by-header"
match = { header = { name = "x-dark", present = true } }
to = "dark"

# A rollout, so the scrape carries its families too.
[[rules]]
name = "canary-rollout"
match = { permille = 0 }
to = "canary"

[rollout]
rule = "canary-rollout"
steps = [10, 100]
interval = "100ms"
min_requests = 1
"#,
    ));
    (gw, blue, canary)
}

/// A real scrape, after traffic, passes `promtool check metrics` with no finding at
/// all. promtool exits 1 on a parse error and 3 on lint findings (a counter without
/// `_total`, a missing HELP, a non-base unit, ...). The exposition has none today, so
/// nothing is allowed: a new finding is a naming regression that dashboards and
/// recording rules would trip over, and it fails this test with promtool's words.
#[tokio::test]
async fn promtool_check_metrics_finds_nothing_in_a_real_scrape() {
    let (gw, _blue, _canary) = dark_canary_gateway().await;
    mixed_traffic(&gw).await;
    let answer = get(&gw.admin_url("/metrics"), &[]).await;
    assert_eq!(answer.status, 200);
    assert!(answer
        .body
        .contains("graygate_config_reloads_total{result=\"failure\"}"));
    for family in [
        "graygate_rollout_weight_permille{rule=\"canary-rollout\"} 10",
        "graygate_rollout_step{rule=\"canary-rollout\"} 0",
        "graygate_rollout_state{rule=\"canary-rollout\",state=\"progressing\"} 1",
        "graygate_rollout_analyses_total{rule=\"canary-rollout\",verdict=\"inconclusive\"}",
    ] {
        assert!(
            answer.body.contains(family),
            "no {family} in:\n{}",
            answer.body
        );
    }

    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): apt-get install prometheus",
                promtool()
            )
        });
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(answer.body.as_bytes()).unwrap();
    }
    let deadline = Instant::now() + STEP;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("promtool did not finish in {STEP:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics: {} \n{report}\n--- scrape:\n{}",
        out.status,
        answer.body
    );
}

/// The default answer is the Prometheus text format 0.0.4; `Accept:
/// application/openmetrics-text` gets OpenMetrics, which ends with `# EOF`.
#[tokio::test]
async fn content_negotiation_prometheus_text_by_default_openmetrics_on_accept() {
    let (gw, _blue, _canary) = dark_canary_gateway().await;
    mixed_traffic(&gw).await;

    let text = get(&gw.admin_url("/metrics"), &[]).await;
    assert_eq!(text.status, 200);
    let content_type = text.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    assert!(!text.body.contains("# EOF"), "no # EOF in the text format");
    assert!(
        !text.body.contains("# UNIT"),
        "no # UNIT in the text format"
    );
    assert!(text.body.ends_with('\n'));
    // Counters are typed under their sample name in the text format.
    assert!(text
        .body
        .contains("# TYPE graygate_requests_total counter\n"));

    for accept in [
        "application/openmetrics-text",
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    ] {
        let om = get(&gw.admin_url("/metrics"), &[("accept", accept)]).await;
        assert_eq!(om.status, 200);
        let content_type = om.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/openmetrics-text; version=1.0.0"),
            "Accept {accept}: {content_type}"
        );
        assert!(om.body.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
        assert_eq!(om.body.matches("# EOF").count(), 1);
        // OpenMetrics types a counter under its family name.
        assert!(om.body.contains("# TYPE graygate_requests counter\n"));
        // 3 by default and 1 that fell back from dark.
        assert!(om
            .body
            .contains("graygate_requests_total{pool=\"blue\",status_class=\"2xx\"} 4"));
    }
    // Label values are escaped as the format says.
    assert!(
        text.body.contains(
            r#"graygate_pool_info{pool="canary",version="v1.5.0-rc.1 \"beta\", \\ é"} 1"#
        ),
        "{}",
        text.body
    );
    let plain = get(&gw.admin_url("/metrics"), &[("accept", "text/plain")]).await;
    assert!(plain
        .header("content-type")
        .unwrap_or_default()
        .starts_with("text/plain; version=0.0.4"));
}

// ---------------------------------------------------------------------------------
// 3. A real Prometheus server
// ---------------------------------------------------------------------------------

/// `sum by (pool) (...)` results as pool → value.
fn by_pool(result: &[Json]) -> BTreeMap<String, f64> {
    result
        .iter()
        .filter_map(|r| {
            let pool = r["metric"]["pool"].as_str()?.to_string();
            let value = r["value"][1].as_str()?.parse().ok()?;
            Some((pool, value))
        })
        .collect()
}

/// Prometheus 2.x asks for OpenMetrics first, so this also runs the exposition through
/// Prometheus's own OpenMetrics parser: a scrape it rejects leaves `up` at 0 and no
/// samples.
#[tokio::test]
async fn a_real_prometheus_scrapes_the_admin_listener() {
    let (gw, _blue, _canary) = dark_canary_gateway().await;
    let prometheus = Prometheus::start(&[gw.admin]);
    for _ in 0..4 {
        assert_eq!(get(&gw.url("/"), &[]).await.status, 200);
    }
    for _ in 0..6 {
        assert_eq!(get(&gw.url("/"), &[("x-canary", "1")]).await.status, 200);
    }

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = BTreeMap::new();
    loop {
        if let Some(result) = prometheus
            .query("sum by (pool) (graygate_requests_total)")
            .await
        {
            last = by_pool(&result);
            if last.get("blue") == Some(&4.0) && last.get("canary") == Some(&6.0) {
                break;
            }
        }
        if Instant::now() >= deadline {
            let targets = try_get(&prometheus.url("/api/v1/targets")).await;
            panic!(
                "Prometheus never saw blue=4 and canary=6; last {last:?}\ntargets: {targets:?}\nlog:\n{}",
                prometheus.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(last.get("dark"), Some(&0.0), "dark's series exist at 0");

    let up = prometheus
        .query("up{job=\"graygate\"}")
        .await
        .expect("query up");
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0]["value"][1], "1", "{up:?}");

    let count = prometheus
        .query("graygate_request_duration_seconds_count")
        .await
        .expect("query histogram count");
    assert_eq!(
        by_pool(&count),
        [("blue", 4.0), ("canary", 6.0), ("dark", 0.0)]
            .map(|(p, v)| (p.to_string(), v))
            .into_iter()
            .collect(),
        "{count:?}"
    );
    let info = prometheus
        .query("graygate_pool_info{pool=\"canary\"}")
        .await
        .expect("query pool_info");
    assert_eq!(info.len(), 1, "{info:?}");
    assert_eq!(
        info[0]["metric"]["version"], CANARY_VERSION,
        "an escaped label value arrives intact"
    );
    assert_eq!(info[0]["value"][1], "1");
}

// ---------------------------------------------------------------------------------
// 4. Endpoint states, readiness and recovery by reload
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn failing_stable_endpoint_makes_readyz_503_and_a_reload_to_a_healthy_one_recovers() {
    let failing = answering(503, "blue is failing").await;
    let green = Upstream::named("green").await;
    let canary = Upstream::named("canary").await;
    let gw = Gateway::start(&config(
        failing.addr,
        green.addr,
        canary.addr,
        "[routing]\nstable = \"blue\"\n",
    ));
    let endpoints = "graygate_pool_endpoints";
    let state = |pool, state| [("pool", pool), ("state", state)];

    assert_eq!(get(&gw.admin_url("/readyz"), &[]).await.status, 200);
    assert_eq!(get(&gw.admin_url("/healthz"), &[]).await.status, 200);
    let m = scrape(&gw).await;
    assert_eq!(m.gauge(endpoints, &state("blue", "healthy")), 1.0);
    assert_eq!(m.gauge(endpoints, &state("blue", "unhealthy")), 0.0);

    // Five consecutive 5xx answers eject blue's only endpoint.
    for i in 1..=5 {
        let a = get(&gw.url("/"), &[]).await;
        assert_eq!(a.status, 503, "request {i} reaches the failing upstream");
        assert_eq!(a.body, "blue is failing", "request {i}");
    }
    let ready = get(&gw.admin_url("/readyz"), &[]).await;
    assert_eq!(ready.status, 503, "stable pool ejected: {}", ready.body);
    assert_eq!(
        get(&gw.admin_url("/healthz"), &[]).await.status,
        200,
        "/healthz is liveness, not readiness"
    );
    let m = scrape(&gw).await;
    assert_eq!(m.gauge(endpoints, &state("blue", "healthy")), 0.0);
    assert_eq!(m.gauge(endpoints, &state("blue", "unhealthy")), 1.0);
    assert_eq!(m.gauge(endpoints, &state("green", "healthy")), 1.0);
    assert_eq!(m.gauge(endpoints, &state("canary", "unhealthy")), 0.0);

    // While ejected the gateway answers 503 itself; the upstream sees nothing more.
    let a = get(&gw.url("/"), &[]).await;
    assert_eq!(a.status, 503);
    assert_ne!(a.body, "blue is failing", "answered by the gateway");
    assert_eq!(failing.requests().len(), 5);

    // Recovery without waiting out the 10 s ejection: a reload that puts a healthy
    // endpoint in blue.
    let healthy = Upstream::named("blue").await;
    rewrite_config(
        &gw,
        &config(
            healthy.addr,
            green.addr,
            canary.addr,
            "[routing]\nstable = \"blue\"\n",
        ),
    );
    let (status, body) = admin_reload(&gw).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["generation"], 2, "{body}");
    assert_eq!(get(&gw.admin_url("/readyz"), &[]).await.status, 200);
    let a = get(&gw.url("/"), &[]).await;
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "blue"));
    let m = scrape(&gw).await;
    assert_eq!(m.gauge(endpoints, &state("blue", "healthy")), 1.0);
    assert_eq!(m.gauge(endpoints, &state("blue", "unhealthy")), 0.0);
    assert_eq!(m.gauge("graygate_config_generation", &[]), 2.0);
    assert_eq!(get(&gw.admin_url("/healthz"), &[]).await.status, 200);
}

// ---------------------------------------------------------------------------------
// 5. A dead canary and routing.fallback
// ---------------------------------------------------------------------------------

async fn dead_canary_gateway(fallback: &str) -> (Gateway, Upstream) {
    let blue = Upstream::named("blue").await;
    let green = Upstream::named("green").await;
    let dead = dead_address().await;
    let gw = Gateway::start(&config(
        blue.addr,
        green.addr,
        dead,
        &format!(
            r#"[routing]
stable = "blue"
decision_headers = true
fallback = "{fallback}"

[[rules]]
name = "canary-by-header"
match = {{ header = {{ name = "x-canary", present = true }} }}
to = "canary"
"#
        ),
    ));
    (gw, blue)
}

/// 20 canary-bound requests, in order: (status, body).
async fn twenty_canary_requests(gw: &Gateway) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    for _ in 0..20 {
        let a = get(&gw.url("/"), &[("x-canary", "1")]).await;
        out.push((a.status.as_u16(), a.body));
    }
    out
}

/// The resilience requirement: with `fallback = "stable"` a dead canary loses no
/// request. The first 5 requests meet the dead endpoint (a refused connect, nothing
/// sent, so the request goes on to blue); the 5th failure ejects it, and from then on
/// requests fall back to blue without trying it. Every one of the 20 is a fallback.
#[tokio::test]
async fn dead_canary_with_fallback_stable_loses_no_request() {
    let (gw, blue) = dead_canary_gateway("stable").await;
    let answers = twenty_canary_requests(&gw).await;
    let lost: Vec<(usize, u16)> = answers
        .iter()
        .enumerate()
        .filter(|(_, a)| a != &&(200, "blue".to_string()))
        .map(|(i, a)| (i + 1, a.0))
        .collect();
    assert!(
        lost.is_empty(),
        "lost requests (number, status): {lost:?}; all: {answers:?}"
    );
    assert_eq!(blue.requests().len(), 20);
    let m = scrape_until(&gw, |m| {
        counted(
            m,
            "graygate_requests_total",
            &[("pool", "blue"), ("status_class", "2xx")],
        ) >= 20.0
    })
    .await;
    assert_eq!(
        m.counter(
            "graygate_fallbacks_total",
            &[("from", "canary"), ("to", "blue")]
        ),
        20.0,
        "every request blue served for canary is a fallback"
    );
    assert_eq!(
        m.counter(
            "graygate_requests_total",
            &[("pool", "blue"), ("status_class", "2xx")]
        ),
        20.0,
        "a fallback is counted on the pool that served it"
    );
    for class in ["2xx", "5xx"] {
        assert_eq!(
            m.counter(
                "graygate_requests_total",
                &[("pool", "canary"), ("status_class", class)]
            ),
            0.0
        );
    }
    assert_eq!(
        m.counter(
            "graygate_upstream_errors_total",
            &[("pool", "canary"), ("kind", "connect")]
        ),
        5.0,
        "the dead endpoint is tried until its ejection, then no more"
    );
    // Each of the first 5 went on to blue after a failed attempt: 5 retries. (They are
    // counted on the pool the retry went to, blue; only the sum is pinned here.)
    let retries: f64 = m
        .all("graygate_retries_total")
        .iter()
        .map(|s| match s.value {
            Value::Counter(v) => v,
            _ => panic!("retries_total is not a counter"),
        })
        .sum();
    assert_eq!(retries, 5.0, "{}", m.text);
    assert_eq!(
        m.counter(
            "graygate_rule_matches_total",
            &[("rule", "canary-by-header"), ("pool", "canary")]
        ),
        20.0,
        "the decision is counted as made, before the fallback"
    );
    assert_eq!(
        m.gauge(
            "graygate_pool_endpoints",
            &[("pool", "canary"), ("state", "unhealthy")]
        ),
        1.0
    );
    assert_eq!(
        get(&gw.admin_url("/readyz"), &[]).await.status,
        200,
        "a dead canary does not make the gateway unready"
    );
}

/// With `fallback = "fail"` the first 5 requests meet the dead endpoint (502), and
/// once it is ejected the gateway answers 503 at once; nothing goes to blue.
#[tokio::test]
async fn dead_canary_with_fallback_fail_answers_503_once_ejected() {
    let (gw, blue) = dead_canary_gateway("fail").await;
    let answers = twenty_canary_requests(&gw).await;
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    let mut want = vec![502; 5];
    want.extend([503; 15]);
    assert_eq!(statuses, want, "{answers:?}");
    assert!(blue.requests().is_empty());
    let m = scrape_until(&gw, |m| {
        counted(
            m,
            "graygate_requests_total",
            &[("pool", "canary"), ("status_class", "5xx")],
        ) >= 20.0
    })
    .await;
    assert_eq!(
        m.counter(
            "graygate_requests_total",
            &[("pool", "canary"), ("status_class", "5xx")]
        ),
        20.0
    );
    assert_eq!(
        m.counter(
            "graygate_fallbacks_total",
            &[("from", "canary"), ("to", "blue")]
        ),
        0.0
    );
    assert_eq!(
        m.counter(
            "graygate_upstream_errors_total",
            &[("pool", "canary"), ("kind", "connect")]
        ),
        5.0
    );
    assert_eq!(
        m.counter(
            "graygate_requests_total",
            &[("pool", "blue"), ("status_class", "2xx")]
        ),
        0.0
    );
}

// ---------------------------------------------------------------------------------
// 6. The access log
// ---------------------------------------------------------------------------------

/// What one request should have logged.
struct Expected {
    method: &'static str,
    path: &'static str,
    status: u16,
    pool: &'static str,
    rule: &'static str,
    bucket: Option<u16>,
    /// The endpoint that answered; `None` when no upstream was asked.
    upstream: Option<String>,
    bytes: usize,
}

/// Checks one access-log line against what its request did.
fn check_access_line(line: &str, want: &Expected) {
    let v: Json = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    let time = v["time"].as_str().unwrap_or_else(|| panic!("time: {line}"));
    humantime::parse_rfc3339(time).unwrap_or_else(|e| panic!("time {time}: {e}"));
    assert_eq!(v["method"], want.method, "{line}");
    assert_eq!(v["path"], want.path, "{line}");
    assert_eq!(v["status"], want.status, "{line}");
    assert_eq!(v["pool"], want.pool, "{line}");
    assert_eq!(v["rule"], want.rule, "{line}");
    match want.bucket {
        Some(bucket) => assert_eq!(v["bucket"], bucket, "{line}"),
        None => assert!(v["bucket"].is_null(), "{line}"),
    }
    match &want.upstream {
        Some(upstream) => assert_eq!(v["upstream"], upstream.as_str(), "{line}"),
        None => assert!(v["upstream"].is_null(), "{line}"),
    }
    let ms = v["duration_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("duration_ms: {line}"));
    assert!((0.0..10_000.0).contains(&ms), "{line}");
    assert_eq!(v["bytes"], want.bytes, "bytes is the body length: {line}");
}

const ACCESS_RULES: &str = r#"[limits]
max_body_bytes = 16

[routing]
stable = "blue"
user_key = { header = "x-user-id" }

[[rules]]
name = "canary-by-header"
match = { header = { name = "x-canary", present = true } }
to = "canary"

[[rules]]
name = "everyone-with-a-key"
match = { permille = 1000, salt = "s" }
to = "green"
"#;

/// Sends the access-log test's requests and returns what each should log.
async fn access_traffic(gw: &Gateway, blue: &Upstream, green: &Upstream) -> Vec<Expected> {
    let mut want = Vec::new();
    for path in ["/", "/a/b", "/a/b"] {
        let a = get(&gw.url(&format!("{path}?q=1")), &[]).await;
        assert_eq!(a.status, 200);
        want.push(Expected {
            method: "GET",
            path,
            status: 200,
            pool: "blue",
            rule: "default",
            bucket: None,
            upstream: Some(blue.addr.to_string()),
            bytes: a.body.len(),
        });
    }
    let a = send(
        Request::post(gw.url("/orders"))
            .header("x-user-id", "42")
            .body(Full::new(Bytes::from_static(b"{\"n\":1}")))
            .unwrap(),
    )
    .await;
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "green"));
    want.push(Expected {
        method: "POST",
        path: "/orders",
        status: 200,
        pool: "green",
        rule: "everyone-with-a-key",
        bucket: Some(graygate::routing::bucket(b"s", b"42")),
        upstream: Some(green.addr.to_string()),
        bytes: "green".len(),
    });
    // The canary is dead: the request falls back to blue, which the line shows, with
    // the rule that decided canary.
    let a = get(&gw.url("/c"), &[("x-canary", "1")]).await;
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "blue"));
    want.push(Expected {
        method: "GET",
        path: "/c",
        status: 200,
        pool: "blue",
        rule: "canary-by-header",
        bucket: None,
        upstream: Some(blue.addr.to_string()),
        bytes: "blue".len(),
    });
    // A body over limits.max_body_bytes: the gateway's own 413, no upstream asked.
    let a = send(
        Request::put(gw.url("/upload"))
            .body(Full::new(Bytes::from(vec![b'x'; 64])))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 413, "{}", a.body);
    assert!(!a.body.is_empty());
    want.push(Expected {
        method: "PUT",
        path: "/upload",
        status: 413,
        pool: "blue",
        rule: "default",
        bucket: None,
        upstream: None,
        bytes: a.body.len(),
    });
    want
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Polls `lines` until it has `n` entries (at most [`STEP`]), then a little longer to
/// see that no extra line follows.
async fn wait_for_lines(lines: impl Fn() -> Vec<String>, n: usize) -> Vec<String> {
    let deadline = Instant::now() + STEP;
    while lines().len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    lines()
}

#[tokio::test]
async fn access_log_file_has_one_json_line_per_request() {
    let blue = Upstream::named("blue").await;
    let green = Upstream::named("green").await;
    let canary = dead_address().await;
    let gw = Gateway::start(&config(
        blue.addr,
        green.addr,
        canary,
        &format!("{ACCESS_RULES}\n[log]\naccess = \"access.log\"\n"),
    ));
    let want = access_traffic(&gw, &blue, &green).await;
    // The file is relative to the config file.
    let path: PathBuf = gw.config_path.parent().unwrap().join("access.log");
    let lines = wait_for_lines(|| read_lines(&path), want.len()).await;
    assert_eq!(
        lines.len(),
        want.len(),
        "one line per request:\n{}",
        lines.join("\n")
    );
    for (line, want) in lines.iter().zip(&want) {
        check_access_line(line, want);
    }
    // Admin requests are not traffic and are not logged.
    let _ = scrape(&gw).await;
    let _ = get(&gw.admin_url("/readyz"), &[]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(read_lines(&path).len(), want.len());
}

#[tokio::test]
async fn access_log_to_stderr_writes_json_lines_among_the_logs() {
    let blue = Upstream::named("blue").await;
    let green = Upstream::named("green").await;
    let canary = dead_address().await;
    let gw = Gateway::start(&config(
        blue.addr,
        green.addr,
        canary,
        &format!("{ACCESS_RULES}\n[log]\naccess = \"stderr\"\n"),
    ));
    let want = access_traffic(&gw, &blue, &green).await;
    // stderr also carries the tracing log; access lines are the JSON objects with
    // a top-level `status` and `pool`.
    let access_lines = || {
        gw.logs()
            .lines()
            .filter(|l| {
                serde_json::from_str::<Json>(l)
                    .is_ok_and(|v| v.get("status").is_some() && v.get("pool").is_some())
            })
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let lines = wait_for_lines(access_lines, want.len()).await;
    assert_eq!(lines.len(), want.len(), "logs:\n{}", gw.logs());
    for (line, want) in lines.iter().zip(&want) {
        check_access_line(line, want);
    }
}

// ---------------------------------------------------------------------------------
// 7. The admin API
// ---------------------------------------------------------------------------------

const EXPLAIN_RULES: &str = r#"[routing]
stable = "blue"
user_key = { header = "x-user-id" }
channel = { query = "ch" }

[[rules]]
name = "staff"
match = { whitelist = ["1001", "1002"] }
to = "canary"

[[rules]]
name = "appstore"
match = { channel = ["appstore"] }
to = "green"

[[rules]]
name = "canary-300-permille"
match = { permille = 300, salt = "" }
to = "canary"
"#;

#[tokio::test]
async fn admin_unknown_paths_are_404_and_wrong_methods_405_with_allow() {
    let blue = Upstream::named("blue").await;
    let gw = Gateway::start(&config(
        blue.addr,
        blue.addr,
        blue.addr,
        "[routing]\nstable = \"blue\"\n",
    ));
    for path in [
        "/",
        "/nope",
        "/metrics/",
        "/admin",
        "/admin/",
        "/admin/reloadx",
    ] {
        let a = get(&gw.admin_url(path), &[]).await;
        assert_eq!(a.status, 404, "GET {path}");
    }
    assert_eq!(post(&gw.admin_url("/nope")).await.status, 404);
    for (method, path, allow) in [
        ("POST", "/metrics", "GET, HEAD"),
        ("DELETE", "/healthz", "GET, HEAD"),
        ("PUT", "/readyz", "GET, HEAD"),
        ("POST", "/admin/config", "GET, HEAD"),
        ("POST", "/admin/explain", "GET, HEAD"),
        ("GET", "/admin/reload", "POST"),
        ("PUT", "/admin/reload", "POST"),
    ] {
        let a = request(method, &gw.admin_url(path)).await;
        assert_eq!(a.status, 405, "{method} {path}");
        assert_eq!(a.header("allow"), Some(allow), "{method} {path}");
    }
    let head = request("HEAD", &gw.admin_url("/metrics")).await;
    assert_eq!(head.status, 200);
    assert_eq!(get(&gw.admin_url("/healthz"), &[]).await.status, 200);
}

/// `graygate explain` as a process, parsed.
fn cli_explain(config: &Path, headers: &[&str], path: &str) -> Json {
    let mut command = Command::new(bin());
    command.arg("explain").arg("--config").arg(config);
    for header in headers {
        command.args(["-H", header]);
    }
    let out = command
        .args(["--path", path])
        .output()
        .expect("run explain");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("explain prints JSON")
}

#[tokio::test]
async fn admin_explain_answers_what_graygate_explain_prints() {
    let blue = Upstream::named("blue").await;
    let green = Upstream::named("green").await;
    let canary = Upstream::named("canary").await;
    let gw = Gateway::start(&config(blue.addr, green.addr, canary.addr, EXPLAIN_RULES));

    // (query for /admin/explain, -H flags, --path)
    let cases: [(&str, &[&str], &str); 4] = [
        ("header=x-user-id:1001&path=/", &["x-user-id: 1001"], "/"),
        ("header=x-user-id:42&path=/", &["x-user-id: 42"], "/"),
        (
            "header=x-user-id:7&path=%2Fshop%3Fch%3Dappstore",
            &["x-user-id: 7"],
            "/shop?ch=appstore",
        ),
        ("", &[], "/"),
    ];
    for (query, headers, path) in cases {
        let a = get(&gw.admin_url(&format!("/admin/explain?{query}")), &[]).await;
        assert_eq!(a.status, 200, "{query}: {}", a.body);
        assert!(a
            .header("content-type")
            .unwrap_or_default()
            .starts_with("application/json"));
        let admin: Json = serde_json::from_str(&a.body).expect("JSON");
        for key in ["pool", "rule", "bucket", "rules"] {
            assert!(admin.get(key).is_some(), "{key} in {admin}");
        }
        assert!(admin["rules"].is_array());
        let cli = cli_explain(&gw.config_path, headers, path);
        assert_eq!(admin, cli, "/admin/explain?{query} vs graygate explain");
    }

    let staff: Json = serde_json::from_str(
        &get(
            &gw.admin_url("/admin/explain?header=x-user-id:1001&path=/"),
            &[],
        )
        .await
        .body,
    )
    .unwrap();
    assert_eq!(staff["pool"], "canary");
    assert_eq!(staff["rule"], "staff");
    assert!(
        staff["bucket"].is_null(),
        "no permille rule evaluated: {staff}"
    );
    let user: Json = serde_json::from_str(
        &get(&gw.admin_url("/admin/explain?header=x-user-id:42"), &[])
            .await
            .body,
    )
    .unwrap();
    let bucket = graygate::routing::bucket(b"", b"42");
    assert_eq!(user["bucket"], bucket, "{user}");
    let (pool, rule) = if bucket < 300 {
        ("canary", "canary-300-permille")
    } else {
        ("blue", "default")
    };
    assert_eq!(
        (user["pool"].as_str(), user["rule"].as_str()),
        (Some(pool), Some(rule))
    );

    let bad = get(&gw.admin_url("/admin/explain?header=nocolon"), &[]).await;
    assert_eq!(bad.status, 400);
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn admin_config(gw: &Gateway) -> Json {
    let a = get(&gw.admin_url("/admin/config"), &[]).await;
    assert_eq!(a.status, 200);
    serde_json::from_str(&a.body).expect("/admin/config is JSON")
}

#[tokio::test]
async fn admin_config_reports_generation_hash_and_last_error() {
    let blue = Upstream::named("blue").await;
    let green = Upstream::named("green").await;
    let canary = Upstream::named("canary").await;
    let gw = Gateway::start(&config(blue.addr, green.addr, canary.addr, EXPLAIN_RULES));
    let original = std::fs::read(&gw.config_path).unwrap();

    let c = admin_config(&gw).await;
    assert_eq!(c["generation"], 1, "{c}");
    let loaded_at = c["loaded_at"].as_str().expect("loaded_at");
    humantime::parse_rfc3339(loaded_at).expect("loaded_at is RFC 3339");
    assert_eq!(c["sha256"], sha256_hex(&original), "{c}");
    assert!(c["last_error"].is_null(), "{c}");
    assert_eq!(c["config"]["routing"]["stable"], "blue", "{c}");
    assert_eq!(
        c["config"]["pools"]["canary"]["endpoints"][0],
        canary.addr.to_string()
    );
    assert_eq!(c["config"]["rules"][0]["name"], "staff");

    // An invalid file: 422 with the error, nothing else changes.
    let invalid = format!(
        "{}\n[[rules]]\nname = \"ghost\"\nmatch = {{ rate = 1.0 }}\nto = \"nowhere\"\n",
        String::from_utf8_lossy(&original)
    );
    rewrite_config(&gw, &invalid);
    let (status, body) = admin_reload(&gw).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("nowhere"),
        "{body}"
    );
    let c = admin_config(&gw).await;
    assert_eq!(c["generation"], 1);
    assert_eq!(c["sha256"], sha256_hex(&original));
    let last_error = c["last_error"].as_str().expect("last_error is text");
    assert!(last_error.contains("nowhere"), "{last_error}");
    let m = scrape(&gw).await;
    // The file watcher may have tried the same file too: at least the POST counted.
    assert!(m.counter("graygate_config_reloads_total", &[("result", "failure")]) >= 1.0);
    assert_eq!(m.gauge("graygate_config_generation", &[]), 1.0);
    let a = get(&gw.url("/"), &[]).await;
    assert_eq!(a.body, "blue", "the running config stays in force");

    // A valid new file: 200 with generation 2; the error is cleared.
    let next = config(
        blue.addr,
        green.addr,
        canary.addr,
        "[routing]\nstable = \"green\"\n",
    );
    rewrite_config(&gw, &next);
    let (status, body) = admin_reload(&gw).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["generation"], 2, "{body}");
    let c = admin_config(&gw).await;
    assert_eq!(c["generation"], 2);
    assert_eq!(c["sha256"], sha256_hex(next.as_bytes()));
    assert!(c["last_error"].is_null(), "{c}");
    assert_eq!(c["config"]["routing"]["stable"], "green");
    let m = scrape(&gw).await;
    assert!(m.counter("graygate_config_reloads_total", &[("result", "success")]) >= 1.0);
    assert_eq!(m.gauge("graygate_config_generation", &[]), 2.0);
}

/// The reload counter's two series should exist, at 0, from the start, as every other
/// family with known label values does (status classes, error kinds): a series that
/// appears only at its first increment hides that increment from `increase()` and
/// `rate()`, so `increase(graygate_config_reloads_total{result="failure"}[5m]) > 0`
/// misses the first failed reload of a process.
#[tokio::test]
async fn reload_counters_are_exported_at_zero_before_any_reload() {
    let blue = Upstream::named("blue").await;
    let gw = Gateway::start(&config(
        blue.addr,
        blue.addr,
        blue.addr,
        "[routing]\nstable = \"blue\"\n",
    ));
    let m = scrape(&gw).await;
    for result in ["success", "failure"] {
        assert_eq!(
            m.counter_opt("graygate_config_reloads_total", &[("result", result)]),
            Some(0.0),
            "graygate_config_reloads_total{{result={result}}} in:\n{}",
            m.text
        );
    }
}

// ---------------------------------------------------------------------------------
// 8. Stale series after a reload; pool_info versions
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn reload_removes_series_of_removed_pools_and_rules_and_updates_pool_info() {
    let blue = Upstream::named("blue").await;
    let green = Upstream::named("green").await;
    let canary = Upstream::named("canary").await;
    let rules = r#"[routing]
stable = "blue"

[[rules]]
name = "to-green"
match = { header = { name = "x-green", present = true } }
to = "green"

[[rules]]
name = "to-canary"
match = { header = { name = "x-canary", present = true } }
to = "canary"
"#;
    let gw = Gateway::start(&gateway_config(
        &[
            ("blue", blue.addr, Some("v1.4.2")),
            ("green", green.addr, Some("v1.4.3")),
            ("canary", canary.addr, Some("v2.0.0")),
        ],
        rules,
    ));
    for headers in [
        &[][..],
        &[][..],
        &[("x-green", "1")][..],
        &[("x-canary", "1")][..],
    ] {
        assert_eq!(get(&gw.url("/"), headers).await.status, 200);
    }
    let m = scrape_until(&gw, |m| {
        counted(
            m,
            "graygate_requests_total",
            &[("pool", "canary"), ("status_class", "2xx")],
        ) >= 1.0
    })
    .await;
    for (pool, version) in [
        ("blue", "v1.4.2"),
        ("green", "v1.4.3"),
        ("canary", "v2.0.0"),
    ] {
        assert_eq!(
            m.gauge(
                "graygate_pool_info",
                &[("pool", pool), ("version", version)]
            ),
            1.0
        );
    }
    assert_eq!(m.all("graygate_pool_info").len(), 3);
    assert!(!m.with_label("pool", "green").is_empty());
    assert_eq!(
        m.counter(
            "graygate_rule_matches_total",
            &[("rule", "to-green"), ("pool", "green")]
        ),
        1.0
    );

    // A failed reload whose candidate had a new pool and rule leaves no series of
    // them behind.
    let text = std::fs::read_to_string(&gw.config_path).unwrap();
    rewrite_config(
        &gw,
        &format!(
            "{text}\n[pools.ghost]\nendpoints = [\"{}\"]\n\n[[rules]]\nname = \"to-ghost\"\nmatch = {{ header = {{ name = \"x-ghost\", present = true }} }}\nto = \"ghost\"\n\n[[rules]]\nname = \"broken\"\nmatch = {{ permille = 1001 }}\nto = \"ghost\"\n",
            blue.addr
        ),
    );
    let (status, body) = admin_reload(&gw).await;
    assert_eq!(status, 422, "{body}");
    let m = scrape(&gw).await;
    assert_eq!(m.with_label("pool", "ghost"), Vec::<String>::new());
    assert_eq!(m.with_label("from", "ghost"), Vec::<String>::new());
    assert_eq!(m.with_label("rule", "to-ghost"), Vec::<String>::new());
    assert_eq!(m.gauge("graygate_config_generation", &[]), 1.0);

    // Green and its rule go; canary gets a new version.
    rewrite_config(
        &gw,
        &gateway_config(
            &[
                ("blue", blue.addr, Some("v1.4.2")),
                ("canary", canary.addr, Some("v2.1.0")),
            ],
            r#"[routing]
stable = "blue"

[[rules]]
name = "to-canary"
match = { header = { name = "x-canary", present = true } }
to = "canary"
"#,
        ),
    );
    let (status, body) = admin_reload(&gw).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["generation"], 2, "{body}");

    let m = scrape(&gw).await;
    assert_eq!(
        m.with_label("pool", "green"),
        Vec::<String>::new(),
        "no series of the removed pool"
    );
    assert_eq!(m.with_label("from", "green"), Vec::<String>::new());
    assert_eq!(
        m.with_label("rule", "to-green"),
        Vec::<String>::new(),
        "no series of the removed rule"
    );
    assert!(
        !m.text.contains("green"),
        "nothing of green is left:\n{}",
        m.text
    );
    let info: BTreeMap<String, String> = m
        .all("graygate_pool_info")
        .iter()
        .map(|s| {
            (
                s.labels.get("pool").unwrap().to_string(),
                s.labels.get("version").unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        info,
        [("blue", "v1.4.2"), ("canary", "v2.1.0")]
            .map(|(p, v)| (p.to_string(), v.to_string()))
            .into_iter()
            .collect(),
        "pool_info follows the config's versions"
    );
    assert_eq!(
        m.gauge(
            "graygate_pool_info",
            &[("pool", "canary"), ("version", "v2.1.0")]
        ),
        1.0
    );
    // Kept pools and rules keep their counts across the reload.
    assert_eq!(
        m.counter(
            "graygate_requests_total",
            &[("pool", "blue"), ("status_class", "2xx")]
        ),
        2.0
    );
    assert_eq!(
        m.counter(
            "graygate_rule_matches_total",
            &[("rule", "to-canary"), ("pool", "canary")]
        ),
        1.0
    );
    assert_eq!(
        m.counter(
            "graygate_rule_matches_total",
            &[("rule", "default"), ("pool", "blue")]
        ),
        2.0
    );
    assert_eq!(m.gauge("graygate_config_generation", &[]), 2.0);
    assert!(m.counter("graygate_config_reloads_total", &[("result", "success")]) >= 1.0);

    // The new config routes as it says: x-green now falls through to blue.
    let a = get(&gw.url("/"), &[("x-green", "1")]).await;
    assert_eq!(a.body, "blue");
}

/// Switching the stable pool moves the default rule's and the fallbacks' series to
/// the new stable pool and removes the old ones.
#[tokio::test]
async fn switching_the_stable_pool_moves_default_and_fallback_series() {
    let blue = Upstream::named("blue").await;
    let green = Upstream::named("green").await;
    let canary = Upstream::named("canary").await;
    let gw = Gateway::start(&config(
        blue.addr,
        green.addr,
        canary.addr,
        "[routing]\nstable = \"blue\"\n",
    ));
    assert_eq!(get(&gw.url("/"), &[]).await.body, "blue");
    rewrite_config(
        &gw,
        &config(
            blue.addr,
            green.addr,
            canary.addr,
            "[routing]\nstable = \"green\"\n",
        ),
    );
    assert_eq!(admin_reload(&gw).await.0, 200);
    assert_eq!(get(&gw.url("/"), &[]).await.body, "green");
    let m = scrape_until(&gw, |m| {
        counted(
            m,
            "graygate_rule_matches_total",
            &[("rule", "default"), ("pool", "green")],
        ) >= 1.0
    })
    .await;
    assert_eq!(
        m.counter(
            "graygate_rule_matches_total",
            &[("rule", "default"), ("pool", "green")]
        ),
        1.0
    );
    assert_eq!(
        m.counter_opt(
            "graygate_rule_matches_total",
            &[("rule", "default"), ("pool", "blue")]
        ),
        None,
        "the old default series is gone"
    );
    assert_eq!(m.with_label("to", "blue"), Vec::<String>::new());
    assert_eq!(
        m.counter(
            "graygate_fallbacks_total",
            &[("from", "canary"), ("to", "green")]
        ),
        0.0
    );
}

// ---------------------------------------------------------------------------------
// 9. Active connections
// ---------------------------------------------------------------------------------

/// One keep-alive request on an open connection; returns once the body is read.
async fn keep_alive_request(stream: &mut TcpStream) {
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: graygate.test\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    tokio::time::timeout(STEP, async {
        while !String::from_utf8_lossy(&got).ends_with("\r\n\r\nblue") {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "connection closed: {}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("response in time");
    assert!(got.starts_with(b"HTTP/1.1 200"));
}

async fn active_connections_until(gw: &Gateway, want: f64) -> f64 {
    let m = scrape_until(gw, |m| {
        counted(m, "graygate_active_connections", &[]) == want
    })
    .await;
    m.gauge("graygate_active_connections", &[])
}

#[tokio::test]
async fn active_connections_follow_open_keep_alive_connections() {
    let blue = Upstream::named("blue").await;
    let gw = Gateway::start(&config(
        blue.addr,
        blue.addr,
        blue.addr,
        "[routing]\nstable = \"blue\"\n",
    ));
    // Admin connections are not client connections.
    assert_eq!(active_connections_until(&gw, 0.0).await, 0.0);

    let mut first = TcpStream::connect(gw.addr).await.unwrap();
    keep_alive_request(&mut first).await;
    assert_eq!(active_connections_until(&gw, 1.0).await, 1.0);
    // Still open after a second request on the same connection.
    keep_alive_request(&mut first).await;
    let mut second = TcpStream::connect(gw.addr).await.unwrap();
    keep_alive_request(&mut second).await;
    let mut third = TcpStream::connect(gw.addr).await.unwrap();
    keep_alive_request(&mut third).await;
    assert_eq!(active_connections_until(&gw, 3.0).await, 3.0);

    drop(second);
    assert_eq!(active_connections_until(&gw, 2.0).await, 2.0);
    drop(first);
    drop(third);
    assert_eq!(active_connections_until(&gw, 0.0).await, 0.0);
    assert_eq!(blue.requests().len(), 4);
}
