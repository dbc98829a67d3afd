//! `--no-watch` and `server.watch = false`: nginx's "edit, check, reload", where a
//! saved file is not a deploy. An edit changes nothing until `SIGHUP` (or
//! `POST /admin/reload`). Real files, a real signal, real sockets.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// Long enough for the watcher (100 ms debounce, at most 1 s) to have reloaded, were
/// it watching.
const SETTLE: Duration = Duration::from_millis(1500);

fn config_to(pools: &Pools, stable: &str, extra_server: &str) -> String {
    config(pools.blue.addr, pools.green.addr, pools.canary.addr, "").replacen(
        "shutdown_timeout = \"5s\"\n",
        &format!("shutdown_timeout = \"5s\"\n{extra_server}"),
        1,
    ) + &format!("[routing]\nstable = \"{stable}\"\n")
}

/// Edits the file to send everything to green, checks that blue still answers after
/// the watcher would have reloaded, then sends SIGHUP and sees green.
async fn an_edit_waits_for_sighup(gw: &Gateway, pools: &Pools) {
    assert_eq!(get(&gw.url("/"), &[]).await.body, "blue");
    write(&gw.config_path, &config_to(pools, "green", ""));
    tokio::time::sleep(SETTLE).await;
    assert_eq!(
        get(&gw.url("/"), &[]).await.body,
        "blue",
        "a save is not a deploy; logs:\n{}",
        gw.logs()
    );
    assert!(!gw.logs().contains("config reloaded"), "{}", gw.logs());
    let status = Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let green = wait_until(STEP, || {
        gw.logs().contains("config reloaded") && gw.logs().contains("SIGHUP")
    })
    .await;
    assert!(green, "{}", gw.logs());
    assert_eq!(get(&gw.url("/"), &[]).await.body, "green");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_watch_an_edit_changes_nothing_until_sighup() {
    let pools = Pools::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("graygate.toml");
    write(&path, &config_to(&pools, "blue", ""));
    let gw = Gateway::start_at_with_args(dir, path, &["--no-watch"]);
    assert!(
        gw.logs().contains("not watching the config files"),
        "{}",
        gw.logs()
    );
    an_edit_waits_for_sighup(&gw, &pools).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_server_watch_false_an_edit_changes_nothing_until_sighup() {
    let pools = Pools::start().await;
    let gw = Gateway::start(&config_to(&pools, "blue", "watch = false\n"));
    an_edit_waits_for_sighup(&gw, &pools).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_an_edit_is_applied() {
    let pools = Pools::start().await;
    let gw = Gateway::start(&config_to(&pools, "blue", ""));
    assert_eq!(get(&gw.url("/"), &[]).await.body, "blue");
    write(&gw.config_path, &config_to(&pools, "green", ""));
    let deadline = std::time::Instant::now() + STEP;
    while get(&gw.url("/"), &[]).await.body != "green" {
        assert!(std::time::Instant::now() < deadline, "{}", gw.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
