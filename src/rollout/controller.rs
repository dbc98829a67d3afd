//! The rollout controller: the thin shell around the pure core. It owns the state
//! file, the log lines and the snapshot swaps; the decisions are
//! [`judge`](super::judge)'s and [`machine`](super::machine)'s. Its clock is
//! `control::rollout`, which also does the waiting on Prometheus and on the instance
//! followed, outside any lock.
//!
//! [`Rollouts`] lives inside the reloader's lock (`control::reload`), because a change
//! of weight and a reload both replace the live snapshot: holding one lock for both
//! means neither overwrites the other. A weight change derives a snapshot from the live
//! one with only the rule's per-mille and the cohorts changed; a reload compiles a new
//! one from the file and hands it here first, so the rollout's weight is in it before
//! any request sees it.
//!
//! A rollout is judged in one of three ways ([`Source`]): on this instance's own
//! cohorts, on the fleet's through Prometheus (the counts come in from the clock), or
//! not at all, when it follows another instance and takes its state from there.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{json, Value};
use tracing::{error, info, warn};

use super::cohort::{CohortCounts, StepCohorts};
use super::follow::LeaderState;
use super::judge::{self, Analysis, Verdict};
use super::machine::{self, Input, NotApplicable, RolloutState, Transition};
use super::state_file::{self, Loaded, Saved};
use super::{Identity, Plan, Remote, Source, Tap};
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
    /// This process, as a follower sees it: so an instance told to follow itself knows.
    instance: String,
}

#[derive(Debug)]
struct Active {
    plan: Arc<Plan>,
    /// The steps in force: the plan's, or a follower's from the instance it follows.
    steps: Vec<u16>,
    state: RolloutState,
    /// Every step's cohorts so far, the current step's last. Exported for the fleet's
    /// judge, which sums them over the instances.
    cohorts: Vec<Arc<StepCohorts>>,
    transitions: VecDeque<Transition>,
    analyses: VecDeque<AnalysisRecord>,
    /// Why the state file could not be read, shown while the rollout holds the
    /// weight it paused at because of it.
    load_error: Option<String>,
    /// Why the last save failed, shown until one succeeds; the clock tries again.
    save_error: Option<String>,
    /// An unreadable state file that could not be copied aside is never overwritten:
    /// saving waits until the operator acts on the rollout.
    keep_unreadable: bool,
    /// What was saved last, so an unchanged rollout is not written again.
    saved: Option<(RolloutState, Vec<u16>)>,
    /// A follower's last failure to follow, until it follows again.
    follow_error: Option<String>,
    followed_at_ms: Option<u64>,
}

/// One analysis as `/admin/rollout` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct AnalysisRecord {
    pub at: String,
    pub step: usize,
    pub weight_permille: u16,
    /// `local` or `prometheus`: whose cohorts were judged.
    pub source: &'static str,
    /// Set when the counts could not be read: the analysis was not made, and it
    /// neither advances nor counts toward a pause.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
    #[error("this instance follows the rollout of {0}: act on that instance")]
    Follower(String),
}

/// What the clock does next for the rollout, and after how long.
#[derive(Debug, Clone)]
pub enum Job {
    /// Judge this instance's cohorts.
    Analyze,
    /// Ask Prometheus for the fleet's cohorts of the query's rollout and step, then judge.
    Query { remote: Remote, query: FleetQuery },
    /// Ask the instance followed for its state.
    Follow(Remote),
    /// Try again to save a state that could not be saved.
    Save,
}

impl Job {
    /// What the job does, for the log.
    pub fn kind(&self) -> &'static str {
        match self {
            Job::Analyze => "analyze",
            Job::Query { .. } => "query",
            Job::Follow(_) => "follow",
            Job::Save => "save",
        }
    }
}

/// How soon a failed save is tried again, when nothing else would save.
const SAVE_RETRY: Duration = Duration::from_secs(5);

