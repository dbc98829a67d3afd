//! Whole rollouts, simulated: the judge and the state machine against seeded
//! traffic, to show what they do over many runs rather than in one lucky one.
//!
//! Traffic is drawn per analysis interval at the level of counts: each cohort's size
//! is a binomial share of the requests that reach the rule, its errors a binomial of
//! its size, and its latency histogram a multinomial over the judge's own buckets of a
//! log-normal distribution. That is exactly what the judge would see from the same
//! traffic request by request, at a fraction of the cost.
//!
//! The scenario is a service taking 200 requests/s through the rollout's rule, judged
//! every minute, doubling from 10‰ (10, 20, 40, ... 640, then 1000‰), at least 5
//! minutes a step, with the default judge (`alpha` 0.01, `min_requests` 500,
//! `failure_limit` 2, `inconclusive_limit` 30). The stable version answers 0.1 % errors
//! with a log-normal latency of median 50 ms and σ 0.5 (a p99 of about 160 ms).

use std::time::Duration;

use statrs::distribution::{Binomial, ContinuousCDF, DiscreteCDF, Normal};

use super::cohort::{lower_bound, upper_bound, CohortCounts, GroupCounts, BUCKETS};
use super::judge::{judge, JudgeSettings};
use super::machine::{next, Input, Limits, Phase, RolloutState};
use super::schedule::Schedule;
use crate::routing::USER_GROUPS;

/// A version's behaviour.
#[derive(Debug, Clone, Copy)]
struct Service {
    error_rate: f64,
    median_ms: f64,
    sigma: f64,
}

const STABLE: Service = Service {
    error_rate: 0.001,
    median_ms: 50.0,
    sigma: 0.5,
};

#[derive(Debug, Clone)]
struct Scenario {
    requests_per_second: f64,
    /// Users whose errors cluster, when any.
    clustered: Option<Clustered>,
    /// `error_margin` and `latency_margin`.
    margins: (f64, f64),
    canary: Service,
    control: Service,
    /// Stop a run that has neither promoted nor aborted after this many analyses.
    max_analyses: usize,
}

const INTERVAL_S: u64 = 60;
const MIN_STEP_S: u64 = 300;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    phase: Phase,
    analyses: usize,
}

/// The probability of each latency bucket under a log-normal distribution.
fn bucket_probabilities(service: Service) -> Vec<f64> {
    let normal = Normal::new((service.median_ms * 1000.0).ln(), service.sigma).unwrap();
    (0..BUCKETS)
        .map(|i| {
            let (lo, hi) = (lower_bound(i), upper_bound(i));
            let upper = if hi.is_finite() {
                normal.cdf(hi.ln())
            } else {
                1.0
            };
            let lower = if lo > 0.0 { normal.cdf(lo.ln()) } else { 0.0 };
            upper - lower
        })
        .collect()
}

/// Binomial draws: exact inversion when the mean is small, the normal approximation
/// when the variance is large.
fn binomial(rng: &mut fastrand::Rng, n: u64, p: f64) -> u64 {
    if n == 0 || p <= 0.0 {
        return 0;
    }
    if p >= 1.0 {
        return n;
    }
    if p > 0.5 {
        return n - binomial(rng, n, 1.0 - p);
    }
    let (mean, variance) = (n as f64 * p, n as f64 * p * (1.0 - p));
    if variance > 50.0 {
        // Box-Muller.
        let (u, v) = (1.0 - rng.f64(), rng.f64());
        let z = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
        return (mean + variance.sqrt() * z).round().clamp(0.0, n as f64) as u64;
    }
    // Inversion (Kachitvichyanukul & Schmeiser's BINV).
    let q = 1.0 - p;
    let (s, a) = (p / q, (n as f64 + 1.0) * p / q);
    let mut r = q.powf(n as f64);
    let mut u = rng.f64();
    let mut x = 0u64;
    while u > r && x < n {
        u -= r;
        x += 1;
        r *= a / x as f64 - s;
    }
    x
}

/// A service's latency as the judge's buckets see it: `(bucket, P(bucket | not in an
/// earlier bucket))` for every bucket with any mass, for multinomial draws as a chain
/// of binomials.
fn latency_chain(service: Service) -> Vec<(usize, f64)> {
    let mut mass = 1.0f64;
    let mut chain = Vec::new();
    for (i, p) in bucket_probabilities(service).into_iter().enumerate() {
        if p > 1e-15 {
            chain.push((i, (p / mass).min(1.0)));
            mass -= p;
        }
    }
    chain
}

/// Users whose requests fail together: a few of them, each with its own bucket and
/// user group, answered with errors at `error_rate` by either version (a broken client,
/// an account in a bad state). Everyone else is `Service`'s.
#[derive(Debug, Clone, Copy)]
struct Clustered {
    users: u64,
    bad_users: u64,
    error_rate: f64,
}

