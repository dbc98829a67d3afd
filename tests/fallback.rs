//! After a fallback, the upstream and the client are told the same: `x-graygate-pool`
//! names the pool that served, and `x-graygate-fallback-from` the pool the rules chose.
//! A real dead pool (a refused port), real upstreams, real sockets.

mod common;

use common::*;

fn config_with_dead_canary(pools: &Pools, canary: std::net::SocketAddr) -> String {
    config(
        pools.blue.addr,
        pools.green.addr,
        canary,
        r#"[routing]
stable = "green"
decision_headers = true

[[rules]]
name = "to-canary"
match = { header = { name = "x-canary", present = true } }
to = "canary"

[[rules]]
name = "to-blue"
match = { header = { name = "x-blue", present = true } }
to = "blue"
"#,
    )
}

#[tokio::test]
async fn a_fallback_is_told_on_both_sides() {
    let pools = Pools::start().await;
    let canary = dead_address().await;
    let gw = Gateway::start(&config_with_dead_canary(&pools, canary));

    let answer = get(&gw.url("/"), &[("x-canary", "1")]).await;
    assert_eq!(
        (answer.status.as_u16(), answer.body.as_str()),
        (200, "green")
    );
    assert_eq!(answer.header("x-graygate-pool"), Some("green"));
    assert_eq!(answer.header("x-graygate-rule"), Some("to-canary"));
    assert_eq!(answer.header("x-graygate-fallback-from"), Some("canary"));
    let seen = pools.green.last();
    let header = |name: &str| {
        let values: Vec<_> = seen.headers.get_all(name).iter().collect();
        assert!(values.len() <= 1, "{name} once: {values:?}");
        values
            .first()
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(header("x-graygate-pool").as_deref(), Some("green"));
    assert_eq!(
        header("x-graygate-fallback-from").as_deref(),
        Some("canary")
    );
    assert_eq!(header("x-graygate-rule").as_deref(), Some("to-canary"));

    // No fallback, no such header on either side.
    let answer = get(&gw.url("/"), &[("x-blue", "1")]).await;
    assert_eq!(answer.body, "blue");
    assert_eq!(answer.header("x-graygate-fallback-from"), None);
    let seen = pools.blue.last();
    assert_eq!(
        seen.headers
            .get("x-graygate-pool")
            .map(|v| v.to_str().unwrap()),
        Some("blue")
    );
    assert!(seen.headers.get("x-graygate-fallback-from").is_none());

    // A client cannot claim a fallback of its own.
    let answer = get(&gw.url("/"), &[("x-graygate-fallback-from", "blue")]).await;
    assert_eq!(answer.header("x-graygate-fallback-from"), None);
    assert!(pools
        .green
        .last()
        .headers
        .get("x-graygate-fallback-from")
        .is_none());
}
