//! `graygate demo`: what an operator adopts graygate for, on one machine. Three
//! in-process upstreams answer with their pool's name and version; the gateway runs in
//! front of them exactly as `graygate run` does, on `config/demo.toml` written to a
//! temporary directory (endpoints and listeners filled in), with its admin listener,
//! the status page, `/metrics`, the file watcher and a short automated rollout; and a
//! built-in load generator gives all of it traffic.
//!
//! `graygate demo-upstream` and `graygate demo-load` run the upstream and the load
//! generator as processes of their own, for the docker-compose stack.

pub mod load;
pub mod upstream;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use tracing::error;

use crate::config::ConfigFile;
use crate::routing::bucket;
use crate::shutdown;
use load::LoadSettings;
use upstream::Behaviour;

/// The demo's config, as shipped in `config/demo.toml`.
pub const DEMO_CONFIG: &str = include_str!("../config/demo.toml");

/// The rule the demo invites an operator to edit, and the rollout it runs.
pub const EDIT_RULE: &str = "canary-50-permille";

/// `graygate demo`'s flags.
#[derive(Debug, Clone)]
pub struct DemoSettings {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    /// Requests per second of the built-in load (0: none).
    pub rate: f64,
}

/// Runs the demo until SIGTERM or SIGINT.
pub fn main(settings: DemoSettings) -> ExitCode {
    let dir = std::env::temp_dir().join(format!("graygate-demo-{}", std::process::id()));
    let code = match run(&settings, &dir) {
        Ok(code) => code,
        Err(message) => {
            error!("{message}");
            ExitCode::from(1)
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    code
}

fn run(settings: &DemoSettings, dir: &Path) -> Result<ExitCode, String> {
    let file: ConfigFile = toml::from_str(DEMO_CONFIG).map_err(|e| e.to_string())?;
    let pools: Vec<(String, Option<String>)> = file
        .pools
        .iter()
        .map(|(name, pool)| (name.clone(), pool.version.clone()))
        .collect();

    // The upstreams and the load run on a runtime of their own, beside the gateway's.
    let (trigger, stop) = shutdown::channel();
    let (addresses_tx, addresses_rx) = mpsc::channel();
    let (gateway_tx, gateway_rx) = tokio::sync::oneshot::channel::<SocketAddr>();
    let rate = settings.rate;
    let side = std::thread::Builder::new()
        .name("demo-upstreams".into())
        .spawn(move || side_runtime(pools, stop, addresses_tx, gateway_rx, rate))
        .map_err(|e| format!("cannot start the demo upstreams: {e}"))?;
    let upstreams: Vec<(String, SocketAddr)> = addresses_rx
        .recv()
        .map_err(|_| "the demo upstreams did not start".to_string())??;

    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join("graygate.toml");
    let text = demo_file(settings, &upstreams)?;
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;

    let announce_path = path.clone();
    let announce: crate::cli::Announce = Box::new(move |listen, admin| {
        print!(
            "{}",
            introduction(listen, admin, &announce_path, &upstreams, &file, rate)
        );
        let _ = gateway_tx.send(listen);
    });
    let code = crate::cli::run_gateway(path, Some(announce));
    trigger.fire();
    let _ = side.join();
    Ok(code)
}

/// The side runtime: starts an upstream per pool, reports their addresses, then runs
/// the load against the gateway once it listens, until `stop`.
fn side_runtime(
    pools: Vec<(String, Option<String>)>,
    stop: shutdown::Shutdown,
    addresses: mpsc::Sender<Result<Vec<(String, SocketAddr)>, String>>,
    gateway: tokio::sync::oneshot::Receiver<SocketAddr>,
    rate: f64,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = addresses.send(Err(format!("cannot start a runtime: {e}")));
            return;
        }
    };
    runtime.block_on(async move {
        let mut started = Vec::new();
        for (name, version) in pools {
            let behaviour = Behaviour::healthy(&name, version.as_deref());
            let local = SocketAddr::from(([127, 0, 0, 1], 0));
            match upstream::start(local, behaviour, stop.clone()).await {
                Ok(address) => started.push((name, address)),
                Err(e) => {
                    let _ = addresses.send(Err(format!("demo upstream {name}: {e}")));
                    return;
                }
            }
        }
        let _ = addresses.send(Ok(started));
        let mut waiting = stop.clone();
        let target = tokio::select! {
            target = gateway => target,
            _ = waiting.wait() => return,
        };
        if let Ok(target) = target {
            let settings = LoadSettings {
                target: format!("http://{target}")
                    .parse()
                    .expect("an address is a valid authority"),
                rate,
                users: 10_000,
                report_every: None,
            };
            load::run(settings, stop.clone()).await;
        }
        let mut stop = stop;
        stop.wait().await;
    });
}

