//! One copy: prepared while the served request is rewritten for its upstream, started
//! once the served answer's head is in, sent on a task of its own, and compared when
//! both answers are in.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderName, Method, Request, Uri};
use http_body_util::BodyExt;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::debug;

use super::diff::{self, Answer};
use super::{now_rfc3339, Difference, Mirror, Outcome, Slot, CAPTURE_BYTES};
use crate::h1::request::ExtraHeaders;
use crate::upstream::{self, RequestBody};

/// Marks a copy, so its upstream can tell it from real traffic.
pub const X_GRAYGATE_MIRROR: HeaderName = HeaderName::from_static("x-graygate-mirror");

/// A copy decided on, before the served answer is in.
#[derive(Debug)]
pub struct Draft {
    /// Taken when the request was decided; given back when the copy is done, or when
    /// the draft is dropped unsent.
    slot: Slot,
    outgoing: Outgoing,
}

/// The copy's request.
#[derive(Debug)]
struct Outgoing {
    mirror: Arc<Mirror>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    extra: ExtraHeaders,
    /// The request body, once it has streamed to the served upstream whole (see
    /// [`crate::upstream::Tee`]); `None` for a bodiless request.
    body: Option<oneshot::Receiver<Option<Bytes>>>,
}

impl Draft {
    /// A copy of the upstream request `head` (already rewritten for the upstream, with
    /// the gateway's headers in `extra`), marked as a copy and named for the target.
    pub fn new(
        (mirror, slot): (Arc<Mirror>, Slot),
        head: &http::request::Parts,
        extra: &ExtraHeaders,
        body: Option<oneshot::Receiver<Option<Bytes>>>,
    ) -> Self {
        let mut headers = head.headers.clone();
        headers.insert(X_GRAYGATE_MIRROR, HeaderValue::from_static("1"));
        let mut extra = extra.clone();
        extra.replace(crate::proxy::X_GRAYGATE_POOL, mirror.to_header.clone());
        Draft {
            slot,
            outgoing: Outgoing {
                mirror,
                method: head.method.clone(),
                uri: head.uri.clone(),
                headers,
                extra,
                body,
            },
        }
    }

    pub fn mirror(&self) -> &Mirror {
        &self.outgoing.mirror
    }

    /// Sends the copy, now that the served answer's head is in. `served` is where the
    /// served answer will come, for the comparison.
    pub fn launch(self, served: Option<oneshot::Receiver<Answer>>) {
        tokio::spawn(self.run(served));
    }

    async fn run(self, served: Option<oneshot::Receiver<Answer>>) {
        let Draft { slot, outgoing } = self;
        let mirror = Arc::clone(&outgoing.mirror);
        let deadline = Instant::now() + mirror.timeout;
        let (method, path) = (outgoing.method.to_string(), outgoing.uri.path().to_string());
        let copy = tokio::time::timeout_at(deadline, outgoing.send()).await;
        let answer = match copy {
            Ok(Ok(answer)) => {
                mirror.state.count(Outcome::Sent);
                answer
            }
            Ok(Err(outcome)) => return mirror.state.count(outcome),
            Err(_elapsed) => return mirror.state.count(Outcome::Timeout),
        };
        let Some(served) = served else {
            return;
        };
        // The served answer may still be streaming to its client: wait for it as
        // long again, then give up on the comparison (the copy still counts as sent).
        let Ok(Ok(served)) = tokio::time::timeout(mirror.timeout, served).await else {
            return mirror.state.not_compared();
        };
        // Parsing two large JSON bodies takes milliseconds: off the serving threads.
        // The slot is held until the comparison is done, which bounds how many run.
        let _ = tokio::task::spawn_blocking(move || {
            let differences = diff::compare(&served, &answer, &mirror.ignore_headers);
            let record = differences.any().then(|| Difference {
                at: now_rfc3339(),
                method,
                path,
                served_status: served.status,
                mirror_status: answer.status,
                differences,
            });
            mirror.state.compared(record);
        })
        .await;
        drop(slot);
    }
}

