//! The fleet's cohorts, read from Prometheus: the same counts the local cohorts give,
//! summed over every instance Prometheus scrapes, for the step's window.
//!
//! Five instant queries at `time = now - eval_delay` (so the last scrape has landed),
//! each the increase since the step began (`W`), summed over every instance:
//!
//! ```promql
//! sum by (cohort, group) (increase(graygate_rollout_cohort_requests_total{rule="R", version="V"}[W]))
//! sum by (cohort, group) (increase(graygate_rollout_cohort_errors_total{rule="R", version="V"}[W]))
//! sum by (cohort, group) (increase(graygate_rollout_cohort_fallbacks_total{rule="R", version="V"}[W]))
//! sum by (cohort, group) (increase(graygate_rollout_cohort_latency_seconds_total{rule="R", version="V"}[W]))
//! sum by (cohort, le) (increase(graygate_rollout_cohort_duration_seconds_bucket{rule="R", version="V"}[W]))
//! ```
//!
//! The bucket answers are cumulative per `le`; they are de-cumulated onto the judge's
//! buckets. `increase()` extrapolates to the window's edges, so counts are rounded. An
//! answer without series is an empty count (the judge says inconclusive); a failed
//! query, or a value that cannot be a count, is an error, never read as zero.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;

use super::cohort::{CohortCounts, GroupCounts, BUCKETS};
use super::Remote;
use crate::control::client;
use crate::metrics::bucket_bounds;
use crate::routing::USER_GROUPS;

/// The five queries for a rollout of `rule` at `version` over the last `window`:
/// requests, errors, fallbacks and summed latency per cohort and group, then buckets.
pub fn queries(rule: &str, version: &str, window: Duration) -> [String; 5] {
    let selector = format!(
        "{{rule=\"{}\", version=\"{}\"}}",
        escape(rule),
        escape(version)
    );
    let range = format!("[{}ms]", window.as_millis().max(1));
    let by_group = |metric: &str| {
        format!(
            "sum by (cohort, group) (increase(graygate_rollout_cohort_{metric}{selector}{range}))"
        )
    };
    [
        by_group("requests_total"),
        by_group("errors_total"),
        by_group("fallbacks_total"),
        by_group("latency_seconds_total"),
        format!(
            "sum by (cohort, le) (increase(graygate_rollout_cohort_duration_seconds_bucket{selector}{range}))"
        ),
    ]
}

/// A PromQL string literal's content. PromQL strings take Go's escapes: a raw newline
/// ends the query, so every control character is escaped (config validation refuses
/// them in a rollout's rule and version; this is the second line of defence).
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c if c.is_control() => escaped.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => escaped.push(c),
        }
    }
    escaped
}

/// The fleet's canary and control counts since `since_ms`, evaluated `eval_delay`
/// behind `now_ms`; `Ok(None)` when Prometheus has no series for them.
pub async fn fetch(
    remote: &Remote,
    rule: &str,
    version: &str,
    since_ms: u64,
    now_ms: u64,
) -> Result<Option<(CohortCounts, CohortCounts)>, String> {
    let eval_ms = now_ms.saturating_sub(u64::try_from(remote.every.as_millis()).unwrap_or(0));
    if eval_ms <= since_ms {
        return Ok(None);
    }
    let window = Duration::from_millis(eval_ms - since_ms);
    let time = (UNIX_EPOCH + Duration::from_millis(eval_ms))
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let mut answers = Vec::with_capacity(5);
    for query in queries(rule, version, window) {
        let parameters: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("query", &query)
            .append_pair("time", &format!("{time:.3}"))
            .finish();
        let path = format!("{}/api/v1/query?{parameters}", remote.prefix);
        let (status, body) = client::request(&remote.authority, "GET", &path, remote.timeout)
            .await
            .map_err(|e| format!("{}: {e}", remote.url))?;
        answers.push(vector(status, &body).map_err(|e| format!("{}: {e}", remote.url))?);
    }
    counts(&answers)
}

