//! Protocol upgrades (WebSocket over HTTP/1.1): the upgrade headers go to the
//! upstream, and only when the upstream answers 101 does the connection become a
//! byte tunnel. Any other answer is an ordinary response, and a request pipelined
//! behind the upgrade request stays an ordinary request, never tunnelled raw.

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tracing::debug;

use crate::upstream::UpstreamBody;

/// A client's request to switch protocols.
pub struct UpgradeRequest {
    protocol: HeaderValue,
    client: OnUpgrade,
}

/// Takes the upgrade out of an HTTP/1.1 request that asks for one (`Connection:
/// upgrade` and `Upgrade`), before its hop-by-hop headers are stripped. `h2c` is
/// never one: a tunnel after its 101 would carry HTTP/2 frames no rule, header filter
/// or limit of the gateway sees (Envoy refuses it too). A request that asks only for
/// h2c goes on as plain HTTP/1.1.
pub fn take(head: &mut Parts) -> Option<UpgradeRequest> {
    if head.version != Version::HTTP_11 || !connection_has_upgrade(&head.headers) {
        return None;
    }
    let offered = head.headers.get(header::UPGRADE)?;
    let kept: Vec<&str> = offered
        .to_str()
        .ok()?
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty() && !p.eq_ignore_ascii_case("h2c"))
        .collect();
    if kept.is_empty() {
        return None;
    }
    let protocol = HeaderValue::from_str(&kept.join(", ")).ok()?;
    let client = head.extensions.remove::<OnUpgrade>()?;
    Some(UpgradeRequest { protocol, client })
}

fn connection_has_upgrade(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
    })
}

/// Puts the upgrade headers back on the upstream request.
pub fn restore_request_headers(headers: &mut HeaderMap, upgrade: &UpgradeRequest) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, upgrade.protocol.clone());
}

/// If the upstream switched protocols, joins the two upgraded connections in a
/// tunnel, puts the upgrade headers back on the 101 for the client, and returns true.
pub fn tunnel(upgrade: UpgradeRequest, response: &mut Response<UpstreamBody>) -> bool {
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return false;
    }
    let Some((mut upstream, early)) = response.body_mut().take_upgraded() else {
        return false;
    };
    let protocol = response
        .headers()
        .get(header::UPGRADE)
        .cloned()
        .unwrap_or(upgrade.protocol);
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    response.headers_mut().insert(header::UPGRADE, protocol);
    tokio::spawn(async move {
        let mut client = match upgrade.client.await {
            Ok(client) => TokioIo::new(client),
            Err(err) => return debug!(error = %err, "upgrade failed"),
        };
        // Bytes the upstream sent right behind its 101 are the tunnel's first.
        if let Err(err) = client.write_all(&early).await {
            return debug!(error = %err, "upgraded connection ended with an error");
        }
        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok((up, down)) => debug!(up, down, "upgraded connection closed"),
            Err(err) => debug!(error = %err, "upgraded connection ended with an error"),
        }
    });
    true
}
