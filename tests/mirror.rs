//! Dark launches by mirroring, end to end: real upstreams on 127.0.0.1 (one that hangs,
//! one that is dead, one that is slow and counts its concurrency), real traffic with
//! keep-alive, the copies as the mirror target sees them, the differences as
//! `/admin/mirror` and the metrics report them, and bad configs refused.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// Blue serves; green is the mirror target. `mirror` is the body of a `[[mirror]]`.
fn mirror_config(blue: SocketAddr, green: SocketAddr, mirror: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_timeout = "2s"

[pools.blue]
endpoints = ["{blue}"]
[pools.green]
endpoints = ["{green}"]

[routing]
stable = "blue"
user_key = {{ header = "x-user-id" }}

[[mirror]]
from = "blue"
to = "green"
{mirror}
"#
    )
}

/// A target that accepts connections and never answers.
async fn hanging_target() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut sink = [0u8; 4096];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

/// A target that answers after `delay`, counting the requests it holds at once.
struct SlowTarget {
    addr: SocketAddr,
    now: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    served: Arc<AtomicUsize>,
}

impl SlowTarget {
    async fn start(delay: Duration) -> SlowTarget {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (now, most, served) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (n, m, s) = (Arc::clone(&now), Arc::clone(&most), Arc::clone(&served));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (n, m, s) = (Arc::clone(&n), Arc::clone(&m), Arc::clone(&s));
                let service = service_fn(move |_: Request<Incoming>| {
                    let (n, m, s) = (Arc::clone(&n), Arc::clone(&m), Arc::clone(&s));
                    async move {
                        let held = n.fetch_add(1, Ordering::SeqCst) + 1;
                        m.fetch_max(held, Ordering::SeqCst);
                        tokio::time::sleep(delay).await;
                        n.fetch_sub(1, Ordering::SeqCst);
                        s.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("green"))))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        SlowTarget {
            addr,
            now,
            most,
            served,
        }
    }
}

async fn mirror_reports(gw: &Gateway) -> Vec<Value> {
    let answer = get(&gw.admin_url("/admin/mirror"), &[]).await;
    assert_eq!(answer.status, 200);
    let report = serde_json::from_str::<Value>(&answer.body).unwrap();
    report["mirrors"].as_array().unwrap().clone()
}

async fn mirror_report(gw: &Gateway) -> Value {
    mirror_reports(gw).await[0].clone()
}

/// Waits until no copy is in flight. A copy holds its slot from the moment its request
/// is decided until it is counted, so once the clients have their answers, this is the
/// moment every copy has been counted: no sleep and hope.
async fn settled(gw: &Gateway) {
    let started = Instant::now();
    loop {
        let reports = mirror_reports(gw).await;
        if reports.iter().all(|r| r["in_flight"] == 0) {
            return;
        }
        assert!(
            started.elapsed() < STEP,
            "copies still in flight: {reports:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `n` sequential GETs on one keep-alive connection; each one's latency.
async fn timed_gets(gw: &Gateway, n: usize) -> Vec<Duration> {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build_http::<Full<Bytes>>();
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let request = Request::get(gw.url("/"))
            .header("x-user-id", i.to_string())
            .body(Full::new(Bytes::new()))
            .unwrap();
        let started = Instant::now();
        let response = tokio::time::timeout(STEP, client.request(request))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), 200);
        let _ = response.into_body().collect().await.unwrap();
        latencies.push(started.elapsed());
    }
    latencies
}

