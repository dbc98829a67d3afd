//! Micro benchmarks of the decision core: rule position, chain length, whitelist
//! size, UA classification and the per-mille bucket. Run with `cargo bench`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{HeaderMap, HeaderName, HeaderValue};

use graygate::routing::{
    bucket, Chain, Condition, HeaderTest, KeySet, PoolId, RequestView, Rule, Sources, UaClassifier,
    ValueSource,
};

const BLUE: PoolId = PoolId(0);
const CANARY: PoolId = PoolId(1);

fn sources() -> Sources {
    Sources {
        user_key: Some(ValueSource::Header(HeaderName::from_static("x-user-id"))),
        city: Some(ValueSource::Header(HeaderName::from_static("x-city-id"))),
        channel: Some(ValueSource::Query("channel".into())),
        sticky_cookie: None,
    }
}

fn chain(rules: Vec<Rule>) -> Chain {
    Chain::new(
        rules,
        BLUE,
        sources(),
        UaClassifier::default(),
        vec!["blue".into(), "canary".into()],
    )
}

fn header_rule(i: usize) -> Rule {
    Rule {
        name: format!("rule-{i}").into(),
        conditions: vec![Condition::Header {
            name: HeaderName::from_static("x-user-group"),
            test: HeaderTest::Exact(format!("group-{i}").into_bytes().into()),
        }],
        pool: CANARY,
    }
}

fn whitelist(n: usize) -> KeySet {
    (0..n)
        .map(|i| format!("{}", 1_000_000 + i).into_bytes().into_boxed_slice())
        .collect()
}

fn request(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("user-agent", HeaderValue::from_static("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36"));
    headers.insert("accept", HeaderValue::from_static("*/*"));
    for (name, value) in pairs {
        headers.insert(*name, HeaderValue::from_static(value));
    }
    headers
}

/// The job of the side-by-side benchmark: header, whitelist, 50 permille.
fn spec_chain(whitelist_size: usize) -> Chain {
    chain(vec![
        Rule {
            name: "canary-header".into(),
            conditions: vec![Condition::Header {
                name: HeaderName::from_static("x-canary"),
                test: HeaderTest::Exact(b"true".to_vec().into()),
            }],
            pool: CANARY,
        },
        Rule {
            name: "staff".into(),
            conditions: vec![Condition::Whitelist(whitelist(whitelist_size))],
            pool: CANARY,
        },
        Rule {
            name: "canary-50".into(),
            conditions: vec![Condition::Permille {
                permille: 50,
                salt: Box::default(),
            }],
            pool: CANARY,
        },
    ])
}

fn first_last_none(c: &mut Criterion) {
    let chain = spec_chain(10);
    let mut group = c.benchmark_group("decide/position");
    for (label, headers) in [
        (
            "first-rule",
            request(&[("x-canary", "true"), ("x-user-id", "42")]),
        ),
        ("whitelist-hit", request(&[("x-user-id", "1000003")])),
        ("no-match", request(&[("x-user-id", "7")])),
    ] {
        group.bench_function(label, |b| {
            b.iter(|| chain.decide(RequestView::new(black_box(&headers), None), &mut || 0.5))
        });
    }
    group.finish();
}

fn chain_length(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide/last-of-n-rules");
    for n in [10usize, 100, 1000] {
        let chain = chain((0..n).map(header_rule).collect());
        let last = format!("group-{}", n - 1);
        let mut headers = request(&[]);
        headers.insert("x-user-group", HeaderValue::from_str(&last).unwrap());
        group.bench_with_input(BenchmarkId::from_parameter(n), &headers, |b, headers| {
            b.iter(|| chain.decide(RequestView::new(black_box(headers), None), &mut || 0.5))
        });
    }
    group.finish();
}

fn whitelist_size(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide/whitelist-size");
    for n in [10usize, 10_000] {
        let chain = spec_chain(n);
        let headers = request(&[("x-user-id", "999")]);
        group.bench_with_input(BenchmarkId::from_parameter(n), &headers, |b, headers| {
            b.iter(|| chain.decide(RequestView::new(black_box(headers), None), &mut || 0.5))
        });
    }
    group.finish();
}

fn ua_classification(c: &mut Criterion) {
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
    let classifier =
        UaClassifier::new([("app", &app[..]), ("web", &web[..]), ("pc", &pc[..])]).unwrap();
    let mut group = c.benchmark_group("ua/classify");
    for (label, ua) in [
        ("chrome-android", "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36"),
        ("safari-mac", "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15"),
        ("okhttp-app", "MyShop-App/5.12.0 (Android 14; okhttp/4.12.0)"),
        ("curl", "curl/8.5.0"),
    ] {
        group.bench_function(label, |b| b.iter(|| classifier.classify(black_box(ua.as_bytes()))));
    }
    group.finish();
}

fn permille_bucket(c: &mut Criterion) {
    c.bench_function("bucket/murmur3", |b| {
        b.iter(|| bucket(black_box(b"model-v2"), black_box(b"user-1234567")))
    });
}

criterion_group!(
    benches,
    first_last_none,
    chain_length,
    whitelist_size,
    ua_classification,
    permille_bucket
);
criterion_main!(benches);
