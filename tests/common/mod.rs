//! Shared harness for the integration tests: the real `graygate` binary on
//! 127.0.0.1, real upstream servers started by the test, and clients that speak
//! HTTP/1.1, h2c or raw bytes. Everything is bounded in time and cleaned up on drop.
#![allow(dead_code)]

pub mod dns;
pub mod prometheus;
pub mod raw;
pub mod rollout;

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Upper bound for any single step a test waits on.
pub const STEP: Duration = Duration::from_secs(10);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_graygate")
}

/// A running `graygate run` process, killed on drop.
pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    /// The metrics listener, when `server.metrics_listen` is set.
    pub metrics: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Gateway {
    /// Writes `config` (its `[server] listen` should be `127.0.0.1:0`) into a temp dir
    /// with `files` beside it, starts the gateway, and waits until it serves.
    pub fn start(config: &str) -> Gateway {
        Gateway::start_with_files(config, &[])
    }

    pub fn start_with_files(config: &str, files: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write file");
        }
        let config_path = dir.path().join("graygate.toml");
        std::fs::write(&config_path, config).expect("write config");
        Gateway::start_at(dir, config_path)
    }

    pub fn start_at(dir: tempfile::TempDir, config_path: PathBuf) -> Gateway {
        Gateway::start_at_with_args(dir, config_path, &[])
    }

    /// As [`Gateway::start_at`], with more arguments to `run` (`--no-watch`).
    pub fn start_at_with_args(
        dir: tempfile::TempDir,
        config_path: PathBuf,
        args: &[&str],
    ) -> Gateway {
        let mut child = Command::new(bin())
            .args(["--log-format", "json", "run"])
            .args(args)
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn graygate");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Stored before the start is signalled, so `logs()` has the line.
                let serving = serving_address(&line);
                sink.lock().unwrap().push(line);
                if let Some(addr) = serving {
                    let _ = tx.send(addr);
                }
            }
        });
        let (addr, admin, metrics) = match rx.recv_timeout(STEP) {
            Ok(addrs) => addrs,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "gateway did not start; logs:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        };
        Gateway {
            child,
            addr,
            admin,
            metrics,
            dir,
            config_path,
            logs,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The traffic, admin and metrics addresses from the "graygate serving" log line.
fn serving_address(line: &str) -> Option<(SocketAddr, SocketAddr, Option<SocketAddr>)> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = value.get("fields")?;
    if fields.get("message")?.as_str()? != "graygate serving" {
        return None;
    }
    let listen = fields.get("listen")?.as_str()?.parse().ok()?;
    let admin = fields.get("admin")?.as_str()?.parse().ok()?;
    let metrics = fields.get("metrics").and_then(|m| m.as_str()?.parse().ok());
    Some((listen, admin, metrics))
}

/// A request as an upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: http::Method,
    pub uri: http::Uri,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// How a test upstream answers.
pub type Handler = Arc<dyn Fn(&Seen) -> Response<Full<Bytes>> + Send + Sync>;

/// A real HTTP/1.1 upstream on 127.0.0.1 that records every request it gets.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    /// Answers 200 with its name as the body and `x-upstream: <name>`.
    pub async fn named(name: &'static str) -> Upstream {
        Upstream::with_handler(Arc::new(move |_| {
            Response::builder()
                .header("x-upstream", name)
                .body(Full::new(Bytes::from(name)))
                .unwrap()
        }))
        .await
    }

    pub async fn with_handler(handler: Handler) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Upstream::serve(listener, handler)
    }

    /// Upstreams named as given, one on each loopback address, all on one port: the
    /// addresses a DNS name resolves to, behind one `name:port` endpoint.
    pub async fn on_one_port(named: &[(&'static str, std::net::IpAddr)]) -> Vec<Upstream> {
        for _ in 0..100 {
            let first = TcpListener::bind((named[0].1, 0)).await.unwrap();
            let port = first.local_addr().unwrap().port();
            let mut listeners = vec![first];
            for (_, ip) in &named[1..] {
                match TcpListener::bind((*ip, port)).await {
                    Ok(listener) => listeners.push(listener),
                    Err(_) => break,
                }
            }
            if listeners.len() == named.len() {
                return listeners
                    .into_iter()
                    .zip(named)
                    .map(|(listener, (name, _))| {
                        let name: &'static str = name;
                        Upstream::serve(
                            listener,
                            Arc::new(move |_| {
                                Response::builder()
                                    .header("x-upstream", name)
                                    .body(Full::new(Bytes::from(name)))
                                    .unwrap()
                            }),
                        )
                    })
                    .collect();
            }
        }
        panic!("no port free on every one of {named:?}");
    }

    fn serve(listener: TcpListener, handler: Handler) -> Upstream {
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (handler, log) = (Arc::clone(&handler), Arc::clone(&log));
                let service = service_fn(move |req: Request<Incoming>| {
                    let (handler, log) = (Arc::clone(&handler), Arc::clone(&log));
                    async move {
                        let (head, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let seen = Seen {
                            method: head.method,
                            uri: head.uri,
                            version: head.version,
                            headers: head.headers,
                            body,
                        };
                        let response = handler(&seen);
                        log.lock().unwrap().push(seen);
                        Ok::<_, Infallible>(response)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Upstream { addr, seen, task }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the upstream saw a request")
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The three usual pools, each a recording upstream that answers with its name. Test
/// files add the methods they need (`impl Pools` in the same crate).
pub struct Pools {
    pub blue: Upstream,
    pub green: Upstream,
    pub canary: Upstream,
}

impl Pools {
    pub async fn start() -> Pools {
        Pools {
            blue: Upstream::named("blue").await,
            green: Upstream::named("green").await,
            canary: Upstream::named("canary").await,
        }
    }
}

/// An address nothing listens on: connecting to it is refused.
pub async fn dead_address() -> SocketAddr {
    // Bound but never listening: a connect is refused, and the port stays taken for the
    // life of the test process, so another test's listener cannot land on it (a port
    // freed by dropping a listener could be handed out again at once).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    std::mem::forget(socket);
    addr
}

/// A response as a test client saw it.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One HTTP/1.1 request on a fresh connection, bounded by [`STEP`].
pub async fn send(request: Request<Full<Bytes>>) -> Answer {
    tokio::time::timeout(STEP, async {
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
        let response = client.request(request).await.expect("request");
        collect(response).await
    })
    .await
    .expect("request finished in time")
}

/// `GET url` with headers.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = Request::get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(request.body(Full::new(Bytes::new())).unwrap()).await
}

/// One request over h2c with prior knowledge, bounded by [`STEP`].
pub async fn send_h2c(addr: SocketAddr, request: Request<Full<Bytes>>) -> Answer {
    tokio::time::timeout(STEP, async {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        let response = sender.send_request(request).await.expect("h2 request");
        collect(response).await
    })
    .await
    .expect("h2c request finished in time")
}

async fn collect(response: Response<Incoming>) -> Answer {
    let (head, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Answer {
        status: head.status,
        headers: head.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Writes raw bytes and reads until the peer closes or `limit` passes.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], limit: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A config with the three usual pools pointing at the given upstreams, the gateway on
/// an ephemeral port, and `extra` appended (routing and rules).
pub fn config(blue: SocketAddr, green: SocketAddr, canary: SocketAddr, extra: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_timeout = "5s"

[pools.blue]
endpoints = ["{blue}"]
[pools.green]
endpoints = ["{green}"]
[pools.canary]
endpoints = ["{canary}"]

{extra}
"#
    )
}

/// A config with one pool, `blue`, whose single endpoint is `upstream`, `workers`
/// worker threads, and `limits` as the body of its `[limits]` table.
pub fn one_pool_config(upstream: SocketAddr, workers: usize, limits: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_timeout = "5s"
workers = {workers}

[limits]
{limits}

[pools.blue]
endpoints = ["{upstream}"]

[routing]
stable = "blue"
"#
    )
}

/// The sum of the series of metric `name` whose labels include all of `labels`.
pub async fn metric(gw: &Gateway, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = get(&gw.admin_url("/metrics"), &[]).await.body;
    let mut total = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        if series_name != name {
            continue;
        }
        let has = |(k, v): &(&str, &str)| {
            series_labels
                .split(',')
                .any(|pair| pair == format!("{k}=\"{v}\""))
        };
        if labels.iter().all(has) {
            total += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    total
}

/// Polls `condition` every 20 ms until it holds or `limit` passes.
pub async fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}

/// The lines of a file; none if it does not exist (yet).
pub fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Polls `lines` until it has at least `n` entries (at most [`STEP`]), then a little
/// longer, so that an extra line would show.
pub async fn wait_for_lines(lines: impl Fn() -> Vec<String>, n: usize) -> Vec<String> {
    let deadline = Instant::now() + STEP;
    while lines().len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    lines()
}

pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A GET that reports failure instead of panicking (for polling a starting server).
pub async fn try_get(url: &str) -> Option<(StatusCode, String)> {
    let uri: http::Uri = url.parse().ok()?;
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let request = Request::get(uri).body(Full::new(Bytes::new())).ok()?;
    let fetch = async {
        let response = client.request(request).await.ok()?;
        let status = response.status();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(3), fetch)
        .await
        .ok()
        .flatten()
}

/// Reads one head (up to the blank line) a byte at a time, so nothing behind it is
/// consumed. `None` if the peer closes first.
pub async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Polls metric `name` until it equals `value` or `limit` passes; returns the last read.
pub async fn wait_metric(gw: &Gateway, name: &str, value: f64, limit: Duration) -> f64 {
    let deadline = Instant::now() + limit;
    loop {
        let read = metric(gw, name, &[]).await;
        if read == value || Instant::now() >= deadline {
            return read;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A gateway with a TLS listener (a fresh self-signed certificate for `localhost`)
/// beside the plain one, one pool `blue` at `upstream`, and `limits` as its
/// `[limits]` table.
pub struct TlsGateway {
    pub gw: Gateway,
    pub tls: SocketAddr,
    pub cert: rustls::pki_types::CertificateDer<'static>,
}

impl TlsGateway {
    pub fn start(upstream: SocketAddr, limits: &str) -> TlsGateway {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let config = one_pool_config(upstream, 1, limits).replacen(
            "workers = 1\n",
            "workers = 1\ntls = { listen = \"127.0.0.1:0\", cert = \"cert.pem\", key = \"key.pem\" }\n",
            1,
        );
        let gw = Gateway::start_with_files(
            &config,
            &[
                ("cert.pem", &certified.cert.pem()),
                ("key.pem", &certified.signing_key.serialize_pem()),
            ],
        );
        let tls = gw
            .logs()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find_map(|v| v["fields"]["tls"].as_str().and_then(|a| a.parse().ok()))
            .expect("the serving line names the TLS address");
        TlsGateway {
            gw,
            tls,
            cert: certified.cert.der().clone(),
        }
    }
}

/// The path of a tool a test needs, from `PATH`. CI installs each; a missing one fails
/// the test with the way to install it, never skips it.
pub fn tool(name: &str, install: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("`{name}` is not installed: {install}"))
}

/// Runs `command` to its end, killing it after `limit`; its status, stdout and stderr.
pub fn run_to_end(
    mut command: Command,
    limit: Duration,
) -> (std::process::ExitStatus, String, String) {
    let what = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, stdout.join().unwrap(), stderr.join().unwrap())
}
