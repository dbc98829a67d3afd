//! Endpoints by DNS name, end to end: the real binary, a real DNS server on loopback
//! (Python's dnslib) whose answers the test changes or stops, and real upstreams on
//! several loopback addresses behind one name.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use common::dns::DnsServer;
use common::{get, metric, Gateway, Upstream, STEP};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A gateway whose `blue` pool is `blue.test:PORT`, resolved by `dns`.
fn config(dns: SocketAddr, port: u16, resolve_every: &str, extra: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_timeout = "5s"
workers = 1
dns = {{ nameservers = ["{dns}"], timeout = "300ms" }}

[pools.blue]
endpoints = ["blue.test:{port}"]
resolve_every = "{resolve_every}"

[routing]
stable = "blue"
{extra}
"#
    )
}

/// Which upstream answered each of `n` requests, by count.
async fn spread(gw: &Gateway, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let answer = get(&gw.url("/"), &[]).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        *seen.entry(answer.body).or_insert(0) += 1;
    }
    seen
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// Sends requests until one is answered by `name`; whether that happened within
/// `limit`.
async fn until_served_by(gw: &Gateway, name: &str, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if get(&gw.url("/"), &[]).await.body == name {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_spreads_over_its_addresses_and_follows_its_records() {
    let upstreams = Upstream::on_one_port(&[
        ("a", ip("127.0.0.2")),
        ("b", ip("127.0.0.3")),
        ("c", ip("127.0.0.4")),
    ])
    .await;
    let port = upstreams[0].addr.port();
    // A long TTL: only `resolve_every` can make the gateway see the change in time.
    let dns = DnsServer::start(&[("blue.test", &["127.0.0.2", "127.0.0.3"])], 3600);
    let gw = Gateway::start(&config(dns.addr, port, "300ms", ""));

    // Round robin over the two addresses, from the first request.
    assert_eq!(spread(&gw, 20).await, counts(&[("a", 10), ("b", 10)]));

    dns.answer(&[("blue.test", &["127.0.0.3", "127.0.0.4"])], 3600);
    assert!(
        until_served_by(&gw, "c", STEP).await,
        "the new address takes traffic; logs:\n{}",
        gw.logs()
    );
    assert_eq!(spread(&gw, 20).await, counts(&[("b", 10), ("c", 10)]));
    assert!(
        dns.queries().iter().any(|q| q == "blue.test A"),
        "{:?}",
        dns.queries()
    );
    assert_eq!(
        metric(&gw, "graygate_pool_endpoints", &[("pool", "blue")]).await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_ttl_brings_the_next_lookup_before_resolve_every() {
    let upstreams = Upstream::on_one_port(&[("a", ip("127.0.0.2")), ("b", ip("127.0.0.3"))]).await;
    let port = upstreams[0].addr.port();
    let dns = DnsServer::start(&[("blue.test", &["127.0.0.2"])], 1);
    // An hour between lookups, but the records say one second.
    let gw = Gateway::start(&config(dns.addr, port, "1h", ""));
    assert_eq!(spread(&gw, 4).await, counts(&[("a", 4)]));
    dns.answer(&[("blue.test", &["127.0.0.3"])], 1);
    assert!(
        until_served_by(&gw, "b", STEP).await,
        "the TTL ends the answer; logs:\n{}",
        gw.logs()
    );
}

/// Polls metric `name{labels}` until it reaches `least`; the last value read.
async fn metric_reaches(gw: &Gateway, name: &str, labels: &[(&str, &str)], least: f64) -> f64 {
    let deadline = std::time::Instant::now() + STEP;
    loop {
        let value = metric(gw, name, labels).await;
        if value >= least || std::time::Instant::now() >= deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolver_outage_keeps_the_last_addresses() {
    let upstreams = Upstream::on_one_port(&[("a", ip("127.0.0.2")), ("b", ip("127.0.0.3"))]).await;
    let port = upstreams[0].addr.port();
    let mut dns = DnsServer::start(&[("blue.test", &["127.0.0.2", "127.0.0.3"])], 1);
    let gw = Gateway::start(&config(dns.addr, port, "200ms", ""));
    assert_eq!(spread(&gw, 4).await, counts(&[("a", 2), ("b", 2)]));
    let failures = [("pool", "blue")];
    assert_eq!(
        metric(&gw, "graygate_dns_failures_total", &failures).await,
        0.0
    );

    dns.stop();
    // Several lookups fail in a row...
    let failed = metric_reaches(&gw, "graygate_dns_failures_total", &failures, 3.0).await;
    assert!(
        failed >= 3.0,
        "failures counted: {failed}; logs:\n{}",
        gw.logs()
    );
    // ... and both addresses still take every request.
    assert_eq!(spread(&gw, 20).await, counts(&[("a", 10), ("b", 10)]));
    let logs = gw.logs();
    let warned: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("cannot resolve endpoint name"))
        .collect();
    assert_eq!(
        warned.len(),
        1,
        "one line for the outage, not one a lookup: {logs}"
    );
    assert!(
        warned[0].contains("blue.test") && warned[0].contains("\"error\":"),
        "the line names the name and the resolver's error: {}",
        warned[0]
    );
    assert!(
        warned[0].contains("its last addresses stay in use"),
        "{}",
        warned[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_never_resolved_leaves_its_pool_to_fallback() {
    let blue = Upstream::named("blue").await;
    let canary = Upstream::on_one_port(&[("canary", ip("127.0.0.2"))]).await;
    let port = canary[0].addr.port();
    let dns = DnsServer::start(&[("other.test", &["127.0.0.2"])], 1);
    let config = format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_timeout = "5s"
dns = {{ nameservers = ["{dns}"], timeout = "300ms" }}

[pools.blue]
endpoints = ["{blue}"]
[pools.canary]
endpoints = ["canary.test:{port}"]
resolve_every = "200ms"

[routing]
stable = "blue"
decision_headers = true

[[rules]]
name = "to-canary"
match = {{ header = {{ name = "x-canary", present = true }} }}
to = "canary"
"#,
        dns = dns.addr,
        blue = blue.addr,
    );
    let gw = Gateway::start(&config);
    let answer = get(&gw.url("/"), &[("x-canary", "1")]).await;
    assert_eq!(
        (answer.status.as_u16(), answer.body.as_str()),
        (200, "blue")
    );
    assert_eq!(answer.header("x-graygate-pool"), Some("blue"));
    assert_eq!(answer.header("x-graygate-fallback-from"), Some("canary"));
    assert_eq!(
        metric(&gw, "graygate_fallbacks_total", &[("from", "canary")]).await,
        1.0
    );
    assert_eq!(
        metric(&gw, "graygate_pool_endpoints", &[("pool", "canary")]).await,
        0.0
    );
    let dns_failures = [("pool", "canary")];
    let failed = metric_reaches(&gw, "graygate_dns_failures_total", &dns_failures, 1.0).await;
    assert!(failed >= 1.0, "{}", gw.logs());
    let logs = gw.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("cannot resolve endpoint name")
                && l.contains("canary.test")
                && l.contains("the name does not exist (NXDOMAIN)")
                && l.contains("it has no endpoints until it resolves")),
        "{logs}"
    );
    // An address-only pool has no such series.
    assert!(!get(&gw.admin_url("/metrics"), &[])
        .await
        .body
        .contains("graygate_dns_failures_total{pool=\"blue\"}"));

    // Once the name resolves, its pool serves.
    dns.answer(&[("canary.test", &["127.0.0.2"])], 1);
    let deadline = std::time::Instant::now() + STEP;
    let mut answer = get(&gw.url("/"), &[("x-canary", "1")]).await;
    while answer.body != "canary" && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        answer = get(&gw.url("/"), &[("x-canary", "1")]).await;
    }
    assert_eq!(answer.body, "canary", "{}", gw.logs());
    assert_eq!(answer.header("x-graygate-fallback-from"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_brings_a_name_serves_it_from_its_first_request() {
    let blue = Upstream::named("blue").await;
    let canary = Upstream::on_one_port(&[("canary", ip("127.0.0.2"))]).await;
    let port = canary[0].addr.port();
    let dns = DnsServer::start(&[("canary.test", &["127.0.0.2"])], 300);
    let head = format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_timeout = "5s"
watch = false
dns = {{ nameservers = ["{dns}"], timeout = "300ms" }}

[pools.blue]
endpoints = ["{blue}"]

[routing]
stable = "blue"
"#,
        dns = dns.addr,
        blue = blue.addr,
    );
    let gw = Gateway::start(&head);
    assert!(dns.queries().is_empty(), "{:?}", dns.queries());
    let with_canary = format!(
        "{head}\n[pools.canary]\nendpoints = [\"canary.test:{port}\"]\n\n[[rules]]\nname = \"c\"\nmatch = {{ header = {{ name = \"x-canary\", present = true }} }}\nto = \"canary\"\n"
    );
    std::fs::write(&gw.config_path, with_canary).unwrap();
    let reload = common::send(
        http::Request::post(gw.admin_url("/admin/reload"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(reload.status, 200, "{}", reload.body);
    let answer = get(&gw.url("/"), &[("x-canary", "1")]).await;
    assert_eq!(answer.body, "canary", "{}", gw.logs());
    assert_eq!(
        metric(&gw, "graygate_fallbacks_total", &[("from", "canary")]).await,
        0.0
    );
}

fn check(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(common::bin())
        .args(args)
        .output()
        .expect("run graygate check");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_resolve_reports_names_that_do_not_resolve_and_plain_check_asks_nothing() {
    let dns = DnsServer::start(&[("blue.test", &["127.0.0.2"])], 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("graygate.toml");
    std::fs::write(
        &path,
        format!(
            r#"[server]
dns = {{ nameservers = ["{}"], timeout = "300ms" }}

[pools.blue]
endpoints = ["blue.test:8000", "typo.test:8000", "127.0.0.1:9000"]

[routing]
stable = "blue"
"#,
            dns.addr
        ),
    )
    .unwrap();
    let path = path.to_str().unwrap();

    let (code, stderr) = check(&["check", "--config", path]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        dns.queries().is_empty(),
        "plain check is offline: {:?}",
        dns.queries()
    );

    let (code, stderr) = check(&["check", "--resolve", "--config", path]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [
            format!(
                "{path}:5:32: pools.blue.endpoints[1]: host not found in upstream \"typo.test:8000\": the name does not exist (NXDOMAIN)"
            )
            .as_str(),
            "1 error"
        ]
    );
    assert!(dns.queries().iter().any(|q| q == "typo.test A"));
    assert!(dns.queries().iter().any(|q| q == "blue.test A"));
}
