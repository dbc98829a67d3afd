//! Unit tests of the decision core, against the contract in the spec: every condition
//! kind (holds / fails / missing value), AND within a rule, first match wins, the
//! missing-value rule for each value source, the bucket formula (checked against
//! Python's `mmh3` on a committed fixture), monotonicity in N, `explain`, and that a
//! decision only borrows the request.
//!
//! Chains are built directly from compiled parts with the small builder below; the
//! config compiler has its own tests.
#![expect(
    clippy::single_range_in_vec_init,
    reason = "`[0..5]` is a list of indexed runs, one range of rules each"
)]

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;

use super::chain::Context;
use super::Verdict::{Fails, Holds, Missing};
use super::*;

// ---------------------------------------------------------------------------------
// Fixtures: pools, UA classes, conditions, chains, requests.
// ---------------------------------------------------------------------------------

const POOLS: [&str; 3] = ["blue", "green", "canary"];
const BLUE: PoolId = PoolId(0);
const GREEN: PoolId = PoolId(1);
const CANARY: PoolId = PoolId(2);

/// The spec's example classes, in config order: app (0), web (1), pc (2).
fn spec_ua() -> UaClassifier {
    let app = ["MyShop-App/".to_string(), "okhttp".to_string()];
    let web = [
        "Mobile".to_string(),
        "Android".to_string(),
        "iPhone".to_string(),
    ];
    let pc = [
        "Windows NT".to_string(),
        "Macintosh".to_string(),
        "X11".to_string(),
    ];
    UaClassifier::new([("app", &app[..]), ("web", &web[..]), ("pc", &pc[..])]).unwrap()
}

const UA_APP: &str = "MyShop-App/3.2.1 (iPhone; iOS 17.1)";
const UA_WEB: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148";
const UA_PC: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0";
const UA_UNCLASSIFIED: &str = "curl/8.5.0";

fn bytes(s: &str) -> Box<[u8]> {
    s.as_bytes().into()
}

fn header_name(name: &str) -> HeaderName {
    HeaderName::from_bytes(name.as_bytes()).unwrap()
}

fn header(name: &str, test: HeaderTest) -> Condition {
    Condition::Header {
        name: header_name(name),
        test,
    }
}

fn exact(name: &str, value: &str) -> Condition {
    header(name, HeaderTest::Exact(bytes(value)))
}

fn prefix(name: &str, value: &str) -> Condition {
    header(name, HeaderTest::Prefix(bytes(value)))
}

fn regex(name: &str, pattern: &str) -> Condition {
    header(
        name,
        HeaderTest::Regex(regex::bytes::Regex::new(pattern).unwrap()),
    )
}

fn present(name: &str, want: bool) -> Condition {
    header(name, HeaderTest::Present(want))
}

fn key_set(values: &[&str]) -> KeySet {
    values.iter().map(|v| bytes(v)).collect()
}

fn whitelist(keys: &[&str]) -> Condition {
    Condition::Whitelist(key_set(keys))
}

fn city(cities: &[&str]) -> Condition {
    Condition::City(key_set(cities))
}

fn channel(channels: &[&str]) -> Condition {
    Condition::Channel(key_set(channels))
}

/// A `ua` condition over the spec's classes.
fn ua(classes: &[&str]) -> Condition {
    let classifier = spec_ua();
    Condition::Ua(classes.iter().fold(0, |mask, name| {
        mask | 1u64 << classifier.id(name).expect("a spec class")
    }))
}

fn permille(permille: u16, salt: &str) -> Condition {
    Condition::Permille {
        permille,
        salt: bytes(salt),
    }
}

fn rate(rate: f64) -> Condition {
    Condition::Rate(rate)
}

fn header_source(name: &str) -> ValueSource {
    ValueSource::Header(header_name(name))
}

fn cookie_source(name: &str) -> ValueSource {
    ValueSource::Cookie(name.into())
}

fn query_source(name: &str) -> ValueSource {
    ValueSource::Query(name.into())
}

/// A chain under construction: stable `blue`, the spec's sources (`x-user-id`,
/// `x-city-id`, `x-channel` headers) and UA classes, no rules.
struct ChainBuilder {
    rules: Vec<Rule>,
    stable: PoolId,
    sources: Sources,
    ua: UaClassifier,
}

fn chain() -> ChainBuilder {
    ChainBuilder {
        rules: Vec::new(),
        stable: BLUE,
        sources: Sources {
            user_key: Some(header_source("x-user-id")),
            city: Some(header_source("x-city-id")),
            channel: Some(header_source("x-channel")),
            sticky_cookie: None,
        },
        ua: spec_ua(),
    }
}

impl ChainBuilder {
    fn rule(
        mut self,
        name: &str,
        to: PoolId,
        conditions: impl IntoIterator<Item = Condition>,
    ) -> Self {
        self.rules.push(Rule {
            name: name.into(),
            conditions: conditions.into_iter().collect(),
            pool: to,
        });
        self
    }

    fn stable(mut self, pool: PoolId) -> Self {
        self.stable = pool;
        self
    }

    fn sources(mut self, sources: Sources) -> Self {
        self.sources = sources;
        self
    }

    fn ua_classes(mut self, ua: UaClassifier) -> Self {
        self.ua = ua;
        self
    }

    fn build(self) -> Chain {
        Chain::new(
            self.rules,
            self.stable,
            self.sources,
            self.ua,
            POOLS.iter().map(|&p| p.into()).collect(),
        )
    }
}

/// An owned request; `view()` borrows it the way the proxy does.
#[derive(Debug, Default, Clone)]
struct Req {
    headers: HeaderMap,
    query: Option<String>,
}

fn req() -> Req {
    Req::default()
}

impl Req {
    /// Appends a header value (so calling it twice repeats the header).
    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.append(
            header_name(name),
            HeaderValue::from_bytes(value.as_bytes()).unwrap(),
        );
        self
    }

    fn user(self, key: &str) -> Self {
        self.header("x-user-id", key)
    }

    fn query(mut self, query: &str) -> Self {
        self.query = Some(query.to_string());
        self
    }

    fn view(&self) -> RequestView<'_> {
        RequestView::new(&self.headers, self.query.as_deref())
    }
}

/// The random source for requests that must not reach a `rate` condition.
fn no_draw() -> f64 {
    panic!("no rate condition should have been evaluated")
}

fn decide(chain: &Chain, req: &Req) -> Decision {
    chain.decide(req.view(), &mut no_draw)
}

/// Decides with fixed draws; returns the decision and how many draws it used.
fn decide_with(chain: &Chain, req: &Req, draws: &[f64]) -> (Decision, usize) {
    let mut used = 0;
    let decision = chain.decide(req.view(), &mut || {
        let draw = *draws.get(used).expect("more draws than the test provided");
        used += 1;
        draw
    });
    (decision, used)
}

fn explain_with(chain: &Chain, req: &Req, draws: &[f64]) -> Explanation {
    let mut next = draws.iter().copied();
    chain.explain(req.view(), &mut || {
        next.next().expect("more draws than the test provided")
    })
}

/// The verdict of one (non-`rate`) condition on one request, evaluated in a chain
/// built by `builder` with that condition as its only rule (to `canary`). Also checks
/// that `decide` agrees: a holding condition sends the request to the rule's pool,
/// anything else falls through to `blue`.
fn verdict_in(builder: ChainBuilder, condition: Condition, req: &Req) -> Verdict {
    let chain = builder.rule("only", CANARY, [condition]).build();
    let mut random = no_draw;
    let mut cx = Context::new(&chain, req.view(), &mut random);
    let verdict = chain.rules()[0].conditions[0].check(&mut cx);
    let decision = decide(&chain, req);
    let want = if verdict.holds() {
        (CANARY, Some(RuleId(0)))
    } else {
        (BLUE, None)
    };
    assert_eq!(
        (decision.pool, decision.rule),
        want,
        "decide disagrees with the verdict {verdict:?}"
    );
    verdict
}

fn verdict(condition: Condition, req: &Req) -> Verdict {
    verdict_in(chain(), condition, req)
}

// ---------------------------------------------------------------------------------
// 1. Conditions: header.
// ---------------------------------------------------------------------------------

#[test]
fn header_exact_holds_on_the_same_value() {
    let r = req().header("x-user-group", "internal-testers");
    assert_eq!(
        verdict(exact("x-user-group", "internal-testers"), &r),
        Holds
    );
}

#[test]
fn header_exact_fails_on_any_other_value() {
    for other in [
        "external",
        "internal",
        "internal-testers-2",
        " internal-testers",
        "Internal-Testers",
    ] {
        let r = req().header("x-user-group", other);
        assert_eq!(
            verdict(exact("x-user-group", "internal-testers"), &r),
            Fails,
            "value {other:?}"
        );
    }
    let empty = req().header("x-user-group", "");
    assert!(!verdict(exact("x-user-group", "internal-testers"), &empty).holds());
}

#[test]
fn header_exact_is_missing_without_the_header() {
    let c = || exact("x-user-group", "internal-testers");
    assert_eq!(verdict(c(), &req()), Missing);
    assert_eq!(
        verdict(c(), &req().header("x-other", "internal-testers")),
        Missing
    );
}

#[test]
fn header_names_compare_case_insensitively() {
    let r = req().header("X-USER-Group", "t");
    assert_eq!(verdict(exact("X-User-Group", "t"), &r), Holds);
}

#[test]
fn header_prefix_holds_when_the_value_starts_with_it() {
    for value in ["okhttp", "okhttp/4.12", "okhttp anything"] {
        let r = req().header("x-client", value);
        assert_eq!(
            verdict(prefix("x-client", "okhttp"), &r),
            Holds,
            "{value:?}"
        );
    }
}

#[test]
fn header_prefix_fails_when_the_value_does_not_start_with_it() {
    for value in ["my-okhttp", "okhtt", "OKHTTP/4", "ok"] {
        let r = req().header("x-client", value);
        assert_eq!(
            verdict(prefix("x-client", "okhttp"), &r),
            Fails,
            "{value:?}"
        );
    }
}

