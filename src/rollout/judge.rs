//! The judge: two cohorts' counts in, a verdict out, with every figure it used.
//!
//! Five checks, each an estimate with an interval compared with a threshold:
//!
//! | check | estimate | threshold |
//! | --- | --- | --- |
//! | `errors` | canary error rate − control's (Agresti-Caffo) | `error_margin` |
//! | `error_rate` | canary error rate | `max_error_rate` |
//! | `latency_rank` | P(canary > (1 + m) · control), Mann-Whitney U | 1/2 |
//! | `latency_mean` | canary mean − (1 + m) · control mean, Welch | 0 |
//! | `p99` | share of canary requests at or above `max_p99` | 1 % |
//!
//! where `m` is `latency_margin`. A check *fails* when its whole interval lies above
//! the threshold: there is strong evidence that the canary is past it. It *passes*
//! when its estimate lies at least one standard error below the threshold: the canary
//! looks within it and there is not even weak evidence otherwise. Between the two it is
//! *inconclusive*. The analysis fails if any check fails, passes if every check
//! passes, and is inconclusive otherwise; it is inconclusive without looking when
//! either cohort has fewer than `min_requests` requests.
//!
//! **Peeking.** The judge looks at every interval, so a fixed-sample interval would
//! abort healthy rollouts far more often than its level says. The failure interval is
//! a confidence sequence ([`stats::mixture_radius`]): it covers the truth at every
//! look at once with probability `1 - level`. Its level is `alpha / (steps × 5)`, a
//! Bonferroni share of the rollout's `alpha` for each check at each step judged, so the
//! chance that a healthy rollout ever sees one failed check is at most `alpha`.
//!
//! A pass is held to less, on purpose: proving non-inferiority within `error_margin`
//! at 99 % would take thousands of canary requests per step on a service with a
//! fraction of a percent of errors, and healthy rollouts would stall. What a pass
//! risks is one step more for a canary near a threshold; the next step judges it again
//! with more traffic, and failures are caught by the strict interval at any step.
//!
//! The mixture's spread is set in units of the estimate's own standard error, so that
//! the sequence is tightest when the smaller cohort holds about `min_requests`
//! requests: the radius is `se · sqrt((1 + 1/r) · ln((1 + r) / level²))` with `r` the
//! smaller cohort's size over `min_requests`.

use std::time::Duration;

use serde::Serialize;

use super::cohort::CohortCounts;
use super::stats;

/// What the judge is told; `[rollout.judge]` and `[rollout] min_requests`.
#[derive(Debug, Clone, PartialEq)]
pub struct JudgeSettings {
    pub alpha: f64,
    pub max_error_rate: f64,
    pub max_p99: Duration,
    pub error_margin: f64,
    pub latency_margin: f64,
    pub min_requests: u64,
}

/// The number of checks that can fail an analysis; each gets a share of `alpha`.
pub const CHECKS: usize = 5;

/// The share of requests allowed at or above `max_p99`: that is what "p99 below it" means.
const P99_TAIL: f64 = 0.01;

/// How far inside its threshold, in standard errors, a check's estimate must be to pass.
pub const PASS_STANDARD_ERRORS: f64 = 1.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    Inconclusive,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// One analysis: the verdict, why, and the figures behind it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Analysis {
    pub verdict: Verdict,
    pub reason: String,
    pub canary: CohortSummary,
    pub control: CohortSummary,
    /// Empty when there were too few requests to look.
    pub checks: Vec<Check>,
    /// The level each check's failure interval is held to.
    pub level_fail: f64,
    /// How many standard errors inside its threshold a check's estimate must be to pass.
    pub pass_standard_errors: f64,
}

/// A cohort's figures, as a person reads them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CohortSummary {
    pub requests: u64,
    pub errors: u64,
    pub error_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub mean_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub check: &'static str,
    /// What is estimated, against what, in words.
    pub question: String,
    pub estimate: f64,
    pub standard_error: f64,
    /// The interval a failure is judged by (the wider one).
    pub lower: f64,
    pub upper: f64,
    /// The estimate plus [`PASS_STANDARD_ERRORS`] standard errors: at or below the
    /// threshold, the check passes.
    pub pass_upper: f64,
    pub threshold: f64,
    pub result: Verdict,
    /// The fixed-sample test statistic and p-value, for reference (not for decisions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statistic: Option<Statistic>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Statistic {
    pub name: &'static str,
    pub value: f64,
    pub p_value: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub df: Option<f64>,
}

