//! End-to-end proxy behaviour: the real binary between real upstreams and clients.
//!
//! Every test starts its own gateway process and its own upstreams on 127.0.0.1, so
//! the tests run in parallel without sharing anything.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use graygate::routing::bucket;
use http::{Request, Response, StatusCode, Version};
use http_body::Frame;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

impl Pools {
    fn gateway(&self, extra: &str) -> Gateway {
        Gateway::start(&self.config(extra))
    }

    fn config(&self, extra: &str) -> String {
        config(self.blue.addr, self.green.addr, self.canary.addr, extra)
    }
}

/// A `[routing]` table with `stable = "blue"` and decision headers on (so a test can
/// read the rule that matched), then `settings` (more routing keys and UA classes) and
/// `rules`.
fn routing(settings: &str, rules: &str) -> String {
    format!("[routing]\nstable = \"blue\"\ndecision_headers = true\n{settings}\n\n{rules}")
}

/// Sends `GET path` with `headers` and returns (pool that answered, rule that matched),
/// checking that the answering upstream and the decision header agree.
async fn route(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> (String, String) {
    let answer = get(&gw.url(path), headers).await;
    assert_eq!(answer.status, 200, "{path} {headers:?}: {}", answer.body);
    assert_eq!(
        answer.header("x-graygate-pool"),
        Some(answer.body.as_str()),
        "decision header and answering upstream disagree for {path} {headers:?}"
    );
    let rule = answer
        .header("x-graygate-rule")
        .expect("x-graygate-rule on the response")
        .to_string();
    (answer.body, rule)
}

/// Asserts where `GET path` with `headers` goes.
async fn assert_routed(gw: &Gateway, path: &str, headers: &[(&str, &str)], want: (&str, &str)) {
    let (pool, rule) = route(gw, path, headers).await;
    assert_eq!(
        (pool.as_str(), rule.as_str()),
        want,
        "where {path} with {headers:?} went"
    );
}

/// The first user id (as decimal text) whose bucket under `salt` satisfies `pred`.
fn user_with_bucket(salt: &str, pred: impl Fn(u16) -> bool) -> String {
    (0..1_000_000u32)
        .map(|i| i.to_string())
        .find(|id| pred(bucket(salt.as_bytes(), id.as_bytes())))
        .expect("some id has such a bucket")
}

/// A header value from an upstream's view of a request, as text.
fn seen_header<'a>(seen: &'a Seen, name: &str) -> Option<&'a str> {
    seen.headers.get(name).and_then(|v| v.to_str().ok())
}

/// A deterministic body of `len` bytes (all byte values, so nothing is text-special).
fn binary_body(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i * 31 % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// A deterministic ASCII body of `len` bytes (the harness reads bodies as text).
fn ascii_body(len: usize) -> Bytes {
    (0..len)
        .map(|i| b'a' + (i % 26) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// A response read off a raw socket.
#[derive(Debug)]
struct RawAnswer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl RawAnswer {
    /// The first value of a header in the head, by case-insensitive name.
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    /// A gateway error: a short plain-text body.
    fn assert_short_text(&self) {
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(content_type.starts_with("text/plain"), "{self:?}");
        assert!(!self.body.is_empty() && self.body.len() < 200, "{self:?}");
    }
}

/// Writes raw request bytes and reads one response (head plus `Content-Length` body),
/// bounded by [`STEP`]. Unlike `raw_exchange` it does not wait for the peer to close.
async fn raw_request(addr: SocketAddr, bytes: &[u8]) -> RawAnswer {
    tokio::time::timeout(STEP, async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            let n = stream.read(&mut chunk).await.expect("read response head");
            assert!(
                n > 0,
                "connection closed before a response head: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {head:?}"));
        let mut answer = RawAnswer {
            status,
            head,
            body: Vec::new(),
        };
        let length: usize = answer
            .header("content-length")
            .map(|v| v.parse().expect("a numeric content-length"))
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let n = stream.read(&mut chunk).await.expect("read response body");
            assert!(n > 0, "connection closed inside the response body");
            buf.extend_from_slice(&chunk[..n]);
        }
        answer.body = buf[head_end..head_end + length].to_vec();
        answer
    })
    .await
    .expect("raw response in time")
}

/// A request body fed through a channel: no length known up front, so hyper sends it
/// with `Transfer-Encoding: chunked`, one chunk per message, as the test produces them.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|data| Ok(Frame::data(data))))
    }
}

/// A raw TCP upstream: reads each request head, writes `reply` (possibly nothing, or
/// only part of a response) and then holds the connection open without another byte.
struct StallingUpstream {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl StallingUpstream {
    async fn start(reply: &'static [u8]) -> StallingUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => break,
                    }
                }
                let _ = stream.write_all(reply).await;
                held.push(stream);
            }
        });
        StallingUpstream { addr, task }
    }
}

impl Drop for StallingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A config whose blue pool has two endpoints with the given balancing.
fn two_endpoint_blue(a: SocketAddr, b: SocketAddr, lb: &str, other: SocketAddr) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_timeout = "5s"

[pools.blue]
endpoints = ["{a}", "{b}"]
lb = "{lb}"
[pools.green]
endpoints = ["{other}"]
[pools.canary]
endpoints = ["{other}"]

[routing]
stable = "blue"
"#
    )
}

// ---------------------------------------------------------------------------------
// 0. The stable pool
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn default_route_reaches_the_stable_pool() {
    let (blue, green, canary) = (
        Upstream::named("blue").await,
        Upstream::named("green").await,
        Upstream::named("canary").await,
    );
    let gw = Gateway::start(&config(
        blue.addr,
        green.addr,
        canary.addr,
        "[routing]\nstable = \"blue\"\n",
    ));
    let answer = get(&gw.url("/hello?x=1"), &[]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "blue");
    assert_eq!(
        blue.last().uri.path_and_query().unwrap().as_str(),
        "/hello?x=1"
    );
}

