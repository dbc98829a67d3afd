//! The access log an on-call engineer reads: every field, the request id passed or
//! made and sent upstream, the user key only when asked for, and a file that
//! logrotate can rename (a real `SIGUSR1`, a real rename, real sockets).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

const RULES: &str = r#"[limits]
max_body_bytes = 16

[routing]
stable = "blue"
user_key = { header = "x-user-id" }

[[rules]]
name = "canary-by-header"
match = { header = { name = "x-canary", present = true } }
to = "canary"
"#;

fn parse(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// The raw text of a number field, to see its digits.
fn raw_number<'l>(line: &'l str, key: &str) -> &'l str {
    let start = line.find(&format!("\"{key}\":")).expect(key) + key.len() + 3;
    let rest = &line[start..];
    &rest[..rest.find([',', '}']).unwrap()]
}

fn gateway(pools: &Pools, canary: std::net::SocketAddr, log: &str) -> (Gateway, PathBuf) {
    let gw = Gateway::start(&config(
        pools.blue.addr,
        pools.green.addr,
        canary,
        &format!("{RULES}\n[log]\naccess = \"access.log\"\n{log}"),
    ));
    let path = gw.config_path.parent().unwrap().join("access.log");
    (gw, path)
}

#[tokio::test]
async fn every_field_an_on_call_engineer_needs() {
    let pools = Pools::start().await;
    let (gw, path) = gateway(&pools, dead_address().await, "");
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    // 1. A client's request id and trace context, behind a proxy.
    let a = get(
        &gw.url("/a?q=1"),
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("user-agent", "probe/1.0"),
            ("x-request-id", "req-from-client"),
            ("traceparent", traceparent),
            ("x-user-id", "42"),
        ],
    )
    .await;
    assert_eq!(a.body, "blue");
    assert_eq!(
        pools.blue.last().headers["x-request-id"],
        "req-from-client",
        "passed through as it came"
    );
    // 2. No request id: one is made and sent upstream.
    assert_eq!(get(&gw.url("/b"), &[]).await.body, "blue");
    let made = pools.blue.last().headers["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(made.len(), 36, "a UUID: {made}");
    // 3. The canary is dead: a retry, then the stable pool.
    assert_eq!(get(&gw.url("/c"), &[("x-canary", "1")]).await.body, "blue");
    // 4. The gateway's own 413: no upstream.
    let a = send(
        http::Request::put(gw.url("/upload"))
            .body(http_body_util::Full::new(bytes::Bytes::from(vec![
                b'x';
                64
            ])))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 413);

    let lines = wait_for_lines(|| read_lines(&path), 4).await;
    assert_eq!(lines.len(), 4, "{lines:#?}");
    let v: Vec<Value> = lines.iter().map(|l| parse(l)).collect();
    for (line, v) in lines.iter().zip(&v) {
        for key in [
            "time",
            "method",
            "path",
            "status",
            "client",
            "x_forwarded_for",
            "host",
            "user_agent",
            "request_id",
            "traceparent",
            "pool",
            "rule",
            "bucket",
            "fallback",
            "fallback_from",
            "upstream",
            "upstream_ms",
            "retries",
            "duration_ms",
            "bytes",
        ] {
            assert!(v.get(key).is_some(), "{key} in {line}");
        }
        assert!(
            v.get("user_key").is_none(),
            "personal data, off by default: {line}"
        );
        assert!(
            v["client"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{line}"
        );
        assert_eq!(v["host"], gw.addr.to_string(), "{line}");
        // Rounded to the microsecond: at most three decimals.
        let ms = raw_number(line, "duration_ms");
        assert!(
            ms.split('.').nth(1).is_none_or(|d| d.len() <= 3),
            "duration_ms {ms}: {line}"
        );
        assert!(v["request_id"].is_string(), "{line}");
    }
    assert_eq!(v[0]["x_forwarded_for"], "203.0.113.7");
    assert_eq!(v[0]["user_agent"], "probe/1.0");
    assert_eq!(v[0]["request_id"], "req-from-client");
    assert_eq!(v[0]["traceparent"], traceparent);
    assert_eq!(v[0]["fallback"], false);
    assert!(v[0]["fallback_from"].is_null());
    assert_eq!(v[0]["retries"], 0);
    assert_eq!(v[0]["upstream"], pools.blue.addr.to_string());
    let upstream_ms = v[0]["upstream_ms"].as_f64().expect("upstream_ms");
    let duration_ms = v[0]["duration_ms"].as_f64().unwrap();
    assert!(upstream_ms <= duration_ms, "{}", lines[0]);
    assert!(v[1]["x_forwarded_for"].is_null() && v[1]["traceparent"].is_null());
    assert_eq!(
        v[1]["request_id"],
        made.as_str(),
        "the id sent upstream is logged"
    );

    assert_eq!(
        (v[2]["pool"].as_str(), v[2]["rule"].as_str()),
        (Some("blue"), Some("canary-by-header"))
    );
    assert_eq!(v[2]["fallback"], true);
    assert_eq!(v[2]["fallback_from"], "canary");
    assert_eq!(
        v[2]["retries"], 1,
        "the dead canary, then blue: {}",
        lines[2]
    );

    assert_eq!(v[3]["status"], 413);
    assert!(v[3]["upstream"].is_null() && v[3]["upstream_ms"].is_null());
    assert_eq!(v[3]["retries"], 0);
}

#[tokio::test]
async fn the_user_key_is_logged_only_when_asked_for() {
    let pools = Pools::start().await;
    let (gw, path) = gateway(&pools, pools.canary.addr, "user_key = true\n");
    get(&gw.url("/"), &[("x-user-id", "42")]).await;
    get(&gw.url("/"), &[]).await;
    let lines = wait_for_lines(|| read_lines(&path), 2).await;
    assert_eq!(lines.len(), 2);
    assert_eq!(parse(&lines[0])["user_key"], "42");
    assert!(parse(&lines[1])["user_key"].is_null(), "no key: null");
}

fn signal(gw: &Gateway, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &gw.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_after_a_rename_starts_a_new_file_and_loses_no_line() {
    let pools = Pools::start().await;
    let (gw, path) = gateway(&pools, pools.canary.addr, "");
    let rotated = path.with_extension("log.1");
    let total = 1000;
    // Four clients at a time: half the requests, then the other half while the file is
    // renamed and the signal sent.
    let url = gw.url("/");
    let clients = || -> Vec<tokio::task::JoinHandle<()>> {
        (0..4)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move {
                    for _ in 0..total / 8 {
                        assert_eq!(get(&url, &[]).await.status, 200);
                    }
                })
            })
            .collect()
    };
    for client in clients() {
        client.await.unwrap();
    }
    let second_half = clients();
    std::fs::rename(&path, &rotated).unwrap();
    signal(&gw, "USR1");
    for client in second_half {
        client.await.unwrap();
    }
    let both = || {
        let mut lines = read_lines(&rotated);
        lines.extend(read_lines(&path));
        lines
    };
    let lines = wait_for_lines(both, total).await;
    assert_eq!(lines.len(), total, "every line, in one file or the other");
    assert!(
        path.exists() && !read_lines(&path).is_empty(),
        "a new file after the signal; logs:\n{}",
        gw.logs()
    );
    assert!(!read_lines(&rotated).is_empty());
    // What comes after the signal goes only to the new file.
    let (old, new) = (read_lines(&rotated).len(), read_lines(&path).len());
    get(&gw.url("/"), &[]).await;
    let lines = wait_for_lines(|| read_lines(&path), new + 1).await;
    assert_eq!(lines.len(), new + 1);
    assert_eq!(read_lines(&rotated).len(), old);
}