/// What a query to Prometheus is for: one rollout's step, since it began. The clock
/// waits on Prometheus outside the lock, so the rollout may have moved on (or been
/// replaced) by the time the answer comes: it is judged only if all of this still holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetQuery {
    pub identity: Identity,
    pub step: usize,
    pub since_ms: u64,
}

/// The fleet's counts for a query, as Prometheus gave them: `Ok(None)` with no series.
#[derive(Debug, Clone)]
pub struct FleetCounts {
    pub query: FleetQuery,
    pub counts: Result<Option<(CohortCounts, CohortCounts)>, String>,
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
            instance: format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)),
        }
    }

    /// What the clock should do next, and the wait before it: analyses every
    /// `interval` while judged, a follower's poll every `follow_interval` always.
    pub fn job(&self) -> Option<(Duration, Job)> {
        let active = self.active.as_ref()?;
        let plan = &active.plan;
        match &plan.source {
            Source::Follow(remote) => Some((remote.every, Job::Follow(remote.clone()))),
            _ if !active.state.phase.is_judged() => active
                .save_error
                .is_some()
                .then_some((SAVE_RETRY, Job::Save)),
            Source::Local => Some((plan.interval, Job::Analyze)),
            Source::Prometheus(remote) => Some((
                plan.interval,
                Job::Query {
                    remote: remote.clone(),
                    query: active.fleet_query(),
                },
            )),
        }
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
        publish(&self.metrics, active);
        active.derive(&snapshot)
    }

    /// Judges the current step and acts on the verdict: on this instance's cohorts, or
    /// on `fleet`'s counts from Prometheus. Returns the snapshot to swap in when the
    /// weight, the step or the phase changed.
    pub fn analyze(
        &mut self,
        live: &Snapshot,
        now_ms: u64,
        fleet: Option<FleetCounts>,
    ) -> Option<Snapshot> {
        let active = self.active.as_mut().filter(|a| a.state.phase.is_judged())?;
        let plan = Arc::clone(&active.plan);
        if matches!(plan.source, Source::Follow(_)) {
            return None;
        }
        let (source, counts) = match fleet.map(|f| (f.query, f.counts)) {
            None => ("local", active.current().counts()),
            // The rollout was replaced or its step moved on while Prometheus answered:
            // those counts are another rollout's, or another step's.
            Some((query, _)) if query != active.fleet_query() => return None,
            Some((_, Ok(Some(counts)))) => ("prometheus", counts),
            Some((_, Ok(None))) => ("prometheus", Default::default()),
            Some((_, Err(why))) => {
                self.metrics.analysis(&plan.rule_name, "error");
                let reason = format!("the fleet's cohorts could not be read: {why}; holding");
                if active.analyses.front().and_then(|r| r.error.as_ref()) != Some(&why) {
                    warn!(rule = plan.rule_name, "rollout: {reason}");
                }
                let record = AnalysisRecord {
                    at: rfc3339(now_ms),
                    step: active.state.step,
                    weight_permille: active.weight(),
                    source: "prometheus",
                    error: Some(why),
                    analysis: judge::unavailable(reason),
                };
                active.record(record);
                return None;
            }
        };
        let (canary, control) = counts;
        let analysis = judge::judge(&canary, &control, &plan.judge, plan.steps_judged());
        self.metrics
            .analysis(&plan.rule_name, analysis.verdict.as_str());
        let input = Input::Analysis(analysis.verdict, &analysis.reason);
        let (next, transition) = machine::next(&active.state, &plan.limits(), input, now_ms)
            .expect("an analysis applies in every judged phase");
        if analysis.verdict == Verdict::Fail {
            warn!(
                rule = plan.rule_name,
                step = active.state.step,
                source,
                failures_in_a_row = next.failures_in_a_row,
                reason = analysis.reason,
                figures = %figures(&analysis),
                "rollout analysis failed"
            );
        }
        let record = AnalysisRecord {
            at: rfc3339(now_ms),
            step: active.state.step,
            weight_permille: active.weight(),
            source,
            error: None,
            analysis,
        };
        active.record(record);
        self.apply(live, next, None, transition)
    }

    /// A follower's poll: the followed instance's state, or why it could not be had.
    /// On a failure the weight holds. Returns the snapshot to swap in on a change.
    pub fn follow(
        &mut self,
        live: &Snapshot,
        now_ms: u64,
        answer: Result<LeaderState, String>,
    ) -> Option<Snapshot> {
        let active = self.active.as_mut()?;
        let plan = Arc::clone(&active.plan);
        let Source::Follow(remote) = &plan.source else {
            return None;
        };
        let answer = answer.and_then(|leader| {
            if leader.instance == self.instance {
                Err(format!(
                    "{} is this instance: it cannot follow itself",
                    remote.url
                ))
            } else if leader.rule != plan.rule_name {
                Err(format!(
                    "{} rolls out rule `{}`, this instance rule `{}`",
                    remote.url, leader.rule, plan.rule_name
                ))
            } else if leader.canary_version != plan.canary_version {
                Err(format!(
                    "{} rolls out version `{}`, this instance's canary is `{}`",
                    remote.url, leader.canary_version, plan.canary_version
                ))
            } else if let Some(why) = leader.incoherence() {
                Err(format!(
                    "{} answered an incoherent rollout state: {why}",
                    remote.url
                ))
            } else {
                Ok(leader)
            }
        });
        let leader = match answer {
            Ok(leader) => leader,
            Err(why) => {
                self.metrics.follow_error(&plan.rule_name);
                if active.follow_error.as_ref() != Some(&why) {
                    warn!(
                        rule = plan.rule_name,
                        weight_permille = active.weight(),
                        "rollout: cannot follow: {why}; the weight holds"
                    );
                }
                active.follow_error = Some(why);
                return None;
            }
        };
        if active.follow_error.take().is_some() {
            info!(
                rule = plan.rule_name,
                url = remote.url,
                "rollout: following again"
            );
        }
        active.followed_at_ms = Some(now_ms);
        let next = RolloutState {
            phase: leader.state,
            step: leader.step,
            step_started_ms: leader.step_started_ms,
            failures_in_a_row: 0,
            inconclusive_in_a_row: 0,
            held_weight: Some(leader.weight_permille),
        };
        let steps = leader.steps;
        let before = (active.state.phase, active.state.step, active.weight());
        let after = (next.phase, next.step, next.weight(&steps));
        let transition = (before != after).then(|| Transition {
            at_ms: now_ms,
            from: before.0,
            to: after.0,
            from_step: before.1,
            to_step: after.1,
            from_weight: before.2,
            to_weight: after.2,
            reason: format!("followed {}", remote.url),
        });
        self.apply(live, next, Some(steps), transition)
    }

    /// An operator's action: pause, resume, promote (a step, or `full`) or abort.
    pub fn act(
        &mut self,
        live: &Snapshot,
        input: Input<'_>,
        now_ms: u64,
    ) -> Result<Option<Snapshot>, ActionError> {
        let active = self.active.as_ref().ok_or(ActionError::NoRollout)?;
        if let Source::Follow(remote) = &active.plan.source {
            return Err(ActionError::Follower(remote.url.clone()));
        }
        let (next, transition) =
            machine::next(&active.state, &active.plan.limits(), input, now_ms)?;
        Ok(self.apply(live, next, None, transition))
    }

    /// Saves again a state whose last save failed.
    pub fn retry_save(&mut self) {
        if let Some(active) = self.active.as_mut() {
            active.save();
        }
    }

    /// Puts `next` (and a follower's new `steps`) in force: new cohorts at a new weight,
    /// the transition logged and kept, the state saved, the metrics set.
    fn apply(
        &mut self,
        live: &Snapshot,
        next: RolloutState,
        steps: Option<Vec<u16>>,
        transition: Option<Transition>,
    ) -> Option<Snapshot> {
        let active = self.active.as_mut().expect("called with an active rollout");
        let before = (active.state.phase, active.state.step, active.weight());
        // Cohorts are per weight: two weights in one cohort would mix two populations
        // (and two times of day) into one comparison.
        let weight = next.weight(steps.as_deref().unwrap_or(&active.steps));
        if next.step != active.state.step || weight != before.2 || active.cohorts.is_empty() {
            active.cohorts.push(Arc::new(StepCohorts::new(next.step)));
        }
        let changed = next != active.state || steps.as_ref().is_some_and(|s| *s != active.steps);
        if next.held_weight.is_none() {
            active.load_error = None;
        }
        active.state = next;
        if let Some(steps) = steps {
            active.steps = steps;
        }
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
        if changed || active.save_error.is_some() {
            active.save();
        }
        publish(&self.metrics, active);
        let after = (active.state.phase, active.state.step, active.weight());
        (after != before).then(|| active.derive(live))
    }

    /// `/admin/rollout`: the state, the steps, the live cohorts, the latest analyses
    /// and the transitions, or `None` without a rollout.
    pub fn status(&self) -> Option<Value> {
        let active = self.active.as_ref()?;
        let (plan, state) = (&active.plan, &active.state);
        let (canary, control) = active.current().counts();
        let mut status = json!({
            "rule": plan.rule_name,
            "canary_pool": plan.canary_pool,
            "canary_version": plan.canary_version,
            "source": plan.source.name(),
            "state": state.phase.as_str(),
            "step": state.step,
            "weight_permille": active.weight(),
            "steps": active.steps,
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
                "step": active.current().step,
                "canary": judge::summary(&canary),
                "control": judge::summary(&control),
            },
            "analyses": active.analyses,
            "transitions": active.transitions.iter().rev().map(transition_json).collect::<Vec<_>>(),
        });
        if let Source::Prometheus(remote) | Source::Follow(remote) = &plan.source {
            let key = if matches!(plan.source, Source::Follow(_)) {
                "follows"
            } else {
                "prometheus"
            };
            status[key] = json!(remote.url);
        }
        if matches!(plan.source, Source::Follow(_)) {
            status["follow_error"] = json!(active.follow_error);
            status["followed_at"] = json!(active.followed_at_ms.map(rfc3339));
        }
        Some(status)
    }

    /// `/admin/rollout/state`: what a follower takes from this instance.
    pub fn leader_state(&self) -> Option<LeaderState> {
        let active = self.active.as_ref()?;
        Some(LeaderState {
            instance: self.instance.clone(),
            rule: active.plan.rule_name.clone(),
            canary_version: active.plan.canary_version.clone(),
            state: active.state.phase,
            step: active.state.step,
            weight_permille: active.weight(),
            steps: active.steps.clone(),
            step_started_ms: active.state.step_started_ms,
        })
    }
}

