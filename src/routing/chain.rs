//! The ordered rule chain: the first rule whose conditions all hold decides the pool;
//! when none does, the stable pool takes the request.

use std::borrow::Cow;

use http::header::USER_AGENT;

use super::bucket::user_group;
use super::condition::{Condition, Verdict};
use super::index::{Candidates, RuleIndex, Segment};
use super::request::RequestView;
use super::source::ValueSource;
use super::ua::{UaClassId, UaClassifier};

/// Index of a pool in the snapshot's pool list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolId(pub usize);

/// Index of a rule in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleId(pub usize);

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: Box<str>,
    pub conditions: Vec<Condition>,
    pub pool: PoolId,
}

/// Where the user key, the city and the channel are read from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub user_key: Option<ValueSource>,
    pub city: Option<ValueSource>,
    pub channel: Option<ValueSource>,
    /// `routing.sticky_cookie`: the cookie (a `Cookie` source) that stands in for the
    /// user key of a visitor who has none.
    pub sticky_cookie: Option<ValueSource>,
}

impl Sources {
    /// The request's user key and where it came from: `routing.user_key`, else the
    /// sticky cookie, else the id made for the request.
    fn user_key_of<'r>(&self, request: &RequestView<'r>) -> Option<(Cow<'r, [u8]>, KeySource)> {
        [
            (self.user_key.as_ref(), KeySource::Configured),
            (self.sticky_cookie.as_ref(), KeySource::StickyCookie),
        ]
        .into_iter()
        .find_map(|(s, from)| Some((s?.extract(request)?, from)))
        .or_else(|| {
            let minted = request.minted_key.filter(|k| !k.is_empty())?;
            Some((Cow::Borrowed(minted), KeySource::Minted))
        })
    }
}

/// Where a request's user key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// `routing.user_key`.
    Configured,
    /// The sticky cookie the gateway set earlier.
    StickyCookie,
    /// A sticky id made for this request.
    Minted,
}

impl KeySource {
    pub fn as_str(self) -> &'static str {
        match self {
            KeySource::Configured => "user_key",
            KeySource::StickyCookie => "sticky_cookie",
            KeySource::Minted => "minted",
        }
    }
}

/// What the chain decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub pool: PoolId,
    /// The matching rule, or `None` when the request fell through to the stable pool.
    pub rule: Option<RuleId>,
    /// The user's bucket, when a per-mille rule was evaluated.
    pub bucket: Option<u16>,
    /// The side of the tracked rule the request fell on, when the chain tracks one.
    pub cohort: Option<Cohort>,
    /// The user's group (0..16) when the request is in a cohort: the rollout records
    /// its cohorts per group of users (see `bucket::user_group`).
    pub group: u8,
}

/// The two halves of one randomized population, as a rollout compares them: the
/// requests that reached the tracked rule and were inside its buckets (the canary),
/// and those that reached it, fell outside, and went to the stable pool (the control).
/// Requests other rules took before it, and those without a user key, are in neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cohort {
    Canary,
    Control,
}

impl Cohort {
    pub fn as_str(self) -> &'static str {
        match self {
            Cohort::Canary => "canary",
            Cohort::Control => "control",
        }
    }
}

/// The rule whose per-mille condition splits the cohorts, and where that condition sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tracked {
    rule: usize,
    condition: usize,
}

#[derive(Debug, Clone)]
pub struct Chain {
    rules: Vec<Rule>,
    /// Built from `rules`, which never change after `new`.
    index: RuleIndex,
    stable: PoolId,
    sources: Sources,
    ua: UaClassifier,
    pool_names: Vec<Box<str>>,
    tracked: Option<Tracked>,
}

impl Chain {
    /// Builds a chain from compiled parts. `config::compile` has checked that every
    /// pool id is in `pool_names` and every UA bit names a class.
    pub fn new(
        rules: Vec<Rule>,
        stable: PoolId,
        sources: Sources,
        ua: UaClassifier,
        pool_names: Vec<Box<str>>,
    ) -> Self {
        debug_assert!(stable.0 < pool_names.len());
        debug_assert!(rules.iter().all(|r| r.pool.0 < pool_names.len()));
        Chain {
            index: RuleIndex::new(&rules),
            rules,
            stable,
            sources,
            ua,
            pool_names,
            tracked: None,
        }
    }

    /// This chain with rule `rule`'s per-mille set to `permille`, and its cohorts
    /// marked on every decision when `track` is set. `None` when the rule has no
    /// per-mille condition. A rollout makes one of these at every change of weight.
    pub fn with_permille(&self, rule: RuleId, permille: u16, track: bool) -> Option<Chain> {
        let mut chain = self.clone();
        let conditions = &mut chain.rules.get_mut(rule.0)?.conditions;
        let position = conditions
            .iter()
            .position(|c| matches!(c, Condition::Permille { .. }))?;
        if let Condition::Permille { permille: n, .. } = &mut conditions[position] {
            *n = permille.min(1000);
        }
        chain.tracked = track.then_some(Tracked {
            rule: rule.0,
            condition: position,
        });
        Some(chain)
    }

