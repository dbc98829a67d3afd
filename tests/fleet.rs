//! A fleet releasing as one: three gateway instances on 127.0.0.1 behind the test's
//! own traffic, a real Prometheus (Debian's `/usr/bin/prometheus`, scraping every
//! second) that the judging instance reads the fleet's cohorts from, and two
//! instances that follow it. Also `graygate controller`, a judge that serves no traffic.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::prometheus::Prometheus;
use common::rollout::*;
use common::*;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::task::JoinSet;

/// The followers ask this often.
const FOLLOW_EVERY: Duration = Duration::from_millis(300);

/// `config` with its admin listener on `port`, so Prometheus can be told where to
/// scrape before the instance starts.
fn at_admin_port(config: String, port: u16) -> String {
    config.replace(
        "admin_listen = \"127.0.0.1:0\"",
        &format!("admin_listen = \"127.0.0.1:{port}\""),
    )
}

/// The judging instance's `[rollout]`: fleet-wide cohorts from Prometheus, judged every
/// second, a step at least every 3 s. `min_requests` is above what this instance
/// alone sees at a step, and below what the fleet sees.
fn fleet_rollout(steps: &str, min_step: &str, prometheus: u16) -> String {
    format!(
        r#"[rollout]
rule = "canary-rollout"
steps = {steps}
interval = "1s"
min_step_duration = "{min_step}"
min_requests = 500
failure_limit = 2
inconclusive_limit = 100000

[rollout.judge]
source = "prometheus"
prometheus = "http://127.0.0.1:{prometheus}"
eval_delay = "1500ms"
query_timeout = "2s"
error_margin = 0.05
max_error_rate = 0.1
latency_margin = 1.0
max_p99 = "5s"
"#
    )
}

fn follower_rollout(leader_admin: u16) -> String {
    format!(
        r#"[rollout]
rule = "canary-rollout"
follow = "http://127.0.0.1:{leader_admin}"
follow_interval = "{}ms"
"#,
        FOLLOW_EVERY.as_millis()
    )
}

/// A leader and two followers on known admin ports, and Prometheus scraping all three.
struct Fleet {
    leader: Gateway,
    followers: [Gateway; 2],
    prometheus: Prometheus,
    leader_config: String,
}

impl Fleet {
    fn start(backends: &Backends, steps: &str, min_step: &str) -> Fleet {
        let ports = [free_port(), free_port(), free_port()];
        let prometheus = Prometheus::start(&ports.map(|p| SocketAddr::from(([127, 0, 0, 1], p))));
        let leader_config = at_admin_port(
            backends.config("v2", 0, &fleet_rollout(steps, min_step, prometheus.port)),
            ports[0],
        );
        let leader = Gateway::start(&leader_config);
        let follower = |port| {
            Gateway::start(&at_admin_port(
                backends.config("v2", 0, &follower_rollout(ports[0])),
                port,
            ))
        };
        Fleet {
            followers: [follower(ports[1]), follower(ports[2])],
            leader,
            prometheus,
            leader_config,
        }
    }

    fn all(&self) -> [&Gateway; 3] {
        [&self.leader, &self.followers[0], &self.followers[1]]
    }

    /// Traffic: 1 % to the leader, the rest to the followers.
    fn traffic(&self) -> Traffic {
        Traffic::spread(
            &[
                (&self.leader, 1.0),
                (&self.followers[0], 49.5),
                (&self.followers[1], 49.5),
            ],
            8,
        )
    }
}

