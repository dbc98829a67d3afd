//! Every client connection is bounded, a tunnel's too: tunnels hold their slot of
//! `max_connections` and their place in `graygate_active_connections` for their whole
//! life, close when idle (`limits.tunnel_idle_timeout`) and at `shutdown_timeout`; a
//! client that stops reading is cut at `limits.send_timeout` on every client path.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::raw::{Reply, Scripted};
use common::*;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const UPGRADE: &[u8] =
    b"GET /ws HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n";
const SWITCHED: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n";

/// An upstream that switches every request to an echo tunnel.
async fn echo_upstream() -> Scripted {
    Scripted::start(|_| Reply::Tunnel(SWITCHED.to_vec())).await
}

/// Opens a tunnel through the gateway and returns it once the 101 has arrived.
async fn open_tunnel(addr: SocketAddr) -> TcpStream {
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(UPGRADE).await.unwrap();
    let head = read_head(&mut client).await.expect("a 101");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    client
}

async fn echo(tunnel: &mut TcpStream, text: &[u8]) -> bool {
    if tunnel.write_all(text).await.is_err() {
        return false;
    }
    let mut back = vec![0u8; text.len()];
    matches!(
        tokio::time::timeout(STEP, tunnel.read_exact(&mut back)).await,
        Ok(Ok(_)) if back == text
    )
}

/// Whether the peer has closed `stream` within `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut scratch = [0u8; 64];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut scratch)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn three_hundred_tunnels_never_pass_max_connections() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let upstream = echo_upstream().await;
        let gw = Gateway::start(&one_pool_config(upstream.addr, 1, "max_connections = 100"));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..300 {
            let (tx, addr) = (tx.clone(), gw.addr);
            tokio::spawn(async move {
                let tunnel = open_tunnel(addr).await;
                let _ = tx.send(tunnel);
            });
        }
        drop(tx);
        // The first 100 get their 101; the rest wait, unserved, for a slot.
        let mut open = Vec::new();
        while open.len() < 100 {
            open.push(
                tokio::time::timeout(STEP, rx.recv())
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        let more = tokio::time::timeout(Duration::from_millis(1500), rx.recv()).await;
        assert!(
            more.is_err(),
            "a 101st tunnel opened past max_connections = 100"
        );
        assert_eq!(metric(&gw, "graygate_active_connections", &[]).await, 100.0);
        assert_eq!(upstream.connections(), 100);
        assert!(echo(&mut open[0], b"still a tunnel").await);
        assert!(echo(&mut open[99], b"so is this one").await);

        // Closing 50 tunnels lets exactly 50 more in.
        open.drain(..50);
        for _ in 0..50 {
            open.push(
                tokio::time::timeout(STEP, rx.recv())
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        let more = tokio::time::timeout(Duration::from_millis(1500), rx.recv()).await;
        assert!(more.is_err(), "more tunnels than slots freed");
        assert!(
            wait_until(STEP, || upstream.connections() == 150).await,
            "{}",
            upstream.connections()
        );
        assert_eq!(metric(&gw, "graygate_active_connections", &[]).await, 100.0);
        assert!(echo(open.last_mut().unwrap(), b"a late tunnel works").await);

        // All closed: every waiting client gets through, and the gauge falls to 0.
        drop(open);
        let mut rest = 0;
        while let Ok(Some(tunnel)) = tokio::time::timeout(STEP, rx.recv()).await {
            rest += 1;
            drop(tunnel);
        }
        assert_eq!(rest, 150);
        assert_eq!(
            wait_metric(&gw, "graygate_active_connections", 0.0, STEP).await,
            0.0
        );
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn a_tunnel_idle_both_ways_is_closed_and_one_in_use_is_not() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let upstream = echo_upstream().await;
        let gw = Gateway::start(&one_pool_config(
            upstream.addr,
            1,
            "tunnel_idle_timeout = \"600ms\"",
        ));
        let mut tunnel = open_tunnel(gw.addr).await;
        // Bytes every 200 ms for 2 s: never idle for 600 ms.
        for round in 0..10 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(echo(&mut tunnel, b"keep me").await, "cut in round {round}");
        }
        let quiet = Instant::now();
        assert!(closed_within(&mut tunnel, Duration::from_secs(5)).await);
        let waited = quiet.elapsed();
        assert!(
            waited >= Duration::from_millis(500),
            "closed after {waited:?}, before the idle timeout"
        );
        assert!(
            wait_until(STEP, || upstream.connections() == 1).await,
            "the upstream saw a second connection"
        );
        assert_eq!(
            wait_metric(&gw, "graygate_active_connections", 0.0, STEP).await,
            0.0
        );
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn sigterm_with_an_open_tunnel_drains_it_then_exits_within_shutdown_timeout() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let upstream = echo_upstream().await;
        let config = one_pool_config(upstream.addr, 1, "")
            .replace("shutdown_timeout = \"5s\"", "shutdown_timeout = \"2s\"");
        let mut gw = Gateway::start(&config);
        let mut tunnel = open_tunnel(gw.addr).await;
        assert!(echo(&mut tunnel, b"before").await);
        let signalled = Instant::now();
        // SAFETY: a plain kill(2) on the child's pid.
        assert_eq!(unsafe { libc::kill(gw.pid() as i32, libc::SIGTERM) }, 0);
        // The drain leaves an open tunnel working...
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(echo(&mut tunnel, b"during the drain").await);
        // ...until shutdown_timeout, when the process exits and the tunnel closes.
        let status = tokio::task::spawn_blocking(move || {
            let status = gw.wait_exit(Duration::from_secs(6));
            (status, gw)
        })
        .await
        .unwrap();
        let exited = signalled.elapsed();
        assert!(status.0.is_some(), "still running {exited:?} after SIGTERM");
        assert!(
            exited >= Duration::from_millis(1800),
            "exited after {exited:?}: the drain did not wait for the tunnel"
        );
        assert!(
            exited <= Duration::from_millis(4000),
            "exited after {exited:?}, well past shutdown_timeout = 2s"
        );
        assert!(closed_within(&mut tunnel, Duration::from_secs(2)).await);
    })
    .await
    .expect("bounded");
}