    /// The per-mille of rule `rule`, if it has that condition.
    pub fn permille_of(&self, rule: RuleId) -> Option<u16> {
        self.rules
            .get(rule.0)?
            .conditions
            .iter()
            .find_map(|c| match c {
                Condition::Permille { permille, .. } => Some(*permille),
                _ => None,
            })
    }

    /// Whether a visitor needs a sticky id made: a sticky cookie is configured and the
    /// request carries neither a user key nor the cookie. Two lookups, only when a
    /// sticky cookie is configured.
    pub fn needs_sticky_id(&self, request: &RequestView<'_>) -> bool {
        let Some(cookie) = &self.sources.sticky_cookie else {
            return false;
        };
        let configured = self.sources.user_key.as_ref();
        configured.is_none_or(|s| s.extract(request).is_none()) && cookie.extract(request).is_none()
    }

    /// The request's user key as the rules read it: `routing.user_key`, else the sticky
    /// cookie, else the id made for the request.
    pub fn user_key<'r>(&self, request: &RequestView<'r>) -> Option<Cow<'r, [u8]>> {
        self.sources.user_key_of(request).map(|(key, _)| key)
    }

    /// The rule whose cohorts are marked, if any.
    pub fn tracked_rule(&self) -> Option<RuleId> {
        self.tracked.map(|t| RuleId(t.rule))
    }

    /// Runs the chain. `random` draws in `[0, 1)` for `rate` conditions; the proxy
    /// passes `fastrand::f64`, tests pass fixed draws.
    pub fn decide(&self, request: RequestView<'_>, random: &mut dyn FnMut() -> f64) -> Decision {
        let mut cx = Context::new(self, request, random);
        let rule = self.first_match(&mut cx);
        self.decision(rule, &cx)
    }

    /// The first rule that holds, as `evaluate` finds it, but skipping through the
    /// index the rules whose first condition cannot hold. Their later conditions
    /// would not have run, so the decision and the random draws are the same.
    fn first_match(&self, cx: &mut Context<'_, '_>) -> Option<RuleId> {
        let headers = cx.request.headers;
        let mut holds_from = |rule, position| self.holds_from(rule, position, cx, |_, _, _, _| {});
        for segment in self.index.segments() {
            let matched = match segment {
                Segment::Scan(rules) => rules.clone().find(|&rule| holds_from(rule, 0)),
                Segment::ExactRun(run) => match run.candidates(headers) {
                    Candidates::None => None,
                    // The index has already checked their first condition (it has
                    // no side effect), so only the rest of each rule runs.
                    Candidates::FirstConditionHolds(rules) => {
                        rules.iter().copied().find(|&rule| holds_from(rule, 1))
                    }
                    Candidates::All(rules) => rules.clone().find(|&rule| holds_from(rule, 0)),
                },
            };
            if let Some(rule) = matched {
                return Some(RuleId(rule));
            }
        }
        None
    }

    /// The rules `decide` finds through the index rather than one by one.
    #[cfg(test)]
    pub(crate) fn indexed_runs(&self) -> Vec<std::ops::Range<usize>> {
        self.index
            .segments()
            .iter()
            .filter_map(|segment| match segment {
                Segment::ExactRun(run) => Some(run.rules.clone()),
                Segment::Scan(_) => None,
            })
            .collect()
    }

    /// Checks the rules one by one until one holds, and reports every condition it
    /// evaluated, in order, calling `observe(rule, condition index, verdict, context)`
    /// for each. `explain` goes through here; `decide` checks the same conditions,
    /// minus the ones the index proves would fail or hold.
    pub(crate) fn evaluate<'c, 'r>(
        &'c self,
        cx: &mut Context<'c, 'r>,
        mut observe: impl FnMut(RuleId, usize, Verdict, &Context<'c, 'r>),
    ) -> Option<RuleId> {
        (0..self.rules.len())
            .find(|&rule| self.holds_from(rule, 0, cx, &mut observe))
            .map(RuleId)
    }

    /// Whether the rule's conditions from `position` on all hold, checking them in
    /// order and stopping at the first that does not.
    fn holds_from<'c, 'r>(
        &self,
        rule: usize,
        position: usize,
        cx: &mut Context<'c, 'r>,
        mut observe: impl FnMut(RuleId, usize, Verdict, &Context<'c, 'r>),
    ) -> bool {
        let conditions = &self.rules[rule].conditions[position..];
        conditions
            .iter()
            .zip(position..)
            .all(|(condition, position)| {
                let verdict = condition.check(cx);
                // Reaching the tracked rule's per-mille condition with a user key puts
                // the request in the randomized population; the verdict says which half.
                if self.tracked
                    == Some(Tracked {
                        rule,
                        condition: position,
                    })
                    && verdict != Verdict::Missing
                {
                    cx.tracked = Some((verdict.holds(), cx.hash.unwrap_or(0)));
                }
                observe(RuleId(rule), position, verdict, cx);
                verdict.holds()
            })
    }

    pub(crate) fn decision(&self, rule: Option<RuleId>, cx: &Context<'_, '_>) -> Decision {
        let pool = rule.map_or(self.stable, |r| self.rules[r.0].pool);
        let cohort = match (self.tracked, cx.tracked) {
            (Some(tracked), _) if rule == Some(RuleId(tracked.rule)) => Some(Cohort::Canary),
            (Some(_), Some((false, _))) if pool == self.stable => Some(Cohort::Control),
            _ => None,
        };
        let group = match (cohort, cx.tracked) {
            (Some(_), Some((_, hash))) => user_group(hash),
            _ => 0,
        };
        Decision {
            pool,
            rule,
            bucket: cx.bucket,
            cohort,
            group,
        }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn rule(&self, id: RuleId) -> &Rule {
        &self.rules[id.0]
    }

    pub fn stable(&self) -> PoolId {
        self.stable
    }

    pub fn pool_name(&self, id: PoolId) -> &str {
        &self.pool_names[id.0]
    }

    pub fn ua_classifier(&self) -> &UaClassifier {
        &self.ua
    }

    pub fn sources(&self) -> &Sources {
        &self.sources
    }
}