/// The record of an analysis that could not be made (its counts could not be read):
/// inconclusive, with the reason and no figures.
pub fn unavailable(reason: String) -> Analysis {
    let nothing = summary(&CohortCounts::default());
    Analysis {
        verdict: Verdict::Inconclusive,
        reason,
        canary: nothing.clone(),
        control: nothing,
        checks: Vec::new(),
        level_fail: f64::NAN,
        pass_standard_errors: PASS_STANDARD_ERRORS,
    }
}

/// Judges the canary cohort against the control cohort. `steps_judged` is the number
/// of steps the rollout judges (those below 1000‰), over which `alpha` is shared.
pub fn judge(
    canary: &CohortCounts,
    control: &CohortCounts,
    settings: &JudgeSettings,
    steps_judged: usize,
) -> Analysis {
    let level_fail = settings.alpha / (steps_judged.max(1) * CHECKS) as f64;
    let mut analysis = Analysis {
        verdict: Verdict::Inconclusive,
        reason: String::new(),
        canary: summary(canary),
        control: summary(control),
        checks: Vec::new(),
        level_fail,
        pass_standard_errors: PASS_STANDARD_ERRORS,
    };
    let fewest = canary.requests.min(control.requests);
    if fewest < settings.min_requests.max(1) {
        analysis.reason = format!(
            "too few requests: canary {}, control {}, need {} each",
            canary.requests, control.requests, settings.min_requests
        );
        return analysis;
    }
    let looks = Looks {
        intrinsic_time: fewest as f64 / settings.min_requests.max(1) as f64,
        level_fail,
    };
    let m = settings.latency_margin;
    // How much more latency varies between users than between requests: the rank and
    // tail checks, which have no per-group form, are widened by as much.
    let design_effect = latency_design_effect(canary).max(latency_design_effect(control));
    analysis.checks = vec![
        errors_check(canary, control, settings.error_margin, &looks),
        error_rate_check(canary, settings.max_error_rate, &looks),
        latency_rank_check(canary, control, m, design_effect, &looks),
        latency_mean_check(canary, control, m, &looks),
        p99_check(canary, settings.max_p99, design_effect, &looks),
    ];
    let failed: Vec<&str> = analysis
        .checks
        .iter()
        .filter(|c| c.result == Verdict::Fail)
        .map(|c| c.check)
        .collect();
    let open: Vec<&str> = analysis
        .checks
        .iter()
        .filter(|c| c.result == Verdict::Inconclusive)
        .map(|c| c.check)
        .collect();
    (analysis.verdict, analysis.reason) = if !failed.is_empty() {
        (Verdict::Fail, format!("failed: {}", failed.join(", ")))
    } else if !open.is_empty() {
        (
            Verdict::Inconclusive,
            format!("not yet clear: {}", open.join(", ")),
        )
    } else {
        (Verdict::Pass, "every check passed".to_string())
    };
    analysis
}

/// How wide the intervals are at this look.
struct Looks {
    /// The smaller cohort's size in units of `min_requests`.
    intrinsic_time: f64,
    level_fail: f64,
}

impl Looks {
    /// The failure interval's half-width: a confidence sequence at `level_fail`.
    fn radius(&self, standard_error: f64) -> f64 {
        let variance = standard_error * standard_error;
        stats::mixture_radius(variance, variance * self.intrinsic_time, self.level_fail)
    }

    /// A check from an estimate and its standard error; `None` estimates (no data for
    /// this check) are inconclusive with an infinite interval.
    fn check(
        &self,
        check: &'static str,
        question: String,
        estimate: Option<(f64, f64)>,
        threshold: f64,
        statistic: Option<Statistic>,
    ) -> Check {
        let Some((estimate, standard_error)) =
            estimate.filter(|(e, s)| e.is_finite() && s.is_finite())
        else {
            return Check {
                check,
                question,
                estimate: f64::NAN,
                standard_error: f64::NAN,
                lower: f64::NEG_INFINITY,
                upper: f64::INFINITY,
                pass_upper: f64::INFINITY,
                threshold,
                result: Verdict::Inconclusive,
                statistic,
            };
        };
        let fail_radius = self.radius(standard_error);
        let (lower, upper) = (estimate - fail_radius, estimate + fail_radius);
        let pass_upper = estimate + PASS_STANDARD_ERRORS * standard_error;
        let result = if lower > threshold {
            Verdict::Fail
        } else if pass_upper <= threshold {
            Verdict::Pass
        } else {
            Verdict::Inconclusive
        };
        Check {
            check,
            question,
            estimate,
            standard_error,
            lower,
            upper,
            pass_upper,
            threshold,
            result,
            statistic,
        }
    }
}