/// The result vector of an instant query's answer.
fn vector(status: u16, body: &str) -> Result<Vec<Value>, String> {
    let value: Value = serde_json::from_str(body)
        .map_err(|_| format!("HTTP {status}, not a Prometheus answer"))?;
    if value["status"] != "success" {
        let error = value["error"].as_str().unwrap_or("no error given");
        return Err(format!("HTTP {status}: {error}"));
    }
    match (
        &value["data"]["resultType"],
        value["data"]["result"].as_array(),
    ) {
        (Value::String(kind), Some(result)) if kind == "vector" => Ok(result.clone()),
        _ => Err("the answer is not an instant vector".into()),
    }
}

/// Above this a count is not one: no fleet serves 2^53 requests in a step, and past it
/// an f64 no longer holds every whole number.
const MAX_SAMPLE: f64 = 9_007_199_254_740_992.0; // 2^53

/// One sample's value. `increase()` may extrapolate a little below zero: that is 0. A
/// value that is not finite, or beyond ±2^53, is an error, never a count: summed, it
/// would overflow.
fn sample(series: &Value) -> Result<f64, String> {
    let text = series["value"][1]
        .as_str()
        .ok_or("a sample without a value")?;
    let value: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    if !value.is_finite() || value.abs() > MAX_SAMPLE {
        return Err(format!("`{text}` is not a plausible count (beyond ±2^53)"));
    }
    Ok(value.max(0.0))
}

/// A sample as a count (extrapolated increases have fractions).
fn count(series: &Value) -> Result<u64, String> {
    Ok(sample(series)?.round() as u64)
}

/// Which cohort a series is of.
fn cohort(series: &Value) -> Option<usize> {
    match series["metric"]["cohort"].as_str()? {
        "canary" => Some(0),
        "control" => Some(1),
        _ => None,
    }
}

/// Which user group a series is of.
fn group(series: &Value) -> Result<usize, String> {
    let text = series["metric"]["group"]
        .as_str()
        .ok_or("a series without `group`")?;
    match text.parse::<usize>() {
        Ok(g) if g < USER_GROUPS => Ok(g),
        _ => Err(format!("`group` {text} is not one of 0..{USER_GROUPS}")),
    }
}

/// The canary's and the control's counts from the five answers (requests, errors,
/// fallbacks and latency per group, then cumulative buckets); `None` when there is no
/// series of requests at all.
pub fn counts(answers: &[Vec<Value>]) -> Result<Option<(CohortCounts, CohortCounts)>, String> {
    let [requests, errors, fallbacks, latency, buckets] = answers else {
        return Err("five answers expected".into());
    };
    if requests.is_empty() {
        return Ok(None);
    }
    let mut cohorts = [CohortCounts::default(), CohortCounts::default()];
    for counts in &mut cohorts {
        counts.groups = vec![GroupCounts::default(); USER_GROUPS];
    }
    for (answer, field) in [(requests, 0), (errors, 1), (fallbacks, 2), (latency, 3)] {
        for series in answer {
            let Some(c) = cohort(series) else { continue };
            let g = &mut cohorts[c].groups[group(series)?];
            match field {
                0 => g.requests = count(series)?,
                1 => g.errors = count(series)?,
                2 => g.untimed = count(series)?,
                _ => g.sum_micros = (sample(series)? * 1e6).round() as u64,
            }
        }
    }
    for counts in &mut cohorts {
        for g in &mut counts.groups {
            // Rounded extrapolations: never more errors or fallbacks than requests.
            g.errors = g.errors.min(g.requests);
            g.untimed = g.untimed.min(g.requests);
        }
        // Saturating: bounded samples cannot overflow a sum of counts, but summed
        // latencies in µs can (and a panic here would cost the analysis).
        let total = |field: fn(&GroupCounts) -> u64| {
            counts
                .groups
                .iter()
                .map(field)
                .fold(0u64, u64::saturating_add)
        };
        counts.requests = total(|g| g.requests);
        counts.errors = total(|g| g.errors);
        counts.sum_micros = total(|g| g.sum_micros);
    }
    let bounds = bucket_bounds();
    let mut cumulative: [Vec<(usize, u64)>; 2] = [Vec::new(), Vec::new()];
    for series in buckets {
        let Some(c) = cohort(series) else { continue };
        let le = series["metric"]["le"]
            .as_str()
            .ok_or("a bucket without `le`")?;
        let bucket = bucket_index(le, &bounds)
            .ok_or_else(|| format!("`le` {le} is not one of the judge's buckets"))?;
        cumulative[c].push((bucket, count(series)?));
    }
    for (counts, mut cumulative) in cohorts.iter_mut().zip(cumulative) {
        if cumulative.is_empty() {
            continue;
        }
        cumulative.sort_unstable();
        counts.latency = vec![0; BUCKETS];
        let mut below = 0u64;
        for (bucket, total) in cumulative {
            // Extrapolated increases can dip below the bucket under them: never negative.
            counts.latency[bucket] = total.saturating_sub(below);
            below = below.max(total);
        }
    }
    let [canary, control] = cohorts;
    Ok(Some((canary, control)))
}

