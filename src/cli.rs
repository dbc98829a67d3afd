//! The command line: `run`, `check`, `explain`, `demo`, `rollout`, `controller`,
//! `schema`, and the demo stack's `demo-upstream` and `demo-load`.
//!
//! Exit codes: 0 ok, 1 invalid config or runtime failure, 2 usage error (clap's).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, Parser, Subcommand};
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::net::TcpListener;
use tracing::{error, info};

use crate::config::{self, ConfigErrors};
use crate::control::reload::{self, Reloader};
use crate::control::{self, admin, watch};
use crate::logging::{self, LogFormat};
use crate::proxy::Proxy;
use crate::routing::RequestView;
use crate::server::ServerSettings;
use crate::shared::Shared;
use crate::shutdown;
use crate::snapshot::Snapshot;
use crate::upstream::{active, EndpointSpec};
use crate::workers;

#[derive(Debug, Parser)]
#[command(
    name = "graygate",
    version,
    about = "Gray-release gateway: an ordered, hot-reloaded TOML rule chain in front of blue, green and canary pools"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file; `graygate --config PATH` is `graygate run --config PATH`.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// With `--config`: do not reload when the files change (as `run --no-watch`).
    #[arg(long, requires = "config")]
    no_watch: bool,
    /// Log line format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve traffic.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Do not reload when the config or a file it names changes: only SIGHUP and
        /// `POST /admin/reload` reload (as `server.watch = false`).
        #[arg(long)]
        no_watch: bool,
    },
    /// Validate a config file: exit 0 if valid, 1 with every error on stderr.
    Check {
        #[arg(long, short)]
        config: PathBuf,
        /// Also look up every endpoint name, and report those that do not resolve
        /// (`host not found in upstream`). Without it, `check` makes no query.
        #[arg(long)]
        resolve: bool,
    },
    /// Print the config's JSON Schema (for editors and CI; the repository keeps it in
    /// config/graygate.schema.json).
    Schema,
    /// Print, as JSON, the decision for one request: pool, rule, bucket, and why each
    /// rule before the winner did not match.
    Explain {
        #[arg(long, short)]
        config: PathBuf,
        /// A request header, `name: value`; repeat for more.
        #[arg(short = 'H', long = "header", value_parser = parse_header)]
        headers: Vec<(HeaderName, HeaderValue)>,
        /// The request path, with its query string if any.
        #[arg(long, default_value = "/")]
        path: String,
    },
    /// Run the built-in demo: three in-process upstreams, the gateway in front with its
    /// admin listener, status page and file watcher, a short rollout, and some load.
    Demo {
        /// Where the demo gateway listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where its admin listener (status page, metrics) listens.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
        /// Requests per second of the built-in load generator; 0 for none.
        #[arg(long, default_value_t = 50.0, value_parser = parse_rate)]
        rate: f64,
    },
    /// One demo upstream: answers with its name and version, misbehaves on request.
    DemoUpstream {
        /// The pool it plays, the first word of every answer.
        #[arg(long)]
        name: String,
        /// The version it answers with.
        #[arg(long, env = "GRAYGATE_DEMO_VERSION")]
        version: Option<String>,
        #[arg(long, env = "GRAYGATE_DEMO_LISTEN", default_value = "0.0.0.0:8000")]
        listen: SocketAddr,
        /// The share of requests answered 500, 0 to 1.
        #[arg(long, env = "GRAYGATE_DEMO_ERROR_RATE", default_value_t = 0.0, value_parser = parse_share)]
        error_rate: f64,
        /// Added to every answer (humantime, e.g. 200ms), scaled by a random 0.5 to 1.5.
        #[arg(long, env = "GRAYGATE_DEMO_LATENCY", default_value = "0s", value_parser = humantime::parse_duration)]
        latency: std::time::Duration,
    },
    /// A small load generator for the demo stack: GETs at a steady rate, dressed as
    /// many kinds of clients.
    DemoLoad {
        /// The gateway, `http://host:port`.
        #[arg(long, env = "GRAYGATE_DEMO_TARGET")]
        target: http::Uri,
        /// Requests per second.
        #[arg(long, env = "GRAYGATE_DEMO_RATE", default_value_t = 20.0, value_parser = parse_rate)]
        rate: f64,
        /// Distinct user ids.
        #[arg(long, default_value_t = 10_000)]
        users: u32,
    },
    /// Judge a fleet's rollout from Prometheus and serve /admin/rollout, without
    /// serving traffic: a dedicated controller for gateways that follow it.
    Controller {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show or steer the automated rollout of a running gateway, through its admin
    /// listener.
    Rollout {
        #[command(subcommand)]
        action: RolloutCommand,
        /// The gateway's admin address (`server.admin_listen`).
        #[arg(
            long,
            global = true,
            default_value = "127.0.0.1:9901",
            conflicts_with = "config"
        )]
        admin: String,
        /// Read the admin address (and `server.admin_token`) from this config file instead.
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        /// The bearer token for `server.admin_token`; else `GRAYGATE_ADMIN_TOKEN`, else
        /// the token in `--config`. Prefer the variable: arguments show in `ps`.
        #[arg(long, global = true, value_name = "TOKEN")]
        token: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, Subcommand)]
