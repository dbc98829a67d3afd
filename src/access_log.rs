//! The access log: one JSON line per request, written off the request path.
//!
//! A request hands its record to a bounded channel with `try_send` and never waits; a
//! writer thread per destination formats and writes. When the writer falls behind,
//! records are dropped and counted (`graygate_access_log_dropped_total`).

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::Method;
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

use crate::routing::Decision;
use crate::snapshot::Snapshot;
use crate::upstream::Endpoint;

/// Records waiting for the writer before new ones are dropped.
const QUEUE: usize = 16 * 1024;
/// How often the writer drains the queue: the longest a line waits to be written.
const DRAIN_EVERY: Duration = Duration::from_millis(20);

/// What the request path hands over; names are looked up by the writer, not per request.
pub struct AccessRecord {
    pub time: SystemTime,
    pub method: Method,
    pub path: String,
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
    pool: &'a str,
    rule: &'a str,
    bucket: Option<u16>,
    upstream: Option<&'a str>,
    duration_ms: f64,
    bytes: u64,
}

/// A handle to one destination's writer; cheap to clone into snapshots.
#[derive(Debug, Clone)]
pub struct AccessLog {
    queue: SyncSender<AccessRecord>,
    dropped: Counter,
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
        let out: Box<dyn Write + Send> = if destination == Path::new("stderr") {
            Box::new(std::io::stderr())
        } else {
            Box::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(destination)?,
            )
        };
        let (queue, records) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("graygate-access-log".into())
            .spawn(move || write_lines(records, BufWriter::new(out)))?;
        let log = AccessLog {
            queue,
            dropped: self.dropped.clone(),
        };
        writers.insert(destination.to_path_buf(), log.clone());
        Ok(log)
    }
}

/// Drains the queue every [`DRAIN_EVERY`] and writes what it holds, until every sender
/// is gone. Sleeping rather than blocking on the queue means a request's `try_send`
/// never has to wake this thread: no futex and no context switch per request.
fn write_lines(records: Receiver<AccessRecord>, mut out: BufWriter<Box<dyn Write + Send>>) {
    loop {
        std::thread::sleep(DRAIN_EVERY);
        loop {
            match records.try_recv() {
                Ok(record) => write_line(&mut out, &record),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            }
        }
        let _ = out.flush();
    }
}

fn write_line(out: &mut BufWriter<Box<dyn Write + Send>>, record: &AccessRecord) {
    let snapshot = &record.snapshot;
    let line = Line {
        time: humantime::format_rfc3339_millis(record.time).to_string(),
        method: record.method.as_str(),
        path: &record.path,
        status: record.status,
        pool: &snapshot.pool(&record.decision).name,
        rule: snapshot.rule_name(&record.decision),
        bucket: record.decision.bucket,
        upstream: record.endpoint.as_deref().map(|e| &*e.address),
        duration_ms: record.duration.as_secs_f64() * 1e3,
        bytes: record.bytes,
    };
    if serde_json::to_writer(&mut *out, &line).is_ok() {
        let _ = out.write_all(b"\n");
    }
}