#[test]
fn header_prefix_is_missing_without_the_header() {
    assert_eq!(verdict(prefix("x-client", "okhttp"), &req()), Missing);
}

#[test]
fn header_regex_searches_unanchored() {
    let r = req().header("x-user-group", "internal-testers");
    assert_eq!(verdict(regex("x-user-group", "tester"), &r), Holds);
    assert_eq!(verdict(regex("x-user-group", "^internal-"), &r), Holds);
    assert_eq!(
        verdict(regex("x-user-group", "^internal-testers$"), &r),
        Holds
    );
    assert_eq!(verdict(regex("x-user-group", "-te?sters$"), &r), Holds);
}

#[test]
fn header_regex_fails_when_the_pattern_does_not_occur() {
    let r = req().header("x-user-group", "internal-testers");
    assert_eq!(verdict(regex("x-user-group", "^tester"), &r), Fails);
    assert_eq!(verdict(regex("x-user-group", "^internal$"), &r), Fails);
    assert_eq!(verdict(regex("x-user-group", "staff"), &r), Fails);
}

#[test]
fn header_regex_runs_on_non_ascii_header_bytes() {
    let r = req().header("x-region", "华北-灰度");
    assert_eq!(verdict(regex("x-region", "灰度$"), &r), Holds);
    assert_eq!(verdict(regex("x-region", "^灰度"), &r), Fails);
}

#[test]
fn header_regex_is_missing_without_the_header() {
    assert_eq!(verdict(regex("x-user-group", ".*"), &req()), Missing);
}

#[test]
fn header_present_true_holds_for_any_value_even_empty() {
    assert_eq!(
        verdict(present("x-debug", true), &req().header("x-debug", "1")),
        Holds
    );
    assert_eq!(
        verdict(present("x-debug", true), &req().header("x-debug", "")),
        Holds
    );
}

#[test]
fn header_present_true_does_not_hold_without_the_header() {
    // Absence is the value this test looks at, so it is a plain failure.
    assert_eq!(verdict(present("x-debug", true), &req()), Fails);
}

#[test]
fn header_present_false_holds_only_without_the_header() {
    assert_eq!(verdict(present("x-debug", false), &req()), Holds);
    assert_eq!(
        verdict(present("x-debug", false), &req().header("x-other", "1")),
        Holds
    );
    assert_eq!(
        verdict(present("x-debug", false), &req().header("x-debug", "1")),
        Fails
    );
    assert_eq!(
        verdict(present("x-debug", false), &req().header("x-debug", "")),
        Fails
    );
}

#[test]
fn repeated_header_holds_when_any_value_passes() {
    let r = req()
        .header("x-tag", "alpha")
        .header("x-tag", "beta")
        .header("x-tag", "gamma");
    assert_eq!(verdict(exact("x-tag", "alpha"), &r), Holds);
    assert_eq!(verdict(exact("x-tag", "gamma"), &r), Holds);
    assert_eq!(verdict(prefix("x-tag", "be"), &r), Holds);
    assert_eq!(verdict(regex("x-tag", "^gam"), &r), Holds);
    assert_eq!(verdict(present("x-tag", true), &r), Holds);
    assert_eq!(verdict(present("x-tag", false), &r), Fails);
}

#[test]
fn repeated_header_fails_when_no_value_passes() {
    let r = req().header("x-tag", "alpha").header("x-tag", "beta");
    assert_eq!(verdict(exact("x-tag", "delta"), &r), Fails);
    assert_eq!(verdict(prefix("x-tag", "ga"), &r), Fails);
    assert_eq!(verdict(regex("x-tag", "^eta"), &r), Fails);
}

// ---------------------------------------------------------------------------------
// 1. Conditions: whitelist, city, channel.
// ---------------------------------------------------------------------------------

#[test]
fn whitelist_holds_for_a_listed_user_key() {
    let c = || whitelist(&["1001", "1002"]);
    assert_eq!(verdict(c(), &req().user("1001")), Holds);
    assert_eq!(verdict(c(), &req().user("1002")), Holds);
}

#[test]
fn whitelist_fails_for_an_unlisted_user_key() {
    for key in ["1003", "01001", "100", "10011", "１００１"] {
        assert_eq!(
            verdict(whitelist(&["1001", "1002"]), &req().user(key)),
            Fails,
            "key {key:?}"
        );
    }
}

#[test]
fn whitelist_is_missing_without_a_user_key() {
    let c = || whitelist(&["1001"]);
    assert_eq!(verdict(c(), &req()), Missing);
    assert_eq!(verdict(c(), &req().user("")), Missing);
    assert_eq!(verdict(c(), &req().header("x-uid", "1001")), Missing);
}

#[test]
fn value_conditions_are_missing_when_no_source_is_configured() {
    let r = req()
        .user("42")
        .header("x-city-id", "42")
        .header("x-channel", "42");
    for c in [
        whitelist(&["42"]),
        city(&["42"]),
        channel(&["42"]),
        permille(1000, ""),
    ] {
        let described = format!("{c:?}");
        assert_eq!(
            verdict_in(chain().sources(Sources::default()), c, &r),
            Missing,
            "{described}"
        );
    }
}

#[test]
fn city_holds_for_a_listed_city_compared_as_text() {
    let c = || city(&["110000", "310000"]);
    assert_eq!(verdict(c(), &req().header("x-city-id", "110000")), Holds);
    assert_eq!(verdict(c(), &req().header("x-city-id", "310000")), Holds);
}

#[test]
fn city_fails_for_an_unlisted_city() {
    let c = || city(&["110000"]);
    assert_eq!(verdict(c(), &req().header("x-city-id", "120000")), Fails);
    assert_eq!(verdict(c(), &req().header("x-city-id", "0110000")), Fails);
    assert_eq!(verdict(c(), &req().header("x-city-id", "110000.0")), Fails);
}

#[test]
fn city_is_missing_without_a_city() {
    let c = || city(&["110000"]);
    assert_eq!(verdict(c(), &req()), Missing);
    assert_eq!(verdict(c(), &req().header("x-city-id", "")), Missing);
}

#[test]
fn channel_holds_for_a_listed_channel() {
    let c = || channel(&["appstore", "huawei"]);
    assert_eq!(verdict(c(), &req().header("x-channel", "huawei")), Holds);
    assert_eq!(verdict(c(), &req().header("x-channel", "appstore")), Holds);
}

#[test]
fn channel_fails_for_an_unlisted_channel() {
    let c = || channel(&["appstore", "huawei"]);
    assert_eq!(verdict(c(), &req().header("x-channel", "xiaomi")), Fails);
    assert_eq!(verdict(c(), &req().header("x-channel", "Huawei")), Fails);
}

#[test]
fn channel_is_missing_without_a_channel() {
    let c = || channel(&["appstore"]);
    assert_eq!(verdict(c(), &req()), Missing);
    assert_eq!(verdict(c(), &req().header("x-channel", "")), Missing);
}

// ---------------------------------------------------------------------------------
// 1. Conditions: ua.
// ---------------------------------------------------------------------------------

#[test]
fn ua_holds_when_the_request_class_is_in_the_mask() {
    let r = req().header("user-agent", UA_APP);
    assert_eq!(verdict(ua(&["app"]), &r), Holds);
    assert_eq!(verdict(ua(&["web", "app"]), &r), Holds);
    assert_eq!(verdict(ua(&["app", "web", "pc"]), &r), Holds);
    let r = req().header("user-agent", UA_PC);
    assert_eq!(verdict(ua(&["web", "pc"]), &r), Holds);
}

#[test]
fn ua_fails_when_the_request_class_is_not_in_the_mask() {
    assert_eq!(
        verdict(ua(&["app", "web"]), &req().header("user-agent", UA_PC)),
        Fails
    );
    assert_eq!(
        verdict(ua(&["pc"]), &req().header("user-agent", UA_WEB)),
        Fails
    );
}

#[test]
fn ua_class_is_the_first_in_config_order_not_the_leftmost_match() {
    // "Android" (web) occurs before "okhttp" (app), but app is listed first.
    let r = req().header("user-agent", "Mozilla/5.0 (Linux; Android 14) okhttp/4.12");
    assert_eq!(verdict(ua(&["app"]), &r), Holds);
    assert_eq!(verdict(ua(&["web"]), &r), Fails);
    // UA_APP mentions iPhone (web) too.
    assert_eq!(
        verdict(ua(&["web"]), &req().header("user-agent", UA_APP)),
        Fails
    );
}

#[test]
fn ua_substrings_compare_case_insensitively() {
    let r = req().header("user-agent", "OKHTTP/4.12");
    assert_eq!(verdict(ua(&["app"]), &r), Holds);
}

#[test]
fn ua_unclassified_user_agent_is_missing() {
    for agent in [UA_UNCLASSIFIED, "", "Googlebot/2.1"] {
        let r = req().header("user-agent", agent);
        assert_eq!(verdict(ua(&["app", "web", "pc"]), &r), Missing, "{agent:?}");
    }
}

#[test]
fn ua_absent_user_agent_is_missing() {
    assert_eq!(verdict(ua(&["app", "web", "pc"]), &req()), Missing);
}

#[test]
fn ua_without_any_classes_is_missing() {
    let r = req().header("user-agent", UA_APP);
    assert_eq!(
        verdict_in(
            chain().ua_classes(UaClassifier::default()),
            Condition::Ua(u64::MAX),
            &r
        ),
        Missing
    );
}

#[test]
fn ua_mask_covers_all_64_classes() {
    let patterns: Vec<(String, [String; 1])> = (0..MAX_UA_CLASSES)
        .map(|i| (format!("c{i}"), [format!("[c{i}]")]))
        .collect();
    let classifier = UaClassifier::new(patterns.iter().map(|(n, p)| (n.as_str(), &p[..]))).unwrap();
    let build = || chain().ua_classes(classifier.clone());
    let last = req().header("user-agent", "Agent [c63] 1.0");
    assert_eq!(verdict_in(build(), Condition::Ua(1 << 63), &last), Holds);
    assert_eq!(
        verdict_in(build(), Condition::Ua(u64::MAX >> 1), &last),
        Fails
    );
    let first = req().header("user-agent", "Agent [c63] [c0]");
    assert_eq!(verdict_in(build(), Condition::Ua(1), &first), Holds);
    assert_eq!(verdict_in(build(), Condition::Ua(1 << 63), &first), Fails);
}

