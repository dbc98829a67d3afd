//! An upstream's framing never reaches a client: on every client path (the gateway's
//! own HTTP/1.1 loop, hyper's HTTP/1.1 after a hand-off, h2c, and TLS) the length a
//! client is told is the gateway's own. Upstream answers with `Content-Length: 5, 5`,
//! repeated equal lines, `Content-Length` beside `Transfer-Encoding`, and a body longer
//! or shorter than announced.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use common::raw::{Reply, Scripted};
use common::*;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[derive(Debug, Clone, Copy)]
enum Path {
    /// A bodiless HTTP/1.1 request: the gateway's own loop.
    Own,
    /// A request with a body: hyper's HTTP/1.1 serves the connection.
    Hyper,
    H2c,
    /// HTTP/1.1 over the TLS listener.
    Tls,
}

const PATHS: [Path; 4] = [Path::Own, Path::Hyper, Path::H2c, Path::Tls];

/// The upstream's answer for each case, by request path.
fn answer(path: &str) -> Reply {
    let head = "HTTP/1.1 200 OK\r\n";
    match path {
        "/list" => Reply::Send(format!("{head}content-length: 5, 5\r\n\r\nhello").into_bytes()),
        "/repeated" => Reply::Send(
            format!("{head}content-length: 5\r\ncontent-length: 5\r\n\r\nhello").into_bytes(),
        ),
        "/cl-te" => Reply::Send(
            format!("{head}content-length: 100\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
                .into_bytes(),
        ),
        "/longer" => Reply::Send(format!("{head}content-length: 5\r\n\r\nhelloEXTRA").into_bytes()),
        "/shorter" => Reply::SendThenCloseIdle {
            bytes: format!("{head}content-length: 10\r\n\r\nhello").into_bytes(),
            after: std::time::Duration::ZERO,
            reset: false,
        },
        _ => Reply::Send(format!("{head}content-length: 2\r\n\r\nok").into_bytes()),
    }
}

struct Setup {
    gw: Gateway,
    tls: SocketAddr,
    cert: CertificateDer<'static>,
    _upstream: Scripted,
}

async fn setup() -> Setup {
    let upstream = Scripted::start(|request| answer(request.path())).await;
    let TlsGateway { gw, tls, cert } = TlsGateway::start(upstream.addr, "");
    Setup {
        gw,
        tls,
        cert,
        _upstream: upstream,
    }
}

/// What a client got: the head, and the body or why reading it failed.
type Got = Result<(HeaderMap, Bytes), String>;

async fn fetch(setup: &Setup, path: Path, method: Method, target: &str) -> Got {
    let body = match path {
        Path::Hyper => Bytes::from_static(b"a body sends the connection to hyper"),
        _ => Bytes::new(),
    };
    // HTTP/1.1 in origin form (an absolute-form target would go to hyper); HTTP/2
    // names the authority itself.
    let uri = match path {
        Path::H2c => format!("http://localhost{target}"),
        _ => target.to_string(),
    };
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "localhost")
        .body(Full::new(body))
        .unwrap();
    let exchange = async {
        let response = match path {
            Path::Own | Path::Hyper => {
                let stream = TcpStream::connect(setup.gw.addr).await.unwrap();
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .unwrap();
                tokio::spawn(connection);
                sender.send_request(request).await
            }
            Path::H2c => {
                let stream = TcpStream::connect(setup.gw.addr).await.unwrap();
                let (mut sender, connection) = hyper::client::conn::http2::handshake(
                    TokioExecutor::new(),
                    TokioIo::new(stream),
                )
                .await
                .unwrap();
                tokio::spawn(connection);
                let (mut parts, body) = request.into_parts();
                parts.headers.remove("host");
                sender.send_request(Request::from_parts(parts, body)).await
            }
            Path::Tls => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(setup.cert.clone()).unwrap();
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let mut config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                let stream = TcpStream::connect(setup.tls).await.unwrap();
                let tls = TlsConnector::from(Arc::new(config))
                    .connect(ServerName::try_from("localhost").unwrap(), stream)
                    .await
                    .unwrap();
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tls))
                        .await
                        .unwrap();
                tokio::spawn(connection);
                sender.send_request(request).await
            }
        };
        let (head, body) = response.map_err(|e| format!("response: {e}"))?.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok((head.headers, body))
    };
    tokio::time::timeout(STEP, exchange)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

fn lengths(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("content-length")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_path_is_told_the_gateways_own_length() {
    let setup = setup().await;
    for path in PATHS {
        for case in ["/list", "/repeated", "/longer"] {
            let (headers, body) = fetch(&setup, path, Method::GET, case)
                .await
                .unwrap_or_else(|e| panic!("{path:?} {case}: {e}"));
            assert_eq!(body, "hello", "{path:?} {case}");
            // HTTP/2 may state the length or not; HTTP/1.1 must, once.
            let told = lengths(&headers);
            match path {
                Path::H2c => assert!(
                    told.is_empty() || told == ["5"],
                    "{path:?} {case}: {told:?}"
                ),
                _ => assert_eq!(told, ["5"], "{path:?} {case}"),
            }
        }
        // Content-Length beside Transfer-Encoding: the chunks frame the body; the
        // upstream's 100 is never told.
        let (headers, body) = fetch(&setup, path, Method::GET, "/cl-te")
            .await
            .unwrap_or_else(|e| panic!("{path:?} /cl-te: {e}"));
        assert_eq!(body, "hello", "{path:?}");
        assert!(!lengths(&headers).contains(&"100".to_string()), "{path:?}");
        // A body shorter than announced is never passed off as whole.
        let short = fetch(&setup, path, Method::GET, "/shorter").await;
        assert!(
            short.is_err(),
            "{path:?}: a cut body looked whole: {short:?}"
        );
        // A HEAD answer keeps the length it describes, folded to one value.
        let (headers, body) = fetch(&setup, path, Method::HEAD, "/list")
            .await
            .unwrap_or_else(|e| panic!("{path:?} HEAD: {e}"));
        assert!(body.is_empty());
        assert_eq!(lengths(&headers), ["5"], "{path:?} HEAD");
    }
}
