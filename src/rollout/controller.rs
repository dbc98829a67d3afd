//! The rollout controller: the thin shell around the pure core. It owns the state
//! file, the analyses' timer, the log lines and the snapshot swaps; the decisions are
//! [`judge`](super::judge) and [`machine`](super::machine)'s.
//!
//! [`Rollouts`] lives inside the reloader's lock (`control::reload`), because a change
//! of weight and a reload both replace the live snapshot: holding one lock for both
//! means neither overwrites the other. A weight change derives a snapshot from the live
//! one with only the rule's per-mille and the cohorts changed; a reload compiles a new
//! one from the file and hands it here first, so the rollout's weight is in it before
//! any request sees it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{json, Value};
use tracing::{error, info, warn};

use super::cohort::StepCohorts;
use super::judge::{self, Analysis, Verdict};
use super::machine::{self, Input, NotApplicable, Phase, RolloutState, Transition};
use super::state_file::{self, Loaded, Saved};
use super::{Plan, Tap};
use crate::metrics::RolloutMetrics;
use crate::snapshot::Snapshot;

/// How many transitions are kept (and saved), and how many analyses are shown.
const KEEP_TRANSITIONS: usize = 100;
const KEEP_ANALYSES: usize = 20;

/// The rollout, as the control plane holds it between analyses.
#[derive(Debug)]
pub struct Rollouts {
    active: Option<Active>,
    metrics: RolloutMetrics,
}

#[derive(Debug)]
struct Active {
    plan: Arc<Plan>,
    state: RolloutState,
    /// The current step's cohorts; replaced at every change of step.
    cohorts: Arc<StepCohorts>,
    transitions: VecDeque<Transition>,
    analyses: VecDeque<AnalysisRecord>,
    /// Why the state file could not be read, shown while the rollout holds the
    /// weight it paused at because of it.
    load_error: Option<String>,
    /// Why the last save failed, shown until one succeeds.
    save_error: Option<String>,
}

/// One analysis as `/admin/rollout` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct AnalysisRecord {
    pub at: String,
    pub step: usize,
    pub weight_permille: u16,
    #[serde(flatten)]
    pub analysis: Analysis,
}

/// Why an operator's action was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("no rollout is configured")]
    NoRollout,
    #[error(transparent)]
    NotApplicable(#[from] NotApplicable),
}