// ---------------------------------------------------------------------------------
// 1. Conditions: permille.
// ---------------------------------------------------------------------------------

#[test]
fn permille_holds_exactly_when_the_bucket_is_below_n() {
    for key in [
        "42",
        "1001",
        "alice",
        "9b2f0c1e-1d4b-4c9e-8f00-3a1b2c3d4e5f",
        "用户-7",
    ] {
        let b = bucket(b"", key.as_bytes());
        let r = req().user(key);
        assert_eq!(verdict(permille(b + 1, ""), &r), Holds, "key {key:?}");
        assert_eq!(verdict(permille(b, ""), &r), Fails, "key {key:?}");
    }
}

#[test]
fn permille_bucket_of_the_spec_example_key() {
    // Computed independently: mmh3.hash(b"42", 0, signed=False) % 1000 == 814.
    assert_eq!(bucket(b"", b"42"), 814);
    assert_eq!(murmur3_x86_32(b"", b"42", 0) % BUCKETS, 814);
    let chain = chain()
        .rule("canary-3-permille", CANARY, [permille(3, "")])
        .build();
    let decision = decide(&chain, &req().user("42"));
    assert_eq!(decision.bucket, Some(814));
    assert_eq!(decision.pool, BLUE);
}

#[test]
fn permille_zero_never_holds() {
    let chain = chain().rule("none", CANARY, [permille(0, "")]).build();
    for i in 0..2_000 {
        let decision = decide(&chain, &req().user(&i.to_string()));
        assert_eq!(decision.pool, BLUE, "user {i}");
        assert!(decision.bucket.is_some());
    }
}

#[test]
fn permille_thousand_always_holds() {
    let chain = chain().rule("all", CANARY, [permille(1000, "")]).build();
    for i in 0..2_000 {
        assert_eq!(
            decide(&chain, &req().user(&i.to_string())).pool,
            CANARY,
            "user {i}"
        );
    }
}

#[test]
fn permille_is_missing_without_a_user_key_even_at_thousand() {
    assert_eq!(verdict(permille(1000, ""), &req()), Missing);
    assert_eq!(verdict(permille(1000, ""), &req().user("")), Missing);
    let chain = chain().rule("all", CANARY, [permille(1000, "")]).build();
    assert_eq!(decide(&chain, &req()).bucket, None);
}

#[test]
fn permille_salt_is_prepended_to_the_key() {
    assert_eq!(bucket(b"exp-", b"42"), bucket(b"", b"exp-42"));
    let salted = chain().rule("r", CANARY, [permille(1000, "exp-")]).build();
    let decision = decide(&salted, &req().user("42"));
    assert_eq!(decision.bucket, Some(bucket(b"", b"exp-42")));
}

#[test]
fn permille_salt_changes_buckets() {
    let keys: Vec<String> = (0..1_000).map(|i| i.to_string()).collect();
    let moved = keys
        .iter()
        .filter(|k| bucket(b"", k.as_bytes()) != bucket(b"exp-2", k.as_bytes()))
        .count();
    assert!(moved > 980, "only {moved} of 1000 keys changed bucket");

    // A key in the first half under one salt and in the second half under the other
    // is in a 50% rollout under one salt only.
    let key = keys
        .iter()
        .find(|k| bucket(b"", k.as_bytes()) < 500 && bucket(b"exp-2", k.as_bytes()) >= 500)
        .expect("some key moves across the half");
    let r = req().user(key);
    assert_eq!(verdict(permille(500, ""), &r), Holds);
    assert_eq!(verdict(permille(500, "exp-2"), &r), Fails);
}

#[test]
fn decision_reports_the_bucket_only_when_a_permille_condition_ran() {
    let r = req().user("42");
    let no_permille = chain().rule("w", CANARY, [whitelist(&["42"])]).build();
    assert_eq!(decide(&no_permille, &r).bucket, None);

    // Not reached: the rule's first condition fails.
    let unreached = chain()
        .rule("r", CANARY, [exact("x-beta", "1"), permille(1000, "")])
        .build();
    assert_eq!(decide(&unreached, &r).bucket, None);

    // Evaluated and failed; a later rule decides; the bucket is still reported.
    let evaluated = chain()
        .rule("p", CANARY, [permille(0, "")])
        .rule("w", GREEN, [whitelist(&["42"])])
        .build();
    let decision = decide(&evaluated, &r);
    assert_eq!((decision.pool, decision.rule), (GREEN, Some(RuleId(1))));
    assert_eq!(decision.bucket, Some(814));
}

// ---------------------------------------------------------------------------------
// 1. Conditions: rate.
// ---------------------------------------------------------------------------------

#[test]
fn rate_holds_when_the_draw_is_below_the_rate() {
    let chain = chain().rule("r", CANARY, [rate(0.25)]).build();
    for draw in [0.0, 0.1, 0.2499] {
        assert_eq!(
            decide_with(&chain, &req(), &[draw]),
            (
                Decision {
                    pool: CANARY,
                    rule: Some(RuleId(0)),
                    bucket: None,
                    cohort: None,
                    group: 0
                },
                1
            ),
            "draw {draw}"
        );
    }
}

#[test]
fn rate_fails_when_the_draw_is_at_or_above_the_rate() {
    let chain = chain().rule("r", CANARY, [rate(0.25)]).build();
    for draw in [0.25, 0.2500001, 0.9, 0.999_999] {
        let (decision, used) = decide_with(&chain, &req(), &[draw]);
        assert_eq!(
            (decision.pool, decision.rule, used),
            (BLUE, None, 1),
            "draw {draw}"
        );
    }
}

#[test]
fn rate_zero_never_holds() {
    let chain = chain().rule("r", CANARY, [rate(0.0)]).build();
    for draw in [0.0, f64::MIN_POSITIVE, 1e-12, 0.5, 1.0 - f64::EPSILON] {
        assert_eq!(
            decide_with(&chain, &req(), &[draw]).0.pool,
            BLUE,
            "draw {draw}"
        );
    }
}

#[test]
fn rate_one_always_holds() {
    let chain = chain().rule("r", CANARY, [rate(1.0)]).build();
    for draw in [0.0, 0.5, 0.999_999, 1.0 - f64::EPSILON] {
        assert_eq!(
            decide_with(&chain, &req(), &[draw]).0.pool,
            CANARY,
            "draw {draw}"
        );
    }
}

#[test]
fn rate_is_not_drawn_when_an_earlier_condition_of_the_rule_fails() {
    let chain = chain()
        .rule("r", CANARY, [exact("x-beta", "1"), rate(1.0)])
        .build();
    // `decide` panics through `no_draw` if the rate condition draws.
    assert_eq!(decide(&chain, &req().header("x-beta", "0")).pool, BLUE);
    let (_, used) = decide_with(&chain, &req().header("x-beta", "0"), &[0.0]);
    assert_eq!(used, 0);
}

#[test]
fn rate_is_not_drawn_when_an_earlier_condition_of_the_rule_is_missing() {
    let chain = chain()
        .rule("r", CANARY, [whitelist(&["42"]), rate(1.0)])
        .build();
    assert_eq!(decide(&chain, &req()).pool, BLUE);
}

#[test]
fn rate_is_drawn_after_earlier_conditions_hold() {
    let chain = chain()
        .rule("r", CANARY, [exact("x-beta", "1"), rate(0.5)])
        .build();
    let r = req().header("x-beta", "1");
    assert_eq!(decide_with(&chain, &r, &[0.4]).0.pool, CANARY);
    assert_eq!(decide_with(&chain, &r, &[0.6]).0.pool, BLUE);
}

#[test]
fn conditions_after_a_failing_one_are_not_evaluated() {
    // The rate fails first, so the permille condition never computes a bucket.
    let chain = chain()
        .rule("r", CANARY, [rate(0.0), permille(1000, "")])
        .build();
    let (decision, used) = decide_with(&chain, &req().user("42"), &[0.5]);
    assert_eq!((decision.pool, decision.bucket, used), (BLUE, None, 1));
}

#[test]
fn each_rate_condition_reached_draws_once_in_rule_order() {
    let chain = chain()
        .rule("first", GREEN, [rate(0.5)])
        .rule("second", CANARY, [rate(0.5)])
        .build();
    let (decision, used) = decide_with(&chain, &req(), &[0.7, 0.1]);
    assert_eq!((decision.rule, used), (Some(RuleId(1)), 2));
    // The first rule wins; the second is never reached and never draws.
    let (decision, used) = decide_with(&chain, &req(), &[0.1]);
    assert_eq!((decision.rule, used), (Some(RuleId(0)), 1));
    let (decision, used) = decide_with(&chain, &req(), &[0.9, 0.9]);
    assert_eq!((decision.pool, decision.rule, used), (BLUE, None, 2));
}

// ---------------------------------------------------------------------------------
// 2. Precedence and AND.
// ---------------------------------------------------------------------------------

#[test]
fn the_first_matching_rule_wins() {
    let chain = chain()
        .rule("staff", GREEN, [whitelist(&["1001"])])
        .rule(
            "testers",
            CANARY,
            [exact("x-user-group", "internal-testers")],
        )
        .build();
    let r = req()
        .user("1001")
        .header("x-user-group", "internal-testers");
    let decision = decide(&chain, &r);
    assert_eq!((decision.pool, decision.rule), (GREEN, Some(RuleId(0))));
}

#[test]
fn a_later_rule_matches_when_the_earlier_ones_fail_or_miss() {
    let chain = chain()
        .rule("fails", GREEN, [exact("x-user-group", "staff")])
        .rule("misses", GREEN, [city(&["110000"])])
        .rule("holds", CANARY, [channel(&["huawei"])])
        .rule("also-holds", GREEN, [channel(&["huawei"])])
        .build();
    let r = req()
        .header("x-user-group", "guests")
        .header("x-channel", "huawei");
    let decision = decide(&chain, &r);
    assert_eq!((decision.pool, decision.rule), (CANARY, Some(RuleId(2))));
}