#[tokio::test]
async fn stable_green_sends_unmatched_traffic_to_green() {
    let pools = Pools::start().await;
    let gw = pools.gateway("[routing]\nstable = \"green\"\ndecision_headers = true\n");
    assert_routed(&gw, "/", &[], ("green", "default")).await;
    assert!(pools.blue.requests().is_empty());
}

// ---------------------------------------------------------------------------------
// 1. Every rule condition
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn header_exact_matches_only_the_exact_value() {
    let pools = Pools::start().await;
    let gw = pools.gateway(&routing(
        "",
        r#"[[rules]]
name = "testers"
match = { header = { name = "x-user-group", exact = "internal-testers" } }
to = "canary""#,
    ));
    let testers = ("canary", "testers");
    let stable = ("blue", "default");
    assert_routed(&gw, "/", &[("x-user-group", "internal-testers")], testers).await;
    assert_routed(&gw, "/", &[("x-user-group", "internal-testers-2")], stable).await;
    assert_routed(&gw, "/", &[("x-user-group", "internal")], stable).await;
    assert_routed(&gw, "/", &[("x-other", "internal-testers")], stable).await;
    assert_routed(&gw, "/", &[], stable).await;
}

#[tokio::test]
async fn header_prefix_matches_values_that_start_with_it() {
    let pools = Pools::start().await;
    let gw = pools.gateway(&routing(
        "",
        r#"[[rules]]
name = "v2-clients"
match = { header = { name = "x-app-version", prefix = "2." } }
to = "green""#,
    ));
    let v2 = ("green", "v2-clients");
    let stable = ("blue", "default");
    assert_routed(&gw, "/", &[("x-app-version", "2.")], v2).await;
    assert_routed(&gw, "/", &[("x-app-version", "2.7.1")], v2).await;
    assert_routed(&gw, "/", &[("x-app-version", "12.0")], stable).await;
    assert_routed(&gw, "/", &[("x-app-version", "1.2.")], stable).await;
    assert_routed(&gw, "/", &[], stable).await;
}

#[tokio::test]
async fn header_regex_is_an_unanchored_search_unless_anchored() {
    let pools = Pools::start().await;
    let gw = pools.gateway(&routing(
        "",
        r#"[[rules]]
name = "llama-anywhere"
match = { header = { name = "x-model", regex = "llama-3" } }
to = "green"

[[rules]]
name = "gpt-exact"
match = { header = { name = "x-model", regex = "^gpt-[0-9]+$" } }
to = "canary""#,
    ));
    let llama = ("green", "llama-anywhere");
    let gpt = ("canary", "gpt-exact");
    let stable = ("blue", "default");
    // Unanchored: found in the middle of the value.
    assert_routed(&gw, "/", &[("x-model", "meta-llama-3-8b")], llama).await;
    assert_routed(&gw, "/", &[("x-model", "llama-3")], llama).await;
    assert_routed(&gw, "/", &[("x-model", "llama-2-7b")], stable).await;
    // Anchors are honoured.
    assert_routed(&gw, "/", &[("x-model", "gpt-4")], gpt).await;
    assert_routed(&gw, "/", &[("x-model", "my-gpt-4")], stable).await;
    assert_routed(&gw, "/", &[("x-model", "gpt-4o")], stable).await;
}

#[tokio::test]
async fn header_present_true_matches_any_value_of_the_header() {
    let pools = Pools::start().await;
    let gw = pools.gateway(&routing(
        "",
        r#"[[rules]]
name = "debuggers"
match = { header = { name = "x-debug", present = true } }
to = "canary""#,
    ));
    assert_routed(&gw, "/", &[("x-debug", "1")], ("canary", "debuggers")).await;
    assert_routed(
        &gw,
        "/",
        &[("x-debug", "anything")],
        ("canary", "debuggers"),
    )
    .await;
    assert_routed(&gw, "/", &[("x-debugx", "1")], ("blue", "default")).await;
    assert_routed(&gw, "/", &[], ("blue", "default")).await;
}

#[tokio::test]
async fn header_present_false_matches_requests_without_the_header() {
    let pools = Pools::start().await;
    let gw = pools.gateway(&routing(
        "",
        r#"[[rules]]
name = "no-legacy-cookie"
match = { header = { name = "x-legacy", present = false } }
to = "green""#,
    ));
    assert_routed(&gw, "/", &[], ("green", "no-legacy-cookie")).await;
    assert_routed(&gw, "/", &[("x-other", "1")], ("green", "no-legacy-cookie")).await;
    assert_routed(&gw, "/", &[("x-legacy", "1")], ("blue", "default")).await;
}

#[tokio::test]
async fn inline_whitelist_matches_listed_user_keys_given_as_strings_or_integers() {
    let pools = Pools::start().await;
    let gw = pools.gateway(&routing(
        r#"user_key = { header = "x-user-id" }"#,
        r#"[[rules]]
name = "staff"
match = { whitelist = ["1001", 1002] }
to = "canary""#,
    ));
    let staff = ("canary", "staff");
    let stable = ("blue", "default");
    assert_routed(&gw, "/", &[("x-user-id", "1001")], staff).await;
    assert_routed(&gw, "/", &[("x-user-id", "1002")], staff).await;
    assert_routed(&gw, "/", &[("x-user-id", "1003")], stable).await;
    assert_routed(&gw, "/", &[("x-user-id", "10010")], stable).await;
    assert_routed(&gw, "/", &[], stable).await;
}

