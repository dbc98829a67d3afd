//! What a hot reload costs, end to end, against the release binary.
//!
//! ```text
//! cargo build --release && cargo bench --bench reload
//! ```
//!
//! The gateway runs a big config: 1,000 rules and a whitelist file of 10,000 keys.
//! Upstreams are tiny in-process hyper servers that answer with their pool's name.
//! It measures, in one run of one gateway process:
//!
//! - the time from a file change (write a sibling, rename it over the config) to the
//!   first request served under the new config, median of 7 (a tight request loop
//!   watches the `x-graygate-pool` response header flip);
//! - `POST /admin/reload` with nothing changed, which reads, parses and compiles
//!   the whole config and whitelist but swaps nothing: the compile cost alone;
//! - request latency (p50, p99, max) of closed-loop keep-alive clients without
//!   reloads and with a reload every 200 ms (a rename-over flipping `routing.stable`),
//!   in alternating slices after a warm-up.
//!
//! The benchmark does not build the gateway: it runs `target/release/graygate`
//! (or `$CARGO_TARGET_DIR/release/graygate`, or `$GRAYGATE_BIN`).

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

const RULES: usize = 1_000;
const WHITELIST_KEYS: usize = 10_000;
const SWAP_RUNS: usize = 7;
const CLIENTS: usize = 4;
/// Each phase is measured in slices that alternate with the other phase's, so a
/// noisy neighbour on the machine weighs on both alike.
const SLICE: Duration = Duration::from_secs(2);
const SLICES: u32 = 3;
const WARM_UP: Duration = Duration::from_secs(1);
const RELOAD_EVERY: Duration = Duration::from_millis(200);
/// No single wait in the benchmark may take longer.
const LIMIT: Duration = Duration::from_secs(10);

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: skip there.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("benches/reload.rs: run with `cargo bench --bench reload`; skipped");
        return;
    }
    let binary = release_binary();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(run(binary));
}

/// The release binary; a clear panic if it is not built.
fn release_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("GRAYGATE_BIN") {
        return PathBuf::from(path);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("target"));
    let binary = target.join("release").join("graygate");
    let built = match std::fs::metadata(&binary) {
        Ok(meta) => meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        Err(_) => panic!(
            "{} not found: run `cargo build --release` first (or set GRAYGATE_BIN)",
            binary.display()
        ),
    };
    if newest_source(&manifest.join("src")).is_some_and(|source| source > built) {
        eprintln!(
            "warning: {} is older than src/; run `cargo build --release` to measure the current code",
            binary.display()
        );
    }
    binary
}

fn newest_source(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let time = if path.is_dir() {
            newest_source(&path)
        } else {
            entry.metadata().ok().and_then(|m| m.modified().ok())
        };
        newest = newest.max(time);
    }
    newest
}