#[test]
fn no_matching_rule_sends_to_stable_without_a_rule() {
    let rules = |b: ChainBuilder| {
        b.rule("staff", CANARY, [whitelist(&["1001"])])
            .rule("beijing", CANARY, [city(&["110000"])])
    };
    let r = req().user("42");
    assert_eq!(
        decide(&rules(chain()).build(), &r),
        Decision {
            pool: BLUE,
            rule: None,
            bucket: None,
            cohort: None,
            group: 0
        }
    );
    // The blue/green switch: only `stable` changes.
    let decision = decide(&rules(chain().stable(GREEN)).build(), &r);
    assert_eq!((decision.pool, decision.rule), (GREEN, None));
}

#[test]
fn an_empty_chain_sends_everything_to_stable() {
    let chain = chain().stable(GREEN).build();
    let decision = decide(&chain, &req().user("1001"));
    assert_eq!((decision.pool, decision.rule), (GREEN, None));
}

#[test]
fn a_rule_to_the_stable_pool_still_reports_itself() {
    let chain = chain().rule("pin-blue", BLUE, [whitelist(&["7"])]).build();
    let decision = decide(&chain, &req().user("7"));
    assert_eq!((decision.pool, decision.rule), (BLUE, Some(RuleId(0))));
}

#[test]
fn a_rule_holds_only_when_all_its_conditions_hold() {
    let chain = chain()
        .rule("beijing-app", GREEN, [city(&["110000"]), ua(&["app"])])
        .build();
    let matched = |r: &Req| decide(&chain, r).rule.is_some();
    let beijing = || req().header("x-city-id", "110000");
    let shanghai = || req().header("x-city-id", "310000");
    assert!(matched(&beijing().header("user-agent", UA_APP)));
    assert!(!matched(&beijing().header("user-agent", UA_WEB)));
    assert!(!matched(&beijing().header("user-agent", UA_UNCLASSIFIED)));
    assert!(!matched(&beijing()));
    assert!(!matched(&shanghai().header("user-agent", UA_APP)));
    assert!(!matched(&req().header("user-agent", UA_APP)));
    assert!(!matched(&shanghai().header("user-agent", UA_WEB)));
}

#[test]
fn the_spec_example_chain_routes_as_documented() {
    let chain = chain()
        .rule(
            "internal-testers",
            CANARY,
            [exact("x-user-group", "internal-testers")],
        )
        .rule("staff", CANARY, [whitelist(&["1001", "1002"])])
        .rule(
            "beijing-app-users",
            GREEN,
            [city(&["110000"]), ua(&["app"])],
        )
        .rule("appstore", CANARY, [channel(&["appstore", "huawei"])])
        .rule("canary-3-permille", CANARY, [permille(3, "")])
        .rule("random-1pct", CANARY, [rate(0.01)])
        .build();
    let lucky = (0..)
        .map(|i: u32| i.to_string())
        .find(|k| bucket(b"", k.as_bytes()) < 3)
        .unwrap();
    let name = |d: Decision| d.rule.map(|r| &*chain.rule(r).name);
    let cases: Vec<(Req, &[f64], PoolId, Option<&str>)> = vec![
        (
            req().user("42").header("x-user-group", "internal-testers"),
            &[],
            CANARY,
            Some("internal-testers"),
        ),
        (req().user("1002"), &[], CANARY, Some("staff")),
        (
            req()
                .user("42")
                .header("x-city-id", "110000")
                .header("user-agent", UA_APP),
            &[],
            GREEN,
            Some("beijing-app-users"),
        ),
        (
            req().user("42").header("x-channel", "huawei"),
            &[],
            CANARY,
            Some("appstore"),
        ),
        (req().user(&lucky), &[], CANARY, Some("canary-3-permille")),
        (req().user("42"), &[0.005], CANARY, Some("random-1pct")),
        (req().user("42"), &[0.5], BLUE, None),
        // No user key: whitelist and permille miss, the chain goes on to the draw.
        (req(), &[0.5], BLUE, None),
        (
            req()
                .header("x-city-id", "110000")
                .header("user-agent", UA_WEB),
            &[0.0],
            CANARY,
            Some("random-1pct"),
        ),
    ];
    for (r, draws, pool, rule) in cases {
        let (decision, used) = decide_with(&chain, &r, draws);
        assert_eq!((decision.pool, name(decision)), (pool, rule), "{r:?}");
        assert_eq!(used, draws.len(), "draws used for {r:?}");
    }
}

// ---------------------------------------------------------------------------------
// 3. Value sources: a missing or empty value does not hold, and the chain goes on.
// ---------------------------------------------------------------------------------

/// A chain whose user key, city and channel all come from one kind of source, named
/// `uid`, `city` and `ch`.
fn sources_of(kind: fn(&str) -> ValueSource) -> ChainBuilder {
    chain().sources(Sources {
        user_key: Some(kind("uid")),
        city: Some(kind("city")),
        channel: Some(kind("ch")),
        sticky_cookie: None,
    })
}

/// One condition per value it reads, each holding for the value `42`.
fn conditions_on_42() -> Vec<Condition> {
    vec![
        whitelist(&["42"]),
        city(&["42"]),
        channel(&["42"]),
        permille(1000, ""),
    ]
}

fn assert_every_value_condition(kind: fn(&str) -> ValueSource, r: &Req, want: Verdict) {
    for c in conditions_on_42() {
        let described = format!("{c:?}");
        assert_eq!(
            verdict_in(sources_of(kind), c, r),
            want,
            "{described} on {r:?}"
        );
    }
}

/// With the value missing from the first rule, the second (unconditional) one wins.
fn assert_chain_goes_on(kind: fn(&str) -> ValueSource, r: &Req) {
    for c in conditions_on_42() {
        let chain = sources_of(kind)
            .rule("reads-a-value", CANARY, [c])
            .rule("fallback", GREEN, [present("x-nothing", false)])
            .build();
        let decision = decide(&chain, r);
        assert_eq!(
            (decision.pool, decision.rule),
            (GREEN, Some(RuleId(1))),
            "{r:?}"
        );
    }
}

#[test]
fn header_source_value_is_read() {
    let r = req()
        .header("uid", "42")
        .header("city", "42")
        .header("ch", "42");
    assert_every_value_condition(header_source, &r, Holds);
}

#[test]
fn header_source_uses_the_first_of_repeated_values() {
    let r = req().header("uid", "7").header("uid", "42");
    let chain = || sources_of(header_source);
    assert_eq!(verdict_in(chain(), whitelist(&["7"]), &r), Holds);
    assert_eq!(verdict_in(chain(), whitelist(&["42"]), &r), Fails);
}

#[test]
fn header_source_absent_is_missing() {
    for r in [req(), req().header("x-uid", "42").header("x-city", "42")] {
        assert_every_value_condition(header_source, &r, Missing);
        assert_chain_goes_on(header_source, &r);
    }
}

#[test]
fn header_source_empty_is_missing() {
    let r = req().header("uid", "").header("city", "").header("ch", "");
    assert_every_value_condition(header_source, &r, Missing);
    assert_chain_goes_on(header_source, &r);
}

#[test]
fn cookie_source_value_is_read() {
    for r in [
        req().header("cookie", "uid=42; city=42; ch=42"),
        req().header("cookie", "a=1;uid=42 ; city=\"42\";ch=42"),
        req()
            .header("cookie", "a=1; uid=42")
            .header("cookie", "city=42; ch=42"),
    ] {
        assert_every_value_condition(cookie_source, &r, Holds);
    }
}

#[test]
fn cookie_source_absent_is_missing() {
    for r in [
        req(),
        req().header("cookie", "other=42"),
        req().header("cookie", "uidx=42; xcity=42; c=42"),
        req().header("x-uid", "42"),
    ] {
        assert_every_value_condition(cookie_source, &r, Missing);
        assert_chain_goes_on(cookie_source, &r);
    }
}

#[test]
fn cookie_source_empty_is_missing() {
    for r in [
        req().header("cookie", "uid=; city=; ch="),
        req().header("cookie", "uid=\"\"; city=\"\"; ch=\"\""),
        req().header("cookie", "uid; city; ch"),
    ] {
        assert_every_value_condition(cookie_source, &r, Missing);
        assert_chain_goes_on(cookie_source, &r);
    }
}

#[test]
fn query_source_value_is_read() {
    for q in [
        "uid=42&city=42&ch=42",
        "a=1&uid=42&city=%34%32&ch=4%32",
        "ch=42&city=42&uid=42&uid=7",
    ] {
        assert_every_value_condition(query_source, &req().query(q), Holds);
    }
}

#[test]
fn query_source_absent_is_missing() {
    for r in [
        req(),
        req().query(""),
        req().query("other=42"),
        req().query("uidx=42&xcity=42"),
        req().header("uid", "42"),
    ] {
        assert_every_value_condition(query_source, &r, Missing);
        assert_chain_goes_on(query_source, &r);
    }
}

#[test]
fn query_source_empty_is_missing() {
    for q in ["uid=&city=&ch=", "uid&city&ch"] {
        let r = req().query(q);
        assert_every_value_condition(query_source, &r, Missing);
        assert_chain_goes_on(query_source, &r);
    }
}

#[test]
fn permille_hashes_the_same_key_from_every_source_kind() {
    let want = Some(bucket(b"s", b"user 42"));
    let requests = [
        (
            header_source as fn(&str) -> ValueSource,
            req().header("uid", "user 42"),
        ),
        (cookie_source, req().header("cookie", "uid=user 42")),
        (query_source, req().query("uid=user+42")),
        (query_source, req().query("uid=user%2042")),
    ];
    for (kind, r) in requests {
        let chain = sources_of(kind)
            .rule("p", CANARY, [permille(1000, "s")])
            .build();
        assert_eq!(decide(&chain, &r).bucket, want, "{r:?}");
    }
}