/// Polls until every instance's rollout satisfies `done`.
async fn wait_all(
    fleet: &Fleet,
    limit: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> [Value; 3] {
    let deadline = Instant::now() + limit;
    loop {
        let mut all = Vec::new();
        for gw in fleet.all() {
            all.push(status(gw).await);
        }
        if all.iter().all(&done) {
            return all.try_into().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no {what} on every instance within {limit:?}: {all:#?}\nleader's logs:\n{}\nprometheus:\n{}",
            fleet.leader.logs(),
            fleet.prometheus.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_judged_from_prometheus_promotes_on_every_instance_and_holds_while_prometheus_is_down(
) {
    let backends = Backends::start().await;
    let mut fleet = Fleet::start(&backends, "[100, 300, 600]", "3s");
    let s = status(&fleet.leader).await;
    assert_eq!(
        (s["source"].as_str(), s["prometheus"].is_string()),
        (Some("prometheus"), true)
    );
    let traffic = fleet.traffic();

    // Through the first step; remember what the leader saw of it on its own.
    let leader_alone = Arc::new(Mutex::new(BTreeMap::<u64, u64>::new()));
    let watch = |s: &Value| {
        let mut seen = leader_alone.lock().unwrap();
        let step = s["cohorts"]["step"].as_u64().unwrap();
        let own = s["cohorts"]["canary"]["requests"].as_u64().unwrap();
        let entry = seen.entry(step).or_default();
        *entry = (*entry).max(own);
    };
    let at_second = wait_for(
        &fleet.leader,
        Duration::from_secs(60),
        "the second step",
        |s| {
            watch(s);
            s["step"] == 1
        },
    )
    .await;
    // The pass that moved it on counted the fleet's canary requests, more than
    // min_requests, while this instance alone saw fewer: the fleet sum was used.
    let pass = at_second["analyses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["verdict"] == "pass" && a["step"] == 0)
        .unwrap_or_else(|| panic!("no passing analysis of step 0: {at_second:#}"));
    assert_eq!(pass["source"], "prometheus");
    let fleet_canary = pass["canary"]["requests"].as_u64().unwrap();
    let own_canary = leader_alone.lock().unwrap()[&0];
    assert!(
        fleet_canary >= 500 && own_canary < 500,
        "fleet {fleet_canary}, this instance alone {own_canary}"
    );
    eprintln!("step 0 passed on {fleet_canary} canary requests from the fleet; the judging instance alone had {own_canary}");

    // Prometheus goes away mid-step: the rollout holds, counting the failed queries.
    fleet.prometheus.stop();
    let down = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let held = status(&fleet.leader).await;
    assert_eq!(
        (state(&held), held["step"].as_u64()),
        ("progressing", Some(1)),
        "{held:#}"
    );
    assert!(
        held["analyses"][0]["error"].as_str().is_some(),
        "{:#}",
        held["analyses"][0]
    );
    let errors = metric(
        &fleet.leader,
        "graygate_rollout_analyses_total",
        &[("verdict", "error")],
    )
    .await;
    assert!(errors >= 2.0, "{errors} failed analyses counted");
    eprintln!(
        "Prometheus down for {:?}: held at step 1, {errors} analyses in error",
        down.elapsed()
    );
    fleet.prometheus.resume();

    let promoted = wait_all(&fleet, Duration::from_secs(90), "promotion", |s| {
        state(s) == "promoted"
    })
    .await;
    let seen = traffic.stop().await;
    for s in &promoted {
        assert_eq!(s["weight_permille"], 1000, "{s:#}");
    }
    assert!(
        seen.iter().all(|a| a.status == 200),
        "a healthy canary failed a request"
    );
    assert_eq!(
        promoted[1]["follows"],
        format!("http://{}", fleet.leader.admin)
    );
    assert!(promoted[1]["follow_error"].is_null());

    // The cohorts the fleet's judge reads, and how many series they are.
    let scrape = get(&fleet.followers[0].admin_url("/metrics"), &[])
        .await
        .body;
    let series = scrape
        .lines()
        .filter(|l| l.starts_with("graygate_rollout_cohort_"))
        .count();
    assert_eq!(series, 936, "cohort series per instance");
    assert!(scrape.contains("graygate_rollout_cohort_requests_total{rule=\"canary-rollout\",version=\"v2\",cohort=\"canary\",group=\"0\"}"));
    let _ = fleet.leader_config;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_is_aborted_on_every_instance_within_two_follow_intervals() {
    let backends = Backends::start().await;
    let fleet = Fleet::start(&backends, "[200, 500]", "30s");
    let traffic = fleet.traffic();
    wait_all(&fleet, Duration::from_secs(30), "the first step", |s| {
        s["weight_permille"] == 200
    })
    .await;
    backends.canary.mode.store(ERRORS, Ordering::Relaxed);
    // Every instance's first sight of 0‰, polled every 10 ms.
    let mut at_zero: [Option<Instant>; 3] = [None; 3];
    let deadline = Instant::now() + Duration::from_secs(60);
    while at_zero.iter().any(Option::is_none) {
        assert!(
            Instant::now() < deadline,
            "not aborted everywhere: {at_zero:?}\n{}",
            fleet.leader.logs()
        );
        for (i, gw) in fleet.all().into_iter().enumerate() {
            if at_zero[i].is_none() && status(gw).await["weight_permille"] == 0 {
                at_zero[i] = Some(Instant::now());
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = traffic.stop().await;
    let first = at_zero.iter().flatten().min().unwrap();
    let last = at_zero.iter().flatten().max().unwrap();
    let spread = *last - *first;
    eprintln!(
        "abort: first instance at 0‰, last {spread:?} later (follow interval {FOLLOW_EVERY:?})"
    );
    assert!(
        spread <= 2 * FOLLOW_EVERY,
        "{spread:?} from the first to the last instance at 0‰"
    );
    for gw in fleet.all() {
        assert_eq!(state(&status(gw).await), "aborted");
    }
    let failed_elsewhere = seen
        .iter()
        .filter(|a| a.status != 200 && a.upstream != "canary")
        .count();
    assert_eq!(failed_elsewhere, 0, "only the canary's own 503s may fail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_gives_every_user_the_same_pool_and_followers_outlive_their_leader() {
    let backends = Backends::start().await;
    let mut fleet = Fleet::start(&backends, "[50, 300, 700]", "1h");
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    for step in 0..2 {
        let weight = status(&fleet.leader).await["weight_permille"].clone();
        wait_all(&fleet, Duration::from_secs(10), "the same weight", |s| {
            s["weight_permille"] == weight
        })
        .await;
        // 10,000 users, each asked of every instance: one pool for each.
        let mut pools: Vec<Vec<String>> = Vec::new();
        for gw in fleet.all() {
            let mut tasks = JoinSet::new();
            for part in 0..16u32 {
                let (client, url) = (client.clone(), gw.url("/"));
                tasks.spawn(async move {
                    let mut answers = Vec::new();
                    for user in (part..10_000).step_by(16) {
                        let request = Request::get(&url)
                            .header("x-user-id", user.to_string())
                            .body(Full::new(Bytes::new()))
                            .unwrap();
                        let response = tokio::time::timeout(STEP, client.request(request))
                            .await
                            .unwrap()
                            .unwrap();
                        answers.push((
                            user,
                            response.headers()["x-graygate-pool"]
                                .to_str()
                                .unwrap()
                                .to_string(),
                        ));
                        let _ = response.into_body().collect().await;
                    }
                    answers
                });
            }
            let mut by_user = vec![String::new(); 10_000];
            while let Some(part) = tasks.join_next().await {
                for (user, pool) in part.unwrap() {
                    by_user[user as usize] = pool;
                }
            }
            pools.push(by_user);
        }
        let disagree = (0..10_000)
            .filter(|&u| pools[0][u] != pools[1][u] || pools[0][u] != pools[2][u])
            .count();
        assert_eq!(
            disagree, 0,
            "step {step}: {disagree} users get different pools from different instances"
        );
        let on_canary = pools[0].iter().filter(|p| *p == "canary").count();
        eprintln!("step {step} at {weight}‰: 10,000 users, one pool each on all three instances; {on_canary} on the canary");
        post(&fleet.leader, "/admin/rollout/promote").await;
    }
    // A follower refuses actions: they belong to the instance it follows.
    let (code, body) = post(&fleet.followers[0], "/admin/rollout/abort").await;
    assert_eq!(code, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("follows the rollout of"),
        "{body}"
    );

    // The leader dies: the followers keep its last weight and count the failures.
    wait_all(&fleet, Duration::from_secs(10), "the third step", |s| {
        s["weight_permille"] == 700
    })
    .await;
    let leader_dir = std::mem::replace(&mut fleet.leader.dir, tempfile::tempdir().unwrap());
    let leader_path = fleet.leader.config_path.clone();
    assert!(Command::new("kill")
        .args(["-KILL", &fleet.leader.pid().to_string()])
        .status()
        .unwrap()
        .success());
    fleet.leader.wait_exit(STEP);
    tokio::time::sleep(4 * FOLLOW_EVERY).await;
    for follower in &fleet.followers {
        let s = status(follower).await;
        assert_eq!(s["weight_permille"], 700, "{s:#}");
        assert!(s["follow_error"].as_str().is_some(), "{s:#}");
        assert!(metric(follower, "graygate_rollout_follow_errors_total", &[]).await >= 2.0);
        let answer = get(&follower.url("/"), &[("x-user-id", "1")]).await;
        assert_eq!(answer.status, 200);
    }
    // It comes back from its state file, on the same admin port: they follow again.
    fleet.leader = Gateway::start_at(leader_dir, leader_path);
    assert_eq!(status(&fleet.leader).await["weight_permille"], 700);
    wait_all(&fleet, Duration::from_secs(10), "following again", |s| {
        s["follow_error"].is_null()
    })
    .await;
    post(&fleet.leader, "/admin/rollout/abort").await;
    wait_all(&fleet, Duration::from_secs(10), "the abort", |s| {
        state(s) == "aborted"
    })
    .await;
}

/// A fake admin listener or Prometheus on 127.0.0.1: answers `GET path` with JSON
/// `body`, which the test changes at will; 404 elsewhere.
async fn fake_json_server(path: &'static str, body: Arc<Mutex<String>>) -> Upstream {
    Upstream::with_handler(Arc::new(move |seen| {
        let found = seen.uri.path() == path;
        http::Response::builder()
            .status(if found { 200 } else { 404 })
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(if found {
                body.lock().unwrap().clone()
            } else {
                String::new()
            })))
            .unwrap()
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_refuses_an_incoherent_leader_state_and_keeps_its_weight() {
    let backends = Backends::start().await;
    let leader_state = |state: &str, step: u64, weight: u64, steps: &str| {
        format!(
            r#"{{"instance":"fake-leader","rule":"canary-rollout","canary_version":"v2","state":"{state}","step":{step},"weight_permille":{weight},"steps":{steps},"step_started_ms":1700000000000}}"#
        )
    };
    let answer = Arc::new(Mutex::new(leader_state("progressing", 99, 65535, "[]")));
    let leader = fake_json_server("/admin/rollout/state", Arc::clone(&answer)).await;
    let follower =
        Gateway::start(&backends.config("v2", 100, &follower_rollout(leader.addr.port())));
    let refused = wait_for(&follower, STEP, "a follow error", |s| {
        s["follow_error"].is_string()
    })
    .await;
    assert!(
        refused["follow_error"]
            .as_str()
            .unwrap()
            .contains("incoherent rollout state: weight_permille 65535 is above 1000"),
        "{refused:#}"
    );
    tokio::time::sleep(3 * FOLLOW_EVERY).await;
    let weight = &[("rule", "canary-rollout")];
    for garbage in [
        leader_state("progressing", 99, 65535, "[]"),
        leader_state("progressing", 2, 300, "[100, 300]"),
        leader_state("progressing", 1, 300, "[300, 100]"),
        leader_state("paused", 0, 300, "[300, 1200]"),
        leader_state("promoted", 1, 300, "[100, 300]"),
    ] {
        *answer.lock().unwrap() = garbage.clone();
        tokio::time::sleep(2 * FOLLOW_EVERY).await;
        let s = status(&follower).await;
        assert_eq!(
            (s["weight_permille"].as_u64(), state(&s)),
            (Some(100), "paused"),
            "{garbage}: {s:#}"
        );
        assert!(s["follow_error"].is_string(), "{garbage}: {s:#}");
        assert_eq!(
            metric(&follower, "graygate_rollout_weight_permille", weight).await,
            100.0,
            "{garbage}"
        );
        let answered = get(&follower.url("/"), &[("x-user-id", "1")]).await;
        assert_eq!(answered.status, 200);
    }
    let errors = metric(&follower, "graygate_rollout_follow_errors_total", &[]).await;
    assert!(errors >= 5.0, "{errors} follow errors counted");
    // The same leader, coherent: followed at its next poll.
    *answer.lock().unwrap() = leader_state("progressing", 1, 300, "[100, 300, 1000]");
    let followed = wait_for(&follower, STEP, "following", |s| {
        s["weight_permille"] == 300 && s["follow_error"].is_null()
    })
    .await;
    assert_eq!(state(&followed), "progressing");
    assert_eq!(
        metric(&follower, "graygate_rollout_weight_permille", weight).await,
        300.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_from_prometheus_that_cannot_be_counts_hold_the_rollout_and_analyses_go_on() {
    let backends = Backends::start().await;
    // Every query answers the same lie: 1e19 requests in two of the canary's groups,
    // whose sum no u64 holds.
    let lie = |group: u32| {
        format!(
            r#"{{"metric":{{"cohort":"canary","group":"{group}"}},"value":[1700000000.0,"1e19"]}}"#
        )
    };
    let answer = Arc::new(Mutex::new(format!(
        r#"{{"status":"success","data":{{"resultType":"vector","result":[{},{}]}}}}"#,
        lie(0),
        lie(1)
    )));
    let prometheus = fake_json_server("/api/v1/query", Arc::clone(&answer)).await;
    let rollout = fleet_rollout("[100, 500]", "1s", prometheus.addr.port())
        .replace("interval = \"1s\"", "interval = \"250ms\"")
        .replace("eval_delay = \"1500ms\"", "eval_delay = \"100ms\"");
    let judge = Gateway::start(&backends.config("v2", 0, &rollout));
    let errors = || async {
        metric(
            &judge,
            "graygate_rollout_analyses_total",
            &[("verdict", "error")],
        )
        .await
    };
    let deadline = Instant::now() + STEP;
    while errors().await < 3.0 {
        assert!(
            Instant::now() < deadline,
            "no analyses in error: {:#}\n{}",
            status(&judge).await,
            judge.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let held = status(&judge).await;
    assert_eq!(
        (
            state(&held),
            held["step"].as_u64(),
            held["weight_permille"].as_u64()
        ),
        ("progressing", Some(0), Some(100)),
        "{held:#}"
    );
    let why = held["analyses"][0]["error"].as_str().unwrap_or_default();
    assert!(why.contains("`1e19` is not a plausible count"), "{held:#}");
    // The clock goes on: more analyses, each in error, and still no step past the
    // step's minimum duration.
    let before = errors().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = errors().await;
    assert!(
        after >= before + 3.0,
        "{before} then {after} analyses in error"
    );
    let held = status(&judge).await;
    assert_eq!(
        (state(&held), held["step"].as_u64()),
        ("progressing", Some(0)),
        "{held:#}"
    );
    assert!(!judge.logs().contains("panicked"), "{}", judge.logs());
}

/// `graygate controller`: the control plane alone.
struct Controller {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Controller {
    fn start(config_path: &std::path::Path) -> Controller {
        let mut child = Command::new(bin())
            .args(["--log-format", "json", "controller", "--config"])
            .arg(config_path)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (sink, stderr) = (Arc::clone(&logs), child.stderr.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let serving = line.contains("graygate controller serving");
                sink.lock().unwrap().push(line);
                if serving {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(STEP)
            .unwrap_or_else(|_| panic!("the controller did not start: {:?}", logs.lock().unwrap()));
        Controller { child, logs }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_judges_the_fleet_without_serving_traffic() {
    let backends = Backends::start().await;
    let ports = [free_port(), free_port(), free_port()];
    let prometheus = Prometheus::start(
        &ports[1..]
            .iter()
            .map(|&p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect::<Vec<_>>(),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("controller.toml");
    let config = at_admin_port(
        backends.config("v2", 0, &fleet_rollout("[200, 500]", "2s", prometheus.port)),
        ports[0],
    );
    write(&path, &config);
    let controller = Controller::start(&path);
    let followers = [1, 2].map(|i| {
        Gateway::start(&at_admin_port(
            backends.config("v2", 0, &follower_rollout(ports[0])),
            ports[i],
        ))
    });
    let traffic = Traffic::spread(&[(&followers[0], 1.0), (&followers[1], 1.0)], 8);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let answers = [status(&followers[0]).await, status(&followers[1]).await];
        if answers.iter().all(|s| state(s) == "promoted") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not promoted: {answers:#?}\n{:?}",
            controller.logs.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    traffic.stop().await;
    // It served no traffic: nothing listens where a gateway would.
    assert!(!controller
        .logs
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("graygate serving")));
    let (code, stdout, _) = {
        let out = Command::new(bin())
            .args([
                "rollout",
                "status",
                "--admin",
                &format!("127.0.0.1:{}", ports[0]),
            ])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            (),
        )
    };
    assert_eq!(code, Some(0));
    assert_eq!(state(&serde_json::from_str(&stdout).unwrap()), "promoted");
    // A controller with nothing to judge from Prometheus refuses to start.
    let local = dir.path().join("local.toml");
    write(
        &local,
        &backends.config("v2", 0, &fast_rollout("[100]", "1s")),
    );
    let out = Command::new(bin())
        .args(["controller", "--config"])
        .arg(&local)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("source = \"prometheus\""));
}

#[test]
fn check_rejects_fleet_mistakes_with_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let base = r#"
[pools.blue]
endpoints = ["127.0.0.1:1"]
[pools.canary]
endpoints = ["127.0.0.1:2"]
version = "v2"
[routing]
stable = "blue"
user_key = { header = "x-user-id" }
[[rules]]
name = "canary-rollout"
match = { permille = 0 }
to = "canary"
[rollout]
rule = "canary-rollout"
"#;
    let run = |rest: &str| {
        let path = dir.path().join("g.toml");
        std::fs::write(&path, format!("{base}{rest}")).unwrap();
        let out = Command::new(bin())
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(run("follow = \"http://10.0.0.1:9901\"").0, 0);
    assert_eq!(run("steps = [1]\n[rollout.judge]\nsource = \"prometheus\"\nprometheus = \"http://prometheus:9090/prom\"").0, 0);
    for (rest, key, message) in [
        ("follow = \"http://x:1\"\nsteps = [1, 2]", "rollout.steps", "does not apply with `follow`"),
        ("follow = \"http://x:1\"\n[rollout.judge]\nalpha = 0.1", "rollout.judge", "does not apply with `follow`"),
        ("follow = \"ftp://x\"", "rollout.follow", "is not a URL like http://host:port"),
        ("follow = \"https://x:1\"", "rollout.follow", "https is not supported"),
        ("follow = \"http://x:1\"\nfollow_interval = \"1ms\"", "rollout.follow_interval", "must be at least 100ms"),
        ("steps = [1]\n[rollout.judge]\nsource = \"prometheus\"", "rollout.judge.prometheus", "needs the server's URL"),
        ("steps = [1]\n[rollout.judge]\nprometheus = \"http://p:9090\"", "rollout.judge.prometheus", "only applies with source = \"prometheus\""),
        ("steps = [1]\n[rollout.judge]\nsource = \"prometheus\"\nprometheus = \"http://p:9090/?q=1\"", "rollout.judge.prometheus", "must not have a query string"),
        ("steps = [1]\n[rollout.judge]\nsource = \"graphite\"", "rollout.judge.source", "unknown variant"),
    ] {
        let (code, out) = run(rest);
        assert_eq!(code, 1, "{rest}: {out}");
        assert!(out.contains(&format!(": {key}: ")) && out.contains(message), "{rest}:\n{out}");
    }
}