#[tokio::test]
async fn a_reload_opens_the_file_again_too() {
    let pools = Pools::start().await;
    let (gw, path) = gateway(&pools, pools.canary.addr, "");
    get(&gw.url("/"), &[]).await;
    assert_eq!(wait_for_lines(|| read_lines(&path), 1).await.len(), 1);
    let rotated = path.with_extension("log.1");
    std::fs::rename(&path, &rotated).unwrap();
    signal(&gw, "HUP");
    let reloaded = wait_until(STEP, || gw.logs().contains("SIGHUP")).await;
    assert!(reloaded, "{}", gw.logs());
    // The writer takes up the reopen at its next round (every 20 ms).
    tokio::time::sleep(Duration::from_millis(200)).await;
    get(&gw.url("/"), &[]).await;
    assert_eq!(wait_for_lines(|| read_lines(&path), 1).await.len(), 1);
    assert_eq!(read_lines(&rotated).len(), 1);
}

#[tokio::test]
async fn an_http2_request_logs_its_authority_as_host() {
    let pools = Pools::start().await;
    let (gw, path) = gateway(&pools, pools.canary.addr, "");
    let request = http::Request::get("http://example.test:8080/h2")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(send_h2c(gw.addr, request).await.body, "blue");
    let lines = wait_for_lines(|| read_lines(&path), 1).await;
    assert_eq!(lines.len(), 1);
    assert_eq!(
        parse(&lines[0])["host"],
        "example.test:8080",
        "{}",
        lines[0]
    );
}
