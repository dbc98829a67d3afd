//! The statistics the judge uses, as plain functions of counts. Each is checked
//! against an independent implementation (scipy and statsmodels, through
//! `scripts/rollout_stats_fixture.py`) in `tests/data/rollout_stats.json`.
//!
//! The fixed-sample tests are the textbook ones: Mann-Whitney U with the tie-corrected
//! normal approximation, Welch's t, and the Agresti-Caffo interval for a difference of
//! two proportions. Because the judge looks again at every interval, it does not use
//! their fixed-sample quantiles for decisions: it widens every interval to a
//! *confidence sequence*, valid at every look at once, with the normal-mixture
//! boundary of the mixture sequential probability ratio test (mSPRT; Robbins 1970;
//! Johari, Pekelis & Walsh, "Always Valid Inference", Operations Research 2022;
//! Howard et al., "Time-uniform, nonparametric, nonasymptotic confidence sequences",
//! Annals of Statistics 2021).

use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

/// Mann-Whitney U of sample `a` against sample `b`, each given as
/// `(value, count)` sorted by value. Values equal across or within the samples tie.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    /// U for `a`: the number of pairs where `a` is larger, ties counting half.
    pub u: f64,
    pub n_a: f64,
    pub n_b: f64,
    /// Variance of U under the null, corrected for ties.
    pub variance: f64,
    /// `(U - n_a n_b / 2) / sqrt(variance)`, without continuity correction.
    pub z: f64,
    /// Two-sided p-value of `z`.
    pub p: f64,
}

impl MannWhitney {
    /// `P(A > B) + P(A = B) / 2`, estimated: 0.5 when neither tends to be larger.
    pub fn probability_of_superiority(&self) -> f64 {
        self.u / (self.n_a * self.n_b)
    }

    /// The standard error of [`Self::probability_of_superiority`] under the null.
    pub fn standard_error(&self) -> f64 {
        self.variance.sqrt() / (self.n_a * self.n_b)
    }
}

/// `None` when either sample is empty or every value ties (no ranks to compare).
pub fn mann_whitney(a: &[(f64, u64)], b: &[(f64, u64)]) -> Option<MannWhitney> {
    let n_a: f64 = a.iter().map(|&(_, c)| c as f64).sum();
    let n_b: f64 = b.iter().map(|&(_, c)| c as f64).sum();
    if n_a == 0.0 || n_b == 0.0 {
        return None;
    }
    let n = n_a + n_b;
    // Walk both samples in value order; each distinct value is one tie group whose
    // members share the average of the ranks they span.
    let (mut i, mut j) = (0, 0);
    let (mut ranked, mut rank_sum_a, mut ties) = (0.0f64, 0.0f64, 0.0f64);
    while i < a.len() || j < b.len() {
        let value = match (a.get(i), b.get(j)) {
            (Some(&(x, _)), Some(&(y, _))) => x.min(y),
            (Some(&(x, _)), None) => x,
            (None, Some(&(y, _))) => y,
            (None, None) => unreachable!("the loop condition"),
        };
        let mut in_a = 0.0;
        while let Some(&(_, c)) = a.get(i).filter(|&&(x, _)| x == value) {
            in_a += c as f64;
            i += 1;
        }
        let mut in_b = 0.0;
        while let Some(&(_, c)) = b.get(j).filter(|&&(y, _)| y == value) {
            in_b += c as f64;
            j += 1;
        }
        let t = in_a + in_b;
        let average_rank = ranked + (t + 1.0) / 2.0;
        rank_sum_a += in_a * average_rank;
        ties += t * t * t - t;
        ranked += t;
    }
    let u = rank_sum_a - n_a * (n_a + 1.0) / 2.0;
    let variance = n_a * n_b / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    if variance <= 0.0 {
        return None;
    }
    let z = (u - n_a * n_b / 2.0) / variance.sqrt();
    Some(MannWhitney {
        u,
        n_a,
        n_b,
        variance,
        z,
        p: two_sided_normal(z),
    })
}

/// Welch's t-test of `mean_a - ratio * mean_b`: a sample `b` scaled by `ratio` (1 for
/// the plain test, 1.1 to ask whether `a` exceeds `b` by more than 10 %).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Welch {
    /// `mean_a - ratio * mean_b`.
    pub difference: f64,
    /// Its standard error.
    pub standard_error: f64,
    pub t: f64,
    /// Welch-Satterthwaite degrees of freedom.
    pub df: f64,
    /// Two-sided p-value of `t` on `df` degrees of freedom.
    pub p: f64,
}