/// Per-request evaluation state: the values rules read, each extracted at most once
/// and only if some condition asks for it.
pub(crate) struct Context<'c, 'r> {
    chain: &'c Chain,
    pub(crate) request: RequestView<'r>,
    pub(crate) random: &'c mut dyn FnMut() -> f64,
    user_key: Option<Option<Cow<'r, [u8]>>>,
    user_key_source: Option<KeySource>,
    city: Option<Option<Cow<'r, [u8]>>>,
    channel: Option<Option<Cow<'r, [u8]>>>,
    ua_class: Option<Option<UaClassId>>,
    /// The bucket computed by the last per-mille condition evaluated.
    pub(crate) bucket: Option<u16>,
    /// The draw made by the last rate condition evaluated.
    pub(crate) draw: Option<f64>,
    /// The hash behind the last bucket computed.
    pub(crate) hash: Option<u32>,
    /// Whether the tracked rule's per-mille condition held, once it was reached, and
    /// the user key's hash there.
    pub(crate) tracked: Option<(bool, u32)>,
}

impl<'c, 'r> Context<'c, 'r> {
    pub(crate) fn new(
        chain: &'c Chain,
        request: RequestView<'r>,
        random: &'c mut dyn FnMut() -> f64,
    ) -> Self {
        Context {
            chain,
            request,
            random,
            user_key: None,
            user_key_source: None,
            city: None,
            channel: None,
            ua_class: None,
            bucket: None,
            draw: None,
            hash: None,
            tracked: None,
        }
    }

    /// The user key: from `routing.user_key`, else the sticky cookie, else the id made
    /// for this request.
    pub(crate) fn user_key(&mut self) -> Option<&[u8]> {
        let (sources, request) = (&self.chain.sources, &self.request);
        let source = &mut self.user_key_source;
        self.user_key
            .get_or_insert_with(|| {
                sources.user_key_of(request).map(|(key, from)| {
                    *source = Some(from);
                    key
                })
            })
            .as_deref()
    }

    /// The user key from `routing.user_key` only, for a whitelist: the sticky cookie
    /// and a minted id stand in for a visitor's identity in hashing, but a visitor
    /// chooses the cookie's value, so it must never name a listed user.
    pub(crate) fn identity(&mut self) -> Option<&[u8]> {
        if self.user_key.is_none() {
            self.user_key();
        }
        match self.user_key_source {
            Some(KeySource::Configured) => self.user_key.as_ref()?.as_deref(),
            _ => None,
        }
    }

    /// Where the user key came from, once it was read.
    pub(crate) fn user_key_source(&self) -> Option<KeySource> {
        self.user_key_source
    }

    pub(crate) fn city(&mut self) -> Option<&[u8]> {
        lazily(
            &mut self.city,
            self.chain.sources.city.as_ref(),
            &self.request,
        )
    }

    pub(crate) fn channel(&mut self) -> Option<&[u8]> {
        lazily(
            &mut self.channel,
            self.chain.sources.channel.as_ref(),
            &self.request,
        )
    }

    pub(crate) fn ua_class(&mut self) -> Option<UaClassId> {
        let (ua, headers) = (&self.chain.ua, self.request.headers);
        *self.ua_class.get_or_insert_with(|| {
            headers
                .get(USER_AGENT)
                .and_then(|v| ua.classify(v.as_bytes()))
        })
    }
}

fn lazily<'a, 'r>(
    slot: &'a mut Option<Option<Cow<'r, [u8]>>>,
    source: Option<&ValueSource>,
    request: &RequestView<'r>,
) -> Option<&'a [u8]> {
    slot.get_or_insert_with(|| source.and_then(|s| s.extract(request)))
        .as_deref()
}