fn p99(latencies: &mut [Duration]) -> Duration {
    latencies.sort();
    latencies[latencies.len() * 99 / 100]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_mirror_target_adds_no_latency_to_served_requests() {
    let blue = Upstream::named("blue").await;
    let green = hanging_target().await;
    let mirrored = Gateway::start(&mirror_config(
        blue.addr,
        green,
        "timeout = \"300ms\"\nmax_in_flight = 16",
    ));
    let plain = Gateway::start(&mirror_config(blue.addr, green, "permille = 0"));
    // Interleaved, so the machine's noise hits both alike.
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        on.extend(timed_gets(&mirrored, 100).await);
        off.extend(timed_gets(&plain, 100).await);
    }
    let (p99_on, p99_off) = (p99(&mut on), p99(&mut off));
    let (median_on, median_off) = (on[on.len() / 2], off[off.len() / 2]);
    eprintln!("500 requests, target hanging: p50 {median_on:?} / p99 {p99_on:?} mirrored, p50 {median_off:?} / p99 {p99_off:?} not");
    assert!(
        p99_on < p99_off * 3 + Duration::from_millis(20),
        "p99 {p99_on:?} with a hanging mirror, {p99_off:?} without"
    );
    assert!(
        p99_on < Duration::from_millis(250),
        "a served request waited for its copy: p99 {p99_on:?}"
    );
    // Every copy timed out (300 ms after it started) or was dropped; none was answered.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let timed_out = metric(
        &mirrored,
        "graygate_mirror_requests_total",
        &[("outcome", "timeout")],
    )
    .await;
    let dropped = metric(
        &mirrored,
        "graygate_mirror_requests_total",
        &[("outcome", "dropped")],
    )
    .await;
    let sent = metric(
        &mirrored,
        "graygate_mirror_requests_total",
        &[("outcome", "sent")],
    )
    .await;
    eprintln!("copies: {timed_out} timed out, {dropped} dropped (max_in_flight 16)");
    assert_eq!((timed_out + dropped, sent), (500.0, 0.0));
    assert!(timed_out > 0.0 && dropped > 0.0);
}

