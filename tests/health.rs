//! Active health checks end to end: an endpoint that fails its checks stops getting
//! traffic and comes back after `rise` passes; readiness follows the stable pool.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{Response, StatusCode};
use http_body_util::Full;

/// An upstream answering its name, whose `/healthz` passes while `healthy` is set.
async fn checked_upstream(name: &'static str, healthy: Arc<AtomicBool>) -> Upstream {
    Upstream::with_handler(Arc::new(move |seen: &Seen| {
        let status = if seen.uri.path() == "/healthz" && !healthy.load(Ordering::SeqCst) {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        Response::builder()
            .status(status)
            .body(Full::new(Bytes::from(name)))
            .unwrap()
    }))
    .await
}

fn checked_config(blue: &[std::net::SocketAddr], other: std::net::SocketAddr) -> String {
    let endpoints: Vec<String> = blue.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"

[pools.blue]
endpoints = [{}]
health_check = {{ path = "/healthz", interval = "100ms", timeout = "100ms", fall = 2, rise = 2 }}
[pools.canary]
endpoints = ["{other}"]

[routing]
stable = "blue"
"#,
        endpoints.join(", ")
    )
}

/// Polls `probe` until it returns true, within `limit`.
async fn eventually(limit: Duration, mut probe: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if probe().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn bodies(gw: &Gateway, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(get(&gw.url("/"), &[]).await.body);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_checks_take_an_endpoint_out_and_passing_ones_bring_it_back() {
    tokio::time::timeout(Duration::from_secs(20), async {
        let b_healthy = Arc::new(AtomicBool::new(false));
        let a = checked_upstream("a", Arc::new(AtomicBool::new(true))).await;
        let b = checked_upstream("b", Arc::clone(&b_healthy)).await;
        let canary = Upstream::named("canary").await;
        let gw = Gateway::start(&checked_config(&[a.addr, b.addr], canary.addr));

        // b fails its checks: after `fall`, only a serves.
        assert!(
            eventually(Duration::from_secs(5), async || !bodies(&gw, 10)
                .await
                .contains(&"b".to_string()))
            .await
        );
        let metrics = get(&gw.admin_url("/metrics"), &[]).await.body;
        assert!(
            metrics.contains(r#"graygate_pool_endpoints{pool="blue",state="unhealthy"} 1"#),
            "{metrics}"
        );
        assert!(b.requests().iter().any(|s| s.uri.path() == "/healthz"));

        // b recovers: after `rise`, it serves again.
        b_healthy.store(true, Ordering::SeqCst);
        assert!(
            eventually(Duration::from_secs(5), async || bodies(&gw, 10)
                .await
                .contains(&"b".to_string()))
            .await
        );
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_follows_the_stable_pool_health() {
    tokio::time::timeout(Duration::from_secs(20), async {
        let healthy = Arc::new(AtomicBool::new(true));
        let blue = checked_upstream("blue", Arc::clone(&healthy)).await;
        let canary = Upstream::named("canary").await;
        let gw = Gateway::start(&checked_config(&[blue.addr], canary.addr));
        let ready = |gw: &Gateway| {
            let url = gw.admin_url("/readyz");
            async move { get(&url, &[]).await.status }
        };
        assert_eq!(ready(&gw).await, StatusCode::OK);
        healthy.store(false, Ordering::SeqCst);
        assert!(
            eventually(Duration::from_secs(5), async || ready(&gw).await
                == StatusCode::SERVICE_UNAVAILABLE)
            .await
        );
        // With the whole stable pool down, requests get a quick 503, not a hang.
        let answer = get(&gw.url("/"), &[]).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        healthy.store(true, Ordering::SeqCst);
        assert!(
            eventually(Duration::from_secs(5), async || ready(&gw).await
                == StatusCode::OK)
            .await
        );
        assert_eq!(get(&gw.url("/"), &[]).await.body, "blue");
    })
    .await
    .expect("bounded");
}

#[test]
fn bad_health_check_settings_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[pools.blue]\nendpoints = [\"127.0.0.1:9001\"]\nhealth_check = { path = \"healthz\", interval = \"1s\", timeout = \"2s\", fall = 0 }\n[routing]\nstable = \"blue\"\n",
    )
    .unwrap();
    let output = std::process::Command::new(bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for want in [
        "pools.blue.health_check.path: `healthz` is not a request path like /healthz",
        "pools.blue.health_check.timeout: must not exceed the interval",
        "pools.blue.health_check.fall: must be at least 1",
        "3 errors",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in {stderr}");
    }
}
