//! Dark launches by mirroring: a share of the requests one pool serves is copied to
//! another, and the copy's answer is compared with the served one, then discarded.
//!
//! A copy never touches the request it copies:
//! - it takes one of `max_in_flight` slots when the request is decided, and holds it
//!   until its comparison is done: a request that finds none taken is not copied (it
//!   is counted dropped, never queued), so neither its body nor its served answer is
//!   kept, and what mirroring holds in memory is bounded by `max_in_flight`;
//! - it is sent once the served answer's head is in, on a task of its own;
//! - it goes to endpoints of its own (the target pool's addresses, with their own
//!   connections and health), under its own `timeout`;
//! - a request body is copied as it streams to the served upstream, up to
//!   `max_body_bytes`; a longer one is served as usual and not copied;
//! - the served answer is kept for the comparison only up to a bound, as it streams to
//!   the client, which never waits for it.
//!
//! [`diff`] compares the answers; [`copy`] sends the copy and records the outcome.

pub mod copy;
pub mod diff;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use http::header::{HeaderName, HeaderValue};
use http::Method;
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

use crate::routing::{murmur3_x86_32, PoolId};
use crate::upstream::{Balancer, Endpoint, EndpointSpec, InFlight};

/// How many recent differences each mirror keeps for `/admin/mirror`.
pub const KEEP_DIFFERENCES: usize = 100;
/// The most of either answer's body kept for a comparison.
pub const CAPTURE_BYTES: usize = 1 << 20;

/// `graygate_mirror_requests_total{outcome}` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Sent, and answered.
    Sent = 0,
    /// Not sent: `max_in_flight` copies were already running.
    Dropped = 1,
    /// No answer within `timeout`.
    Timeout = 2,
    /// Refused, reset, or no available endpoint.
    Error = 3,
    /// The request body was longer than `max_body_bytes`: served, not copied.
    TooLarge = 4,
    /// The request body did not arrive whole, or the served upstream answered before
    /// reading all of it: served, not copied.
    Incomplete = 5,
}

pub const OUTCOMES: [&str; 6] = [
    "sent",
    "dropped",
    "timeout",
    "error",
    "too_large",
    "incomplete",
];
/// `graygate_mirror_diffs_total{kind}` values.
pub const DIFF_KINDS: [&str; 3] = ["status", "header", "body"];

/// A compiled `[[mirror]]`.
#[derive(Debug)]
pub struct Mirror {
    pub from: PoolId,
    pub from_name: Box<str>,
    pub to_name: Box<str>,
    /// `x-graygate-pool` on the copy.
    pub to_header: HeaderValue,
    pub permille: u16,
    /// `mirror:FROM:TO`: a mirror's share is its own, not a rule's or another mirror's.
    pub salt: Box<[u8]>,
    pub methods: Vec<Method>,
    pub max_body_bytes: u64,
    pub timeout: Duration,
    pub max_in_flight: usize,
    pub diff: bool,
    pub ignore_headers: Vec<HeaderName>,
    pub target: Target,
    /// What outlives config generations: the count in flight, the counters, the
    /// recent differences.
    pub state: Arc<MirrorState>,
}

/// Where copies go: the target pool's addresses, as endpoints of the mirror's own.
#[derive(Debug)]
pub struct Target {
    /// The target pool's endpoints as the config writes them.
    pub specs: Arc<[EndpointSpec]>,
    /// What `specs` stand for now (names resolved).
    pub endpoints: Vec<Arc<Endpoint>>,
    pub balancer: Balancer,
    pub connect_timeout: Duration,
}

impl Target {
    /// An available endpoint, counted in flight; `None` when all are down.
    pub fn start_request(&self) -> Option<InFlight> {
        if self.endpoints.is_empty() {
            return None;
        }
        let picked = self.balancer.pick(&self.endpoints);
        if picked.is_available() {
            return Some(picked.start());
        }
        self.endpoints
            .iter()
            .find(|e| e.is_available())
            .map(|e| e.start())
    }
}

impl Mirror {
    /// Whose endpoints the copies use: the mirror's own, not the target pool's.
    pub fn owner(from: &str, to: &str) -> String {
        format!("mirror:{from}:{to}")
    }

    /// This mirror with its target's names resolved anew into `endpoints`; its
    /// state (counts, slots, differences) is the same.
    pub fn with_endpoints(&self, endpoints: Vec<Arc<Endpoint>>) -> Mirror {
        Mirror {
            from: self.from,
            from_name: self.from_name.clone(),
            to_name: self.to_name.clone(),
            to_header: self.to_header.clone(),
            permille: self.permille,
            salt: self.salt.clone(),
            methods: self.methods.clone(),
            max_body_bytes: self.max_body_bytes,
            timeout: self.timeout,
            max_in_flight: self.max_in_flight,
            diff: self.diff,
            ignore_headers: self.ignore_headers.clone(),
            target: Target {
                specs: Arc::clone(&self.target.specs),
                endpoints,
                balancer: self.target.balancer.fresh(),
                connect_timeout: self.target.connect_timeout,
            },
            state: Arc::clone(&self.state),
        }
    }