#[tokio::test]
async fn a_dead_mirror_target_never_fails_a_served_request() {
    let blue = Upstream::named("blue").await;
    let gw = Gateway::start(&mirror_config(blue.addr, dead_address().await, ""));
    for i in 0..100 {
        let answer = get(&gw.url("/"), &[("x-user-id", &i.to_string())]).await;
        assert_eq!(
            (answer.status.as_u16(), answer.body.as_str()),
            (200, "blue")
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        metric(
            &gw,
            "graygate_mirror_requests_total",
            &[("outcome", "error")]
        )
        .await,
        100.0
    );
    // The dead target's endpoint is the mirror's own: real traffic's blue is untouched,
    // and green's own endpoint (never used here) is not ejected either.
    assert!(get(&gw.admin_url("/readyz"), &[]).await.status.is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_max_in_flight_copies_are_open_at_once() {
    let blue = Upstream::named("blue").await;
    let green = SlowTarget::start(Duration::from_millis(300)).await;
    let gw = Gateway::start(&mirror_config(
        blue.addr,
        green.addr,
        "max_in_flight = 4\ntimeout = \"5s\"",
    ));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let url = gw.url("/");
        tasks.spawn(async move { get(&url, &[("x-user-id", &i.to_string())]).await.status });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    assert!(
        wait_until(Duration::from_secs(5), || green.now.load(Ordering::SeqCst)
            == 0
            && green.served.load(Ordering::SeqCst) > 0)
        .await
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let most = green.most.load(Ordering::SeqCst);
    let dropped = metric(
        &gw,
        "graygate_mirror_requests_total",
        &[("outcome", "dropped")],
    )
    .await;
    let sent = metric(
        &gw,
        "graygate_mirror_requests_total",
        &[("outcome", "sent")],
    )
    .await;
    eprintln!("50 concurrent requests: at most {most} copies at the target at once, {sent} sent, {dropped} dropped");
    assert!((1..=4).contains(&most), "{most} copies at once");
    assert_eq!(sent + dropped, 50.0);
    assert_eq!(sent as usize, green.served.load(Ordering::SeqCst));
}

#[tokio::test]
async fn a_post_is_copied_only_when_asked_and_a_body_only_up_to_the_bound() {
    let blue = Upstream::named("blue").await;
    let green = Upstream::named("green").await;
    let post = |gw: &Gateway, body: Vec<u8>| {
        let request = Request::post(gw.url("/infer"))
            .header("x-user-id", "1")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        send(request)
    };
    // The default: safe methods only.
    let safe = Gateway::start(&mirror_config(blue.addr, green.addr, ""));
    assert_eq!(
        post(&safe, b"{\"prompt\":\"hi\"}".to_vec()).await.status,
        200
    );
    get(&safe.url("/"), &[("x-user-id", "1")]).await;
    settled(&safe).await;
    assert_eq!(
        green
            .requests()
            .iter()
            .map(|r| r.method.as_str())
            .collect::<Vec<_>>(),
        ["GET"]
    );

    let posting = Gateway::start(&mirror_config(
        blue.addr,
        green.addr,
        "methods = [\"POST\"]\nallow_side_effects = true\nmax_body_bytes = 1024",
    ));
    let body = b"{\"prompt\":\"a model call\"}".to_vec();
    assert_eq!(post(&posting, body.clone()).await.status, 200);
    assert!(wait_until(Duration::from_secs(5), || green.requests().len() == 2).await);
    let copy = green.last();
    assert_eq!(
        (copy.method.as_str(), copy.uri.path(), &copy.body[..]),
        ("POST", "/infer", &body[..])
    );
    assert_eq!(copy.headers["x-graygate-mirror"], "1");
    // Over the bound, declared or streamed: served whole, and not copied.
    let large = vec![b'x'; 4096];
    let answer = post(&posting, large.clone()).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        blue.last().body.len(),
        4096,
        "the served request lost nothing"
    );
    let chunked = Request::post(posting.url("/infer"))
        .header("x-user-id", "1")
        .body(Chunks(
            [Bytes::from(vec![b'y'; 800]), Bytes::from(vec![b'y'; 800])].into(),
        ))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let response = tokio::time::timeout(STEP, client.request(chunked))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    let _ = response.into_body().collect().await;
    assert_eq!(blue.last().body.len(), 1600);
    settled(&posting).await;
    assert_eq!(green.requests().len(), 2, "neither large body was copied");
    assert_eq!(
        metric(
            &posting,
            "graygate_mirror_requests_total",
            &[("outcome", "too_large")]
        )
        .await,
        2.0
    );
}

/// A body sent as these chunks, with no declared length (so: chunked).
struct Chunks(std::collections::VecDeque<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(
            self.get_mut()
                .0
                .pop_front()
                .map(|b| Ok(http_body::Frame::data(b))),
        )
    }
}

#[tokio::test]
async fn copies_are_marked_and_the_share_copied_is_the_permille_sticky_per_user() {
    let blue = Upstream::named("blue").await;
    let green = Upstream::named("green").await;
    let gw = Gateway::start(&mirror_config(blue.addr, green.addr, "permille = 300"));
    for user in 0..2000 {
        get(&gw.url("/"), &[("x-user-id", &format!("u{user}"))]).await;
    }
    settled(&gw).await;
    let copies = green.requests();
    // Binomial(2000, 0.3): sd 20.5; the bound is five of them.
    assert!(
        (500..=700).contains(&copies.len()),
        "{} of 2,000 copied at 300‰",
        copies.len()
    );
    for copy in &copies {
        assert_eq!(copy.headers["x-graygate-mirror"], "1");
        assert_eq!(copy.headers["x-graygate-pool"], "green");
    }
    // Sticky by user: the same users again are copied again, and only they.
    let copied: std::collections::BTreeSet<String> = copies
        .iter()
        .map(|c| c.headers["x-user-id"].to_str().unwrap().to_string())
        .collect();
    let not_copied: Vec<String> = (0..2000)
        .map(|user| format!("u{user}"))
        .filter(|user| !copied.contains(user))
        .take(50)
        .collect();
    for user in copied.iter().take(50).chain(&not_copied) {
        get(&gw.url("/"), &[("x-user-id", user)]).await;
    }
    settled(&gw).await;
    let again = green.requests();
    eprintln!("2,000 users at 300‰: {} copied", copies.len());
    assert_eq!(again.len(), copies.len() + 50);
    let recopied: std::collections::BTreeSet<String> = again[copies.len()..]
        .iter()
        .map(|c| c.headers["x-user-id"].to_str().unwrap().to_string())
        .collect();
    assert!(recopied.iter().all(|user| copied.contains(user)));
}

#[tokio::test]
async fn differences_are_counted_and_listed_with_their_json_paths() {
    let answer = |version: &'static str| -> Handler {
        Arc::new(move |seen: &Seen| {
            let json = |text: &str, tokens: u32| {
                format!(
                    r#"{{"choices":[{{"text":"{text}","index":0}}],"usage":{{"total_tokens":{tokens}}}}}"#
                )
            };
            let (status, body, model) = match (seen.uri.path(), version) {
                ("/same", _) => (200, r#"{"ok":true}"#.to_string(), "m"),
                ("/status", "v1") => (200, "ok".to_string(), "m"),
                ("/status", _) => (503, "ok".to_string(), "m"),
                (_, "v1") => (200, json("hello", 7), "v1"),
                _ => (200, json("hullo", 9), "v2"),
            };
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .header("x-model", if seen.uri.path() == "/" { model } else { "m" })
                .header("x-request-id", version)
                .body(Full::new(Bytes::from(body)))
                .unwrap()
        })
    };
    let blue = Upstream::with_handler(answer("v1")).await;
    let green = Upstream::with_handler(answer("v2")).await;
    let gw = Gateway::start(&mirror_config(
        blue.addr,
        green.addr,
        "diff_ignore_headers = [\"date\", \"x-request-id\"]",
    ));
    get(&gw.url("/same"), &[]).await;
    get(&gw.url("/?user=secret"), &[]).await;
    get(&gw.url("/status"), &[]).await;
    let deadline = Instant::now() + STEP;
    let report = loop {
        let report = mirror_report(&gw).await;
        if report["compared"] == 3 || Instant::now() > deadline {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (report["compared"].as_u64(), report["equal"].as_u64()),
        (Some(3), Some(1)),
        "{report:#}"
    );
    assert_eq!(
        report["differences"],
        serde_json::json!({ "status": 1, "header": 1, "body": 1 })
    );
    let recent = report["recent"].as_array().unwrap();
    assert_eq!(recent.len(), 2);
    let status = recent.iter().find(|d| d["path"] == "/status").unwrap();
    assert_eq!(
        (
            status["served_status"].as_u64(),
            status["mirror_status"].as_u64()
        ),
        (Some(200), Some(503))
    );
    let model = recent.iter().find(|d| d["path"] == "/").unwrap();
    assert_eq!(model["method"], "GET");
    assert_eq!(
        model["headers"],
        serde_json::json!(["x-model"]),
        "date and x-request-id are ignored"
    );
    assert_eq!(
        model["json_paths"],
        serde_json::json!(["$.choices[0].text", "$.usage.total_tokens"])
    );
    assert!(
        !model.to_string().contains("secret"),
        "the query string is never listed"
    );
    for (kind, n) in [("status", 1.0), ("header", 1.0), ("body", 1.0)] {
        assert_eq!(
            metric(
                &gw,
                "graygate_mirror_diffs_total",
                &[("to", "green"), ("kind", kind)]
            )
            .await,
            n,
            "{kind}"
        );
    }
}

#[tokio::test]
async fn bad_mirrors_are_refused_with_their_keys_and_a_reload_keeps_the_old_config() {
    let dir = tempfile::tempdir().unwrap();
    let base = "[pools.blue]\nendpoints = [\"127.0.0.1:1\"]\n[pools.green]\nendpoints = [\"127.0.0.1:2\"]\n[routing]\nstable = \"blue\"\n[[mirror]]\n";
    for (mirror, key, message) in [
        (
            "from = \"blue\"\nto = \"gren\"",
            "mirror[0].to",
            "unknown pool `gren`",
        ),
        (
            "from = \"blue\"\nto = \"blue\"",
            "mirror[0].to",
            "must differ from `from`",
        ),
        (
            "from = \"blue\"\nto = \"green\"\npermille = 1001",
            "mirror[0].permille",
            "between 0 and 1000",
        ),
        (
            "from = \"blue\"\nto = \"green\"\nmethods = [\"GET\", \"POST\"]",
            "mirror[0].methods[1]",
            "POST is not a safe method",
        ),
        (
            "from = \"blue\"\nto = \"green\"\nmethods = [\"get\"]",
            "mirror[0].methods[0]",
            "methods are case-sensitive: write `GET`",
        ),
        (
            "from = \"blue\"\nto = \"green\"\nmax_in_flight = 0",
            "mirror[0].max_in_flight",
            "between 1 and 100000",
        ),
        (
            "from = \"blue\"\nto = \"green\"\ndiff_ignore_headers = [\"a b\"]",
            "mirror[0].diff_ignore_headers[0]",
            "is not a header name",
        ),
        (
            "from = \"blue\"\nto = \"green\"\nmax_body_bytes = 100000000",
            "mirror[0].max_body_bytes",
            "each copy holds its body in memory",
        ),
    ] {
        let path = dir.path().join("g.toml");
        std::fs::write(&path, format!("{base}{mirror}\n")).unwrap();
        let out = Command::new(bin())
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{mirror}: {err}");
        assert!(
            err.contains(&format!(": {key}: ")) && err.contains(message),
            "{mirror}:\n{err}"
        );
    }
    // A running gateway keeps its mirror through a bad edit.
    let blue = Upstream::named("blue").await;
    let green = Upstream::named("green").await;
    let gw = Gateway::start(&mirror_config(blue.addr, green.addr, ""));
    write(
        &gw.config_path,
        &mirror_config(blue.addr, green.addr, "permille = -5"),
    );
    let reload = send(
        Request::post(gw.admin_url("/admin/reload"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(reload.status, 422, "{}", reload.body);
    assert!(reload.body.contains("mirror[0].permille"));
    get(&gw.url("/"), &[("x-user-id", "7")]).await;
    assert!(
        wait_until(Duration::from_secs(5), || green.requests().len() == 1).await,
        "the old mirror still copies"
    );
}

/// Copies go over kept-alive connections of their own: 100 copies in a row need one
/// or two connections at the target, not a hundred.
#[tokio::test]
async fn copies_reuse_their_connections() {
    let blue = Upstream::named("blue").await;
    let green =
        common::raw::Scripted::start(|_| common::raw::Reply::Send(common::raw::ok("green"))).await;
    let gw = Gateway::start(&mirror_config(blue.addr, green.addr, ""));
    for i in 0..100 {
        get(&gw.url("/"), &[("x-user-id", &i.to_string())]).await;
        // One copy at a time, so each can find the last one's connection idle.
        assert!(wait_until(Duration::from_secs(5), || green.received().len() > i).await);
    }
    assert!(
        green.connections() <= 2,
        "{} connections for 100 copies",
        green.connections()
    );
}

#[tokio::test]
async fn two_mirrors_to_one_pool_are_counted_apart() {
    let blue = Upstream::named("blue").await;
    let green = Upstream::named("green").await;
    let canary = Upstream::named("canary").await;
    let gw = Gateway::start(&format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[pools.blue]
endpoints = ["{}"]
[pools.green]
endpoints = ["{}"]
[pools.canary]
endpoints = ["{}"]
[routing]
stable = "blue"
user_key = {{ header = "x-user-id" }}
[[mirror]]
from = "blue"
to = "green"
[[mirror]]
from = "canary"
to = "green"
"#,
        blue.addr, green.addr, canary.addr
    ));
    for user in 0..5 {
        get(&gw.url("/"), &[("x-user-id", &user.to_string())]).await;
    }
    settled(&gw).await;
    let reports = mirror_reports(&gw).await;
    let copies = |r: &Value| {
        (
            r["from"].clone(),
            r["copies"]["sent"].clone(),
            r["compared"].clone(),
        )
    };
    assert_eq!(copies(&reports[0]), ("blue".into(), 5.into(), 5.into()));
    assert_eq!(copies(&reports[1]), ("canary".into(), 0.into(), 0.into()));
    // The metric is by target, so it has both.
    let sent = metric(
        &gw,
        "graygate_mirror_requests_total",
        &[("outcome", "sent")],
    )
    .await;
    assert_eq!(sent, 5.0);
}

/// The gateway's resident memory, from /proc.
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// A body of `head` bytes, then nothing for `hold`, then its end: an answer (or an
/// upload) that is still open after most of it has gone through.
struct HeldOpen {
    head: Option<Bytes>,
    hold: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl http_body::Body for HeldOpen {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        if let Some(head) = self.head.take() {
            return std::task::Poll::Ready(Some(Ok(http_body::Frame::data(head))));
        }
        std::future::Future::poll(self.hold.as_mut(), cx).map(|()| None)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_mirroring_keeps_in_memory_is_bounded_by_max_in_flight() {
    const MIB: usize = 1 << 20;
    const REQUESTS: usize = 120;
    let hold = Duration::from_secs(4);
    // Blue answers 1 MiB at once and then holds the answer open.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let blue = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = service_fn(move |_request: Request<Incoming>| async move {
                Ok::<_, Infallible>(Response::new(HeldOpen {
                    head: Some(Bytes::from(vec![b'a'; MIB])),
                    hold: Box::pin(tokio::time::sleep(hold)),
                }))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    let green = Upstream::named("green").await;
    let gw = Gateway::start(&mirror_config(
        blue,
        green.addr,
        "max_in_flight = 1\ntimeout = \"10s\"\nmax_body_bytes = 4194304\nmethods = [\"GET\", \"POST\"]\nallow_side_effects = true",
    ));
    let before = resident_bytes(gw.pid());
    // Every answer is read past its first MiB and left open: had each request kept its
    // served answer (or its upload) for a copy that never got a slot, that would be
    // 1 MiB a request.
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http::<HeldOpen>();
    let mut open = Vec::new();
    for i in 0..REQUESTS {
        let upload = HeldOpen {
            head: Some(Bytes::from(vec![b'u'; MIB])),
            hold: Box::pin(tokio::time::sleep(hold)),
        };
        let request = Request::post(gw.url("/"))
            .header("x-user-id", i.to_string())
            .body(upload)
            .unwrap();
        let client = client.clone();
        open.push(tokio::spawn(async move {
            let response = client.request(request).await.unwrap();
            let mut body = response.into_body();
            let mut read = 0;
            while read < MIB {
                let frame = body.frame().await.unwrap().unwrap();
                read += frame.data_ref().map_or(0, |d| d.len());
            }
            body // kept open
        }));
    }
    let mut bodies = Vec::new();
    for task in open {
        bodies.push(tokio::time::timeout(STEP, task).await.unwrap().unwrap());
    }
    let during = resident_bytes(gw.pid());
    let report = mirror_report(&gw).await;
    let grown = during.saturating_sub(before) as f64 / MIB as f64;
    eprintln!(
        "{REQUESTS} open 1 MiB answers to 1 MiB uploads, max_in_flight 1: gateway RSS grew {grown:.1} MiB; {} copies dropped",
        report["copies"]["dropped"]
    );
    // Most find the one slot taken (a copy whose upload the upstream answered before
    // reading gives its slot back early, so a few get one in turn).
    assert!(report["copies"]["dropped"].as_u64().unwrap() >= REQUESTS as u64 / 2);
    assert!(report["in_flight"].as_u64().unwrap() <= 1);
    // Keeping each served answer and each upload would be 2 MiB a request (240 MiB).
    assert!(grown < 60.0, "RSS grew {grown:.1} MiB");
    drop(bodies);
}

#[tokio::test]
async fn a_body_the_served_upstream_answers_early_is_not_copied_and_counted_incomplete() {
    // Blue answers at once, without reading the body (as a 401 or a 413 would).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let blue = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = service_fn(|_request: Request<Incoming>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("early"))))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    let green = Upstream::named("green").await;
    let gw = Gateway::start(&mirror_config(
        blue,
        green.addr,
        "methods = [\"POST\"]\nallow_side_effects = true",
    ));
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    use tokio::io::AsyncWriteExt;
    stream
        .write_all(b"POST /up HTTP/1.1\r\nhost: x\r\nx-user-id: 1\r\ncontent-length: 1000\r\n\r\nonly part")
        .await
        .unwrap();
    let mut answer = vec![0; 1024];
    let n = tokio::time::timeout(STEP, stream.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
    settled(&gw).await;
    let report = mirror_report(&gw).await;
    assert_eq!(report["copies"]["incomplete"], 1, "{report}");
    assert_eq!(report["copies"]["too_large"], 0, "{report}");
    assert!(green.requests().is_empty());
}