/// `config/demo.toml` with the listeners and the upstreams' addresses filled in, its
/// comments kept: the file the operator is invited to edit.
fn demo_file(
    settings: &DemoSettings,
    upstreams: &[(String, SocketAddr)],
) -> Result<String, String> {
    let mut doc: toml_edit::DocumentMut = DEMO_CONFIG.parse().map_err(|e| format!("{e}"))?;
    doc["server"]["listen"] = toml_edit::value(settings.listen.to_string());
    doc["server"]["admin_listen"] = toml_edit::value(settings.admin.to_string());
    for (name, address) in upstreams {
        let mut endpoints = toml_edit::Array::new();
        endpoints.push(address.to_string());
        doc["pools"][name.as_str()]["endpoints"] = toml_edit::value(endpoints);
    }
    Ok(doc.to_string())
}

/// What the demo prints once the gateway listens.
fn introduction(
    listen: SocketAddr,
    admin: SocketAddr,
    path: &Path,
    upstreams: &[(String, SocketAddr)],
    file: &ConfigFile,
    rate: f64,
) -> String {
    let upstreams: Vec<String> = upstreams.iter().map(|(n, a)| format!("{n}={a}")).collect();
    let permille = file
        .rules
        .iter()
        .find(|r| r.name == EDIT_RULE)
        .and_then(|r| r.conditions.permille)
        .unwrap_or(0);
    let rollout = file
        .rollout
        .as_ref()
        .map(|r| r.rule.clone())
        .unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "graygate demo: gateway on http://{listen}, upstreams {}",
        upstreams.join(", ")
    );
    let _ = writeln!(out, "Status page: http://{admin}/admin/ui");
    let _ = writeln!(out, "Metrics:     http://{admin}/metrics");
    let _ = writeln!(out, "Config:      {}", path.display());
    let _ = writeln!(out, "  (watched: a saved edit is applied within a second; a broken one is refused and the running config kept)");
    let _ = writeln!(
        out,
        "Try: in that file, raise rule `{EDIT_RULE}`'s `permille = {permille}` to 500 and save. On the status page the"
    );
    let _ = writeln!(
        out,
        "  config generation goes to 2 and canary's share of the split climbs. Or watch it with"
    );
    let _ = writeln!(
        out,
        "    curl -s http://{admin}/metrics | grep -E '^graygate_config_generation|rule=\"{EDIT_RULE}\"'"
    );
    if !rollout.is_empty() {
        let _ = writeln!(
            out,
            "Meanwhile an automated rollout moves rule `{rollout}` through its steps: status page, or curl -s http://{admin}/admin/rollout"
        );
    }
    if rate > 0.0 {
        let _ = writeln!(
            out,
            "A built-in load generator sends {rate} requests/s (--rate 0 for none)."
        );
    }
    let _ = writeln!(
        out,
        "Each upstream answers with its pool's name and version; add -i to see x-graygate-pool and x-graygate-rule."
    );
    out.push_str(&curl_lines(listen, file));
    let _ = writeln!(out, "Stop with Ctrl-C.");
    out
}

