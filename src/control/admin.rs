//! The admin listener, separate from traffic and on loopback by default:
//!
//! | endpoint | answer |
//! | --- | --- |
//! | `GET /metrics` | Prometheus text, or OpenMetrics when `Accept` asks for it |
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /readyz` | 200 when the stable pool has an available endpoint, else 503 |
//! | `GET /admin/config` | generation, `loaded_at`, sha256, `last_error`, effective config |
//! | `GET /admin/explain?header=name:value&path=/x` | the decision, as `graygate explain` |
//! | `POST /admin/reload` | 200 with the generation, or 422 with the errors |
//! | `GET /admin/rollout` | the rollout's state, steps, cohorts, analyses, transitions |
//! | `GET /admin/rollout/state` | the compact state a follower takes |
//! | `GET /admin/mirror` | each mirror's counts and its latest differences |
//! | `GET /admin/stats` | per pool and per rule figures for the status page (see [`super::stats`]) |
//! | `GET /admin/ui` | the live status page (see [`super::status_page`]) |
//! | `POST /admin/rollout/{pause,resume,promote,abort}` | 200 with the new state; 409 when it does not apply; 404 without a rollout |
//!
//! Other paths get 404; other methods on these paths get 405. With
//! `server.admin_token`, every `POST` and `/admin/config` need
//! `Authorization: Bearer <token>` (else 401). `server.metrics_listen` serves the
//! first three endpoints alone ([`Scope::Metrics`]).
//!
//! Each listener is bounded: [`MAX_CONNECTIONS`] connections (more wait in the accept
//! queue), `limits.header_read_timeout` for every request head, [`MAX_HEAD_BYTES`] of
//! head (431 beyond), [`MAX_BODY_BYTES`] of declared body (413 beyond; no endpoint
//! reads one), and a tower stack around the router: [`MAX_IN_FLIGHT`] requests answered
//! at once (503 beyond, at once) and [`ANSWER_TIMEOUT`] for each answer (503 after).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    ACCEPT, ALLOW, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER,
    WWW_AUTHENTICATE,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::{BoxError, ServiceBuilder};
use tracing::{debug, warn};

use super::reload::{Outcome, Reloader, RolloutAction};
use super::stats::{self, History, Reading};
use super::status_page;
use crate::metrics::{wants_openmetrics, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE};
use crate::rollout::controller::ActionError;
use crate::routing::RequestView;
use crate::shutdown::Shutdown;

type AdminResponse = Response<Full<Bytes>>;

/// Connections one control listener holds at once; further ones wait in the accept
/// queue until one closes (an idle one within `limits.header_read_timeout`).
pub const MAX_CONNECTIONS: usize = 64;
/// Requests one control listener answers at once; beyond, 503 at once.
pub const MAX_IN_FLIGHT: usize = 16;
/// The longest an answer may take (a reload reading large whitelists); 503 after.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// A request head's bytes (hyper's least read buffer is 8 KiB); 431 beyond.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// A declared request body's bytes; 413 beyond. No endpoint reads a body.
pub const MAX_BODY_BYTES: u64 = 64 * 1024;

/// What a control listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `server.admin_listen`: every endpoint.
    Admin,
    /// `server.metrics_listen`: `/metrics`, `/healthz` and `/readyz`; the rest is 404.
    Metrics,
}

/// Serves the control endpoints of `scope` until shutdown.
pub async fn serve(
    listener: TcpListener,
    scope: Scope,
    reloader: Arc<Reloader>,
    mut shutdown: Shutdown,
) {
    let snapshot = reloader.live().load();
    let header_read_timeout = snapshot.file.limits.header_read_timeout;
    let open = snapshot.file.server.admin_token.is_none();
    drop(snapshot);
    if scope == Scope::Admin && open && listener.local_addr().is_ok_and(|a| !a.ip().is_loopback()) {
        warn!(
            address = ?listener.local_addr(),
            "the admin listener is reachable beyond loopback and server.admin_token is not set: anyone who reaches it can reload the config and steer the rollout"
        );
    }
    // The status page's history of counters, sampled while the admin listener runs.
    let history = Arc::new(History::default());
    if scope == Scope::Admin {
        tokio::spawn(stats::sample(
            Arc::clone(&history),
            Arc::clone(reloader.live()),
            shutdown.clone(),
        ));
    }
    let router = {
        let reloader = Arc::clone(&reloader);
        tower::service_fn(move |request: Request<Incoming>| {
            let (reloader, history) = (Arc::clone(&reloader), Arc::clone(&history));
            async move { Ok::<_, Infallible>(route(&reloader, scope, &history, request).await) }
        })
    };
    let service = bounded(router, MAX_IN_FLIGHT, ANSWER_TIMEOUT);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
            _ = shutdown.wait() => return,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    warn!(error = %err, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => return,
        };
        let connection = http.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(service.clone()),
        );
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                debug!(%remote, error = %err, "admin connection ended with an error");
            }
            drop(slot);
        });
    }
}

/// `inner` behind the admin listener's tower stack: at most `in_flight` requests at
/// once, shed with 503 beyond, and each answer within `timeout`, else 503. Its error
/// type is tower's, as `map_result` needs, but every error becomes an answer.
fn bounded<S, B>(
    inner: S,
    in_flight: usize,
    timeout: Duration,
) -> impl tower::Service<
    Request<B>,
    Response = AdminResponse,
    Error = BoxError,
    Future: Send + 'static,
> + Clone
       + Send
       + 'static
where
    S: tower::Service<Request<B>, Response = AdminResponse, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    ServiceBuilder::new()
        .map_result(answer_failure)
        .load_shed()
        .concurrency_limit(in_flight)
        .timeout(timeout)
        .service(inner)
}

/// The tower stack's own errors, as answers.
fn answer_failure(result: Result<AdminResponse, BoxError>) -> Result<AdminResponse, BoxError> {
    let err = match result {
        Ok(response) => return Ok(response),
        Err(err) => err,
    };
    let mut response = if err.is::<tower::load_shed::error::Overloaded>() {
        plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "503 overloaded: this listener answers at most {MAX_IN_FLIGHT} requests at once\n"
            ),
        )
    } else if err.is::<tower::timeout::error::Elapsed>() {
        plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "503 timed out: the answer took longer than {}\n",
                humantime::format_duration(ANSWER_TIMEOUT)
            ),
        )
    } else {
        warn!(error = %err, "admin request failed");
        text(StatusCode::INTERNAL_SERVER_ERROR, "500 internal error\n")
    };
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    Ok(response)
}

async fn route(
    reloader: &Arc<Reloader>,
    scope: Scope,
    history: &History,
    request: Request<Incoming>,
) -> AdminResponse {
    let read = matches!(*request.method(), Method::GET | Method::HEAD);
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES) {
        let mut response = text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "413 payload too large: admin requests carry no body\n",
        );
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    match request.uri().path() {
        "/metrics" if read => return metrics(reloader, request.headers()),
        "/healthz" if read => return text(StatusCode::OK, "ok\n"),
        "/readyz" if read => return readiness(reloader),
        "/metrics" | "/healthz" | "/readyz" => return method_not_allowed("GET, HEAD"),
        _ if scope == Scope::Metrics => return not_found(),
        _ => {}
    }
    if request.method() == Method::POST || request.uri().path() == "/admin/config" {
        if let Some(denied) = unauthorized(reloader, request.headers()) {
            return denied;
        }
    }
    match request.uri().path() {
        "/admin/config" if read => config(reloader),
        "/admin/explain" if read => explain(reloader, request.uri().query().unwrap_or("")),
        "/admin/reload" if request.method() == Method::POST => reload(reloader).await,
        "/admin/rollout" if read => rollout_status(reloader).await,
        "/admin/rollout/state" if read => rollout_state(reloader).await,
        "/admin/mirror" if read => mirrors(reloader),
        "/admin/stats" if read => figures(reloader, history),
        "/admin/ui" if read => status_page(),
        "/admin/rollout/pause"
        | "/admin/rollout/resume"
        | "/admin/rollout/promote"
        | "/admin/rollout/abort"
            if request.method() == Method::POST =>
        {
            rollout_action(reloader, request.uri()).await
        }
        "/admin/config"
        | "/admin/explain"
        | "/admin/rollout"
        | "/admin/rollout/state"
        | "/admin/mirror"
        | "/admin/stats"
        | "/admin/ui" => method_not_allowed("GET, HEAD"),
        "/admin/reload"
        | "/admin/rollout/pause"
        | "/admin/rollout/resume"
        | "/admin/rollout/promote"
        | "/admin/rollout/abort" => method_not_allowed("POST"),
        _ => not_found(),
    }
}

/// With `server.admin_token` (as of the live config), the request must carry
/// `Authorization: Bearer <token>`: `None` lets it in, else the 401 answer with
/// `WWW-Authenticate: Bearer`.
fn unauthorized(reloader: &Reloader, headers: &HeaderMap) -> Option<AdminResponse> {
    let snapshot = reloader.live().load();
    let token = snapshot.file.server.admin_token.as_ref()?;
    let (challenge, message) = match bearer(headers) {
        Some(given) if same_secret(given, token.as_str().as_bytes()) => return None,
        Some(_) => (
            r#"Bearer realm="graygate", error="invalid_token""#,
            "the bearer token is not server.admin_token",
        ),
        None => (
            r#"Bearer realm="graygate""#,
            "this endpoint needs Authorization: Bearer <server.admin_token>",
        ),
    };
    let mut response = json_response(StatusCode::UNAUTHORIZED, &json!({ "error": message }));
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    Some(response)
}

/// The credentials of `Authorization: Bearer <token>` (the scheme in any case).
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, credentials) = value.split_at(space);
    let credentials = credentials.trim_ascii();
    (scheme.eq_ignore_ascii_case(b"bearer") && !credentials.is_empty()).then_some(credentials)
}

/// Compares the digests, byte by byte without an early exit, so the time taken says
/// nothing about how much of a guess was right (nor its length).
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let (given, expected) = (Sha256::digest(given), Sha256::digest(expected));
    let difference = given
        .iter()
        .zip(expected.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(difference) == 0
}

fn metrics(reloader: &Reloader, headers: &HeaderMap) -> AdminResponse {
    let openmetrics = wants_openmetrics(headers.get(ACCEPT).and_then(|v| v.to_str().ok()));
    // Endpoint states change with time (an ejection expires), so they are read now.
    let snapshot = reloader.live().load();
    for pool in snapshot.pools.iter() {
        pool.publish_endpoint_states();
    }
    let metrics = &reloader.shared().metrics;
    metrics.publish_endpoints(snapshot.pools.iter().flat_map(|pool| {
        let name = &*pool.name;
        pool.endpoints
            .iter()
            .map(move |e| (name, &*e.address, e.is_available()))
    }));
    drop(snapshot);
    let body = metrics.encode(openmetrics);
    let content_type = if openmetrics {
        OPENMETRICS_CONTENT_TYPE
    } else {
        PROMETHEUS_CONTENT_TYPE
    };
    respond(StatusCode::OK, content_type, body)
}

/// Ready when the stable pool, the one that takes every unmatched request and every
/// fallback, has an endpoint that is not marked down.
fn readiness(reloader: &Reloader) -> AdminResponse {
    let snapshot = reloader.live().load();
    if snapshot.pools[snapshot.chain.stable().0].has_available_endpoint() {
        text(StatusCode::OK, "ready\n")
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the stable pool has no available endpoint\n",
        )
    }
}

fn config(reloader: &Reloader) -> AdminResponse {
    let snapshot = reloader.live().load();
    let origin = &snapshot.origin;
    json_response(
        StatusCode::OK,
        &json!({
            "generation": origin.generation,
            "loaded_at": humantime::format_rfc3339_millis(origin.loaded_at).to_string(),
            "sha256": origin.sha256,
            "path": reloader.path(),
            "last_error": reloader.last_error(),
            "config": redacted(&snapshot.file),
        }),
    )
}

/// The effective config with `server.admin_token` replaced, so that reading the config
/// never hands out the token.
fn redacted(file: &crate::config::ConfigFile) -> serde_json::Value {
    let mut value = serde_json::to_value(file).expect("the config serializes");
    if let Some(token) = value.pointer_mut("/server/admin_token") {
        *token = json!("<redacted>");
    }
    value
}

/// `?header=name:value` (repeatable) and `?path=/x?q=1`, the same request view
/// `graygate explain` builds from its flags.
fn explain(reloader: &Reloader, query: &str) -> AdminResponse {
    let mut headers = HeaderMap::new();
    let mut path = String::from("/");
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "header" => match parse_header(&value) {
                Some((name, value)) => {
                    headers.append(name, value);
                }
                None => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        "400 bad request: header=name:value\n",
                    )
                }
            },
            "path" => path = value.into_owned(),
            _ => {
                return text(
                    StatusCode::BAD_REQUEST,
                    "400 bad request: parameters are header and path\n",
                )
            }
        }
    }
    let request_query = path.split_once('?').map(|(_, q)| q);
    let snapshot = reloader.live().load();
    let explanation = snapshot.explain(
        RequestView::new(&headers, request_query),
        &mut fastrand::f64,
        "live",
    );
    json_response(StatusCode::OK, &explanation)
}

async fn rollout_status(reloader: &Arc<Reloader>) -> AdminResponse {
    let reloader = Arc::clone(reloader);
    let status = tokio::task::spawn_blocking(move || reloader.rollout_status())
        .await
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()));
    match status {
        Some(status) => json_response(StatusCode::OK, &status),
        None => no_rollout(),
    }
}

/// Each mirror: what it copies, how the copies went, and the latest differences.
fn mirrors(reloader: &Reloader) -> AdminResponse {
    let snapshot = reloader.live().load();
    let mirrors: Vec<serde_json::Value> = snapshot
        .mirrors
        .iter()
        .map(|m| {
            let mut entry = json!({
                "from": &*m.from_name,
                "to": &*m.to_name,
                "permille": m.permille,
                "methods": m.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
                "max_body_bytes": m.max_body_bytes,
                "timeout": humantime::format_duration(m.timeout).to_string(),
                "max_in_flight": m.max_in_flight,
                "diff": m.diff,
                "diff_ignore_headers": m.ignore_headers.iter().map(|h| h.as_str()).collect::<Vec<_>>(),
            });
            if let (Some(entry), serde_json::Value::Object(report)) =
                (entry.as_object_mut(), m.state.report())
            {
                entry.extend(report);
            }
            entry
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "mirrors": mirrors }))
}

/// What a follower takes from this instance: state, step, weight, steps, identity.
async fn rollout_state(reloader: &Arc<Reloader>) -> AdminResponse {
    let reloader = Arc::clone(reloader);
    let state = tokio::task::spawn_blocking(move || reloader.rollout_leader_state())
        .await
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()));
    match state {
        Some(state) => json_response(StatusCode::OK, &state),
        None => no_rollout(),
    }
}

/// `POST /admin/rollout/<action>`; `promote?full=true` goes straight to 1000‰.
async fn rollout_action(reloader: &Arc<Reloader>, uri: &http::Uri) -> AdminResponse {
    let mut full = false;
    for (key, value) in form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        match (&*key, &*value) {
            ("full", "true" | "1") if uri.path().ends_with("/promote") => full = true,
            ("full", "false" | "0") if uri.path().ends_with("/promote") => full = false,
            _ => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({ "error": format!("unknown parameter `{key}={value}`; promote takes full=true") }),
                )
            }
        }
    }
    let action = match uri.path().rsplit('/').next() {
        Some("pause") => RolloutAction::Pause,
        Some("resume") => RolloutAction::Resume,
        Some("promote") => RolloutAction::Promote { full },
        _ => RolloutAction::Abort,
    };
    let acting = Arc::clone(reloader);
    let result = tokio::task::spawn_blocking(move || acting.act_on_rollout(action))
        .await
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()));
    match result {
        Ok(status) => json_response(StatusCode::OK, &status),
        Err(ActionError::NoRollout) => no_rollout(),
        Err(err @ (ActionError::NotApplicable(_) | ActionError::Follower(_))) => json_response(
            StatusCode::CONFLICT,
            &json!({ "error": err.to_string(), "state": reloader.rollout_status().map(|s| s["state"].clone()) }),
        ),
    }
}

/// The status page's figures: per pool and per rule, now and over the last minutes.
fn figures(reloader: &Reloader, history: &History) -> AdminResponse {
    let snapshot = reloader.live().load();
    let now = Reading::of(&snapshot, stats::now_ms());
    let cx = stats::Context {
        snapshot: &snapshot,
        last_reload_failed: reloader.last_error().is_some(),
    };
    json_response(StatusCode::OK, &stats::report(history, &cx, now))
}

/// The status page, under a policy that lets it load nothing but itself and talk to
/// nothing but this listener.
fn status_page() -> AdminResponse {
    let mut response = respond(
        StatusCode::OK,
        "text/html; charset=utf-8",
        status_page::PAGE,
    );
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_str(&status_page::CONTENT_SECURITY_POLICY).expect("the policy is ASCII"),
    );
    headers.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        http::header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    response
}

fn no_rollout() -> AdminResponse {
    json_response(
        StatusCode::NOT_FOUND,
        &json!({ "error": "no rollout is configured: add a [rollout] table to the config" }),
    )
}

fn parse_header(text: &str) -> Option<(HeaderName, HeaderValue)> {
    let (name, value) = text.split_once(':')?;
    Some((
        HeaderName::from_bytes(name.trim().as_bytes()).ok()?,
        HeaderValue::from_str(value.trim()).ok()?,
    ))
}

async fn reload(reloader: &Arc<Reloader>) -> AdminResponse {
    match reloader.reload_logged("POST /admin/reload").await {
        Ok(outcome) => json_response(
            StatusCode::OK,
            &json!({ "generation": outcome.generation(), "changed": matches!(outcome, Outcome::Applied(_)) }),
        ),
        Err(errors) => json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!({ "message": errors.to_string(), "errors": errors.0 }),
        ),
    }
}

fn method_not_allowed(allow: &'static str) -> AdminResponse {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "405 method not allowed\n");
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

fn not_found() -> AdminResponse {
    text(StatusCode::NOT_FOUND, "404 not found\n")
}

fn text(status: StatusCode, body: &'static str) -> AdminResponse {
    plain(status, body)
}

fn plain(status: StatusCode, body: impl Into<Bytes>) -> AdminResponse {
    respond(status, "text/plain; charset=utf-8", body)
}

fn json_response(status: StatusCode, value: &impl serde::Serialize) -> AdminResponse {
    let mut body = serde_json::to_string_pretty(value).expect("serializable");
    body.push('\n');
    respond(status, "application/json", body)
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> AdminResponse {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    /// A router that takes `delay` to answer 200.
    fn slow(
        delay: Duration,
    ) -> impl tower::Service<
        Request<()>,
        Response = AdminResponse,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
           + Send
           + 'static {
        tower::service_fn(move |_: Request<()>| async move {
            tokio::time::sleep(delay).await;
            Ok::<_, Infallible>(text(StatusCode::OK, "ok\n"))
        })
    }

    async fn body(response: AdminResponse) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[tokio::test]
    async fn requests_beyond_the_in_flight_limit_are_shed_with_503() {
        let service = bounded(slow(Duration::from_millis(300)), 1, Duration::from_secs(5));
        let first = tokio::spawn(service.clone().oneshot(Request::new(())));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let shed = service.clone().oneshot(Request::new(())).await.unwrap();
        assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(shed.headers()[RETRY_AFTER], "1");
        assert!(body(shed).await.contains("overloaded"));
        let first = first.await.unwrap().unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        // The slot is free again.
        let again = service.oneshot(Request::new(())).await.unwrap();
        assert_eq!(again.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn an_answer_past_the_timeout_is_503() {
        let service = bounded(slow(Duration::from_secs(2)), 4, Duration::from_millis(50));
        let started = std::time::Instant::now();
        let late = service.oneshot(Request::new(())).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(late.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(body(late).await.contains("timed out"));
    }

    #[test]
    fn bearer_credentials_and_their_comparison() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, HeaderValue::from_static(value));
            headers
        };
        assert_eq!(bearer(&with("Bearer abc")), Some(&b"abc"[..]));
        assert_eq!(bearer(&with("bEaReR   abc ")), Some(&b"abc"[..]));
        assert_eq!(bearer(&with("Basic abc")), None);
        assert_eq!(bearer(&with("Bearer")), None);
        assert_eq!(bearer(&with("Bearer ")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
        assert!(!same_secret(b"", b"abc"));
    }
}
