//! The holes an adversarial run found (issue 19), each shown closed on real sockets:
//! a client's stalled body never counts against the upstream, idle HTTP/2 connections
//! are closed, files the config names are read only when they are regular files, an
//! upstream cannot unframe its own answer or flood interim answers, and request heads
//! are cleaned as the README's hardening section says.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::raw::{Reply, Scripted};
use common::*;
use http::Request;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One pool, `blue`, on `upstream`, with `limits` and health ejection as usual.
fn single(upstream: std::net::SocketAddr, limits: &str) -> String {
    one_pool_config(upstream, 1, limits)
}

/// Opens a connection, sends `head`, and keeps it open without sending the body.
async fn stalled_post(gw: &Gateway) -> TcpStream {
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        .await
        .unwrap();
    stream
}

async fn read_answer(stream: &mut TcpStream, limit: Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_request_bodies_are_the_clients_408_and_never_eject_the_pool() {
    for (limits, what) in [
        ("body_read_timeout = \"500ms\"", "body_read_timeout"),
        (
            "request_timeout = \"700ms\"",
            "request_timeout, body_read_timeout at its 60 s",
        ),
    ] {
        let blue = Upstream::named("blue").await;
        let gw = Gateway::start(&single(blue.addr, limits));
        let started = Instant::now();
        let mut stalled = Vec::new();
        for _ in 0..5 {
            stalled.push(stalled_post(&gw).await);
        }
        // Ordinary requests go on being served meanwhile, and after.
        for _ in 0..10 {
            assert_eq!(get(&gw.url("/"), &[]).await.status, 200, "{what}");
        }
        for stream in &mut stalled {
            let answer = read_answer(stream, STEP).await;
            assert!(answer.starts_with("HTTP/1.1 408"), "{what}: {answer:?}");
            assert!(
                answer.contains("request body stopped arriving"),
                "{what}: {answer:?}"
            );
        }
        eprintln!(
            "{what}: 5 stalled bodies answered 408 after {:?}",
            started.elapsed()
        );
        for _ in 0..10 {
            assert_eq!(
                get(&gw.url("/"), &[]).await.status,
                200,
                "{what}: the pool was ejected"
            );
        }
        assert_eq!(
            get(&gw.admin_url("/readyz"), &[]).await.status,
            200,
            "{what}"
        );
        assert_eq!(
            metric(&gw, "graygate_upstream_errors_total", &[]).await,
            0.0,
            "{what}"
        );
        assert_eq!(
            metric(
                &gw,
                "graygate_client_errors_total",
                &[("kind", "body_timeout")]
            )
            .await,
            5.0,
            "{what}"
        );
    }
}

#[tokio::test]
async fn an_http2_stream_whose_body_never_comes_is_the_clients_408() {
    let blue = Upstream::named("blue").await;
    let gw = Gateway::start(&single(blue.addr, "body_read_timeout = \"500ms\""));
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(stream).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    // HEADERS without END_STREAM, and then nothing.
    let request = Request::post("http://x/upload").body(()).unwrap();
    let (response, _body_never_sent) = client.send_request(request, false).unwrap();
    let response = tokio::time::timeout(STEP, response).await.unwrap().unwrap();
    assert_eq!(response.status(), 408);
    assert_eq!(
        metric(&gw, "graygate_upstream_errors_total", &[]).await,
        0.0
    );
    assert_eq!(get(&gw.url("/"), &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_are_closed_so_a_new_client_gets_in() {
    let blue = Upstream::named("blue").await;
    let gw = Gateway::start(&single(
        blue.addr,
        "max_connections = 300\nidle_timeout = \"1s\"",
    ));
    let mut closed = tokio::task::JoinSet::new();
    for _ in 0..300 {
        let stream = TcpStream::connect(gw.addr).await.unwrap();
        let (client, connection) = h2::client::handshake(stream).await.unwrap();
        // The connection task answers the server's PINGs, as a live client would.
        closed.spawn(async move {
            let _client = client;
            let _ = connection.await;
        });
    }
    // Every slot is taken now; the idle timeout frees them, with GOAWAY.
    let started = Instant::now();
    let answer = get(&gw.url("/"), &[]).await;
    assert_eq!(answer.status, 200);
    let waited = started.elapsed();
    eprintln!(
        "300 idle h2c connections: a new client was served after {waited:?} (idle_timeout 1s)"
    );
    assert!(waited < Duration::from_secs(6), "{waited:?}");
    let deadline = Instant::now() + STEP;
    let mut ended = 0;
    while ended < 300 && Instant::now() < deadline {
        if tokio::time::timeout(Duration::from_secs(1), closed.join_next())
            .await
            .is_ok()
        {
            ended += 1;
        }
    }
    assert_eq!(
        ended, 300,
        "every idle connection was closed by the gateway"
    );
}

#[test]
fn a_fifo_or_a_device_as_a_whitelist_file_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("staff.txt");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let huge = dir.path().join("huge.txt");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(65 << 20)
        .unwrap();
    for (file, message) in [
        (fifo.display().to_string(), "not a regular file"),
        ("/dev/zero".to_string(), "not a regular file"),
        (huge.display().to_string(), "larger than"),
    ] {
        let config = dir.path().join("g.toml");
        std::fs::write(
            &config,
            format!("[pools.blue]\nendpoints = [\"127.0.0.1:1\"]\n[routing]\nstable = \"blue\"\nuser_key = {{ header = \"x\" }}\n[[rules]]\nname = \"staff\"\nmatch = {{ whitelist_file = \"{file}\" }}\nto = \"blue\"\n"),
        )
        .unwrap();
        let mut child = Command::new(bin())
            .args(["check", "--config"])
            .arg(&config)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > STEP {
                let _ = child.kill();
                panic!("check hung on {file}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{file}: {err}");
        assert!(
            err.contains("rules[0].match.whitelist_file") && err.contains(message),
            "{file}: {err}"
        );
    }
}

#[tokio::test]
async fn a_whitelist_file_swapped_for_a_fifo_leaves_the_control_plane_responsive() {
    let blue = Upstream::named("blue").await;
    let gw = Gateway::start_with_files(
        &format!(
            "{}\nuser_key = {{ header = \"x-user-id\" }}\n[[rules]]\nname = \"staff\"\nmatch = {{ whitelist_file = \"staff.txt\" }}\nto = \"blue\"\n",
            single(blue.addr, "")
        ),
        &[("staff.txt", "1001\n")],
    );
    let staff = gw.dir.path().join("staff.txt");
    let fifo = gw.dir.path().join("staff.fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    std::fs::rename(&fifo, &staff).unwrap();
    let reload = send(
        Request::post(gw.admin_url("/admin/reload"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(reload.status, 422, "{}", reload.body);
    assert!(reload.body.contains("not a regular file"));
    assert_eq!(get(&gw.admin_url("/healthz"), &[]).await.status, 200);
    assert_eq!(get(&gw.admin_url("/admin/config"), &[]).await.status, 200);
    assert_eq!(
        get(&gw.url("/"), &[("x-user-id", "1001")]).await.status,
        200
    );
}

#[tokio::test]
async fn an_upstream_that_names_content_length_in_connection_is_still_framed_by_it() {
    let upstream = Scripted::start(|_| {
        Reply::Send(b"HTTP/1.1 200 OK\r\nConnection: Content-Length, X-Drop\r\nX-Drop: 1\r\nContent-Length: 5\r\n\r\nhello".to_vec())
    })
    .await;
    let gw = Gateway::start(&single(upstream.addr, ""));
    let started = Instant::now();
    let answer = get(&gw.url("/"), &[]).await;
    assert_eq!(
        (answer.status.as_u16(), answer.body.as_str()),
        (200, "hello")
    );
    assert!(
        answer.header("x-drop").is_none(),
        "a header Connection names is still dropped"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "read until close: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_upstream_that_floods_interim_answers_gets_a_quick_502() {
    let upstream =
        Scripted::start(|_| Reply::Send(b"HTTP/1.1 100 Continue\r\n\r\n".repeat(1000))).await;
    let gw = Gateway::start(&single(upstream.addr, ""));
    let started = Instant::now();
    let answer = get(&gw.url("/"), &[]).await;
    assert_eq!(answer.status, 502);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// Raw request bytes, the answer's status line.
async fn status_of(gw: &Gateway, request: &str) -> String {
    let answer = raw_exchange(gw.addr, request.as_bytes(), Duration::from_secs(2)).await;
    answer.lines().next().unwrap_or("").to_string()
}

#[tokio::test]
async fn request_heads_are_cleaned_as_the_readme_says() {
    let upstream = Upstream::named("blue").await;
    let gw = Gateway::start(&single(upstream.addr, ""));
    for (request, status, why) in [
        (
            "GET / HTTP/1.1\r\nHost: evil/x?y\r\nConnection: close\r\n\r\n",
            "400",
            "a path in Host",
        ),
        (
            "GET / HTTP/1.1\r\nHost: good@evil\r\nConnection: close\r\n\r\n",
            "400",
            "user info in Host",
        ),
        (
            "GET https://user:pw@evil:99/x HTTP/1.1\r\nHost: evil:99\r\nConnection: close\r\n\r\n",
            "400",
            "user info in the target",
        ),
        (
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
            "400",
            "two Host headers",
        ),
        (
            "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
            "400",
            "no Host on HTTP/1.1",
        ),
        (
            "TRACE / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            "405",
            "TRACE",
        ),
        (
            "GET / HTTP/1.0\r\n\r\n",
            "200",
            "HTTP/1.0 may go without Host",
        ),
        (
            "GET / HTTP/1.1\r\nHost: [::1]:8080\r\nConnection: close\r\n\r\n",
            "200",
            "an IPv6 host",
        ),
    ] {
        let line = status_of(&gw, request).await;
        assert!(line.contains(status), "{why}: {line:?}");
    }
    // `Connection: host` cannot delete Host; underscored names do not pass; an h2c
    // upgrade is not an upgrade.
    let line = status_of(
        &gw,
        "GET /h HTTP/1.1\r\nHost: kept.example\r\nConnection: host, close\r\nX_User_Id: spoofed\r\nX-User-Id: 7\r\n\r\n",
    )
    .await;
    assert!(line.contains("200"), "{line}");
    let seen = upstream.last();
    assert_eq!(seen.headers["host"], "kept.example");
    assert_eq!(seen.headers["x-user-id"], "7");
    assert!(seen.headers.get("x_user_id").is_none());
    let line = status_of(
        &gw,
        "GET /u HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
    )
    .await;
    assert!(line.contains("200"), "{line}");
    let seen = upstream.last();
    assert_eq!(seen.uri.path(), "/u");
    assert!(seen.headers.get("upgrade").is_none() && seen.headers.get("http2-settings").is_none());
}

#[tokio::test]
async fn the_header_count_limit_is_a_key() {
    // A raw upstream: a hyper one would refuse more than 100 headers itself.
    let upstream = Scripted::start(|_| Reply::Send(common::raw::ok("blue"))).await;
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let request = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}Connection: close\r\n\r\n");
    let default = Gateway::start(&single(upstream.addr, ""));
    assert!(status_of(&default, &request).await.contains("431"));
    let raised = Gateway::start(&single(upstream.addr, "max_headers = 200"));
    assert!(status_of(&raised, &request).await.contains("200"));
}
