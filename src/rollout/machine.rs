//! The rollout's state machine: a pure function of (state, input, clock) to the next
//! state and, when something changed that a person should know, the transition.
//!
//! ```text
//!              pass, step lasted min_step_duration: next step
//!            ┌──────────────┐
//!            ▼              │   last step passed, or promote full
//!      progressing ─────────┴──────────────────────────────────────► promoted (1000‰)
//!        │     ▲  inconclusive_limit in a row, or pause
//!        │     └──────────────── paused ─────────┐
//!        │        resume / promote               │
//!        │ failure_limit failed in a row, or abort (from paused too)
//!        └───────────────────────────────────────┴─────────────────► aborted (0‰)
//! ```
//!
//! A paused rollout holds its weight and is still judged: failures abort it, as Argo
//! Rollouts' background analysis does, because holding a broken canary hurts users;
//! passes do not advance it. Promoted and aborted are final for this rollout (its
//! rule and the canary's version); a new version starts a new one.

use serde::{Deserialize, Serialize};

use super::judge::Verdict;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Progressing,
    Paused,
    Promoted,
    Aborted,
}

impl Phase {
    pub const ALL: [Phase; 4] = [
        Phase::Progressing,
        Phase::Paused,
        Phase::Promoted,
        Phase::Aborted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Progressing => "progressing",
            Phase::Paused => "paused",
            Phase::Promoted => "promoted",
            Phase::Aborted => "aborted",
        }
    }

    /// Whether analyses still run: the rollout has a canary and a control to compare.
    pub fn is_judged(self) -> bool {
        matches!(self, Phase::Progressing | Phase::Paused)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutState {
    pub phase: Phase,
    /// 0-based index into the steps.
    pub step: usize,
    /// When the current step started, in ms since the Unix epoch.
    pub step_started_ms: u64,
    pub failures_in_a_row: u32,
    pub inconclusive_in_a_row: u32,
    /// A weight held in place of the step's: set when the saved state could not be
    /// read, so the rollout pauses where the config file had the rule. The next
    /// advance goes to the first step above it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_weight: Option<u16>,
}

/// What the machine is told about the rollout; from `[rollout]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits<'a> {
    /// Strictly increasing, each in 1..=1000.
    pub steps: &'a [u16],
    pub min_step_duration_ms: u64,
    pub failure_limit: u32,
    pub inconclusive_limit: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input<'a> {
    /// An analysis's verdict, and its reason in words.
    Analysis(Verdict, &'a str),
    Pause,
    Resume,
    /// To the next step, or with `full` straight to 1000‰.
    Promote {
        full: bool,
    },
    Abort,
}

/// A change of phase or step, as logged and shown at `/admin/rollout`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub at_ms: u64,
    pub from: Phase,
    pub to: Phase,
    pub from_step: usize,
    pub to_step: usize,
    pub from_weight: u16,
    pub to_weight: u16,
    pub reason: String,
}

/// The action does not apply in the current phase (an HTTP 409).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} a rollout that is {phase}")]
pub struct NotApplicable {
    pub action: &'static str,
    pub phase: &'static str,
}

impl RolloutState {
    /// A new rollout, at its first step.
    pub fn start(now_ms: u64) -> Self {
        RolloutState {
            phase: Phase::Progressing,
            step: 0,
            step_started_ms: now_ms,
            failures_in_a_row: 0,
            inconclusive_in_a_row: 0,
            held_weight: None,
        }
    }

    /// A rollout whose saved state was lost: paused where the file had the rule,
    /// at the last step not above that weight.
    pub fn held_at(weight: u16, steps: &[u16], now_ms: u64) -> Self {
        let step = steps.iter().rposition(|&w| w <= weight).unwrap_or(0);
        RolloutState {
            phase: Phase::Paused,
            held_weight: Some(weight),
            ..RolloutState::start(now_ms)
        }
        .at_step(step)
    }

