//! The control listeners, end to end on 127.0.0.1 against the real binary: an address
//! another process listens on is refused at start, `server.metrics_listen` serves
//! metrics and probes only, `server.admin_token` guards what changes or shows the
//! config (and `graygate rollout` sends it), and the admin listener is bounded in
//! time, connections and size.
//!
//! Every child process is bounded in time and killed on drop.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The token the tests configure.
const TOKEN: &str = "s3cr3t-t0ken_for.tests~1";

/// One pool, `blue`, on `upstream`; `server` is appended to the `[server]` table.
fn config_with(upstream: SocketAddr, server: &str, limits: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_timeout = "5s"
{server}

[limits]
{limits}

[pools.blue]
endpoints = ["{upstream}"]

[routing]
stable = "blue"
"#
    )
}

/// One request with `method`, `url` and `headers` on a fresh connection.
async fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(request.body(Full::new(Bytes::new())).unwrap()).await
}

/// Runs `graygate` with `args` to completion (within [`STEP`]): exit code, stdout,
/// stderr. `env` is added to its environment, `GRAYGATE_ADMIN_TOKEN` removed first.
fn graygate(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut command = Command::new(bin());
    command
        .args(args)
        .env_remove("GRAYGATE_ADMIN_TOKEN")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn graygate");
    let deadline = Instant::now() + STEP;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("graygate {args:?} did not finish within {STEP:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A text-logging `graygate run --config PATH` that must fail to start: its exit code
/// and stderr. Killed if it is still running after [`STEP`].
fn run_expecting_exit(config: &std::path::Path) -> (Option<i32>, String) {
    let path = config.to_str().unwrap();
    let (code, _, stderr) = graygate(&["run", "--config", path], &[("RUST_LOG", "info")]);
    (code, stderr)
}

/// The status line of what a raw connection got, or "" if it was closed unanswered.
fn status_line(raw: &str) -> &str {
    raw.lines().next().unwrap_or("")
}

// ---------------------------------------------------------------------------------
// An address in use
// ---------------------------------------------------------------------------------

/// With `SO_REUSEPORT` workers, a second gateway on the same `listen` used to start
/// silently and take half the connections. Now it exits 1 at once, naming the
/// address, and the first one goes on serving.
#[tokio::test]
async fn a_second_gateway_on_a_listen_address_in_use_exits_1_naming_it() {
    let blue = Upstream::named("blue").await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let first_config = config_with(blue.addr, "workers = 2", "").replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{listen}\""),
        1,
    );
    let first = Gateway::start(&first_config);
    assert_eq!(first.addr.port(), port);

    // The same config: same listen, a fresh admin port.
    let second = first.dir.path().join("second.toml");
    write(&second, &first_config);
    let started = Instant::now();
    let (code, stderr) = run_expecting_exit(&second);
    assert_eq!(code, Some(1), "stderr:\n{stderr}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        stderr.contains(&format!("cannot listen on {listen} (server.listen)"))
            && stderr.contains("another process already listens there"),
        "stderr:\n{stderr}"
    );

    // The first still has every connection.
    for _ in 0..20 {
        let answer = get(&first.url("/"), &[]).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body, "blue");
    }
    assert_eq!(blue.requests().len(), 20);
}

/// The admin and metrics listeners are refused the same way, each named by its key;
/// port 0 (every other test) still starts.
#[tokio::test]
async fn admin_and_metrics_addresses_in_use_are_refused_by_key() {
    let blue = Upstream::named("blue").await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.toml");

    let admin = config_with(blue.addr, "", "").replacen(
        "admin_listen = \"127.0.0.1:0\"",
        &format!("admin_listen = \"{address}\""),
        1,
    );
    write(&path, &admin);
    let (code, stderr) = run_expecting_exit(&path);
    assert_eq!(code, Some(1), "stderr:\n{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {address} (server.admin_listen)")),
        "stderr:\n{stderr}"
    );

    let metrics = config_with(blue.addr, &format!("metrics_listen = \"{address}\""), "");
    write(&path, &metrics);
    let (code, stderr) = run_expecting_exit(&path);
    assert_eq!(code, Some(1), "stderr:\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot listen on {address} (server.metrics_listen)"
        )),
        "stderr:\n{stderr}"
    );
    drop(taken);

    // Port 0 everywhere: three fresh ports.
    let gw = Gateway::start(&config_with(
        blue.addr,
        "metrics_listen = \"127.0.0.1:0\"\nworkers = 2",
        "",
    ));
    let metrics = gw.metrics.expect("the metrics address is logged");
    assert!(gw.addr.port() != gw.admin.port() && metrics.port() != gw.admin.port());
    assert_eq!(get(&gw.url("/"), &[]).await.body, "blue");
}

