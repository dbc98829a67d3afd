//! Hot reload end to end: the real binary, real files changed the ways editors, deploy
//! tools and Kubernetes change them, real `SIGHUP`s, the admin endpoint, and real
//! sockets on 127.0.0.1. Every assertion about routing is made by sending requests.
//!
//! Every test starts its own gateway and upstreams, bounds its own time, and polls
//! with a deadline rather than sleeping for a fixed time (the only fixed waits are
//! the ones that prove something does *not* happen).

mod common;

use std::convert::Infallible;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

/// A change must be in force for requests within this long.
const WITHIN: Duration = Duration::from_secs(2);

/// Long enough for an unwanted second reload to show: the watcher's debounce never
/// holds a reload back longer than 1 s.
const SETTLE: Duration = Duration::from_millis(1500);

/// The user every routing probe sends, unless a test says otherwise.
const USER_42: &[(&str, &str)] = &[("x-user-id", "42")];

/// Runs a test body with an overall time limit.
async fn bounded<T>(limit: Duration, test: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, test)
        .await
        .expect("the test finished within its time limit")
}

impl Pools {
    /// A full config: `routing.stable = stable`, the user key from `x-user-id`,
    /// decision headers on, then `rules`.
    fn config(&self, stable: &str, rules: &str) -> String {
        config(
            self.blue.addr,
            self.green.addr,
            self.canary.addr,
            &routing(stable, rules),
        )
    }

    fn gateway(&self, stable: &str, rules: &str) -> Gateway {
        Gateway::start(&self.config(stable, rules))
    }
}

fn routing(stable: &str, rules: &str) -> String {
    format!(
        "[routing]\nstable = \"{stable}\"\nuser_key = {{ header = \"x-user-id\" }}\ndecision_headers = true\n\n{rules}\n"
    )
}

/// A sticky per-mille rule to canary: 0 takes nobody, 1000 takes every user.
fn permille_rule(permille: i64) -> String {
    format!("[[rules]]\nname = \"rollout\"\nmatch = {{ permille = {permille} }}\nto = \"canary\"\n")
}

/// A whitelist-file rule to canary.
fn whitelist_rule(file: &str) -> String {
    format!(
        "[[rules]]\nname = \"staff\"\nmatch = {{ whitelist_file = \"{file}\" }}\nto = \"canary\"\n"
    )
}

/// The pool a `GET /` with `headers` reaches, checked against the decision header.
async fn pool_for(gw: &Gateway, headers: &[(&str, &str)]) -> String {
    let answer = get(&gw.url("/"), headers).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "GET / {headers:?}: {}",
        answer.body
    );
    assert_eq!(
        answer.header("x-graygate-pool"),
        Some(answer.body.as_str()),
        "the decision header and the answering upstream disagree"
    );
    answer.body
}