    fn at_step(mut self, step: usize) -> Self {
        self.step = step;
        self
    }

    /// The per-mille the rule gets in this state.
    pub fn weight(&self, steps: &[u16]) -> u16 {
        match self.phase {
            Phase::Promoted => 1000,
            Phase::Aborted => 0,
            Phase::Progressing | Phase::Paused => self
                .held_weight
                .unwrap_or_else(|| steps.get(self.step).copied().unwrap_or(1000)),
        }
    }
}

/// The state after `input` at `now_ms`, and the transition if the phase or the step
/// changed. Counters change without a transition.
pub fn next(
    state: &RolloutState,
    limits: &Limits<'_>,
    input: Input<'_>,
    now_ms: u64,
) -> Result<(RolloutState, Option<Transition>), NotApplicable> {
    let mut next = state.clone();
    let not_applicable = |action| NotApplicable {
        action,
        phase: state.phase.as_str(),
    };
    match input {
        Input::Analysis(verdict, why) => {
            if !state.phase.is_judged() {
                return Ok((next, None));
            }
            match verdict {
                Verdict::Fail => {
                    next.failures_in_a_row += 1;
                    next.inconclusive_in_a_row = 0;
                    if next.failures_in_a_row >= limits.failure_limit {
                        let reason = format!(
                            "{} failed analyses in a row (failure_limit {}): {why}",
                            next.failures_in_a_row, limits.failure_limit
                        );
                        next.phase = Phase::Aborted;
                        return Ok(changed(state, next, limits, now_ms, reason));
                    }
                }
                Verdict::Inconclusive => {
                    next.failures_in_a_row = 0;
                    next.inconclusive_in_a_row += 1;
                    if state.phase == Phase::Progressing
                        && next.inconclusive_in_a_row >= limits.inconclusive_limit
                    {
                        let reason = format!(
                            "{} inconclusive analyses in a row (inconclusive_limit {}): {why}",
                            next.inconclusive_in_a_row, limits.inconclusive_limit
                        );
                        next.phase = Phase::Paused;
                        return Ok(changed(state, next, limits, now_ms, reason));
                    }
                }
                Verdict::Pass => {
                    next.failures_in_a_row = 0;
                    next.inconclusive_in_a_row = 0;
                    let lasted = now_ms.saturating_sub(state.step_started_ms);
                    if state.phase == Phase::Progressing && lasted >= limits.min_step_duration_ms {
                        let reason = format!(
                            "step passed after {}: {why}",
                            humantime::format_duration(std::time::Duration::from_millis(lasted))
                        );
                        return Ok(advance(state, next, limits, now_ms, reason));
                    }
                }
            }
            Ok((next, None))
        }
        Input::Pause => {
            if state.phase != Phase::Progressing {
                return Err(not_applicable("pause"));
            }
            next.phase = Phase::Paused;
            Ok(changed(
                state,
                next,
                limits,
                now_ms,
                "paused by the operator".into(),
            ))
        }
        Input::Resume => {
            if state.phase != Phase::Paused {
                return Err(not_applicable("resume"));
            }
            next.phase = Phase::Progressing;
            next.failures_in_a_row = 0;
            next.inconclusive_in_a_row = 0;
            Ok(changed(
                state,
                next,
                limits,
                now_ms,
                "resumed by the operator".into(),
            ))
        }
        Input::Promote { full } => {
            if !state.phase.is_judged() {
                return Err(not_applicable("promote"));
            }
            if full {
                next.phase = Phase::Promoted;
                next.held_weight = None;
                let reason = "promoted to 1000‰ by the operator".to_string();
                return Ok(changed(state, next, limits, now_ms, reason));
            }
            let reason = "promoted to the next step by the operator".to_string();
            Ok(advance(state, next, limits, now_ms, reason))
        }
        Input::Abort => {
            if !state.phase.is_judged() {
                return Err(not_applicable("abort"));
            }
            next.phase = Phase::Aborted;
            Ok(changed(
                state,
                next,
                limits,
                now_ms,
                "aborted by the operator".into(),
            ))
        }
    }
}