/// Means and sample variances of two samples of sizes `n_a` and `n_b`; `None` when
/// either has fewer than two values or both have no spread.
pub fn welch(
    (mean_a, var_a, n_a): (f64, f64, f64),
    (mean_b, var_b, n_b): (f64, f64, f64),
    ratio: f64,
) -> Option<Welch> {
    if n_a < 2.0 || n_b < 2.0 {
        return None;
    }
    let (va, vb) = (var_a / n_a, ratio * ratio * var_b / n_b);
    let variance = va + vb;
    if variance <= 0.0 || !variance.is_finite() {
        return None;
    }
    let df = variance * variance / (va * va / (n_a - 1.0) + vb * vb / (n_b - 1.0));
    let difference = mean_a - ratio * mean_b;
    let standard_error = variance.sqrt();
    let t = difference / standard_error;
    let p = StudentsT::new(0.0, 1.0, df)
        .map(|dist| 2.0 * dist.sf(t.abs()))
        .unwrap_or(f64::NAN);
    Some(Welch {
        difference,
        standard_error,
        t,
        df,
        p,
    })
}

/// A difference of two proportions, `x_a / n_a - x_b / n_b`, estimated the
/// Agresti-Caffo way: one success and one failure added to each sample, which keeps
/// the interval honest when either count is zero.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProportionDifference {
    pub estimate: f64,
    pub standard_error: f64,
}

pub fn agresti_caffo(x_a: u64, n_a: u64, x_b: u64, n_b: u64) -> ProportionDifference {
    let (pa, na) = adjusted(x_a, n_a);
    let (pb, nb) = adjusted(x_b, n_b);
    ProportionDifference {
        estimate: pa - pb,
        standard_error: (pa * (1.0 - pa) / na + pb * (1.0 - pb) / nb).sqrt(),
    }
}

/// One proportion `x / n`, with the same adjustment (Agresti-Coull's "add two
/// successes and two failures" at 95 %; here one of each, as in Agresti-Caffo, so that
/// the two estimates agree).
pub fn adjusted_proportion(x: f64, n: u64) -> ProportionDifference {
    let n = n as f64 + 2.0;
    let p = (x + 1.0) / n;
    ProportionDifference {
        estimate: p,
        standard_error: (p * (1.0 - p) / n).sqrt(),
    }
}

fn adjusted(x: u64, n: u64) -> (f64, f64) {
    let n = n as f64 + 2.0;
    ((x as f64 + 1.0) / n, n)
}

/// The pooled two-proportion z statistic, `(p_a - p_b) / se` with the pooled rate in
/// the standard error; `None` when the pooled rate is 0 or 1.
pub fn two_proportion_z(x_a: u64, n_a: u64, x_b: u64, n_b: u64) -> Option<f64> {
    if n_a == 0 || n_b == 0 {
        return None;
    }
    let (na, nb) = (n_a as f64, n_b as f64);
    let pooled = (x_a + x_b) as f64 / (na + nb);
    let se = (pooled * (1.0 - pooled) * (1.0 / na + 1.0 / nb)).sqrt();
    (se > 0.0).then(|| (x_a as f64 / na - x_b as f64 / nb) / se)
}

/// The cluster-robust variance of `Σ y / Σ n` over clusters `(y, n)` (user groups):
/// `G/(G-1) · Σ (y_g - r n_g)² / (Σ n)²`, the linearized ("delta method") variance of a
/// ratio estimator, with the small-sample factor of CR1.
pub fn cluster_ratio_variance(clusters: &[(f64, f64)]) -> Option<f64> {
    let g = clusters.len() as f64;
    if g < 2.0 {
        return None;
    }
    let (y, n) = clusters
        .iter()
        .fold((0.0, 0.0), |(y, n), &(yg, ng)| (y + yg, n + ng));
    let r = y / n;
    let spread: f64 = clusters.iter().map(|&(yg, ng)| (yg - r * ng).powi(2)).sum();
    Some(g / (g - 1.0) * spread / (n * n))
}

