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
//! | `POST /admin/rollout/{pause,resume,promote,abort}` | 200 with the new state; 409 when it does not apply; 404 without a rollout |
//!
//! Other paths get 404; other methods on these paths get 405.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{ACCEPT, ALLOW, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tracing::{debug, warn};

use super::reload::{Outcome, Reloader, RolloutAction};
use crate::metrics::{wants_openmetrics, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE};
use crate::rollout::controller::ActionError;
use crate::routing::RequestView;
use crate::shutdown::Shutdown;

type AdminResponse = Response<Full<Bytes>>;

/// Serves the admin endpoints until shutdown.
pub async fn serve(listener: TcpListener, reloader: Arc<Reloader>, mut shutdown: Shutdown) {
    if listener.local_addr().is_ok_and(|a| !a.ip().is_loopback()) {
        warn!(address = ?listener.local_addr(), "the admin listener is reachable beyond loopback; it can reload the config");
    }
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    warn!(error = %err, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => return,
        };
        let reloader = Arc::clone(&reloader);
        let service = service_fn(move |request| {
            let reloader = Arc::clone(&reloader);
            async move { Ok::<_, Infallible>(route(&reloader, request).await) }
        });
        tokio::spawn(async move {
            if let Err(err) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%remote, error = %err, "admin connection ended with an error");
            }
        });
    }
}

async fn route(reloader: &Arc<Reloader>, request: Request<Incoming>) -> AdminResponse {
    let read = matches!(*request.method(), Method::GET | Method::HEAD);
    match request.uri().path() {
        "/metrics" if read => metrics(reloader, request.headers()),
        "/healthz" if read => text(StatusCode::OK, "ok\n"),
        "/readyz" if read => readiness(reloader),
        "/admin/config" if read => config(reloader),
        "/admin/explain" if read => explain(reloader, request.uri().query().unwrap_or("")),
        "/admin/reload" if request.method() == Method::POST => reload(reloader).await,
        "/admin/rollout" if read => rollout_status(reloader).await,
        "/admin/rollout/state" if read => rollout_state(reloader).await,
        "/admin/mirror" if read => mirrors(reloader),
        "/admin/rollout/pause"
        | "/admin/rollout/resume"
        | "/admin/rollout/promote"
        | "/admin/rollout/abort"
            if request.method() == Method::POST =>
        {
            rollout_action(reloader, request.uri()).await
        }
        "/metrics"
        | "/healthz"
        | "/readyz"
        | "/admin/config"
        | "/admin/explain"
        | "/admin/rollout"
        | "/admin/rollout/state"
        | "/admin/mirror" => method_not_allowed("GET, HEAD"),
        "/admin/reload"
        | "/admin/rollout/pause"
        | "/admin/rollout/resume"
        | "/admin/rollout/promote"
        | "/admin/rollout/abort" => method_not_allowed("POST"),
        _ => text(StatusCode::NOT_FOUND, "404 not found\n"),
    }
}

fn metrics(reloader: &Reloader, headers: &HeaderMap) -> AdminResponse {
    let openmetrics = wants_openmetrics(headers.get(ACCEPT).and_then(|v| v.to_str().ok()));
    // Endpoint states change with time (an ejection expires), so they are read now.
    for pool in reloader.live().load().pools.iter() {
        pool.publish_endpoint_states();
    }
    let body = reloader.shared().metrics.encode(openmetrics);
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
            "config": &*snapshot.file,
        }),
    )
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

fn text(status: StatusCode, body: &'static str) -> AdminResponse {
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