fn errors_check(
    canary: &CohortCounts,
    control: &CohortCounts,
    margin: f64,
    looks: &Looks,
) -> Check {
    let d = stats::agresti_caffo(
        canary.errors,
        canary.requests,
        control.errors,
        control.requests,
    );
    // Users, not requests, were split: each cohort's variance is at least what its
    // user groups show.
    let (pc, pk) = (
        stats::adjusted_proportion(canary.errors as f64, canary.requests),
        stats::adjusted_proportion(control.errors as f64, control.requests),
    );
    let variance = pc.standard_error.powi(2).max(across_groups(
        canary,
        CohortCounts::error_rate_variance_across_groups,
    )) + pk.standard_error.powi(2).max(across_groups(
        control,
        CohortCounts::error_rate_variance_across_groups,
    ));
    let statistic = stats::two_proportion_z(
        canary.errors,
        canary.requests,
        control.errors,
        control.requests,
    )
    .map(|z| Statistic {
        name: "z",
        value: z,
        p_value: stats::two_sided_normal(z),
        df: None,
    });
    looks.check(
        "errors",
        format!("canary error rate minus control's, at most {margin}"),
        Some((d.estimate, variance.sqrt())),
        margin,
        statistic,
    )
}

fn error_rate_check(canary: &CohortCounts, max: f64, looks: &Looks) -> Check {
    let p = stats::adjusted_proportion(canary.errors as f64, canary.requests);
    let variance = p.standard_error.powi(2).max(across_groups(
        canary,
        CohortCounts::error_rate_variance_across_groups,
    ));
    looks.check(
        "error_rate",
        format!("canary error rate, at most {max}"),
        Some((p.estimate, variance.sqrt())),
        max,
        None,
    )
}

fn latency_rank_check(
    canary: &CohortCounts,
    control: &CohortCounts,
    m: f64,
    design_effect: f64,
    looks: &Looks,
) -> Check {
    let scaled: Vec<(f64, u64)> = control
        .values()
        .into_iter()
        .map(|(v, n)| (v * (1.0 + m), n))
        .collect();
    let test = stats::mann_whitney(&canary.values(), &scaled);
    looks.check(
        "latency_rank",
        format!(
            "chance a canary request is slower than a control request made {:.0} % slower, at most 1/2",
            m * 100.0
        ),
        test.map(|t| {
            let se = t.standard_error() * design_effect.sqrt();
            (t.probability_of_superiority(), se)
        }),
        0.5,
        test.map(|t| Statistic {
            name: "z",
            value: t.z,
            p_value: t.p,
            df: None,
        }),
    )
}

fn latency_mean_check(
    canary: &CohortCounts,
    control: &CohortCounts,
    m: f64,
    looks: &Looks,
) -> Check {
    let test = match (canary.moments(), control.moments()) {
        (Some((mc, vc)), Some((mk, vk))) => stats::welch(
            (mc, vc, canary.timed() as f64),
            (mk, vk, control.timed() as f64),
            1.0 + m,
        ),
        _ => None,
    };
    // Each cohort's share of the variance is at least what its user groups show.
    let r = 1.0 + m;
    let robust = match (canary.moments(), control.moments()) {
        (Some((_, vc)), Some((_, vk))) => {
            let c = (vc / canary.timed() as f64).max(across_groups(
                canary,
                CohortCounts::mean_variance_across_groups,
            ));
            let k = (vk / control.timed() as f64).max(across_groups(
                control,
                CohortCounts::mean_variance_across_groups,
            ));
            Some((c + r * r * k).sqrt())
        }
        _ => None,
    };
    // In milliseconds, as people read latency.
    looks.check(
        "latency_mean",
        format!(
            "canary mean latency minus control's made {:.0} % slower, in ms, at most 0",
            m * 100.0
        ),
        test.zip(robust)
            .map(|(t, se)| (t.difference / 1000.0, se.max(t.standard_error) / 1000.0)),
        0.0,
        test.map(|t| Statistic {
            name: "welch_t",
            value: t.t,
            p_value: t.p,
            df: Some(t.df),
        }),
    )
}