#[tokio::test]
async fn whitelist_file_beside_the_config_matches_its_keys() {
    let pools = Pools::start().await;
    let config = pools.config(&routing(
        r#"user_key = { header = "x-user-id" }"#,
        r#"[[rules]]
name = "staff-file"
match = { whitelist_file = "staff.txt" }
to = "canary""#,
    ));
    let gw = Gateway::start_with_files(
        &config,
        &[("staff.txt", "# staff ids, one a line\n2001\n\n  2002  \n")],
    );
    let staff = ("canary", "staff-file");
    let stable = ("blue", "default");
    assert_routed(&gw, "/", &[("x-user-id", "2001")], staff).await;
    assert_routed(&gw, "/", &[("x-user-id", "2002")], staff).await;
    assert_routed(&gw, "/", &[("x-user-id", "2003")], stable).await;
    assert_routed(
        &gw,
        "/",
        &[("x-user-id", "# staff ids, one a line")],
        stable,
    )
    .await;
    assert_routed(&gw, "/", &[], stable).await;
}

#[tokio::test]
async fn city_from_a_cookie_matches_integer_and_string_values() {
    let pools = Pools::start().await;
    let gw = pools.gateway(&routing(
        r#"city = { cookie = "city" }"#,
        r#"[[rules]]
name = "beijing"
match = { city = [110000] }
to = "green"

[[rules]]
name = "shanghai"
match = { city = ["sh"] }
to = "canary""#,
    ));
    let stable = ("blue", "default");
    assert_routed(&gw, "/", &[("cookie", "city=110000")], ("green", "beijing")).await;
    assert_routed(
        &gw,
        "/",
        &[("cookie", "lang=zh; city=110000; theme=dark")],
        ("green", "beijing"),
    )
    .await;
    assert_routed(&gw, "/", &[("cookie", "city=sh")], ("canary", "shanghai")).await;
    assert_routed(&gw, "/", &[("cookie", "city=310000")], stable).await;
    // The value is read from the cookie, not from a header of the same name.
    assert_routed(&gw, "/", &[("city", "110000")], stable).await;
    assert_routed(&gw, "/", &[("cookie", "mycity=110000")], stable).await;
}

#[tokio::test]
async fn city_from_a_header_matches() {
    let pools = Pools::start().await;
    let gw = pools.gateway(&routing(
        r#"city = { header = "x-city-id" }"#,
        r#"[[rules]]
name = "beijing"
match = { city = [110000, "bj"] }
to = "green""#,
    ));
    assert_routed(&gw, "/", &[("x-city-id", "110000")], ("green", "beijing")).await;
    assert_routed(&gw, "/", &[("x-city-id", "bj")], ("green", "beijing")).await;
    assert_routed(&gw, "/", &[("x-city-id", "120000")], ("blue", "default")).await;
}

#[tokio::test]
async fn channel_from_the_query_matches_listed_channels() {
    let pools = Pools::start().await;
    let gw = pools.gateway(&routing(
        r#"channel = { query = "channel" }"#,
        r#"[[rules]]
name = "appstore"
match = { channel = ["appstore", "huawei"] }
to = "canary""#,
    ));
    let appstore = ("canary", "appstore");
    let stable = ("blue", "default");
    assert_routed(&gw, "/?channel=appstore", &[], appstore).await;
    assert_routed(&gw, "/shop?page=2&channel=huawei", &[], appstore).await;
    // Query values are percent-decoded before comparison.
    assert_routed(&gw, "/?channel=app%73tore", &[], appstore).await;
    assert_routed(&gw, "/?channel=web", &[], stable).await;
    assert_routed(&gw, "/?mychannel=appstore", &[], stable).await;
    assert_routed(&gw, "/", &[("channel", "appstore")], stable).await;
}

#[tokio::test]
async fn user_key_from_a_cookie_or_the_query() {
    let pools = Pools::start().await;
    let by_cookie = pools.gateway(&routing(
        r#"user_key = { cookie = "uid" }"#,
        r#"[[rules]]
name = "staff"
match = { whitelist = ["7"] }
to = "canary""#,
    ));
    assert_routed(
        &by_cookie,
        "/",
        &[("cookie", "a=1; uid=7")],
        ("canary", "staff"),
    )
    .await;
    assert_routed(&by_cookie, "/", &[("cookie", "uid=8")], ("blue", "default")).await;
    assert_routed(&by_cookie, "/?uid=7", &[], ("blue", "default")).await;

    let by_query = pools.gateway(&routing(
        r#"user_key = { query = "uid" }"#,
        r#"[[rules]]
name = "staff"
match = { whitelist = ["7"] }
to = "canary""#,
    ));
    assert_routed(&by_query, "/p?x=1&uid=7", &[], ("canary", "staff")).await;
    assert_routed(&by_query, "/p?uid=8", &[], ("blue", "default")).await;
    assert_routed(&by_query, "/p", &[("cookie", "uid=7")], ("blue", "default")).await;
}

#[tokio::test]
async fn ua_class_is_the_first_in_config_order_and_case_insensitive() {
    let pools = Pools::start().await;
    // The web rule comes first in the chain, but a User-Agent that carries both an app
    // and a web substring is of class app, because app is defined first.
    let gw = pools.gateway(&routing(
        r#"[[routing.ua_classes]]
name = "app"
contains = ["MyShop-App/", "okhttp"]

[[routing.ua_classes]]
name = "web"
contains = ["Mobile", "Android"]"#,
        r#"[[rules]]
name = "web-users"
match = { ua = ["web"] }
to = "green"

[[rules]]
name = "app-users"
match = { ua = ["app"] }
to = "canary""#,
    ));
    let app = ("canary", "app-users");
    let web = ("green", "web-users");
    let stable = ("blue", "default");
    let ua = |value| [("user-agent", value)];
    // "Android" (web) occurs before "okhttp" (app) in the string: app still wins.
    assert_routed(
        &gw,
        "/",
        &ua("Mozilla/5.0 (Linux; Android 14) okhttp/4.12"),
        app,
    )
    .await;
    assert_routed(&gw, "/", &ua("myshop-app/3.1 (iOS)"), app).await;
    assert_routed(&gw, "/", &ua("OKHTTP/3"), app).await;
    assert_routed(&gw, "/", &ua("Mozilla/5.0 (iPhone) MOBILE/15E148"), web).await;
    assert_routed(&gw, "/", &ua("curl/8.5.0"), stable).await;
    assert_routed(&gw, "/", &[], stable).await;
}