enum RolloutCommand {
    /// Print the rollout's state, steps, cohorts, analyses and transitions (JSON).
    Status,
    /// Hold the weight; analyses go on, and failures still abort.
    Pause,
    /// Go on from a pause.
    Resume,
    /// Move to the next step now, or with --full to 1000‰.
    Promote {
        #[arg(long)]
        full: bool,
    },
    /// Set the rule to 0‰ now and stop the rollout.
    Abort,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match (cli.command, cli.config) {
        (Some(Command::Check { config, resolve }), _) => check(&config, resolve),
        (Some(Command::Schema), _) => {
            use std::io::Write;
            let _ = std::io::stdout()
                .lock()
                .write_all(config::schema_text().as_bytes());
            ExitCode::SUCCESS
        }
        (
            Some(Command::Explain {
                config,
                headers,
                path,
            }),
            _,
        ) => explain(&config, headers, &path),
        (Some(Command::Run { config, no_watch }), _) => {
            logging::init(cli.log_format);
            run(config, Role::Gateway, no_watch, None)
        }
        (None, Some(config)) => {
            logging::init(cli.log_format);
            run(config, Role::Gateway, cli.no_watch, None)
        }
        (Some(Command::Controller { config }), _) => {
            logging::init(cli.log_format);
            run(config, Role::Controller, false, None)
        }
        (
            Some(Command::Demo {
                listen,
                admin,
                rate,
            }),
            _,
        ) => {
            logging::init(cli.log_format);
            crate::demo::main(crate::demo::DemoSettings {
                listen,
                admin,
                rate,
            })
        }
        (
            Some(Command::DemoUpstream {
                name,
                version,
                listen,
                error_rate,
                latency,
            }),
            _,
        ) => {
            logging::init(cli.log_format);
            let behaviour = crate::demo::upstream::Behaviour {
                name,
                version,
                error_rate,
                latency,
            };
            with_runtime(1, crate::demo::serve_upstream(listen, behaviour))
        }
        (
            Some(Command::DemoLoad {
                target,
                rate,
                users,
            }),
            _,
        ) => {
            logging::init(cli.log_format);
            let settings = crate::demo::load::LoadSettings {
                target,
                rate,
                users,
                report_every: Some(crate::demo::LOAD_REPORT_EVERY),
            };
            with_runtime(1, crate::demo::send_load(settings))
        }
        (
            Some(Command::Rollout {
                action,
                admin,
                config,
                token,
            }),
            _,
        ) => rollout(action, &admin, config.as_deref(), token),
        (None, None) => {
            let _ = Cli::command().print_help();
            eprintln!("\nerror: give a command, or --config PATH to run");
            ExitCode::from(2)
        }
    }
}

fn load(path: &Path, shared: &Shared) -> Result<Snapshot, ExitCode> {
    config::load(path, shared).map_err(|errors| {
        report(&errors);
        ExitCode::from(1)
    })
}

