//! TLS termination end to end: ALPN h2 and http/1.1, TLS 1.2 and 1.3 only (a TLS 1.1
//! client is refused), and certificates that rotate with a reload, where a bad
//! certificate is a rejected reload that keeps the old one in force.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::version::{TLS12, TLS13};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

struct Cert {
    pem: String,
    key: String,
    der: CertificateDer<'static>,
}

fn cert() -> Cert {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    Cert {
        pem: certified.cert.pem(),
        key: certified.signing_key.serialize_pem(),
        der: certified.cert.der().clone(),
    }
}

fn tls_config(upstream: SocketAddr) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
tls = {{ listen = "127.0.0.1:0", cert = "cert.pem", key = "key.pem" }}

[pools.blue]
endpoints = ["{upstream}"]

[routing]
stable = "blue"
"#
    )
}

/// The TLS listener's address from the "graygate serving" log line.
fn tls_address(gw: &Gateway) -> SocketAddr {
    gw.logs()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find_map(|v| v["fields"]["tls"].as_str().and_then(|a| a.parse().ok()))
        .expect("the serving line names the TLS address")
}

async fn connect(
    addr: SocketAddr,
    trusted: &CertificateDer<'static>,
    alpn: &[&[u8]],
    tls12_only: bool,
) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&TLS12]
    } else {
        &[&TLS13, &TLS12]
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let stream = TcpStream::connect(addr).await.unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), stream)
        .await
        .expect("TLS handshake")
}

fn presented(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("a certificate")[0]
        .clone()
        .into_owned()
}

#[tokio::test]
async fn alpn_negotiates_h2_and_http11_and_requests_are_proxied() {
    tokio::time::timeout(STEP, async {
        let blue = Upstream::named("blue").await;
        let cert = cert();
        let gw = Gateway::start_with_files(
            &tls_config(blue.addr),
            &[("cert.pem", &cert.pem), ("key.pem", &cert.key)],
        );
        let addr = tls_address(&gw);

        let h2 = connect(addr, &cert.der, &[b"h2", b"http/1.1"], false).await;
        assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        assert_eq!(
            h2.get_ref().1.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(h2))
                .await
                .unwrap();
        tokio::spawn(connection);
        let request = Request::get("https://localhost/over-h2")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.into_body().collect().await.unwrap().to_bytes(),
            "blue"
        );
        let seen = blue.last();
        assert_eq!(seen.headers["x-forwarded-proto"], "https");
        assert_eq!(seen.headers["host"], "localhost");

        let h1 = connect(addr, &cert.der, &[b"http/1.1"], true).await;
        assert_eq!(h1.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        assert_eq!(
            h1.get_ref().1.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_2)
        );
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(h1))
            .await
            .unwrap();
        tokio::spawn(connection);
        let request = Request::get("/over-h1")
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(blue.last().uri.path(), "/over-h1");
    })
    .await
    .expect("bounded");
}

/// A TLS 1.1 ClientHello (no supported_versions extension, one TLS 1.1-era suite).
fn tls11_client_hello() -> Vec<u8> {
    let mut hello = vec![0x03, 0x02]; // client_version TLS 1.1
    hello.extend_from_slice(&[7u8; 32]); // random
    hello.push(0); // session id
    hello.extend_from_slice(&[0x00, 0x02, 0x00, 0x2f]); // TLS_RSA_WITH_AES_128_CBC_SHA
    hello.extend_from_slice(&[0x01, 0x00]); // compression: null
    let mut handshake = vec![0x01, 0x00, 0x00, hello.len() as u8];
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, handshake.len() as u8];
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test]
async fn a_tls11_client_is_refused() {
    tokio::time::timeout(STEP, async {
        let blue = Upstream::named("blue").await;
        let cert = cert();
        let gw = Gateway::start_with_files(
            &tls_config(blue.addr),
            &[("cert.pem", &cert.pem), ("key.pem", &cert.key)],
        );
        let mut stream = TcpStream::connect(tls_address(&gw)).await.unwrap();
        stream.write_all(&tls11_client_hello()).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(3),
            stream.read_to_end(&mut answer),
        )
        .await;
        // An alert record (21), never a handshake record (22) carrying a ServerHello.
        assert_eq!(answer.first(), Some(&0x15), "{answer:02x?}");
        assert!(blue.requests().is_empty());
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn certificates_rotate_on_reload_and_a_bad_one_is_rejected() {
    tokio::time::timeout(STEP, async {
        let blue = Upstream::named("blue").await;
        let (first, second) = (cert(), cert());
        let gw = Gateway::start_with_files(
            &tls_config(blue.addr),
            &[("cert.pem", &first.pem), ("key.pem", &first.key)],
        );
        let addr = tls_address(&gw);
        assert_eq!(
            presented(&connect(addr, &first.der, &[b"h2"], false).await),
            first.der
        );

        // Rotate: write the new pair, reload; new handshakes present it.
        write(&gw.dir.path().join("key.pem"), &second.key);
        write(&gw.dir.path().join("cert.pem"), &second.pem);
        let reload = send(
            Request::post(gw.admin_url("/admin/reload"))
                .body(Default::default())
                .unwrap(),
        )
        .await;
        assert_eq!(reload.status, StatusCode::OK, "{}", reload.body);
        assert_eq!(
            presented(&connect(addr, &second.der, &[b"h2"], false).await),
            second.der
        );

        // A broken certificate is a rejected reload; the good one stays in force.
        write(
            &gw.dir.path().join("cert.pem"),
            "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
        );
        let reload = send(
            Request::post(gw.admin_url("/admin/reload"))
                .body(Default::default())
                .unwrap(),
        )
        .await;
        assert_eq!(
            reload.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            reload.body
        );
        assert!(reload.body.contains("server.tls.cert"), "{}", reload.body);
        assert_eq!(
            presented(&connect(addr, &second.der, &[b"h2"], false).await),
            second.der
        );
    })
    .await
    .expect("bounded");
}

/// A sticky cookie made for a visitor over TLS is `Secure`.
#[tokio::test]
async fn a_sticky_cookie_set_over_tls_is_secure() {
    let upstream = Upstream::named("blue").await;
    let cert = cert();
    let config = tls_config(upstream.addr).replace(
        "stable = \"blue\"",
        "stable = \"blue\"\nsticky_cookie = { name = \"gg_uid\", max_age = \"1h\" }",
    );
    let gw = Gateway::start_with_files(&config, &[("cert.pem", &cert.pem), ("key.pem", &cert.key)]);
    let stream = connect(tls_address(&gw), &cert.der, &[b"http/1.1"], false).await;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let response = sender
        .send_request(
            Request::get("/")
                .header("host", "localhost")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        cookie.starts_with("gg_uid=")
            && cookie.ends_with("; Max-Age=3600; HttpOnly; SameSite=Lax; Secure"),
        "{cookie}"
    );
}