/// Adds to `counts` the cohort's `good` requests (spread evenly over the user groups)
/// and each listed bad user's `(group, requests, error rate)`, as `service` answers them.
fn draw(
    rng: &mut fastrand::Rng,
    counts: &mut CohortCounts,
    good: u64,
    bad: &[(u8, u64, f64)],
    service: Service,
    chain: &[(usize, f64)],
) {
    if counts.groups.is_empty() {
        counts.groups = vec![GroupCounts::default(); USER_GROUPS];
        counts.latency = vec![0; BUCKETS];
    }
    let mut new = [(0u64, 0u64); USER_GROUPS];
    let mut left = good;
    for (g, slot) in new.iter_mut().enumerate() {
        let n = if g + 1 == USER_GROUPS {
            left
        } else {
            binomial(rng, left, 1.0 / (USER_GROUPS - g) as f64)
        };
        left -= n;
        *slot = (n, binomial(rng, n, service.error_rate));
    }
    for &(group, n, error_rate) in bad {
        let slot = &mut new[usize::from(group)];
        slot.0 += n;
        slot.1 += binomial(rng, n, error_rate);
    }
    // Every request's latency is the service's: each group's sum by the normal
    // approximation, the histogram by buckets.
    let (median, sigma) = (service.median_ms * 1000.0, service.sigma);
    let mean = median * (sigma * sigma / 2.0).exp();
    let sd = mean * ((sigma * sigma).exp() - 1.0).sqrt();
    for (g, &(n, errors)) in counts.groups.iter_mut().zip(&new) {
        g.requests += n;
        g.errors += errors;
        let sum = n as f64 * mean + (n as f64).sqrt() * sd * normal(rng);
        g.sum_micros += sum.max(0.0) as u64;
    }
    let mut left: u64 = new.iter().map(|&(n, _)| n).sum();
    for &(bucket, p) in chain {
        if left == 0 {
            break;
        }
        let k = binomial(rng, left, p);
        counts.latency[bucket] += k;
        left -= k;
    }
    // Mass below 1e-15 per bucket: whatever is left lands in the last bucket drawn.
    if let (Some(&(bucket, _)), true) = (chain.last(), left > 0) {
        counts.latency[bucket] += left;
    }
    counts.requests = counts.groups.iter().map(|g| g.requests).sum();
    counts.errors = counts.groups.iter().map(|g| g.errors).sum();
    counts.sum_micros = counts.groups.iter().map(|g| g.sum_micros).sum();
}