#[test]
fn query_source_keeps_percent_decoded_bytes() {
    let chain = sources_of(query_source)
        .rule("p", CANARY, [permille(1000, "")])
        .build();
    let fe = decide(&chain, &req().query("uid=%FE")).bucket;
    let ff = decide(&chain, &req().query("uid=%FF")).bucket;
    assert_eq!(ff, Some(bucket(b"", b"\xff")));
    assert_ne!(fe, ff);
}

// ---------------------------------------------------------------------------------
// 4. The bucket agrees with an independent MurmurHash3 (Python `mmh3`).
// ---------------------------------------------------------------------------------

/// Generated by `scripts/mmh3_buckets.py`: `salt \t key \t mmh3(salt+key, 0) % 1000`.
const MMH3_FIXTURE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/mmh3_buckets.tsv"
));

struct Row {
    salt: &'static str,
    key: &'static str,
    bucket: u16,
}

fn fixture_rows() -> Vec<Row> {
    let mut lines = MMH3_FIXTURE.lines();
    assert_eq!(lines.next(), Some("salt\tkey\tbucket"), "fixture header");
    lines
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let [salt, key, bucket] = fields[..] else {
                panic!("fixture line {line:?} does not have 3 columns");
            };
            Row {
                salt,
                key,
                bucket: bucket.parse().expect("a bucket number"),
            }
        })
        .collect()
}

#[test]
fn bucket_agrees_with_python_mmh3_fixture() {
    let rows = fixture_rows();
    assert_eq!(rows.len(), 10_000);
    let salts: BTreeSet<&str> = rows.iter().map(|r| r.salt).collect();
    assert_eq!(salts, BTreeSet::from(["", "canary-2024", "灰度-β"]));
    assert!(rows.iter().any(|r| !r.key.is_ascii()), "unicode ids");
    assert!(rows.iter().any(|r| r.key.len() == 36), "uuids");

    for row in &rows {
        assert_eq!(
            bucket(row.salt.as_bytes(), row.key.as_bytes()),
            row.bucket,
            "salt {:?} key {:?}",
            row.salt,
            row.key
        );
    }

    for n in [1u16, 3, 50, 500] {
        let chains: HashMap<&str, Chain> = salts
            .iter()
            .map(|&salt| {
                let chain = chain()
                    .rule("canary-permille", CANARY, [permille(n, salt)])
                    .build();
                (salt, chain)
            })
            .collect();
        let mut in_canary = 0;
        for row in &rows {
            let decision = decide(&chains[row.salt], &req().user(row.key));
            let want = if row.bucket < n {
                (CANARY, Some(RuleId(0)))
            } else {
                (BLUE, None)
            };
            assert_eq!(
                (decision.pool, decision.rule),
                want,
                "N {n} salt {:?} key {:?} bucket {}",
                row.salt,
                row.key,
                row.bucket
            );
            assert_eq!(decision.bucket, Some(row.bucket));
            in_canary += usize::from(decision.pool == CANARY);
        }
        assert!(
            in_canary > 0,
            "N {n}: nobody in canary; the test would be vacuous"
        );
    }
}

// ---------------------------------------------------------------------------------
// 5. Monotone in N: raising N only adds users.
// ---------------------------------------------------------------------------------

#[test]
fn raising_permille_only_adds_users() {
    let ids: Vec<Req> = (0..10_000)
        .map(|i| req().user(&format!("user-{i}")))
        .collect();
    // Each id's bucket once, as the chain computes it.
    let probe = chain().rule("probe", CANARY, [permille(0, "")]).build();
    let buckets: Vec<u16> = ids
        .iter()
        .map(|r| decide(&probe, r).bucket.expect("a bucket"))
        .collect();

    // The chain's own verdict at the id's threshold: out at N = bucket, in at bucket + 1,
    // and at the ends of the range.
    let at: Vec<Chain> = (0..=BUCKETS as u16)
        .map(|n| chain().rule("p", CANARY, [permille(n, "")]).build())
        .collect();
    let matches = |n: u16, r: &Req| decide(&at[n as usize], r).rule.is_some();
    for (r, &b) in ids.iter().zip(&buckets) {
        assert!(!matches(0, r) && matches(1000, r));
        assert!(!matches(b, r), "{r:?} matched at its own bucket {b}");
        assert!(matches(b + 1, r), "{r:?} did not match at {}", b + 1);
    }

    // Over the whole range: whoever matches at N matches at N + 1.
    let mut matched_before = vec![false; ids.len()];
    let mut count_before = 0;
    for n in 0..=BUCKETS as u16 {
        let matched_now: Vec<bool> = buckets.iter().map(|&b| b < n).collect();
        for (i, (&before, &now)) in matched_before.iter().zip(&matched_now).enumerate() {
            assert!(!before || now, "user-{i} dropped out when N rose to {n}");
        }
        let count = matched_now.iter().filter(|&&m| m).count();
        assert!(count >= count_before);
        matched_before = matched_now;
        count_before = count;
    }
    assert_eq!(count_before, ids.len(), "everyone matches at N = 1000");
}

// ---------------------------------------------------------------------------------
// 6. Explain.
// ---------------------------------------------------------------------------------

/// Four rules with one or two conditions each, ending in a rate.
fn explained_chain() -> Chain {
    chain()
        .rule("staff", CANARY, [whitelist(&["1001"])])
        .rule(
            "testers",
            CANARY,
            [exact("x-user-group", "internal-testers")],
        )
        .rule(
            "beijing-app",
            GREEN,
            [present("x-city-id", true), city(&["110000"]), ua(&["app"])],
        )
        .rule("half", CANARY, [permille(500, "")])
        .rule("random", CANARY, [rate(0.5)])
        .build()
}

fn rule_names(e: &Explanation) -> Vec<&str> {
    e.rules.iter().map(|t| t.rule.as_str()).collect()
}

fn results(trace: &RuleTrace) -> Vec<&str> {
    trace.conditions.iter().map(|c| c.result).collect()
}

#[test]
fn explain_agrees_with_decide() {
    let chain = explained_chain();
    let low = (0..)
        .map(|i: u32| i.to_string())
        .find(|k| bucket(b"", k.as_bytes()) < 500)
        .unwrap();
    let high = (0..)
        .map(|i: u32| i.to_string())
        .find(|k| bucket(b"", k.as_bytes()) >= 500)
        .unwrap();
    let cases: Vec<(Req, &[f64])> = vec![
        (req().user("1001"), &[]),
        (req().header("x-user-group", "internal-testers"), &[]),
        (
            req()
                .header("x-city-id", "110000")
                .header("user-agent", UA_APP),
            &[0.1],
        ),
        (req().user(&low), &[]),
        (req().user(&high), &[0.1]),
        (req().user(&high), &[0.9]),
        (req(), &[0.3]),
        (req(), &[0.7]),
    ];
    for (r, draws) in cases {
        let (decision, _) = decide_with(&chain, &r, draws);
        let e = explain_with(&chain, &r, draws);
        assert_eq!(e.pool, chain.pool_name(decision.pool), "{r:?}");
        let rule = decision.rule.map_or("default", |id| &*chain.rule(id).name);
        assert_eq!(e.rule, rule, "{r:?}");
        assert_eq!(e.bucket, decision.bucket, "{r:?}");
    }
}

#[test]
fn explain_traces_every_rule_up_to_the_winner_only() {
    let chain = explained_chain();
    let r = req()
        .user("42")
        .header("x-city-id", "110000")
        .header("user-agent", UA_APP);
    let e = explain_with(&chain, &r, &[]);
    assert_eq!((e.pool.as_str(), e.rule.as_str()), ("green", "beijing-app"));
    assert_eq!(rule_names(&e), ["staff", "testers", "beijing-app"]);
    let matched: Vec<bool> = e.rules.iter().map(|t| t.matched).collect();
    assert_eq!(matched, [false, false, true]);
    assert_eq!(e.rules[2].to, "green");
    assert_eq!(results(&e.rules[2]), ["holds", "holds", "holds"]);
}

#[test]
fn explain_without_a_match_traces_every_rule_and_names_default() {
    let chain = explained_chain();
    let high = (0..)
        .map(|i: u32| i.to_string())
        .find(|k| bucket(b"", k.as_bytes()) >= 500)
        .unwrap();
    let e = explain_with(&chain, &req().user(&high), &[0.9]);
    assert_eq!((e.pool.as_str(), e.rule.as_str()), ("blue", "default"));
    assert_eq!(
        rule_names(&e),
        ["staff", "testers", "beijing-app", "half", "random"]
    );
    assert!(e.rules.iter().all(|t| !t.matched));
}

#[test]
fn explain_shows_missing_fails_and_holds_and_stops_at_the_first_failure() {
    let chain = explained_chain();
    // No user key, a wrong group, a city that is present but not Beijing.
    let r = req()
        .header("x-user-group", "guests")
        .header("x-city-id", "310000")
        .header("user-agent", UA_APP);
    let e = explain_with(&chain, &r, &[0.2]);
    assert_eq!(results(&e.rules[0]), ["missing value"]);
    assert_eq!(results(&e.rules[1]), ["fails"]);
    // The ua condition after the failing city is not evaluated, so not traced.
    assert_eq!(results(&e.rules[2]), ["holds", "fails"]);
    assert_eq!(results(&e.rules[3]), ["missing value"]);
    assert_eq!(results(&e.rules[4]), ["holds"]);
    assert!(e.rules[4].matched);
    assert_eq!(e.rule, "random");
}