fn report(errors: &ConfigErrors) {
    eprintln!("{errors}");
    let n = errors.0.len();
    eprintln!("{n} error{}", plural(n));
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Prints a line to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn print_out(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

fn check(path: &Path, resolve: bool) -> ExitCode {
    let shared = Shared::new();
    let loaded = config::load(path, &shared);
    // Names are looked up whether or not the rest is valid: every error in one run.
    let unresolved = if resolve {
        check_names(path)
    } else {
        Vec::new()
    };
    let loaded = match (loaded, unresolved.is_empty()) {
        (loaded, true) => loaded,
        (Ok(_), false) => Err(ConfigErrors(unresolved)),
        (Err(ConfigErrors(mut errors)), false) => {
            errors.extend(unresolved);
            errors.sort_by_key(|e| (e.line.is_none(), e.line, e.column));
            Err(ConfigErrors(errors))
        }
    };
    match loaded.map_err(|errors| {
        report(&errors);
        ExitCode::from(1)
    }) {
        Ok(snapshot) => {
            let (pools, rules) = (snapshot.pools.len(), snapshot.chain.rules().len());
            print_out(&format!(
                "{}: ok ({pools} pool{}, {rules} rule{})",
                path.display(),
                plural(pools),
                plural(rules)
            ));
            if let Some(tap) = &snapshot.rollout {
                let plan = &tap.plan;
                let steps: Vec<String> = plan.steps.iter().map(u16::to_string).collect();
                print_out(&format!(
                    "rollout of rule `{}` to pool `{}` (version `{}`): {} step{}, in ‰: {}; an analysis every {}, at least {} a step",
                    plan.rule_name,
                    plan.canary_pool,
                    plan.canary_version,
                    steps.len(),
                    plural(steps.len()),
                    steps.join(", "),
                    humantime::format_duration(plan.interval),
                    humantime::format_duration(plan.min_step_duration)
                ));
            }
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// `check --resolve`: every endpoint name of the file, looked up as the gateway would
/// (with `server.dns`); one error for each endpoint whose name does not resolve, in
/// nginx's words.
fn check_names(path: &Path) -> Vec<config::ConfigError> {
    let Ok(source) = config::Source::read(path) else {
        return Vec::new();
    };
    let Ok(file) = config::parse(&source) else {
        return Vec::new();
    };
    let dns = control::dns::Dns::new(&file);
    let mut endpoints = Vec::new();
    for (pool, settings) in &file.pools {
        for (i, text) in settings.endpoints.iter().enumerate() {
            let Some(host) = EndpointSpec::parse(text)
                .ok()
                .and_then(|s| s.name().map(String::from))
            else {
                continue;
            };
            let key = config::KeyPath::root()
                .key("pools")
                .key(pool)
                .key("endpoints")
                .index(i);
            endpoints.push((key, text.clone(), host));
        }
    }
    if endpoints.is_empty() {
        return Vec::new();
    }
    with_control_runtime_value(async move {
        let mut errors = Vec::new();
        for (key, text, host) in endpoints {
            if let Err(why) = dns.lookup(&host).await {
                let message = format!("host not found in upstream \"{text}\": {why}");
                errors.push(config::ConfigError::at(&source, &key, message));
            }
        }
        errors
    })
    .unwrap_or_default()
}

fn explain(path: &Path, headers: Vec<(HeaderName, HeaderValue)>, path_and_query: &str) -> ExitCode {
    let snapshot = match load(path, &Shared::new()) {
        Ok(snapshot) => snapshot,
        Err(code) => return code,
    };
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(name, value);
    }
    let query = path_and_query.split_once('?').map(|(_, q)| q);
    let (snapshot, source) = with_saved_rollout(snapshot);
    let explanation = snapshot.explain(RequestView::new(&map, query), &mut fastrand::f64, &source);
    print_out(&serde_json::to_string_pretty(&explanation).expect("serializable"));
    ExitCode::SUCCESS
}

/// The snapshot with the weight a running gateway's rollout has saved, so offline
/// `explain` shows what the gateway does; and where the weight came from.
fn with_saved_rollout(snapshot: Snapshot) -> (Snapshot, String) {
    use crate::rollout::controller::{held_note, now_ms, resume, Start};
    use crate::rollout::{state_file, Tap};
    let Some(tap) = &snapshot.rollout else {
        return (snapshot, String::new());
    };
    let plan = Arc::clone(&tap.plan);
    let file = plan.state_file.display().to_string();
    let (state, steps, _, start) = resume(&plan, state_file::load(&plan.state_file), now_ms());
    let source = match start {
        Start::New => format!("no state file at {file}: a new rollout starts at its first step"),
        Start::Resumed => format!("the state file {file}"),
        Start::Replaced(_) => {
            format!(
                "the state file {file} holds another rollout: this one starts at its first step"
            )
        }
        Start::Unreadable(why) => format!("{why}; {}", held_note(&plan)),
    };
    let tap = Tap {
        weight: state.weight(&steps),
        position: Some((state.phase, state.step)),
        cohorts: None,
        plan,
    };
    (snapshot.with_rollout(tap), source)
}

/// The variable `graygate rollout` takes the admin token from, after `--token`.
const TOKEN_VARIABLE: &str = "GRAYGATE_ADMIN_TOKEN";

/// `graygate rollout ACTION`: one request to the admin listener; its JSON on stdout.
/// Exit 0 on 200, 1 otherwise (the answer's error on stderr). The token, if any:
/// `--token`, else `GRAYGATE_ADMIN_TOKEN`, else `server.admin_token` of `--config`.
fn rollout(
    action: RolloutCommand,
    admin: &str,
    config: Option<&Path>,
    token: Option<String>,
) -> ExitCode {
    let (admin, configured_token) = match config {
        Some(path) => match config::Source::read(path).and_then(|s| config::parse(&s)) {
            Ok(file) => (
                file.server.admin_listen.to_string(),
                file.server.admin_token.map(|t| t.0),
            ),
            Err(errors) => {
                report(&errors);
                return ExitCode::from(1);
            }
        },
        None => (admin.to_string(), None),
    };
    let token = token
        .or_else(|| std::env::var(TOKEN_VARIABLE).ok())
        .filter(|t| !t.is_empty())
        .or(configured_token);
    let (method, path) = match action {
        RolloutCommand::Status => ("GET", "/admin/rollout"),
        RolloutCommand::Pause => ("POST", "/admin/rollout/pause"),
        RolloutCommand::Resume => ("POST", "/admin/rollout/resume"),
        RolloutCommand::Promote { full: false } => ("POST", "/admin/rollout/promote"),
        RolloutCommand::Promote { full: true } => ("POST", "/admin/rollout/promote?full=true"),
        RolloutCommand::Abort => ("POST", "/admin/rollout/abort"),
    };
    let answer = with_control_runtime(async move {
        let timeout = std::time::Duration::from_secs(10);
        let token = token.as_deref();
        match crate::control::client::request_with_token(&admin, method, path, token, timeout).await
        {
            Ok((200, body)) => {
                print_out(body.trim_end());
                ExitCode::SUCCESS
            }
            Ok((status, body)) => {
                let message = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_string))
                    .unwrap_or(body);
                let hint = match (status, token) {
                    (401, None) => {
                        format!(" (give the token with {TOKEN_VARIABLE}, --token or --config)")
                    }
                    _ => String::new(),
                };
                eprintln!("graygate rollout: {status}: {}{hint}", message.trim_end());
                ExitCode::from(1)
            }
            Err(err) => {
                eprintln!("graygate rollout: cannot reach the admin listener at {admin}: {err}");
                ExitCode::from(1)
            }
        }
    });
    answer
}

/// Requests per second for the demo's load: 0 to 100,000.
fn parse_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rate) if (0.0..=100_000.0).contains(&rate) => Ok(rate),
        _ => Err(format!(
            "`{text}` is not a rate between 0 and 100000 requests a second"
        )),
    }
}