#[tokio::test]
async fn permille_matches_exactly_the_users_whose_bucket_is_below_n() {
    const SALT: &str = "exp-42";
    const N: u16 = 300;
    let pools = Pools::start().await;
    let gw = pools.gateway(&routing(
        r#"user_key = { header = "x-user-id" }"#,
        &format!(
            r#"[[rules]]
name = "canary-300"
match = {{ permille = {N}, salt = "{SALT}" }}
to = "canary""#
        ),
    ));
    let in_bucket = |id: &str| bucket(SALT.as_bytes(), id.as_bytes()) < N;
    // The boundary: bucket N-1 is in, bucket N is out.
    let mut ids = vec![
        user_with_bucket(SALT, |b| b == N - 1),
        user_with_bucket(SALT, |b| b == N),
    ];
    ids.extend((5000..5040).map(|i| i.to_string()));
    assert!(ids.iter().any(|id| in_bucket(id)) && ids.iter().any(|id| !in_bucket(id)));
    for id in &ids {
        let want = if in_bucket(id) {
            ("canary", "canary-300")
        } else {
            ("blue", "default")
        };
        assert_routed(&gw, "/", &[("x-user-id", id)], want).await;
    }
    // The salt is part of the hash: a user inside under this salt but outside under
    // the empty salt still goes to canary.
    let salted = (0..1_000_000u32)
        .map(|i| i.to_string())
        .find(|id| in_bucket(id) && bucket(b"", id.as_bytes()) >= N)
        .expect("a user whose bucket depends on the salt");
    assert_routed(
        &gw,
        "/",
        &[("x-user-id", &salted)],
        ("canary", "canary-300"),
    )
    .await;
}

#[tokio::test]
async fn permille_is_sticky_per_user() {
    const SALT: &str = "sticky";
    let pools = Pools::start().await;
    let gw = pools.gateway(&routing(
        r#"user_key = { header = "x-user-id" }"#,
        &format!(
            r#"[[rules]]
name = "half"
match = {{ permille = 500, salt = "{SALT}" }}
to = "canary""#
        ),
    ));
    let inside = user_with_bucket(SALT, |b| b < 500);
    let outside = user_with_bucket(SALT, |b| b >= 500);
    for _ in 0..10 {
        assert_routed(&gw, "/", &[("x-user-id", &inside)], ("canary", "half")).await;
        assert_routed(&gw, "/", &[("x-user-id", &outside)], ("blue", "default")).await;
    }
}

#[tokio::test]
async fn permille_zero_matches_nobody_and_thousand_matches_everybody() {
    let pools = Pools::start().await;
    let gw = pools.gateway(&routing(
        r#"user_key = { header = "x-user-id" }"#,
        r#"[[rules]]
name = "nobody"
match = { permille = 0, salt = "a" }
to = "green"

[[rules]]
name = "everybody"
match = { permille = 1000, salt = "b" }
to = "canary""#,
    ));
    let everybody = ("canary", "everybody");
    // The lowest bucket under "a" is still not below 0.
    let lowest = user_with_bucket("a", |b| b == 0);
    assert_routed(&gw, "/", &[("x-user-id", &lowest)], everybody).await;
    // The highest bucket under "b" is still below 1000.
    let highest = user_with_bucket("b", |b| b == 999);
    assert_routed(&gw, "/", &[("x-user-id", &highest)], everybody).await;
    for id in 0..20 {
        let id = id.to_string();
        assert_routed(&gw, "/", &[("x-user-id", &id)], everybody).await;
    }
    assert!(pools.green.requests().is_empty());
}

#[tokio::test]
async fn rate_zero_never_matches_and_rate_one_always_matches() {
    let pools = Pools::start().await;
    let gw = pools.gateway(&routing(
        "",
        r#"[[rules]]
name = "never"
match = { rate = 0.0 }
to = "green"

[[rules]]
name = "always"
match = { rate = 1.0 }
to = "canary""#,
    ));
    for _ in 0..50 {
        assert_routed(&gw, "/", &[], ("canary", "always")).await;
    }
    assert!(pools.green.requests().is_empty());
    assert!(pools.blue.requests().is_empty());
}

#[tokio::test]
async fn rate_half_sends_traffic_to_both_pools() {
    let pools = Pools::start().await;
    let gw = pools.gateway(&routing(
        "",
        r#"[[rules]]
name = "coin"
match = { rate = 0.5 }
to = "canary""#,
    ));
    let mut canary = 0;
    for _ in 0..200 {
        let (pool, rule) = route(&gw, "/", &[]).await;
        match (pool.as_str(), rule.as_str()) {
            ("canary", "coin") => canary += 1,
            ("blue", "default") => {}
            other => panic!("unexpected route {other:?}"),
        }
    }
    // Binomial(200, 0.5): 50..=150 is more than 7 standard deviations wide.
    assert!(
        (50..=150).contains(&canary),
        "{canary} of 200 went to canary"
    );
}

// ---------------------------------------------------------------------------------
// 2. Precedence
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn first_matching_rule_wins() {
    let pools = Pools::start().await;
    let gw = pools.gateway(&routing(
        r#"user_key = { header = "x-user-id" }"#,
        r#"[[rules]]
name = "beta-header"
match = { header = { name = "x-beta", present = true } }
to = "green"

[[rules]]
name = "staff"
match = { whitelist = ["42"] }
to = "canary""#,
    ));
    assert_routed(
        &gw,
        "/",
        &[("x-beta", "1"), ("x-user-id", "42")],
        ("green", "beta-header"),
    )
    .await;
    // The second rule does match on its own.
    assert_routed(&gw, "/", &[("x-user-id", "42")], ("canary", "staff")).await;
}