/// Milliseconds since the Unix epoch: the controller's clock, saved in the state file
/// so a step's age survives a restart.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Rollouts {
    pub fn new(metrics: RolloutMetrics) -> Self {
        Rollouts {
            active: None,
            metrics,
        }
    }

    /// The interval between analyses, while a rollout is judged.
    pub fn interval(&self) -> Option<Duration> {
        self.active
            .as_ref()
            .filter(|a| a.state.phase.is_judged())
            .map(|a| a.plan.interval)
    }

    /// Takes a snapshot compiled from the file and returns it with the rollout's weight
    /// applied: the same rollout continues (same rule and canary version), a new one
    /// starts (resuming from the state file when that holds it), or, with no
    /// `[rollout]`, the rollout ends and the file's per-mille applies.
    pub fn adopt(&mut self, snapshot: Snapshot, now_ms: u64) -> Snapshot {
        let Some(tap) = &snapshot.rollout else {
            if let Some(ended) = self.active.take() {
                info!(
                    rule = ended.plan.rule_name,
                    "rollout ended: [rollout] is no longer in the config; the rule's permille in the file applies"
                );
                self.metrics.forget(&ended.plan.rule_name);
            }
            return snapshot;
        };
        let plan = Arc::clone(&tap.plan);
        let active = match self.active.take() {
            Some(active) if active.plan.identity() == plan.identity() => active.replan(plan),
            previous => {
                if let Some(previous) = previous {
                    info!(
                        rule = previous.plan.rule_name,
                        version = previous.plan.canary_version,
                        "rollout replaced: the config names another rule or canary version"
                    );
                    self.metrics.forget(&previous.plan.rule_name);
                }
                Active::begin(plan, now_ms)
            }
        };
        let active = self.active.insert(active);
        active.save();
        self.metrics.set(
            &active.plan.rule_name,
            active.state.phase,
            active.state.step,
            active.weight(),
        );
        active.derive(&snapshot)
    }

    /// Judges the current step and acts on the verdict. Returns the snapshot to swap
    /// in when the weight, the step or the phase changed.
    pub fn analyze(&mut self, live: &Snapshot, now_ms: u64) -> Option<Snapshot> {
        let active = self.active.as_mut().filter(|a| a.state.phase.is_judged())?;
        let (canary, control) = active.cohorts.counts();
        let plan = &active.plan;
        let analysis = judge::judge(&canary, &control, &plan.judge, plan.steps_judged());
        self.metrics.analysis(&plan.rule_name, analysis.verdict);
        let input = Input::Analysis(analysis.verdict, &analysis.reason);
        let (next, transition) = machine::next(&active.state, &plan.limits(), input, now_ms)
            .expect("an analysis applies in every judged phase");
        let record = AnalysisRecord {
            at: rfc3339(now_ms),
            step: active.state.step,
            weight_permille: active.weight(),
            analysis,
        };
        if record.analysis.verdict == Verdict::Fail {
            warn!(
                rule = plan.rule_name,
                step = active.state.step,
                failures_in_a_row = next.failures_in_a_row,
                reason = record.analysis.reason,
                figures = %figures(&record.analysis),
                "rollout analysis failed"
            );
        }
        active.analyses.push_front(record);
        active.analyses.truncate(KEEP_ANALYSES);
        self.apply(live, next, transition)
    }

    /// An operator's action: pause, resume, promote (a step, or `full`) or abort.
    pub fn act(
        &mut self,
        live: &Snapshot,
        input: Input<'_>,
        now_ms: u64,
    ) -> Result<Option<Snapshot>, ActionError> {
        let active = self.active.as_ref().ok_or(ActionError::NoRollout)?;
        let (next, transition) =
            machine::next(&active.state, &active.plan.limits(), input, now_ms)?;
        Ok(self.apply(live, next, transition))
    }

    fn apply(
        &mut self,
        live: &Snapshot,
        next: RolloutState,
        transition: Option<Transition>,
    ) -> Option<Snapshot> {
        let active = self.active.as_mut().expect("called with an active rollout");
        let before = (active.state.phase, active.state.step, active.weight());
        if next.step != active.state.step {
            active.cohorts = Arc::new(StepCohorts::new(next.step));
        }
        let changed = next != active.state;
        if next.held_weight.is_none() {
            active.load_error = None;
        }
        active.state = next;
        if let Some(transition) = transition {
            let figures = active.analyses.front().map(|r| figures(&r.analysis));
            info!(
                rule = active.plan.rule_name,
                from = transition.from.as_str(),
                to = transition.to.as_str(),
                step = transition.to_step,
                weight_permille = transition.to_weight,
                reason = transition.reason,
                figures,
                "rollout {}",
                if transition.from == transition.to {
                    "step"
                } else {
                    transition.to.as_str()
                }
            );
            active.transitions.push_back(transition);
            while active.transitions.len() > KEEP_TRANSITIONS {
                active.transitions.pop_front();
            }
        }
        if changed {
            active.save();
        }
        let after = (active.state.phase, active.state.step, active.weight());
        self.metrics
            .set(&active.plan.rule_name, after.0, after.1, after.2);
        (after != before).then(|| active.derive(live))
    }

    /// `/admin/rollout`: the state, the steps, the live cohorts, the latest analyses
    /// and the transitions, or `None` without a rollout.
    pub fn status(&self) -> Option<Value> {
        let active = self.active.as_ref()?;
        let (plan, state) = (&active.plan, &active.state);
        let (canary, control) = active.cohorts.counts();
        Some(json!({
            "rule": plan.rule_name,
            "canary_pool": plan.canary_pool,
            "canary_version": plan.canary_version,
            "state": state.phase.as_str(),
            "step": state.step,
            "weight_permille": active.weight(),
            "steps": plan.steps,
            "held_weight": state.held_weight,
            "step_started_at": rfc3339(state.step_started_ms),
            "interval": humantime::format_duration(plan.interval).to_string(),
            "min_step_duration": humantime::format_duration(plan.min_step_duration).to_string(),
            "min_requests": plan.judge.min_requests,
            "failure_limit": plan.failure_limit,
            "inconclusive_limit": plan.inconclusive_limit,
            "failures_in_a_row": state.failures_in_a_row,
            "inconclusive_in_a_row": state.inconclusive_in_a_row,
            "state_file": plan.state_file,
            "state_file_error": active.load_error.as_ref().or(active.save_error.as_ref()),
            "cohorts": {
                "step": active.cohorts.step,
                "canary": judge::summary(&canary),
                "control": judge::summary(&control),
            },
            "analyses": active.analyses,
            "transitions": active.transitions.iter().rev().map(transition_json).collect::<Vec<_>>(),
        }))
    }

    /// The weight, phase and step the rollout gives its rule now, for `explain`.
    pub fn position(&self) -> Option<(Phase, usize, u16)> {
        let active = self.active.as_ref()?;
        Some((active.state.phase, active.state.step, active.weight()))
    }
}