#[test]
fn explain_describes_conditions_and_records_bucket_and_draw() {
    let chain = explained_chain();
    let high = (0..)
        .map(|i: u32| i.to_string())
        .find(|k| bucket(b"", k.as_bytes()) >= 500)
        .unwrap();
    let e = explain_with(&chain, &req().user(&high), &[0.25]);
    let staff = &e.rules[0].conditions[0];
    assert_eq!(staff.condition, "user key in whitelist (1 keys)");
    assert_eq!((staff.bucket, staff.draw), (None, None));
    assert_eq!(
        e.rules[1].conditions[0].condition,
        r#"header x-user-group = "internal-testers""#
    );
    assert_eq!(
        e.rules[2].conditions[0].condition,
        "header x-city-id present"
    );
    let half = &e.rules[3].conditions[0];
    assert_eq!(half.condition, r#"bucket < 500 (salt "")"#);
    assert_eq!(
        (half.result, half.bucket),
        ("fails", Some(bucket(b"", high.as_bytes())))
    );
    let random = &e.rules[4].conditions[0];
    assert_eq!(random.condition, "random draw < 0.5");
    assert_eq!(
        (random.result, random.draw, random.bucket),
        ("holds", Some(0.25), None)
    );
    assert_eq!(e.bucket, Some(bucket(b"", high.as_bytes())));
}

#[test]
fn explain_reports_the_values_the_request_carries() {
    let chain = explained_chain();
    let r = req()
        .user("42")
        .header("x-city-id", "110000")
        .header("x-channel", "huawei")
        .header("user-agent", UA_WEB);
    let e = explain_with(&chain, &r, &[0.9]);
    assert_eq!(e.user_key.as_deref(), Some("42"));
    assert_eq!(e.city.as_deref(), Some("110000"));
    assert_eq!(e.channel.as_deref(), Some("huawei"));
    assert_eq!(e.ua_class.as_deref(), Some("web"));
    let e = explain_with(&chain, &req().header("user-agent", UA_UNCLASSIFIED), &[0.9]);
    assert_eq!(
        (e.user_key, e.city, e.channel, e.ua_class),
        (None, None, None, None)
    );
}

#[test]
fn explain_traces_a_winning_rule_without_conditions() {
    let chain = chain()
        .rule(
            "testers",
            CANARY,
            [exact("x-user-group", "internal-testers")],
        )
        .rule("everyone", GREEN, [])
        .build();
    let decision = decide(&chain, &req());
    assert_eq!(decision.rule, Some(RuleId(1)));
    let e = explain_with(&chain, &req(), &[]);
    assert_eq!(e.rule, "everyone");
    assert_eq!(rule_names(&e), ["testers", "everyone"]);
    assert!(!e.rules[0].matched, "the failing rule is shown as matched");
    assert!(e.rules[1].matched);
}

// ---------------------------------------------------------------------------------
// 7. Decisions only borrow the request.
// ---------------------------------------------------------------------------------

#[test]
fn decide_works_on_a_borrowed_header_map_and_leaves_it_untouched() {
    let chain = chain()
        .rule("staff", CANARY, [whitelist(&["1001"])])
        .rule("half", GREEN, [permille(500, "")])
        .build();
    let mut headers = HeaderMap::new();
    headers.insert("x-user-id", HeaderValue::from_static("1001"));
    headers.append("cookie", HeaderValue::from_static("a=1"));
    let before = headers.clone();
    let query = String::from("uid=5");

    let view = RequestView::new(&headers, Some(&query));
    let first = chain.decide(view, &mut no_draw);
    // The view is Copy: the same borrowed request can be decided again.
    let second = chain.decide(view, &mut no_draw);
    assert_eq!(first, second);
    assert_eq!(headers, before);

    // The decision does not borrow the request.
    drop(headers);
    drop(query);
    assert_eq!((first.pool, first.rule), (CANARY, Some(RuleId(0))));
}

#[test]
fn value_sources_borrow_from_the_request_except_decoded_query_values() {
    let r = req()
        .header("uid", "42")
        .header("cookie", "uid=\"42\"")
        .query("uid=42&enc=4%32&plus=4+2");
    let view = r.view();
    let borrowed = |source: ValueSource| matches!(source.extract(&view), Some(Cow::Borrowed(_)));
    assert!(borrowed(header_source("uid")));
    assert!(borrowed(cookie_source("uid")));
    assert!(borrowed(query_source("uid")));
    assert_eq!(
        query_source("enc").extract(&view),
        Some(Cow::Owned(b"42".to_vec()))
    );
    assert_eq!(
        query_source("plus").extract(&view).as_deref(),
        Some(&b"4 2"[..])
    );
}

#[test]
fn a_chain_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Chain>();
    shareable::<Decision>();
}

// ---------------------------------------------------------------------------------
// 8. The rule index: `decide` skips runs of exact header rules, exactly as if it
//    had scanned them.
// ---------------------------------------------------------------------------------

/// The plain scan `explain` runs: the reference the index must agree with.
fn decide_linearly(chain: &Chain, req: &Req, random: &mut dyn FnMut() -> f64) -> Decision {
    let mut cx = Context::new(chain, req.view(), random);
    let rule = chain.evaluate(&mut cx, |_, _, _, _| {});
    chain.decision(rule, &cx)
}

/// Decides with fixed draws, checks that the linear scan makes the same decision
/// with as many draws, and returns the decision.
fn decide_as_linear(chain: &Chain, req: &Req, draws: &[f64]) -> Decision {
    let (decision, used) = decide_with(chain, req, draws);
    let mut linear_used = 0;
    let linear = decide_linearly(chain, req, &mut || {
        let draw = *draws
            .get(linear_used)
            .expect("more draws than the test provided");
        linear_used += 1;
        draw
    });
    assert_eq!(
        (decision, used),
        (linear, linear_used),
        "indexed (decision, draws) differ from linear for {req:?}"
    );
    decision
}

/// `n` rules `<prefix><i>` to canary, each testing `header = "<prefix><i>"`.
fn exact_run(builder: ChainBuilder, header: &str, prefix: &str, n: usize) -> ChainBuilder {
    (0..n).fold(builder, |b, i| {
        let value = format!("{prefix}{i}");
        b.rule(&value, CANARY, [exact(header, &value)])
    })
}

fn group(value: &str) -> Req {
    req().header("x-user-group", value)
}

#[test]
fn an_indexed_run_finds_its_first_middle_and_last_rule() {
    let chain = exact_run(chain(), "x-user-group", "g", 8)
        .rule("everyone", GREEN, [])
        .build();
    assert_eq!(chain.indexed_runs(), [0..8]);
    for i in [0, 1, 4, 6, 7] {
        let decision = decide_as_linear(&chain, &group(&format!("g{i}")), &[]);
        assert_eq!((decision.pool, decision.rule), (CANARY, Some(RuleId(i))));
    }
    // A value no rule of the run wants goes on to the next rule.
    for other in ["g8", "g", "G1", "g1 ", ""] {
        let decision = decide_as_linear(&chain, &group(other), &[]);
        assert_eq!((decision.pool, decision.rule), (GREEN, Some(RuleId(8))));
    }
}

#[test]
fn a_run_ends_at_the_first_rule_not_starting_with_an_exact_test_of_its_header() {
    let chain = exact_run(chain(), "x-user-group", "g", 5)
        .rule("beta-prefix", GREEN, [prefix("x-user-group", "beta-")])
        .rule("staff", GREEN, [whitelist(&["42"])])
        .rule(
            "tenant-then-group",
            CANARY,
            [exact("x-tenant", "t"), exact("x-user-group", "g7")],
        )
        .rule("g9", BLUE, [exact("x-user-group", "g9")])
        .build();
    assert_eq!(chain.indexed_runs(), [0..5]);
    let rule = |r: &Req| decide_as_linear(&chain, r, &[]).rule;
    assert_eq!(rule(&group("g3")), Some(RuleId(3)));
    assert_eq!(rule(&group("beta-1")), Some(RuleId(5)));
    assert_eq!(rule(&group("zz").user("42")), Some(RuleId(6)));
    assert_eq!(rule(&group("g7").header("x-tenant", "t")), Some(RuleId(7)));
    assert_eq!(rule(&group("g7")), None);
    assert_eq!(rule(&group("g9")), Some(RuleId(8)));
    // Rules after the run are reached without the run's header too.
    assert_eq!(rule(&req().user("42")), Some(RuleId(6)));
}

#[test]
fn an_absent_header_skips_the_whole_run_to_later_rules_or_stable() {
    // Every rule of the run would draw after its header test; `no_draw` panics if one
    // does, so none of the run is evaluated past its first condition.
    let chain = (0..6)
        .fold(chain().stable(GREEN), |b, i| {
            let value = format!("g{i}");
            b.rule(&value, CANARY, [exact("x-user-group", &value), rate(1.0)])
        })
        .rule("staff", BLUE, [whitelist(&["42"])])
        .build();
    assert_eq!(chain.indexed_runs(), [0..6]);
    let decision = decide(&chain, &req().user("42"));
    assert_eq!((decision.pool, decision.rule), (BLUE, Some(RuleId(6))));
    let decision = decide(&chain, &req().user("7").header("x-other", "g1"));
    assert_eq!((decision.pool, decision.rule), (GREEN, None));
    for r in [req().user("42"), req()] {
        decide_as_linear(&chain, &r, &[]);
    }
}

#[test]
fn repeated_header_values_give_the_linear_result() {
    let chain = exact_run(chain(), "x-user-group", "g", 5).build();
    assert_eq!(chain.indexed_runs(), [0..5]);
    let rule = |values: &[&str]| {
        let r = values
            .iter()
            .fold(req(), |r, v| r.header("x-user-group", v));
        decide_as_linear(&chain, &r, &[]).rule
    };
    // Any value passes an exact test, so the earliest rule wanting one of them wins,
    // whichever position the value has.
    assert_eq!(rule(&["nobody", "g3"]), Some(RuleId(3)));
    assert_eq!(rule(&["g3", "g1"]), Some(RuleId(1)));
    assert_eq!(rule(&["g1", "g3"]), Some(RuleId(1)));
    assert_eq!(rule(&["x", "y", "g4"]), Some(RuleId(4)));
    assert_eq!(rule(&["x", "y"]), None);
}

