//! A demo upstream: answers every request with its pool's name and version, and can be
//! told to misbehave. `graygate demo` runs three in-process; `graygate demo-upstream`
//! runs one as a process of its own (the docker-compose stack's `blue`, `green` and
//! `canary`), so the stack needs no other image.
//!
//! - `GET /healthz`: 200 `ok`, always (a broken release often still looks alive; the
//!   gateway's metrics and its rollout judge are what catch it).
//! - anything else: after `latency` (scaled by a random factor in 0.5..1.5, so
//!   latencies spread as real ones do), a share `error_rate` of requests gets 500,
//!   the rest 200 `<name> <version>`, with `x-demo-pool` and `x-demo-version`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::debug;

use crate::shutdown::Shutdown;

/// What an upstream answers, and how it misbehaves.
#[derive(Debug, Clone, PartialEq)]
pub struct Behaviour {
    pub name: String,
    pub version: Option<String>,
    /// The share of requests answered 500, in 0..=1.
    pub error_rate: f64,
    /// Added before each answer (scaled by a random factor in 0.5..1.5).
    pub latency: Duration,
}

impl Behaviour {
    /// What a healthy upstream of pool `name` answers.
    pub fn healthy(name: &str, version: Option<&str>) -> Behaviour {
        Behaviour {
            name: name.to_string(),
            version: version.map(str::to_string),
            error_rate: 0.0,
            latency: Duration::ZERO,
        }
    }

    /// The body of a good answer: the pool's name, then its version if any.
    pub fn body(&self) -> String {
        match &self.version {
            Some(version) => format!("{} {version}\n", self.name),
            None => format!("{}\n", self.name),
        }
    }

    /// The answer to one request; `draw` is uniform in [0, 1), for the error share.
    fn answer(&self, path: &str, draw: f64) -> Response<Full<Bytes>> {
        let (status, body) = if path == "/healthz" {
            (StatusCode::OK, "ok\n".to_string())
        } else if draw < self.error_rate {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "{} failing on purpose (error rate {})\n",
                    self.name, self.error_rate
                ),
            )
        } else {
            (StatusCode::OK, self.body())
        };
        let mut response = Response::builder()
            .status(status)
            .header("content-type", "text/plain; charset=utf-8")
            .header("x-demo-pool", &self.name);
        if let Some(version) = &self.version {
            response = response.header("x-demo-version", version);
        }
        response
            .body(Full::new(Bytes::from(body)))
            .expect("names and versions are valid header values")
    }

    /// The delay before one answer.
    fn delay(&self, path: &str) -> Duration {
        if path == "/healthz" || self.latency.is_zero() {
            return Duration::ZERO;
        }
        self.latency.mul_f64(0.5 + fastrand::f64())
    }
}

/// Binds `listen` and serves `behaviour` until `shutdown`; the bound address.
pub async fn start(
    listen: SocketAddr,
    behaviour: Behaviour,
    shutdown: Shutdown,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen).await?;
    let address = listener.local_addr()?;
    tokio::spawn(serve(listener, Arc::new(behaviour), shutdown));
    Ok(address)
}

async fn serve(listener: TcpListener, behaviour: Arc<Behaviour>, mut shutdown: Shutdown) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    debug!(error = %err, "demo upstream accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => return,
        };
        let behaviour = Arc::clone(&behaviour);
        let service = service_fn(move |request: Request<Incoming>| {
            let behaviour = Arc::clone(&behaviour);
            async move {
                let path = request.uri().path();
                let delay = behaviour.delay(path);
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Ok::<_, Infallible>(behaviour.answer(path, fastrand::f64()))
            }
        });
        tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_name_and_version_and_fails_its_share() {
        let mut b = Behaviour::healthy("canary", Some("v2"));
        assert_eq!(b.body(), "canary v2\n");
        assert_eq!(Behaviour::healthy("blue", None).body(), "blue\n");
        let ok = b.answer("/", 0.0);
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()["x-demo-version"], "v2");
        b.error_rate = 0.25;
        assert_eq!(
            b.answer("/x", 0.2).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(b.answer("/x", 0.3).status(), StatusCode::OK);
        // Health checks always pass: the broken release is caught by its answers.
        b.error_rate = 1.0;
        assert_eq!(b.answer("/healthz", 0.0).status(), StatusCode::OK);
    }

    #[test]
    fn latency_spreads_around_the_setting() {
        let mut b = Behaviour::healthy("blue", None);
        assert_eq!(b.delay("/"), Duration::ZERO);
        b.latency = Duration::from_millis(100);
        for _ in 0..100 {
            let d = b.delay("/");
            assert!(d >= Duration::from_millis(50) && d < Duration::from_millis(150));
        }
        assert_eq!(b.delay("/healthz"), Duration::ZERO);
    }
}