impl Outgoing {
    /// The copy's request and answer, within the caller's deadline.
    async fn send(self) -> Result<Answer, Outcome> {
        let Outgoing {
            mirror,
            method,
            uri,
            mut headers,
            extra,
            body,
        } = self;
        let body = match body {
            None => RequestBody::Empty,
            Some(body) => match body.await {
                Ok(Some(bytes)) => RequestBody::Buffered(bytes),
                // The request was served, and not copied.
                Ok(None) => return Err(Outcome::TooLarge),
                Err(_) => return Err(Outcome::Incomplete),
            },
        };
        if let RequestBody::Buffered(bytes) = &body {
            headers.remove(TRANSFER_ENCODING);
            headers.insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        }
        let target = &mirror.target;
        let endpoint = target.start_request().ok_or(Outcome::Error)?;
        if !headers.contains_key(HOST) {
            let host = HeaderValue::from_str(endpoint.authority.as_str());
            headers.insert(HOST, host.expect("an authority is a valid Host"));
        }
        let mut request = Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        let report = |ok: bool| {
            if ok {
                endpoint.report_success();
            } else {
                endpoint.report_failure(&target.endpoints, &mirror.to_name);
            }
        };
        let response =
            match upstream::send(&endpoint, target.connect_timeout, request, &extra).await {
                Ok(response) => response,
                Err(failure) => {
                    debug!(to = &*mirror.to_name, error = %failure.error, "mirror copy failed");
                    report(false);
                    return Err(Outcome::Error);
                }
            };
        report(!response.status().is_server_error());
        let (head, mut body) = response.into_parts();
        let mut captured = Collected::default();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| Outcome::Error)?;
            if let Some(data) = frame.data_ref() {
                captured.push(data);
            }
        }
        // Read to its end: the connection goes back to the mirror's own idle pool.
        if let Some(connection) = body.take_reusable() {
            endpoint.release(connection);
        }
        Ok(captured.answer(head.status.as_u16(), head.headers))
    }
}

/// An answer's body, kept up to [`CAPTURE_BYTES`], and its whole length.
#[derive(Debug, Default)]
struct Collected {
    body: Vec<u8>,
    length: u64,
}

impl Collected {
    fn push(&mut self, data: &[u8]) {
        self.length += data.len() as u64;
        let room = CAPTURE_BYTES.saturating_sub(self.body.len());
        self.body.extend_from_slice(&data[..data.len().min(room)]);
    }

    fn answer(self, status: u16, headers: HeaderMap) -> Answer {
        Answer {
            status,
            headers,
            truncated: self.length > self.body.len() as u64,
            length: Some(self.length),
            body: self.body,
        }
    }
}

/// The served answer, captured as it streams to the client, for the copies that
/// compare with it.
#[derive(Debug)]
pub struct Capture {
    status: u16,
    headers: HeaderMap,
    collected: Collected,
    to: Vec<oneshot::Sender<Answer>>,
}

impl Capture {
    /// A capture of an answer with this head, for each of `to`.
    pub fn new(status: u16, headers: HeaderMap, to: Vec<oneshot::Sender<Answer>>) -> Self {
        Capture {
            status,
            headers,
            collected: Collected::default(),
            to,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        if self.to.is_empty() {
            return;
        }
        // A copy that timed out or failed is no longer waiting: keep nothing for it.
        self.to.retain(|to| !to.is_closed());
        if self.to.is_empty() {
            self.collected = Collected::default();
            return;
        }
        self.collected.push(data);
    }

    /// The answer went to its client whole: hand it to the comparisons.
    pub fn finish(self) {
        if self.to.is_empty() {
            return;
        }
        let answer = self.collected.answer(self.status, self.headers);
        for to in self.to {
            let _ = to.send(answer.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capture_stops_once_no_copy_waits_for_it() {
        let (to, rx) = oneshot::channel();
        let mut capture = Capture::new(200, HeaderMap::new(), vec![to]);
        capture.push(&[1; 1000]);
        assert_eq!(capture.collected.body.len(), 1000);
        drop(rx);
        capture.push(&[1; 1000]);
        assert!(capture.to.is_empty());
        assert_eq!(capture.collected.body.capacity(), 0, "freed");
    }

    #[test]
    fn a_capture_keeps_at_most_its_bound_and_counts_the_rest() {
        let (to, mut rx) = oneshot::channel();
        let mut capture = Capture::new(200, HeaderMap::new(), vec![to]);
        capture.push(&vec![1; CAPTURE_BYTES - 1]);
        capture.push(&[2; 10]);
        capture.finish();
        let answer = rx.try_recv().unwrap();
        assert_eq!(answer.body.len(), CAPTURE_BYTES);
        assert_eq!(answer.length, Some(CAPTURE_BYTES as u64 + 9));
        assert!(answer.truncated);
    }
}