#[test]
fn a_candidate_whose_later_condition_fails_gives_way_to_the_next_candidate() {
    let chain = chain()
        .rule("g0", CANARY, [exact("x-user-group", "g0")])
        .rule(
            "beta-half",
            CANARY,
            [exact("x-user-group", "beta"), permille(500, "")],
        )
        .rule("g2", CANARY, [exact("x-user-group", "g2")])
        .rule(
            "beta-rate",
            GREEN,
            [exact("x-user-group", "beta"), rate(0.5)],
        )
        .rule("beta", BLUE, [exact("x-user-group", "beta")])
        .rule("g5", CANARY, [exact("x-user-group", "g5")])
        .build();
    assert_eq!(chain.indexed_runs(), [0..6]);
    let key = |wanted: fn(u16) -> bool| {
        (0..)
            .map(|i: u32| i.to_string())
            .find(|k| wanted(bucket(b"", k.as_bytes())))
            .unwrap()
    };
    let (low, high) = (key(|b| b < 500), key(|b| b >= 500));
    let high_bucket = Some(bucket(b"", high.as_bytes()));

    let beta = || group("beta");
    let decision = decide_as_linear(&chain, &beta().user(&low), &[]);
    assert_eq!(decision.rule, Some(RuleId(1)));
    // The per-mille fails: its bucket is reported, and the rate rule draws.
    let decision = decide_as_linear(&chain, &beta().user(&high), &[0.2]);
    assert_eq!(
        (decision.pool, decision.rule, decision.bucket),
        (GREEN, Some(RuleId(3)), high_bucket)
    );
    let decision = decide_as_linear(&chain, &beta().user(&high), &[0.7]);
    assert_eq!(
        (decision.pool, decision.rule, decision.bucket),
        (BLUE, Some(RuleId(4)), high_bucket)
    );
    // Without a user key the per-mille is missing and computes no bucket.
    let decision = decide_as_linear(&chain, &beta(), &[0.7]);
    assert_eq!((decision.rule, decision.bucket), (Some(RuleId(4)), None));
    // Another value never reaches the per-mille or the rate.
    let decision = decide(&chain, &group("g5").user(&high));
    assert_eq!((decision.rule, decision.bucket), (Some(RuleId(5)), None));
}

#[test]
fn duplicate_values_in_a_run_are_tried_in_rule_order() {
    let chain = chain()
        .rule(
            "g1-beijing",
            GREEN,
            [exact("x-user-group", "g1"), city(&["110000"])],
        )
        .rule("g0", CANARY, [exact("x-user-group", "g0")])
        .rule(
            "g1-app",
            CANARY,
            [exact("x-user-group", "g1"), ua(&["app"])],
        )
        .rule("g2", CANARY, [exact("x-user-group", "g2")])
        .rule("g1", BLUE, [exact("x-user-group", "g1")])
        .build();
    assert_eq!(chain.indexed_runs(), [0..5]);
    let rule = |r: &Req| decide_as_linear(&chain, r, &[]).rule;
    assert_eq!(rule(&group("g1")), Some(RuleId(4)));
    assert_eq!(
        rule(&group("g1").header("user-agent", UA_APP)),
        Some(RuleId(2))
    );
    let beijing_app = group("g1")
        .header("x-city-id", "110000")
        .header("user-agent", UA_APP);
    assert_eq!(rule(&beijing_app), Some(RuleId(0)));
}

#[test]
fn two_runs_on_different_headers_back_to_back_are_indexed_apart() {
    let chain = exact_run(chain(), "x-user-group", "g", 4);
    let chain = exact_run(chain, "x-tenant", "t", 5)
        .rule("staff", GREEN, [whitelist(&["42"])])
        .build();
    assert_eq!(chain.indexed_runs(), [0..4, 4..9]);
    let rule = |r: &Req| decide_as_linear(&chain, r, &[]).rule;
    assert_eq!(rule(&group("g2")), Some(RuleId(2)));
    assert_eq!(rule(&req().header("x-tenant", "t3")), Some(RuleId(7)));
    assert_eq!(rule(&group("g1").header("x-tenant", "t0")), Some(RuleId(1)));
    assert_eq!(rule(&group("g9").header("x-tenant", "t0")), Some(RuleId(4)));
    // The value of one run's header means nothing to the other run.
    assert_eq!(rule(&req().header("x-tenant", "g2")), None);
    assert_eq!(rule(&group("t4").user("42")), Some(RuleId(9)));
}

#[test]
fn only_runs_of_at_least_the_threshold_are_indexed() {
    for n in [
        1,
        super::index::MIN_INDEXED_RUN - 1,
        super::index::MIN_INDEXED_RUN,
    ] {
        let chain = exact_run(chain(), "x-user-group", "g", n)
            .rule("tenant", GREEN, [exact("x-tenant", "t")])
            .build();
        let want: &[std::ops::Range<usize>] = if n >= super::index::MIN_INDEXED_RUN {
            &[0..n]
        } else {
            &[]
        };
        assert_eq!(chain.indexed_runs(), want, "run of {n}");
        for i in 0..n {
            let decision = decide_as_linear(&chain, &group(&format!("g{i}")), &[]);
            assert_eq!(decision.rule, Some(RuleId(i)), "run of {n}");
        }
        let decision = decide_as_linear(&chain, &group("g").header("x-tenant", "t"), &[]);
        assert_eq!(decision.rule, Some(RuleId(n)), "run of {n}");
    }
}

const RANDOM_HEADERS: [&str; 3] = ["x-a", "x-b", "x-c"];
const RANDOM_VALUES: [&str; 4] = ["", "v1", "v2", "v3"];

fn random_condition(rng: &mut fastrand::Rng) -> Condition {
    let header = RANDOM_HEADERS[rng.usize(..RANDOM_HEADERS.len())];
    let value = RANDOM_VALUES[rng.usize(..RANDOM_VALUES.len())];
    match rng.u8(..8) {
        0 | 1 => exact(header, value),
        2 => prefix(header, "v"),
        3 => present(header, rng.bool()),
        4 => regex(header, "[12]$"),
        5 => permille(rng.u16(..=1000), "s"),
        6 => rate([0.0, 0.3, 0.7, 1.0][rng.usize(..4)]),
        _ => whitelist(&["u1", "u2"]),
    }
}

/// Up to 40 rules: runs of 1 to 10 exact tests of one header (each followed by up to
/// two more conditions), mixed with rules starting with any condition, and rarely
/// a rule without conditions.
fn random_chain(rng: &mut fastrand::Rng) -> Chain {
    let mut builder = chain().stable(PoolId(rng.usize(..POOLS.len())));
    let len = rng.usize(..=40);
    let mut rules = 0;
    while rules < len {
        let run_header = rng
            .bool()
            .then(|| RANDOM_HEADERS[rng.usize(..RANDOM_HEADERS.len())]);
        let count = if run_header.is_some() {
            rng.usize(1..=10)
        } else {
            rng.usize(1..=3)
        };
        for _ in 0..count {
            let mut conditions: Vec<Condition> = match run_header {
                Some(header) => {
                    let value = RANDOM_VALUES[rng.usize(..RANDOM_VALUES.len())];
                    vec![exact(header, value)]
                }
                None if rng.usize(..20) == 0 => Vec::new(),
                None => vec![random_condition(rng)],
            };
            if !conditions.is_empty() {
                conditions.extend((0..rng.usize(..=2)).map(|_| random_condition(rng)));
            }
            let to = PoolId(rng.usize(..POOLS.len()));
            builder = builder.rule(&format!("r{rules}"), to, conditions);
            rules += 1;
        }
    }
    let chain = builder.build();
    // Half the chains track a per-mille rule, as a rollout does, so the cohorts are
    // compared between the index and the scan too.
    let permille_rules: Vec<usize> = (0..chain.rules().len())
        .filter(|&i| chain.permille_of(RuleId(i)).is_some())
        .collect();
    match permille_rules.as_slice() {
        [] => chain,
        _ if rng.bool() => chain,
        rules => {
            let rule = RuleId(rules[rng.usize(..rules.len())]);
            chain
                .with_permille(rule, rng.u16(..=1000), true)
                .expect("a per-mille rule")
        }
    }
}

/// Each header absent, once with a value (maybe one no rule wants) or repeated; a
/// user key or none.
fn random_request(rng: &mut fastrand::Rng) -> Req {
    let mut r = req();
    let value = |rng: &mut fastrand::Rng| ["", "v1", "v2", "v3", "zz"][rng.usize(..5)];
    for header in RANDOM_HEADERS {
        let count = match rng.u8(..10) {
            0..=3 => 0,
            4..=7 => 1,
            _ => rng.usize(2..=3),
        };
        for _ in 0..count {
            r = r.header(header, value(rng));
        }
    }
    match ["u1", "u2", "u3", "u4", ""][rng.usize(..5)] {
        "" => r,
        user => r.user(user),
    }
}

/// Draws from an RNG seeded with `seed`, counting them in `count`.
fn seeded_draws(seed: u64, count: &mut usize) -> impl FnMut() -> f64 + '_ {
    let mut rng = fastrand::Rng::with_seed(seed);
    move || {
        *count += 1;
        rng.f64()
    }
}

