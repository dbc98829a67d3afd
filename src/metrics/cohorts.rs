//! The rollout's cohorts for Prometheus, so a fleet can be judged from the sum over
//! its instances (`[rollout.judge] source = "prometheus"`):
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `graygate_rollout_cohort_requests_total` | counter | `rule`, `version`, `cohort`, `group` |
//! | `graygate_rollout_cohort_errors_total` | counter | `rule`, `version`, `cohort`, `group` |
//! | `graygate_rollout_cohort_fallbacks_total` | counter | `rule`, `version`, `cohort`, `group` |
//! | `graygate_rollout_cohort_latency_seconds_total` | counter | `rule`, `version`, `cohort`, `group` |
//! | `graygate_rollout_cohort_duration_seconds` | histogram | `rule`, `version`, `cohort`, `le` |
//!
//! Each is the sum over every step of the rollout, so it only grows; a judge takes a
//! step's share with `increase()` over the step's window. `group` is the user group
//! (0 to 15) the judge measures users' spread by. The histogram has the judge's own
//! buckets (`rollout::cohort`: 401 bounds, none wider than 5 %), so the fleet's rank
//! test sees what a local one would. That is 2 cohorts × (402 buckets + `_sum` +
//! `_count`) + 4 counters × 2 cohorts × 16 groups = 936 series per instance, while a
//! rollout is configured. The values are read from the cohorts' atomics at scrape
//! time: nothing is added to the request path.

use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;

use crate::rollout::cohort::{upper_bound, CohortCounts, GroupCounts, StepCohorts, BUCKETS};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CohortLabels {
    rule: String,
    version: String,
    cohort: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    rule: String,
    version: String,
    cohort: String,
    group: String,
}

/// What the collector exports: the rollout's identity and every step's cohorts.
#[derive(Debug, Default)]
pub struct CohortExport {
    current: Mutex<Option<Exported>>,
}

#[derive(Debug)]
struct Exported {
    rule: String,
    version: String,
    steps: Vec<Arc<StepCohorts>>,
}

impl CohortExport {
    /// Exports these steps' cohorts (every step so far, the current one last).
    pub fn set(&self, rule: &str, version: &str, steps: Vec<Arc<StepCohorts>>) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(Exported {
            rule: rule.to_string(),
            version: version.to_string(),
            steps,
        });
    }

    /// The rollout ended: its series go.
    pub fn clear(&self) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The exported counts, canary and control, summed over the steps.
    fn sums(&self) -> Option<(CohortLabels, CohortCounts, CohortCounts)> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let exported = current.as_ref()?;
        let (mut canary, mut control) = (CohortCounts::default(), CohortCounts::default());
        for step in &exported.steps {
            let (a, b) = step.counts();
            canary.add(&a);
            control.add(&b);
        }
        let labels = CohortLabels {
            rule: exported.rule.clone(),
            version: exported.version.clone(),
            cohort: String::new(),
        };
        Some((labels, canary, control))
    }
}

/// A counter exported per cohort: its name, its help and how it is read.
type Counted = (&'static str, &'static str, fn(&GroupCounts) -> f64);

/// The exported histogram's bucket bounds, in seconds: the judge's upper bounds.
pub fn bucket_bounds() -> Vec<f64> {
    (0..BUCKETS).map(|i| upper_bound(i) / 1e6).collect()
}

impl Collector for CohortExport {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some((labels, canary, control)) = self.sums() else {
            return Ok(());
        };
        let cohorts = [("canary", &canary), ("control", &control)];
        let labelled = |cohort: &str| CohortLabels {
            cohort: cohort.to_string(),
            ..labels.clone()
        };
        let counters: [Counted; 4] = [
            (
                "rollout_cohort_requests",
                "Requests in the rollout's canary and control cohorts, by user group",
                |g| g.requests as f64,
            ),
            (
                "rollout_cohort_errors",
                "Errors (5xx, gateway errors, fallbacks, abandoned) in the rollout's cohorts, by user group",
                |g| g.errors as f64,
            ),
            (
                "rollout_cohort_fallbacks",
                "Canary requests served by the stable pool, by user group",
                |g| g.untimed as f64,
            ),
            (
                "rollout_cohort_latency_seconds",
                "The summed latency of the rollout's cohorts, by user group",
                |g| g.sum_micros as f64 / 1e6,
            ),
        ];
        for (name, help, value) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (cohort, counts) in cohorts {
                for (group, g) in counts.groups.iter().enumerate() {
                    let labels = GroupLabels {
                        rule: labels.rule.clone(),
                        version: labels.version.clone(),
                        cohort: cohort.to_string(),
                        group: group.to_string(),
                    };
                    ConstCounter::new(value(g)).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let bounds = bucket_bounds();
        let mut family = encoder.encode_descriptor(
            "rollout_cohort_duration_seconds",
            "Latency of the rollout's cohorts, in the judge's buckets (fallbacks have none)",
            None,
            MetricType::Histogram,
        )?;
        for (cohort, counts) in cohorts {
            let labels = labelled(cohort);
            let buckets: Vec<(f64, u64)> = bounds
                .iter()
                .copied()
                .zip(counts.latency.iter().copied().chain(std::iter::repeat(0)))
                .collect();
            family
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(
                    counts.sum_micros as f64 / 1e6,
                    counts.timed(),
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }
}