/// The share at or above the gate, from the buckets: a failure counts only the
/// requests surely above it, a pass counts those perhaps above it too, so a canary
/// whose latency sits in the gate's own bucket is neither passed nor failed for it.
fn p99_check(canary: &CohortCounts, max_p99: Duration, design_effect: f64, looks: &Looks) -> Check {
    let micros = u64::try_from(max_p99.as_micros()).unwrap_or(u64::MAX);
    let timed = canary.timed();
    let question = format!(
        "share of canary requests at or above {}, at most {P99_TAIL}",
        humantime::format_duration(max_p99)
    );
    if timed == 0 {
        return looks.check("p99", question, None, P99_TAIL, None);
    }
    let (surely, perhaps) = canary.at_least(micros);
    let (low, high) = (
        stats::adjusted_proportion(surely as f64, timed),
        stats::adjusted_proportion(perhaps as f64, timed),
    );
    let inflate = design_effect.sqrt();
    let mut check = looks.check(
        "p99",
        question,
        Some((low.estimate, low.standard_error * inflate)),
        P99_TAIL,
        None,
    );
    check.pass_upper = high.estimate + PASS_STANDARD_ERRORS * high.standard_error * inflate;
    check.result = if check.lower > P99_TAIL {
        Verdict::Fail
    } else if check.pass_upper <= P99_TAIL {
        Verdict::Pass
    } else {
        Verdict::Inconclusive
    };
    check
}

/// A variance measured across user groups: infinite when the groups are known but
/// fewer than two hold requests (a cohort of a user or two says nothing of users),
/// and 0 (no say) when they are not known.
fn across_groups(counts: &CohortCounts, variance: fn(&CohortCounts) -> Option<f64>) -> f64 {
    if counts.groups.is_empty() {
        return 0.0;
    }
    variance(counts).unwrap_or(f64::INFINITY)
}

/// The mean latency's variance across user groups over its variance across requests,
/// at least 1.
fn latency_design_effect(counts: &CohortCounts) -> f64 {
    let Some((_, variance)) = counts.moments() else {
        return 1.0;
    };
    let independent = variance / counts.timed() as f64;
    let across = across_groups(counts, CohortCounts::mean_variance_across_groups);
    if independent > 0.0 && across.is_finite() {
        (across / independent).max(1.0)
    } else if across.is_infinite() {
        f64::INFINITY
    } else {
        1.0
    }
}

