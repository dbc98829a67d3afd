//! `explain`: the decision for one request, with the reason each rule before the
//! winner did not match. Used by `graygate explain` and `/admin/explain`.

use serde::Serialize;

use super::chain::{Chain, Context, KeySource, RuleId};
use super::condition::Condition;
use super::request::RequestView;

#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub pool: String,
    /// The matching rule's name, or `"default"` when the stable pool took the request.
    pub rule: String,
    /// The user's bucket, when a per-mille rule was evaluated.
    pub bucket: Option<u16>,
    /// `canary` or `control` when the chain tracks a rollout's rule and the request
    /// is in one of its cohorts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cohort: Option<&'static str>,
    /// The values the rules read, as the request carries them.
    pub user_key: Option<String>,
    /// Where the user key came from: `user_key`, `sticky_cookie` or `minted`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_key_source: Option<&'static str>,
    pub city: Option<String>,
    pub channel: Option<String>,
    pub ua_class: Option<String>,
    /// Every rule evaluated, in order, up to and including the one that matched.
    pub rules: Vec<RuleTrace>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleTrace {
    pub rule: String,
    pub to: String,
    pub matched: bool,
    /// The conditions evaluated, in order; evaluation stops at the first that fails.
    pub conditions: Vec<ConditionTrace>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConditionTrace {
    pub condition: String,
    /// `holds`, `fails` or `missing value`.
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub draw: Option<f64>,
}

impl Chain {
    pub fn explain(
        &self,
        request: RequestView<'_>,
        random: &mut dyn FnMut() -> f64,
    ) -> Explanation {
        let mut cx = Context::new(self, request, random);
        let mut traces: Vec<RuleTrace> = Vec::new();
        let matched = self.evaluate(&mut cx, |rule_id: RuleId, position, verdict, cx| {
            let rule = self.rule(rule_id);
            if position == 0 {
                traces.push(RuleTrace {
                    rule: rule.name.to_string(),
                    to: self.pool_name(rule.pool).to_string(),
                    matched: false,
                    conditions: Vec::new(),
                });
            }
            let condition = &rule.conditions[position];
            let trace = traces.last_mut().expect("pushed at position 0");
            trace.conditions.push(ConditionTrace {
                condition: condition.describe(self.ua_classifier()),
                result: verdict.as_str(),
                bucket: matches!(condition, Condition::Permille { .. })
                    .then_some(cx.bucket)
                    .flatten(),
                draw: matches!(condition, Condition::Rate(_))
                    .then_some(cx.draw)
                    .flatten(),
            });
        });
        if let Some(rule_id) = matched {
            // A rule without conditions matches without being observed; trace it too.
            let rule = self.rule(rule_id);
            if traces.last().is_none_or(|t| t.rule != *rule.name) {
                traces.push(RuleTrace {
                    rule: rule.name.to_string(),
                    to: self.pool_name(rule.pool).to_string(),
                    matched: false,
                    conditions: Vec::new(),
                });
            }
            traces.last_mut().expect("pushed above").matched = true;
        }
        let decision = self.decision(matched, &cx);
        let text = |v: Option<&[u8]>| v.map(|b| String::from_utf8_lossy(b).into_owned());
        Explanation {
            pool: self.pool_name(decision.pool).to_string(),
            rule: matched.map_or("default".to_string(), |r| self.rule(r).name.to_string()),
            bucket: decision.bucket,
            cohort: decision.cohort.map(|c| c.as_str()),
            user_key: text(cx.user_key()),
            user_key_source: cx.user_key_source().map(KeySource::as_str),
            city: text(cx.city()),
            channel: text(cx.channel()),
            ua_class: cx
                .ua_class()
                .map(|c| self.ua_classifier().name(c).to_string()),
            rules: traces,
        }
    }
}