/// To the first step above the current weight, or to promoted past the last one (or
/// at a step of 1000‰, which leaves no control to judge against).
fn advance(
    state: &RolloutState,
    mut next: RolloutState,
    limits: &Limits<'_>,
    now_ms: u64,
    reason: String,
) -> (RolloutState, Option<Transition>) {
    let weight = state.weight(limits.steps);
    let target = limits.steps.iter().position(|&w| w > weight);
    next.held_weight = None;
    next.failures_in_a_row = 0;
    next.inconclusive_in_a_row = 0;
    next.step_started_ms = now_ms;
    match target {
        Some(step) if limits.steps[step] < 1000 => {
            next.phase = Phase::Progressing;
            next.step = step;
        }
        Some(step) => {
            next.phase = Phase::Promoted;
            next.step = step;
        }
        None => next.phase = Phase::Promoted,
    }
    changed(state, next, limits, now_ms, reason)
}

fn changed(
    state: &RolloutState,
    next: RolloutState,
    limits: &Limits<'_>,
    now_ms: u64,
    reason: String,
) -> (RolloutState, Option<Transition>) {
    let transition = Transition {
        at_ms: now_ms,
        from: state.phase,
        to: next.phase,
        from_step: state.step,
        to_step: next.step,
        from_weight: state.weight(limits.steps),
        to_weight: next.weight(limits.steps),
        reason,
    };
    (next, Some(transition))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEPS: [u16; 4] = [10, 50, 200, 1000];
    const LIMITS: Limits<'static> = Limits {
        steps: &STEPS,
        min_step_duration_ms: 1000,
        failure_limit: 2,
        inconclusive_limit: 3,
    };

    fn run(state: &RolloutState, input: Input<'_>, now: u64) -> (RolloutState, Option<Transition>) {
        next(state, &LIMITS, input, now).expect("applies")
    }

    #[test]
    fn a_pass_advances_only_once_the_step_has_lasted_long_enough() {
        let s = RolloutState::start(0);
        let (s, t) = run(&s, Input::Analysis(Verdict::Pass, "ok"), 999);
        assert_eq!((s.step, t), (0, None));
        let (s, t) = run(&s, Input::Analysis(Verdict::Pass, "ok"), 1000);
        let t = t.unwrap();
        assert_eq!(
            (s.step, s.phase, s.step_started_ms),
            (1, Phase::Progressing, 1000)
        );
        assert_eq!((t.from_weight, t.to_weight), (10, 50));
        let (s, _) = run(&s, Input::Analysis(Verdict::Pass, "ok"), 2000);
        assert_eq!(s.weight(&STEPS), 200);
        // The next step is 1000‰: nothing is left to judge against, so it is promotion.
        let (s, t) = run(&s, Input::Analysis(Verdict::Pass, "ok"), 3000);
        assert_eq!((s.phase, s.weight(&STEPS)), (Phase::Promoted, 1000));
        assert_eq!(t.unwrap().to, Phase::Promoted);
    }

    #[test]
    fn failures_abort_only_in_a_row() {
        let s = RolloutState::start(0);
        let (s, t) = run(&s, Input::Analysis(Verdict::Fail, "errors"), 10);
        assert!(t.is_none());
        let (s, _) = run(&s, Input::Analysis(Verdict::Inconclusive, "few"), 20);
        assert_eq!(
            s.failures_in_a_row, 0,
            "an inconclusive analysis breaks the row"
        );
        let (s, _) = run(&s, Input::Analysis(Verdict::Fail, "errors"), 30);
        let (s, t) = run(&s, Input::Analysis(Verdict::Fail, "errors"), 40);
        assert_eq!((s.phase, s.weight(&STEPS)), (Phase::Aborted, 0));
        assert!(t.unwrap().reason.contains("2 failed analyses in a row"));
    }

    #[test]
    fn inconclusive_analyses_in_a_row_pause_and_a_paused_rollout_still_aborts() {
        let mut s = RolloutState::start(0);
        for now in 1..3 {
            s = run(&s, Input::Analysis(Verdict::Inconclusive, "few"), now).0;
        }
        let (s, t) = run(&s, Input::Analysis(Verdict::Inconclusive, "few"), 3);
        assert_eq!((s.phase, s.weight(&STEPS)), (Phase::Paused, 10));
        assert!(t.is_some());
        // Paused: passes do not advance.
        let (s, t) = run(&s, Input::Analysis(Verdict::Pass, "ok"), 5000);
        assert_eq!((s.phase, s.step, t), (Phase::Paused, 0, None));
        let (s, _) = run(&s, Input::Analysis(Verdict::Fail, "errors"), 5001);
        let (s, _) = run(&s, Input::Analysis(Verdict::Fail, "errors"), 5002);
        assert_eq!(s.phase, Phase::Aborted);
    }

    #[test]
    fn operator_actions_apply_where_they_make_sense() {
        let s = RolloutState::start(0);
        assert!(next(&s, &LIMITS, Input::Resume, 1).is_err());
        let (s, _) = run(&s, Input::Pause, 1);
        assert!(next(&s, &LIMITS, Input::Pause, 2).is_err());
        let (s, _) = run(&s, Input::Promote { full: false }, 2);
        assert_eq!(
            (s.phase, s.step),
            (Phase::Progressing, 1),
            "promote resumes at the next step"
        );
        let (s, _) = run(&s, Input::Promote { full: true }, 3);
        assert_eq!(s.phase, Phase::Promoted);
        for action in [
            Input::Pause,
            Input::Resume,
            Input::Promote { full: false },
            Input::Abort,
        ] {
            let err = next(&s, &LIMITS, action, 4).unwrap_err();
            assert_eq!(err.phase, "promoted");
        }
        let (s, _) = run(&RolloutState::start(0), Input::Abort, 1);
        assert_eq!(s.weight(&STEPS), 0);
        assert!(next(&s, &LIMITS, Input::Abort, 2).is_err());
    }

    #[test]
    fn a_held_weight_stays_until_the_next_advance_which_never_skips_a_step() {
        let s = RolloutState::held_at(30, &STEPS, 0);
        assert_eq!((s.phase, s.step, s.weight(&STEPS)), (Phase::Paused, 0, 30));
        let (s, _) = run(&s, Input::Resume, 1);
        assert_eq!(s.weight(&STEPS), 30);
        let (s, _) = run(&s, Input::Promote { full: false }, 2);
        assert_eq!((s.step, s.weight(&STEPS), s.held_weight), (1, 50, None));
        // Below the first step: the first step is next.
        let s = RolloutState::held_at(3, &STEPS, 0);
        let (s, _) = run(&s, Input::Promote { full: false }, 1);
        assert_eq!((s.step, s.weight(&STEPS)), (0, 10));
    }

    #[test]
    fn the_last_step_below_1000_promotes_when_it_passes() {
        let steps = [1, 2, 4, 8];
        let limits = Limits {
            steps: &steps,
            ..LIMITS
        };
        let mut s = RolloutState::start(0);
        for now in [1000, 2000, 3000] {
            s = next(&s, &limits, Input::Analysis(Verdict::Pass, "ok"), now)
                .unwrap()
                .0;
        }
        assert_eq!((s.phase, s.weight(&steps)), (Phase::Progressing, 8));
        let (s, _) = next(&s, &limits, Input::Analysis(Verdict::Pass, "ok"), 4000).unwrap();
        assert_eq!((s.phase, s.weight(&steps)), (Phase::Promoted, 1000));
    }
}