/// Half the width of the two-sided confidence sequence for an estimate with
/// variance `variance`, at level `alpha`, with a normal mixture of variance `tau2`
/// over the effect (the mSPRT). With probability at least `1 - alpha`, the true value
/// lies within this distance of the estimate *at every look*, however many there are.
///
/// It is the set of effects the mSPRT would not reject:
/// `sqrt(V (V + τ²) / τ² · ln((V + τ²) / (V α²)))`, where `V` is the variance.
pub fn mixture_radius(variance: f64, tau2: f64, alpha: f64) -> f64 {
    if variance <= 0.0 {
        return 0.0;
    }
    let v = variance;
    (v * (v + tau2) / tau2 * ((v + tau2) / (v * alpha * alpha)).ln()).sqrt()
}

/// The mixture likelihood ratio of the mSPRT for an estimate `estimate` of an effect
/// whose null value is 0, with variance `variance` and mixture variance `tau2`. The
/// test rejects once it reaches `1 / alpha`.
pub fn mixture_likelihood_ratio(estimate: f64, variance: f64, tau2: f64) -> f64 {
    let v = variance;
    (v / (v + tau2)).sqrt() * (tau2 * estimate * estimate / (2.0 * v * (v + tau2))).exp()
}

/// The two-sided p-value of a standard normal statistic.
pub fn two_sided_normal(z: f64) -> f64 {
    let normal = Normal::standard();
    2.0 * normal.sf(z.abs())
}