/// A standard normal draw (Box-Muller).
fn normal(rng: &mut fastrand::Rng) -> f64 {
    let (u, v) = (1.0 - rng.f64(), rng.f64());
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

fn simulate(scenario: &Scenario, seed: u64) -> Run {
    let mut rng = fastrand::Rng::with_seed(seed);
    let steps = Schedule::Doubling { from: 10 }.steps();
    let limits = Limits {
        steps: &steps,
        min_step_duration_ms: MIN_STEP_S * 1000,
        failure_limit: 2,
        inconclusive_limit: 30,
    };
    let settings = JudgeSettings {
        error_margin: scenario.margins.0,
        latency_margin: scenario.margins.1,
        ..settings()
    };
    let judged = steps.iter().filter(|&&w| w < 1000).count();
    let (canary_buckets, control_buckets) = (
        latency_chain(scenario.canary),
        latency_chain(scenario.control),
    );
    let mut state = RolloutState::start(0);
    let (mut canary, mut control) = (CohortCounts::default(), CohortCounts::default());
    let per_interval = scenario.requests_per_second * INTERVAL_S as f64;
    // The clustered users, each at a bucket and in a user group of its own draw.
    let bad_users: Vec<(u16, u8)> = scenario.clustered.map_or(Vec::new(), |c| {
        (0..c.bad_users)
            .map(|_| (rng.u16(..1000), rng.u8(..16)))
            .collect()
    });
    for analysis in 1..=scenario.max_analyses {
        let now = analysis as u64 * INTERVAL_S * 1000;
        let weight = state.weight(&steps);
        let total = per_interval.floor() as u64 + u64::from(rng.f64() < per_interval.fract());
        let (mut bad_canary, mut bad_control, mut bad_total) = (Vec::new(), Vec::new(), 0);
        if let Some(c) = scenario.clustered {
            for &(bucket, group) in &bad_users {
                let n = binomial(&mut rng, total, 1.0 / c.users as f64);
                bad_total += n;
                let side = if bucket < weight {
                    &mut bad_canary
                } else {
                    &mut bad_control
                };
                side.push((group, n, c.error_rate));
            }
        }
        // The rest of the users: a weight's share of them on the canary.
        let good_share = scenario.clustered.map_or(f64::from(weight) / 1000.0, |c| {
            let bad_in_canary = bad_canary.len() as f64;
            let good_users = (c.users - c.bad_users) as f64;
            ((f64::from(weight) / 1000.0 * c.users as f64 - bad_in_canary) / good_users)
                .clamp(0.0, 1.0)
        });
        let good = total - bad_total.min(total);
        let to_canary = binomial(&mut rng, good, good_share);
        draw(
            &mut rng,
            &mut canary,
            to_canary,
            &bad_canary,
            scenario.canary,
            &canary_buckets,
        );
        draw(
            &mut rng,
            &mut control,
            good - to_canary,
            &bad_control,
            scenario.control,
            &control_buckets,
        );
        let a = judge(&canary, &control, &settings, judged);
        let (after, _) = next(&state, &limits, Input::Analysis(a.verdict, &a.reason), now).unwrap();
        if after.step != state.step || after.weight(&steps) != weight {
            (canary, control) = (CohortCounts::default(), CohortCounts::default());
        }
        state = after;
        if matches!(state.phase, Phase::Promoted | Phase::Aborted) {
            return Run {
                phase: state.phase,
                analyses: analysis,
            };
        }
    }
    Run {
        phase: state.phase,
        analyses: scenario.max_analyses,
    }
}

/// Runs `n` seeded rollouts; the counts per final phase and the analyses each took.
fn runs(scenario: &Scenario, n: u64, seed: u64) -> Vec<Run> {
    (0..n)
        .map(|i| simulate(scenario, seed.wrapping_mul(1_000_003) + i))
        .collect()
}

fn count(runs: &[Run], phase: Phase) -> usize {
    runs.iter().filter(|r| r.phase == phase).count()
}

fn median_analyses(runs: &[Run], phase: Phase) -> usize {
    let mut n: Vec<usize> = runs
        .iter()
        .filter(|r| r.phase == phase)
        .map(|r| r.analyses)
        .collect();
    n.sort_unstable();
    n.get(n.len() / 2).copied().unwrap_or(0)
}

const RUNS: u64 = 1000;

#[test]
fn healthy_rollouts_abort_at_most_alpha_of_the_time_and_mostly_promote() {
    let scenario = Scenario {
        requests_per_second: 200.0,
        clustered: None,
        margins: (0.002, 0.10),
        canary: STABLE,
        control: STABLE,
        max_analyses: 240,
    };
    let results = runs(&scenario, RUNS, 1);
    let aborted = count(&results, Phase::Aborted);
    let promoted = count(&results, Phase::Promoted);
    // At most alpha, allowing for the binomial noise of 1,000 runs: the 99.9th
    // percentile of Binomial(1000, 0.01) is the bound, so a judge at exactly alpha
    // fails this test once in a thousand seeds.
    let bound = Binomial::new(0.01, RUNS).unwrap().inverse_cdf(0.999);
    eprintln!(
        "healthy: {aborted} of {RUNS} aborted (bound {bound}), {promoted} promoted, median {} analyses to promote",
        median_analyses(&results, Phase::Promoted)
    );
    assert!(
        aborted as u64 <= bound,
        "{aborted} false aborts in {RUNS} healthy rollouts"
    );
    // A judge that never passes would never abort either: healthy rollouts must go
    // through.
    // The rest pause: at the first step the canary sees 2 requests/s, and with a few
    // unlucky errors the judge cannot tell 30 analyses in a row whether the canary is
    // within 0.2 points of the control's 0.1 %.
    assert!(
        promoted >= 950,
        "only {promoted} of {RUNS} healthy rollouts promoted"
    );
}

/// With margins of 0, a canary like its control sits exactly on the thresholds of
/// three checks (errors, latency rank, latency mean): the hardest case for the false
/// alarm rate, where peeking at every analysis would show. (With the default margins,
/// a healthy canary is far inside every threshold and even a naive judge seldom trips.)
#[test]
fn a_canary_exactly_on_its_thresholds_aborts_at_most_alpha_of_the_time() {
    let scenario = Scenario {
        requests_per_second: 200.0,
        clustered: None,
        margins: (0.0, 0.0),
        canary: STABLE,
        control: STABLE,
        max_analyses: 120,
    };
    let results = runs(&scenario, RUNS, 5);
    let aborted = count(&results, Phase::Aborted);
    let bound = Binomial::new(0.01, RUNS).unwrap().inverse_cdf(0.999);
    eprintln!(
        "on the thresholds (margins 0): {aborted} of {RUNS} aborted (bound {bound}) in up to 120 analyses"
    );
    assert!(
        aborted as u64 <= bound,
        "{aborted} false aborts in {RUNS} rollouts"
    );
}

/// Users, not requests, are what the hash splits. Here 10 of 5,000 users fail 30 % of
/// their requests on either version (a broken client, say), the rest 0.05 %: at 10‰
/// the canary holds about 50 users, and one bad user among them makes its error rate
/// look six times the control's. Judged request by request, that aborted 8 % of these
/// healthy rollouts; judged across user groups, it must stay within alpha.
#[test]
fn healthy_rollouts_with_users_whose_errors_cluster_abort_at_most_alpha_of_the_time() {
    let scenario = Scenario {
        requests_per_second: 200.0,
        clustered: Some(Clustered {
            users: 5000,
            bad_users: 10,
            error_rate: 0.3,
        }),
        margins: (0.002, 0.10),
        canary: Service {
            error_rate: 0.0005,
            ..STABLE
        },
        control: Service {
            error_rate: 0.0005,
            ..STABLE
        },
        max_analyses: 240,
    };
    let results = runs(&scenario, RUNS, 6);
    let aborted = count(&results, Phase::Aborted);
    let bound = Binomial::new(0.01, RUNS).unwrap().inverse_cdf(0.999);
    eprintln!(
        "clustered errors: {aborted} of {RUNS} aborted (bound {bound}), {} promoted, {} paused",
        count(&results, Phase::Promoted),
        count(&results, Phase::Paused)
    );
    assert!(
        aborted as u64 <= bound,
        "{aborted} false aborts in {RUNS} rollouts"
    );
}

#[test]
fn a_canary_with_two_points_more_errors_is_aborted() {
    let scenario = Scenario {
        requests_per_second: 200.0,
        clustered: None,
        margins: (0.002, 0.10),
        canary: Service {
            error_rate: STABLE.error_rate + 0.02,
            ..STABLE
        },
        control: STABLE,
        max_analyses: 240,
    };
    let results = runs(&scenario, RUNS, 2);
    let aborted = count(&results, Phase::Aborted);
    eprintln!(
        "+2 points of errors: {aborted} of {RUNS} aborted, median {} analyses to abort, {} promoted",
        median_analyses(&results, Phase::Aborted),
        count(&results, Phase::Promoted)
    );
    assert!(aborted >= 990, "only {aborted} of {RUNS} aborted");
}

#[test]
fn a_canary_thirty_percent_slower_is_aborted() {
    let scenario = Scenario {
        requests_per_second: 200.0,
        clustered: None,
        margins: (0.002, 0.10),
        canary: Service {
            median_ms: STABLE.median_ms * 1.3,
            ..STABLE
        },
        control: STABLE,
        max_analyses: 240,
    };
    let results = runs(&scenario, RUNS, 3);
    let aborted = count(&results, Phase::Aborted);
    eprintln!(
        "+30 % latency: {aborted} of {RUNS} aborted, median {} analyses to abort, {} promoted",
        median_analyses(&results, Phase::Aborted),
        count(&results, Phase::Promoted)
    );
    assert!(aborted >= 990, "only {aborted} of {RUNS} aborted");
}

#[test]
fn two_requests_a_second_hold_and_never_promote_or_abort() {
    for (name, canary) in [
        ("healthy", STABLE),
        (
            "broken",
            Service {
                error_rate: 0.5,
                ..STABLE
            },
        ),
    ] {
        let scenario = Scenario {
            requests_per_second: 2.0,
            clustered: None,
            margins: (0.002, 0.10),
            canary,
            control: STABLE,
            max_analyses: 240,
        };
        // Every run lasts its 240 analyses; 200 of them show "never" well enough.
        let results = runs(&scenario, 200, 4);
        let (promoted, aborted) = (
            count(&results, Phase::Promoted),
            count(&results, Phase::Aborted),
        );
        eprintln!(
            "2 requests/s, {name} canary: {promoted} promoted, {aborted} aborted, {} paused after 4 hours",
            count(&results, Phase::Paused)
        );
        assert_eq!(
            (promoted, aborted),
            (0, 0),
            "{name}: a verdict on too little data"
        );
        assert_eq!(
            count(&results, Phase::Paused),
            results.len(),
            "{name}: held by pausing"
        );
    }
}

#[test]
fn the_binomial_draws_are_binomial() {
    let mut rng = fastrand::Rng::with_seed(9);
    for &(n, p) in &[
        (40u64, 0.3),
        (100_000, 0.001),
        (2_000_000, 0.4),
        (500, 0.97),
    ] {
        let draws: Vec<f64> = (0..4000).map(|_| binomial(&mut rng, n, p) as f64).collect();
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        let var = draws.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (draws.len() - 1) as f64;
        let (m, v) = (n as f64 * p, n as f64 * p * (1.0 - p));
        assert!(
            (mean - m).abs() < 4.0 * (v / 4000.0).sqrt() + 1e-9,
            "mean {mean} vs {m}"
        );
        assert!((var / v - 1.0).abs() < 0.1, "variance {var} vs {v}");
    }
}