/// One `curl` line per rule, each annotated with the pool it shows. The per-mille
/// user ids are computed from the config's salt, so the promise holds by construction.
pub fn curl_lines(listen: SocketAddr, file: &ConfigFile) -> String {
    let url = format!("http://{listen}/");
    let (permille, salt) = file
        .rules
        .iter()
        .find_map(|r| {
            r.conditions
                .permille
                .map(|n| (n as u16, r.conditions.salt.clone().unwrap_or_default()))
        })
        .unwrap_or((0, String::new()));
    let user_with_bucket = |inside: bool| {
        (2000..)
            .map(|id: u32| id.to_string())
            .find(|id| (bucket(salt.as_bytes(), id.as_bytes()) < permille) == inside)
            .expect("some id lands on each side")
    };
    let (inside, outside) = (user_with_bucket(true), user_with_bucket(false));
    let lines = [
        (
            format!("curl -s {url}"),
            "blue",
            "no rule matches: routing.stable",
        ),
        (
            format!("curl -s -H 'x-user-group: internal-testers' {url}"),
            "canary",
            "internal-testers",
        ),
        (
            format!("curl -s -H 'x-user-id: 1001' {url}"),
            "canary",
            "staff",
        ),
        (
            format!("curl -s -A 'MyShop-App/5.1 (iPhone)' -b 'city=110000' {url}"),
            "green",
            "beijing-app-users",
        ),
        (
            format!("curl -s -A 'Mozilla/5.0 (iPhone) Mobile' -b 'city=110000' {url}"),
            "blue",
            "web UA: not beijing-app-users",
        ),
        (
            format!("curl -s '{url}?channel=huawei'"),
            "canary",
            "appstore",
        ),
        (
            format!("curl -s -H 'x-model: llama-3-70b' {url}"),
            "green",
            "llama-3-models",
        ),
        (
            format!("curl -s -H 'x-user-id: {inside}' {url}"),
            "canary",
            "canary-50-permille: bucket < 50",
        ),
        (
            format!("curl -s -H 'x-user-id: {outside}' {url}"),
            "blue",
            "bucket >= 50: routing.stable",
        ),
        (
            format!("curl -s -H 'x-lucky: yes' {url}"),
            "canary or blue",
            "lucky-half: random, about half each",
        ),
    ];
    let mut out = String::new();
    for (command, pool, why) in lines {
        let _ = writeln!(out, "  {command:<75} # -> {pool}  ({why})");
    }
    out
}

/// `graygate demo-upstream`: one demo upstream until SIGTERM or SIGINT.
pub async fn serve_upstream(listen: SocketAddr, behaviour: Behaviour) -> ExitCode {
    let (trigger, mut stop) = shutdown::channel();
    let signals = match shutdown::on_signals(trigger) {
        Ok(signals) => signals,
        Err(e) => {
            error!("cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    tokio::spawn(signals);
    let description = format!("{behaviour:?}");
    match upstream::start(listen, behaviour, stop.clone()).await {
        Ok(address) => {
            tracing::info!(%address, behaviour = description, "demo upstream serving");
            stop.wait().await;
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("cannot listen on {listen}: {e}");
            ExitCode::from(1)
        }
    }
}

/// `graygate demo-load`: the load until SIGTERM or SIGINT, its tally logged every
/// `report_every`.
pub async fn send_load(settings: LoadSettings) -> ExitCode {
    let (trigger, stop) = shutdown::channel();
    match shutdown::on_signals(trigger) {
        Ok(signals) => {
            tokio::spawn(signals);
        }
        Err(e) => {
            error!("cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    }
    tracing::info!(target = %settings.target, rate = settings.rate, "demo-load sending");
    load::run(settings, stop).await;
    ExitCode::SUCCESS
}

/// How long `demo-load` waits between tally lines.
pub const LOAD_REPORT_EVERY: Duration = Duration::from_secs(10);