fn parse_share(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err(format!("`{text}` is not a share between 0 and 1")),
    }
}

fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = text.split_once(':').ok_or("expected `name: value`")?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("bad header name `{}`", name.trim()))?;
    let value = HeaderValue::from_str(value.trim()).map_err(|_| "bad header value".to_string())?;
    Ok((name, value))
}

/// What `run` serves: traffic and the control plane, or the control plane alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Gateway,
    Controller,
}

/// Called once the gateway listens, with its traffic and admin addresses.
pub type Announce = Box<dyn FnOnce(SocketAddr, SocketAddr) + Send>;

/// `graygate run --config PATH`, telling `announce` where it listens.
pub fn run_gateway(path: PathBuf, announce: Option<Announce>) -> ExitCode {
    run(path, Role::Gateway, false, announce)
}

fn run(path: PathBuf, role: Role, no_watch: bool, announce: Option<Announce>) -> ExitCode {
    let shared = Arc::new(Shared::new());
    let reloader = match Reloader::start(path, shared) {
        Ok(reloader) => Arc::new(reloader),
        Err(errors) => {
            report(&errors);
            return ExitCode::from(1);
        }
    };
    let snapshot = reloader.live().load();
    if role == Role::Controller {
        let judges_fleet = snapshot
            .rollout
            .as_ref()
            .is_some_and(|tap| matches!(tap.plan.source, crate::rollout::Source::Prometheus(_)));
        if !judges_fleet {
            eprintln!(
                "{}: graygate controller judges a fleet's rollout from Prometheus and serves no traffic: give [rollout] with [rollout.judge] source = \"prometheus\"",
                reloader.path().display()
            );
            return ExitCode::from(1);
        }
        drop(snapshot);
        return with_control_runtime(control_plane_only(reloader));
    }
    let (workers, listen, admin_listen, metrics_listen) = (
        snapshot.file.server.workers,
        snapshot.file.server.listen,
        snapshot.file.server.admin_listen,
        snapshot.file.server.metrics_listen,
    );
    let settings = ServerSettings::from_config(&snapshot.file);
    let tls_listen = snapshot.file.server.tls.as_ref().map(|tls| tls.listen);
    let watch = snapshot.file.server.watch && !no_watch;
    drop(snapshot);
    let workers = match workers {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    // The control plane (signals, reloads, admin, health checks) runs here, on the
    // main thread; traffic runs on the workers.
    with_control_runtime(async move {
        let plain = match workers::bind(listen, workers) {
            Ok(listeners) => listeners,
            Err(err) => return cannot_listen("server.listen", listen, &err),
        };
        let tls = match tls_listen {
            None => None,
            Some(address) => match workers::bind(address, workers) {
                Ok(listeners) => Some(listeners),
                Err(err) => return cannot_listen("server.tls.listen", address, &err),
            },
        };
        let (admin_listener, metrics_listener) =
            match bind_control(admin_listen, metrics_listen).await {
                Ok(listeners) => listeners,
                Err(code) => return code,
            };
        let (trigger, shutdown) = shutdown::channel();
        let background = (
            shutdown::on_signals(trigger),
            reload::on_sighup(Arc::clone(&reloader)),
            reload::on_sigusr1(Arc::clone(&reloader)),
        );
        match background {
            (Ok(signals), Ok(hangups), Ok(reopens)) => {
                tokio::spawn(signals);
                tokio::spawn(hangups);
                tokio::spawn(reopens);
            }
            (Err(err), _, _) | (_, Err(err), _) | (_, _, Err(err)) => {
                error!(error = %err, "cannot install signal handlers");
                return ExitCode::from(1);
            }
        }
        if watch {
            match watch::watch_files(Arc::clone(&reloader)) {
                Ok(watcher) => drop(tokio::spawn(watcher)),
                Err(err) => {
                    error!(error = %err, "cannot watch the config files");
                    return ExitCode::from(1);
                }
            }
        } else {
            info!("not watching the config files (--no-watch or server.watch = false): reload with SIGHUP or POST /admin/reload");
        }
        // Endpoint names resolve before the first request, then on their schedule.
        control::dns::resolve_unknown(&reloader).await;
        tokio::spawn(control::dns::run(Arc::clone(&reloader), shutdown.clone()));
        let (admin_address, metrics_address) =
            serve_control(admin_listener, metrics_listener, &reloader, &shutdown);
        let live = Arc::clone(reloader.live());
        tokio::spawn(active::run(
            move || Arc::clone(&live.load().pools),
            shutdown.clone(),
        ));
        tokio::spawn(control::rollout::run(
            Arc::clone(&reloader),
            shutdown.clone(),
        ));
        let listen_address = plain[0].local_addr().unwrap_or(listen);
        let tls_address = tls.as_ref().and_then(|t| t[0].local_addr().ok());
        let proxy = Arc::new(Proxy::new(
            Arc::clone(reloader.live()),
            Arc::clone(reloader.shared()),
        ));
        let mut tls = tls.map(Vec::into_iter);
        let per_worker = plain
            .into_iter()
            .map(|plain| workers::WorkerListeners {
                plain,
                tls: tls.as_mut().and_then(Iterator::next),
            })
            .collect();
        let finished = match workers::start(per_worker, &proxy, &settings, &shutdown) {
            Ok(finished) => finished,
            Err(err) => {
                error!(error = %err, "cannot start the workers");
                return ExitCode::from(1);
            }
        };
        info!(
            listen = %listen_address,
            admin = %admin_address,
            metrics = metrics_address.map(|a| a.to_string()),
            tls = tls_address.map(|a| a.to_string()),
            workers,
            "graygate serving"
        );
        if let Some(announce) = announce {
            announce(listen_address, admin_address);
        }
        for worker in finished {
            let _ = worker.await;
        }
        ExitCode::SUCCESS
    })
}

/// `graygate controller`: signals, reloads, the watcher, the admin listener and the
/// rollout's clock, until SIGTERM.
async fn control_plane_only(reloader: Arc<Reloader>) -> ExitCode {
    let (admin_listen, metrics_listen, watch) = {
        let snapshot = reloader.live().load();
        (
            snapshot.file.server.admin_listen,
            snapshot.file.server.metrics_listen,
            snapshot.file.server.watch,
        )
    };
    let (admin_listener, metrics_listener) = match bind_control(admin_listen, metrics_listen).await
    {
        Ok(listeners) => listeners,
        Err(code) => return code,
    };
    let (trigger, mut shutdown) = shutdown::channel();
    let watcher = watch.then(|| watch::watch_files(Arc::clone(&reloader)));
    match (
        shutdown::on_signals(trigger),
        reload::on_sighup(Arc::clone(&reloader)),
        watcher.transpose(),
    ) {
        (Ok(signals), Ok(hangups), Ok(watcher)) => {
            tokio::spawn(signals);
            tokio::spawn(hangups);
            if let Some(watcher) = watcher {
                tokio::spawn(watcher);
            }
        }
        _ => {
            error!("cannot install signal handlers or watch the config files");
            return ExitCode::from(1);
        }
    }
    let (admin_address, metrics_address) =
        serve_control(admin_listener, metrics_listener, &reloader, &shutdown);
    tokio::spawn(control::rollout::run(
        Arc::clone(&reloader),
        shutdown.clone(),
    ));
    info!(
        admin = %admin_address,
        metrics = metrics_address.map(|a| a.to_string()),
        "graygate controller serving"
    );
    shutdown.wait().await;
    ExitCode::SUCCESS
}

/// Logs why `address` (the config's `key`) cannot be listened on; exit code 1. An
/// address in use is another process's, since graygate's own sockets share a port
/// only among its workers.
fn cannot_listen(key: &str, address: SocketAddr, err: &std::io::Error) -> ExitCode {
    let hint = if err.kind() == std::io::ErrorKind::AddrInUse {
        ": another process already listens there (another graygate?)"
    } else {
        ""
    };
    error!(%address, "cannot listen on {address} ({key}): {err}{hint}");
    ExitCode::from(1)
}

/// Binds the admin listener and the metrics listener, if any: plain sockets, without
/// `SO_REUSEPORT`, so an address in use fails here.
async fn bind_control(
    admin: SocketAddr,
    metrics: Option<SocketAddr>,
) -> Result<(TcpListener, Option<TcpListener>), ExitCode> {
    let admin = TcpListener::bind(admin)
        .await
        .map_err(|err| cannot_listen("server.admin_listen", admin, &err))?;
    let metrics = match metrics {
        None => None,
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .map_err(|err| cannot_listen("server.metrics_listen", address, &err))?,
        ),
    };
    Ok((admin, metrics))
}