/// The rollout's gauges and its exported cohorts, as they are now.
fn publish(metrics: &RolloutMetrics, active: &Active) {
    let plan = &active.plan;
    if matches!(plan.source, Source::Follow(_)) {
        metrics.following(&plan.rule_name);
    }
    metrics.set(
        &plan.rule_name,
        active.state.phase,
        active.state.step,
        active.weight(),
    );
    metrics.cohorts.set(
        &plan.rule_name,
        &plan.canary_version,
        active.cohorts.clone(),
    );
}

impl Active {
    /// A rollout this process has not held before: resumed from the state file when it
    /// holds this rollout, new when it holds nothing or another rollout, and paused at
    /// the file's weight when it cannot be read.
    fn begin(plan: Arc<Plan>, now_ms: u64) -> Active {
        let rule = plan.rule_name.as_str();
        let (state, steps, transitions, start) =
            resume(&plan, state_file::load(&plan.state_file), now_ms);
        let mut load_error = None;
        let mut keep_unreadable = false;
        match &start {
            Start::New if matches!(plan.source, Source::Follow(_)) => info!(
                rule,
                weight_permille = plan.file_permille,
                "rollout follower started: holding the config file's weight until it first follows"
            ),
            Start::New => info!(
                rule,
                version = plan.canary_version,
                weight_permille = state.weight(&steps),
                steps = ?plan.steps,
                "rollout started at its first step"
            ),
            Start::Resumed => info!(
                rule,
                state = state.phase.as_str(),
                step = state.step,
                weight_permille = state.weight(&steps),
                "rollout resumed from its state file"
            ),
            Start::Replaced(saved) => info!(
                rule,
                version = plan.canary_version,
                saved_rule = saved.rule,
                saved_version = saved.canary_version,
                "rollout started afresh: the state file held another rollout"
            ),
            Start::Unreadable(why) => {
                let kept = match state_file::set_aside(&plan.state_file) {
                    Ok(aside) => format!("; kept as {}", aside.display()),
                    Err(err) => {
                        keep_unreadable = true;
                        format!("; it could not be copied aside ({err}), so it is not overwritten until the rollout is resumed, promoted or aborted")
                    }
                };
                let message = format!("{why}{kept}; {}", held_note(&plan));
                error!(rule, "rollout state file unreadable: {message}");
                load_error = Some(message);
            }
        }
        Active {
            cohorts: vec![Arc::new(StepCohorts::new(state.step))],
            state,
            steps,
            transitions: transitions.into(),
            analyses: VecDeque::new(),
            load_error,
            save_error: None,
            keep_unreadable,
            saved: None,
            follow_error: None,
            followed_at_ms: None,
            plan,
        }
    }

