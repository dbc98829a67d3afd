//! The config file as serde structs, one per TOML table, mirroring the file exactly.
//! Unknown keys are errors. Defaults live here, next to the keys they belong to;
//! the README's configuration reference lists the same ones.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub server: Server,
    #[serde(default)]
    pub limits: Limits,
    /// Pools by name; the map keeps them sorted, so pool ids are stable.
    pub pools: BTreeMap<String, Pool>,
    pub routing: Routing,
    #[serde(default)]
    pub rules: Vec<Rule>,
    #[serde(default)]
    pub log: Log,
    /// An automated rollout of one per-mille rule; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// Copies of served requests to another pool, for a dark launch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirror: Vec<Mirror>,
}

/// `[[mirror]]`: requests served by `from` are copied to `to`; the copy's answer is
/// compared with the served one and discarded.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    pub from: String,
    pub to: String,
    /// Kept wide so that a negative or huge value gets a range error.
    #[serde(default = "defaults::mirror_permille")]
    pub permille: i64,
    /// Absent: the safe methods, GET, HEAD and OPTIONS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// Needed to copy POST, PUT, PATCH or DELETE: a copy would do it twice.
    #[serde(default)]
    pub allow_side_effects: bool,
    #[serde(default = "defaults::mirror_max_body_bytes")]
    pub max_body_bytes: u64,
    #[serde(default = "defaults::mirror_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    #[serde(default = "defaults::mirror_max_in_flight")]
    pub max_in_flight: i64,
    #[serde(default = "defaults::mirror_diff")]
    pub diff: bool,
    #[serde(default = "defaults::mirror_ignore_headers")]
    pub diff_ignore_headers: Vec<String>,
}

/// `[rollout]`: drives one `permille` rule through its steps, judging the canary
/// against the control at every interval.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// A `[[rules]]` entry with `permille`; its `to` is the canary.
    pub rule: String,
    /// Explicit per-mille steps; or `schedule`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    #[serde(default = "defaults::rollout_interval", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub interval: Duration,
    /// Least time at a step before it may advance. Default: the cubic schedule's
    /// `every`, else 5 minutes.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub min_step_duration: Option<Duration>,
    /// Kept wide so that 0 or a negative value gets a range error.
    #[serde(default = "defaults::min_requests")]
    pub min_requests: i64,
    #[serde(default = "defaults::failure_limit")]
    pub failure_limit: i64,
    #[serde(default = "defaults::inconclusive_limit")]
    pub inconclusive_limit: i64,
    /// Relative to the config file.
    #[serde(default = "defaults::state_file")]
    pub state_file: PathBuf,
    /// Absent: the defaults. Not for a follower, which never judges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<RolloutJudge>,
    /// The admin URL of the instance whose rollout this one follows (`http://host:port`):
    /// its state, step and weight are taken from there, and this instance never judges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow: Option<String>,
    #[serde(default = "defaults::follow_interval", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub follow_interval: Duration,
}

/// `schedule = { kind = "doubling" | "linear" | "cubic", ... }`; which other keys a
/// kind needs is checked when the config compiles, so each gets its own error.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub kind: ScheduleKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<i64>,
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub over: Option<Duration>,
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub every: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    Doubling,
    Linear,
    Cubic,
}

/// `[rollout.judge]`: the statistics' settings, each with a safe default.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutJudge {
    /// The false-abort rate of the whole rollout, not of one look.
    #[serde(default = "defaults::alpha")]
    pub alpha: f64,
    #[serde(default = "defaults::max_error_rate")]
    pub max_error_rate: f64,
    #[serde(default = "defaults::max_p99", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub max_p99: Duration,
    #[serde(default = "defaults::error_margin")]
    pub error_margin: f64,
    #[serde(default = "defaults::latency_margin")]
    pub latency_margin: f64,
    /// Where the cohorts are read: this instance's own, or a fleet's through Prometheus.
    #[serde(default)]
    pub source: JudgeSource,
    /// Prometheus's URL (`http://host:port`), with `source = "prometheus"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<String>,
    #[serde(default = "defaults::query_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub query_timeout: Duration,
    /// How far behind now the queries are evaluated, so the last scrape has landed.
    #[serde(default = "defaults::eval_delay", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub eval_delay: Duration,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JudgeSource {
    #[default]
    Local,
    Prometheus,
}