    /// Whether a request with this method, user key and declared body length is
    /// in the mirror's share: the method is listed, and the request is in the share (by
    /// the user key when there is one, so a user's requests are all copied or none;
    /// else drawn). `Err(TooLarge)` for a body declared longer than `max_body_bytes`.
    pub fn takes(
        &self,
        method: &Method,
        user_key: Option<&[u8]>,
        declared_body: Option<u64>,
    ) -> Result<bool, Outcome> {
        if !self.methods.contains(method) {
            return Ok(false);
        }
        let inside = match user_key {
            Some(key) => (murmur3_x86_32(&self.salt, key, 0) % 1000) < u32::from(self.permille),
            None => fastrand::u16(..1000) < self.permille,
        };
        if !inside {
            return Ok(false);
        }
        if declared_body.is_some_and(|n| n > self.max_body_bytes) {
            return Err(Outcome::TooLarge);
        }
        Ok(true)
    }

    /// A slot for a copy of a request in the share, or `None` (counted dropped) when
    /// `max_in_flight` copies hold one.
    pub fn slot(&self) -> Option<Slot> {
        let slot = self.state.slot(self.max_in_flight);
        if slot.is_none() {
            self.state.count(Outcome::Dropped);
        }
        slot
    }
}

/// A mirror's state across config generations, keyed by its `from` and `to`.
#[derive(Debug)]
pub struct MirrorState {
    in_flight: AtomicUsize,
    /// The metrics, which are by `to` and so shared by every mirror to one pool.
    requests_metric: [Counter; 6],
    diffs_metric: [Counter; 3],
    /// This mirror's own counts, for `/admin/mirror`.
    requests: [Counter; 6],
    diffs: [Counter; 3],
    compared: Counter,
    equal: Counter,
    /// Copies answered whose served answer did not reach its client whole in time (or
    /// at all): nothing to compare with.
    not_compared: Counter,
    recent: Mutex<VecDeque<Difference>>,
}

/// One difference, as `/admin/mirror` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub at: String,
    pub method: String,
    /// Without the query string, which may carry user ids.
    pub path: String,
    pub served_status: u16,
    pub mirror_status: u16,
    #[serde(flatten)]
    pub differences: diff::Differences,
}

/// A copy counted in flight until dropped.
#[derive(Debug)]
pub struct Slot(Arc<MirrorState>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl MirrorState {
    pub fn new(requests_metric: [Counter; 6], diffs_metric: [Counter; 3]) -> Self {
        MirrorState {
            in_flight: AtomicUsize::new(0),
            requests_metric,
            diffs_metric,
            requests: Default::default(),
            diffs: Default::default(),
            compared: Counter::default(),
            equal: Counter::default(),
            not_compared: Counter::default(),
            recent: Mutex::new(VecDeque::new()),
        }
    }

    /// A place for one more copy, unless `max` are running.
    pub fn slot(self: &Arc<Self>, max: usize) -> Option<Slot> {
        let before = self.in_flight.fetch_add(1, Ordering::Relaxed);
        let slot = Slot(Arc::clone(self));
        (before < max).then_some(slot)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn count(&self, outcome: Outcome) {
        self.requests[outcome as usize].inc();
        self.requests_metric[outcome as usize].inc();
    }

    /// A copy was answered, but its served answer never came whole.
    pub fn not_compared(&self) {
        self.not_compared.inc();
    }

    /// Records a comparison and, if the answers differed, what differed.
    pub fn compared(&self, difference: Option<Difference>) {
        self.compared.inc();
        let Some(difference) = difference else {
            self.equal.inc();
            return;
        };
        let d = &difference.differences;
        for (kind, differs) in [d.status.is_some(), !d.headers.is_empty(), d.body]
            .into_iter()
            .enumerate()
        {
            if differs {
                self.diffs[kind].inc();
                self.diffs_metric[kind].inc();
            }
        }
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.push_front(difference);
        recent.truncate(KEEP_DIFFERENCES);
    }

    /// `/admin/mirror`'s counts and recent differences for this mirror.
    pub fn report(&self) -> serde_json::Value {
        let counts: serde_json::Map<String, serde_json::Value> = OUTCOMES
            .iter()
            .zip(&self.requests)
            .map(|(name, c)| (name.to_string(), c.get().into()))
            .collect();
        let diffs: serde_json::Map<String, serde_json::Value> = DIFF_KINDS
            .iter()
            .zip(&self.diffs)
            .map(|(name, c)| (name.to_string(), c.get().into()))
            .collect();
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        serde_json::json!({
            "in_flight": self.in_flight(),
            "copies": counts,
            "compared": self.compared.get(),
            "equal": self.equal.get(),
            "not_compared": self.not_compared.get(),
            "differences": diffs,
            "recent": recent.iter().collect::<Vec<_>>(),
        })
    }
}

/// Every mirror's state, by `from` and `to`; weak, so a mirror no config has goes.
#[derive(Debug, Default)]
pub struct MirrorRegistry {
    states: Mutex<HashMap<(String, String), Weak<MirrorState>>>,
}

impl MirrorRegistry {
    /// The live state for the mirror from `from` to `to`, or a new one from `make`.
    pub fn get(
        &self,
        from: &str,
        to: &str,
        make: impl FnOnce() -> MirrorState,
    ) -> Arc<MirrorState> {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        states.retain(|_, weak| weak.strong_count() > 0);
        let key = (from.to_string(), to.to_string());
        if let Some(state) = states.get(&key).and_then(Weak::upgrade) {
            return state;
        }
        let state = Arc::new(make());
        states.insert(key, Arc::downgrade(&state));
        state
    }
}

/// The time of a difference, for people.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}