    /// The same rollout under a reloaded config: its state carries over. A judge's new
    /// steps take it to the last of them not above its weight, holding that weight; a
    /// follower keeps the steps it followed.
    fn replan(mut self, plan: Arc<Plan>) -> Active {
        let judges = !matches!(plan.source, Source::Follow(_));
        if judges && plan.steps != self.steps {
            let state = remap(self.state.clone(), &self.steps, &plan.steps);
            info!(
                rule = plan.rule_name,
                step = state.step,
                steps = ?plan.steps,
                "rollout steps changed; the weight holds"
            );
            if state.step != self.state.step {
                self.cohorts.push(Arc::new(StepCohorts::new(state.step)));
            }
            self.state = state;
            self.steps = plan.steps.clone();
        }
        self.plan = plan;
        self
    }

    fn current(&self) -> &Arc<StepCohorts> {
        self.cohorts
            .last()
            .expect("a rollout always has its current step's cohorts")
    }

    fn weight(&self) -> u16 {
        self.state.weight(&self.steps)
    }

    fn fleet_query(&self) -> FleetQuery {
        FleetQuery {
            identity: self.plan.identity(),
            step: self.state.step,
            since_ms: self.state.step_started_ms,
        }
    }

    fn record(&mut self, record: AnalysisRecord) {
        self.analyses.push_front(record);
        self.analyses.truncate(KEEP_ANALYSES);
    }

