//! The access log: one JSON line per request, written off the request path.
//!
//! A request hands its record to a bounded channel with `try_send` and never waits; a
//! writer thread per destination formats and writes. When the writer falls behind,
//! records are dropped and counted (`graygate_access_log_dropped_total`).
//!
//! A file is opened again on `SIGUSR1` and on every reload (nginx's convention), so
//! logrotate can rename it and signal, without `copytruncate`: the writer finishes the
//! lines it holds into the renamed file, then goes on in a new one.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderValue, Method, Uri};
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use tracing::error;

use crate::routing::{Decision, PoolId};
use crate::snapshot::Snapshot;
use crate::upstream::Endpoint;

/// Records waiting for the writer before new ones are dropped.
const QUEUE: usize = 16 * 1024;
/// How often the writer drains the queue: the longest a line waits to be written.
const DRAIN_EVERY: Duration = Duration::from_millis(20);

/// What the access log needs that is known when a request starts (and, through the
/// forward phase, at its upstream's answer). Made only when the access log is on.
#[derive(Debug)]
pub struct AccessStart {
    pub time: SystemTime,
    /// The same moment, on the monotonic clock.
    pub started: Instant,
    pub method: Method,
    pub path: String,
    pub client: SocketAddr,
    /// These as the client sent them (the first value of each).
    pub forwarded_for: Option<HeaderValue>,
    pub host: Option<HeaderValue>,
    pub user_agent: Option<HeaderValue>,
    pub traceparent: Option<HeaderValue>,
    /// The client's `x-request-id`, or the one the gateway made (and sends upstream).
    pub request_id: Option<HeaderValue>,
    /// `request_id` is the gateway's: the upstream is to be sent it.
    pub request_id_made: bool,
    /// Only with `log.user_key = true`.
    pub user_key: Option<String>,
    /// From the request's arrival to its upstream's response head.
    pub upstream_head: Option<Duration>,
    /// Attempts on other endpoints after the first.
    pub retries: usize,
    /// The pool the rules chose, when another pool served the request.
    pub fallback_from: Option<PoolId>,
}

impl AccessStart {
    pub fn new(
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        client: SocketAddr,
        user_key: Option<String>,
    ) -> Self {
        let first = |name: &str| headers.get(name).cloned();
        // HTTP/2 names the host in `:authority`, not in a header.
        let host = first("host").or_else(|| {
            let authority = uri.authority()?;
            HeaderValue::from_str(authority.as_str()).ok()
        });
        AccessStart {
            time: SystemTime::now(),
            started: Instant::now(),
            method: method.clone(),
            path: uri.path().to_string(),
            client,
            forwarded_for: first("x-forwarded-for"),
            host,
            user_agent: first("user-agent"),
            traceparent: first("traceparent"),
            request_id: first("x-request-id"),
            request_id_made: false,
            user_key,
            upstream_head: None,
            retries: 0,
            fallback_from: None,
        }
    }
}

/// What the request path hands over; names are looked up by the writer, not per request.
pub struct AccessRecord {
    pub start: Box<AccessStart>,
    pub status: u16,
    pub snapshot: Arc<Snapshot>,
    pub decision: Decision,
    pub endpoint: Option<Arc<Endpoint>>,
    pub duration: Duration,
    pub bytes: u64,
}

/// One JSON access-log line.
#[derive(Serialize)]
struct Line<'a> {
    time: String,
    method: &'a str,
    path: &'a str,
    status: u16,
    client: String,
    x_forwarded_for: Option<Text<'a>>,
    host: Option<Text<'a>>,
    user_agent: Option<Text<'a>>,
    request_id: Option<Text<'a>>,
    traceparent: Option<Text<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_key: Option<&'a str>,
    pool: &'a str,
    rule: &'a str,
    bucket: Option<u16>,
    fallback: bool,
    fallback_from: Option<&'a str>,
    upstream: Option<&'a str>,
    upstream_ms: Option<f64>,
    retries: usize,
    duration_ms: f64,
    bytes: u64,
}

/// A header value as JSON text (bytes that are not UTF-8 replaced).
struct Text<'a>(&'a HeaderValue);

impl Serialize for Text<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&String::from_utf8_lossy(self.0.as_bytes()))
    }
}

/// Milliseconds, to the microsecond: `13.091`, not `13.091230000000001`.
fn millis(duration: Duration) -> f64 {
    duration.as_micros() as f64 / 1000.0
}

/// A handle to one destination's writer; cheap to clone into snapshots.
#[derive(Debug, Clone)]
pub struct AccessLog {
    queue: SyncSender<AccessRecord>,
    dropped: Counter,
    /// Set to have the writer open its file again.
    reopen: Arc<AtomicBool>,
}

impl AccessLog {
    /// Queues a record, or drops and counts it if the writer is behind.
    pub fn log(&self, record: AccessRecord) {
        if self.queue.try_send(record).is_err() {
            self.dropped.inc();
        }
    }
}

/// Writers by destination, kept for the life of the process so a reload that keeps
/// the destination keeps the writer.
#[derive(Debug)]
pub struct AccessLogs {
    writers: Mutex<HashMap<PathBuf, AccessLog>>,
    dropped: Counter,
}

