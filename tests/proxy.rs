//! End-to-end proxy behaviour: the real binary between real upstreams and clients.

mod common;

use common::*;

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
