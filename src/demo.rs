//! `graygate demo`: three in-process upstreams that answer with their pool's name, and
//! the gateway in front of them running the embedded `config/demo.toml`.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::{error, info};

use crate::config::{self, ConfigFile, Source};
use crate::proxy::Proxy;
use crate::routing::bucket;
use crate::server::{self, ServerSettings};
use crate::shared::Shared;
use crate::shutdown;
use crate::snapshot::LiveConfig;

/// The demo's config, as shipped in `config/demo.toml`.
pub const DEMO_CONFIG: &str = include_str!("../config/demo.toml");

pub async fn run(listen: SocketAddr) -> ExitCode {
    match start(listen).await {
        Ok(code) => code,
        Err(message) => {
            error!("{message}");
            ExitCode::from(1)
        }
    }
}

async fn start(listen: SocketAddr) -> Result<ExitCode, String> {
    let source = Source {
        path: PathBuf::from("config/demo.toml (embedded)"),
        text: DEMO_CONFIG.to_string(),
    };
    let mut file = config::parse(&source).map_err(|e| e.to_string())?;
    let mut upstreams = Vec::new();
    for (name, pool) in file.pools.iter_mut() {
        let address = start_upstream(name.clone())
            .await
            .map_err(|e| format!("demo upstream {name}: {e}"))?;
        pool.endpoints = vec![address.to_string()];
        upstreams.push(format!("{name}={address}"));
    }
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let listen = listener.local_addr().map_err(|e| e.to_string())?;
    file.server.listen = listen;

    let shared = Arc::new(Shared::new());
    let mut snapshot = config::compile(file, &source, &shared).map_err(|e| e.to_string())?;
    snapshot.origin.generation = 1;
    let effective = toml::to_string_pretty(&*snapshot.file).map_err(|e| e.to_string())?;
    info!("demo config in force (config/demo.toml with in-process upstreams):\n{effective}");
    println!(
        "graygate demo: gateway on http://{listen}, upstreams {}",
        upstreams.join(", ")
    );
    println!("Each upstream answers with its pool's name; add -i to see x-graygate-pool and x-graygate-rule.");
    print!("{}", curl_lines(listen, &snapshot.file));
    println!("Stop with Ctrl-C.");

    let settings = ServerSettings::from_config(&snapshot.file);
    let (trigger, shutdown) = shutdown::channel();
    tokio::spawn(shutdown::on_signals(trigger).map_err(|e| e.to_string())?);
    let proxy = Arc::new(Proxy::new(Arc::new(LiveConfig::new(snapshot)), shared));
    server::serve(
        server::Listeners {
            plain: listener,
            tls: None,
        },
        proxy,
        settings.clone(),
        server::connection_slots(&settings),
        shutdown,
    )
    .await;
    Ok(ExitCode::SUCCESS)
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

/// A tiny upstream that answers every request with its pool's name.
async fn start_upstream(pool: String) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let body = Bytes::from(format!("{pool}\n"));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let body = body.clone();
            let service = service_fn(move |_: Request<Incoming>| {
                let body = body.clone();
                async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    Ok(address)
}