impl AccessLogs {
    pub fn new(dropped: Counter) -> Self {
        AccessLogs {
            writers: Mutex::new(HashMap::new()),
            dropped,
        }
    }

    /// The writer for `"stderr"` or a file path (opened for append, created if needed).
    pub fn get(&self, destination: &Path) -> std::io::Result<AccessLog> {
        let mut writers = self.writers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(log) = writers.get(destination) {
            return Ok(log.clone());
        }
        let file = (destination != Path::new("stderr")).then(|| destination.to_path_buf());
        let out = open(file.as_deref())?;
        let (queue, records) = sync_channel(QUEUE);
        let reopen = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            file,
            out: BufWriter::new(out),
            reopen: Arc::clone(&reopen),
        };
        std::thread::Builder::new()
            .name("graygate-access-log".into())
            .spawn(move || writer.run(records))?;
        let log = AccessLog {
            queue,
            dropped: self.dropped.clone(),
            reopen,
        };
        writers.insert(destination.to_path_buf(), log.clone());
        Ok(log)
    }

    /// Has every file writer open its file again (after the lines it holds), so a
    /// log renamed by logrotate is let go.
    pub fn reopen(&self) {
        let writers = self.writers.lock().unwrap_or_else(|p| p.into_inner());
        for log in writers.values() {
            log.reopen.store(true, Ordering::Relaxed);
        }
    }
}

/// `stderr`, or the file, opened for append and created if needed.
fn open(file: Option<&Path>) -> std::io::Result<Box<dyn Write + Send>> {
    Ok(match file {
        None => Box::new(std::io::stderr()),
        Some(path) => Box::new(OpenOptions::new().create(true).append(true).open(path)?),
    })
}

/// One destination's writer thread.
struct Writer {
    /// `None` for stderr, which is never reopened.
    file: Option<PathBuf>,
    out: BufWriter<Box<dyn Write + Send>>,
    reopen: Arc<AtomicBool>,
}

impl Writer {
    /// Drains the queue every [`DRAIN_EVERY`] and writes what it holds, until every
    /// sender is gone. Sleeping rather than blocking on the queue means a request's
    /// `try_send` never has to wake this thread: no futex and no context switch per
    /// request.
    fn run(mut self, records: Receiver<AccessRecord>) {
        loop {
            std::thread::sleep(DRAIN_EVERY);
            // Read before draining: every line queued before the signal goes to the
            // file it was meant for, the renamed one.
            let reopen = self.reopen.swap(false, Ordering::Relaxed);
            loop {
                match records.try_recv() {
                    Ok(record) => write_line(&mut self.out, &record),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        let _ = self.out.flush();
                        return;
                    }
                }
            }
            let _ = self.out.flush();
            if reopen {
                self.reopen_file();
            }
        }
    }

    /// Opens the file again; if it cannot be, the old one is kept and the reason
    /// logged.
    fn reopen_file(&mut self) {
        let Some(path) = &self.file else {
            return;
        };
        match open(Some(path)) {
            Ok(out) => self.out = BufWriter::new(out),
            Err(err) => error!(
                file = %path.display(),
                error = %err,
                "cannot open the access log again; writing on to the file already open"
            ),
        }
    }
}

fn write_line(out: &mut BufWriter<Box<dyn Write + Send>>, record: &AccessRecord) {
    let snapshot = &record.snapshot;
    let start = &record.start;
    let line = Line {
        time: humantime::format_rfc3339_millis(start.time).to_string(),
        method: start.method.as_str(),
        path: &start.path,
        status: record.status,
        client: start.client.to_string(),
        x_forwarded_for: start.forwarded_for.as_ref().map(Text),
        host: start.host.as_ref().map(Text),
        user_agent: start.user_agent.as_ref().map(Text),
        request_id: start.request_id.as_ref().map(Text),
        traceparent: start.traceparent.as_ref().map(Text),
        user_key: start.user_key.as_deref(),
        pool: &snapshot.pool(&record.decision).name,
        rule: snapshot.rule_name(&record.decision),
        bucket: record.decision.bucket,
        fallback: start.fallback_from.is_some(),
        fallback_from: start.fallback_from.map(|p| &*snapshot.pools[p.0].name),
        upstream: record.endpoint.as_deref().map(|e| &*e.address),
        upstream_ms: start.upstream_head.map(millis),
        retries: start.retries,
        duration_ms: millis(record.duration),
        bytes: record.bytes,
    };
    if serde_json::to_writer(&mut *out, &line).is_ok() {
        let _ = out.write_all(b"\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_to_the_microsecond() {
        let text = |d: Duration| serde_json::to_string(&millis(d)).unwrap();
        assert_eq!(text(Duration::from_nanos(13_091_230_000)), "13091.23");
        assert_eq!(text(Duration::from_nanos(13_091_230)), "13.091");
        assert_eq!(text(Duration::from_nanos(999)), "0.0");
        assert_eq!(text(Duration::from_micros(1)), "0.001");
    }
}
