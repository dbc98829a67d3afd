//! Automated rollouts: step a per-mille rule up, judge the canary against the stable
//! pool on the same randomized population, and promote or abort on the evidence.
//!
//! A pure core and a thin shell, like the routing core:
//! - [`schedule`]: weight schedules compiled to explicit steps;
//! - [`cohort`]: the canary and control cohorts, recorded on the request path with
//!   atomics only;
//! - [`stats`] and [`judge`]: two cohorts' counts in, a verdict with every figure out;
//! - [`machine`]: (state, verdict or action, clock) in, next state and transition out;
//! - [`controller`]: the shell on the control plane: the state file
//!   ([`state_file`]), the snapshot swaps and the log lines; with a fleet, the
//!   cohorts summed over every instance from Prometheus ([`prometheus`]), or the
//!   state of the instance followed ([`follow`]).
//!
//! The canary and the control are one population split by a hash: the users who
//! reach the rollout's rule, inside its buckets or just outside them. So the
//! comparison needs no baseline deployment and no second copy of the old version.

pub mod cohort;
pub mod controller;
pub mod follow;
pub mod judge;
pub mod machine;
pub mod prometheus;
pub mod schedule;
pub mod state_file;
pub mod stats;

#[cfg(test)]
mod simulation;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::routing::{Cohort, PoolId, RuleId};
use cohort::{Outcome, StepCohorts};
use judge::JudgeSettings;
use machine::{Limits, Phase};

/// A compiled `[rollout]` table: everything the controller and the judge need.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub rule: RuleId,
    pub rule_name: String,
    /// The rule's `to`.
    pub canary: PoolId,
    pub canary_pool: String,
    /// The canary pool's `version`, or empty.
    pub canary_version: String,
    /// Strictly increasing, each in 1..=1000.
    pub steps: Vec<u16>,
    pub interval: Duration,
    pub min_step_duration: Duration,
    pub failure_limit: u32,
    pub inconclusive_limit: u32,
    /// Resolved against the config file's directory.
    pub state_file: PathBuf,
    pub judge: JudgeSettings,
    /// The rule's per-mille as the config file has it.
    pub file_permille: u16,
    /// Where the verdicts come from.
    pub source: Source,
}

/// How a rollout is judged: on this instance's cohorts, on a fleet's through
/// Prometheus, or not at all because it follows another instance.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Local,
    Prometheus(Remote),
    Follow(Remote),
}

/// An HTTP service the controller asks: Prometheus, or the admin listener followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// As written in the config, for messages.
    pub url: String,
    /// `host:port`, for the connection and `Host`.
    pub authority: String,
    /// A path the API is under (`/prometheus`), or empty.
    pub prefix: String,
    /// Bounds each exchange.
    pub timeout: Duration,
    /// Prometheus: how far behind now queries are evaluated. Follow: how often to ask.
    pub every: Duration,
}

impl Source {
    pub fn name(&self) -> &'static str {
        match self {
            Source::Local => "local",
            Source::Prometheus(_) => "prometheus",
            Source::Follow(_) => "follow",
        }
    }
}

/// What makes a rollout the same rollout: its rule and the version it rolls out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub rule: String,
    pub canary_version: String,
}

impl Plan {
    pub fn identity(&self) -> Identity {
        Identity {
            rule: self.rule_name.clone(),
            canary_version: self.canary_version.clone(),
        }
    }

    pub fn limits(&self) -> Limits<'_> {
        Limits {
            steps: &self.steps,
            min_step_duration_ms: u64::try_from(self.min_step_duration.as_millis())
                .unwrap_or(u64::MAX),
            failure_limit: self.failure_limit,
            inconclusive_limit: self.inconclusive_limit,
        }
    }

    /// Steps below 1000‰: the ones with a control to judge against.
    pub fn steps_judged(&self) -> usize {
        self.steps.iter().filter(|&&w| w < 1000).count()
    }
}

/// The rollout as one snapshot carries it: the plan, the weight the rule has in this
/// snapshot, and the cohorts its requests are recorded in.
#[derive(Debug, Clone)]
pub struct Tap {
    pub plan: Arc<Plan>,
    /// The rule's per-mille in this snapshot.
    pub weight: u16,
    /// The controller's phase and step, once it has adopted the snapshot; `None` in a
    /// snapshot fresh from the file.
    pub position: Option<(Phase, usize)>,
    /// The current step's cohorts, while the rollout is judged.
    pub cohorts: Option<Arc<StepCohorts>>,
}

impl Tap {
    /// A snapshot fresh from the file: the file's weight, nothing recorded yet.
    pub fn from_file(plan: Arc<Plan>) -> Self {
        Tap {
            weight: plan.file_permille,
            plan,
            position: None,
            cohorts: None,
        }
    }

    /// A cohort request under way: recorded as abandoned unless its answer comes.
    pub fn pending(&self, cohort: Cohort, group: u8, started: Instant) -> Option<Pending> {
        Some(Pending {
            cohorts: Some(Arc::clone(self.cohorts.as_ref()?)),
            cohort,
            group,
            started,
        })
    }

    /// Records a finished request of `cohort` that `served_by` answered with `status`.
    /// A canary request the stable pool served (a fallback) is a canary failure.
    pub fn record(
        &self,
        cohort: Cohort,
        group: u8,
        served_by: PoolId,
        status: u16,
        elapsed: Duration,
    ) {
        let Some(cohorts) = &self.cohorts else {
            return;
        };
        let outcome = if cohort == Cohort::Canary && served_by != self.plan.canary {
            Outcome::FellBack
        } else {
            Outcome::Answered { status }
        };
        cohorts.record(cohort, group, outcome, elapsed);
    }
}

/// A cohort request between its decision and its answer's head. If it is dropped
/// before [`Pending::answered`] (the client went away while the upstream was slow, or
/// never answered), the request is recorded as abandoned: otherwise a hung canary would
/// show no requests at all and never be judged.
#[derive(Debug)]
pub struct Pending {
    cohorts: Option<Arc<StepCohorts>>,
    cohort: Cohort,
    group: u8,
    started: Instant,
}

impl Pending {
    /// The answer came: the record phase records the request.
    pub fn answered(mut self) {
        self.cohorts = None;
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(cohorts) = self.cohorts.take() {
            cohorts.record(
                self.cohort,
                self.group,
                Outcome::Abandoned,
                self.started.elapsed(),
            );
        }
    }
}
