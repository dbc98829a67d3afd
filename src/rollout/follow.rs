//! A fleet's followers: an instance that takes its rollout's state, step and weight
//! from another instance's admin listener (`GET /admin/rollout/state`) and never
//! judges. The leader's answer is [`LeaderState`], taken only when it is coherent
//! ([`LeaderState::incoherence`]): a follower serves whatever weight it takes.

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

impl LeaderState {
    /// Why this state cannot be a graygate rollout's, if it cannot: a weight above
    /// 1000‰, steps that are not strictly increasing in 1..=1000, a step that is not
    /// one of them, or a final phase at another weight than its own. A follower takes
    /// no part of such a state: the sender is broken or is not a graygate.
    pub fn incoherence(&self) -> Option<String> {
        if self.weight_permille > 1000 {
            return Some(format!(
                "weight_permille {} is above 1000",
                self.weight_permille
            ));
        }
        if let Some(step) = self.steps.iter().find(|s| !(1..=1000).contains(*s)) {
            return Some(format!("step {step}‰ in steps is not in 1..=1000"));
        }
        if let Some(pair) = self.steps.windows(2).find(|w| w[0] >= w[1]) {
            return Some(format!(
                "steps {:?} do not strictly increase ({} then {})",
                self.steps, pair[0], pair[1]
            ));
        }
        if self.step >= self.steps.len() {
            return Some(format!(
                "step {} is not one of its {} steps",
                self.step,
                self.steps.len()
            ));
        }
        let final_weight = match self.state {
            Phase::Promoted => Some(1000),
            Phase::Aborted => Some(0),
            Phase::Progressing | Phase::Paused => None,
        };
        match final_weight {
            Some(weight) if weight != self.weight_permille => Some(format!(
                "{} at {}‰, not {weight}‰",
                self.state.as_str(),
                self.weight_permille
            )),
            _ => None,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn leader() -> LeaderState {
        LeaderState {
            instance: "leader".into(),
            rule: "canary-rollout".into(),
            canary_version: "v2".into(),
            state: Phase::Progressing,
            step: 1,
            weight_permille: 50,
            steps: vec![10, 50, 200, 1000],
            step_started_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn a_coherent_state_is_taken_and_held_weights_between_steps_are_coherent() {
        assert_eq!(leader().incoherence(), None);
        let held = LeaderState {
            state: Phase::Paused,
            weight_permille: 0,
            ..leader()
        };
        assert_eq!(held.incoherence(), None);
        for (state, weight) in [(Phase::Promoted, 1000), (Phase::Aborted, 0)] {
            let done = LeaderState {
                state,
                weight_permille: weight,
                ..leader()
            };
            assert_eq!(done.incoherence(), None, "{state:?}");
        }
    }

    #[test]
    fn an_incoherent_state_says_what_is_wrong() {
        for (state, why) in [
            (
                LeaderState {
                    step: 99,
                    weight_permille: 65535,
                    steps: vec![],
                    ..leader()
                },
                "weight_permille 65535 is above 1000",
            ),
            (
                LeaderState {
                    step: 99,
                    steps: vec![],
                    ..leader()
                },
                "step 99 is not one of its 0 steps",
            ),
            (
                LeaderState {
                    step: 4,
                    ..leader()
                },
                "step 4 is not one of its 4 steps",
            ),
            (
                LeaderState {
                    steps: vec![10, 50, 50, 1000],
                    ..leader()
                },
                "do not strictly increase (50 then 50)",
            ),
            (
                LeaderState {
                    steps: vec![200, 50],
                    ..leader()
                },
                "do not strictly increase (200 then 50)",
            ),
            (
                LeaderState {
                    steps: vec![10, 1001],
                    ..leader()
                },
                "step 1001‰ in steps is not in 1..=1000",
            ),
            (
                LeaderState {
                    steps: vec![0, 50],
                    ..leader()
                },
                "step 0‰ in steps is not in 1..=1000",
            ),
            (
                LeaderState {
                    state: Phase::Promoted,
                    ..leader()
                },
                "promoted at 50‰, not 1000‰",
            ),
            (
                LeaderState {
                    state: Phase::Aborted,
                    ..leader()
                },
                "aborted at 50‰, not 0‰",
            ),
        ] {
            let found = state.incoherence();
            assert!(
                found.as_deref().is_some_and(|f| f.contains(why)),
                "{state:?}: {found:?}, expected {why:?}"
            );
        }
    }
}