pub fn summary(counts: &CohortCounts) -> CohortSummary {
    let ms = |us: f64| us / 1000.0;
    CohortSummary {
        requests: counts.requests,
        errors: counts.errors,
        error_rate: (counts.requests > 0).then(|| counts.errors as f64 / counts.requests as f64),
        p50_ms: counts.quantile(0.5).map(ms),
        p99_ms: counts.quantile(0.99).map(ms),
        mean_ms: counts.moments().map(|(mean, _)| ms(mean)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::cohort::{bucket_of, BUCKETS};

    fn settings() -> JudgeSettings {
        JudgeSettings {
            alpha: 0.01,
            max_error_rate: 0.01,
            max_p99: Duration::from_millis(500),
            error_margin: 0.002,
            latency_margin: 0.10,
            min_requests: 500,
        }
    }

    /// `n` requests, `errors` of them errors, latencies spread evenly over
    /// `[low_ms, high_ms]`.
    fn cohort(n: u64, errors: u64, low_ms: f64, high_ms: f64) -> CohortCounts {
        let mut latency = vec![0; BUCKETS];
        for i in 0..n {
            let ms = low_ms + (high_ms - low_ms) * (i as f64 + 0.5) / n as f64;
            latency[bucket_of((ms * 1000.0) as u64)] += 1;
        }
        CohortCounts {
            requests: n,
            errors,
            latency,
            ..CohortCounts::default()
        }
    }

    #[test]
    fn too_few_requests_is_inconclusive_whatever_they_show() {
        let canary = cohort(499, 499, 900.0, 1000.0);
        let control = cohort(100_000, 0, 1.0, 2.0);
        let a = judge(&canary, &control, &settings(), 10);
        assert_eq!(a.verdict, Verdict::Inconclusive);
        assert!(a.checks.is_empty());
        assert!(a.reason.contains("too few"), "{}", a.reason);
    }

    #[test]
    fn a_clearly_worse_canary_fails_on_the_checks_that_see_it() {
        let control = cohort(20_000, 20, 10.0, 20.0);
        let errors = judge(&cohort(5_000, 500, 10.0, 20.0), &control, &settings(), 10);
        assert_eq!(errors.verdict, Verdict::Fail);
        let failed: Vec<_> = errors
            .checks
            .iter()
            .filter(|c| c.result == Verdict::Fail)
            .map(|c| c.check)
            .collect();
        assert_eq!(failed, ["errors", "error_rate"]);

        let slow = judge(&cohort(5_000, 5, 15.0, 30.0), &control, &settings(), 10);
        assert_eq!(slow.verdict, Verdict::Fail);
        let failed: Vec<_> = slow
            .checks
            .iter()
            .filter(|c| c.result == Verdict::Fail)
            .map(|c| c.check)
            .collect();
        assert_eq!(failed, ["latency_rank", "latency_mean"]);

        let tail = judge(
            &cohort(5_000, 5, 400.0, 700.0),
            &cohort(20_000, 20, 400.0, 700.0),
            &settings(),
            10,
        );
        assert!(tail
            .checks
            .iter()
            .any(|c| c.check == "p99" && c.result == Verdict::Fail));
    }

    #[test]
    fn a_canary_like_its_control_passes_with_enough_data() {
        let canary = cohort(20_000, 2, 10.0, 20.0);
        let control = cohort(20_000, 2, 10.0, 20.0);
        let a = judge(&canary, &control, &settings(), 10);
        assert_eq!(a.verdict, Verdict::Pass, "{a:#?}");
        for check in &a.checks {
            assert!(check.pass_upper <= check.threshold, "{check:?}");
            assert!(check.lower < check.upper);
        }
    }

    #[test]
    fn latencies_within_the_margin_pass_and_beyond_it_fail() {
        let control = cohort(50_000, 0, 10.0, 12.0);
        let within = judge(&cohort(50_000, 0, 10.5, 12.6), &control, &settings(), 1);
        let rank = within
            .checks
            .iter()
            .find(|c| c.check == "latency_rank")
            .unwrap();
        assert_eq!(rank.result, Verdict::Pass, "{rank:?}");
        let beyond = judge(&cohort(50_000, 0, 11.5, 13.8), &control, &settings(), 1);
        let rank = beyond
            .checks
            .iter()
            .find(|c| c.check == "latency_rank")
            .unwrap();
        assert_eq!(rank.result, Verdict::Fail, "{rank:?}");
    }

    #[test]
    fn a_canary_just_under_the_p99_gate_is_never_failed_for_it() {
        // Every request at 146 ms against a 150 ms gate: 146 ms shares the gate's
        // bucket, [144.2, 150.7) ms, so the buckets cannot tell it is under.
        let at = |ms: f64, n: u64| cohort(n, 0, ms, ms);
        let settings = JudgeSettings {
            max_p99: Duration::from_millis(150),
            ..settings()
        };
        let a = judge(&at(146.0, 20_000), &at(146.0, 20_000), &settings, 1);
        let p99 = a.checks.iter().find(|c| c.check == "p99").unwrap();
        assert_eq!(p99.result, Verdict::Inconclusive, "{p99:?}");
        // Well under it passes; in buckets wholly above it fails.
        let a = judge(&at(130.0, 20_000), &at(130.0, 20_000), &settings, 1);
        assert_eq!(
            a.checks.iter().find(|c| c.check == "p99").unwrap().result,
            Verdict::Pass
        );
        let a = judge(&at(160.0, 20_000), &at(160.0, 20_000), &settings, 1);
        assert_eq!(
            a.checks.iter().find(|c| c.check == "p99").unwrap().result,
            Verdict::Fail
        );
    }

    #[test]
    fn the_failure_level_is_alpha_shared_over_steps_and_checks() {
        let a = judge(
            &cohort(600, 0, 1.0, 2.0),
            &cohort(600, 0, 1.0, 2.0),
            &settings(),
            10,
        );
        assert!((a.level_fail - 0.01 / 50.0).abs() < 1e-15);
        assert_eq!(a.pass_standard_errors, 1.0);
    }

    #[test]
    fn a_canary_near_a_threshold_is_inconclusive_until_the_evidence_is_clear() {
        // 0.3 points more errors than the control, against a margin of 0.2: neither
        // within the margin by a standard error, nor clearly past it.
        let control = cohort(100_000, 100, 10.0, 20.0);
        let near = judge(&cohort(2_000, 8, 10.0, 20.0), &control, &settings(), 10);
        let errors = near.checks.iter().find(|c| c.check == "errors").unwrap();
        assert_eq!(errors.result, Verdict::Inconclusive, "{errors:?}");
        assert!(errors.lower < errors.threshold && errors.pass_upper > errors.threshold);
    }

    #[test]
    fn a_canary_without_latencies_is_judged_on_errors_alone() {
        // Every canary request fell back to stable: errors, no latencies.
        let canary = CohortCounts {
            requests: 600,
            errors: 600,
            latency: vec![0; BUCKETS],
            ..CohortCounts::default()
        };
        let a = judge(&canary, &cohort(60_000, 6, 1.0, 2.0), &settings(), 10);
        assert_eq!(a.verdict, Verdict::Fail);
        let rank = a.checks.iter().find(|c| c.check == "latency_rank").unwrap();
        assert_eq!(rank.result, Verdict::Inconclusive);
    }
}