impl Default for RolloutJudge {
    fn default() -> Self {
        RolloutJudge {
            alpha: defaults::alpha(),
            max_error_rate: defaults::max_error_rate(),
            max_p99: defaults::max_p99(),
            error_margin: defaults::error_margin(),
            latency_margin: defaults::latency_margin(),
            source: JudgeSource::Local,
            prometheus: None,
            query_timeout: defaults::query_timeout(),
            eval_delay: defaults::eval_delay(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// `"stderr"` or a file path (relative to the config file): one JSON line per
    /// request. Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<PathBuf>,
    /// Log each request's user key. Off by default: it is personal data.
    #[serde(default)]
    pub user_key: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Server {
    #[serde(default = "defaults::listen")]
    #[schemars(with = "String")]
    pub listen: SocketAddr,
    #[serde(default = "defaults::admin_listen")]
    #[schemars(with = "String")]
    pub admin_listen: SocketAddr,
    /// A second control listener that serves only `/metrics`, `/healthz` and `/readyz`,
    /// for a scraper on the pod IP while the admin API stays on loopback. Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub metrics_listen: Option<SocketAddr>,
    /// When set, `POST`s on the admin listener and `GET /admin/config` need
    /// `Authorization: Bearer <token>`. Read on every reload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<AdminToken>,
    /// Runtime worker threads; 0 means one per core.
    #[serde(default)]
    pub workers: usize,
    #[serde(default = "defaults::shutdown_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub shutdown_timeout: Duration,
    /// A TLS listener beside the plain one; off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    /// How endpoint names are resolved. Read at start.
    #[serde(default)]
    pub dns: Dns,
    /// Reload when the config file or a file it names changes. Off: only SIGHUP and
    /// `POST /admin/reload` reload. Read at start.
    #[serde(default = "defaults::watch")]
    pub watch: bool,
}

/// `[server.dns]`: the name servers endpoint names are resolved with.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    /// `ip:port` of each name server, tried in order; empty: the system's
    /// (`/etc/resolv.conf` and `/etc/hosts`).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub nameservers: Vec<SocketAddr>,
    /// How long one query may take before the next attempt.
    #[serde(default = "defaults::dns_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
}

impl Default for Dns {
    fn default() -> Self {
        Dns {
            nameservers: Vec::new(),
            timeout: defaults::dns_timeout(),
        }
    }
}

/// TLS 1.2 and 1.3 with ALPN `h2` and `http/1.1`. The certificate and key are read
/// on every reload (a bad pair is a rejected reload); the listener is bound at start.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    #[schemars(with = "String")]
    pub listen: SocketAddr,
    /// PEM certificate chain, leaf first; relative to the config file.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1); relative to the config file.
    pub key: PathBuf,
}

/// `server.admin_token`: serialized as is (the config's fingerprint must see a new
/// token), never printed by `Debug`; `/admin/config` redacts it.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct AdminToken(pub String);

impl AdminToken {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: defaults::listen(),
            admin_listen: defaults::admin_listen(),
            metrics_listen: None,
            admin_token: None,
            workers: 0,
            shutdown_timeout: defaults::shutdown_timeout(),
            tls: None,
            dns: Dns::default(),
            watch: defaults::watch(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default = "defaults::header_read_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub header_read_timeout: Duration,
    #[serde(default = "defaults::request_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub request_timeout: Duration,
    #[serde(default = "defaults::max_header_bytes")]
    pub max_header_bytes: usize,
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: u64,
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Bounds each wait for a request body's next bytes, as nginx's
    /// `client_body_timeout`: a body that stops arriving is the client's 408.
    #[serde(default = "defaults::body_read_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub body_read_timeout: Duration,
    /// An HTTP/2 connection with no open stream for this long is closed with GOAWAY.
    #[serde(default = "defaults::idle_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub idle_timeout: Duration,
    /// Request header lines, beyond which a request is 431.
    #[serde(default = "defaults::max_headers")]
    pub max_headers: usize,
    /// The longest one write to a client may wait, as nginx's `send_timeout`.
    #[serde(default = "defaults::send_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub send_timeout: Duration,
    /// A tunnel (a WebSocket after its 101) idle both ways this long is closed.
    #[serde(default = "defaults::tunnel_idle_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub tunnel_idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: defaults::header_read_timeout(),
            request_timeout: defaults::request_timeout(),
            max_header_bytes: defaults::max_header_bytes(),
            max_body_bytes: defaults::max_body_bytes(),
            max_connections: defaults::max_connections(),
            body_read_timeout: defaults::body_read_timeout(),
            idle_timeout: defaults::idle_timeout(),
            max_headers: defaults::max_headers(),
            send_timeout: defaults::send_timeout(),
            tunnel_idle_timeout: defaults::tunnel_idle_timeout(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    /// `host:port` or `http://host:port`.
    pub endpoints: Vec<String>,
    /// Free text, such as the model or build version the pool runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default)]
    pub lb: LoadBalancing,
    #[serde(default = "defaults::connect_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub connect_timeout: Duration,
    /// Active health checks; off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// How often endpoint names are resolved again (sooner when a record's TTL ends).
    #[serde(default = "defaults::resolve_every", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub resolve_every: Duration,
}

/// An HTTP GET to each endpoint every `interval`: a 2xx or 3xx within `timeout` passes.
/// `fall` failures in a row mark the endpoint down, `rise` passes mark it up again.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(default = "defaults::health_path")]
    pub path: String,
    #[serde(default = "defaults::health_interval", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub interval: Duration,
    #[serde(default = "defaults::health_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    #[serde(default = "defaults::health_fall")]
    pub fall: u32,
    #[serde(default = "defaults::health_rise")]
    pub rise: u32,
}

impl HealthCheck {
    /// The check as the upstream side takes it.
    pub fn settings(&self) -> crate::upstream::HealthCheck {
        crate::upstream::HealthCheck {
            path: self.path.clone(),
            interval: self.interval,
            timeout: self.timeout,
            fall: self.fall,
            rise: self.rise,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancing {
    #[default]
    RoundRobin,
    /// Power of two random choices on in-flight requests.
    LeastRequest,
}

impl LoadBalancing {
    pub fn balancer(self) -> crate::upstream::Balancer {
        match self {
            LoadBalancing::RoundRobin => crate::upstream::Balancer::round_robin(),
            LoadBalancing::LeastRequest => crate::upstream::Balancer::LeastRequest,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    /// Where a request goes when no rule matches.
    pub stable: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_key: Option<ValueSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<ValueSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<ValueSource>,
    #[serde(default)]
    pub decision_headers: bool,
    #[serde(default)]
    pub fallback: Fallback,
    #[serde(default)]
    pub ua_classes: Vec<UaClass>,
    /// A cookie that gives visitors without a user key a sticky identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_cookie: Option<StickyCookie>,
    /// Addresses (`10.0.0.7`) and networks (`10.0.0.0/8`) of the proxies in front of
    /// the gateway whose `x-forwarded-proto` is believed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
}

/// `routing.sticky_cookie = { name, max_age }`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StickyCookie {
    pub name: String,
    #[serde(default = "defaults::sticky_max_age", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub max_age: Duration,
}

/// Exactly one of the three.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValueSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// Send the request to the stable pool (and count it).
    #[default]
    Stable,
    /// Answer 503.
    Fail,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UaClass {
    pub name: String,
    pub contains: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    #[serde(rename = "match")]
    pub conditions: Match,
    pub to: String,
}

/// A rule's conditions; every one given must hold.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Match {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whitelist: Option<Vec<Text>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whitelist_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<Vec<Text>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ua: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Vec<Text>>,
    /// Kept wide so that a negative or huge value gets a range error, not a type error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permille: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
}

/// Exactly one of `exact`, `prefix`, `regex` or `present`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

/// A value written as a string or an integer (`city = [110000, "sh"]`), compared as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Text {
    String(String),
    Integer(i64),
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Text::String(s) => f.write_str(s),
            Text::Integer(i) => write!(f, "{i}"),
        }
    }
}

impl Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Text::String(s) => serializer.serialize_str(s),
            Text::Integer(i) => serializer.serialize_i64(*i),
        }
    }
}