#[test]
fn decide_equals_the_linear_scan_and_explain_on_random_chains() {
    let mut rng = fastrand::Rng::with_seed(0x6772_6179_6761_7465);
    // How many indexed runs the requests got past, by how often they carried the
    // run's header (absent, once, repeated), and how many matched inside one.
    let mut runs_passed = [0usize; 3];
    let mut matched_in_run = [0usize; 3];
    let (mut draws, mut buckets, mut stable) = (0, 0, 0);
    for _ in 0..400 {
        let chain = random_chain(&mut rng);
        let runs = chain.indexed_runs();
        for _ in 0..40 {
            let r = random_request(&mut rng);
            let seed = rng.u64(..);
            let (mut used, mut linear_used, mut explain_used) = (0, 0, 0);
            let decision = chain.decide(r.view(), &mut seeded_draws(seed, &mut used));
            let linear = decide_linearly(&chain, &r, &mut seeded_draws(seed, &mut linear_used));
            assert_eq!(
                (decision, used),
                (linear, linear_used),
                "indexed vs linear on {r:?} with chain {:#?}",
                chain.rules()
            );
            let e = chain.explain(r.view(), &mut seeded_draws(seed, &mut explain_used));
            let rule = decision.rule.map_or("default", |id| &*chain.rule(id).name);
            assert_eq!(
                (e.pool.as_str(), e.rule.as_str(), e.bucket, explain_used),
                (chain.pool_name(decision.pool), rule, decision.bucket, used),
                "explain vs decide on {r:?}"
            );

            let header_count = |run: &std::ops::Range<usize>| {
                let Condition::Header { name, .. } = &chain.rules()[run.start].conditions[0] else {
                    unreachable!("an indexed run starts with a header test")
                };
                r.headers.get_all(name).iter().count().min(2)
            };
            let reached = decision.rule.map_or(usize::MAX, |id| id.0);
            for run in &runs {
                if run.end <= reached {
                    runs_passed[header_count(run)] += 1;
                } else if run.contains(&reached) {
                    matched_in_run[header_count(run)] += 1;
                }
            }
            draws += usize::from(used > 0);
            buckets += usize::from(decision.bucket.is_some());
            stable += usize::from(decision.rule.is_none());
        }
    }
    // Every path of the index, and of the rules around it, was exercised.
    for (what, count) in [
        ("runs passed, header absent", runs_passed[0]),
        ("runs passed, header once", runs_passed[1]),
        ("runs passed, header repeated", runs_passed[2]),
        ("matches in a run, header once", matched_in_run[1]),
        ("matches in a run, header repeated", matched_in_run[2]),
        ("decisions that drew", draws),
        ("decisions with a bucket", buckets),
        ("decisions for the stable pool", stable),
    ] {
        assert!(count >= 100, "{what}: only {count}");
    }
    assert_eq!(matched_in_run[0], 0, "a run matched without its header");
}

// ---------------------------------------------------------------------------------
// 9. Cohorts: a tracked per-mille rule splits the requests that reach it into the
//    canary (inside its buckets) and the control (outside, served by stable).
// ---------------------------------------------------------------------------------

/// A user whose bucket for `salt` is below `permille` (`inside`) or not.
fn user_on_side(salt: &str, permille: u16, inside: bool) -> String {
    (0..)
        .map(|i: u32| i.to_string())
        .find(|id| (bucket(salt.as_bytes(), id.as_bytes()) < permille) == inside)
        .expect("some user lands on each side")
}

#[test]
fn a_tracked_rule_marks_the_canary_and_the_control() {
    let chain = chain()
        .rule("staff", CANARY, [whitelist(&["1001"])])
        .rule("rollout", CANARY, [permille(0, "s")])
        .build();
    assert_eq!(chain.permille_of(RuleId(1)), Some(0));
    assert_eq!(chain.tracked_rule(), None);
    let tracked = chain.with_permille(RuleId(1), 100, true).unwrap();
    assert_eq!(tracked.permille_of(RuleId(1)), Some(100));
    assert_eq!(tracked.tracked_rule(), Some(RuleId(1)));

    let inside = req().user(&user_on_side("s", 100, true));
    let outside = req().user(&user_on_side("s", 100, false));
    let canary = decide_as_linear(&tracked, &inside, &[]);
    assert_eq!((canary.pool, canary.cohort), (CANARY, Some(Cohort::Canary)));
    let control = decide_as_linear(&tracked, &outside, &[]);
    assert_eq!(
        (control.pool, control.cohort),
        (BLUE, Some(Cohort::Control))
    );
    // Taken by a rule before it, or without a user key: not a random sample.
    assert_eq!(decide(&tracked, &req().user("1001")).cohort, None);
    assert_eq!(decide(&tracked, &req()).cohort, None);
    // The same chain untracked marks nobody, at any weight.
    let untracked = chain.with_permille(RuleId(1), 100, false).unwrap();
    assert_eq!(decide(&untracked, &inside).cohort, None);
    assert_eq!(decide(&untracked, &inside).pool, CANARY);
    // A rule without a per-mille condition cannot be driven.
    assert!(chain.with_permille(RuleId(0), 5, true).is_none());
}

#[test]
fn the_control_is_only_what_reaches_the_stable_pool() {
    // Users outside the buckets that a later rule sends elsewhere are no control.
    let chain = chain()
        .rule("rollout", CANARY, [permille(500, "")])
        .rule("beijing", GREEN, [city(&["110000"])])
        .build()
        .with_permille(RuleId(0), 500, true)
        .unwrap();
    let user = user_on_side("", 500, false);
    let elsewhere = req().user(&user).header("x-city-id", "110000");
    assert_eq!(decide(&chain, &elsewhere).pool, GREEN);
    assert_eq!(decide(&chain, &elsewhere).cohort, None);
    assert_eq!(
        decide(&chain, &req().user(&user)).cohort,
        Some(Cohort::Control)
    );
}

#[test]
fn conditions_before_the_per_mille_define_the_population() {
    let chain = chain()
        .rule(
            "beijing-rollout",
            CANARY,
            [city(&["110000"]), permille(300, "x"), rate(0.5)],
        )
        .build()
        .with_permille(RuleId(0), 300, true)
        .unwrap();
    let inside = user_on_side("x", 300, true);
    let outside = user_on_side("x", 300, false);
    let beijing = |user: &str| req().user(user).header("x-city-id", "110000");
    // Outside Beijing: never reached the per-mille condition.
    assert_eq!(
        decide(&chain, &req().user(&outside).header("x-city-id", "1")).cohort,
        None
    );
    assert_eq!(
        decide_as_linear(&chain, &beijing(&outside), &[]).cohort,
        Some(Cohort::Control)
    );
    assert_eq!(
        decide_as_linear(&chain, &beijing(&inside), &[0.1]).cohort,
        Some(Cohort::Canary)
    );
    // In the buckets but not drawn by the rate: neither half.
    assert_eq!(
        decide_as_linear(&chain, &beijing(&inside), &[0.9]).cohort,
        None
    );
}

#[test]
fn a_tracked_rule_inside_an_indexed_run_is_marked_through_the_index() {
    let builder = exact_run(chain(), "x-group", "g", 6);
    let chain = builder
        .rule(
            "g-rollout",
            CANARY,
            [exact("x-group", "rollout"), permille(200, "")],
        )
        .rule("g-last", GREEN, [exact("x-group", "last")])
        .build();
    let rule = RuleId(6);
    let chain = chain.with_permille(rule, 200, true).unwrap();
    assert!(chain.indexed_runs().iter().any(|run| run.contains(&6)));
    let inside = req()
        .header("x-group", "rollout")
        .user(&user_on_side("", 200, true));
    let outside = req()
        .header("x-group", "rollout")
        .user(&user_on_side("", 200, false));
    assert_eq!(
        decide_as_linear(&chain, &inside, &[]).cohort,
        Some(Cohort::Canary)
    );
    assert_eq!(
        decide_as_linear(&chain, &outside, &[]).cohort,
        Some(Cohort::Control)
    );
    assert_eq!(
        decide_as_linear(&chain, &req().header("x-group", "g1"), &[]).cohort,
        None
    );
}

// ---------------------------------------------------------------------------------
// 10. Sticky ids: the sticky cookie, then a minted id, stand in for a missing user key.
// ---------------------------------------------------------------------------------

fn sticky_chain() -> Chain {
    let mut sources = chain().sources;
    sources.sticky_cookie = Some(cookie_source("gg_uid"));
    chain()
        .sources(sources)
        .rule("half", CANARY, [permille(500, "")])
        .build()
}

#[test]
fn the_sticky_cookie_and_then_a_minted_id_stand_in_for_the_user_key() {
    let sticky = sticky_chain();
    // The configured source wins; the cookie is read only without it.
    let both = req().user("42").header("cookie", "gg_uid=abc");
    let e = sticky.explain(both.view(), &mut no_draw);
    assert_eq!(
        (e.user_key.as_deref(), e.user_key_source),
        (Some("42"), Some("user_key"))
    );
    let by_cookie = req().header("cookie", "gg_uid=abc");
    assert!(!sticky.needs_sticky_id(&by_cookie.view()));
    let e = sticky.explain(by_cookie.view(), &mut no_draw);
    assert_eq!(
        (e.user_key.as_deref(), e.user_key_source),
        (Some("abc"), Some("sticky_cookie"))
    );
    // Neither: a new visitor, decided on the id made for it, as any key would be.
    let visitor = req();
    assert!(sticky.needs_sticky_id(&visitor.view()));
    let id = user_on_side("", 500, true);
    let minted = sticky.decide(visitor.view().with_minted_key(id.as_bytes()), &mut no_draw);
    assert_eq!(
        minted,
        decide(&sticky, &req().header("cookie", &format!("gg_uid={id}")))
    );
    assert_eq!(minted.pool, CANARY);
    let e = sticky.explain(visitor.view().with_minted_key(id.as_bytes()), &mut no_draw);
    assert_eq!(e.user_key_source, Some("minted"));
    // Without a sticky cookie configured, nobody needs an id.
    assert!(!chain().build().needs_sticky_id(&req().view()));
}

#[test]
fn a_whitelist_reads_only_the_configured_user_key() {
    let mut sources = chain().sources;
    sources.sticky_cookie = Some(cookie_source("gg_uid"));
    let chain = chain()
        .sources(sources)
        .rule("staff", CANARY, [whitelist(&["alice"])])
        .build();
    assert_eq!(decide(&chain, &req().user("alice")).pool, CANARY);
    // A visitor picks its cookie's value, and a minted id is random: neither may
    // name a listed user.
    let claimed = req().header("cookie", "gg_uid=alice");
    assert_eq!(decide(&chain, &claimed).pool, BLUE);
    let visitor = req();
    let minted = chain.decide(visitor.view().with_minted_key(b"alice"), &mut no_draw);
    assert_eq!(minted.pool, BLUE);
    // The cookie still stands in where hashing needs a key.
    let e = chain.explain(claimed.view(), &mut no_draw);
    assert_eq!(e.user_key_source, Some("sticky_cookie"));
}