/// Spawns the admin and metrics listeners; their bound addresses.
fn serve_control(
    admin: TcpListener,
    metrics: Option<TcpListener>,
    reloader: &Arc<Reloader>,
    shutdown: &shutdown::Shutdown,
) -> (SocketAddr, Option<SocketAddr>) {
    let admin_address = admin.local_addr().expect("a bound listener has an address");
    tokio::spawn(admin::serve(
        admin,
        admin::Scope::Admin,
        Arc::clone(reloader),
        shutdown.clone(),
    ));
    let metrics_address = metrics.map(|listener| {
        let address = listener
            .local_addr()
            .expect("a bound listener has an address");
        tokio::spawn(admin::serve(
            listener,
            admin::Scope::Metrics,
            Arc::clone(reloader),
            shutdown.clone(),
        ));
        address
    });
    (admin_address, metrics_address)
}

/// The main thread's runtime, for the control plane.
fn with_control_runtime(main: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    with_control_runtime_value(main).unwrap_or(ExitCode::from(1))
}

/// Runs `main` on a runtime like the control plane's; `None` if none can be made.
fn with_control_runtime_value<T>(main: impl std::future::Future<Output = T>) -> Option<T> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => Some(runtime.block_on(main)),
        Err(err) => {
            eprintln!("cannot start the runtime: {err}");
            None
        }
    }
}

/// Builds the multi-threaded runtime with `workers` threads (0: one per core) and
/// runs `main` on it.
fn with_runtime(workers: usize, main: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if workers > 0 {
        builder.worker_threads(workers);
    }
    match builder.enable_all().build() {
        Ok(runtime) => runtime.block_on(main),
        Err(err) => {
            eprintln!("cannot start the runtime: {err}");
            ExitCode::from(1)
        }
    }
}