async fn run(binary: PathBuf) {
    let blue = upstream("blue").await;
    let green = upstream("green").await;
    let canary = upstream("canary").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config_path = dir.path().join("graygate.toml");
    let whitelist: String = (0..WHITELIST_KEYS).map(|i| format!("user-{i}\n")).collect();
    std::fs::write(dir.path().join("vip.txt"), &whitelist).expect("write whitelist");
    let make = |stable: &str| big_config(stable, blue, green, canary);
    let blue_config = make("blue");
    std::fs::write(&config_path, &blue_config).expect("write config");

    let gateway = Gateway::start(&binary, &config_path);
    let url = format!("http://{}/", gateway.listen);
    let admin = format!("http://{}", gateway.admin);
    let client = http_client();
    assert_eq!(pool_of(&client, &url).await, "blue", "the gateway serves");

    // 1. File change to first request under the new config.
    let mut swaps = Vec::new();
    for run in 0..SWAP_RUNS {
        let stable = if run % 2 == 0 { "green" } else { "blue" };
        let started = write_by_rename(&config_path, &make(stable));
        loop {
            if pool_of(&client, &url).await == stable {
                swaps.push(started.elapsed());
                break;
            }
            assert!(
                started.elapsed() < LIMIT,
                "run {run}: {stable} not in force after {LIMIT:?}"
            );
        }
        // Let the watcher finish with this save before the next one.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // 2. The compile cost alone: a reload that finds nothing changed.
    let mut compiles = Vec::new();
    for _ in 0..SWAP_RUNS {
        let started = Instant::now();
        let request = Request::post(format!("{admin}/admin/reload"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = tokio::time::timeout(LIMIT, client.request(request))
            .await
            .expect("POST /admin/reload in time")
            .expect("POST /admin/reload");
        assert_eq!(response.status(), StatusCode::OK);
        let _ = response.into_body().collect().await;
        compiles.push(started.elapsed());
    }

    // 3. Latency without reloads and with a reload every 200 ms, in alternating slices.
    let flip: Flip = {
        let path = config_path.clone();
        let variants = [make("green"), make("blue")];
        let flips = AtomicUsize::new(0);
        Arc::new(move || {
            let n = flips.fetch_add(1, Ordering::Relaxed);
            write_by_rename(&path, &variants[n % 2]);
        })
    };
    load(&url, None, WARM_UP).await;
    let generation_before = generation(&client, &admin).await;
    let (mut quiet, mut busy) = (Phase::default(), Phase::default());
    for _ in 0..SLICES {
        quiet.extend(load(&url, None, SLICE).await);
        busy.extend(load(&url, Some(Arc::clone(&flip)), SLICE).await);
        // The last flip's reload lands up to a debounce later: not in a quiet slice.
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let reloads = generation(&client, &admin).await - generation_before;
    let failed = gateway.failed_reloads();
    drop(gateway);

    let toml_kib = blue_config.len() as f64 / 1024.0;
    let whitelist_kib = whitelist.len() as f64 / 1024.0;
    println!();
    println!("## graygate reload benchmark");
    println!();
    println!(
        "Config: {RULES} rules ({toml_kib:.0} KiB of TOML) and a whitelist file of \
         {WHITELIST_KEYS} keys ({whitelist_kib:.0} KiB); binary `{}`; {} CPUs.",
        binary.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!("| measurement | median | min | max |");
    println!("| --- | ---: | ---: | ---: |");
    let (median, min, max) = summary(&mut swaps);
    println!(
        "| file change (rename-over) → first request under the new config, {SWAP_RUNS} runs | {} | {} | {} |",
        ms(median),
        ms(min),
        ms(max)
    );
    let (median, min, max) = summary(&mut compiles);
    println!(
        "| `POST /admin/reload`, nothing changed (read + parse + compile), {SWAP_RUNS} runs | {} | {} | {} |",
        ms(median),
        ms(min),
        ms(max)
    );
    println!();
    println!(
        "Request latency, {CLIENTS} keep-alive clients in a closed loop, {SLICES} alternating \
         slices of {} s per phase after a {} s warm-up:",
        SLICE.as_secs(),
        WARM_UP.as_secs()
    );
    println!();
    println!("| phase | requests | errors | p50 | p99 | max |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    quiet.row("no reloads");
    busy.row(&format!(
        "a reload every {} ms ({reloads} applied)",
        RELOAD_EVERY.as_millis()
    ));
    println!();
    if failed > 0 {
        println!("warning: {failed} reloads failed during the run");
    }
}

/// The big config: a whitelist-file rule first, then rules of every kind that the
/// benchmark's requests never match, so each request walks the whole chain to
/// `routing.stable`.
fn big_config(stable: &str, blue: SocketAddr, green: SocketAddr, canary: SocketAddr) -> String {
    let mut text = format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_timeout = "1s"

[pools.blue]
endpoints = ["{blue}"]
[pools.green]
endpoints = ["{green}"]
[pools.canary]
endpoints = ["{canary}"]

[routing]
stable = "{stable}"
user_key = {{ header = "x-user-id" }}
city = {{ header = "x-city-id" }}
channel = {{ header = "x-channel" }}
decision_headers = true

[[rules]]
name = "vip"
match = {{ whitelist_file = "vip.txt" }}
to = "canary"
"#
    );
    for i in 1..RULES {
        let condition = match i % 5 {
            0 => format!(r#"header = {{ name = "x-group", exact = "group-{i}" }}"#),
            1 => format!(r#"channel = ["channel-{i}"]"#),
            2 => format!("city = [{}]", 100_000 + i),
            3 => format!(r#"permille = 0, salt = "salt-{i}""#),
            _ => format!(r#"whitelist = ["key-{i}-a", "key-{i}-b"]"#),
        };
        let to = if i % 2 == 0 { "canary" } else { "green" };
        text.push_str(&format!(
            "\n[[rules]]\nname = \"rule-{i}\"\nmatch = {{ {condition} }}\nto = \"{to}\"\n"
        ));
    }
    text
}

/// Writes a sibling and renames it over `path`; returns the moment of the rename.
fn write_by_rename(path: &Path, text: &str) -> Instant {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, text).expect("write the temporary file");
    let renamed = Instant::now();
    std::fs::rename(&tmp, path).expect("rename over the config");
    renamed
}

/// Latencies of one load phase.
#[derive(Default)]
struct Phase {
    latencies: Vec<Duration>,
    errors: usize,
}

/// Changes the config once.
type Flip = Arc<dyn Fn() + Send + Sync>;

impl Phase {
    fn extend(&mut self, other: Phase) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
    }

    fn row(mut self, name: &str) {
        let requests = self.latencies.len() + self.errors;
        self.latencies.sort();
        let at = |q: f64| {
            let n = self.latencies.len();
            if n == 0 {
                return Duration::ZERO;
            }
            self.latencies[((n as f64 * q).ceil() as usize).clamp(1, n) - 1]
        };
        println!(
            "| {name} | {requests} | {} | {} | {} | {} |",
            self.errors,
            ms(at(0.50)),
            ms(at(0.99)),
            ms(self.latencies.last().copied().unwrap_or_default())
        );
    }
}

/// [`CLIENTS`] closed-loop clients for `period`; `flip` runs every [`RELOAD_EVERY`]
/// when given.
async fn load(url: &str, flip: Option<Flip>, period: Duration) -> Phase {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (stop, url) = (Arc::clone(&stop), url.to_string());
        tasks.push(tokio::spawn(async move {
            let client = http_client();
            let user = format!("bench-user-{c}");
            let mut latencies = Vec::new();
            let mut errors = 0;
            while !stop.load(Ordering::Relaxed) {
                let request = Request::get(&url)
                    .header("x-user-id", &user)
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let started = Instant::now();
                let exchange = async {
                    let response = client.request(request).await.ok()?;
                    let ok = response.status().is_success();
                    response.into_body().collect().await.ok()?;
                    ok.then_some(())
                };
                match tokio::time::timeout(LIMIT, exchange).await {
                    Ok(Some(())) => latencies.push(started.elapsed()),
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let flipper = flip.map(|flip| {
        let stop = Arc::clone(&stop);
        tokio::task::spawn_blocking(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(RELOAD_EVERY);
                flip();
            }
        })
    });
    tokio::time::sleep(period).await;
    stop.store(true, Ordering::Relaxed);
    if let Some(flipper) = flipper {
        flipper.await.expect("flipper");
    }
    let mut phase = Phase::default();
    for task in tasks {
        let (latencies, errors) = task.await.expect("client task");
        phase.latencies.extend(latencies);
        phase.errors += errors;
    }
    phase
}

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// The pool that served `GET url`, from `x-graygate-pool`.
async fn pool_of(client: &HttpClient, url: &str) -> String {
    let request = Request::get(url)
        .header("x-user-id", "probe-user")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = tokio::time::timeout(LIMIT, client.request(request))
        .await
        .expect("request in time")
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let pool = response
        .headers()
        .get("x-graygate-pool")
        .and_then(|v| v.to_str().ok())
        .expect("x-graygate-pool (decision_headers = true)")
        .to_string();
    let _ = response.into_body().collect().await;
    pool
}

async fn generation(client: &HttpClient, admin: &str) -> u64 {
    let request = Request::get(format!("{admin}/admin/config"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = tokio::time::timeout(LIMIT, client.request(request))
        .await
        .expect("/admin/config in time")
        .expect("/admin/config");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    json["generation"].as_u64().expect("generation")
}

/// A tiny HTTP/1.1 upstream answering its name.
async fn upstream(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let service = service_fn(move |_request| async move {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                    name.as_bytes(),
                ))))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

/// The gateway process, killed on drop. Its log is drained (a full pipe would stall
/// it); failed reloads are counted.
struct Gateway {
    child: Child,
    listen: SocketAddr,
    admin: SocketAddr,
    failures: Arc<AtomicUsize>,
}

impl Gateway {
    fn start(binary: &Path, config: &Path) -> Gateway {
        let mut child = Command::new(binary)
            .args(["--log-format", "json", "run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run {}: {err}", binary.display()));
        let stderr = child.stderr.take().expect("stderr");
        let failures = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&failures);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                let fields = &json["fields"];
                let message = fields["message"].as_str().unwrap_or_default();
                if message == "graygate serving" {
                    let parse = |key: &str| fields[key].as_str()?.parse::<SocketAddr>().ok();
                    let _ = tx.send((parse("listen"), parse("admin")));
                } else if message.starts_with("config reload failed") {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        match rx.recv_timeout(LIMIT) {
            Ok((Some(listen), Some(admin))) => Gateway {
                child,
                listen,
                admin,
                failures,
            },
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the gateway did not start within {LIMIT:?}");
            }
        }
    }

    fn failed_reloads(&self) -> usize {
        self.failures.load(Ordering::Relaxed)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn summary(samples: &mut [Duration]) -> (Duration, Duration, Duration) {
    samples.sort();
    (
        samples[samples.len() / 2],
        samples[0],
        samples[samples.len() - 1],
    )
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}
