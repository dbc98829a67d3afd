//! Stickiness for visitors without a user id (`routing.sticky_cookie`), end to end: the
//! cookie a new visitor gets, the same pool on every later request, the share on the
//! canary, no cookie for a visitor with a key, `Secure` only over HTTPS (the TLS case
//! is in tests/tls.rs), `explain`, and bad configs refused.

mod common;

use std::collections::HashMap;
use std::process::Command;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

fn sticky_config(pools: &Pools, extra_routing: &str) -> String {
    config(
        pools.blue.addr,
        pools.green.addr,
        pools.canary.addr,
        &format!(
            r#"[routing]
stable = "blue"
user_key = {{ header = "x-user-id" }}
sticky_cookie = {{ name = "gg_uid", max_age = "30d" }}
decision_headers = true
{extra_routing}

[[rules]]
name = "canary-200"
match = {{ permille = 200, salt = "v2" }}
to = "canary"
"#
        ),
    )
}

/// The value of the `gg_uid` cookie a response sets, if any.
fn set_id(answer: &Answer) -> Option<String> {
    let cookie = answer.header("set-cookie")?;
    Some(
        cookie
            .strip_prefix("gg_uid=")?
            .split(';')
            .next()?
            .to_string(),
    )
}

#[tokio::test]
async fn a_new_visitor_gets_a_sticky_id_with_the_spec_attributes() {
    let pools = Pools::start().await;
    let gw = Gateway::start(&sticky_config(&pools, ""));
    let answer = get(&gw.url("/"), &[]).await;
    let cookie = answer
        .header("set-cookie")
        .expect("a cookie for a new visitor");
    let id = set_id(&answer).unwrap();
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        cookie,
        format!("gg_uid={id}; Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax")
    );
    // Each new visitor gets an id of its own.
    assert_ne!(set_id(&get(&gw.url("/"), &[]).await).unwrap(), id);
    // A visitor with a user key, or already with the cookie, gets none.
    assert!(get(&gw.url("/"), &[("x-user-id", "42")])
        .await
        .header("set-cookie")
        .is_none());
    let cookie_header = format!("gg_uid={id}");
    assert!(get(&gw.url("/"), &[("cookie", &cookie_header)])
        .await
        .header("set-cookie")
        .is_none());
    // Not over plain HTTP, even when the client says it is HTTPS: nobody trusts it.
    let claimed = get(&gw.url("/"), &[("x-forwarded-proto", "https")]).await;
    assert!(!claimed.header("set-cookie").unwrap().contains("Secure"));
}

#[tokio::test]
async fn visitors_keep_their_pool_and_the_canary_share_is_the_permille() {
    let pools = Pools::start().await;
    let gw = Gateway::start(&sticky_config(&pools, ""));
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let request = |cookie: Option<&str>| {
        let mut request = Request::get(gw.url("/"));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request.body(Full::new(Bytes::new())).unwrap()
    };
    let mut first: HashMap<String, String> = HashMap::new();
    for _ in 0..1000 {
        let response = client.request(request(None)).await.unwrap();
        let cookie = response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .to_string();
        let pool = response.headers()["x-graygate-pool"]
            .to_str()
            .unwrap()
            .to_string();
        let _ = response.into_body().collect().await;
        let id = cookie
            .strip_prefix("gg_uid=")
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        first.insert(id, pool);
    }
    assert_eq!(first.len(), 1000, "every visitor got an id of its own");
    // The share on the canary is the rule's 200‰: Binomial(1000, 0.2) has sd 12.6.
    let on_canary = first.values().filter(|p| *p == "canary").count();
    assert!(
        (150..=250).contains(&on_canary),
        "{on_canary} of 1,000 on the canary at 200‰"
    );
    for round in 0..5 {
        for (id, pool) in &first {
            let response = client
                .request(request(Some(&format!("theme=dark; gg_uid={id}"))))
                .await
                .unwrap();
            assert!(response.headers().get("set-cookie").is_none());
            assert_eq!(
                &response.headers()["x-graygate-pool"],
                pool.as_str(),
                "round {round}: visitor {id} moved"
            );
            let _ = response.into_body().collect().await;
        }
    }
    eprintln!("1,000 new visitors: {on_canary} on the canary at 200‰; each kept its pool for 5 more requests");
}