#[tokio::test]
async fn all_conditions_of_a_rule_must_hold() {
    let pools = Pools::start().await;
    let gw = pools.gateway(&routing(
        r#"channel = { query = "ch" }"#,
        r#"[[rules]]
name = "beta-appstore"
match = { header = { name = "x-beta", exact = "1" }, channel = ["appstore"] }
to = "canary""#,
    ));
    let stable = ("blue", "default");
    assert_routed(
        &gw,
        "/?ch=appstore",
        &[("x-beta", "1")],
        ("canary", "beta-appstore"),
    )
    .await;
    assert_routed(&gw, "/", &[("x-beta", "1")], stable).await;
    assert_routed(&gw, "/?ch=huawei", &[("x-beta", "1")], stable).await;
    assert_routed(&gw, "/?ch=appstore", &[], stable).await;
    assert_routed(&gw, "/?ch=appstore", &[("x-beta", "0")], stable).await;
}

#[tokio::test]
async fn a_missing_value_falls_through_to_later_rules_and_then_to_stable() {
    let pools = Pools::start().await;
    let gw = pools.gateway(&routing(
        r#"user_key = { header = "x-user-id" }
city = { header = "x-city-id" }
channel = { cookie = "ch" }

[[routing.ua_classes]]
name = "app"
contains = ["okhttp"]"#,
        r#"[[rules]]
name = "every-user"
match = { permille = 1000 }
to = "canary"

[[rules]]
name = "staff"
match = { whitelist = ["1"] }
to = "canary"

[[rules]]
name = "beijing"
match = { city = [110000] }
to = "canary"

[[rules]]
name = "appstore"
match = { channel = ["appstore"] }
to = "canary"

[[rules]]
name = "apps"
match = { ua = ["app"] }
to = "canary"

[[rules]]
name = "marked"
match = { header = { name = "x-mark", present = true } }
to = "green""#,
    ));
    // No user key, city, channel or UA: every rule that needs one is skipped.
    assert_routed(&gw, "/", &[], ("blue", "default")).await;
    assert_routed(&gw, "/", &[("x-mark", "1")], ("green", "marked")).await;
    // An empty user key identifies nobody either.
    assert_routed(
        &gw,
        "/",
        &[("x-user-id", ""), ("x-mark", "1")],
        ("green", "marked"),
    )
    .await;
    // Each rule does match when its value is there.
    assert_routed(&gw, "/", &[("x-user-id", "5")], ("canary", "every-user")).await;
    assert_routed(&gw, "/", &[("x-city-id", "110000")], ("canary", "beijing")).await;
    assert_routed(
        &gw,
        "/",
        &[("cookie", "ch=appstore")],
        ("canary", "appstore"),
    )
    .await;
    assert_routed(&gw, "/", &[("user-agent", "okhttp/4")], ("canary", "apps")).await;
    // Values that are present but do not match fall through too.
    assert_routed(
        &gw,
        "/",
        &[
            ("x-city-id", "1"),
            ("cookie", "ch=web"),
            ("user-agent", "curl/8"),
        ],
        ("blue", "default"),
    )
    .await;
}

// ---------------------------------------------------------------------------------
// 3. Headers to the upstream
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn upstream_sees_the_pool_and_the_matching_rule() {
    let pools = Pools::start().await;
    let gw = pools.gateway(
        r#"[routing]
stable = "blue"

[[rules]]
name = "testers"
match = { header = { name = "x-group", exact = "t" } }
to = "canary""#,
    );
    assert_eq!(get(&gw.url("/"), &[("x-group", "t")]).await.body, "canary");
    let seen = pools.canary.last();
    assert_eq!(seen_header(&seen, "x-graygate-pool"), Some("canary"));
    assert_eq!(seen_header(&seen, "x-graygate-rule"), Some("testers"));

    assert_eq!(get(&gw.url("/"), &[]).await.body, "blue");
    let seen = pools.blue.last();
    assert_eq!(seen_header(&seen, "x-graygate-pool"), Some("blue"));
    assert_eq!(seen_header(&seen, "x-graygate-rule"), Some("default"));
}

#[tokio::test]
async fn upstream_sees_forwarded_headers_and_via() {
    let pools = Pools::start().await;
    let gw = pools.gateway("[routing]\nstable = \"blue\"\n");
    let answer = get(
        &gw.url("/fwd"),
        &[
            ("host", "shop.example.com"),
            ("x-forwarded-for", "1.2.3.4"),
            ("via", "1.0 edge"),
        ],
    )
    .await;
    assert_eq!(answer.status, 200);
    let seen = pools.blue.last();
    assert_eq!(
        seen_header(&seen, "x-forwarded-for"),
        Some("1.2.3.4, 127.0.0.1")
    );
    assert_eq!(seen_header(&seen, "x-forwarded-proto"), Some("http"));
    assert_eq!(
        seen_header(&seen, "x-forwarded-host"),
        Some("shop.example.com")
    );
    let via = seen_header(&seen, "via").expect("via");
    assert!(via.contains("1.1 graygate"), "via: {via}");
    assert!(via.contains("1.0 edge"), "the client's via is kept: {via}");
}

#[tokio::test]
async fn x_forwarded_for_is_the_client_ip_when_the_client_sent_none() {
    let pools = Pools::start().await;
    let gw = pools.gateway("[routing]\nstable = \"blue\"\n");
    get(&gw.url("/"), &[]).await;
    assert_eq!(
        seen_header(&pools.blue.last(), "x-forwarded-for"),
        Some("127.0.0.1")
    );
}

