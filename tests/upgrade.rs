//! Protocol upgrades end to end: a 101 from the upstream turns the client connection
//! into a tunnel; any other answer leaves it an ordinary HTTP connection.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An upstream that reads one request head, then either switches to an echo
/// protocol (`switch`) or answers 200 and keeps serving requests.
async fn upgrading_upstream(
    switch: bool,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut heads = Vec::new();
        loop {
            let Some(head) = read_head(&mut stream).await else {
                return heads;
            };
            heads.push(head);
            if switch {
                stream
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
                    .await
                    .unwrap();
                let mut buf = [0u8; 1024];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return heads,
                        Ok(n) => stream.write_all(&buf[..n]).await.unwrap(),
                    }
                }
            }
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nplain")
                .await
                .unwrap();
        }
    });
    (addr, task)
}

const UPGRADE: &[u8] =
    b"GET /ws HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n";

#[tokio::test]
async fn a_101_from_the_upstream_becomes_a_tunnel() {
    tokio::time::timeout(STEP, async {
        let (up, seen) = upgrading_upstream(true).await;
        let gw = Gateway::start(&config(up, up, up, "[routing]\nstable = \"blue\"\n"));
        let mut client = TcpStream::connect(gw.addr).await.unwrap();
        client.write_all(UPGRADE).await.unwrap();
        let head = read_head(&mut client).await.expect("a response head");
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("upgrade: echo"),
            "{head}"
        );
        client.write_all(b"ping through the tunnel").await.unwrap();
        let mut echoed = vec![0u8; 23];
        client.read_exact(&mut echoed).await.unwrap();
        assert_eq!(echoed, b"ping through the tunnel");
        drop(client);
        let heads = seen.await.unwrap();
        assert_eq!(heads.len(), 1);
        let head = heads[0].to_ascii_lowercase();
        assert!(
            head.contains("connection: upgrade") && head.contains("upgrade: echo"),
            "{head}"
        );
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn a_declined_upgrade_is_an_ordinary_request_and_pipelining_stays_http() {
    tokio::time::timeout(STEP, async {
        let (up, seen) = upgrading_upstream(false).await;
        let gw = Gateway::start(&config(up, up, up, "[routing]\nstable = \"blue\"\n"));
        let mut pipelined = UPGRADE.to_vec();
        pipelined
            .extend_from_slice(b"GET /second HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n");
        let answer = raw_exchange(gw.addr, &pipelined, Duration::from_secs(3)).await;
        assert_eq!(answer.matches("HTTP/1.1 200").count(), 2, "{answer}");
        assert!(!answer.contains(" 101 "), "{answer}");
        drop(gw);
        let heads = seen.await.unwrap();
        assert_eq!(heads.len(), 2, "{heads:?}");
        assert!(heads[1].starts_with("GET /second HTTP/1.1"), "{heads:?}");
    })
    .await
    .expect("bounded");
}