    /// `snapshot` with the rule at this rollout's weight and the cohorts recorded
    /// while it is judged.
    fn derive(&self, snapshot: &Snapshot) -> Snapshot {
        let judged = self.state.phase.is_judged();
        snapshot.with_rollout(Tap {
            plan: Arc::clone(&self.plan),
            weight: self.weight(),
            position: Some((self.state.phase, self.state.step)),
            cohorts: judged.then(|| Arc::clone(self.current())),
        })
    }

    fn save(&mut self) {
        if self.keep_unreadable && self.load_error.is_some() {
            return;
        }
        let current = (self.state.clone(), self.steps.clone());
        if self.save_error.is_none() && self.saved.as_ref() == Some(&current) {
            return;
        }
        let saved = Saved {
            format: state_file::FORMAT,
            identity: self.plan.identity(),
            steps: self.steps.clone(),
            state: self.state.clone(),
            transitions: self.transitions.iter().cloned().collect(),
            saved_at_ms: now_ms(),
        };
        match state_file::save(&self.plan.state_file, &saved) {
            Ok(()) => {
                self.save_error = None;
                self.saved = Some(current);
            }
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
    Replaced(Identity),
    /// The state file could not be read (why): paused at the file's weight.
    Unreadable(String),
}

/// The state a rollout begins in and the steps in force, given what its state file
/// held. Pure: the caller reads the file and reports. A follower without a saved state
/// holds the config file's weight, paused, until it first follows.
pub fn resume(
    plan: &Plan,
    loaded: Loaded,
    now_ms: u64,
) -> (RolloutState, Vec<u16>, Vec<Transition>, Start) {
    let follows = matches!(plan.source, Source::Follow(_));
    let held = || RolloutState::held_at(plan.file_permille, &plan.steps, now_ms);
    let fresh = || {
        if follows {
            held()
        } else {
            RolloutState::start(now_ms)
        }
    };
    match loaded {
        Loaded::Missing => (fresh(), plan.steps.clone(), Vec::new(), Start::New),
        Loaded::Saved(saved) if saved.identity == plan.identity() && follows => {
            (saved.state, saved.steps, saved.transitions, Start::Resumed)
        }
        Loaded::Saved(saved) if saved.identity == plan.identity() => (
            remap(saved.state, &saved.steps, &plan.steps),
            plan.steps.clone(),
            saved.transitions,
            Start::Resumed,
        ),
        Loaded::Saved(saved) => (
            fresh(),
            plan.steps.clone(),
            Vec::new(),
            Start::Replaced(saved.identity),
        ),
        Loaded::Unreadable(why) => (
            held(),
            plan.steps.clone(),
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
    state.held_weight =
        (state.phase.is_judged() && steps.get(step) != Some(&weight)).then_some(weight);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, Source as ConfigSource};
    use crate::rollout::cohort::{bucket_of, BUCKETS};
    use crate::shared::Shared;
    use std::path::Path;

    /// A config with a canary at `version` and `rollout`, compiled in `dir` (where its
    /// state file goes).
    fn compiled(dir: &Path, shared: &Shared, version: &str, rollout: &str) -> Snapshot {
        let text = format!(
            r#"
[pools.blue]
endpoints = ["127.0.0.1:1"]
[pools.canary]
endpoints = ["127.0.0.1:2"]
version = "{version}"
[routing]
stable = "blue"
user_key = {{ header = "x-user-id" }}
[[rules]]
name = "canary-rollout"
match = {{ permille = 0 }}
to = "canary"
{rollout}
"#
        );
        let source = ConfigSource {
            path: dir.join("graygate.toml"),
            text,
        };
        let file = config::parse(&source).unwrap();
        config::compile(file, &source, shared).unwrap()
    }

    fn cohort(requests: u64, errors: u64) -> CohortCounts {
        let mut latency = vec![0; BUCKETS];
        latency[bucket_of(10_000)] = requests;
        CohortCounts {
            requests,
            errors,
            latency,
            ..CohortCounts::default()
        }
    }

    /// Counts the judge fails the canary on: half its requests are errors.
    fn failing() -> (CohortCounts, CohortCounts) {
        (cohort(5_000, 2_500), cohort(20_000, 0))
    }

    const JUDGED_BY_PROMETHEUS: &str = r#"
[rollout]
rule = "canary-rollout"
steps = [100, 500]
min_requests = 100
failure_limit = 1
[rollout.judge]
source = "prometheus"
prometheus = "http://127.0.0.1:1"
"#;

    #[test]
    fn fleet_counts_apply_only_to_the_rollout_step_and_start_they_were_queried_for() {
        let dir = tempfile::tempdir().unwrap();
        let shared = Shared::new();
        let mut rollouts = Rollouts::new(shared.metrics.rollout());
        rollouts.adopt(
            compiled(dir.path(), &shared, "v2", JUDGED_BY_PROMETHEUS),
            1_000,
        );
        let Some((_, Job::Query { query: asked, .. })) = rollouts.job() else {
            panic!("a rollout judged by Prometheus queries it");
        };
        // While Prometheus answers, a reload brings v3: a new rollout, at the same step
        // and begun in the same millisecond. Only the identity tells the two apart.
        let live = rollouts.adopt(
            compiled(dir.path(), &shared, "v3", JUDGED_BY_PROMETHEUS),
            1_000,
        );
        let Some((_, Job::Query { query: current, .. })) = rollouts.job() else {
            panic!("the new rollout queries Prometheus too");
        };
        assert_eq!(
            (asked.step, asked.since_ms),
            (current.step, current.since_ms)
        );
        assert_ne!(asked.identity, current.identity);
        let stale = [
            asked,
            FleetQuery {
                step: 1,
                ..current.clone()
            },
            FleetQuery {
                since_ms: 999,
                ..current.clone()
            },
        ];
        for query in stale {
            let answer = FleetCounts {
                query: query.clone(),
                counts: Ok(Some(failing())),
            };
            assert!(rollouts.analyze(&live, 2_000, Some(answer)).is_none());
            let status = rollouts.status().unwrap();
            assert_eq!(
                (
                    status["state"].as_str(),
                    status["analyses"].as_array().map(Vec::len)
                ),
                (Some("progressing"), Some(0)),
                "{query:?} was judged: {status:#}"
            );
        }
        // The answer to the rollout in force is judged: failure_limit 1 aborts it.
        let answer = FleetCounts {
            query: current,
            counts: Ok(Some(failing())),
        };
        assert!(rollouts.analyze(&live, 2_000, Some(answer)).is_some());
        let status = rollouts.status().unwrap();
        assert_eq!(status["state"], "aborted", "{status:#}");
        assert_eq!(status["analyses"][0]["source"], "prometheus");
    }

    #[test]
    fn a_follower_refuses_an_incoherent_leader_state_and_holds_its_weight() {
        let dir = tempfile::tempdir().unwrap();
        let shared = Shared::new();
        let mut rollouts = Rollouts::new(shared.metrics.rollout());
        let follower = "[rollout]\nrule = \"canary-rollout\"\nfollow = \"http://127.0.0.1:1\"";
        let live = rollouts.adopt(compiled(dir.path(), &shared, "v2", follower), 1_000);
        let coherent = LeaderState {
            instance: "the leader".into(),
            rule: "canary-rollout".into(),
            canary_version: "v2".into(),
            state: machine::Phase::Progressing,
            step: 1,
            weight_permille: 50,
            steps: vec![10, 50, 1000],
            step_started_ms: 500,
        };
        let garbage = LeaderState {
            step: 99,
            weight_permille: 65535,
            steps: vec![],
            ..coherent.clone()
        };
        assert!(rollouts.follow(&live, 2_000, Ok(garbage)).is_none());
        let status = rollouts.status().unwrap();
        assert_eq!(status["weight_permille"], 0, "{status:#}");
        let why = status["follow_error"].as_str().unwrap_or_default();
        assert!(
            why.contains("incoherent rollout state: weight_permille 65535 is above 1000"),
            "{status:#}"
        );
        assert!(status["followed_at"].is_null(), "{status:#}");
        // A coherent state is followed, and a later incoherent one leaves it in force.
        let live = rollouts.follow(&live, 3_000, Ok(coherent.clone())).unwrap();
        assert_eq!(rollouts.status().unwrap()["weight_permille"], 50);
        let out_of_range = LeaderState {
            step: 3,
            weight_permille: 1000,
            ..coherent
        };
        assert!(rollouts.follow(&live, 4_000, Ok(out_of_range)).is_none());
        let status = rollouts.status().unwrap();
        assert_eq!(
            (status["weight_permille"].as_u64(), status["step"].as_u64()),
            (Some(50), Some(1)),
            "{status:#}"
        );
        assert!(status["follow_error"]
            .as_str()
            .is_some_and(|e| e.contains("step 3 is not one of its 3 steps")));
    }
}