/// The client paths a response can leave by.
#[derive(Debug, Clone, Copy)]
enum Path {
    /// A bodiless HTTP/1.1 GET: the gateway's own loop.
    Own,
    /// A POST: hyper's HTTP/1.1.
    Hyper,
    /// HTTP/2 with prior knowledge.
    H2c,
    /// HTTP/1.1 over the TLS listener.
    Tls,
}

/// A body far larger than the sockets' buffers, so a client that stops reading
/// stops the gateway's writes.
const BIG: usize = 48 << 20;

fn big_answer() -> Vec<u8> {
    let mut answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {BIG}\r\n\r\n").into_bytes();
    answer.resize(answer.len() + BIG, b'x');
    answer
}

/// An HTTP/2 frame header and payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    frame.extend_from_slice(&[kind, flags]);
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// An h2c GET for `/big` from a client that grants the server every byte of window
/// up front (so only TCP can stop the server) and then never reads.
fn h2c_request() -> Vec<u8> {
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // SETTINGS_INITIAL_WINDOW_SIZE = 2^31 - 1.
    bytes.extend(h2_frame(0x4, 0, 0, &[0, 4, 0x7f, 0xff, 0xff, 0xff]));
    bytes.extend(h2_frame(0x8, 0, 0, &0x7fff_0000u32.to_be_bytes()));
    // :method GET, :scheme http, :path /big, :authority localhost (HPACK literals).
    let mut block = vec![0x82, 0x86, 0x44, 4];
    block.extend_from_slice(b"/big");
    block.extend_from_slice(&[0x41, 9]);
    block.extend_from_slice(b"localhost");
    bytes.extend(h2_frame(0x1, 0x5, 1, &block));
    bytes
}

/// Sends the request for the big answer on `path`, then reads a byte a second (HTTP/1.1
/// over plain TCP) or nothing at all (h2c and TLS, whose framing would otherwise drain
/// a record or a frame per read). The returned task holds the connection open.
async fn slow_client(path: Path, addr: SocketAddr, tls: SocketAddr) -> tokio::task::JoinHandle<()> {
    match path {
        Path::Own | Path::Hyper | Path::H2c => {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let request: Vec<u8> = match path {
                Path::Own => b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
                Path::Hyper => {
                    b"POST /big HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n\r\nbody"
                        .to_vec()
                }
                Path::H2c => h2c_request(),
                Path::Tls => unreachable!(),
            };
            stream.write_all(&request).await.unwrap();
            let reads = !matches!(path, Path::H2c);
            tokio::spawn(async move {
                let mut byte = [0u8; 1];
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if reads && matches!(stream.read(&mut byte).await, Ok(0) | Err(_)) {
                        return;
                    }
                }
            })
        }
        Path::Tls => {
            let mut config = tls_client_config();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let stream = TcpStream::connect(tls).await.unwrap();
            let mut stream = TlsConnector::from(Arc::new(config))
                .connect(ServerName::try_from("localhost").unwrap(), stream)
                .await
                .unwrap();
            stream
                .write_all(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .await
                .unwrap();
            stream.flush().await.unwrap();
            tokio::spawn(async move {
                let _held = stream;
                std::future::pending::<()>().await
            })
        }
    }
}

/// A client config that trusts any certificate: the test's own, self-signed.
fn tls_client_config() -> rustls::ClientConfig {
    #[derive(Debug)]
    struct AnyCert;
    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth()
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_at_send_timeout_on_every_path() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let answer = Arc::new(big_answer());
        let upstream = {
            let answer = Arc::clone(&answer);
            Scripted::start(move |_| Reply::Send(answer.to_vec())).await
        };
        let TlsGateway { gw, tls, .. } = TlsGateway::start(upstream.addr, "send_timeout = \"1s\"");
        for (nth, path) in [Path::Own, Path::Hyper, Path::H2c, Path::Tls]
            .into_iter()
            .enumerate()
        {
            let started = Instant::now();
            let client = slow_client(path, gw.addr, tls).await;
            // Cut: counted as the client's, and the connection's slot is free again.
            let mut cut = false;
            while started.elapsed() < Duration::from_secs(20) {
                let timeouts = metric(
                    &gw,
                    "graygate_client_errors_total",
                    &[("kind", "send_timeout")],
                )
                .await;
                let active = metric(&gw, "graygate_active_connections", &[]).await;
                if timeouts == (nth + 1) as f64 && active == 0.0 {
                    cut = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(
                cut,
                "{path:?}: a client that stopped reading still holds its connection after {:?} \
                 (send timeouts {}, active {}, upstream requests {}); logs:\n{}",
                started.elapsed(),
                metric(
                    &gw,
                    "graygate_client_errors_total",
                    &[("kind", "send_timeout")]
                )
                .await,
                metric(&gw, "graygate_active_connections", &[]).await,
                upstream.received().len(),
                gw.logs()
            );
            client.abort();
        }
        // Each cut dropped its upstream response too: the upstream was not left writing.
        assert_eq!(upstream.received().len(), 4);
    })
    .await
    .expect("bounded");
}
