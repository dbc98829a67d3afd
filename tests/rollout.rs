//! Automated rollouts end to end: the real binary, real upstreams on 127.0.0.1 whose
//! behaviour the test changes mid-run, real traffic from many users, the admin API,
//! the CLI, signals and the state file. Intervals are a few hundred milliseconds.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::rollout::*;
use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::task::JoinSet;

// ---------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_goes_through_every_step_and_is_promoted() {
    let backends = Backends::start().await;
    let gw = Gateway::start(&backends.config("v2", 0, &fast_rollout("[100, 300, 600]", "500ms")));
    let s = status(&gw).await;
    assert_eq!(
        (state(&s), s["step"].as_u64(), s["weight_permille"].as_u64()),
        ("progressing", Some(0), Some(100))
    );
    assert_eq!(s["steps"], serde_json::json!([100, 300, 600]));
    let traffic = Traffic::start(&gw, 8);
    let promoted = wait_for(&gw, Duration::from_secs(60), "promotion", |s| {
        state(s) != "progressing"
    })
    .await;
    let seen = traffic.stop().await;
    assert_eq!(state(&promoted), "promoted", "{promoted:#}");
    assert_eq!(promoted["weight_permille"], 1000);
    // Every step was passed in turn, each after a passing analysis.
    let transitions = promoted["transitions"].as_array().unwrap();
    let weights: Vec<u64> = transitions
        .iter()
        .rev()
        .map(|t| t["to_weight_permille"].as_u64().unwrap())
        .collect();
    assert_eq!(weights, [300, 600, 1000], "{transitions:#?}");
    assert!(transitions
        .iter()
        .all(|t| t["reason"].as_str().unwrap().contains("every check passed")));
    assert!(
        seen.iter().all(|s| s.status == 200),
        "a healthy canary failed a request"
    );
    // At 1000‰, every user with a key is on the canary.
    let answer = get(&gw.url("/"), &[("x-user-id", "424242")]).await;
    assert_eq!(answer.header("x-graygate-pool"), Some("canary"));
    assert_eq!(
        metric(
            &gw,
            "graygate_rollout_weight_permille",
            &[("rule", "canary-rollout")]
        )
        .await,
        1000.0
    );
    assert_eq!(
        metric(&gw, "graygate_rollout_state", &[("state", "promoted")]).await,
        1.0
    );
    assert_eq!(metric(&gw, "graygate_rollout_step", &[]).await, 2.0);
    assert!(
        metric(
            &gw,
            "graygate_rollout_analyses_total",
            &[("verdict", "pass")]
        )
        .await
            >= 3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_starts_failing_at_the_third_step_is_at_zero_permille_within_a_second() {
    let backends = Backends::start().await;
    let gw = Gateway::start(&backends.config("v2", 0, &fast_rollout("[100, 300, 600]", "2s")));
    let traffic = Traffic::start(&gw, 8);
    wait_for(&gw, Duration::from_secs(60), "the third step", |s| {
        s["step"] == 2
    })
    .await;
    backends.canary.mode.store(ERRORS, Ordering::Relaxed);
    let turned_bad = Instant::now();
    let aborted = wait_for(&gw, Duration::from_secs(20), "an abort", |s| {
        state(s) != "progressing"
    })
    .await;
    let decided = Instant::now();
    // Keep the traffic going a while: nobody may land on the canary any more.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = traffic.stop().await;
    assert_eq!(state(&aborted), "aborted", "{aborted:#}");
    assert_eq!(aborted["weight_permille"], 0);
    assert!(failed_checks(&aborted).contains("errors"), "{aborted:#}");
    let to_zero = decided - turned_bad;
    eprintln!("canary turned bad -> 0 permille in {to_zero:?} (interval 250 ms, failure_limit 2)");
    // Two failed analyses in a row, 250 ms apart, once the cohort shows the errors.
    assert!(
        to_zero < Duration::from_secs(1),
        "{to_zero:?} from the first 503 to 0‰"
    );
    // The abort is one swap: once it is observed, no request reaches the canary.
    let late: Vec<&Answered> = seen
        .iter()
        .filter(|s| s.at > decided + Duration::from_millis(50) && s.upstream == "canary")
        .collect();
    assert!(
        late.is_empty(),
        "{} requests reached the canary after the abort",
        late.len()
    );
    // No request failed but the canary's own 5xx.
    let failed_elsewhere: Vec<&Answered> = seen
        .iter()
        .filter(|s| s.status != 200 && s.upstream != "canary")
        .collect();
    assert!(
        failed_elsewhere.is_empty(),
        "{:?}",
        &failed_elsewhere[..failed_elsewhere.len().min(5)]
    );
    assert!(seen
        .iter()
        .any(|s| s.status == 503 && s.upstream == "canary"));
    assert!(
        gw.logs().contains("rollout aborted"),
        "no log line for the abort:\n{}",
        gw.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_50ms_slower_is_aborted_on_latency_alone() {
    let backends = Backends::start().await;
    backends.canary.delay_ms.store(50, Ordering::Relaxed);
    let rollout =
        fast_rollout("[200, 500]", "1s").replace("latency_margin = 1.0", "latency_margin = 0.5");
    let gw = Gateway::start(&backends.config("v2", 0, &rollout));
    let traffic = Traffic::start(&gw, 8);
    let aborted = wait_for(&gw, Duration::from_secs(60), "an abort", |s| {
        state(s) != "progressing"
    })
    .await;
    let seen = traffic.stop().await;
    assert_eq!(state(&aborted), "aborted", "{aborted:#}");
    let failed = failed_checks(&aborted);
    assert!(
        failed.contains("latency_rank")
            && !failed.contains("errors")
            && !failed.contains("error_rate"),
        "{failed:?}"
    );
    assert!(seen.iter().all(|s| s.status == 200));
}

/// A canary that hangs, in front of clients that give up after 300 ms: the requests
/// they abandon are counted as failures, so the hang is seen and the canary aborted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_canary_whose_clients_give_up_is_aborted() {
    let backends = Backends::start().await;
    backends.canary.delay_ms.store(10_000, Ordering::Relaxed);
    let gw = Gateway::start(&backends.config("v2", 0, &fast_rollout("[200, 500]", "1s")));
    let traffic = Traffic::impatient(&[(&gw, 1.0)], 16, Duration::from_millis(300));
    let aborted = wait_for(&gw, Duration::from_secs(60), "an abort", |s| {
        state(s) != "progressing"
    })
    .await;
    let seen = traffic.stop().await;
    assert_eq!(state(&aborted), "aborted", "{aborted:#}");
    assert!(failed_checks(&aborted).contains("errors"), "{aborted:#}");
    let canary = &aborted["analyses"][0]["canary"];
    assert_eq!(
        canary["requests"], canary["errors"],
        "every canary request was abandoned: {canary}"
    );
    assert!(
        seen.iter().any(|a| a.status == 0),
        "the clients gave up on some requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_canary_served_by_fallback_is_aborted() {
    let backends = Backends::start().await;
    let gw = Gateway::start(&backends.config("v2", 0, &fast_rollout("[200, 500]", "1s")));
    let traffic = Traffic::start(&gw, 8);
    wait_for(&gw, Duration::from_secs(20), "canary traffic", |s| {
        s["cohorts"]["canary"]["requests"].as_u64() > Some(10)
    })
    .await;
    backends.canary.kill();
    let aborted = wait_for(&gw, Duration::from_secs(30), "an abort", |s| {
        state(s) != "progressing"
    })
    .await;
    let seen = traffic.stop().await;
    assert_eq!(state(&aborted), "aborted", "{aborted:#}");
    assert!(failed_checks(&aborted).contains("errors"), "{aborted:#}");
    // Users never saw it: fallback served them from the stable pool.
    assert!(
        seen.iter().all(|s| s.status == 200),
        "{:?}",
        seen.iter().find(|s| s.status != 200)
    );
    assert!(metric(&gw, "graygate_fallbacks_total", &[("from", "canary")]).await > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_pause_resume_promote_and_abort_through_the_api_and_the_cli() {
    let backends = Backends::start().await;
    let gw = Gateway::start(&backends.config("v2", 0, &fast_rollout("[100, 300, 600]", "1h")));
    // Not paused: resume does not apply.
    let (code, body) = post(&gw, "/admin/rollout/resume").await;
    assert_eq!(code, 409, "{body}");
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("cannot resume a rollout that is progressing"));
    let (code, body) = post(&gw, "/admin/rollout/pause").await;
    assert_eq!((code, state(&body)), (StatusCode::OK, "paused"));
    // The CLI says the same, with exit codes.
    let (code, _, stderr) = cli(&gw, &["pause"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("409") && stderr.contains("cannot pause"),
        "{stderr}"
    );
    let (code, stdout, stderr) = cli(&gw, &["resume"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        state(&serde_json::from_str(&stdout).unwrap()),
        "progressing"
    );
    // Promote: one step.
    let (code, body) = post(&gw, "/admin/rollout/promote").await;
    assert_eq!(
        (
            code,
            body["step"].as_u64(),
            body["weight_permille"].as_u64()
        ),
        (StatusCode::OK, Some(1), Some(300))
    );
    assert_eq!(
        metric(&gw, "graygate_rollout_weight_permille", &[]).await,
        300.0
    );
    let explained: Value = serde_json::from_str(
        &get(&gw.admin_url("/admin/explain?header=x-user-id:7"), &[])
            .await
            .body,
    )
    .unwrap();
    assert_eq!(explained["rollout"]["weight_permille"], 300);
    assert_eq!(explained["rollout"]["set_by"], "rollout");
    assert_eq!(explained["rollout"]["file_permille"], 0);
    assert!(
        explained["cohort"] == "canary" || explained["cohort"] == "control",
        "{explained:#}"
    );
    // Promote fully with the CLI.
    let (code, stdout, stderr) = cli(&gw, &["promote", "--full"]);
    assert_eq!(code, 0, "{stderr}");
    let body: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (state(&body), body["weight_permille"].as_u64()),
        ("promoted", Some(1000))
    );
    // Promoted is final.
    for action in ["pause", "resume", "promote", "abort"] {
        let (code, _) = post(&gw, &format!("/admin/rollout/{action}")).await;
        assert_eq!(code, 409, "{action} after promotion");
    }
    let answer = get(&gw.admin_url("/admin/rollout/promote"), &[]).await;
    assert_eq!(answer.status, 405);
    let (code, _) = post(&gw, "/admin/rollout/promote?full=maybe").await;
    assert_eq!(code, 400);
    let (code, stdout, _) = cli(&gw, &["status"]);
    assert_eq!(code, 0);
    assert_eq!(state(&serde_json::from_str(&stdout).unwrap()), "promoted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_sets_zero_permille_and_a_config_without_rollout_answers_404() {
    let backends = Backends::start().await;
    let gw = Gateway::start(&backends.config("v2", 0, &fast_rollout("[500, 900]", "1h")));
    let (code, stdout, stderr) = cli(&gw, &["abort"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap()["weight_permille"],
        0
    );
    for user in 0..200 {
        let answer = get(&gw.url("/"), &[("x-user-id", &user.to_string())]).await;
        assert_eq!(
            answer.header("x-graygate-pool"),
            Some("blue"),
            "user {user}"
        );
    }
    assert_eq!(
        metric(&gw, "graygate_rollout_state", &[("state", "aborted")]).await,
        1.0
    );

    let plain = Gateway::start(&backends.config("v2", 0, ""));
    let answer = get(&plain.admin_url("/admin/rollout"), &[]).await;
    assert_eq!(answer.status, 404);
    assert!(answer.body.contains("no rollout is configured"));
    let (code, _, stderr) = cli(&plain, &["pause"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("404"), "{stderr}");
    assert!(!get(&plain.admin_url("/metrics"), &[])
        .await
        .body
        .contains("graygate_rollout_weight"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_at_the_same_step_and_an_unreadable_state_file_pauses() {
    let backends = Backends::start().await;
    let config = backends.config("v2", 7, &fast_rollout("[100, 300, 600]", "1h"));
    let mut gw = Gateway::start(&config);
    post(&gw, "/admin/rollout/promote").await;
    let (_, before) = post(&gw, "/admin/rollout/promote").await;
    assert_eq!(before["weight_permille"], 600);
    let pid = gw.pid().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let exit = gw.wait_exit(STEP).expect("exits after SIGTERM");
    assert!(exit.success());
    let dir = std::mem::replace(&mut gw.dir, tempfile::tempdir().unwrap());
    let config_path = gw.config_path.clone();
    let state_file = dir.path().join("rollout.state");
    assert!(state_file.exists());

    let mut gw = Gateway::start_at(dir, config_path.clone());
    let after = status(&gw).await;
    assert_eq!(
        (
            state(&after),
            after["step"].as_u64(),
            after["weight_permille"].as_u64()
        ),
        ("progressing", Some(2), Some(600))
    );
    assert_eq!(
        after["transitions"].as_array().unwrap().len(),
        2,
        "the history survives the restart"
    );
    assert!(gw.logs().contains("rollout resumed from its state file"));
    // Offline, `explain` reads the same state file and shows what the gateway does.
    let output = Command::new(bin())
        .args(["explain", "--config"])
        .arg(&config_path)
        .args(["-H", "x-user-id: 42"])
        .output()
        .unwrap();
    let offline: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(offline["rollout"]["weight_permille"], 600, "{offline:#}");
    assert_eq!(offline["rollout"]["file_permille"], 7);
    assert!(offline["rollout"]["source"]
        .as_str()
        .unwrap()
        .starts_with("the state file"));
    let condition = offline["rules"][1]["conditions"][0]["condition"]
        .as_str()
        .unwrap();
    assert!(condition.starts_with("bucket < 600 "), "{condition}");
    let dir = std::mem::replace(&mut gw.dir, tempfile::tempdir().unwrap());
    drop(gw);

    // A torn or foreign state file: paused at the file's 7‰, with the reason shown,
    // never restarted at the first step.
    std::fs::write(&state_file, "{\"format\": 1, \"identity\": ").unwrap();
    let gw = Gateway::start_at(dir, config_path);
    let held = status(&gw).await;
    assert_eq!(
        (state(&held), held["weight_permille"].as_u64()),
        ("paused", Some(7)),
        "{held:#}"
    );
    let error = held["state_file_error"].as_str().unwrap();
    assert!(
        error.contains("is not a rollout state") && error.contains("paused at the rule's 7‰"),
        "{error}"
    );
    assert!(state_file
        .with_file_name("rollout.state.unreadable")
        .exists());
    assert!(gw.logs().contains("rollout state file unreadable"));
    // Resuming goes on from the held weight to the next step above it.
    let (_, resumed) = post(&gw, "/admin/rollout/resume").await;
    assert_eq!(
        (state(&resumed), resumed["weight_permille"].as_u64()),
        ("progressing", Some(7))
    );
    let (_, next) = post(&gw, "/admin/rollout/promote").await;
    assert_eq!(next["weight_permille"], 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everyone_on_the_canary_at_a_step_is_still_on_it_at_the_next() {
    let backends = Backends::start().await;
    let gw = Gateway::start(&backends.config("v2", 0, &fast_rollout("[50, 200, 500]", "1h")));
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut previous: Option<BTreeSet<u32>> = None;
    for step in 0..3 {
        let weight = status(&gw).await["weight_permille"].as_u64().unwrap();
        let mut tasks = JoinSet::new();
        for part in 0..16u32 {
            let (client, url) = (client.clone(), gw.url("/"));
            tasks.spawn(async move {
                let mut canary = Vec::new();
                for user in (part..10_000).step_by(16) {
                    let request = Request::get(&url)
                        .header("x-user-id", user.to_string())
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    let response = tokio::time::timeout(STEP, client.request(request))
                        .await
                        .unwrap()
                        .unwrap();
                    if response.headers()["x-graygate-pool"] == "canary" {
                        canary.push(user);
                    }
                    let _ = response.into_body().collect().await;
                }
                canary
            });
        }
        let mut on_canary = BTreeSet::new();
        while let Some(part) = tasks.join_next().await {
            on_canary.extend(part.unwrap());
        }
        // The share matches the weight (binomial sd at 10,000 users is under 0.5 %).
        let share = on_canary.len() as f64 / 10_000.0;
        assert!(
            (share - weight as f64 / 1000.0).abs() < 0.02,
            "step {step}: {share} at {weight}‰"
        );
        if let Some(previous) = &previous {
            let left: Vec<&u32> = previous.difference(&on_canary).collect();
            assert!(
                left.is_empty(),
                "step {step}: {} users left the canary, e.g. {:?}",
                left.len(),
                &left[..left.len().min(5)]
            );
        }
        previous = Some(on_canary);
        post(&gw, "/admin/rollout/promote").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_keep_the_rollout_a_new_version_restarts_it_and_removing_it_ends_it() {
    let backends = Backends::start().await;
    let rollout = fast_rollout("[100, 300, 600]", "1h");
    let gw = Gateway::start(&backends.config("v2", 5, &rollout));
    post(&gw, "/admin/rollout/promote").await;
    let reload = |gw: &Gateway, text: String| {
        write(&gw.config_path, &text);
        let url = gw.admin_url("/admin/reload");
        async move {
            let answer = send(Request::post(url).body(Full::new(Bytes::new())).unwrap()).await;
            assert_eq!(answer.status, 200, "{}", answer.body);
        }
    };
    // Same rule, same version, another interval: the state carries over.
    reload(
        &gw,
        backends.config("v2", 5, &rollout.replace("250ms", "300ms")),
    )
    .await;
    let s = status(&gw).await;
    assert_eq!(
        (s["step"].as_u64(), s["interval"].as_str()),
        (Some(1), Some("300ms"))
    );
    // Finer steps: the weight holds, at the last step not above it.
    reload(
        &gw,
        backends.config(
            "v2",
            5,
            &rollout.replace("[100, 300, 600]", "[100, 200, 400, 800]"),
        ),
    )
    .await;
    let s = status(&gw).await;
    assert_eq!(
        (s["step"].as_u64(), s["weight_permille"].as_u64()),
        (Some(1), Some(300)),
        "{s:#}"
    );
    // A new canary version is a new rollout, at its first step.
    reload(&gw, backends.config("v3", 5, &rollout)).await;
    let s = status(&gw).await;
    assert_eq!(
        (
            s["canary_version"].as_str(),
            s["step"].as_u64(),
            s["weight_permille"].as_u64()
        ),
        (Some("v3"), Some(0), Some(100))
    );
    assert!(gw.logs().contains("rollout replaced"));
    // No [rollout]: the file's 5‰ applies again.
    reload(&gw, backends.config("v3", 5, "")).await;
    assert_eq!(get(&gw.admin_url("/admin/rollout"), &[]).await.status, 404);
    let explained: Value = serde_json::from_str(
        &get(&gw.admin_url("/admin/explain?header=x-user-id:1"), &[])
            .await
            .body,
    )
    .unwrap();
    assert!(explained.get("rollout").is_none());
    let trace = explained["rules"][1]["conditions"][0]["condition"]
        .as_str()
        .unwrap();
    assert!(trace.starts_with("bucket < 5 "), "{trace}");
    assert!(!get(&gw.admin_url("/metrics"), &[])
        .await
        .body
        .contains("graygate_rollout_weight"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cohorts_count_only_the_rules_randomized_population() {
    let backends = Backends::start().await;
    let gw = Gateway::start(&backends.config("v2", 0, &fast_rollout("[300, 600]", "1h")));
    // 300 keyed users, 100 requests without a key, 100 from staff (an earlier rule).
    let mut pools: HashMap<String, u64> = HashMap::new();
    for user in 0..300 {
        let answer = get(&gw.url("/"), &[("x-user-id", &format!("u{user}"))]).await;
        *pools
            .entry(answer.header("x-graygate-pool").unwrap().to_string())
            .or_default() += 1;
    }
    for _ in 0..100 {
        get(&gw.url("/"), &[]).await;
        get(&gw.url("/"), &[("x-user-id", "staff-1")]).await;
    }
    let s = status(&gw).await;
    let (canary, control) = (&s["cohorts"]["canary"], &s["cohorts"]["control"]);
    assert_eq!(canary["requests"].as_u64(), pools.get("canary").copied());
    assert_eq!(control["requests"].as_u64(), pools.get("blue").copied());
    assert_eq!(
        canary["requests"].as_u64().unwrap() + control["requests"].as_u64().unwrap(),
        300
    );
}

#[test]
fn check_shows_the_compiled_steps_and_rejects_every_mistake_with_its_key() {
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
[[rules]]
name = "header"
match = { header = { name = "x", exact = "y" } }
to = "canary"
[[rules]]
name = "to-stable"
match = { permille = 1 }
to = "blue"
"#;
    let run = |rollout: &str| {
        let path = dir.path().join("g.toml");
        std::fs::write(&path, format!("{base}\n{rollout}")).unwrap();
        let out = Command::new(bin())
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, out) = run("[rollout]\nrule = \"canary-rollout\"\nschedule = { kind = \"cubic\", from = 0, to = 1000, over = \"2h\", every = \"10m\" }");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("12 steps, in ‰: 20, 74, 156, 259, 376, 500, 624, 741, 844, 926, 980, 1000"),
        "{out}"
    );
    assert!(out.contains("at least 10m a step"), "{out}");
    let (code, out) =
        run("[rollout]\nrule = \"canary-rollout\"\nschedule = { kind = \"doubling\", from = 1 }");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000"),
        "{out}"
    );
    for (rollout, key, message) in [
        ("rule = \"nope\"\nsteps = [1]", "rollout.rule", "unknown rule `nope`; defined rules: canary-rollout, header, to-stable"),
        ("rule = \"header\"\nsteps = [1]", "rollout.rule", "rule `header` has no `permille` condition"),
        ("rule = \"to-stable\"\nsteps = [1]", "rollout.rule", "sends to `blue`, the stable pool"),
        ("rule = \"canary-rollout\"\nsteps = [1, 5, 5]", "rollout.steps[2]", "steps must increase"),
        ("rule = \"canary-rollout\"\nsteps = [10, 1001]", "rollout.steps[1]", "must be between 1 and 1000: got 1001"),
        ("rule = \"canary-rollout\"\nsteps = [0, 10]", "rollout.steps[0]", "a step of 0‰ sends the canary nothing to judge"),
        ("rule = \"canary-rollout\"", "rollout", "give exactly one of `steps` or `schedule`"),
        ("rule = \"canary-rollout\"\nschedule = { kind = \"cubic\", from = 0, to = 1000, over = \"10m\", every = \"1h\" }", "rollout.schedule.every", "exceeds `over`"),
        ("rule = \"canary-rollout\"\nschedule = { kind = \"linear\", from = 10 }", "rollout.schedule", "a linear schedule needs `step`"),
        ("rule = \"canary-rollout\"\nsteps = [1]\n[rollout.judge]\nalpha = 0.5", "rollout.judge.alpha", "must be between 0 and 0.5"),
        ("rule = \"canary-rollout\"\nsteps = [1]\nfailure_limit = 0", "rollout.failure_limit", "must be at least 1"),
        ("rule = \"canary-rollout\"\nsteps = [1]\ninterval = \"10ms\"", "rollout.interval", "must be at least 100ms"),
        ("rule = \"canary-rollout\"\nsteps = [1]\nstate_file = \"missing/dir/rollout.state\"", "rollout.state_file", "does not exist"),
        // The config itself, spelled another way: the rollout would overwrite it.
        ("rule = \"canary-rollout\"\nsteps = [1]\nstate_file = \"../{dir}/g.toml\"", "rollout.state_file", "is the config file: the rollout would overwrite it"),
        ("rule = \"canary-rollout\"\nsteps = [1000]", "rollout.steps[0]", "the first step must be below 1000‰"),
        ("rule = \"canary-rollout\"\nschedule = { kind = \"doubling\", from = 1000 }", "rollout.schedule", "the first step must be below 1000‰"),
        ("rule = \"canary-rollout\"\nsteps = [1]\ninterval = \"500000000000y\"", "rollout.interval", "must be at most 1day"),
        // A control character in a label value would break every Prometheus query.
        ("rule = \"canary\\trollout\"\nsteps = [1]", "rollout.rule", "the rule name \"canary\\trollout\" has the control character U+0009"),
    ] {
        let dir_name = dir.path().file_name().unwrap().to_str().unwrap();
        let rollout = rollout.replace("{dir}", dir_name);
        let (code, out) = run(&format!("[rollout]\n{rollout}"));
        assert_eq!(code, 1, "{rollout}: {out}");
        assert!(out.contains(&format!(": {key}: ")) && out.contains(message), "{rollout}:\n{out}");
    }
    // The canary pool's version is the rollout's identity: it must be given.
    let path = dir.path().join("g.toml");
    std::fs::write(
        &path,
        format!(
            "{}\n[rollout]\nrule = \"canary-rollout\"\nsteps = [1]",
            base.replace("version = \"v2\"\n", "")
        ),
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(": pools.canary.version: ") && err.contains("needs a `version`"),
        "{err}"
    );
    std::fs::write(
        &path,
        format!(
            "{}\n[rollout]\nrule = \"canary-rollout\"\nsteps = [1]",
            base.replace("version = \"v2\"", r#"version = "v2\n""#)
        ),
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(": pools.canary.version: the rollout's canary version \"v2\\n\" has the control character U+000A"),
        "{err}"
    );
}