impl JsonSchema for Text {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Text".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A string or an integer, compared as text.",
            "type": ["string", "integer"]
        })
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl serde::de::Visitor<'_> for TextVisitor {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an integer")
            }
            fn visit_str<E>(self, v: &str) -> Result<Text, E> {
                Ok(Text::String(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Text, E> {
                Ok(Text::Integer(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Text, E> {
                i64::try_from(v).map(Text::Integer).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(TextVisitor)
    }
}

mod defaults {
    use std::net::SocketAddr;
    use std::time::Duration;

    pub fn listen() -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0], 8080))
    }
    pub fn admin_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9901))
    }
    pub fn shutdown_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn header_read_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn request_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn max_header_bytes() -> usize {
        64 * 1024
    }
    pub fn max_body_bytes() -> u64 {
        10 * 1024 * 1024
    }
    pub fn max_connections() -> usize {
        20_000
    }
    pub fn body_read_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn send_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn tunnel_idle_timeout() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn max_headers() -> usize {
        100
    }
    pub fn health_path() -> String {
        "/healthz".to_string()
    }
    pub fn health_interval() -> Duration {
        Duration::from_secs(2)
    }
    pub fn health_timeout() -> Duration {
        Duration::from_secs(1)
    }
    pub fn health_fall() -> u32 {
        3
    }
    pub fn health_rise() -> u32 {
        2
    }
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(2)
    }
    pub fn resolve_every() -> Duration {
        Duration::from_secs(10)
    }
    pub fn dns_timeout() -> Duration {
        Duration::from_secs(2)
    }
    pub fn watch() -> bool {
        true
    }
    pub fn rollout_interval() -> Duration {
        Duration::from_secs(60)
    }
    pub fn min_requests() -> i64 {
        500
    }
    pub fn failure_limit() -> i64 {
        2
    }
    pub fn inconclusive_limit() -> i64 {
        30
    }
    pub fn state_file() -> std::path::PathBuf {
        "rollout.state".into()
    }
    pub fn alpha() -> f64 {
        0.01
    }
    pub fn max_error_rate() -> f64 {
        0.01
    }
    pub fn max_p99() -> Duration {
        Duration::from_millis(500)
    }
    pub fn error_margin() -> f64 {
        0.002
    }
    pub fn latency_margin() -> f64 {
        0.10
    }
    pub fn mirror_permille() -> i64 {
        1000
    }
    pub fn mirror_max_body_bytes() -> u64 {
        64 * 1024
    }
    pub fn mirror_timeout() -> Duration {
        Duration::from_secs(2)
    }
    pub fn mirror_max_in_flight() -> i64 {
        256
    }
    pub fn mirror_diff() -> bool {
        true
    }
    pub fn mirror_ignore_headers() -> Vec<String> {
        vec!["date".to_string()]
    }
    pub fn sticky_max_age() -> Duration {
        Duration::from_secs(30 * 86_400)
    }
    pub fn follow_interval() -> Duration {
        Duration::from_secs(1)
    }
    pub fn query_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn eval_delay() -> Duration {
        Duration::from_secs(15)
    }
}