// ---------------------------------------------------------------------------------
// server.metrics_listen
// ---------------------------------------------------------------------------------

/// The metrics listener answers `/metrics`, `/healthz` and `/readyz`; the admin API is
/// 404 there (and a POST too), while the admin listener keeps all of it.
#[tokio::test]
async fn metrics_listen_serves_metrics_and_probes_only() {
    let blue = Upstream::named("blue").await;
    let gw = Gateway::start(&config_with(
        blue.addr,
        "metrics_listen = \"127.0.0.1:0\"",
        "",
    ));
    let metrics = gw.metrics.expect("metrics_listen is bound");
    let at = |path: &str| format!("http://{metrics}{path}");
    assert_eq!(get(&gw.url("/"), &[]).await.status, StatusCode::OK);

    let scrape = get(&at("/metrics"), &[]).await;
    assert_eq!(scrape.status, StatusCode::OK);
    assert!(scrape
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    assert!(
        scrape.body.contains("graygate_requests_total{"),
        "{}",
        scrape.body
    );
    assert_eq!(get(&at("/healthz"), &[]).await.status, StatusCode::OK);
    assert_eq!(get(&at("/readyz"), &[]).await.status, StatusCode::OK);
    for path in [
        "/admin/config",
        "/admin/rollout",
        "/admin/explain?path=/",
        "/admin/mirror",
        "/",
    ] {
        assert_eq!(
            get(&at(path), &[]).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    let reload = request("POST", &at("/admin/reload"), &[]).await;
    assert_eq!(reload.status, StatusCode::NOT_FOUND);
    let wrong = request("POST", &at("/metrics"), &[]).await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);

    // The admin listener still has everything.
    assert_eq!(
        get(&gw.admin_url("/admin/config"), &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(&gw.admin_url("/metrics"), &[]).await.status,
        StatusCode::OK
    );
}

/// Clashing listeners and bad tokens are config errors naming their key; the message
/// never repeats the token.
#[test]
fn check_rejects_clashing_listeners_and_bad_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.toml");
    let check = |server: &str| -> Vec<String> {
        write(
            &path,
            &format!(
                "[server]\n{server}\n[pools.blue]\nendpoints = [\"127.0.0.1:1\"]\n[routing]\nstable = \"blue\"\n"
            ),
        );
        let (code, stdout, stderr) = graygate(&["check", "--config", path.to_str().unwrap()], &[]);
        assert_eq!(code, Some(1), "{server}: stdout {stdout}");
        let lines: Vec<String> = stderr.lines().map(str::to_string).collect();
        assert_eq!(
            lines.last().map(String::as_str),
            Some("1 error"),
            "{lines:?}"
        );
        lines
    };
    let file = path.display().to_string();
    let certs = concat!(env!("CARGO_MANIFEST_DIR"), "/config/certs/example");
    let tls = format!(
        "metrics_listen = \"0.0.0.0:9443\"\ntls = {{ listen = \"127.0.0.1:9443\", cert = \"{certs}.pem\", key = \"{certs}.key\" }}"
    );
    let cases: &[(&str, &str)] = &[
        (
            "listen = \"127.0.0.1:9100\"\nmetrics_listen = \"127.0.0.1:9100\"",
            ":3:18: server.metrics_listen: must differ from server.listen",
        ),
        (
            "admin_listen = \"127.0.0.1:9901\"\nmetrics_listen = \"127.0.0.1:9901\"",
            ":3:18: server.metrics_listen: must differ from server.admin_listen",
        ),
        (
            &tls,
            ":2:18: server.metrics_listen: must differ from server.tls.listen (127.0.0.1:9443): they share port 9443",
        ),
        (
            "admin_token = \"\"",
            ":2:15: server.admin_token: must not be empty; remove the key to leave the admin API open",
        ),
        (
            "admin_token = \"two words\"",
            ":2:15: server.admin_token: has whitespace: a bearer token is printable ASCII without spaces",
        ),
        (
            "admin_token = \"tab\\there\"",
            ":2:15: server.admin_token: has whitespace: a bearer token is printable ASCII without spaces",
        ),
        (
            "admin_token = \"bell\\u0007\"",
            ":2:15: server.admin_token: has a control character: a bearer token is printable ASCII without spaces",
        ),
    ];
    for (server, want) in cases {
        let lines = check(server);
        assert_eq!(lines[0], format!("{file}{want}"), "{server}");
        assert!(!lines[0].contains("two words") && !lines[0].contains("bell"));
    }
}

// ---------------------------------------------------------------------------------
// server.admin_token
// ---------------------------------------------------------------------------------

/// With a token, every POST and `/admin/config` need `Authorization: Bearer`; the
/// other reads, `/metrics` first, do not. The config shown never has the token.
#[tokio::test]
async fn admin_token_guards_posts_and_the_config() {
    let blue = Upstream::named("blue").await;
    let gw = Gateway::start(&config_with(
        blue.addr,
        &format!("admin_token = \"{TOKEN}\""),
        "",
    ));
    let bearer = format!("Bearer {TOKEN}");
    let url = gw.admin_url("/admin/reload");

    let missing = request("POST", &url, &[]).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED, "{}", missing.body);
    assert_eq!(
        missing.header("www-authenticate"),
        Some(r#"Bearer realm="graygate""#)
    );
    for wrong in [
        format!("Bearer {TOKEN}x"),
        format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]),
        format!("Basic {TOKEN}"),
        "Bearer".to_string(),
        TOKEN.to_string(),
    ] {
        let answer = request("POST", &url, &[("authorization", &wrong)]).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{wrong}");
        assert!(answer
            .header("www-authenticate")
            .is_some_and(|c| c.starts_with("Bearer")));
    }
    let reloaded = request("POST", &url, &[("authorization", &bearer)]).await;
    assert_eq!(reloaded.status, StatusCode::OK, "{}", reloaded.body);
    // The scheme is case-insensitive.
    let lower = format!("bearer {TOKEN}");
    let reloaded = request("POST", &url, &[("authorization", &lower)]).await;
    assert_eq!(reloaded.status, StatusCode::OK);
    // Any POST: a rollout action too (404 without a rollout, once let in).
    let action = gw.admin_url("/admin/rollout/pause");
    assert_eq!(
        request("POST", &action, &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        request("POST", &action, &[("authorization", &bearer)])
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    let config = get(&gw.admin_url("/admin/config"), &[]).await;
    assert_eq!(config.status, StatusCode::UNAUTHORIZED);
    assert!(!config.body.contains(TOKEN));
    let config = get(
        &gw.admin_url("/admin/config"),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(config.status, StatusCode::OK);
    assert!(!config.body.contains(TOKEN), "{}", config.body);
    let json: Value = serde_json::from_str(&config.body).unwrap();
    assert_eq!(json["config"]["server"]["admin_token"], "<redacted>");

    for path in ["/metrics", "/healthz", "/readyz", "/admin/explain?path=/"] {
        let answer = get(&gw.admin_url(path), &[]).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
    }
    assert!(!gw.logs().contains(TOKEN), "the token is never logged");
}

/// A config whose rollout `graygate rollout` can pause: 200 once the token is right.
fn rollout_config(upstream: SocketAddr, token: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_timeout = "5s"
admin_token = "{token}"

[pools.blue]
endpoints = ["{upstream}"]
[pools.canary]
endpoints = ["{upstream}"]
version = "v2"

[routing]
stable = "blue"
user_key = {{ header = "x-user-id" }}

[[rules]]
name = "canary-rollout"
match = {{ permille = 0 }}
to = "canary"

[rollout]
rule = "canary-rollout"
steps = [100, 500]
interval = "1h"
"#
    )
}

/// `graygate rollout` sends the token: from `--config` (the address and the token
/// of the file), from `GRAYGATE_ADMIN_TOKEN`, or from `--token`; without one it gets
/// 401 and says how to give it.
#[tokio::test]
async fn graygate_rollout_sends_the_admin_token() {
    let blue = Upstream::named("blue").await;
    let gw = Gateway::start(&rollout_config(blue.addr, TOKEN));
    let admin = gw.admin.to_string();

    let (code, _, stderr) = graygate(&["rollout", "pause", "--admin", &admin], &[]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("401") && stderr.contains("GRAYGATE_ADMIN_TOKEN"),
        "{stderr}"
    );
    let (code, _, stderr) = graygate(
        &["rollout", "pause", "--admin", &admin, "--token", "nope"],
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("401: the bearer token is not server.admin_token"),
        "{stderr}"
    );

    // The config file gives the address and the token. Its admin_listen is port 0, so
    // the test points a copy at the bound port.
    let copy = gw.dir.path().join("copy.toml");
    write(
        &copy,
        &rollout_config(blue.addr, TOKEN).replacen(
            "admin_listen = \"127.0.0.1:0\"",
            &format!("admin_listen = \"{admin}\""),
            1,
        ),
    );
    let (code, stdout, stderr) = graygate(
        &["rollout", "pause", "--config", copy.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let status: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status["state"], "paused", "{status:#}");

    let (code, stdout, stderr) = graygate(
        &["rollout", "resume", "--admin", &admin],
        &[("GRAYGATE_ADMIN_TOKEN", TOKEN)],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let status: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status["state"], "progressing", "{status:#}");

    // --token wins over the variable.
    let (code, _, stderr) = graygate(
        &["rollout", "pause", "--admin", &admin, "--token", TOKEN],
        &[("GRAYGATE_ADMIN_TOKEN", "wrong")],
    );
    assert_eq!(code, Some(0), "{stderr}");
    // `status` is a GET: no token needed.
    let (code, _, stderr) = graygate(&["rollout", "status", "--admin", &admin], &[]);
    assert_eq!(code, Some(0), "{stderr}");
}

/// On a non-loopback admin address without a token, the warning names admin_token.
/// (0.0.0.0 is not loopback; the test only reads the log and talks to 127.0.0.1.)
#[tokio::test]
async fn an_open_admin_listener_beyond_loopback_warns_about_admin_token() {
    let blue = Upstream::named("blue").await;
    let open = config_with(blue.addr, "", "").replacen(
        "admin_listen = \"127.0.0.1:0\"",
        "admin_listen = \"0.0.0.0:0\"",
        1,
    );
    let gw = Gateway::start(&open);
    assert!(
        wait_until(STEP, || gw.logs().contains("server.admin_token is not set")).await,
        "{}",
        gw.logs()
    );
    let guarded = open.replacen(
        "shutdown_timeout",
        &format!("admin_token = \"{TOKEN}\"\nshutdown_timeout"),
        1,
    );
    let gw = Gateway::start(&guarded);
    assert_eq!(
        get(
            &format!("http://127.0.0.1:{}/healthz", gw.admin.port()),
            &[]
        )
        .await
        .status,
        StatusCode::OK
    );
    assert!(
        !gw.logs().contains("reachable beyond loopback"),
        "{}",
        gw.logs()
    );
}

// ---------------------------------------------------------------------------------
// The admin listener's bounds
// ---------------------------------------------------------------------------------

/// A slowloris on the admin port, one byte of its head every 200 ms, is cut once
/// `limits.header_read_timeout` (here 2 s) passes, while other clients are answered.
#[tokio::test]
async fn an_admin_slowloris_is_cut_at_the_header_timeout() {
    let blue = Upstream::named("blue").await;
    let gw = Gateway::start(&config_with(blue.addr, "", "header_read_timeout = \"2s\""));
    let mut slow = TcpStream::connect(gw.admin).await.unwrap();
    let started = Instant::now();
    let head =
        b"GET /healthz HTTP/1.1\r\nHost: admin\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut cut = None;
    for byte in head {
        if slow.write_all(&[*byte]).await.is_err() {
            cut = Some(started.elapsed());
            break;
        }
        // Meanwhile the admin API answers others.
        let answer = tokio::time::timeout(Duration::from_secs(1), async {
            get(&gw.admin_url("/healthz"), &[]).await
        })
        .await
        .expect("the admin API answers during the slowloris");
        assert_eq!(answer.status, StatusCode::OK);
        // A closed connection shows as EOF on read.
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(200), slow.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut = Some(started.elapsed());
                break;
            }
            Ok(Ok(n)) => panic!("answered a partial head: {:?}", &buf[..n]),
            Err(_) => {}
        }
        assert!(started.elapsed() < Duration::from_secs(8), "never cut");
    }
    let cut = cut.expect("the slowloris was cut before it finished its head");
    assert!(
        cut >= Duration::from_millis(1800) && cut < Duration::from_secs(4),
        "cut after {cut:?}"
    );
}

/// 64 idle connections hold every admin slot: the clients after them wait (not answered within
/// a second) instead of the listener taking connections without bound. Once the idle
/// ones reach `header_read_timeout` and are closed, it is answered, and so is everyone
/// after; nothing crashed.
#[tokio::test]
async fn admin_connections_are_capped_and_the_cap_frees_itself() {
    const CAP: usize = 64;
    let blue = Upstream::named("blue").await;
    let gw = Gateway::start(&config_with(blue.addr, "", "header_read_timeout = \"3s\""));
    let mut idle = Vec::new();
    for _ in 0..CAP + 6 {
        idle.push(TcpStream::connect(gw.admin).await.unwrap());
    }
    let opened = Instant::now();
    // Let the gateway accept what it will.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut waiting = TcpStream::connect(gw.admin).await.unwrap();
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let early =
        tokio::time::timeout(Duration::from_secs(1), waiting.read_to_end(&mut answer)).await;
    assert!(
        early.is_err() && answer.is_empty(),
        "answered at once beyond the cap: {:?}",
        String::from_utf8_lossy(&answer)
    );
    // The first 64 are closed at 3 s; the 6 queued behind them and this one get slots.
    tokio::time::timeout(STEP, waiting.read_to_end(&mut answer))
        .await
        .expect("answered once the idle connections were cut")
        .unwrap();
    let answered = opened.elapsed();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert_eq!(status_line(&answer), "HTTP/1.1 200 OK", "{answer}");
    assert!(
        answered >= Duration::from_millis(2500),
        "answered after {answered:?}"
    );
    // The idle connections were closed by the gateway, unanswered.
    let mut closed = 0;
    for stream in &mut idle[..CAP] {
        let mut buf = Vec::new();
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_secs(1), stream.read_to_end(&mut buf)).await
        {
            assert!(buf.is_empty(), "{:?}", String::from_utf8_lossy(&buf));
            closed += 1;
        }
    }
    assert_eq!(closed, CAP);
    drop(idle);
    for _ in 0..5 {
        assert_eq!(
            get(&gw.admin_url("/healthz"), &[]).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(get(&gw.url("/"), &[]).await.body, "blue");
}

/// Admin requests are small: a head over 16 KiB is 431, a declared body over 64 KiB
/// is 413, both answered at once.
#[tokio::test]
async fn admin_requests_are_capped_in_size() {
    let blue = Upstream::named("blue").await;
    let gw = Gateway::start(&config_with(blue.addr, "", ""));
    let big_head = format!(
        "GET /healthz HTTP/1.1\r\nHost: admin\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let answer = raw_exchange(gw.admin, big_head.as_bytes(), Duration::from_secs(5)).await;
    assert!(
        status_line(&answer).starts_with("HTTP/1.1 431"),
        "{answer:?}"
    );
    let big_body = "POST /admin/reload HTTP/1.1\r\nHost: admin\r\nContent-Length: 1000000\r\n\r\n";
    let answer = raw_exchange(gw.admin, big_body.as_bytes(), Duration::from_secs(5)).await;
    assert!(
        status_line(&answer).starts_with("HTTP/1.1 413"),
        "{answer:?}"
    );
    // A small one is fine.
    let answer = raw_exchange(
        gw.admin,
        b"POST /admin/reload HTTP/1.1\r\nHost: admin\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(status_line(&answer), "HTTP/1.1 200 OK", "{answer:?}");
}