/// The judge's bucket whose upper bound `le` is.
fn bucket_index(le: &str, bounds: &[f64]) -> Option<usize> {
    if le == "+Inf" {
        return Some(BUCKETS - 1);
    }
    let value: f64 = le.parse().ok()?;
    let i = bounds.partition_point(|&b| b < value * (1.0 - 1e-9));
    (i < BUCKETS - 1 && (bounds[i] / value - 1.0).abs() < 1e-6).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn series(cohort: &str, le: Option<&str>, value: &str) -> Value {
        let mut metric = json!({ "cohort": cohort });
        if let Some(le) = le {
            metric["le"] = json!(le);
        }
        json!({ "metric": metric, "value": [1700000000.0, value] })
    }

    fn grouped(cohort: &str, group: usize, value: &str) -> Value {
        json!({ "metric": { "cohort": cohort, "group": group.to_string() }, "value": [1700000000.0, value] })
    }

    #[test]
    fn the_queries_select_the_rollout_and_escape_its_version() {
        let [requests, errors, fallbacks, latency, buckets] =
            queries("canary-rollout", "v2 \"rc\"", Duration::from_secs(90));
        assert_eq!(
            requests,
            r#"sum by (cohort, group) (increase(graygate_rollout_cohort_requests_total{rule="canary-rollout", version="v2 \"rc\""}[90000ms]))"#
        );
        assert!(errors.contains("graygate_rollout_cohort_errors_total{"));
        assert!(fallbacks.contains("graygate_rollout_cohort_fallbacks_total{"));
        assert!(latency.contains("graygate_rollout_cohort_latency_seconds_total{"));
        assert!(buckets.starts_with(
            "sum by (cohort, le) (increase(graygate_rollout_cohort_duration_seconds_bucket{"
        ));
    }

    #[test]
    fn answers_become_the_judges_counts() {
        let bounds = bucket_bounds();
        let le = |i: usize| format!("{}", bounds[i]);
        let requests = vec![
            grouped("canary", 0, "60.4"),
            grouped("canary", 7, "39.6"),
            grouped("control", 3, "1000"),
        ];
        let errors = vec![grouped("canary", 7, "3.2"), grouped("control", 3, "1200")];
        let fallbacks = vec![grouped("canary", 7, "1")];
        let latency = vec![grouped("canary", 0, "1.5"), grouped("control", 3, "20")];
        let buckets = vec![
            series("canary", Some(&le(100)), "40"),
            series("canary", Some(&le(101)), "38.7"), // an extrapolation dip: 0, not negative
            series("canary", Some(&le(102)), "99.5"),
            series("canary", Some("+Inf"), "99.5"),
            series("control", Some(&le(5)), "1000"),
            series("control", Some("+Inf"), "1000"),
        ];
        let (canary, control) = counts(&[requests, errors, fallbacks, latency, buckets])
            .unwrap()
            .unwrap();
        assert_eq!((canary.requests, canary.errors), (100, 3));
        assert_eq!(
            (
                canary.groups[0].requests,
                canary.groups[7].requests,
                canary.groups[7].untimed
            ),
            (60, 40, 1)
        );
        assert_eq!(
            (canary.groups[0].sum_micros, canary.sum_micros),
            (1_500_000, 1_500_000)
        );
        assert_eq!(
            (control.requests, control.errors),
            (1000, 1000),
            "errors never exceed requests"
        );
        assert_eq!(
            (
                canary.latency[100],
                canary.latency[101],
                canary.latency[102]
            ),
            (40, 0, 60)
        );
        assert_eq!((control.latency[5], control.timed()), (1000, 1000));
    }

    #[test]
    fn no_series_is_no_data_and_a_failed_query_is_an_error() {
        assert_eq!(
            counts(&[vec![], vec![], vec![], vec![], vec![]]).unwrap(),
            None
        );
        assert!(vector(200, r#"{"status":"error","error":"parse error"}"#)
            .unwrap_err()
            .contains("parse error"));
        assert!(vector(502, "<html>").is_err());
        let strange = vec![series("canary", Some("0.123456"), "1")];
        let one = vec![grouped("canary", 0, "1")];
        assert!(counts(&[one.clone(), vec![], vec![], vec![], strange]).is_err());
        let bad_group = vec![grouped("canary", 16, "1")];
        assert!(counts(&[bad_group, vec![], vec![], vec![], vec![]]).is_err());
    }

    #[test]
    fn control_characters_are_escaped_as_promql_string_escapes() {
        assert_eq!(
            escape("a\\b\"c\nd\re\tf\u{1}g\u{7f}h\u{85}é"),
            r#"a\\b\"c\nd\re\tf\u0001g\u007fh\u0085é"#
        );
        let [requests, ..] = queries("canary-rollout", "v2\nrc", Duration::from_secs(1));
        assert!(
            requests.contains(r#"version="v2\nrc"}"#) && !requests.contains('\n'),
            "{requests}"
        );
    }

    #[test]
    fn a_value_that_is_no_count_is_an_error_and_a_small_negative_one_is_zero() {
        for lie in ["1e19", "9007199254740994", "-1e19", "NaN", "+Inf", "-Inf"] {
            let why = sample(&grouped("canary", 0, lie)).unwrap_err();
            assert!(why.contains(lie), "{lie}: {why}");
            let requests = vec![grouped("canary", 0, "10"), grouped("canary", 1, lie)];
            assert!(
                counts(&[requests, vec![], vec![], vec![], vec![]]).is_err(),
                "{lie} as requests"
            );
            let latency = vec![grouped("canary", 1, lie)];
            let one = vec![grouped("canary", 0, "1")];
            assert!(
                counts(&[one, vec![], vec![], latency, vec![]]).is_err(),
                "{lie} as latency"
            );
        }
        assert_eq!(sample(&grouped("canary", 0, "-0.4")), Ok(0.0));
        assert_eq!(
            sample(&grouped("canary", 0, "9007199254740992")),
            Ok(2f64.powi(53))
        );
    }

    #[test]
    fn sums_at_the_largest_counts_saturate_instead_of_overflowing() {
        let most = "9007199254740992"; // 2^53 seconds: µs beyond u64 in every group
        let requests: Vec<Value> = (0..USER_GROUPS)
            .map(|g| grouped("canary", g, most))
            .collect();
        let latency = requests.clone();
        let (canary, _) = counts(&[requests, vec![], vec![], latency, vec![]])
            .unwrap()
            .unwrap();
        assert_eq!(canary.requests, (1u64 << 53) * USER_GROUPS as u64);
        assert_eq!(canary.sum_micros, u64::MAX);
    }
}