impl Active {
    /// A rollout this process has not held before: resumed from the state file when it
    /// holds this rollout, new when it holds nothing or another rollout, and paused at
    /// the file's weight when it cannot be read.
    fn begin(plan: Arc<Plan>, now_ms: u64) -> Active {
        let rule = plan.rule_name.as_str();
        let (state, transitions, start) = resume(&plan, state_file::load(&plan.state_file), now_ms);
        let mut load_error = None;
        match &start {
            Start::New => info!(
                rule,
                version = plan.canary_version,
                weight_permille = plan.steps[0],
                steps = ?plan.steps,
                "rollout started at its first step"
            ),
            Start::Resumed => info!(
                rule,
                state = state.phase.as_str(),
                step = state.step,
                weight_permille = state.weight(&plan.steps),
                "rollout resumed from its state file"
            ),
            Start::Replaced(saved) => info!(
                rule,
                version = plan.canary_version,
                saved_rule = saved.rule,
                saved_version = saved.canary_version,
                "rollout started at its first step: the state file held another rollout"
            ),
            Start::Unreadable(why) => {
                let kept = state_file::set_aside(&plan.state_file)
                    .map(|p| format!("; kept as {}", p.display()))
                    .unwrap_or_default();
                let message = format!("{why}{kept}; {}", held_note(&plan));
                error!(rule, "rollout state file unreadable: {message}");
                load_error = Some(message);
            }
        }
        Active {
            cohorts: Arc::new(StepCohorts::new(state.step)),
            state,
            transitions: transitions.into(),
            analyses: VecDeque::new(),
            load_error,
            save_error: None,
            plan,
        }
    }

    /// The same rollout under a reloaded config: its state carries over; new steps
    /// take it to the last of them not above its weight, holding that weight.
    fn replan(mut self, plan: Arc<Plan>) -> Active {
        if plan.steps != self.plan.steps {
            let state = remap(self.state.clone(), &self.plan.steps, &plan.steps);
            info!(
                rule = plan.rule_name,
                step = state.step,
                steps = ?plan.steps,
                "rollout steps changed; the weight holds"
            );
            if state.step != self.state.step {
                self.cohorts = Arc::new(StepCohorts::new(state.step));
            }
            self.state = state;
        }
        self.plan = plan;
        self
    }

    fn weight(&self) -> u16 {
        self.state.weight(&self.plan.steps)
    }

    /// `snapshot` with the rule at this rollout's weight and the cohorts recorded
    /// while it is judged.
    fn derive(&self, snapshot: &Snapshot) -> Snapshot {
        let judged = self.state.phase.is_judged();
        snapshot.with_rollout(Tap {
            plan: Arc::clone(&self.plan),
            weight: self.weight(),
            position: Some((self.state.phase, self.state.step)),
            cohorts: judged.then(|| Arc::clone(&self.cohorts)),
        })
    }