#[tokio::test]
async fn client_host_is_preserved_not_rewritten_to_the_upstream_address() {
    let pools = Pools::start().await;
    let gw = pools.gateway("[routing]\nstable = \"blue\"\n");
    get(&gw.url("/"), &[("host", "shop.example.com:8080")]).await;
    let seen = pools.blue.last();
    assert_eq!(seen_header(&seen, "host"), Some("shop.example.com:8080"));
    assert_eq!(
        seen_header(&seen, "x-forwarded-host"),
        Some("shop.example.com:8080")
    );
    // Without an explicit Host, the client's own Host (the gateway address) arrives.
    get(&gw.url("/"), &[]).await;
    let seen = pools.blue.last();
    assert_eq!(
        seen_header(&seen, "host"),
        Some(gw.addr.to_string().as_str())
    );
    assert_ne!(
        seen_header(&seen, "host"),
        Some(pools.blue.addr.to_string().as_str())
    );
}

#[tokio::test]
async fn absolute_form_target_authority_becomes_the_forwarded_host() {
    let pools = Pools::start().await;
    let gw = pools.gateway("[routing]\nstable = \"blue\"\n");
    let answer = raw_request(
        gw.addr,
        b"GET http://a.example/x?y=1 HTTP/1.1\r\nHost: b.example\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let seen = pools.blue.last();
    assert_eq!(seen.uri.path_and_query().unwrap().as_str(), "/x?y=1");
    // A server that receives the absolute form MUST ignore Host and use the target's.
    assert_eq!(seen_header(&seen, "host"), Some("a.example"));
    assert_eq!(seen_header(&seen, "x-forwarded-host"), Some("a.example"));
}

#[tokio::test]
async fn client_sent_graygate_headers_are_not_passed_on() {
    let pools = Pools::start().await;
    let gw = pools.gateway("[routing]\nstable = \"blue\"\n");
    let answer = get(
        &gw.url("/"),
        &[
            ("x-graygate-pool", "canary"),
            ("x-graygate-rule", "forged"),
            ("x-graygate-foo", "1"),
        ],
    )
    .await;
    // The client cannot pick the pool either.
    assert_eq!(answer.body, "blue");
    let seen = pools.blue.last();
    let pools_seen: Vec<_> = seen.headers.get_all("x-graygate-pool").iter().collect();
    assert_eq!(pools_seen, ["blue"]);
    let rules_seen: Vec<_> = seen.headers.get_all("x-graygate-rule").iter().collect();
    assert_eq!(rules_seen, ["default"]);
    assert!(seen.headers.get("x-graygate-foo").is_none());
}

#[tokio::test]
async fn hop_by_hop_request_headers_are_stripped_and_end_to_end_kept() {
    let pools = Pools::start().await;
    let gw = pools.gateway("[routing]\nstable = \"blue\"\n");
    // Raw bytes, so no client library adds or drops anything.
    let request = "GET /hop HTTP/1.1\r\n\
        Host: shop.example.com\r\n\
        Connection: keep-alive, X-Secret\r\n\
        Keep-Alive: timeout=5\r\n\
        TE: trailers\r\n\
        Trailer: x-checksum\r\n\
        Upgrade: websocket\r\n\
        Proxy-Connection: keep-alive\r\n\
        X-Secret: 1\r\n\
        X-Kept: yes\r\n\
        Accept: text/plain\r\n\
        Authorization: Bearer abc\r\n\
        \r\n";
    let answer = raw_request(gw.addr, request.as_bytes()).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let seen = pools.blue.last();
    for gone in [
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
        "x-secret",
    ] {
        assert!(
            seen.headers.get(gone).is_none(),
            "{gone} reached the upstream: {:?}",
            seen.headers
        );
    }
    assert_eq!(seen_header(&seen, "x-kept"), Some("yes"));
    assert_eq!(seen_header(&seen, "accept"), Some("text/plain"));
    assert_eq!(seen_header(&seen, "authorization"), Some("Bearer abc"));
}

// ---------------------------------------------------------------------------------
// 4. and 5. Headers to the client
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn hop_by_hop_response_headers_are_stripped() {
    let upstream = Upstream::with_handler(Arc::new(|_| {
        Response::builder()
            .header("connection", "x-up-secret")
            .header("x-up-secret", "1")
            .header("keep-alive", "timeout=5")
            .header("x-kept", "1")
            .body(Full::new(Bytes::from_static(b"ok")))
            .unwrap()
    }))
    .await;
    let other = Upstream::named("other").await;
    let gw = Gateway::start(&config(
        upstream.addr,
        other.addr,
        other.addr,
        "[routing]\nstable = \"blue\"\n",
    ));
    let answer = get(&gw.url("/"), &[]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "ok");
    assert_eq!(answer.header("x-kept"), Some("1"));
    assert_eq!(answer.header("x-up-secret"), None, "{:?}", answer.headers);
    assert_eq!(answer.header("keep-alive"), None, "{:?}", answer.headers);
    assert!(
        !answer
            .headers
            .get_all("connection")
            .iter()
            .any(|v| v.to_str().unwrap_or("").contains("x-up-secret")),
        "{:?}",
        answer.headers
    );
}

#[tokio::test]
async fn decision_headers_reach_the_client_when_enabled() {
    let pools = Pools::start().await;
    let gw = pools.gateway(
        r#"[routing]
stable = "blue"
decision_headers = true

[[rules]]
name = "beta"
match = { header = { name = "x-beta", present = true } }
to = "canary""#,
    );
    let answer = get(&gw.url("/"), &[("x-beta", "1")]).await;
    assert_eq!(answer.header("x-graygate-pool"), Some("canary"));
    assert_eq!(answer.header("x-graygate-rule"), Some("beta"));
    let answer = get(&gw.url("/"), &[]).await;
    assert_eq!(answer.header("x-graygate-pool"), Some("blue"));
    assert_eq!(answer.header("x-graygate-rule"), Some("default"));
}

#[tokio::test]
async fn decision_headers_are_absent_by_default() {
    let pools = Pools::start().await;
    let gw = pools.gateway(
        r#"[routing]
stable = "blue"

[[rules]]
name = "beta"
match = { header = { name = "x-beta", present = true } }
to = "canary""#,
    );
    let answer = get(&gw.url("/"), &[("x-beta", "1")]).await;
    assert_eq!(answer.body, "canary");
    assert_eq!(answer.header("x-graygate-pool"), None);
    assert_eq!(answer.header("x-graygate-rule"), None);
}

// ---------------------------------------------------------------------------------
// 6. Bodies
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_one_mebibyte_request_body_arrives_intact() {
    let pools = Pools::start().await;
    let gw = pools.gateway("[routing]\nstable = \"blue\"\n");
    let body = binary_body(1 << 20);
    let answer = send(
        Request::post(gw.url("/upload"))
            .header("content-type", "application/octet-stream")
            .body(Full::new(body.clone()))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 200);
    let seen = pools.blue.last();
    assert_eq!(seen.method, http::Method::POST);
    assert_eq!(seen.body.len(), body.len());
    assert!(seen.body == body, "the upstream got different bytes");
}

#[tokio::test]
async fn a_one_mebibyte_response_body_arrives_intact() {
    let big = ascii_body(1 << 20);
    let served = big.clone();
    let upstream =
        Upstream::with_handler(Arc::new(move |_| Response::new(Full::new(served.clone())))).await;
    let other = Upstream::named("other").await;
    let gw = Gateway::start(&config(
        upstream.addr,
        other.addr,
        other.addr,
        "[routing]\nstable = \"blue\"\n",
    ));
    let answer = get(&gw.url("/download"), &[]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body.len(), big.len());
    assert!(
        answer.body.as_bytes() == &big[..],
        "the client got different bytes"
    );
}

#[tokio::test]
async fn a_chunked_request_body_streams_through_intact() {
    let pools = Pools::start().await;
    let gw = pools.gateway("[routing]\nstable = \"blue\"\n");
    let body = binary_body(64 * 16 * 1024 + 123);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let chunks: Vec<Bytes> = body.chunks(16 * 1024).map(Bytes::copy_from_slice).collect();
    let producer = tokio::spawn(async move {
        for chunk in chunks {
            if tx.send(chunk).await.is_err() {
                return;
            }
            tokio::task::yield_now().await;
        }
    });
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<ChannelBody>();
    let request = Request::post(gw.url("/stream"))
        .body(ChannelBody(rx))
        .unwrap();
    let response = tokio::time::timeout(STEP, client.request(request))
        .await
        .expect("response in time")
        .expect("response");
    assert_eq!(response.status(), 200);
    producer.await.unwrap();
    let seen = pools.blue.last();
    assert_eq!(seen.body.len(), body.len());
    assert!(seen.body == body, "the upstream got different bytes");
}

#[tokio::test]
async fn a_raw_chunked_request_body_arrives_decoded() {
    let pools = Pools::start().await;
    let gw = pools.gateway("[routing]\nstable = \"blue\"\n");
    let request = b"POST /raw HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
        5\r\nhello\r\n1\r\n \r\n6\r\nworld!\r\n0\r\n\r\n";
    let answer = raw_request(gw.addr, request).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(&pools.blue.last().body[..], b"hello world!");
}

// ---------------------------------------------------------------------------------
// 7. Failures never hang
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_dead_upstream_gives_502_quickly() {
    let dead = dead_address().await;
    let other = Upstream::named("other").await;
    let gw = Gateway::start(&config(
        dead,
        other.addr,
        other.addr,
        "[routing]\nstable = \"blue\"\n",
    ));
    let started = Instant::now();
    let answer = get(&gw.url("/"), &[]).await;
    let took = started.elapsed();
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(
        !answer.body.trim().is_empty() && answer.body.len() < 200,
        "body: {:?}",
        answer.body
    );
    let content_type = answer.header("content-type").unwrap_or_default();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert!(other.requests().is_empty());
}

#[tokio::test]
async fn an_upstream_that_never_answers_gives_504_within_the_request_timeout() {
    let silent = StallingUpstream::start(b"").await;
    let other = Upstream::named("other").await;
    let gw = Gateway::start(&config(
        silent.addr,
        other.addr,
        other.addr,
        "[limits]\nrequest_timeout = \"500ms\"\n\n[routing]\nstable = \"blue\"\n",
    ));
    let started = Instant::now();
    let answer = get(&gw.url("/"), &[]).await;
    let took = started.elapsed();
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT, "{answer:?}");
    assert!(took >= Duration::from_millis(450), "too early: {took:?}");
    assert!(took < Duration::from_millis(2000), "too late: {took:?}");
    assert!(!answer.body.trim().is_empty() && answer.body.len() < 200);
}