/// Polls until requests with `headers` reach `want`; fails if that is not so within
/// [`WITHIN`] of `since` (the moment of the change). Returns how long it took.
async fn routes_within(
    gw: &Gateway,
    headers: &[(&str, &str)],
    want: &str,
    since: Instant,
) -> Duration {
    loop {
        let pool = pool_for(gw, headers).await;
        let elapsed = since.elapsed();
        if pool == want {
            return elapsed;
        }
        assert!(
            elapsed < WITHIN,
            "{headers:?} still reaches {pool}, not {want}, {elapsed:?} after the change; logs:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends requests for `period` and asserts every one reaches `want`.
async fn keeps_routing(gw: &Gateway, headers: &[(&str, &str)], want: &str, period: Duration) {
    let until = Instant::now() + period;
    while Instant::now() < until {
        let pool = pool_for(gw, headers).await;
        assert_eq!(
            pool,
            want,
            "{headers:?} moved to {pool}; logs:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The reload counters and the generation, as `/metrics` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reloads {
    success: u64,
    failure: u64,
    generation: u64,
}

async fn reloads(gw: &Gateway) -> Reloads {
    let answer = get(&gw.admin_url("/metrics"), &[]).await;
    assert_eq!(answer.status, StatusCode::OK);
    let text = answer.body;
    Reloads {
        success: sample(&text, "graygate_config_reloads_total{result=\"success\"}"),
        failure: sample(&text, "graygate_config_reloads_total{result=\"failure\"}"),
        generation: sample(&text, "graygate_config_generation"),
    }
}

/// The value of one series in Prometheus text; 0 when the series is absent.
fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|line| {
            let value = line.strip_prefix(series)?.strip_prefix(' ')?;
            value.trim().parse::<f64>().ok()
        })
        .map_or(0, |v| v as u64)
}

/// Polls `/metrics` until `done` holds; fails after [`WITHIN`] from `since`.
async fn reloads_until(
    gw: &Gateway,
    what: &str,
    since: Instant,
    done: impl Fn(&Reloads) -> bool,
) -> Reloads {
    loop {
        let now = reloads(gw).await;
        if done(&now) {
            return now;
        }
        assert!(
            since.elapsed() < WITHIN,
            "no {what} within {WITHIN:?}: {now:?}; logs:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn admin_config(gw: &Gateway) -> Value {
    let answer = get(&gw.admin_url("/admin/config"), &[]).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    serde_json::from_str(&answer.body).expect("/admin/config is JSON")
}

async fn post_reload(gw: &Gateway) -> (StatusCode, Value) {
    let request = Request::post(gw.admin_url("/admin/reload"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let answer = send(request).await;
    let json = serde_json::from_str(&answer.body).unwrap_or_else(|err| {
        panic!(
            "POST /admin/reload answered non-JSON ({err}): {}",
            answer.body
        )
    });
    (answer.status, json)
}

/// The `fields` of every "config reload…" log line.
/// The reload log lines, once every reload counted in `/metrics` has been logged: a
/// line reaches the harness through the gateway's stderr pipe, a moment after the
/// metric (and the HTTP answer) changed.
async fn settled_reload_logs(gw: &Gateway) -> Vec<Value> {
    let counted = {
        let r = reloads(gw).await;
        r.success + r.failure
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let lines = reload_log_lines(gw);
        if lines.len() as u64 >= counted || Instant::now() >= deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn reload_log_lines(gw: &Gateway) -> Vec<Value> {
    gw.logs()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| {
            line["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("config reload"))
        })
        .map(|mut line| {
            let level = line["level"].clone();
            line["fields"]["level"] = level;
            line["fields"].take()
        })
        .collect()
}

/// Whether the log says `trigger` applied `generation`.
fn logged_applied(gw: &Gateway, trigger: &str, generation: u64) -> bool {
    // The log line travels through the gateway's stderr pipe to the harness's reader
    // thread, so it may land a moment after the HTTP answer: wait for it, briefly.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let logged = reload_log_lines(gw).iter().any(|f| {
            f["message"] == "config reloaded"
                && f["trigger"] == trigger
                && f["generation"].as_u64() == Some(generation)
        });
        if logged || Instant::now() >= deadline {
            return logged;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Replaces the file the way most tools do: truncate and write the same inode.
fn write_in_place(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write in place");
}

/// Replaces the file the way careful editors do: write a sibling, rename it over.
fn write_by_rename(path: &Path, text: &str) {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text).expect("write the temporary file");
    std::fs::rename(&tmp, path).expect("rename over the file");
}

fn sighup(gw: &Gateway) {
    let status = Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -HUP failed");
}

/// The process is still running and its admin listener answers.
async fn assert_alive(gw: &mut Gateway) {
    if let Some(status) = gw.wait_exit(Duration::from_millis(50)) {
        panic!("the gateway exited ({status}); logs:\n{}", gw.logs());
    }
    let answer = get(&gw.admin_url("/healthz"), &[]).await;
    assert_eq!(answer.status, StatusCode::OK);
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A gateway whose config file has a second name (a hard link) in an unwatched
/// subdirectory. Writing in place through that name changes what `graygate.toml`
/// reads without any event in the watched directory, so only `SIGHUP` or
/// `POST /admin/reload` can pick the change up.
fn gateway_with_backdoor(config: &str) -> (Gateway, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("graygate.toml");
    write_in_place(&path, config);
    let hidden = dir.path().join("unwatched");
    std::fs::create_dir(&hidden).unwrap();
    let backdoor = hidden.join("same-inode.toml");
    std::fs::hard_link(&path, &backdoor).expect("hard link");
    (Gateway::start_at(dir, path), backdoor)
}

/// Writes through the backdoor and proves the watcher did not notice: no reload
/// happens and requests still reach `still`.
async fn change_unseen(gw: &Gateway, backdoor: &Path, config: &str, still: &str) {
    let before = reloads(gw).await;
    write_in_place(backdoor, config);
    assert_eq!(
        std::fs::read_to_string(&gw.config_path).unwrap(),
        config,
        "the backdoor writes the config file's inode"
    );
    keeps_routing(gw, &[], still, Duration::from_millis(500)).await;
    assert_eq!(
        reloads(gw).await,
        before,
        "the watcher saw a change it cannot see; the test's premise is broken"
    );
}

/// A client with keep-alive connections to the gateway.
fn keep_alive_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// `GET url` on `client`; an error or a timeout is returned, not raised.
async fn try_get(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
) -> Result<(StatusCode, String), String> {
    let request = Request::get(url).body(Full::new(Bytes::new())).unwrap();
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e:?}"))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .unwrap_or_else(|_| Err("timed out after 5 s".into()))
}

/// An upstream that answers its name and counts the TCP connections it accepts.
struct CountingUpstream {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingUpstream {
    async fn start(name: &'static str) -> CountingUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
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
        CountingUpstream {
            addr,
            accepted,
            task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for CountingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------
// 1. Every trigger changes routing
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn in_place_write_changes_routing_within_2s() {
    bounded(Duration::from_secs(30), async {
        let pools = Pools::start().await;
        let mut gw = pools.gateway("blue", &permille_rule(0));
        assert_eq!(pool_for(&gw, USER_42).await, "blue");

        let changed = Instant::now();
        write_in_place(&gw.config_path, &pools.config("blue", &permille_rule(1000)));
        let took = routes_within(&gw, USER_42, "canary", changed).await;
        eprintln!("in-place write in force after {took:?}");
        assert_eq!(admin_config(&gw).await["generation"], 2);

        // And back.
        let changed = Instant::now();
        write_in_place(&gw.config_path, &pools.config("blue", &permille_rule(0)));
        routes_within(&gw, USER_42, "blue", changed).await;
        assert_eq!(admin_config(&gw).await["generation"], 3);
        assert_alive(&mut gw).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn rename_over_changes_routing_within_2s() {
    bounded(Duration::from_secs(30), async {
        let pools = Pools::start().await;
        let mut gw = pools.gateway("blue", "");
        assert_eq!(pool_for(&gw, &[]).await, "blue");

        let changed = Instant::now();
        write_by_rename(&gw.config_path, &pools.config("green", ""));
        let took = routes_within(&gw, &[], "green", changed).await;
        eprintln!("rename-over in force after {took:?}");

        // A second rename: the watch is on the directory, so the replaced inode does
        // not matter.
        let changed = Instant::now();
        write_by_rename(&gw.config_path, &pools.config("blue", ""));
        routes_within(&gw, &[], "blue", changed).await;
        assert_eq!(admin_config(&gw).await["generation"], 3);
        assert_alive(&mut gw).await;
    })
    .await
}

/// Some tools delete the file and create it anew.
#[tokio::test(flavor = "multi_thread")]
async fn remove_and_recreate_changes_routing_within_2s() {
    bounded(Duration::from_secs(30), async {
        let pools = Pools::start().await;
        let mut gw = pools.gateway("blue", "");

        let changed = Instant::now();
        std::fs::remove_file(&gw.config_path).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        write_in_place(&gw.config_path, &pools.config("green", ""));
        routes_within(&gw, &[], "green", changed).await;

        let changed = Instant::now();
        write_in_place(&gw.config_path, &pools.config("blue", ""));
        routes_within(&gw, &[], "blue", changed).await;
        assert_alive(&mut gw).await;
    })
    .await
}

/// A Kubernetes ConfigMap volume: the files are symlinks through `..data`, itself a
/// symlink to a timestamped directory; an update writes a new directory and swaps
/// `..data` by renaming a new symlink over it.
struct ConfigMap {
    dir: PathBuf,
    version: usize,
}

impl ConfigMap {
    /// Creates the volume with `files` and the top-level symlinks to them.
    fn create(dir: &Path, files: &[(&str, &str)]) -> ConfigMap {
        let mut map = ConfigMap {
            dir: dir.to_path_buf(),
            version: 0,
        };
        map.publish(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        }
        map
    }

    /// What kubelet does on an update: a new timestamped directory, `..data_tmp`
    /// pointing at it, renamed over `..data`, then the old directory removed.
    fn publish(&mut self, files: &[(&str, &str)]) {
        let old = self.version_dir();
        self.version += 1;
        let new = self.version_dir();
        std::fs::create_dir(self.dir.join(&new)).unwrap();
        for (name, text) in files {
            std::fs::write(self.dir.join(&new).join(name), text).unwrap();
        }
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&new, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        if self.version > 1 {
            std::fs::remove_dir_all(self.dir.join(old)).unwrap();
        }
    }

    fn version_dir(&self) -> String {
        format!(
            "..2026_11_21_00_00_0{}.000000{}",
            self.version, self.version
        )
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn configmap_symlink_swap_changes_routing_within_2s() {
    bounded(Duration::from_secs(30), async {
        let pools = Pools::start().await;
        let dir = tempfile::tempdir().unwrap();
        let rules = whitelist_rule("staff.txt");
        let mut map = ConfigMap::create(
            dir.path(),
            &[
                ("graygate.toml", &pools.config("blue", &rules)),
                ("staff.txt", "1001\n"),
            ],
        );
        let path = dir.path().join("graygate.toml");
        assert!(std::fs::symlink_metadata(&path).unwrap().is_symlink());
        let mut gw = Gateway::start_at(dir, path);
        assert_eq!(pool_for(&gw, USER_42).await, "blue");
        assert_eq!(pool_for(&gw, &[("x-user-id", "1001")]).await, "canary");

        // An update of the config file.
        let changed = Instant::now();
        map.publish(&[
            ("graygate.toml", &pools.config("green", &rules)),
            ("staff.txt", "1001\n"),
        ]);
        let took = routes_within(&gw, USER_42, "green", changed).await;
        eprintln!("ConfigMap swap in force after {took:?}");

        // An update of only the whitelist file in the same volume.
        let changed = Instant::now();
        map.publish(&[
            ("graygate.toml", &pools.config("green", &rules)),
            ("staff.txt", "1001\n42\n"),
        ]);
        routes_within(&gw, USER_42, "canary", changed).await;

        let config = admin_config(&gw).await;
        assert_eq!(config["generation"], 3, "{config}");
        assert_eq!(config["last_error"], Value::Null);
        assert_alive(&mut gw).await;
    })
    .await
}

/// `SIGHUP` alone: the change is made through a second name of the file that the
/// watcher cannot see, so only the signal can apply it.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_applies_a_change_the_watcher_did_not_see() {
    bounded(Duration::from_secs(30), async {
        let pools = Pools::start().await;
        let (mut gw, backdoor) = gateway_with_backdoor(&pools.config("blue", ""));
        assert_eq!(pool_for(&gw, &[]).await, "blue");
        change_unseen(&gw, &backdoor, &pools.config("green", ""), "blue").await;
        let before = reloads(&gw).await;

        let sent = Instant::now();
        sighup(&gw);
        let took = routes_within(&gw, &[], "green", sent).await;
        eprintln!("SIGHUP in force after {took:?}");
        let after = reloads(&gw).await;
        assert_eq!(after.success, before.success + 1);
        assert_eq!(after.generation, before.generation + 1);
        assert!(
            logged_applied(&gw, "SIGHUP", after.generation),
            "no `config reloaded` line with trigger SIGHUP; logs:\n{}",
            gw.logs()
        );

        // SIGHUP with nothing changed: a success, the same generation.
        let sent = Instant::now();
        sighup(&gw);
        let again = reloads_until(&gw, "second SIGHUP reload", sent, |r| {
            r.success == after.success + 1
        })
        .await;
        assert_eq!(again.generation, after.generation);
        assert_eq!(pool_for(&gw, &[]).await, "green");
        assert_alive(&mut gw).await;
    })
    .await
}

/// A save the watcher sees plus an immediate `SIGHUP`: two reloads, one generation.
#[tokio::test(flavor = "multi_thread")]
async fn save_plus_sighup_is_one_generation() {
    bounded(Duration::from_secs(30), async {
        let pools = Pools::start().await;
        let mut gw = pools.gateway("blue", "");
        let before = reloads(&gw).await;

        let changed = Instant::now();
        write_in_place(&gw.config_path, &pools.config("green", ""));
        sighup(&gw);
        routes_within(&gw, &[], "green", changed).await;
        reloads_until(&gw, "two reloads", changed, |r| {
            r.success == before.success + 2
        })
        .await;
        tokio::time::sleep(SETTLE).await;
        let after = reloads(&gw).await;
        assert_eq!(
            after,
            Reloads {
                success: before.success + 2,
                failure: before.failure,
                generation: before.generation + 1,
            },
            "logs:\n{}",
            gw.logs()
        );
        let triggers: Vec<Value> = settled_reload_logs(&gw)
            .await
            .iter()
            .map(|f| f["trigger"].clone())
            .collect();
        assert!(triggers.contains(&Value::from("SIGHUP")), "{triggers:?}");
        assert!(
            triggers.contains(&Value::from("file change")),
            "{triggers:?}"
        );
        assert_alive(&mut gw).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn post_admin_reload_applies_and_reports_the_generation() {
    bounded(Duration::from_secs(30), async {
        let pools = Pools::start().await;
        let (mut gw, backdoor) = gateway_with_backdoor(&pools.config("blue", ""));
        assert_eq!(pool_for(&gw, &[]).await, "blue");
        let green = pools.config("green", "");
        change_unseen(&gw, &backdoor, &green, "blue").await;

        let (status, body) = post_reload(&gw).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body,
            serde_json::json!({ "generation": 2, "changed": true })
        );
        // The answer comes after the swap: the very next request sees it.
        assert_eq!(pool_for(&gw, &[]).await, "green");
        assert!(
            logged_applied(&gw, "POST /admin/reload", 2),
            "{}",
            gw.logs()
        );

        let config = admin_config(&gw).await;
        assert_eq!(config["generation"], 2);
        assert_eq!(config["sha256"], sha256_hex(&green).as_str());
        assert_eq!(config["config"]["routing"]["stable"], "green");
        assert_eq!(config["last_error"], Value::Null);
        assert_eq!(
            config["path"].as_str().map(PathBuf::from),
            Some(gw.config_path.clone())
        );

        // Nothing changed since: 200, the same generation, changed = false.
        let (status, body) = post_reload(&gw).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body,
            serde_json::json!({ "generation": 2, "changed": false })
        );
        let now = reloads(&gw).await;
        assert_eq!((now.success, now.failure, now.generation), (2, 0, 2));

        // Reload is POST only.
        let answer = get(&gw.admin_url("/admin/reload"), &[]).await;
        assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(admin_config(&gw).await["generation"], 2);
        assert_alive(&mut gw).await;
    })
    .await
}

// ---------------------------------------------------------------------------------
// 2. An invalid file changes nothing
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn invalid_file_changes_nothing_until_a_valid_one_comes() {
    bounded(Duration::from_secs(40), async {
        let pools = Pools::start().await;
        let original = pools.config("blue", &permille_rule(0));
        let mut gw = Gateway::start(&original);
        assert_eq!(pool_for(&gw, USER_42).await, "blue");
        let before = reloads(&gw).await;
        let sha_before = admin_config(&gw).await["sha256"].clone();

        // Invalid, and every valid part of it would change routing: stable to green,
        // the rule to 2000 per mille (out of range).
        let changed = Instant::now();
        write_in_place(
            &gw.config_path,
            &pools.config("green", &permille_rule(2000)),
        );
        let failed = reloads_until(&gw, "failed reload", changed, |r| {
            r.failure == before.failure + 1
        })
        .await;
        assert_eq!(failed.success, before.success);
        assert_eq!(failed.generation, before.generation);
        keeps_routing(&gw, USER_42, "blue", Duration::from_millis(300)).await;
        keeps_routing(&gw, &[], "blue", Duration::from_millis(100)).await;

        let config = admin_config(&gw).await;
        let last_error = config["last_error"].as_str().expect("last_error is set");
        assert!(
            last_error.contains("rules[0].match.permille"),
            "last_error names the key: {last_error}"
        );
        assert!(last_error.contains("graygate.toml"), "{last_error}");
        assert_eq!(config["generation"], before.generation);
        assert_eq!(config["sha256"], sha_before);
        assert_eq!(config["config"]["routing"]["stable"], "blue");
        assert_eq!(config["config"]["rules"][0]["match"]["permille"], 0);
        let logged = settled_reload_logs(&gw).await;
        assert!(
            logged.iter().any(|f| f["level"] == "ERROR"
                && f["trigger"] == "file change"
                && f["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("rules[0].match.permille"))),
            "the failure is logged at error level: {logged:?}"
        );

        // POST /admin/reload answers 422 with the structured errors.
        let (status, body) = post_reload(&gw).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("rules[0].match.permille")),
            "{body}"
        );
        let errors = body["errors"].as_array().expect("errors is a list");
        let error = errors
            .iter()
            .find(|e| e["key"] == "rules[0].match.permille")
            .unwrap_or_else(|| panic!("an error for rules[0].match.permille: {body}"));
        assert!(error["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("graygate.toml")));
        assert!(error["line"].as_u64().is_some_and(|l| l > 1), "{error}");
        assert!(error["column"].as_u64().is_some(), "{error}");
        assert!(error["message"]
            .as_str()
            .is_some_and(|m| m.contains("2000")));
        assert_eq!(reloads(&gw).await.failure, before.failure + 2);

        // A TOML syntax error, the kind a half-saved file shows: still nothing changes.
        let changed = Instant::now();
        write_in_place(&gw.config_path, "[routing\nstable = \"green\"\n");
        reloads_until(&gw, "failed reload", changed, |r| {
            r.failure == before.failure + 3
        })
        .await;
        keeps_routing(&gw, USER_42, "blue", Duration::from_millis(200)).await;
        let last_error = admin_config(&gw).await["last_error"].clone();
        assert!(
            last_error.as_str().is_some_and(|e| e.contains(":1:")),
            "the syntax error has a line: {last_error}"
        );

        // A valid file applies, and the error is gone.
        let changed = Instant::now();
        write_in_place(
            &gw.config_path,
            &pools.config("green", &permille_rule(1000)),
        );
        routes_within(&gw, USER_42, "canary", changed).await;
        assert_eq!(pool_for(&gw, &[]).await, "green");
        let config = admin_config(&gw).await;
        assert_eq!(config["last_error"], Value::Null, "{config}");
        assert_eq!(config["generation"], before.generation + 1);
        let after = reloads(&gw).await;
        assert_eq!(after.success, before.success + 1);
        assert_eq!(after.failure, before.failure + 3);
        assert_alive(&mut gw).await;
    })
    .await
}

/// A config that names an unknown pool, and an empty file (what a reader can see
/// between an in-place truncate and the write): both rejected, nothing changes.
#[tokio::test(flavor = "multi_thread")]
async fn unknown_pool_and_empty_file_change_nothing() {
    bounded(Duration::from_secs(30), async {
        let pools = Pools::start().await;
        let mut gw = pools.gateway("blue", "");
        let before = reloads(&gw).await;

        let changed = Instant::now();
        write_in_place(&gw.config_path, &pools.config("purple", ""));
        reloads_until(&gw, "failed reload", changed, |r| {
            r.failure == before.failure + 1
        })
        .await;
        let last_error = admin_config(&gw).await["last_error"].clone();
        assert!(
            last_error
                .as_str()
                .is_some_and(|e| e.contains("routing.stable")),
            "{last_error}"
        );
        keeps_routing(&gw, &[], "blue", Duration::from_millis(200)).await;

        let changed = Instant::now();
        write_in_place(&gw.config_path, "");
        reloads_until(&gw, "failed reload", changed, |r| {
            r.failure == before.failure + 2
        })
        .await;
        keeps_routing(&gw, &[], "blue", Duration::from_millis(200)).await;
        assert_eq!(reloads(&gw).await.generation, before.generation);

        let changed = Instant::now();
        write_by_rename(&gw.config_path, &pools.config("green", ""));
        routes_within(&gw, &[], "green", changed).await;
        assert_eq!(admin_config(&gw).await["last_error"], Value::Null);
        assert_alive(&mut gw).await;
    })
    .await
}

// ---------------------------------------------------------------------------------
// 3. Whitelist files are watched like the config
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn whitelist_file_edit_alone_changes_routing() {
    bounded(Duration::from_secs(30), async {
        let pools = Pools::start().await;
        let config = pools.config("blue", &whitelist_rule("staff.txt"));
        let mut gw = Gateway::start_with_files(&config, &[("staff.txt", "1001\n")]);
        assert_eq!(pool_for(&gw, USER_42).await, "blue");
        assert_eq!(pool_for(&gw, &[("x-user-id", "1001")]).await, "canary");
        let whitelist = gw.dir.path().join("staff.txt");
        let sha_before = admin_config(&gw).await["sha256"].clone();

        // In place.
        let changed = Instant::now();
        write_in_place(&whitelist, "1001\n42\n");
        let took = routes_within(&gw, USER_42, "canary", changed).await;
        eprintln!("whitelist edit in force after {took:?}");

        // By rename, taking a user out.
        let changed = Instant::now();
        write_by_rename(&whitelist, "42\n");
        routes_within(&gw, &[("x-user-id", "1001")], "blue", changed).await;
        assert_eq!(pool_for(&gw, USER_42).await, "canary");

        // The config file itself was never touched.
        assert_eq!(std::fs::read_to_string(&gw.config_path).unwrap(), config);
        let now = admin_config(&gw).await;
        assert_eq!(now["sha256"], sha_before);
        assert_eq!(now["generation"], 3);
        assert_alive(&mut gw).await;
    })
    .await
}

/// A whitelist file in another directory, named by a reload (not at start): the
/// watcher follows the new set of files.
#[tokio::test(flavor = "multi_thread")]
async fn whitelist_file_in_a_new_directory_is_watched_after_the_reload_that_adds_it() {
    bounded(Duration::from_secs(30), async {
        let pools = Pools::start().await;
        let mut gw = pools.gateway("blue", "");
        let lists = gw.dir.path().join("lists");
        std::fs::create_dir(&lists).unwrap();
        write_in_place(&lists.join("vip.txt"), "7\n");

        let changed = Instant::now();
        write_by_rename(
            &gw.config_path,
            &pools.config("blue", &whitelist_rule("lists/vip.txt")),
        );
        routes_within(&gw, &[("x-user-id", "7")], "canary", changed).await;
        assert_eq!(pool_for(&gw, USER_42).await, "blue");

        let changed = Instant::now();
        write_in_place(&lists.join("vip.txt"), "7\n42\n");
        routes_within(&gw, USER_42, "canary", changed).await;

        // Dropping the rule again: the list no longer matters.
        let changed = Instant::now();
        write_by_rename(&gw.config_path, &pools.config("blue", ""));
        routes_within(&gw, USER_42, "blue", changed).await;
        assert_alive(&mut gw).await;
    })
    .await
}

/// The config names a whitelist file that is not there yet (deployed second): the
/// reload fails. When the file then appears, the files on disk are valid and the
/// gateway should converge to them without another touch of the config.
#[tokio::test(flavor = "multi_thread")]
async fn whitelist_file_created_after_the_config_that_names_it_is_picked_up() {
    bounded(Duration::from_secs(30), async {
        let pools = Pools::start().await;
        let mut gw = pools.gateway("blue", "");
        let before = reloads(&gw).await;

        let changed = Instant::now();
        write_in_place(
            &gw.config_path,
            &pools.config("blue", &whitelist_rule("late.txt")),
        );
        reloads_until(&gw, "failed reload", changed, |r| {
            r.failure == before.failure + 1
        })
        .await;
        assert!(admin_config(&gw).await["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("late.txt")));

        let changed = Instant::now();
        write_in_place(&gw.dir.path().join("late.txt"), "42\n");
        routes_within(&gw, USER_42, "canary", changed).await;
        assert_eq!(admin_config(&gw).await["last_error"], Value::Null);
        assert_alive(&mut gw).await;
    })
    .await
}

/// The config path is a plain symlink into another directory (`/etc/graygate.toml ->
/// /opt/release/graygate.toml`, as stow, Nix or a release directory lay it out), and
/// the target is edited. What `graygate.toml` reads changed, so it should reload.
#[tokio::test(flavor = "multi_thread")]
async fn symlinked_config_edited_at_its_target_is_picked_up() {
    bounded(Duration::from_secs(30), async {
        let pools = Pools::start().await;
        let dir = tempfile::tempdir().unwrap();
        let (release, etc) = (dir.path().join("release"), dir.path().join("etc"));
        std::fs::create_dir(&release).unwrap();
        std::fs::create_dir(&etc).unwrap();
        let target = release.join("graygate.toml");
        write_in_place(&target, &pools.config("blue", ""));
        std::os::unix::fs::symlink(&target, etc.join("graygate.toml")).unwrap();
        let mut gw = Gateway::start_at(dir, etc.join("graygate.toml"));
        assert_eq!(pool_for(&gw, &[]).await, "blue");

        let changed = Instant::now();
        write_in_place(&target, &pools.config("green", ""));
        routes_within(&gw, &[], "green", changed).await;
        assert_alive(&mut gw).await;
    })
    .await
}

// ---------------------------------------------------------------------------------
// 4. One save, one reload; no effective change, no new generation
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn one_save_is_one_reload() {
    bounded(Duration::from_secs(30), async {
        let pools = Pools::start().await;
        let mut gw = pools.gateway("blue", "");
        let before = reloads(&gw).await;

        for (n, (stable, how)) in [("green", "in place"), ("blue", "by rename")]
            .into_iter()
            .enumerate()
        {
            let n = n as u64 + 1;
            let changed = Instant::now();
            if how == "in place" {
                write_in_place(&gw.config_path, &pools.config(stable, ""));
            } else {
                write_by_rename(&gw.config_path, &pools.config(stable, ""));
            }
            reloads_until(&gw, "reload", changed, |r| {
                r.success > before.success + n - 1
            })
            .await;
            tokio::time::sleep(SETTLE).await;
            let after = reloads(&gw).await;
            assert_eq!(
                after,
                Reloads {
                    success: before.success + n,
                    failure: before.failure,
                    generation: before.generation + n,
                },
                "one save {how} must be exactly one reload; logs:\n{}",
                gw.logs()
            );
            assert_eq!(pool_for(&gw, &[]).await, stable);
        }
        assert_alive(&mut gw).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_without_effective_change_counts_but_keeps_the_generation() {
    bounded(Duration::from_secs(30), async {
        let pools = Pools::start().await;
        let original = pools.config("blue", &permille_rule(0));
        let mut gw = Gateway::start(&original);
        let before = reloads(&gw).await;
        let loaded_at = admin_config(&gw).await["loaded_at"].clone();

        // Only a comment and blank lines added.
        let changed = Instant::now();
        write_in_place(
            &gw.config_path,
            &format!("# rolled by the deploy bot\n\n{original}\n# end\n"),
        );
        reloads_until(&gw, "reload", changed, |r| r.success == before.success + 1).await;
        tokio::time::sleep(SETTLE).await;
        let after = reloads(&gw).await;
        assert_eq!(
            after,
            Reloads {
                success: before.success + 1,
                failure: before.failure,
                generation: before.generation,
            }
        );
        let config = admin_config(&gw).await;
        assert_eq!(config["generation"], before.generation);
        assert_eq!(config["loaded_at"], loaded_at, "nothing was swapped in");
        assert_eq!(config["last_error"], Value::Null);
        assert!(
            settled_reload_logs(&gw)
                .await
                .iter()
                .any(|f| f["message"] == "config reloaded: no effective change"
                    && f["trigger"] == "file change"),
            "{}",
            gw.logs()
        );

        // A default spelled out is no effective change either.
        let explicit = original.replace(
            "decision_headers = true",
            "decision_headers = true\nfallback = \"stable\"",
        );
        assert_ne!(explicit, original);
        let changed = Instant::now();
        write_by_rename(&gw.config_path, &explicit);
        reloads_until(&gw, "reload", changed, |r| r.success == before.success + 2).await;
        assert_eq!(reloads(&gw).await.generation, before.generation);
        let (status, body) = post_reload(&gw).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["changed"], false);
        assert_eq!(body["generation"], before.generation);
        assert_eq!(pool_for(&gw, USER_42).await, "blue");
        assert_alive(&mut gw).await;
    })
    .await
}

// ---------------------------------------------------------------------------------
// 5. Warm upstream connections survive a reload
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn reload_keeps_warm_upstream_connections() {
    bounded(Duration::from_secs(30), async {
        let blue = CountingUpstream::start("blue").await;
        let green = Upstream::named("green").await;
        let canary = Upstream::named("canary").await;
        let make = |rules: &str| config(blue.addr, green.addr, canary.addr, &routing("blue", rules));
        let mut gw = Gateway::start(&make(""));
        let client = keep_alive_client();
        let url = gw.url("/");

        for _ in 0..5 {
            assert_eq!(try_get(&client, &url).await, Ok((StatusCode::OK, "blue".into())));
            // Lets the gateway put its upstream connection back in the pool.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let warm = blue.accepted();
        assert_eq!(warm, 1, "sequential requests share one upstream connection");

        // A reload that keeps blue's endpoint but changes the rule chain.
        let changed = Instant::now();
        write_by_rename(
            &gw.config_path,
            &make("[[rules]]\nname = \"testers\"\nmatch = { header = { name = \"x-group\", exact = \"testers\" } }\nto = \"canary\"\n"),
        );
        reloads_until(&gw, "applied reload", changed, |r| r.generation == 2).await;

        // Right after the reload, and a few more.
        for _ in 0..5 {
            assert_eq!(try_get(&client, &url).await, Ok((StatusCode::OK, "blue".into())));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            blue.accepted(),
            warm,
            "a reload that keeps the endpoint must keep its warm connection"
        );
        // The new chain is in force.
        assert_eq!(
            get(&gw.url("/"), &[("x-group", "testers")]).await.body,
            "canary"
        );
        assert_eq!(blue.accepted(), warm);
        assert_alive(&mut gw).await;
    })
    .await
}

// ---------------------------------------------------------------------------------
// 6. Under load, reloads never fail a request
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_request_fails_while_the_config_flips_under_load() {
    bounded(Duration::from_secs(60), async {
        const CLIENTS: usize = 4;
        const RUN: Duration = Duration::from_secs(10);
        const FLIP_EVERY: Duration = Duration::from_millis(100);

        let pools = Pools::start().await;
        let a = pools.config("blue", &permille_rule(0));
        let b = pools.config("green", &permille_rule(0));
        // Invalid from its first line on, so no prefix of it (a reader racing an
        // in-place write) is valid; were anything after that applied, requests
        // would reach canary.
        let invalid = format!(
            "not_a_key = true\n{}",
            pools.config("canary", &permille_rule(1000))
        );
        let mut gw = Gateway::start(&a);
        let path = gw.config_path.clone();
        let url = gw.url("/");
        let admin_reload = gw.admin_url("/admin/reload");
        let pid = gw.pid();
        let stop = Arc::new(AtomicBool::new(false));

        #[derive(Default)]
        struct Tally {
            total: AtomicU64,
            blue: AtomicU64,
            green: AtomicU64,
        }
        let tally = Arc::new(Tally::default());
        let mut clients = Vec::new();
        for c in 0..CLIENTS {
            let (stop, tally, url) = (Arc::clone(&stop), Arc::clone(&tally), url.clone());
            clients.push(tokio::spawn(async move {
                let client = keep_alive_client();
                let user = (c + 1).to_string();
                let mut bad = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let request = Request::get(&url)
                        .header("x-user-id", &user)
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    let exchange = async {
                        let response = client.request(request).await.map_err(|e| format!("{e:?}"))?;
                        let status = response.status();
                        let body = response.into_body().collect().await.map_err(|e| format!("{e:?}"))?;
                        Ok::<_, String>((status, body.to_bytes()))
                    };
                    let outcome = tokio::time::timeout(Duration::from_secs(5), exchange)
                        .await
                        .unwrap_or_else(|_| Err("timed out".into()));
                    tally.total.fetch_add(1, Ordering::Relaxed);
                    match outcome {
                        Ok((status, body)) if status.is_success() && &body[..] == b"blue" => {
                            tally.blue.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok((status, body)) if status.is_success() && &body[..] == b"green" => {
                            tally.green.fetch_add(1, Ordering::Relaxed);
                        }
                        other => bad.push(format!("{other:?}")),
                    }
                }
                bad
            }));
        }

        // The flipper: A, B, A, B, invalid, … every 100 ms, in place and by rename.
        let flipper = {
            let stop = Arc::clone(&stop);
            let (a, b, invalid) = (a.clone(), b.clone(), invalid.clone());
            tokio::spawn(async move {
                let mut writes = 0u64;
                let mut tick = tokio::time::interval(FLIP_EVERY);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    writes += 1;
                    let text = if writes % 5 == 0 {
                        &invalid
                    } else if writes % 2 == 0 {
                        &b
                    } else {
                        &a
                    };
                    if writes % 3 == 0 {
                        write_by_rename(&path, text);
                    } else {
                        write_in_place(&path, text);
                    }
                }
                writes
            })
        };
        // The other triggers, racing the watcher: SIGHUP and POST /admin/reload.
        let nudger = {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut nudges = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(350)).await;
                    nudges += 1;
                    if nudges % 2 == 0 {
                        let status = Command::new("kill")
                            .args(["-HUP", &pid.to_string()])
                            .status()
                            .expect("run kill");
                        assert!(status.success());
                    } else {
                        let request = Request::post(&admin_reload)
                            .body(Full::new(Bytes::new()))
                            .unwrap();
                        let status = send(request).await.status;
                        assert!(
                            status == StatusCode::OK || status == StatusCode::UNPROCESSABLE_ENTITY,
                            "POST /admin/reload: {status}"
                        );
                    }
                }
            })
        };

        tokio::time::sleep(RUN).await;
        stop.store(true, Ordering::Relaxed);
        let writes = flipper.await.expect("flipper");
        nudger.await.expect("nudger");
        let mut bad = Vec::new();
        for client in clients {
            bad.extend(client.await.expect("client task"));
        }
        let (total, blue, green) = (
            tally.total.load(Ordering::Relaxed),
            tally.blue.load(Ordering::Relaxed),
            tally.green.load(Ordering::Relaxed),
        );
        let counts = reloads(&gw).await;
        eprintln!(
            "{total} requests ({blue} blue, {green} green), {writes} writes, reloads: {counts:?}"
        );
        assert!(
            bad.is_empty(),
            "{} of {total} requests failed, were not 2xx or reached neither blue nor green; first: {:?}\nlogs:\n{}",
            bad.len(),
            &bad[..bad.len().min(5)],
            gw.logs()
        );
        assert!(total > 100, "too few requests to mean anything: {total}");
        assert!(blue > 0 && green > 0, "both variants were in force: {blue} blue, {green} green");
        assert!(counts.failure > 0, "invalid variants were seen: {counts:?}");
        assert!(counts.generation > 2, "the config flipped: {counts:?}");

        // Settles on the last valid file.
        let changed = Instant::now();
        write_by_rename(&gw.config_path, &b);
        routes_within(&gw, &[], "green", changed).await;
        assert_alive(&mut gw).await;
    })
    .await
}
