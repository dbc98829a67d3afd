//! The status page (`GET /admin/ui`) in a real headless Chromium (Debian's
//! `chromium`; CI installs it, and a missing browser fails the test).
//!
//! A gateway serves known traffic (60 requests to blue, 25 to green, 15 to canary of
//! which 5 fail), then Chromium loads the page, runs its script for some seconds of
//! virtual time (it polls every 2 s) and dumps the DOM. The figures the page shows
//! (per pool requests, shares, failure ratios, latencies, endpoints; per rule
//! matches; the rollout's state and weight; the config generation) must be
//! `/admin/stats`'s and `/admin/rollout`'s, formatted as the page formats them. The
//! browser's net log must show the page requesting nothing outside the admin
//! listener, its console no policy violation and no error. At phone width the page
//! must fit its window. Screenshots (desktop and phone width) are saved under
//! `target/tmp/` as artefacts.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::Response;
use http_body_util::Full;
use serde_json::Value;

fn chromium() -> PathBuf {
    tool("chromium", "apt-get install chromium (CI does)")
}

/// What one headless Chromium run left: the DOM (for `--dump-dom`), the console
/// lines from its log, and the URLs of its requests by initiator.
struct Run {
    dom: String,
    console: Vec<String>,
    requests: Vec<(String, String)>,
}

/// Loads `url` in a fresh headless Chromium at `width`×`height`, lets its scripts
/// run for `virtual_ms` of virtual time, then dumps the DOM or takes a screenshot.
fn chromium_run(url: &str, (width, height): (u32, u32), screenshot: Option<&Path>) -> Run {
    let profile = tempfile::tempdir().unwrap();
    let net_log = profile.path().join("net-log.json");
    let mut command = Command::new(chromium());
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=8000",
    ]);
    command
        .arg(format!(
            "--user-data-dir={}",
            profile.path().join("profile").display()
        ))
        .arg(format!("--log-net-log={}", net_log.display()))
        .arg(format!("--window-size={width},{height}"));
    match screenshot {
        Some(path) => command.arg(format!("--screenshot={}", path.display())),
        None => command.arg("--dump-dom"),
    };
    command.arg(url);
    let (status, dom, log) = run_to_end(command, Duration::from_secs(90));
    assert!(status.success(), "chromium failed ({status}):\n{log}");
    let console = log
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    let requests = requests_in(&std::fs::read_to_string(&net_log).expect("the net log"));
    Run {
        dom,
        console,
        requests,
    }
}