#[tokio::test]
async fn an_upstream_that_stalls_its_body_is_cut_off_within_the_request_timeout() {
    // The head and 10 of 100 promised bytes, then silence.
    let stalling =
        StallingUpstream::start(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789").await;
    let other = Upstream::named("other").await;
    let gw = Gateway::start(&config(
        stalling.addr,
        other.addr,
        other.addr,
        "[limits]\nrequest_timeout = \"500ms\"\n\n[routing]\nstable = \"blue\"\n",
    ));
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let started = Instant::now();
    let response = tokio::time::timeout(
        STEP,
        client.request(Request::get(gw.url("/")).body(Full::default()).unwrap()),
    )
    .await
    .expect("response head in time")
    .expect("response head");
    assert_eq!(response.status(), 200);
    // limits.request_timeout is "the whole request through the upstream": the body must
    // end (cut short, as an error) once it passes, not stay open for as long as the
    // upstream keeps the connection.
    let ended = tokio::time::timeout(Duration::from_secs(3), response.into_body().collect()).await;
    let took = started.elapsed();
    assert!(
        ended.is_ok(),
        "the response body was still open after {took:?} (request_timeout 500ms)"
    );
    assert!(
        ended.unwrap().is_err(),
        "a body cut short must not look complete to the client"
    );
}

#[tokio::test]
async fn a_content_length_over_the_limit_gives_413_without_contacting_the_upstream() {
    let pools = Pools::start().await;
    let gw = pools.gateway("[limits]\nmax_body_bytes = 1024\n\n[routing]\nstable = \"blue\"\n");
    // Only the head is sent: the gateway must answer from the declared length alone.
    let answer = raw_request(
        gw.addr,
        b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 1025\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, 413, "{answer:?}");
    answer.assert_short_text();
    // A body exactly at the limit passes.
    let answer = send(
        Request::post(gw.url("/ok"))
            .body(Full::new(binary_body(1024)))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 200);
    let requests = pools.blue.requests();
    assert_eq!(
        requests.len(),
        1,
        "only the request within the limit went up"
    );
    assert_eq!(requests[0].uri.path(), "/ok");
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_gives_413() {
    let pools = Pools::start().await;
    let gw = pools.gateway("[limits]\nmax_body_bytes = 2048\n\n[routing]\nstable = \"blue\"\n");
    let mut request =
        b"POST /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            .to_vec();
    for _ in 0..3 {
        request.extend_from_slice(b"400\r\n");
        request.extend_from_slice(&[b'a'; 0x400]);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let answer = raw_request(gw.addr, &request).await;
    assert_eq!(answer.status, 413, "{answer:?}");
    answer.assert_short_text();
    // No upstream got the whole oversized body.
    assert!(pools.blue.requests().iter().all(|r| r.body.len() <= 2048));
}

#[tokio::test]
async fn connect_gives_405() {
    let pools = Pools::start().await;
    let gw = pools.gateway("[routing]\nstable = \"blue\"\n");
    let answer = raw_request(
        gw.addr,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, 405, "{answer:?}");
    answer.assert_short_text();
    assert!(pools.blue.requests().is_empty());
}

// ---------------------------------------------------------------------------------
// 8. h2c
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn h2c_prior_knowledge_is_routed_and_forwarded_as_http11_with_host() {
    let pools = Pools::start().await;
    let gw = pools.gateway(&routing(
        "",
        r#"[[rules]]
name = "beta"
match = { header = { name = "x-beta", exact = "1" } }
to = "canary""#,
    ));
    let answer = send_h2c(
        gw.addr,
        Request::get("http://shop.example.com:8443/h2/path?q=1")
            .header("x-beta", "1")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "canary");
    assert_eq!(answer.header("x-graygate-rule"), Some("beta"));
    let seen = pools.canary.last();
    assert_eq!(seen.version, Version::HTTP_11);
    assert_eq!(seen_header(&seen, "host"), Some("shop.example.com:8443"));
    assert_eq!(
        seen_header(&seen, "x-forwarded-host"),
        Some("shop.example.com:8443")
    );
    assert_eq!(seen_header(&seen, "x-graygate-pool"), Some("canary"));
    assert_eq!(seen.uri.path_and_query().unwrap().as_str(), "/h2/path?q=1");

    // And without the header, the stable pool over the same protocol.
    let answer = send_h2c(
        gw.addr,
        Request::get("http://shop.example.com:8443/")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.body, "blue");
}

// ---------------------------------------------------------------------------------
// 9. Load balancing
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn round_robin_alternates_between_two_endpoints() {
    let (a, b, other) = (
        Upstream::named("a").await,
        Upstream::named("b").await,
        Upstream::named("other").await,
    );
    let gw = Gateway::start(&two_endpoint_blue(
        a.addr,
        b.addr,
        "round_robin",
        other.addr,
    ));
    let mut order = Vec::new();
    for _ in 0..6 {
        order.push(get(&gw.url("/"), &[]).await.body);
    }
    for pair in order.windows(2) {
        assert_ne!(pair[0], pair[1], "not alternating: {order:?}");
    }
    assert_eq!(a.requests().len(), 3);
    assert_eq!(b.requests().len(), 3);
}

#[tokio::test]
async fn least_request_spreads_over_two_idle_endpoints() {
    let (a, b, other) = (
        Upstream::named("a").await,
        Upstream::named("b").await,
        Upstream::named("other").await,
    );
    let gw = Gateway::start(&two_endpoint_blue(
        a.addr,
        b.addr,
        "least_request",
        other.addr,
    ));
    for _ in 0..40 {
        let answer = get(&gw.url("/"), &[]).await;
        assert!(answer.body == "a" || answer.body == "b", "{}", answer.body);
    }
    let (to_a, to_b) = (a.requests().len(), b.requests().len());
    assert_eq!(to_a + to_b, 40);
    // Both idle: a fair coin each time; fewer than 5 of 40 is about 1 in 10^7.
    assert!(to_a >= 5 && to_b >= 5, "a: {to_a}, b: {to_b}");
}

// ---------------------------------------------------------------------------------
// 10. Path and query
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn path_and_query_pass_through_unchanged_including_percent_encoding() {
    let pools = Pools::start().await;
    let gw = pools.gateway("[routing]\nstable = \"blue\"\n");
    for target in [
        "/a%20b/%E4%B8%AD%E6%96%87/c%2Fd?q=%2F%3F%26%3D&x=a+b&empty=&flag",
        "/x//y/./z/../w?%7E=~&a=1&a=2",
        "/%25zz?q=%25",
    ] {
        let answer = get(&gw.url(target), &[]).await;
        assert_eq!(answer.status, 200, "{target}");
        let seen = pools.blue.last();
        assert_eq!(
            seen.uri.path_and_query().unwrap().as_str(),
            target,
            "target changed on the way"
        );
    }
}
