//! An index of the rule chain, built once per config generation, so that `decide`
//! does not test one by one the rules that cannot match.
//!
//! Generated configs tend to hold long runs of rules keyed on one header's exact value
//! (`x-user-group = "group-<i>"`, one rule per tenant). Scanned in order, each of them
//! costs a header-map lookup, so the CPU per request grew with the chain's length.
//! Within a run of consecutive rules whose *first* condition is an exact test of the
//! same header, a request carrying that header once can only match the rules that
//! want its value: every other rule's first condition fails, so none of its later
//! conditions (per-mille bucket, rate draw) would have run. One lookup of the header
//! and one hash probe therefore replace the scan, with the same decision and the same
//! random draws. `explain` keeps the plain scan, to show why each rule failed.

use std::collections::HashMap;
use std::ops::Range;

use http::header::HeaderName;
use http::HeaderMap;

use super::chain::Rule;
use super::condition::{Condition, HeaderTest};

/// Shorter runs are scanned. Measured on `decide` (criterion, a busy 2-core machine):
/// the scan costs ~45 ns per rule tested when the header is present and ~28 ns when
/// it is absent; an indexed run costs ~85 ns flat when the header is present (one
/// lookup, then hashing the value, ~40 ns more than a single header check) and ~45 ns
/// when it is absent. The index loses at 2 rules, breaks even at about 3, and wins
/// on average from 4 on; it only costs more when the run's first rule matches.
pub(crate) const MIN_INDEXED_RUN: usize = 4;

/// The chain cut into consecutive segments that cover every rule, in order.
#[derive(Debug, Clone)]
pub(crate) struct RuleIndex {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone)]
pub(crate) enum Segment {
    /// Rules checked one by one.
    Scan(Range<usize>),
    ExactRun(ExactRun),
}

/// A run of at least `MIN_INDEXED_RUN` consecutive rules whose first condition is an
/// exact test of `header`.
#[derive(Debug, Clone)]
pub(crate) struct ExactRun {
    pub(crate) rules: Range<usize>,
    header: HeaderName,
    /// The rules of the run whose first condition wants each value, ascending.
    rules_by_value: HashMap<Box<[u8]>, Vec<usize>>,
}

/// Which rules of an `ExactRun` may hold for a request.
pub(crate) enum Candidates<'a> {
    /// The header is absent: every rule's first condition is missing its value.
    None,
    /// The header has one value: these rules' first conditions hold and all others
    /// fail.
    FirstConditionHolds(&'a [usize]),
    /// The header is repeated, and an exact test holds when any value passes: the
    /// rules must be checked one by one. Rare, so not worth indexing.
    All(Range<usize>),
}

impl RuleIndex {
    pub(crate) fn new(rules: &[Rule]) -> Self {
        let mut segments = Vec::new();
        let mut scan_start = 0;
        let mut start = 0;
        while start < rules.len() {
            let end = run_end(rules, start);
            if end - start >= MIN_INDEXED_RUN {
                if scan_start < start {
                    segments.push(Segment::Scan(scan_start..start));
                }
                segments.push(Segment::ExactRun(ExactRun::new(rules, start..end)));
                scan_start = end;
            }
            start = end;
        }
        if scan_start < rules.len() {
            segments.push(Segment::Scan(scan_start..rules.len()));
        }
        RuleIndex { segments }
    }

    pub(crate) fn segments(&self) -> &[Segment] {
        &self.segments
    }
}

impl ExactRun {
    fn new(rules: &[Rule], range: Range<usize>) -> Self {
        let exact = |index| first_exact(&rules[index]).expect("a rule of the run");
        let header = exact(range.start).0.clone();
        let mut rules_by_value: HashMap<Box<[u8]>, Vec<usize>> = HashMap::new();
        for index in range.clone() {
            rules_by_value
                .entry(exact(index).1.into())
                .or_default()
                .push(index);
        }
        ExactRun {
            rules: range,
            header,
            rules_by_value,
        }
    }

    pub(crate) fn candidates(&self, headers: &HeaderMap) -> Candidates<'_> {
        let mut values = headers.get_all(&self.header).iter();
        match (values.next(), values.next()) {
            (None, _) => Candidates::None,
            (Some(value), None) => Candidates::FirstConditionHolds(
                self.rules_by_value
                    .get(value.as_bytes())
                    .map_or(&[], Vec::as_slice),
            ),
            (Some(_), Some(_)) => Candidates::All(self.rules.clone()),
        }
    }
}

/// The end of the maximal run starting at `start`: the rules from `start` on whose
/// first condition is an exact test of the same header. At least `start + 1`.
fn run_end(rules: &[Rule], start: usize) -> usize {
    let Some((header, _)) = first_exact(&rules[start]) else {
        return start + 1;
    };
    start
        + 1
        + rules[start + 1..]
            .iter()
            .take_while(|rule| first_exact(rule).is_some_and(|(name, _)| name == header))
            .count()
}

/// The header and value of the rule's first condition, when it is an exact test.
fn first_exact(rule: &Rule) -> Option<(&HeaderName, &[u8])> {
    match rule.conditions.first()? {
        Condition::Header {
            name,
            test: HeaderTest::Exact(value),
        } => Some((name, value)),
        _ => None,
    }
}
