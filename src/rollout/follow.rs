//! A fleet's followers: an instance that takes its rollout's state, step and weight
//! from another instance's admin listener (`GET /admin/rollout/state`) and never
//! judges. The leader's answer is [`LeaderState`].

use serde::{Deserialize, Serialize};

use super::machine::Phase;
use super::Remote;
use crate::control::client;

/// What `/admin/rollout/state` answers: the little a follower needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderState {
    /// A random id of the answering process, so an instance that follows itself is told.
    pub instance: String,
    pub rule: String,
    pub canary_version: String,
    pub state: Phase,
    pub step: usize,
    pub weight_permille: u16,
    pub steps: Vec<u16>,
    pub step_started_ms: u64,
}

/// Asks the followed instance for its rollout.
pub async fn fetch(remote: &Remote) -> Result<LeaderState, String> {
    let path = format!("{}/admin/rollout/state", remote.prefix);
    let (status, body) = client::request(&remote.authority, "GET", &path, remote.timeout)
        .await
        .map_err(|e| format!("{}: {e}", remote.url))?;
    match status {
        200 => serde_json::from_str(&body).map_err(|e| {
            format!(
                "{}: not a graygate rollout state ({e}); is it a graygate admin listener?",
                remote.url
            )
        }),
        404 => Err(format!("{} has no rollout configured", remote.url)),
        status => Err(format!("{}: HTTP {status}: {}", remote.url, body.trim())),
    }
}