/// Every request the net log saw start, as (initiator, URL). A page's own requests
/// carry its origin as initiator; navigations typed in and the browser's own
/// background requests carry "not an origin".
fn requests_in(net_log: &str) -> Vec<(String, String)> {
    // A log cut short (the browser exiting) lacks its closing brackets.
    let log: Value = serde_json::from_str(net_log)
        .or_else(|_| {
            serde_json::from_str(&format!("{}]}}", net_log.trim_end().trim_end_matches(',')))
        })
        .expect("the net log is JSON");
    let start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
        .as_u64()
        .expect("URL_REQUEST_START_JOB in the net log's constants");
    log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"].as_u64() == Some(start_job))
        .filter_map(|e| {
            let params = &e["params"];
            Some((
                params["initiator"].as_str().unwrap_or("").to_string(),
                params["url"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// The text of each `<td data-field=...>` of the `<tr data-KEY="NAME">` rows.
fn rows(dom: &str, key: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let row = regex::Regex::new(&format!(r#"(?s)<tr data-{key}="([^"]+)">(.*?)</tr>"#)).unwrap();
    let cell =
        regex::Regex::new(r#"(?s)<td[^>]*? data-field="([a-z_0-9]+)"[^>]*>([^<]*)</td>"#).unwrap();
    row.captures_iter(dom)
        .map(|r| {
            let cells = cell
                .captures_iter(&r[2])
                .map(|c| (c[1].to_string(), c[2].to_string()))
                .collect();
            (r[1].to_string(), cells)
        })
        .collect()
}

/// The text of the element with `id`.
fn by_id(dom: &str, id: &str) -> String {
    let element = regex::Regex::new(&format!(r#"id="{id}"[^>]*>([^<]*)<"#)).unwrap();
    element
        .captures(dom)
        .unwrap_or_else(|| panic!("#{id} in the page"))[1]
        .to_string()
}

/// JavaScript's `x.toFixed(digits)` for x >= 0: the nearest, a tie to the larger
/// (Rust's `{:.1}` breaks ties to even: 21.25 is "21.2" there and "21.3" in the page).
fn to_fixed(x: f64, digits: usize) -> String {
    let long = format!("{:.*}", digits + 12, x);
    let (int, frac) = long.split_once('.').unwrap();
    let mut n: u128 = format!("{int}{}", &frac[..digits]).parse().unwrap();
    if frac.as_bytes()[digits] >= b'5' {
        n += 1;
    }
    let text = format!("{n:0width$}", width = digits + 1);
    let (whole, part) = text.split_at(text.len() - digits);
    if digits == 0 {
        whole.to_string()
    } else {
        format!("{whole}.{part}")
    }
}

#[test]
fn to_fixed_breaks_ties_as_javascript_does() {
    assert_eq!(to_fixed(21.25, 1), "21.3");
    assert_eq!(to_fixed(21.249, 1), "21.2");
    assert_eq!(to_fixed(0.125, 2), "0.13");
    assert_eq!(to_fixed(60.0, 1), "60.0");
    assert_eq!(to_fixed(0.05, 1), "0.1");
    assert_eq!(to_fixed(33.333333, 2), "33.33");
}

// The page's formats (status_page.html: fmtInt, fmtShare, fmtRatio, fmtSeconds).
fn fmt_int(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
fn fmt_share(x: &Value) -> String {
    x.as_f64()
        .map_or("–".into(), |x| format!("{} %", to_fixed(x * 100.0, 1)))
}
fn fmt_ratio(x: &Value) -> String {
    x.as_f64()
        .map_or("–".into(), |x| format!("{} %", to_fixed(x * 100.0, 2)))
}
fn fmt_seconds(x: &Value) -> String {
    match x.as_f64() {
        None => "–".into(),
        Some(s) if s < 1.0 => format!("{} ms", to_fixed(s * 1000.0, 1)),
        Some(s) => format!("{} s", to_fixed(s, 2)),
    }
}

async fn stats(gw: &Gateway) -> Value {
    let answer = get(&gw.admin_url("/admin/stats"), &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    serde_json::from_str(&answer.body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_admin_figures_and_requests_nothing_else() {
    chromium();
    let blue = Upstream::named("blue").await;
    let green = Upstream::named("green").await;
    let canary = Upstream::with_handler(Arc::new(|seen| {
        let status = if seen.headers.contains_key("x-fail") {
            500
        } else {
            200
        };
        Response::builder()
            .status(status)
            .body(Full::new(Bytes::from("canary")))
            .unwrap()
    }))
    .await;
    let gw = Gateway::start(
        &config(
            blue.addr,
            green.addr,
            canary.addr,
            r#"[routing]
stable = "blue"
user_key = { header = "x-user-id" }

[[rules]]
name = "to-green"
match = { header = { name = "x-pool", exact = "green" } }
to = "green"

[[rules]]
name = "to-canary"
match = { header = { name = "x-pool", exact = "canary" } }
to = "canary"

[[rules]]
name = "canary-rollout"
match = { permille = 0, salt = "v2" }
to = "canary"

[rollout]
rule = "canary-rollout"
steps = [100, 500, 1000]
interval = "500ms"
inconclusive_limit = 100000
"#,
        )
        .replace(
            &format!("[pools.canary]\nendpoints = [\"{}\"]\n", canary.addr),
            &format!(
                "[pools.canary]\nendpoints = [\"{}\"]\nversion = \"v2\"\n",
                canary.addr
            ),
        ),
    );

    // 60 to blue, 25 to green, 15 to canary: every third of those fails (never five
    // in a row, which would eject the endpoint).
    for _ in 0..60 {
        assert_eq!(get(&gw.url("/"), &[]).await.status, 200);
    }
    for _ in 0..25 {
        assert_eq!(get(&gw.url("/"), &[("x-pool", "green")]).await.status, 200);
    }
    for i in 0..15 {
        let fail = if i % 3 == 0 { "yes" } else { "" };
        let mut headers = vec![("x-pool", "canary")];
        if !fail.is_empty() {
            headers.push(("x-fail", fail));
        }
        let want = if fail.is_empty() { 200 } else { 500 };
        assert_eq!(get(&gw.url("/"), &headers).await.status, want);
    }
    let deadline = Instant::now() + STEP;
    let total = |s: &Value| -> u64 {
        s["pools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["total"]["requests"].as_u64().unwrap())
            .sum()
    };
    while total(&stats(&gw).await) < 100 {
        assert!(Instant::now() < deadline, "the requests are counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The page, run by the browser.
    let url = gw.admin_url("/admin/ui");
    let page = tokio::task::spawn_blocking({
        let url = url.clone();
        move || chromium_run(&url, (1280, 1600), None)
    })
    .await
    .unwrap();
    let dom = &page.dom;
    let polls: u32 = regex::Regex::new(r#"data-polls="(\d+)""#)
        .unwrap()
        .captures(dom)
        .unwrap_or_else(|| panic!("the page's script ran and polled:\n{dom}"))[1]
        .parse()
        .unwrap();
    assert!(polls >= 2, "it polls again: {polls}");

    // What it shows is what the admin endpoints say.
    let stats = stats(&gw).await;
    let shown = rows(dom, "pool");
    assert_eq!(
        shown.keys().collect::<Vec<_>>(),
        ["blue", "canary", "green"],
        "{dom}"
    );
    for pool in stats["pools"].as_array().unwrap() {
        let name = pool["name"].as_str().unwrap();
        let row = &shown[name];
        let (total, window) = (&pool["total"], &pool["window"]);
        let want = [
            ("requests", fmt_int(total["requests"].as_u64().unwrap())),
            ("total_share", fmt_share(&total["share"])),
            ("total_failure_ratio", fmt_ratio(&total["failure_ratio"])),
            ("share", fmt_share(&window["share"])),
            ("failure_ratio", fmt_ratio(&window["failure_ratio"])),
            ("p50", fmt_seconds(&window["p50_seconds"])),
            ("p99", fmt_seconds(&window["p99_seconds"])),
            ("endpoints", "1/1".to_string()),
        ];
        for (field, value) in want {
            assert_eq!(row[field], value, "{name} {field}: {row:?}");
        }
    }
    // The traffic as sent: 60/25/15 of 100, a third of the canary's failed.
    assert_eq!(shown["blue"]["requests"], "60");
    assert_eq!(shown["blue"]["total_share"], "60.0 %");
    assert_eq!(shown["green"]["total_share"], "25.0 %");
    assert_eq!(shown["canary"]["total_share"], "15.0 %");
    assert_eq!(shown["canary"]["total_failure_ratio"], "33.33 %");
    assert_eq!(shown["blue"]["total_failure_ratio"], "0.00 %");
    // The split bar has a part per pool, as wide as its share.
    for (pool, share) in [
        ("blue", "60.0 %"),
        ("green", "25.0 %"),
        ("canary", "15.0 %"),
    ] {
        let part = format!(r#"<div data-pool="{pool}" title="{pool} {share}""#);
        assert_eq!(
            dom.matches(&part).count(),
            2,
            "{part} (last minute, since start)"
        );
    }
    // A chart line per pool.
    for pool in ["blue", "green", "canary"] {
        assert!(
            dom.contains(&format!(r#"data-pool="{pool}" data-points="#)),
            "a chart line for {pool}"
        );
    }

    let rules = rows(dom, "rule");
    for rule in stats["rules"].as_array().unwrap() {
        let name = rule["name"].as_str().unwrap();
        assert_eq!(
            rules[name]["matches"],
            fmt_int(rule["matches"].as_u64().unwrap()),
            "{name}"
        );
    }
    assert_eq!(rules["to-green"]["matches"], "25");
    assert_eq!(rules["to-canary"]["matches"], "15");
    assert_eq!(rules["default"]["matches"], "60");
    assert!(
        dom.contains("header x-pool = \"canary\""),
        "conditions shown"
    );

    let rollout: Value =
        serde_json::from_str(&get(&gw.admin_url("/admin/rollout"), &[]).await.body).unwrap();
    assert_eq!(
        by_id(dom, "rollout-state"),
        rollout["state"].as_str().unwrap()
    );
    assert_eq!(
        by_id(dom, "rollout-weight"),
        format!("{}‰", rollout["weight_permille"])
    );
    assert_eq!(by_id(dom, "rollout-weight"), "100‰");
    // Its verdicts: none of this traffic has a user key, so each is inconclusive.
    let latest = &rollout["analyses"][0];
    assert_eq!(latest["verdict"], "inconclusive");
    let reason = latest["reason"].as_str().unwrap();
    assert!(reason.starts_with("too few requests"), "{reason}");
    assert!(
        dom.contains(">inconclusive</b>") && dom.contains(reason),
        "the latest verdict and its reason: {reason}"
    );
    assert_eq!(by_id(dom, "generation"), stats["generation"].to_string());

    // It asked the admin listener, and nothing else.
    let origin = format!("http://{}", gw.admin);
    let from_page: Vec<&(String, String)> = page
        .requests
        .iter()
        .filter(|(init, _)| *init == origin)
        .collect();
    for path in ["/admin/stats", "/admin/rollout"] {
        assert!(
            from_page
                .iter()
                .any(|(_, u)| *u == format!("{origin}{path}")),
            "the net log shows the page's request to {path}: {:?}",
            page.requests
        );
    }
    for (initiator, target) in &page.requests {
        let page_made = initiator == &origin;
        let navigation = initiator == "not an origin" && target == &url;
        let browser_own = initiator == "not an origin" && !target.starts_with(&origin);
        assert!(
            (page_made && target.starts_with(&format!("{origin}/"))) || navigation || browser_own,
            "a request outside the admin listener: {initiator} -> {target}"
        );
        if browser_own {
            eprintln!("chromium's own request (not the page's): {target}");
        }
    }
    // The policy blocked nothing (a blocked load never reaches the net log), and the
    // script threw nothing.
    assert!(page.console.is_empty(), "console: {:#?}", page.console);

    // At phone width it fits its window.
    let phone = tokio::task::spawn_blocking({
        let url = url.clone();
        move || chromium_run(&url, (390, 844), None)
    })
    .await
    .unwrap();
    assert!(phone.dom.contains(r#"data-fits="true""#), "fits at 390 px");
    assert!(phone.console.is_empty(), "console: {:#?}", phone.console);

    // Screenshots, as artefacts.
    let artefacts = Path::new(env!("CARGO_TARGET_TMPDIR"));
    for (name, size) in [
        ("status-page.png", (1280, 1600)),
        ("status-page-phone.png", (390, 1600)),
    ] {
        let path = artefacts.join(name);
        let _ = std::fs::remove_file(&path);
        let shot = tokio::task::spawn_blocking({
            let (url, path) = (url.clone(), path.clone());
            move || chromium_run(&url, size, Some(&path))
        })
        .await
        .unwrap();
        let png = std::fs::read(&path).expect("the screenshot");
        assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{name}");
        assert!(shot.console.is_empty(), "console: {:#?}", shot.console);
        eprintln!("screenshot: {}", path.display());
    }
}