/// The fixed-sample two-sided normal quantile for level `alpha` (1.96 at 0.05).
pub fn normal_quantile(alpha: f64) -> f64 {
    Normal::standard().inverse_cdf(1.0 - alpha / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// scipy's and statsmodels' answers, from `scripts/rollout_stats_fixture.py`.
    const FIXTURE: &str = include_str!("../../tests/data/rollout_stats.json");

    fn fixture(section: &str) -> Vec<Value> {
        let all: Value = serde_json::from_str(FIXTURE).unwrap();
        let cases = all[section].as_array().unwrap().clone();
        assert!(cases.len() >= 4, "{section}: too few cases");
        cases
    }

    fn histogram(value: &Value, scale: f64) -> Vec<(f64, u64)> {
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|pair| (pair[0].as_f64().unwrap() * scale, pair[1].as_u64().unwrap()))
            .collect()
    }

    fn moments(h: &[(f64, u64)]) -> (f64, f64, f64) {
        let n = h.iter().map(|&(_, c)| c as f64).sum::<f64>();
        let mean = h.iter().map(|&(v, c)| v * c as f64).sum::<f64>() / n;
        let var = h
            .iter()
            .map(|&(v, c)| (v - mean).powi(2) * c as f64)
            .sum::<f64>()
            / (n - 1.0);
        (mean, var, n)
    }

    #[track_caller]
    fn assert_close(ours: f64, reference: &Value, what: &str) {
        let reference = reference
            .as_f64()
            .unwrap_or_else(|| panic!("{what}: no reference"));
        let tolerance = 1e-9 * reference.abs().max(1e-12);
        assert!(
            (ours - reference).abs() <= tolerance,
            "{what}: ours {ours:e}, reference {reference:e}"
        );
    }

    #[test]
    fn mann_whitney_agrees_with_scipy() {
        for (i, case) in fixture("mann_whitney").iter().enumerate() {
            let a = histogram(&case["a"], 1.0);
            let b = histogram(&case["b"], case["b_scale"].as_f64().unwrap());
            let mw = mann_whitney(&a, &b).unwrap();
            assert_close(mw.u, &case["u"], &format!("case {i}: U"));
            assert_close(mw.p, &case["p"], &format!("case {i}: p"));
        }
    }

    #[test]
    fn welch_agrees_with_scipy() {
        for (i, case) in fixture("welch").iter().enumerate() {
            let (a, b) = (histogram(&case["a"], 1.0), histogram(&case["b"], 1.0));
            let ratio = case["ratio"].as_f64().unwrap();
            let w = welch(moments(&a), moments(&b), ratio).unwrap();
            assert_close(w.t, &case["t"], &format!("case {i}: t"));
            assert_close(w.df, &case["df"], &format!("case {i}: df"));
            assert_close(w.p, &case["p"], &format!("case {i}: p"));
        }
    }

    #[test]
    fn proportions_agree_with_statsmodels() {
        let z95 = normal_quantile(0.05);
        for (i, case) in fixture("proportions").iter().enumerate() {
            let n = |k: &str| case[k].as_u64().unwrap();
            let d = agresti_caffo(n("x_a"), n("n_a"), n("x_b"), n("n_b"));
            assert_close(
                d.estimate - z95 * d.standard_error,
                &case["ac_low_95"],
                &format!("case {i}: low"),
            );
            assert_close(
                d.estimate + z95 * d.standard_error,
                &case["ac_high_95"],
                &format!("case {i}: high"),
            );
            let z = two_proportion_z(n("x_a"), n("n_a"), n("x_b"), n("n_b"));
            match case.get("z") {
                Some(reference) => {
                    let z = z.unwrap();
                    assert_close(z, reference, &format!("case {i}: z"));
                    assert_close(two_sided_normal(z), &case["p"], &format!("case {i}: p"));
                }
                None => assert!(z.is_none(), "case {i}: no pooled rate, no z"),
            }
        }
    }

    #[test]
    fn the_cluster_variance_agrees_with_statsmodels() {
        for (i, case) in fixture("cluster").iter().enumerate() {
            let clusters: Vec<(f64, f64)> = case["clusters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| (c[0].as_f64().unwrap(), c[1].as_f64().unwrap()))
                .collect();
            let v = cluster_ratio_variance(&clusters).unwrap();
            assert_close(v, &case["variance"], &format!("case {i}: variance"));
        }
        assert_eq!(
            cluster_ratio_variance(&[(1.0, 10.0)]),
            None,
            "one cluster: no spread"
        );
    }

    #[test]
    fn the_mixture_boundary_agrees_with_numerical_integration() {
        for (i, case) in fixture("mixture").iter().enumerate() {
            let f = |k: &str| case[k].as_f64().unwrap();
            let (v, tau2) = (f("variance"), f("tau2"));
            let lr = mixture_likelihood_ratio(f("estimate"), v, tau2);
            assert_close(
                lr,
                &case["likelihood_ratio"],
                &format!("case {i}: likelihood ratio"),
            );
            assert_close(
                mixture_radius(v, tau2, f("alpha")),
                &case["radius"],
                &format!("case {i}: radius"),
            );
        }
    }

    #[test]
    fn mann_whitney_of_separated_samples_counts_every_pair() {
        let a = [(10.0, 3)];
        let b = [(1.0, 2), (2.0, 2)];
        let mw = mann_whitney(&a, &b).unwrap();
        assert_eq!(mw.u, 12.0);
        assert_eq!(mw.probability_of_superiority(), 1.0);
        assert!(mw.z > 0.0);
    }

    #[test]
    fn mann_whitney_of_one_sample_against_itself_is_one_half() {
        let a = [(1.0, 5), (2.0, 7), (9.0, 1)];
        let mw = mann_whitney(&a, &a).unwrap();
        assert!((mw.probability_of_superiority() - 0.5).abs() < 1e-12);
        assert!(mw.z.abs() < 1e-12);
        assert!((mw.p - 1.0).abs() < 1e-12);
    }

    #[test]
    fn all_tied_or_empty_has_no_test() {
        assert!(mann_whitney(&[(1.0, 4)], &[(1.0, 9)]).is_none());
        assert!(mann_whitney(&[], &[(1.0, 9)]).is_none());
    }

    #[test]
    fn the_mixture_radius_is_where_the_likelihood_ratio_reaches_one_over_alpha() {
        for &(v, tau2, alpha) in &[(1e-4, 1e-4, 0.01), (4e-6, 1e-6, 0.001), (0.3, 0.01, 0.05)] {
            let r = mixture_radius(v, tau2, alpha);
            let lr = mixture_likelihood_ratio(r, v, tau2);
            assert!((lr * alpha - 1.0).abs() < 1e-9, "{lr} at {r}");
            // Wider than the fixed-sample interval: the price of looking at every step.
            assert!(r > normal_quantile(alpha) * v.sqrt());
        }
    }

    #[test]
    fn agresti_caffo_adds_one_success_and_one_failure() {
        let d = agresti_caffo(0, 98, 0, 98);
        assert_eq!(d.estimate, 0.0);
        assert!((d.standard_error - (2.0 * 0.01 * 0.99 / 100.0f64).sqrt()).abs() < 1e-15);
    }
}