    fn save(&mut self) {
        let saved = Saved {
            format: state_file::FORMAT,
            identity: self.plan.identity(),
            steps: self.plan.steps.clone(),
            state: self.state.clone(),
            transitions: self.transitions.iter().cloned().collect(),
            saved_at_ms: now_ms(),
        };
        match state_file::save(&self.plan.state_file, &saved) {
            Ok(()) => self.save_error = None,
            Err(err) => {
                let message = format!("cannot save {}: {err}", self.plan.state_file.display());
                error!(
                    rule = self.plan.rule_name,
                    "rollout state: {message}; a restart would resume from the last saved state"
                );
                self.save_error = Some(message);
            }
        }
    }
}

/// How a rollout this process had not held began.
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    New,
    Resumed,
    /// The state file held another rollout (this identity).
    Replaced(super::Identity),
    /// The state file could not be read (why): paused at the file's weight.
    Unreadable(String),
}

/// The state a rollout begins in, given what its state file held. Pure: the caller
/// reads the file and reports.
pub fn resume(plan: &Plan, loaded: Loaded, now_ms: u64) -> (RolloutState, Vec<Transition>, Start) {
    match loaded {
        Loaded::Missing => (RolloutState::start(now_ms), Vec::new(), Start::New),
        Loaded::Saved(saved) if saved.identity == plan.identity() => (
            remap(saved.state, &saved.steps, &plan.steps),
            saved.transitions,
            Start::Resumed,
        ),
        Loaded::Saved(saved) => (
            RolloutState::start(now_ms),
            Vec::new(),
            Start::Replaced(saved.identity),
        ),
        Loaded::Unreadable(why) => (
            RolloutState::held_at(plan.file_permille, &plan.steps, now_ms),
            Vec::new(),
            Start::Unreadable(why),
        ),
    }
}

/// What an unreadable state file leaves the rollout doing.
pub fn held_note(plan: &Plan) -> String {
    format!(
        "the rollout is paused at the rule's {}‰ from the config file: resume or promote it to go on",
        plan.file_permille
    )
}

/// A state saved under other steps, placed on `steps` without a jump: at the last step
/// not above its weight, holding its weight if that is not a step.
fn remap(mut state: RolloutState, old_steps: &[u16], steps: &[u16]) -> RolloutState {
    if old_steps == steps {
        return state;
    }
    let weight = state.weight(old_steps);
    let step = steps.iter().rposition(|&w| w <= weight).unwrap_or(0);
    state.step = step;
    state.held_weight = (state.phase.is_judged() && steps[step] != weight).then_some(weight);
    state
}

fn rfc3339(ms: u64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_millis(time).to_string()
}

fn transition_json(t: &Transition) -> Value {
    json!({
        "at": rfc3339(t.at_ms),
        "from": t.from.as_str(),
        "to": t.to.as_str(),
        "from_step": t.from_step,
        "to_step": t.to_step,
        "from_weight_permille": t.from_weight,
        "to_weight_permille": t.to_weight,
        "reason": t.reason,
    })
}

/// An analysis's figures on one line, for the log.
fn figures(a: &Analysis) -> String {
    let cohort = |c: &judge::CohortSummary| {
        format!(
            "{} requests, {} errors, p50 {}, p99 {}",
            c.requests,
            c.errors,
            c.p50_ms.map_or("-".into(), |v| format!("{v:.2} ms")),
            c.p99_ms.map_or("-".into(), |v| format!("{v:.2} ms"))
        )
    };
    let checks: Vec<String> = a
        .checks
        .iter()
        .map(|c| {
            format!(
                "{} {} ({:.4} in [{:.4}, {:.4}] vs {})",
                c.check,
                c.result.as_str(),
                c.estimate,
                c.lower,
                c.upper,
                c.threshold
            )
        })
        .collect();
    format!(
        "canary: {}; control: {}; {}",
        cohort(&a.canary),
        cohort(&a.control),
        checks.join("; ")
    )
}
