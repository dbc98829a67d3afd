#!/usr/bin/env python3
"""Reference values for the rollout judge's statistics, from scipy and statsmodels.

    python3 scripts/rollout_stats_fixture.py OUT.json      # write the fixture
    python3 scripts/rollout_stats_fixture.py --check FILE  # recompute, compare within 1e-9

`src/rollout/stats.rs` reads tests/data/rollout_stats.json in `cargo test` and must
agree with every value; CI recomputes the file here, with whatever scipy and
statsmodels pip installs, and checks it still holds (as the murmur3 fixture is checked
against Python's mmh3).

Each case is drawn from a seeded generator, so the file is reproducible:
- Mann-Whitney U on two histograms with heavy ties (scipy.stats.mannwhitneyu,
  asymptotic, tie-corrected, no continuity correction);
- Welch's t of sample a against sample b scaled by a ratio (scipy.stats.ttest_ind,
  equal_var=False, on a and ratio * b);
- the Agresti-Caffo interval for a difference of proportions
  (statsmodels confint_proportions_2indep) and the pooled two-proportion z test
  (statsmodels proportions_ztest);
- the mSPRT's normal-mixture likelihood ratio, integrated numerically
  (scipy.integrate.quad), and the radius where it reaches 1/alpha (scipy.optimize.brentq);
- the cluster-robust variance of a ratio (errors / requests, latency sum / requests)
  across user groups: statsmodels' CR1 variance of an intercept-only OLS on the
  requests, clustered by group.
"""

import json
import math
import sys

import numpy as np
from scipy import integrate, optimize, stats
import statsmodels.api as sm
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

SEED = 20261202


def histogram(rng, buckets, n, shift):
    """Counts over `buckets` distinct values: a discretized log-normal, heavily tied."""
    values = np.round(np.exp(rng.normal(math.log(20.0) + shift, 0.6, n)), 0)
    values = np.clip(values, 1, buckets)
    unique, counts = np.unique(values, return_counts=True)
    return [[float(v), int(c)] for v, c in zip(unique, counts)]


def expand(hist, scale=1.0):
    return np.repeat([v * scale for v, _ in hist], [c for _, c in hist])


def mann_whitney_cases(rng):
    cases = []
    for n_a, n_b, shift, buckets in [
        (30, 40, 0.0, 60),
        (200, 5000, 0.1, 80),
        (1000, 1000, 0.0, 40),
        (5000, 300, -0.2, 200),
        (57, 8000, 0.3, 100),
    ]:
        a = histogram(rng, buckets, n_a, shift)
        b = histogram(rng, buckets, n_b, 0.0)
        for scale in (1.0, 1.1):
            result = stats.mannwhitneyu(
                expand(a), expand(b, scale), use_continuity=False,
                alternative="two-sided", method="asymptotic",
            )
            cases.append({"a": a, "b": b, "b_scale": scale,
                          "u": float(result.statistic), "p": float(result.pvalue)})
    return cases


def welch_cases(rng):
    cases = []
    for n_a, n_b, shift, ratio in [
        (30, 40, 0.0, 1.0),
        (200, 5000, 0.2, 1.0),
        (1000, 1000, 0.1, 1.1),
        (5000, 300, -0.1, 1.1),
        (12, 9000, 0.5, 1.3),
    ]:
        a = histogram(rng, 500, n_a, shift)
        b = histogram(rng, 500, n_b, 0.0)
        result = stats.ttest_ind(expand(a), expand(b, ratio), equal_var=False)
        cases.append({"a": a, "b": b, "ratio": ratio, "t": float(result.statistic),
                      "p": float(result.pvalue), "df": float(result.df)})
    return cases


def proportion_cases(rng):
    cases = []
    for x_a, n_a, x_b, n_b in [(0, 500, 0, 20000), (3, 800, 40, 79200), (25, 1000, 10, 1000),
                               (1, 40, 0, 60), (140, 6000, 600, 120000), (500, 500, 2, 9000)]:
        low, high = confint_proportions_2indep(x_a, n_a, x_b, n_b, method="agresti-caffo",
                                               compare="diff", alpha=0.05)
        case = {"x_a": x_a, "n_a": n_a, "x_b": x_b, "n_b": n_b,
                "ac_low_95": float(low), "ac_high_95": float(high)}
        if 0 < x_a + x_b < n_a + n_b:
            z, p = proportions_ztest([x_a, x_b], [n_a, n_b])
            case["z"], case["p"] = float(z), float(p)
        cases.append(case)
    return cases


