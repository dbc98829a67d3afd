//! Thread per core: `[server] workers = N` runs N worker threads, each accepting on
//! its own `SO_REUSEPORT` socket; `max_connections` still bounds the whole process, and
//! SIGTERM drains every worker. Against the real binary on 127.0.0.1.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The gateway's worker threads (`graygate-worker-N`, cut to 15 bytes by the kernel)
/// and the voluntary context switches of each: a worker that served connections has
/// slept and woken for each of them, an idle one barely at all.
fn worker_switches(pid: u32) -> Vec<u64> {
    let mut switches = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("read /proc tasks") {
        let path = task.expect("task entry").path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if !comm.starts_with("graygate-worke") {
            continue;
        }
        let status = std::fs::read_to_string(path.join("status")).unwrap_or_default();
        let voluntary = status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        switches.push(voluntary);
    }
    switches
}

/// One request on a fresh connection that the client then closes.
async fn one_request(addr: SocketAddr) -> String {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.expect("read");
        String::from_utf8_lossy(&answer).into_owned()
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .expect("answer within 5 s")
}

/// Three workers are three threads, new connections are spread over more than one of
/// them by the kernel, every request is answered, and SIGTERM ends them all.
#[tokio::test]
async fn connections_spread_over_the_workers_and_sigterm_ends_them_all() {
    let blue = Upstream::named("blue").await;
    let mut gw = Gateway::start(&one_pool_config(blue.addr, 3, ""));
    let before = worker_switches(gw.pid());
    assert_eq!(before.len(), 3, "three worker threads: {before:?}");

    for i in 0..90 {
        let answer = one_request(gw.addr).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "request {i}: {answer}");
        assert!(answer.ends_with("blue"), "request {i}: {answer}");
    }
    let after = worker_switches(gw.pid());
    let busy = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| **a >= **b + 10)
        .count();
    // With 90 connections hashed over 3 sockets, all on one has odds of about 3^-89.
    assert!(
        busy >= 2,
        "connections should reach several workers: switches before {before:?}, after {after:?}"
    );

    let status = std::process::Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let exit = gw
        .wait_exit(Duration::from_secs(5))
        .expect("exits within 5 s of SIGTERM");
    assert_eq!(exit.code(), Some(0), "exit status after SIGTERM");
}

/// `workers = 1` runs exactly one worker thread.
#[tokio::test]
async fn one_worker_is_one_thread() {
    let blue = Upstream::named("blue").await;
    let gw = Gateway::start(&one_pool_config(blue.addr, 1, ""));
    assert_eq!(worker_switches(gw.pid()).len(), 1);
    assert!(one_request(gw.addr).await.starts_with("HTTP/1.1 200"));
}

/// `max_connections` counts the connections of all workers together: with a limit of
/// two spread over four workers, a new connection waits until one of the two closes,
/// and is then served whichever worker's socket it arrived on. Ten rounds: a slot
/// handed to a worker whose own socket is empty would strand the waiting connection
/// about three times in four.
#[tokio::test]
async fn max_connections_is_one_limit_for_all_workers() {
    let blue = Upstream::named("blue").await;
    let gw = Gateway::start(&one_pool_config(blue.addr, 4, "max_connections = 2"));

    // A keep-alive connection, answered once and held open.
    async fn held(addr: SocketAddr) -> TcpStream {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("answer within 5 s")
            .expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        stream
    }
    let mut open = vec![held(gw.addr).await, held(gw.addr).await];

    for round in 0..10 {
        // Over the limit: accepted by the kernel, not served while both are held.
        let waiting = tokio::spawn(held(gw.addr));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !waiting.is_finished(),
            "round {round}: a connection was served over the limit"
        );
        drop(open.remove(0));
        let served = tokio::time::timeout(Duration::from_secs(3), waiting)
            .await
            .unwrap_or_else(|_| panic!("round {round}: not served within 3 s of a slot freeing"))
            .expect("task");
        open.push(served);
    }
}