#[tokio::test]
async fn a_trusted_proxy_saying_https_makes_the_cookie_secure() {
    let pools = Pools::start().await;
    let gw = Gateway::start(&sticky_config(
        &pools,
        "trusted_proxies = [\"127.0.0.0/8\"]",
    ));
    let behind_tls = get(&gw.url("/"), &[("x-forwarded-proto", "https")]).await;
    assert!(behind_tls
        .header("set-cookie")
        .unwrap()
        .ends_with("; Secure"));
    let plain = get(&gw.url("/"), &[("x-forwarded-proto", "http")]).await;
    assert!(!plain.header("set-cookie").unwrap().contains("Secure"));
    // A proxy that appends keeps the client's word first: its own, last, counts.
    let appended = get(&gw.url("/"), &[("x-forwarded-proto", "https, http")]).await;
    assert!(!appended.header("set-cookie").unwrap().contains("Secure"));
}

#[tokio::test]
async fn a_sticky_cookie_never_claims_a_whitelisted_user() {
    let pools = Pools::start().await;
    let config = sticky_config(&pools, "").replace(
        "[[rules]]",
        "[[rules]]\nname = \"staff\"\nmatch = { whitelist = [\"alice\"] }\nto = \"green\"\n\n[[rules]]",
    );
    let gw = Gateway::start(&config);
    let alice = get(&gw.url("/"), &[("x-user-id", "alice")]).await;
    assert_eq!(alice.header("x-graygate-rule"), Some("staff"));
    let claimed = get(&gw.url("/"), &[("cookie", "gg_uid=alice")]).await;
    assert_ne!(claimed.header("x-graygate-rule"), Some("staff"));
    assert_ne!(claimed.header("x-graygate-pool"), Some("green"));
    // An empty cookie is no id: the visitor gets one.
    let empty = get(&gw.url("/"), &[("cookie", "gg_uid=")]).await;
    assert_eq!(set_id(&empty).map(|id| id.len()), Some(32));
}

#[tokio::test]
async fn explain_says_where_the_user_key_came_from() {
    let pools = Pools::start().await;
    let gw = Gateway::start(&sticky_config(&pools, ""));
    let explain = |query: &str| {
        let url = gw.admin_url(&format!("/admin/explain?{query}"));
        async move { serde_json::from_str::<Value>(&get(&url, &[]).await.body).unwrap() }
    };
    assert_eq!(
        explain("header=x-user-id:42").await["user_key_source"],
        "user_key"
    );
    let by_cookie = explain("header=cookie:gg_uid%3Dabc").await;
    assert_eq!(
        (
            by_cookie["user_key_source"].as_str(),
            by_cookie["user_key"].as_str()
        ),
        (Some("sticky_cookie"), Some("abc"))
    );
    let new_visitor = explain("").await;
    assert_eq!(new_visitor["user_key_source"], "minted");
    assert_eq!(new_visitor["user_key"].as_str().unwrap().len(), 32);
}

#[test]
fn bad_sticky_settings_are_refused_with_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    for (routing, key, message) in [
        (
            "sticky_cookie = { name = \"gg uid\" }",
            "routing.sticky_cookie.name",
            "is not a cookie name",
        ),
        (
            "sticky_cookie = { name = \"\" }",
            "routing.sticky_cookie.name",
            "is not a cookie name",
        ),
        (
            "sticky_cookie = { name = \"uid\" }\nuser_key = { cookie = \"uid\" }",
            "routing.sticky_cookie.name",
            "is already routing.user_key's cookie",
        ),
        (
            "sticky_cookie = { name = \"gg\", max_age = \"0s\" }",
            "routing.sticky_cookie.max_age",
            "must be between 1s and 10 years",
        ),
        (
            "trusted_proxies = [\"10.0.0.0/33\"]",
            "routing.trusted_proxies[0]",
            "is not an address or a network",
        ),
        (
            "sticky_cookie = { name = \"gg\" }\n[[rules]]\nname = \"staff\"\nmatch = { whitelist = [\"alice\"] }\nto = \"blue\"",
            "rules[0].match.whitelist",
            "the sticky cookie's value is the visitor's choice",
        ),
    ] {
        let path = dir.path().join("g.toml");
        std::fs::write(
            &path,
            format!("[pools.blue]\nendpoints = [\"127.0.0.1:1\"]\n[routing]\nstable = \"blue\"\n{routing}\n"),
        )
        .unwrap();
        let out = Command::new(bin())
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{routing}: {err}");
        assert!(
            err.contains(&format!(": {key}: ")) && err.contains(message),
            "{routing}:\n{err}"
        );
    }
    // A sticky cookie alone is a user key source: permille rules accept it.
    let path = dir.path().join("g.toml");
    std::fs::write(&path, "[pools.blue]\nendpoints = [\"127.0.0.1:1\"]\n[pools.canary]\nendpoints = [\"127.0.0.1:2\"]\n[routing]\nstable = \"blue\"\nsticky_cookie = { name = \"gg\" }\n[[rules]]\nname = \"r\"\nmatch = { permille = 5 }\nto = \"canary\"\n").unwrap();
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