def mixture_cases():
    cases = []
    for estimate, variance, tau2, alpha in [(0.003, 1e-6, 4e-6, 0.01), (0.05, 4e-4, 1e-3, 0.001),
                                            (-1.2, 0.3, 0.01, 0.05), (0.0002, 1e-8, 1e-7, 2e-4)]:
        prior = math.sqrt(tau2)
        # Where the integrand peaks, and how wide it is: the posterior of theta.
        spread = math.sqrt(variance * tau2 / (variance + tau2))

        def log_ratio(est):
            # log of the normal likelihood of theta against theta = 0, averaged over
            # theta ~ N(0, tau2); the peak is factored out so nothing overflows.
            g = lambda theta: (theta * est - theta * theta / 2) / variance + \
                stats.norm.logpdf(theta, 0, prior)
            peak = est * tau2 / (variance + tau2)
            top = g(peak)
            value, _ = integrate.quad(lambda t: math.exp(g(t) - top), peak - 40 * spread,
                                      peak + 40 * spread, points=[peak], limit=500,
                                      epsabs=0, epsrel=1e-13)
            return top + math.log(value)

        # The bracket only sets the scale of the search: a few hundred standard errors.
        scale = math.sqrt(variance * (variance + tau2) / tau2)
        radius = optimize.brentq(lambda r: log_ratio(r) - math.log(1 / alpha),
                                 0.0, 100 * scale, xtol=1e-16, rtol=1e-14, maxiter=500)
        ratio = lambda est: math.exp(log_ratio(est))
        cases.append({"estimate": estimate, "variance": variance, "tau2": tau2, "alpha": alpha,
                      "likelihood_ratio": ratio(estimate), "radius": radius})
    return cases


def cluster_cases(rng):
    cases = []
    for groups, n_low, n_high, kind in [(16, 20, 200, "errors"), (16, 1, 5, "errors"),
                                        (5, 50, 60, "latency"), (2, 10, 30, "errors"),
                                        (16, 100, 400, "latency")]:
        values, labels, clusters = [], [], []
        for g in range(groups):
            n = int(rng.integers(n_low, n_high + 1))
            if kind == "errors":
                y = (rng.random(n) < rng.choice([0.001, 0.01, 0.3])).astype(float)
            else:
                y = np.round(np.exp(rng.normal(math.log(2000.0), 0.7, n)))
            values.extend(y)
            labels.extend([g] * n)
            clusters.append([float(y.sum()), float(n)])
        y = np.array(values)
        fit = sm.OLS(y, np.ones_like(y)).fit(cov_type="cluster", cov_kwds={"groups": np.array(labels)})
        cases.append({"clusters": clusters, "variance": float(fit.bse[0] ** 2)})
    return cases


def fixture():
    rng = np.random.default_rng(SEED)
    return {
        "generated_by": "scripts/rollout_stats_fixture.py",
        "mann_whitney": mann_whitney_cases(rng),
        "welch": welch_cases(rng),
        "proportions": proportion_cases(rng),
        "mixture": mixture_cases(),
        "cluster": cluster_cases(rng),
    }


def close(a, b, path):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), f"{path}: lengths {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15), f"{path}: {a} != {b}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def main(argv):
    if len(argv) == 3 and argv[1] == "--check":
        with open(argv[2]) as f:
            committed = json.load(f)
        close(fixture(), committed, "fixture")
        import scipy
        import statsmodels
        print(f"{argv[2]}: matches scipy {scipy.__version__}, statsmodels {statsmodels.__version__}")
        return 0
    if len(argv) == 2:
        with open(argv[1], "w") as f:
            json.dump(fixture(), f, indent=1)
            f.write("\n")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
