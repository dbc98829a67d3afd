//! The body of a response to a client: streamed from an upstream, or a short
//! gateway-made text. It carries the request's [`Completion`], so the request is
//! recorded when its last byte is sent (or the client goes away), not when the head is.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use tokio::time::Sleep;

use crate::access_log::{AccessRecord, AccessStart};
use crate::metrics::ErrorKind;
use crate::mirror::copy::Capture;
use crate::routing::Decision;
use crate::snapshot::Snapshot;
use crate::upstream::{InFlight, UpstreamBody, UpstreamConnection};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug)]
pub struct ResponseBody {
    content: Content,
    completion: Option<Completion>,
}

/// An enum rather than a box: no allocation per response.
#[derive(Debug)]
enum Content {
    Upstream(UpstreamContent),
    Local(Full<Bytes>),
}

/// An upstream body under an idle deadline: when no frame comes for `idle_timeout`,
/// the stream is cut rather than left hanging. The timer is made only once the body
/// first has to wait, so a body that is ready at once never allocates one.
#[derive(Debug)]
struct UpstreamContent {
    body: UpstreamBody,
    idle_timeout: Duration,
    last_progress: Instant,
    timer: Option<Pin<Box<Sleep>>>,
}

/// The upstream sent nothing for a whole idle timeout in the middle of a body.
#[derive(Debug, thiserror::Error)]
#[error("upstream response body stalled for longer than the request timeout")]
pub struct BodyStalled;

impl Content {
    /// The upstream connection, once its body is done and it may be reused.
    fn take_reusable(&mut self) -> Option<UpstreamConnection> {
        match self {
            Content::Upstream(upstream) => upstream.body.take_reusable(),
            Content::Local(_) => None,
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Content::Upstream(upstream) => upstream.body.is_end_stream(),
            Content::Local(full) => full.is_end_stream(),
        }
    }
}

impl UpstreamContent {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            if self.timer.is_some() {
                self.last_progress = Instant::now();
            }
            return Poll::Ready(frame.map(|f| f.map_err(BoxError::from)));
        }
        let deadline = self.last_progress + self.idle_timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // The timer was set from an older progress time; frames since then move
            // the deadline on instead of resetting the timer on every frame.
            let deadline = self.last_progress + self.idle_timeout;
            if Instant::now() >= deadline {
                return Poll::Ready(Some(Err(BodyStalled.into())));
            }
            timer.as_mut().reset(deadline.into());
        }
    }
}

/// The record phase of a request: metrics, the rollout's cohorts and the access log,
/// on drop.
#[derive(Debug)]
pub struct Completion {
    /// The snapshot the request used from its start; moved here, not cloned.
    pub snapshot: Arc<Snapshot>,
    pub decision: Decision,
    pub started: Instant,
    pub status: u16,
    pub bytes: u64,
    /// The endpoint counts the request as in flight until the body is done, so
    /// `least_request` sees long streams.
    pub in_flight: Option<InFlight>,
    /// The upstream connection the response arrives on; back to the endpoint's idle
    /// pool once the body has been read to its end.
    pub connection: Option<UpstreamConnection>,
    /// The body was read to its end.
    pub finished: bool,
    /// Set only when the access log is on.
    pub access: Option<Box<AccessStart>>,
    /// The served answer, kept for mirrors that compare with it.
    /// Boxed: few requests have one, and this struct moves with every response.
    pub capture: Option<Box<Capture>>,
}

impl Drop for Completion {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        // Compared only once the client has had it whole.
        if let (true, Some(capture)) = (self.finished, self.capture.take()) {
            capture.finish();
        }
        if let (true, Some(connection), Some(endpoint)) =
            (self.finished, self.connection.take(), &self.in_flight)
        {
            endpoint.release(connection);
        }
        self.snapshot
            .pool(&self.decision)
            .metrics
            .record(self.status, elapsed);
        // The rollout's cohorts: the pool that served the request says whether a
        // canary request fell back to stable.
        if let (Some(cohort), Some(rollout)) = (self.decision.cohort, &self.snapshot.rollout) {
            let decision = &self.decision;
            rollout.record(cohort, decision.group, decision.pool, self.status, elapsed);
        }
        if let (Some(log), Some(start)) = (&self.snapshot.access_log, self.access.take()) {
            log.log(AccessRecord {
                start,
                status: self.status,
                snapshot: Arc::clone(&self.snapshot),
                decision: self.decision,
                endpoint: self.in_flight.as_ref().map(|e| e.endpoint()),
                duration: elapsed,
                bytes: self.bytes,
            });
        }
    }
}

impl ResponseBody {
    /// Streams an upstream body; `idle_timeout` bounds each wait for the next frame.
    pub fn upstream(body: UpstreamBody, idle_timeout: Duration) -> Self {
        let content = UpstreamContent {
            body,
            idle_timeout,
            last_progress: Instant::now(),
            timer: None,
        };
        ResponseBody {
            content: Content::Upstream(content),
            completion: None,
        }
    }

    /// When the upstream's answer head was in, for a body not yet polled: its idle
    /// clock starts there. `None` for the gateway's own answers.
    pub fn upstream_head_at(&self) -> Option<Instant> {
        match &self.content {
            Content::Upstream(upstream) if upstream.timer.is_none() => Some(upstream.last_progress),
            _ => None,
        }
    }

    pub fn text(text: &'static str) -> Self {
        let content = Content::Local(Full::new(Bytes::from_static(text.as_bytes())));
        ResponseBody {
            content,
            completion: None,
        }
    }

    pub fn with_completion(mut self, mut completion: Completion) -> Self {
        // hyper may never poll a body that is already at its end (HEAD, 204, empty).
        completion.finished = self.is_end_stream();
        if completion.finished {
            completion.connection = self.content.take_reusable();
        }
        self.completion = Some(completion);
        self
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        // Every field is Unpin, so no pin projection is needed.
        let polled = match &mut this.content {
            Content::Upstream(upstream) => upstream.poll_frame(cx),
            Content::Local(full) => Pin::new(full)
                .poll_frame(cx)
                .map_err(|never| match never {}),
        };
        match (&polled, &mut this.completion) {
            // Polled again after the last frame said so: the connection is taken already.
            (Poll::Ready(None), Some(completion)) if !completion.finished => {
                completion.finished = true;
                completion.connection = this.content.take_reusable();
            }
            (Poll::Ready(Some(Ok(frame))), Some(completion)) => {
                if let Some(data) = frame.data_ref() {
                    completion.bytes += data.len() as u64;
                    if let Some(capture) = &mut completion.capture {
                        capture.push(data);
                    }
                }
                // hyper stops polling once the body says it is at its end, so the
                // final `None` may never be seen.
                completion.finished = this.content.is_end_stream();
                if completion.finished {
                    completion.connection = this.content.take_reusable();
                }
            }
            (Poll::Ready(Some(Err(err))), Some(completion)) if err.is::<BodyStalled>() => {
                let pool = completion.snapshot.pool(&completion.decision);
                pool.metrics.upstream_error(ErrorKind::Timeout);
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.content.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.content {
            Content::Upstream(upstream) => upstream.body.size_hint(),
            Content::Local(full) => full.size_hint(),
        }
    }
}
